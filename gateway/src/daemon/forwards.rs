//! The interface's forwards (`gateway forward add/list/remove`): one table, loaded from the
//! state directory at start, changed one request at a time, saved after every change and
//! handed to whoever carries the traffic: the data plane (through the mirror) and the proxy
//! (through a watch channel).
//!
//! A change is checked whole before anything happens: the forward parses (the CLI's own
//! rules), it overlaps no other, the data plane can hold the table, its backend is routed
//! into the tunnel by some peer's AllowedIPs, its listen address is one of this host's. Then
//! it is saved, and only once saved is it published; a refused change, or one that cannot be
//! saved, leaves the table, the file and the data plane as they were.

use crate::entry::traffic::ForwardTraffic;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::core::Shared;
use crate::entry::forward::{Forward, Selector};
use crate::entry::store;
use crate::entry::table::ForwardTable;
use crate::mirror::forwards::ForwardPlan;

/// Where an interface keeps its state unless told otherwise: `/var/lib/gatewayd/<ifname>`.
pub fn default_state_directory(interface: &str) -> PathBuf {
    Path::new("/var/lib/gatewayd").join(interface)
}

/// What a change is checked against and published to: the running daemon, or a test's
/// stand-in.
pub trait EntryHost: Send + Sync {
    /// Whether some peer's AllowedIPs route `address` into the tunnel.
    fn routed(&self, address: IpAddr) -> bool;
    /// Whether `address` is one of this host's.
    fn is_local(&self, address: IpAddr) -> Result<bool, String>;
    /// Makes the data plane carry `table`.
    fn publish(&self, table: &ForwardTable);
}

pub struct EntryPoint {
    home: store::ForwardsHome,
    /// The table as saved and published. Held for the whole of a change: changes are made
    /// one at a time.
    table: Mutex<Arc<ForwardTable>>,
    changes: watch::Sender<Arc<ForwardTable>>,
    /// What each forward carried through the proxy.
    traffic: Arc<ForwardTraffic>,
}

impl EntryPoint {
    /// The forwards saved in `directory`; none if nothing was ever saved there (the first
    /// change creates it, root's alone: a daemon that never forwards leaves nothing behind).
    /// A file that cannot be read, or whose forwards the data plane could not hold, is
    /// refused: the daemon would otherwise overwrite it at the next change.
    pub fn open(directory: PathBuf) -> Result<EntryPoint, String> {
        let table = store::load(&directory).map_err(|e| e.to_string())?;
        ForwardPlan::of(&table)
            .map_err(|e| format!("{}: {e}", store::path_in(&directory).display()))?;
        Ok(EntryPoint::with_table(store::ForwardsHome::StateDirectory(directory), table))
    }

    /// `table` (already checked, as `config::load` checks a file's forwards), kept in `home`
    /// from the next change on.
    pub fn with_table(home: store::ForwardsHome, table: ForwardTable) -> EntryPoint {
        let table = Arc::new(table);
        let (changes, _) = watch::channel(Arc::clone(&table));
        EntryPoint { home, table: Mutex::new(table), changes, traffic: Arc::default() }
    }

    /// Where the forwards are kept.
    pub fn home(&self) -> &store::ForwardsHome {
        &self.home
    }

    /// The forwards now.
    pub fn table(&self) -> Arc<ForwardTable> {
        Arc::clone(&self.lock())
    }

    /// Each forward's connections and bytes through the proxy.
    pub fn traffic(&self) -> &Arc<ForwardTraffic> {
        &self.traffic
    }

    /// The forwards now and after every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ForwardTable>> {
        self.changes.subscribe()
    }

    /// Adds `forward`, or says in one line why not.
    pub fn add(&self, host: &dyn EntryHost, forward: Forward) -> Result<Forward, String> {
        let mut current = self.lock();
        let mut table = ForwardTable::clone(&current);
        table.add(forward.clone()).map_err(|e| e.to_string())?;
        ForwardPlan::of(&table).map_err(|e| format!("{}: {e}", forward.selector()))?;
        let backend = forward.target().address();
        if !host.routed(backend) {
            return Err(format!("no peer's AllowedIPs route {backend}"));
        }
        if let Some(listen) = forward.selector().listen()
            && !host.is_local(listen)?
        {
            return Err(format!("--listen {listen} is not an address of this host"));
        }
        self.commit(host, &mut current, table)?;
        Ok(forward)
    }

    /// Removes the forward `selector` names and returns it, or says in one line why not.
    pub fn remove(&self, host: &dyn EntryHost, selector: &Selector) -> Result<Forward, String> {
        let mut current = self.lock();
        let mut table = ForwardTable::clone(&current);
        let removed = table.remove(selector).map_err(|e| e.to_string())?;
        // Fewer forwards never need more of the data plane; checked all the same, so that
        // nothing the mirror would refuse is ever saved.
        ForwardPlan::of(&table).map_err(|e| e.to_string())?;
        self.commit(host, &mut current, table)?;
        Ok(removed)
    }

    /// Replaces the whole table with `table`, already checked (a reloaded configuration file's
    /// forwards, `config::load`); saved where the forwards are kept, then published.
    pub fn replace(&self, host: &dyn EntryHost, table: ForwardTable) -> Result<(), String> {
        let mut current = self.lock();
        self.commit(host, &mut current, table)
    }

    /// Makes the data plane carry the forwards as they are (at start, once it exists).
    pub fn publish(&self, host: &dyn EntryHost) {
        host.publish(&self.lock());
    }

    /// Saves `table`, then publishes it and makes it the current one.
    fn commit(
        &self,
        host: &dyn EntryHost,
        current: &mut Arc<ForwardTable>,
        table: ForwardTable,
    ) -> Result<(), String> {
        self.home.save(&table).map_err(|e| e.to_string())?;
        host.publish(&table);
        *current = Arc::new(table);
        self.changes.send_replace(Arc::clone(current));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<ForwardTable>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running daemon as the forwards' host: the device's AllowedIPs, the host's addresses,
/// the data plane behind the device lock.
pub struct DaemonHost(pub Arc<Shared>);

impl EntryHost for DaemonHost {
    fn routed(&self, address: IpAddr) -> bool {
        self.0.lock().device.allowed_ips().lookup(address).is_some()
    }

    fn is_local(&self, address: IpAddr) -> Result<bool, String> {
        let addresses = super::link::local_addresses()
            .map_err(|e| format!("cannot list this host's addresses: {e}"))?;
        Ok(addresses.contains(&address))
    }

    fn publish(&self, table: &ForwardTable) {
        if let Some(sink) = self.0.lock().sink.as_mut() {
            sink.forwards_changed(table);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::entry::forward::SelectorArgs;

    /// A scratch state directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let path = std::env::temp_dir()
                .join(format!("gateway-daemon-forwards-{}-{test}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            Scratch(path)
        }

        fn state(&self) -> PathBuf {
            self.0.join("wg0")
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Routes 10.0.0.0/24 into the tunnel, owns 192.0.2.1, records what it was told to
    /// publish.
    #[derive(Default)]
    struct FakeHost {
        published: Mutex<Vec<Vec<String>>>,
    }

    impl EntryHost for FakeHost {
        fn routed(&self, address: IpAddr) -> bool {
            matches!(address, IpAddr::V4(v4) if v4.octets()[..3] == [10, 0, 0])
        }
        fn is_local(&self, address: IpAddr) -> Result<bool, String> {
            Ok(address == "192.0.2.1".parse::<IpAddr>().unwrap())
        }
        fn publish(&self, table: &ForwardTable) {
            let lines = table.forwards().iter().map(ToString::to_string).collect();
            self.published.lock().unwrap().push(lines);
        }
    }

    impl FakeHost {
        fn published(&self) -> Vec<Vec<String>> {
            std::mem::take(&mut *self.published.lock().unwrap())
        }
    }

    fn args(words: &str) -> SelectorArgs<'_> {
        SelectorArgs::from_words(words)
    }

    fn forward(words: &str) -> Forward {
        let (selector, to) = words.split_once(" --to ").unwrap();
        Forward::parse(&args(selector), to).unwrap()
    }

    fn selector(words: &str) -> Selector {
        Selector::parse(&args(words)).unwrap()
    }

    fn lines(entry: &EntryPoint) -> Vec<String> {
        entry.table().forwards().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn changes_are_saved_published_and_watched_and_survive_a_restart() {
        let scratch = Scratch::new("changes");
        let host = FakeHost::default();
        let entry = EntryPoint::open(scratch.state()).unwrap();
        assert!(!scratch.state().exists(), "created by the first change, not before");
        let mut watcher = entry.subscribe();
        entry.add(&host, forward("tcp 8000-8010 --to 10.0.0.2:9000")).unwrap();
        let mode = fs::metadata(scratch.state()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        entry
            .add(&host, forward("tls 443 --listen 192.0.2.1 --sni a.example --to 10.0.0.3:443"))
            .unwrap();
        assert_eq!(host.published().len(), 2);
        assert!(watcher.has_changed().unwrap());
        assert_eq!(watcher.borrow_and_update().len(), 2);

        let restarted = EntryPoint::open(scratch.state()).unwrap();
        assert_eq!(lines(&restarted), lines(&entry));
        let removed = restarted.remove(&host, &selector("tcp 8000-8010")).unwrap();
        assert_eq!(removed.to_string(), "tcp 8000-8010 --to 10.0.0.2:9000");
        assert_eq!(
            host.published(),
            [vec!["tls 443 --listen 192.0.2.1 --sni a.example --to 10.0.0.3:443".to_string()]]
        );
        assert_eq!(lines(&EntryPoint::open(scratch.state()).unwrap()), lines(&restarted));
    }

    #[test]
    fn a_refused_change_leaves_the_table_the_file_and_the_data_plane_alone() {
        let scratch = Scratch::new("refused");
        let host = FakeHost::default();
        let entry = EntryPoint::open(scratch.state()).unwrap();
        entry.add(&host, forward("tcp 22 --listen 192.0.2.1 --to 10.0.0.2")).unwrap();
        host.published();
        let file = store::path_in(&scratch.state());
        let saved = fs::read(&file).unwrap();
        let refusals = [
            (
                "tcp 20-30 --to 10.0.0.3",
                "tcp 20-30 overlaps the forward 'tcp 22 --listen 192.0.2.1 --to 10.0.0.2'",
            ),
            ("udp 53 --to 192.0.2.9", "no peer's AllowedIPs route 192.0.2.9"),
            (
                "udp 53 --listen 192.0.2.77 --to 10.0.0.2",
                "--listen 192.0.2.77 is not an address of this host",
            ),
        ];
        for (words, error) in refusals {
            assert_eq!(entry.add(&host, forward(words)).unwrap_err(), error);
        }
        assert_eq!(
            entry.remove(&host, &selector("tcp 23")).unwrap_err(),
            "there is no forward tcp 23"
        );
        assert_eq!(lines(&entry), ["tcp 22 --listen 192.0.2.1 --to 10.0.0.2"]);
        assert_eq!(fs::read(&file).unwrap(), saved);
        assert_eq!(host.published(), Vec::<Vec<String>>::new());
    }

    #[test]
    fn a_change_that_cannot_be_saved_is_not_made() {
        let scratch = Scratch::new("unsaved");
        let host = FakeHost::default();
        let entry = EntryPoint::open(scratch.state()).unwrap();
        // The temporary file's name taken by a directory: the save fails before the rename.
        fs::create_dir_all(scratch.state().join("forwards.json.tmp")).unwrap();
        let error = entry.add(&host, forward("udp 53 --to 10.0.0.2")).unwrap_err();
        assert!(error.starts_with("cannot create "), "{error}");
        assert!(entry.table().is_empty());
        assert_eq!(host.published(), Vec::<Vec<String>>::new());
        assert!(!store::path_in(&scratch.state()).exists());
    }

    #[test]
    fn a_saved_table_the_data_plane_cannot_hold_is_refused_at_start() {
        let scratch = Scratch::new("unplannable");
        let forwards: Vec<String> = (1..=5)
            .map(|i| {
                format!(
                    r#"{{"protocol": "tcp", "ports": "22", "listen": "192.0.2.{i}", "to": "10.0.0.2"}}"#
                )
            })
            .collect();
        fs::create_dir_all(scratch.state()).unwrap();
        let document = format!(r#"{{"version": 1, "forwards": [{}]}}"#, forwards.join(","));
        fs::write(store::path_in(&scratch.state()), document).unwrap();
        let error = EntryPoint::open(scratch.state()).err().unwrap();
        assert!(error.ends_with("forwards.json: 5 forwards on different listen addresses would take tcp port 22; the data plane takes at most 4 per port"), "{error}");
    }
}
