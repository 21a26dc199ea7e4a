//! An interface's forwards on disk, so that they survive the daemon's restart.
//!
//! One JSON document per interface, `forwards.json` in a directory the caller names (the
//! daemon's state directory for the interface):
//!
//! ```json
//! { "version": 1,
//!   "forwards": [
//!     { "protocol": "tcp", "ports": "8000-8010", "to": "10.0.0.2:9000" },
//!     { "protocol": "tls", "ports": "443", "listen": "192.0.2.1", "sni": "*.example.com",
//!       "to": "10.0.0.3:443" },
//!     { "protocol": "http", "ports": "80", "default": true, "to": "10.0.0.4:80" } ] }
//! ```
//!
//! Each forward is recorded as the `forward add` arguments that make it, and loading reads
//! them back through the same parser and the same table, so a file edited by hand, or damaged,
//! is held to exactly the rules the CLI is. Writing is atomic (`config::atomic`: a temporary file beside it,
//! synced, renamed over it, the directory synced), readable by root alone: a crash or a full
//! disk leaves the previous document whole.

use std::fmt;
use std::fs::{self, DirBuilder};
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::forward::{Forward, Protocol, SelectorArgs};
use super::name::NamePattern;
use super::table::ForwardTable;

pub const FILE_NAME: &str = "forwards.json";
/// The document's layout; a file of another version is refused rather than misread.
pub const VERSION: u32 = 1;

/// One forward as `forward add` takes it; also what `forward list --json` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardRecord {
    pub protocol: String,
    pub ports: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub default: bool,
    pub to: String,
}

fn is_false(value: &bool) -> bool {
    !value
}

impl From<&Forward> for ForwardRecord {
    fn from(forward: &Forward) -> ForwardRecord {
        let selector = forward.selector();
        let protocol = selector.protocol();
        let name = match selector.name() {
            Some(NamePattern::Default) | None => None,
            Some(pattern) => Some(pattern.to_string()),
        };
        ForwardRecord {
            protocol: protocol.as_str().to_string(),
            ports: selector.ports().to_string(),
            listen: selector.listen().map(|address| address.to_string()),
            sni: name.clone().filter(|_| protocol == Protocol::Tls),
            host: name.filter(|_| protocol == Protocol::Http),
            default: selector.name() == Some(&NamePattern::Default),
            to: forward.target().to_string(),
        }
    }
}

impl ForwardRecord {
    /// The forward these arguments make, validated as the CLI's are.
    pub fn to_forward(&self) -> Result<Forward, super::forward::ForwardError> {
        let args = SelectorArgs {
            protocol: &self.protocol,
            ports: &self.ports,
            listen: self.listen.as_deref(),
            sni: self.sni.as_deref(),
            host: self.host.as_deref(),
            default: self.default,
        };
        Forward::parse(&args, &self.to)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: u32,
    forwards: Vec<ForwardRecord>,
}

/// Only the version, read first: a document of another version may differ in everything else.
#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

/// Why the forwards could not be loaded or saved: one line, naming the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError(String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// Where an interface's forwards are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardsHome {
    /// `forwards.json` in the interface's state directory (gatewayd without `--config`).
    StateDirectory(PathBuf),
    /// The `[[forward]]` tables of the interface's configuration file (`gatewayd --config`).
    ConfigFile(PathBuf),
}

impl ForwardsHome {
    /// Replaces the forwards kept here with `table`'s.
    pub fn save(&self, table: &ForwardTable) -> Result<(), StoreError> {
        match self {
            ForwardsHome::StateDirectory(directory) => save(directory, table),
            ForwardsHome::ConfigFile(path) => {
                crate::config::write_back::save_forwards(path, table).map_err(StoreError)
            }
        }
    }

    /// The file the forwards are kept in.
    pub fn file(&self) -> PathBuf {
        match self {
            ForwardsHome::StateDirectory(directory) => path_in(directory),
            ForwardsHome::ConfigFile(path) => path.clone(),
        }
    }
}

pub fn path_in(directory: &Path) -> PathBuf {
    directory.join(FILE_NAME)
}

/// The forwards saved in `directory`; none if nothing was ever saved there.
pub fn load(directory: &Path) -> Result<ForwardTable, StoreError> {
    let path = path_in(directory);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(ForwardTable::new()),
        Err(error) => return Err(StoreError(format!("cannot read {}: {error}", path.display()))),
    };
    let corrupt =
        |what: &dyn fmt::Display| StoreError(format!("{} is corrupt: {what}", path.display()));
    let version = serde_json::from_str::<VersionOnly>(&text).map_err(|e| corrupt(&e))?.version;
    if version != VERSION {
        return Err(StoreError(format!(
            "{} is of version {version}; this gatewayd reads version {VERSION}",
            path.display()
        )));
    }
    let document: Document = serde_json::from_str(&text).map_err(|e| corrupt(&e))?;
    let mut forwards = Vec::with_capacity(document.forwards.len());
    for (index, record) in document.forwards.iter().enumerate() {
        let forward = record.to_forward();
        forwards.push(forward.map_err(|e| corrupt(&format_args!("forward {}: {e}", index + 1)))?);
    }
    ForwardTable::from_forwards(forwards)
        .map_err(|(index, e)| corrupt(&format_args!("forward {}: {e}", index + 1)))
}

/// Replaces the document in `directory` (created, root's alone, if missing) with `table`.
pub fn save(directory: &Path, table: &ForwardTable) -> Result<(), StoreError> {
    let document = Document {
        version: VERSION,
        forwards: table.forwards().iter().map(ForwardRecord::from).collect(),
    };
    let mut text = serde_json::to_string_pretty(&document)
        .map_err(|e| StoreError(format!("cannot encode the forwards: {e}")))?;
    text.push('\n');
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(directory)
        .map_err(|e| StoreError(format!("cannot create {}: {e}", directory.display())))?;
    crate::config::atomic::replace_private_file(&path_in(directory), &text).map_err(StoreError)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A fresh directory for one test, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let path = std::env::temp_dir()
                .join(format!("gateway-entry-store-{}-{test}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn record(protocol: &str, ports: &str, to: &str) -> ForwardRecord {
        ForwardRecord {
            protocol: protocol.into(),
            ports: ports.into(),
            listen: None,
            sni: None,
            host: None,
            default: false,
            to: to.into(),
        }
    }

    fn sample() -> ForwardTable {
        let records = [
            record("tcp", "8000-8010", "10.0.0.2:9000"),
            ForwardRecord { listen: Some("192.0.2.1".into()), ..record("udp", "53", "10.0.0.2") },
            ForwardRecord {
                sni: Some("*.Example.com".into()),
                ..record("tls", "443", "[fd00::3]:443")
            },
            ForwardRecord { default: true, ..record("tls", "443", "10.0.0.4:443") },
            ForwardRecord {
                host: Some("nas.example.com".into()),
                ..record("http", "80", "10.0.0.5:8080")
            },
        ];
        ForwardTable::from_forwards(records.iter().map(|r| r.to_forward().unwrap())).unwrap()
    }

    fn write(directory: &Path, text: &str) {
        fs::create_dir_all(directory).unwrap();
        fs::write(path_in(directory), text).unwrap();
    }

    fn load_error(directory: &Path) -> String {
        let error = load(directory).unwrap_err().to_string();
        assert!(!error.contains('\n'), "not one line: {error}");
        error
    }

    #[test]
    fn forwards_come_back_as_they_were_saved_in_a_file_for_root_alone() {
        let scratch = Scratch::new("round-trip");
        let directory = scratch.0.join("wg0");
        assert!(load(&directory).unwrap().is_empty(), "nothing saved yet");
        save(&directory, &sample()).unwrap();
        assert_eq!(load(&directory).unwrap().forwards(), sample().forwards());
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path_in(&directory)), 0o600);
        assert_eq!(mode(&directory), 0o700);
        assert!(!directory.join("forwards.json.tmp").exists());
        let text = fs::read_to_string(path_in(&directory)).unwrap();
        assert!(text.contains(r#""sni": "*.example.com""#), "{text}");
        assert!(text.contains(r#""default": true"#), "{text}");
        assert!(!text.contains("null"), "{text}");
        save(&directory, &ForwardTable::new()).unwrap();
        assert!(load(&directory).unwrap().is_empty());
    }

    #[test]
    fn a_leftover_temporary_is_replaced_and_restricted() {
        let scratch = Scratch::new("leftover");
        fs::create_dir_all(&scratch.0).unwrap();
        let temporary = scratch.0.join("forwards.json.tmp");
        fs::write(&temporary, "half a document from a crash, longer than the next one").unwrap();
        fs::set_permissions(&temporary, fs::Permissions::from_mode(0o644)).unwrap();
        save(&scratch.0, &sample()).unwrap();
        assert!(!temporary.exists());
        assert_eq!(fs::metadata(path_in(&scratch.0)).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load(&scratch.0).unwrap().len(), 5);
    }

    #[test]
    fn a_damaged_file_is_refused_with_one_line_naming_it() {
        let scratch = Scratch::new("damaged");
        let path = path_in(&scratch.0).display().to_string();
        write(&scratch.0, r#"{"version": 1, "forwards": [{"protocol": "tcp", "#);
        assert!(
            load_error(&scratch.0).starts_with(&format!("{path} is corrupt: EOF while parsing"))
        );
        write(&scratch.0, "");
        assert!(load_error(&scratch.0).starts_with(&format!("{path} is corrupt: ")));
        write(&scratch.0, r#"{"version": 2, "forwards": {}}"#);
        assert_eq!(
            load_error(&scratch.0),
            format!("{path} is of version 2; this gatewayd reads version 1")
        );
        write(&scratch.0, r#"{"version": 1, "forwards": [], "extra": 1}"#);
        assert!(load_error(&scratch.0).contains("unknown field `extra`"));
        let bad_port = r#"{"version": 1, "forwards": [
            {"protocol": "tcp", "ports": "80", "to": "10.0.0.2"},
            {"protocol": "tcp", "ports": "70000", "to": "10.0.0.2"}]}"#;
        write(&scratch.0, bad_port);
        assert_eq!(
            load_error(&scratch.0),
            format!("{path} is corrupt: forward 2: '70000' is not a port: ports are 1 to 65535")
        );
        let overlap = r#"{"version": 1, "forwards": [
            {"protocol": "tcp", "ports": "80-90", "to": "10.0.0.2"},
            {"protocol": "tls", "ports": "85", "default": true, "to": "10.0.0.3"}]}"#;
        write(&scratch.0, overlap);
        assert_eq!(
            load_error(&scratch.0),
            format!(
                "{path} is corrupt: forward 2: tls 85 --default overlaps the forward 'tcp 80-90 --to 10.0.0.2'"
            )
        );
    }

    #[test]
    fn records_are_the_arguments_that_make_the_forward() {
        let forwards = sample();
        let records: Vec<ForwardRecord> =
            forwards.forwards().iter().map(ForwardRecord::from).collect();
        assert_eq!(records[0], record("tcp", "8000-8010", "10.0.0.2:9000"));
        assert_eq!(records[2].sni.as_deref(), Some("*.example.com"));
        assert_eq!(records[2].to, "[fd00::3]:443");
        assert_eq!(records[4].host.as_deref(), Some("nas.example.com"));
        assert!(records[3].default && records[3].sni.is_none());
        for (record, forward) in records.iter().zip(forwards.forwards()) {
            assert_eq!(&record.to_forward().unwrap(), forward);
        }
    }
}
