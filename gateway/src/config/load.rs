//! Reading a gateway configuration file (`file.rs`) into what the daemon applies, with every
//! error as one line naming the file, the line and the field:
//!
//! ```text
//! /etc/gateway/wg0.toml:7: peer[1].public_key: not a base64 key (…)
//! ```
//!
//! The field path is the one serde walked to the value (`serde_path_to_error`), the line the
//! start of the value's span in the text. Peers and forwards are counted from 0, as in the
//! order they appear (`peer[0]` is the first `[[peer]]`).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_path_to_error::Segment;
use toml::Spanned;

use super::file::{DataplaneSection, GatewayFile, PeerSection};
use super::values::Base64Key;
use super::wg_quick::{self, DeviceConfig, PeerConfig, Table};
use crate::entry::table::ForwardTable;
use crate::uapi::Key;

/// A configuration file read, checked and made ready to apply.
#[derive(Debug)]
pub struct GatewayConfig {
    pub path: PathBuf,
    /// Keys, port, fwmark and peers: what `wg setconf` would set.
    pub device: DeviceConfig,
    /// The operators' names for peers, by public key.
    pub peer_names: HashMap<Key, String>,
    pub addresses: Vec<IpNet>,
    /// None: derived from the routes to the endpoints.
    pub mtu: Option<u32>,
    pub table: Table,
    pub dataplane: DataplaneSection,
    pub metrics: Option<SocketAddr>,
    pub forwards: ForwardTable,
}

/// What is wrong with a configuration file, in one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    pub path: PathBuf,
    /// 1-based; 0 for the file as a whole.
    pub line: usize,
    /// The field's path (`peer[1].public_key`); empty for the file as a whole.
    pub field: String,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line != 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for LoadError {}

/// Reads and checks the file at `path`.
pub fn load(path: &Path) -> Result<GatewayConfig, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError {
        path: path.to_path_buf(),
        line: 0,
        field: String::new(),
        message: match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            _ => format!("cannot read it: {e}"),
        },
    })?;
    parse(path, &text)
}

/// Checks `text`, the content of the file at `path` (which names it in errors and anchors
/// relative paths in it).
pub fn parse(path: &Path, text: &str) -> Result<GatewayConfig, LoadError> {
    let at = Locator { path, text };
    let file = deserialize(&at)?;
    let folder = path.parent().unwrap_or(Path::new(""));
    let interface = &file.interface;

    let private_key = match (&interface.private_key, &interface.private_key_file) {
        (Some(_), Some(file)) => {
            return Err(at.error(
                file.span(),
                "interface.private_key_file",
                "set private_key or private_key_file, not both",
            ));
        }
        (Some(key), None) => Some(key.get_ref().0.clamped()),
        (None, Some(file)) => Some(
            read_key(&folder.join(file.get_ref()))
                .map_err(|e| at.error(file.span(), "interface.private_key_file", e))?
                .clamped(),
        ),
        (None, None) => None,
    };
    let mut device = DeviceConfig {
        private_key,
        listen_port: interface.listen_port,
        fwmark: interface.fwmark,
        peers: Vec::with_capacity(file.peers.len()),
    };
    let mut peer_names = HashMap::new();
    // Where each peer was set, to name the first when a second repeats it.
    let mut seen: HashMap<Key, String> = HashMap::new();
    for (index, peer) in file.peers.iter().enumerate() {
        let field = format!("peer[{index}]");
        let span = peer.span();
        let config = peer_config(peer.get_ref(), folder)
            .map_err(|(key, message)| at.error(span.clone(), &format!("{field}.{key}"), message))?;
        let key_span = peer.get_ref().public_key.span();
        let line = at.line(key_span.start);
        if let Some(first) = seen.insert(config.public_key, format!("{field} (line {line})")) {
            return Err(at.error(
                key_span,
                &format!("{field}.public_key"),
                format!("the same peer as {first}"),
            ));
        }
        if let Some(name) = &peer.get_ref().name {
            if peer_names.values().any(|other| other == name) {
                return Err(at.error(
                    span,
                    &format!("{field}.name"),
                    format!("`{name}' names another peer already"),
                ));
            }
            peer_names.insert(config.public_key, name.clone());
        }
        device.peers.push(config);
    }
    if let Some(include) = &interface.include {
        let included = folder.join(include.get_ref());
        let fail = |message: String| at.error(include.span(), "interface.include", message);
        merge_include(&mut device, &included, &mut seen).map_err(fail)?;
    }

    let table = interface.table.as_ref().map(|t| t.get_ref().0.clone()).unwrap_or_default();
    if table == Table::Auto {
        let default_route = device
            .peers
            .iter()
            .flat_map(|peer| &peer.allowed_ips)
            .find(|prefix| prefix.prefix_len() == 0);
        if let Some(prefix) = default_route {
            let span = interface.table.as_ref().map_or(0..0, Spanned::span);
            return Err(at.error(
                span,
                "interface.table",
                format!(
                    "a peer's allowed_ips hold the default route {prefix}: gatewayd does not \
                     set up policy routing; set table = \"off\" or a table number"
                ),
            ));
        }
    }

    let mut forwards = Vec::with_capacity(file.forwards.len());
    for (index, record) in file.forwards.iter().enumerate() {
        let forward = record
            .get_ref()
            .to_forward()
            .map_err(|e| at.error(record.span(), &format!("forward[{index}]"), e.to_string()))?;
        forwards.push(forward);
    }
    let forwards = ForwardTable::from_forwards(forwards).map_err(|(index, e)| {
        at.error(file.forwards[index].span(), &format!("forward[{index}]"), e.to_string())
    })?;
    crate::mirror::forwards::ForwardPlan::of(&forwards)
        .map_err(|e| at.error(0..0, "forward", e.to_string()))?;

    Ok(GatewayConfig {
        path: path.to_path_buf(),
        device,
        peer_names,
        addresses: interface.addresses.iter().map(|prefix| prefix.0).collect(),
        mtu: interface.mtu.map(|mtu| mtu.0),
        table,
        metrics: file.metrics.as_ref().map(|metrics| metrics.listen.0),
        dataplane: file.dataplane,
        forwards,
    })
}

/// The file's text and name, to turn spans into lines.
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    /// The 1-based line of byte `offset`.
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// An error at `span` (an empty span at 0: the file as a whole).
    fn error(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> LoadError {
        LoadError {
            path: self.path.to_path_buf(),
            line: if span == (0..0) { 0 } else { self.line(span.start) },
            field: field.to_string(),
            message: message.into(),
        }
    }
}

fn deserialize(at: &Locator<'_>) -> Result<GatewayFile, LoadError> {
    let syntax =
        |e: toml::de::Error| at.error(e.span().unwrap_or(0..0), "", e.message().trim().to_string());
    let deserializer = toml::Deserializer::parse(at.text).map_err(syntax)?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = field_path(e.path());
        let inner = e.into_inner();
        let mut error = at.error(inner.span().unwrap_or(0..0), &field, inner.message().trim());
        // A missing field is reported at the table that lacks it: name it, not the table.
        if let Some(missing) = missing_field(inner.message()) {
            error.field = if field.is_empty() { missing } else { format!("{field}.{missing}") };
            error.message = "missing".to_string();
        }
        error
    })
}

/// `peer[1].public_key` from serde's path.
fn field_path(path: &serde_path_to_error::Path) -> String {
    let mut text = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => text += &format!("[{index}]"),
            // toml's Spanned wraps the value in a private field: not the operator's.
            Segment::Map { key } if key.starts_with("$__serde_spanned") => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !text.is_empty() {
                    text.push('.');
                }
                text += key;
            }
            Segment::Unknown => {}
        }
    }
    text
}

/// The field serde's "missing field `x`" names.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// A key from a file holding it in base64 (`wg genkey`'s output).
fn read_key(path: &Path) -> Result<Key, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Key::from_base64(text.trim())
        .map_err(|e| format!("{} does not hold a base64 key ({e})", path.display()))
}

/// One `[[peer]]` as `wg setconf` takes it, or the key at fault and why.
fn peer_config(peer: &PeerSection, folder: &Path) -> Result<PeerConfig, (&'static str, String)> {
    if let Some(name) = &peer.name
        && name.trim().is_empty()
    {
        return Err(("name", "a peer's name cannot be empty".to_string()));
    }
    let preshared_key = match (&peer.preshared_key, &peer.preshared_key_file) {
        (Some(_), Some(_)) => {
            let both = "set preshared_key or preshared_key_file, not both";
            return Err(("preshared_key_file", both.to_string()));
        }
        (Some(Base64Key(key)), None) => Some(*key),
        (None, Some(file)) => {
            Some(read_key(&folder.join(file)).map_err(|e| ("preshared_key_file", e))?)
        }
        (None, None) => None,
    };
    Ok(PeerConfig {
        public_key: peer.public_key.get_ref().0,
        preshared_key,
        allowed_ips: peer.allowed_ips.iter().map(|prefix| prefix.0).collect(),
        endpoint: peer.endpoint.as_ref().map(|endpoint| endpoint.0.clone()),
        persistent_keepalive: peer.persistent_keepalive,
    })
}

/// Adds the keys and peers of the wg-quick INI at `path` to `device`. What only wg-quick
/// itself acts on (DNS, hooks, SaveConfig) is refused: gatewayd would silently ignore it.
fn merge_include(
    device: &mut DeviceConfig,
    path: &Path,
    seen: &mut HashMap<Key, String>,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let quick = wg_quick::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let refused = [
        ("DNS", quick.dns.is_configured()),
        (
            "PreUp/PostUp/PreDown/PostDown",
            [&quick.pre_up, &quick.post_up, &quick.pre_down, &quick.post_down]
                .iter()
                .any(|hooks| !hooks.is_empty()),
        ),
        ("SaveConfig", quick.save_config),
        ("Address", !quick.addresses.is_empty()),
        ("MTU", quick.mtu.is_some()),
        ("Table", quick.table != Table::Auto),
    ];
    if let Some((key, _)) = refused.iter().find(|(_, present)| *present) {
        return Err(format!(
            "{} sets {key}: an included file may hold only PrivateKey, ListenPort, FwMark and \
             [Peer]s (set the rest in this file)",
            path.display()
        ));
    }
    let included = quick.device;
    let conflict = |what: &str| format!("{what} is set both here and in {}", path.display());
    if included.private_key.is_some() {
        if device.private_key.is_some() {
            return Err(conflict("the private key"));
        }
        device.private_key = included.private_key;
    }
    if included.listen_port.is_some() {
        if device.listen_port.is_some() {
            return Err(conflict("listen_port"));
        }
        device.listen_port = included.listen_port;
    }
    if included.fwmark.is_some() {
        if device.fwmark.is_some() {
            return Err(conflict("fwmark"));
        }
        device.fwmark = included.fwmark;
    }
    for (index, peer) in included.peers.into_iter().enumerate() {
        let here = format!("{} [Peer] {}", path.display(), index + 1);
        if let Some(first) = seen.insert(peer.public_key, here.clone()) {
            return Err(format!("{here} is the same peer as {first}"));
        }
        device.peers.push(peer);
    }
    Ok(())
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
