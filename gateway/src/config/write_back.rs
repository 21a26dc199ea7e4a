//! Changes made while the daemon runs, written back into its configuration file so that the
//! file and the daemon never disagree (issue 12). The file is edited as a document
//! (`toml_edit`), not regenerated: the operator's comments, order and layout survive, and only
//! the tables that changed are touched. Each write replaces the file atomically (`atomic.rs`).

use std::path::Path;

use ipnet::IpNet;
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};

use super::atomic;
use crate::entry::forward::Forward;
use crate::entry::store::ForwardRecord;
use crate::entry::table::ForwardTable;
use crate::uapi::{DeviceSnapshot, DeviceUpdate, Key, PeerSnapshot};

/// Brings the file at `path` in line with the device after `update` was applied, `snapshot`
/// being the device then: the peers' tables reconciled with the snapshot, and the device
/// fields the update named. An endpoint is written only when the update named it: where a
/// peer roams is not configuration.
pub fn save_device(
    path: &Path,
    update: &DeviceUpdate,
    snapshot: &DeviceSnapshot,
) -> Result<(), String> {
    let folder = path.parent().unwrap_or(Path::new("")).to_path_buf();
    edit(path, |document| set_device(document, update, snapshot, &folder))
}

/// The edit [`save_device`] makes; key files named by the document are relative to `folder`.
pub fn set_device(
    document: &mut DocumentMut,
    update: &DeviceUpdate,
    snapshot: &DeviceSnapshot,
    folder: &Path,
) -> Result<(), String> {
    if !document.contains_key("interface") {
        document.insert("interface", Item::Table(Table::new()));
    }
    let interface = document["interface"]
        .as_table_mut()
        .ok_or_else(|| "[interface] is not a table".to_string())?;
    if let Some(key) = update.private_key {
        write_private_key(interface, key, folder)?;
    }
    if update.listen_port.is_some() {
        set_or_remove(interface, "listen_port", i64::from(snapshot.listen_port));
    }
    if let Some(mark) = update.fwmark {
        set_or_remove(interface, "fwmark", i64::from(mark));
    }

    let named_endpoints: Vec<(Key, std::net::SocketAddr)> =
        update.peers.iter().filter_map(|peer| Some((peer.public_key, peer.endpoint?))).collect();
    let named_psk: Vec<Key> = update
        .peers
        .iter()
        .filter(|peer| peer.preshared_key.is_some())
        .map(|peer| peer.public_key)
        .collect();
    // Peers of an included wg-quick file stay there: a table for one here would repeat it.
    let included = included_peers(interface, folder);
    let mut written: Vec<bool> =
        snapshot.peers.iter().map(|peer| included.contains(&peer.public_key)).collect();
    let mut peers = ArrayOfTables::new();
    if let Some(existing) = document.get("peer").and_then(Item::as_array_of_tables) {
        for table in existing.iter() {
            let key = table
                .get("public_key")
                .and_then(Item::as_str)
                .and_then(|t| Key::from_base64(t.trim()).ok());
            let Some(index) =
                key.and_then(|key| snapshot.peers.iter().position(|p| p.public_key == key))
            else {
                // A peer the device no longer has.
                continue;
            };
            if written[index] {
                continue;
            }
            written[index] = true;
            let mut table = table.clone();
            update_peer(&mut table, &snapshot.peers[index], &named_endpoints, &named_psk);
            peers.push(table);
        }
    }
    for (peer, _) in snapshot.peers.iter().zip(&written).filter(|(_, done)| !**done) {
        let mut table = Table::new();
        table.insert("public_key", value(peer.public_key.to_base64()));
        update_peer(&mut table, peer, &named_endpoints, &named_psk);
        peers.push(table);
    }
    if peers.is_empty() {
        document.remove("peer");
    } else {
        document.insert("peer", Item::ArrayOfTables(peers));
    }
    Ok(())
}

/// The public keys of the peers in the wg-quick file `include` names, if any (one that cannot
/// be read now was read when the file was loaded: none, then).
fn included_peers(interface: &Table, folder: &Path) -> Vec<Key> {
    let Some(include) = interface.get("include").and_then(Item::as_str) else { return Vec::new() };
    std::fs::read_to_string(folder.join(include))
        .ok()
        .and_then(|text| super::wg_quick::parse(&text).ok())
        .map(|quick| quick.device.peers.iter().map(|peer| peer.public_key).collect())
        .unwrap_or_default()
}

/// Makes a peer's table say what the device holds for it, touching only what differs.
fn update_peer(
    table: &mut Table,
    peer: &PeerSnapshot,
    named_endpoints: &[(Key, std::net::SocketAddr)],
    named_psk: &[Key],
) {
    let written: Option<Vec<IpNet>> =
        table.get("allowed_ips").and_then(Item::as_array).map(|array| {
            array
                .iter()
                .filter_map(|v| v.as_str())
                .filter_map(|t| super::wg_quick::parse_address(t.trim()).ok())
                .collect()
        });
    if written.as_deref() != Some(&peer.allowed_ips[..]) {
        if peer.allowed_ips.is_empty() {
            table.remove("allowed_ips");
        } else {
            let array: Array = peer.allowed_ips.iter().map(ToString::to_string).collect();
            table.insert("allowed_ips", value(array));
        }
    }
    if let Some((_, endpoint)) = named_endpoints.iter().find(|(key, _)| *key == peer.public_key) {
        table.insert("endpoint", value(endpoint.to_string()));
    }
    let keepalive = i64::from(peer.persistent_keepalive_interval);
    if table.get("persistent_keepalive").and_then(Item::as_integer).unwrap_or(0) != keepalive {
        set_or_remove(table, "persistent_keepalive", keepalive);
    }
    if named_psk.contains(&peer.public_key) {
        table.remove("preshared_key_file");
        match peer.preshared_key {
            Some(psk) => table.insert("preshared_key", value(psk.to_base64())),
            None => table.remove("preshared_key"),
        };
    }
}

/// `key = number`, or no key at all for 0 (the default).
fn set_or_remove(table: &mut Table, key: &str, number: i64) {
    if number == 0 {
        table.remove(key);
    } else if table.get(key).and_then(Item::as_integer) != Some(number) {
        table.insert(key, value(number));
    }
}

/// A new private key goes where the file keeps it: into its key file (replaced atomically),
/// or inline.
fn write_private_key(interface: &mut Table, key: Key, folder: &Path) -> Result<(), String> {
    if key.is_zero() {
        interface.remove("private_key");
        interface.remove("private_key_file");
        return Ok(());
    }
    if let Some(file) = interface.get("private_key_file").and_then(Item::as_str) {
        return atomic::replace_file(&folder.join(file), &format!("{}\n", key.to_base64()));
    }
    interface.insert("private_key", value(key.to_base64()));
    Ok(())
}

/// Rewrites the `[[forward]]` tables of the file at `path` to hold exactly `table`'s forwards.
pub fn save_forwards(path: &Path, table: &ForwardTable) -> Result<(), String> {
    edit(path, |document| set_forwards(document, table))
}

/// Held for the whole of an edit: the forwards' control socket and the UAPI socket are served
/// by different threads, and two read-modify-write cycles at once would lose one change.
static EDITING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Reads the file at `path`, lets `change` edit it, and writes it back if it changed.
fn edit(
    path: &Path,
    change: impl FnOnce(&mut DocumentMut) -> Result<(), String>,
) -> Result<(), String> {
    let _editing = EDITING.lock().unwrap_or_else(|e| e.into_inner());
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {} to update it: {e}", path.display()))?;
    let mut document: DocumentMut =
        text.parse().map_err(|e| format!("cannot update {}: {e}", path.display()))?;
    change(&mut document)?;
    let updated = document.to_string();
    if updated == text {
        return Ok(());
    }
    atomic::replace_file(path, &updated)
}

/// Keeps the `[[forward]]` tables that still describe a forward of `table` (as written, with
/// their comments), drops the others, and appends one for each forward no table described.
pub fn set_forwards(document: &mut DocumentMut, table: &ForwardTable) -> Result<(), String> {
    let wanted = table.forwards();
    let mut described = vec![false; wanted.len()];
    let mut forwards = ArrayOfTables::new();
    if let Some(existing) = document.get("forward").and_then(Item::as_array_of_tables) {
        for written in existing.iter() {
            let Some(forward) = forward_of(written) else { continue };
            if let Some(index) = wanted.iter().position(|w| *w == forward)
                && !described[index]
            {
                described[index] = true;
                forwards.push(written.clone());
            }
        }
    }
    for (forward, _) in wanted.iter().zip(&described).filter(|(_, done)| !**done) {
        forwards.push(table_of(&ForwardRecord::from(forward))?);
    }
    if forwards.is_empty() {
        document.remove("forward");
    } else {
        document.insert("forward", Item::ArrayOfTables(forwards));
    }
    Ok(())
}

/// The forward a written `[[forward]]` table makes, if it makes one.
fn forward_of(written: &Table) -> Option<Forward> {
    let mut alone = Table::new();
    for (key, value) in written.iter() {
        alone.insert(key, value.clone());
    }
    let record: ForwardRecord = toml::from_str(&alone.to_string()).ok()?;
    record.to_forward().ok()
}

/// A new table holding `value`'s fields, as `toml` writes them.
fn table_of(value: &impl serde::Serialize) -> Result<Table, String> {
    let text = toml::to_string(value).map_err(|e| format!("cannot write a table: {e}"))?;
    let document: DocumentMut = text.parse().map_err(|e| format!("cannot write a table: {e}"))?;
    Ok(document.as_table().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::forward::Forward;

    fn table(lines: &[&str]) -> ForwardTable {
        ForwardTable::from_forwards(lines.iter().map(|words| Forward::from_words(words))).unwrap()
    }

    const FILE: &str = r#"# my gateway
[interface]
listen_port = 51820 # the public port

# ssh to the NAS
[[forward]]
protocol = "tcp"
ports = "2222"
to = "10.8.0.2:22"

# the web server
[[forward]]
protocol = "tcp"
ports = "80"
to = "10.8.0.3"
"#;

    #[test]
    fn forwards_are_added_and_removed_keeping_the_rest_of_the_file() {
        let mut document: DocumentMut = FILE.parse().unwrap();
        let wanted = table(&["tcp 2222 --to 10.8.0.2:22", "udp 53 --to 10.8.0.4"]);
        set_forwards(&mut document, &wanted).unwrap();
        let text = document.to_string();
        assert!(
            text.starts_with("# my gateway\n[interface]\nlisten_port = 51820 # the public port\n"),
            "{text}"
        );
        assert!(
            text.contains("# ssh to the NAS\n[[forward]]\nprotocol = \"tcp\"\nports = \"2222\""),
            "{text}"
        );
        assert!(!text.contains("the web server") && !text.contains("\"80\""), "{text}");
        assert!(
            text.contains("[[forward]]\nprotocol = \"udp\"\nports = \"53\"\nto = \"10.8.0.4\"\n"),
            "{text}"
        );
        let reread = crate::config::load::parse(Path::new("wg0.toml"), &text).unwrap();
        assert_eq!(reread.forwards.forwards(), wanted.forwards());

        set_forwards(&mut document, &ForwardTable::new()).unwrap();
        let text = document.to_string();
        assert!(!text.contains("[[forward]]"), "{text}");
        assert!(text.contains("listen_port = 51820 # the public port"), "{text}");
    }

    const PEERS: &str = r#"[interface]
listen_port = 51820

# the phone
[[peer]]
public_key = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="
allowed_ips = ["10.8.0.2/32"] # its address
persistent_keepalive = 25

# the laptop, gone soon
[[peer]]
public_key = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="
allowed_ips = ["10.8.0.3/32"]
"#;

    fn peer(key: &str, allowed: &[&str], keepalive: u16) -> PeerSnapshot {
        PeerSnapshot {
            public_key: Key::from_base64(key).unwrap(),
            preshared_key: None,
            endpoint: Some("192.0.2.9:4000".parse().unwrap()),
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            persistent_keepalive_interval: keepalive,
            allowed_ips: allowed.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn peers_are_reconciled_with_the_device_keeping_comments() {
        let phone = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
        let router = "BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ=";
        let snapshot = DeviceSnapshot {
            private_key: None,
            listen_port: 51820,
            fwmark: 0,
            peers: vec![
                peer(phone, &["10.8.0.2/32"], 10),
                peer(router, &["10.8.0.4/32", "192.168.1.0/24"], 0),
            ],
        };
        let mut router_update = crate::uapi::PeerUpdate::new(Key::from_base64(router).unwrap());
        router_update.endpoint = Some("192.0.2.4:51820".parse().unwrap());
        let update = DeviceUpdate { peers: vec![router_update], ..Default::default() };
        let mut document: DocumentMut = PEERS.parse().unwrap();
        set_device(&mut document, &update, &snapshot, Path::new("")).unwrap();
        let text = document.to_string();
        assert!(text.contains("# the phone\n[[peer]]\npublic_key = \"AgIC"), "{text}");
        assert!(
            text.contains(
                "allowed_ips = [\"10.8.0.2/32\"] # its address\npersistent_keepalive = 10\n"
            ),
            "{text}"
        );
        assert!(!text.contains("the laptop") && !text.contains("AwMD"), "{text}");
        assert!(text.contains("public_key = \"BAQE"), "{text}");
        assert!(text.contains("allowed_ips = [\"10.8.0.4/32\", \"192.168.1.0/24\"]"), "{text}");
        // Named by the update: written; the phone's roaming endpoint: not.
        assert!(text.contains("endpoint = \"192.0.2.4:51820\""), "{text}");
        assert!(!text.contains("192.0.2.9"), "{text}");
        assert!(text.contains("listen_port = 51820"), "{text}");
        let reread = crate::config::load::parse(Path::new("wg0.toml"), &text).unwrap();
        assert_eq!(reread.device.peers.len(), 2);
    }

    #[test]
    fn peers_of_an_included_file_are_not_repeated_here() {
        let folder =
            std::env::temp_dir().join(format!("gateway-write-back-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let laptop = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";
        std::fs::write(
            folder.join("wg0.conf"),
            format!("[Peer]\nPublicKey = {laptop}\nAllowedIPs = 10.8.0.3/32\n"),
        )
        .unwrap();
        let text = PEERS.replace("listen_port = 51820\n", "include = \"wg0.conf\"\n");
        let text = text[..text.find("# the laptop").unwrap()].to_string();
        let snapshot = DeviceSnapshot {
            private_key: None,
            listen_port: 0,
            fwmark: 0,
            peers: vec![
                peer("AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=", &["10.8.0.2/32"], 25),
                peer(laptop, &["10.8.0.3/32"], 0),
            ],
        };
        let mut document: DocumentMut = text.parse().unwrap();
        set_device(&mut document, &DeviceUpdate::default(), &snapshot, &folder).unwrap();
        let written = document.to_string();
        std::fs::remove_dir_all(&folder).unwrap();
        assert_eq!(written, text, "an included peer was written here");
    }
}
