//! `gateway up` and `gateway down`: wg-quick(8)'s procedure, with gatewayd as the interface
//! whether or not the kernel has a WireGuard module (wg-quick itself runs a userspace
//! implementation only where `ip link add type wireguard` fails).
//!
//! Up, in wg-quick's order: PreUp hooks; gatewayd creates the interface; the `wg setconf` half
//! of the file is applied over the UAPI socket; addresses; MTU and link up; DNS; routes for
//! the peers' AllowedIPs (per Table); PostUp hooks. A failure part-way undoes what was done
//! and is reported in one line. Down: PreDown hooks; SaveConfig; DNS, policy rules and
//! firewall rules removed; the interface deleted (its daemon exits); PostDown hooks.
//!
//! Everything that can be checked without changing the system (the file, the privileges, a
//! resolver for DNS, the endpoints' names) is checked before PreUp runs.

mod daemon;
mod dns;
pub(crate) mod network;
pub(crate) mod system;

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::config::routes;
use crate::config::showconf;
use crate::config::wg_quick::{self, QuickConfig, Table};
use crate::uapi::{DeviceSnapshot, DeviceUpdate, client};

/// A configuration file read and validated, and the interface it is for.
struct Loaded {
    path: PathBuf,
    interface: String,
    config: QuickConfig,
}

fn load(argument: &str) -> Result<Loaded, String> {
    let (path, interface) = wg_quick::resolve_argument(argument).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("`{}' does not exist", path.display()),
        _ => format!("cannot read `{}': {e}", path.display()),
    })?;
    warn_if_world_accessible(&path);
    let config = wg_quick::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Loaded { path, interface, config })
}

/// The file holds a private key: say so if others may read it (wg-quick's warning).
fn warn_if_world_accessible(path: &Path) {
    let mode = |p: &Path| p.metadata().map(|m| m.permissions().mode()).unwrap_or(0);
    let directory = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if mode(path) & mode(directory) & 0o007 != 0 {
        eprintln!("Warning: `{}' is world accessible", path.display());
    }
}

fn require_privileges(action: &str) -> Result<(), String> {
    if system::has_net_admin() {
        Ok(())
    } else {
        Err(format!("{action} needs root (CAP_NET_ADMIN): run it with sudo"))
    }
}

fn resolve_endpoint(text: &str) -> Result<SocketAddr, String> {
    let mut addresses =
        text.to_socket_addrs().map_err(|e| format!("cannot resolve Endpoint `{text}': {e}"))?;
    addresses.next().ok_or_else(|| format!("Endpoint `{text}' resolves to no address"))
}

/// What `up` has changed so far: what a failure must undo.
#[derive(Default)]
struct Progress {
    daemon_started: bool,
    dns: Option<dns::Resolver>,
    default_route_table: Option<u32>,
}

/// Where gatewayd's own configuration files live (`gatewayd --config`).
pub const GATEWAY_CONFIG_DIRECTORY: &str = "/etc/gateway";

/// The gateway TOML file and interface an argument of `up`/`down` names, if it names one: a
/// path ending in `.toml` (the interface its file name before that), or a bare interface name
/// whose `/etc/gateway/<name>.toml` exists (else the name is wg-quick's, in /etc/wireguard).
fn gateway_file(argument: &str) -> Result<Option<(PathBuf, String)>, String> {
    if let Some(stem) = argument.strip_suffix(".toml") {
        let path = PathBuf::from(argument);
        let name = Path::new(stem).file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if !wg_quick::is_interface_name(name) {
            return Err(format!(
                "`{argument}': the file name must be an interface name (1 to 15 of A-Z a-z 0-9 \
                 _ = + . -) followed by .toml"
            ));
        }
        return Ok(Some((path, name.to_string())));
    }
    let by_name = Path::new(GATEWAY_CONFIG_DIRECTORY).join(format!("{argument}.toml"));
    Ok((wg_quick::is_interface_name(argument) && by_name.is_file())
        .then(|| (by_name, argument.to_string())))
}

/// `gateway up` of a gateway TOML file: gatewayd applies the whole file itself
/// (`gatewayd --config`), after it is checked here.
fn up_gateway_file(path: &Path, interface: &str, daemon_args: &[String]) -> Result<(), String> {
    crate::config::load::load(path).map_err(|e| e.to_string())?;
    warn_if_world_accessible(path);
    require_privileges("gateway up")?;
    if network::link_exists(interface) {
        return Err(format!("`{interface}' already exists"));
    }
    if daemon::is_running(interface) {
        return Err(format!("a daemon already serves `{interface}'"));
    }
    let mut args = vec!["--config".to_string(), path.to_string_lossy().into_owned()];
    args.extend(daemon_args.iter().cloned());
    daemon::start(interface, &args)
}

/// `gateway up`: brings the interface of `argument` (a wg-quick file, a gateway TOML file, or
/// a name in /etc/gateway or /etc/wireguard) up. `daemon_args` go to gatewayd before the
/// interface name.
pub fn up(argument: &str, daemon_args: &[String]) -> Result<(), String> {
    if let Some((path, interface)) = gateway_file(argument)? {
        return up_gateway_file(&path, &interface, daemon_args);
    }
    let Loaded { interface, config, .. } = load(argument)?;
    require_privileges("gateway up")?;
    if network::link_exists(&interface) {
        return Err(format!("`{interface}' already exists"));
    }
    if daemon::is_running(&interface) {
        return Err(format!("a daemon already serves `{interface}'"));
    }
    let resolver = dns::required(&config.dns)?;
    let update = config.device.to_update(resolve_endpoint)?;

    let mut progress = Progress::default();
    let result = bring_up(&interface, &config, &update, resolver, daemon_args, &mut progress);
    if result.is_err() {
        eprintln!("[!] undoing what was done for {interface}");
        let _ = undo(&interface, &progress);
    }
    result
}

fn bring_up(
    interface: &str,
    config: &QuickConfig,
    update: &DeviceUpdate,
    resolver: Option<dns::Resolver>,
    daemon_args: &[String],
    progress: &mut Progress,
) -> Result<(), String> {
    for hook in &config.pre_up {
        system::run_hook("PreUp", hook, interface)?;
    }
    daemon::start(interface, daemon_args)?;
    progress.daemon_started = true;
    client::set(interface, update).map_err(|e| match update.listen_port {
        Some(port) if e.is_port_in_use() => format!("ListenPort {port} is already in use"),
        _ => e.to_string(),
    })?;
    for address in &config.addresses {
        network::add_address(interface, address)?;
    }
    let mtu = match config.mtu {
        Some(mtu) => mtu,
        None => {
            let endpoints: Vec<SocketAddr> =
                update.peers.iter().filter_map(|peer| peer.endpoint).collect();
            network::derived_mtu(&endpoints)
        }
    };
    network::set_mtu_and_up(interface, mtu)?;
    if let Some(resolver) = resolver {
        progress.dns = Some(resolver);
        dns::set(resolver, interface, &config.dns)?;
    }
    add_routes(interface, &config.table, progress)?;
    for hook in &config.post_up {
        system::run_hook("PostUp", hook, interface)?;
    }
    Ok(())
}

fn add_routes(interface: &str, table: &Table, progress: &mut Progress) -> Result<(), String> {
    let snapshot = client::get(interface)?;
    let plan = routes::plan(table, allowed_ips(&snapshot));
    for route in &plan.routes {
        network::add_route(interface, route)?;
    }
    if plan.default_routes.is_empty() {
        return Ok(());
    }
    // The device's fwmark keeps its own packets out of the default route's table; without
    // one, the table's number serves as both (wg-quick's choice).
    let table = match snapshot.fwmark {
        0 => {
            let table = network::free_table();
            eprintln!("[#] wg set {interface} fwmark {table}");
            client::set(interface, &DeviceUpdate { fwmark: Some(table), ..Default::default() })?;
            table
        }
        mark => mark,
    };
    progress.default_route_table = Some(table);
    let addresses: Vec<_> = network::addresses(interface).iter().map(IpNet::addr).collect();
    for prefix in &plan.default_routes {
        network::add_default_route(interface, prefix, table, &addresses)?;
    }
    Ok(())
}

fn allowed_ips(snapshot: &DeviceSnapshot) -> impl Iterator<Item = IpNet> + '_ {
    snapshot.peers.iter().flat_map(|peer| peer.allowed_ips.iter().copied())
}

/// Removes DNS, firewall and policy rules, then the interface with its daemon: wg-quick's
/// `del_if`. Every step is tried; the first failure is returned.
fn undo(interface: &str, progress: &Progress) -> Result<(), String> {
    let mut first_error = None;
    let mut note = |result: Result<(), String>| {
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    };
    if let Some(resolver) = progress.dns {
        note(dns::unset(resolver, interface));
    }
    if let Some(table) = progress.default_route_table {
        note(network::remove_nft_tables(interface));
        network::remove_policy_rules(table);
    }
    if progress.daemon_started {
        note(daemon::stop(interface));
    }
    first_error.map_or(Ok(()), Err)
}

/// `gateway down`: takes the interface of `argument` down again.
pub fn down(argument: &str) -> Result<(), String> {
    if let Some((_, interface)) = gateway_file(argument)? {
        // Everything gatewayd set up from the file goes with the interface.
        require_privileges("gateway down")?;
        if !daemon::is_running(&interface) {
            return Err(format!("`{interface}' is not an interface gatewayd serves"));
        }
        return daemon::stop(&interface);
    }
    let Loaded { path, interface, config } = load(argument)?;
    require_privileges("gateway down")?;
    if !daemon::is_running(&interface) {
        return Err(format!("`{interface}' is not an interface gatewayd serves"));
    }
    for hook in &config.pre_down {
        system::run_hook("PreDown", hook, &interface)?;
    }
    let snapshot = client::get(&interface)?;
    if config.save_config {
        save_config(&path, &interface, &config, &snapshot)?;
    }
    let has_default_route = allowed_ips(&snapshot).any(|prefix| prefix.prefix_len() == 0);
    let progress = Progress {
        daemon_started: true,
        // Set by `up` exactly when there are servers and a resolver.
        dns: if config.dns.is_configured() { dns::installed() } else { None },
        default_route_table: (config.table == Table::Auto
            && has_default_route
            && snapshot.fwmark != 0)
            .then_some(snapshot.fwmark),
    };
    let result = undo(&interface, &progress);
    // Firewall rules are removed even where no default route explains them, as wg-quick does.
    let leftover = network::remove_nft_tables(&interface);
    // The interface is gone whatever happened above: PostDown runs regardless.
    let mut hooks = Ok(());
    for hook in &config.post_down {
        hooks = hooks.and(system::run_hook("PostDown", hook, &interface));
    }
    result.and(leftover).and(hooks)
}

/// Writes the interface's live configuration over its file (SaveConfig).
fn save_config(
    path: &Path,
    interface: &str,
    config: &QuickConfig,
    snapshot: &DeviceSnapshot,
) -> Result<(), String> {
    eprintln!("[#] saving the configuration of {interface} to {}", path.display());
    let lines =
        config.saved_interface_lines(&network::addresses(interface), network::mtu(interface));
    crate::config::atomic::replace_private_file(path, &showconf::format(snapshot, &lines))
}
