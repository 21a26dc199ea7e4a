//! The wg-quick(8) configuration format, parsed the way wg-quick and `wg setconf` read it.
//!
//! A file is `[Interface]` and `[Peer]` sections of `Key = Value` lines; `#` starts a comment
//! anywhere on a line; keys and section names are case-insensitive (wg-quick matches them with
//! `nocasematch`, `wg` with `strcasecmp`). wg-quick consumes Address, DNS, MTU, Table, PreUp,
//! PostUp, PreDown, PostDown and SaveConfig from `[Interface]` and gives every other line to
//! `wg setconf`; here both halves are validated up front, so a bad line is reported before
//! anything has been created, with its line number.
//!
//! Endpoints stay text: resolving a host name is I/O, done when the interface comes up (as
//! `wg setconf` does).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::uapi::{AllowedIpChange, DeviceUpdate, Key, PeerUpdate};

/// Where a bare interface name's configuration lives, as for wg-quick.
pub const CONFIG_DIRECTORY: &str = "/etc/wireguard";

/// The longest interface name Linux accepts (IFNAMSIZ - 1).
const MAX_INTERFACE_NAME: usize = 15;

/// A wg-quick configuration file, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuickConfig {
    /// Addresses of the interface, in file order. A bare address is a host prefix (/32,
    /// /128), as `ip address add` reads it.
    pub addresses: Vec<IpNet>,
    pub dns: Dns,
    /// None: derived from the route to the endpoints, as wg-quick does.
    pub mtu: Option<u32>,
    pub table: Table,
    pub pre_up: Vec<String>,
    pub post_up: Vec<String>,
    pub pre_down: Vec<String>,
    pub post_down: Vec<String>,
    pub save_config: bool,
    /// Everything `wg setconf` would get.
    pub device: DeviceConfig,
}

impl QuickConfig {
    /// The wg-quick lines SaveConfig writes right after `[Interface]`, as wg-quick does: the
    /// interface's current `addresses`, the DNS it was given, its current `mtu` (only if the
    /// file fixed one), Table (if not the default), SaveConfig and the hooks.
    pub fn saved_interface_lines(&self, addresses: &[IpNet], mtu: Option<u32>) -> String {
        let mut lines = String::new();
        for address in addresses {
            lines += &format!("Address = {address}\n");
        }
        for server in &self.dns.servers {
            lines += &format!("DNS = {server}\n");
        }
        for domain in &self.dns.search {
            lines += &format!("DNS = {domain}\n");
        }
        if let (Some(_), Some(current)) = (self.mtu, mtu) {
            lines += &format!("MTU = {current}\n");
        }
        if self.table != Table::Auto {
            lines += &format!("Table = {}\n", self.table);
        }
        if self.save_config {
            lines += "SaveConfig = true\n";
        }
        for (key, hooks) in [
            ("PreUp", &self.pre_up),
            ("PostUp", &self.post_up),
            ("PreDown", &self.pre_down),
            ("PostDown", &self.post_down),
        ] {
            for hook in hooks {
                lines += &format!("{key} = {hook}\n");
            }
        }
        lines
    }
}

/// `DNS =`: addresses become name servers, anything else a search domain (as in wg-quick).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub servers: Vec<IpAddr>,
    pub search: Vec<String>,
}

impl Dns {
    /// wg-quick touches the resolver only when there is a server; search domains alone are
    /// ignored, as there.
    pub fn is_configured(&self) -> bool {
        !self.servers.is_empty()
    }
}

/// `Table =`: where the routes to the peers' AllowedIPs go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Table {
    /// The main table; default routes (`/0`) through a table of their own selected by fwmark
    /// policy rules, so the tunnel's own packets still leave by the main table.
    #[default]
    Auto,
    /// No routes at all.
    Off,
    /// Every route into this table (a number, or a name from `/etc/iproute2/rt_tables`).
    Named(String),
}

impl fmt::Display for Table {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Table::Auto => formatter.write_str("auto"),
            Table::Off => formatter.write_str("off"),
            Table::Named(name) => formatter.write_str(name),
        }
    }
}

/// The `wg setconf` half: `[Interface]` PrivateKey, ListenPort, FwMark and the peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceConfig {
    pub private_key: Option<Key>,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub peers: Vec<PeerConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: Key,
    pub preshared_key: Option<Key>,
    pub allowed_ips: Vec<IpNet>,
    /// `host:port` or `[v6]:port`, not yet resolved.
    pub endpoint: Option<String>,
    /// Seconds; 0 is off.
    pub persistent_keepalive: Option<u16>,
}

impl DeviceConfig {
    /// The `set` request `wg setconf` makes: every peer replaced, each peer's AllowedIPs
    /// replaced; device fields only where the file has them. `resolve` turns an endpoint's
    /// text into an address.
    pub fn to_update<E>(
        &self,
        mut resolve: impl FnMut(&str) -> Result<std::net::SocketAddr, E>,
    ) -> Result<DeviceUpdate, E> {
        let mut peers = Vec::with_capacity(self.peers.len());
        for peer in &self.peers {
            let mut update = PeerUpdate::new(peer.public_key);
            update.preshared_key = peer.preshared_key;
            update.endpoint = peer.endpoint.as_deref().map(&mut resolve).transpose()?;
            update.persistent_keepalive_interval = peer.persistent_keepalive;
            update.allowed_ips = std::iter::once(AllowedIpChange::RemoveAll)
                .chain(peer.allowed_ips.iter().map(|prefix| AllowedIpChange::Add(*prefix)))
                .collect();
            peers.push(update);
        }
        Ok(DeviceUpdate {
            private_key: self.private_key,
            listen_port: self.listen_port,
            fwmark: self.fwmark,
            replace_peers: true,
            peers,
        })
    }
}

/// What is wrong with a configuration file: one line for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based; 0 for the file as a whole.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            formatter.write_str(&self.message)
        } else {
            write!(formatter, "line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The configuration file and interface name an argument of `gateway up`/`down` names: a bare
/// interface name means `/etc/wireguard/<name>.conf`; otherwise a path whose file name is the
/// interface name followed by `.conf`. Unlike wg-quick, `wg0.conf` is the file in the current
/// folder, not `/etc/wireguard/wg0.conf.conf`.
pub fn resolve_argument(argument: &str) -> Result<(PathBuf, String), ConfigError> {
    let whole = |message: String| ConfigError { line: 0, message };
    let path = if is_interface_name(argument) && !argument.ends_with(".conf") {
        Path::new(CONFIG_DIRECTORY).join(format!("{argument}.conf"))
    } else {
        PathBuf::from(argument)
    };
    let interface = path
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.strip_suffix(".conf"))
        .filter(|stem| is_interface_name(stem))
        .ok_or_else(|| {
            whole(format!(
                "`{}': the file name must be an interface name (1 to 15 of A-Z a-z 0-9 _ = + . -) \
                 followed by .conf",
                path.display()
            ))
        })?;
    Ok((path.clone(), interface.to_string()))
}

/// The names wg-quick accepts: 1 to 15 of `[a-zA-Z0-9_=+.-]`.
pub fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_=+.-".contains(&b))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    Interface,
    Peer,
}

/// Parses a whole file.
pub fn parse(text: &str) -> Result<QuickConfig, ConfigError> {
    let mut config = QuickConfig {
        addresses: Vec::new(),
        dns: Dns::default(),
        mtu: None,
        table: Table::Auto,
        pre_up: Vec::new(),
        post_up: Vec::new(),
        pre_down: Vec::new(),
        post_down: Vec::new(),
        save_config: false,
        device: DeviceConfig::default(),
    };
    let mut section = Section::None;
    // The [Peer] being read: its fields, and the line its section started on (for errors).
    let mut peer: Option<(usize, PartialPeer)> = None;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let error = |message: String| ConfigError { line: number, message };
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            finish_peer(&mut peer, &mut config.device)?;
            let name: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            section = if name.eq_ignore_ascii_case("[Interface]") {
                Section::Interface
            } else if name.eq_ignore_ascii_case("[Peer]") {
                peer = Some((number, PartialPeer::default()));
                Section::Peer
            } else {
                return Err(error(format!("unknown section `{line}'")));
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(error(format!("`{line}' is not `Key = Value'")));
        };
        let key: String = key.chars().filter(|c| !c.is_whitespace()).collect();
        let value = value.trim();
        match section {
            Section::None => {
                return Err(error(format!("`{key}' comes before any [Interface] or [Peer]")));
            }
            Section::Interface => interface_key(&mut config, &key, value).map_err(error)?,
            Section::Peer => {
                let (_, fields) = peer.as_mut().expect("a [Peer] section has its fields");
                peer_key(fields, &key, value).map_err(error)?;
            }
        }
    }
    finish_peer(&mut peer, &mut config.device)?;
    Ok(config)
}

/// The wg-quick keys, which `wg setconf` would reject anywhere else.
const QUICK_KEYS: &[&str] =
    &["Address", "DNS", "MTU", "Table", "PreUp", "PostUp", "PreDown", "PostDown", "SaveConfig"];

fn interface_key(config: &mut QuickConfig, key: &str, value: &str) -> Result<(), String> {
    let is = |name: &str| key.eq_ignore_ascii_case(name);
    if is("Address") {
        for item in list(value) {
            config.addresses.push(parse_address(item)?);
        }
    } else if is("DNS") {
        for item in list(value) {
            parse_dns_entry(&mut config.dns, item)?;
        }
    } else if is("MTU") {
        config.mtu = Some(parse_mtu(value)?);
    } else if is("Table") {
        config.table = parse_table(value)?;
    } else if is("PreUp") {
        push_hook(&mut config.pre_up, value);
    } else if is("PostUp") {
        push_hook(&mut config.post_up, value);
    } else if is("PreDown") {
        push_hook(&mut config.pre_down, value);
    } else if is("PostDown") {
        push_hook(&mut config.post_down, value);
    } else if is("SaveConfig") {
        config.save_config = parse_bool(key, value)?;
    } else if is("PrivateKey") {
        config.device.private_key = Some(parse_key(key, value)?.clamped());
    } else if is("ListenPort") {
        config.device.listen_port = Some(parse_number(key, value)?);
    } else if is("FwMark") {
        config.device.fwmark = Some(parse_fwmark(value)?);
    } else {
        return Err(format!("unknown key `{key}' in [Interface]"));
    }
    Ok(())
}

#[derive(Default)]
struct PartialPeer {
    public_key: Option<Key>,
    preshared_key: Option<Key>,
    allowed_ips: Vec<IpNet>,
    endpoint: Option<String>,
    persistent_keepalive: Option<u16>,
}

fn peer_key(peer: &mut PartialPeer, key: &str, value: &str) -> Result<(), String> {
    let is = |name: &str| key.eq_ignore_ascii_case(name);
    if is("PublicKey") {
        peer.public_key = Some(parse_key(key, value)?);
    } else if is("PresharedKey") {
        peer.preshared_key = Some(parse_key(key, value)?);
    } else if is("AllowedIPs") {
        for item in list(value) {
            let prefix = parse_address(item).map_err(|_| format!("bad AllowedIPs `{item}'"))?;
            peer.allowed_ips.push(prefix.trunc());
        }
    } else if is("Endpoint") {
        peer.endpoint = Some(parse_endpoint(value)?);
    } else if is("PersistentKeepalive") {
        peer.persistent_keepalive =
            Some(if value.eq_ignore_ascii_case("off") { 0 } else { parse_number(key, value)? });
    } else if let Some(quick) = QUICK_KEYS.iter().find(|name| is(name)) {
        return Err(format!("`{quick}' belongs in [Interface], not [Peer]"));
    } else {
        return Err(format!("unknown key `{key}' in [Peer]"));
    }
    Ok(())
}

fn finish_peer(
    peer: &mut Option<(usize, PartialPeer)>,
    device: &mut DeviceConfig,
) -> Result<(), ConfigError> {
    let Some((line, fields)) = peer.take() else { return Ok(()) };
    let public_key = fields
        .public_key
        .ok_or_else(|| ConfigError { line, message: "[Peer] without a PublicKey".to_string() })?;
    device.peers.push(PeerConfig {
        public_key,
        preshared_key: fields.preshared_key,
        allowed_ips: fields.allowed_ips,
        endpoint: fields.endpoint,
        persistent_keepalive: fields.persistent_keepalive,
    });
    Ok(())
}

/// A comma-separated value's items (wg-quick also splits on whitespace).
fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(|c: char| c == ',' || c.is_whitespace()).filter(|item| !item.is_empty())
}

fn push_hook(hooks: &mut Vec<String>, value: &str) {
    if !value.is_empty() {
        hooks.push(value.to_string());
    }
}

/// An address with or without a prefix length.
pub(crate) fn parse_address(item: &str) -> Result<IpNet, String> {
    let parsed = match item.split_once('/') {
        Some(_) => item.parse::<IpNet>().ok(),
        None => item.parse::<IpAddr>().ok().map(IpNet::from),
    };
    parsed.ok_or_else(|| format!("bad Address `{item}': not an IP address with optional /prefix"))
}

fn parse_dns_entry(dns: &mut Dns, item: &str) -> Result<(), String> {
    // wg-quick's rule: digits and dots, or anything with a colon, is a server.
    let looks_like_address =
        item.contains(':') || item.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if looks_like_address {
        let server = item.parse::<IpAddr>().map_err(|_| format!("bad DNS server `{item}'"))?;
        dns.servers.push(server);
    } else if item.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        dns.search.push(item.to_string());
    } else {
        return Err(format!("bad DNS search domain `{item}'"));
    }
    Ok(())
}

pub(crate) fn parse_mtu(value: &str) -> Result<u32, String> {
    // 68 is the least IPv4 allows; the kernel refuses more than 65535 for a TUN device.
    match value.parse::<u32>() {
        Ok(mtu) if (68..=65535).contains(&mtu) => Ok(mtu),
        _ => Err(format!("bad MTU `{value}': a number from 68 to 65535")),
    }
}

pub(crate) fn parse_table(value: &str) -> Result<Table, String> {
    if value.eq_ignore_ascii_case("auto") {
        Ok(Table::Auto)
    } else if value.eq_ignore_ascii_case("off") {
        Ok(Table::Off)
    } else if !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        Ok(Table::Named(value.to_string()))
    } else {
        Err(format!("bad Table `{value}': auto, off, a table number or a table name"))
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(format!("bad {key} `{value}': true or false"))
    }
}

fn parse_key(key: &str, value: &str) -> Result<Key, String> {
    Key::from_base64(value).map_err(|e| format!("bad {key}: {e}"))
}

fn parse_number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value.parse::<T>().map_err(|_| format!("bad {key} `{value}'"))
}

fn parse_fwmark(value: &str) -> Result<u32, String> {
    let parsed = if value.eq_ignore_ascii_case("off") {
        Ok(0)
    } else if let Some(hex) = value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16)
    } else {
        value.parse::<u32>()
    };
    parsed.map_err(|_| format!("bad FwMark `{value}': off, or a number (0x for hex)"))
}

/// `host:port` or `[v6 address]:port`; the host is resolved later.
pub(crate) fn parse_endpoint(value: &str) -> Result<String, String> {
    let bad = || format!("bad Endpoint `{value}': host:port or [IPv6]:port");
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host_ok = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').is_some_and(|v6| v6.parse::<IpAddr>().is_ok()),
        None => !host.is_empty() && !host.contains(':'),
    };
    if host_ok { Ok(value.to_string()) } else { Err(bad()) }
}

#[cfg(test)]
#[path = "wg_quick_tests.rs"]
mod tests;
