//! What `gateway up` sets on the interface and in the routing tables, through `ip`, `nft` and
//! sysctl, and what `gateway down` removes (deleting the interface takes its addresses and
//! routes along; policy rules and nftables tables outlive it and are removed here).

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::system;
use crate::config::routes::{self, FIRST_DEFAULT_ROUTE_TABLE, Family, Route};

/// wg-quick's allowance for the outer headers when it derives the MTU: IPv6 (40) + UDP (8) +
/// WireGuard (32), rounded to 80 so the same MTU works over either family.
const TUNNEL_OVERHEAD: u32 = 80;
/// The underlay MTU assumed when no route says otherwise.
const DEFAULT_UNDERLAY_MTU: u32 = 1500;

pub fn link_exists(interface: &str) -> bool {
    system::query("ip", &["link", "show", "dev", interface]).is_ok()
}

pub fn add_address(interface: &str, address: &IpNet) -> Result<(), String> {
    let family = Family::of(address).ip_flag();
    system::run("ip", &[family, "address", "add", &address.to_string(), "dev", interface])
        .map(drop)
        .map_err(|e| format!("cannot add Address {address}: {e}"))
}

/// Removes one of the interface's addresses (a reloaded configuration file dropped it).
pub fn remove_address(interface: &str, address: &IpNet) -> Result<(), String> {
    let family = Family::of(address).ip_flag();
    system::run("ip", &[family, "address", "del", &address.to_string(), "dev", interface])
        .map(drop)
        .map_err(|e| format!("cannot remove the address {address}: {e}"))
}

/// Removes one planned route (a reloaded configuration file no longer routes it); one that is
/// not there (skipped as covered when it was planned) is not an error.
pub fn remove_route(interface: &str, route: &Route) -> Result<(), String> {
    let family = Family::of(&route.prefix).ip_flag();
    let prefix = route.prefix.to_string();
    let mut args = vec![family, "route", "del", &prefix, "dev", interface];
    if let Some(table) = &route.table {
        args.extend(["table", table]);
    }
    match system::run("ip", &args) {
        Ok(_) => Ok(()),
        Err(e) if e.contains("No such process") => Ok(()),
        Err(e) => Err(format!("cannot remove the route to {prefix}: {e}")),
    }
}

/// `mtu N` on an `ip` output line, or the MTU of the device it names (`dev X`).
fn mtu_of_route(output: &str) -> Option<u32> {
    let words: Vec<&str> = output.split_whitespace().collect();
    let after = |key: &str| words.windows(2).find(|pair| pair[0] == key).map(|pair| pair[1]);
    if let Some(mtu) = after("mtu").and_then(|m| m.parse().ok()) {
        return Some(mtu);
    }
    mtu(after("dev")?)
}

/// The MTU wg-quick derives when the file has none: the largest MTU of the routes to the
/// peers' endpoints (else of the default route, else 1500), less the tunnel's overhead.
pub fn derived_mtu(endpoints: &[SocketAddr]) -> u32 {
    let mut largest = endpoints
        .iter()
        .filter_map(|endpoint| {
            system::query("ip", &["route", "get", &endpoint.ip().to_string()]).ok()
        })
        .filter_map(|output| mtu_of_route(&output))
        .max()
        .unwrap_or(0);
    if largest == 0 {
        largest = system::query("ip", &["route", "show", "default"])
            .ok()
            .and_then(|output| output.lines().next().and_then(mtu_of_route))
            .unwrap_or(0);
    }
    if largest == 0 {
        largest = DEFAULT_UNDERLAY_MTU;
    }
    largest.saturating_sub(TUNNEL_OVERHEAD)
}

pub fn set_mtu_and_up(interface: &str, mtu: u32) -> Result<(), String> {
    system::run("ip", &["link", "set", "mtu", &mtu.to_string(), "up", "dev", interface])
        .map(drop)
        .map_err(|e| format!("cannot set MTU {mtu} and bring {interface} up: {e}"))
}

/// Adds one planned route (skipped if it is covered and the plan allows that).
pub fn add_route(interface: &str, route: &Route) -> Result<(), String> {
    let family = Family::of(&route.prefix).ip_flag();
    let prefix = route.prefix.to_string();
    if route.unless_covered {
        let covering =
            system::query("ip", &[family, "route", "show", "dev", interface, "match", &prefix])
                .unwrap_or_default();
        if !covering.trim().is_empty() {
            return Ok(());
        }
    }
    let mut args = vec![family, "route", "add", &prefix, "dev", interface];
    if let Some(table) = &route.table {
        args.extend(["table", table]);
    }
    system::run("ip", &args).map(drop).map_err(|e| format!("cannot route {prefix}: {e}"))
}

/// The first table from 51820 on that holds no route of either family: the table (and
/// fwmark) for default routes, as wg-quick picks it.
pub fn free_table() -> u32 {
    let mut table = FIRST_DEFAULT_ROUTE_TABLE;
    while ["-4", "-6"].iter().any(|family| {
        system::query("ip", &[family, "route", "show", "table", &table.to_string()])
            .is_ok_and(|routes| !routes.trim().is_empty())
    }) {
        table += 1;
    }
    table
}

/// A default route through the interface in `table`, its two policy rules, and (where nft
/// is installed) the conntrack-mark and anti-spoofing rules; see [`crate::config::routes`].
pub fn add_default_route(
    interface: &str,
    prefix: &IpNet,
    table: u32,
    addresses: &[IpAddr],
) -> Result<(), String> {
    let family = Family::of(prefix);
    let flag = family.ip_flag();
    let table_text = table.to_string();
    system::run(
        "ip",
        &[flag, "route", "add", &prefix.to_string(), "dev", interface, "table", &table_text],
    )
    .map_err(|e| format!("cannot add the default route {prefix}: {e}"))?;
    for rule in routes::policy_rules(table) {
        let mut args = vec![flag, "rule", "add"];
        args.extend(rule.iter().map(String::as_str));
        system::run("ip", &args).map_err(|e| format!("cannot add a policy rule: {e}"))?;
    }
    if family == Family::V4 {
        // Replies to the marked socket must pass the reverse-path check by their mark.
        eprintln!("[#] sysctl -q net.ipv4.conf.all.src_valid_mark=1");
        std::fs::write("/proc/sys/net/ipv4/conf/all/src_valid_mark", "1")
            .map_err(|e| format!("cannot set net.ipv4.conf.all.src_valid_mark: {e}"))?;
    }
    if system::find_in_path("nft").is_none() {
        eprintln!(
            "[!] nft is not installed: the default route works, but without wg-quick's \
             conntrack-mark and anti-spoofing rules"
        );
        return Ok(());
    }
    let script = routes::nft_script(family, interface, table, addresses);
    system::run_with_input("nft", &["-f", "-"], Some(&script))
        .map(drop)
        .map_err(|e| format!("cannot add the nftables rules for the default route: {e}"))
}

/// Removes the policy rules of `table` and the `suppress_prefixlength 0` rule, every copy,
/// in both families.
pub fn remove_policy_rules(table: u32) {
    let lookup = format!("lookup {table}");
    for flag in ["-4", "-6"] {
        let rules = || system::query("ip", &[flag, "rule", "show"]).unwrap_or_default();
        // Bounded: a rule that cannot be deleted must not loop forever.
        for _ in 0..16 {
            if !rules().contains(&lookup) {
                break;
            }
            if system::run("ip", &[flag, "rule", "delete", "table", &table.to_string()]).is_err() {
                break;
            }
        }
        for _ in 0..16 {
            if !rules().contains("from all lookup main suppress_prefixlength 0") {
                break;
            }
            let args = [flag, "rule", "delete", "table", "main", "suppress_prefixlength", "0"];
            if system::run("ip", &args).is_err() {
                break;
            }
        }
    }
}

/// Deletes the interface's nftables tables, if nft is installed and they exist.
pub fn remove_nft_tables(interface: &str) -> Result<(), String> {
    if system::find_in_path("nft").is_none() {
        return Ok(());
    }
    let name = routes::nft_table(interface);
    let tables = system::query("nft", &["list", "tables"]).unwrap_or_default();
    let script: String = tables
        .lines()
        .filter(|line| line.split_whitespace().last() == Some(name.as_str()))
        .map(|line| format!("delete {}\n", line.trim()))
        .collect();
    if script.is_empty() {
        return Ok(());
    }
    system::run_with_input("nft", &["-f", "-"], Some(&script)).map(drop)
}

/// The interface's addresses now (not link-local ones, which the kernel makes itself).
pub fn addresses(interface: &str) -> Vec<IpNet> {
    let listing =
        system::query("ip", &["-o", "address", "show", "dev", interface]).unwrap_or_default();
    listing
        .lines()
        .filter(|line| !line.contains("scope link"))
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words
                .windows(2)
                .find(|pair| pair[0] == "inet" || pair[0] == "inet6")
                .and_then(|pair| pair[1].parse::<IpNet>().ok())
        })
        .collect()
}

/// A device's MTU now.
pub fn mtu(interface: &str) -> Option<u32> {
    let link = system::query("ip", &["-o", "link", "show", "dev", interface]).ok()?;
    let words: Vec<&str> = link.split_whitespace().collect();
    words.windows(2).find(|pair| pair[0] == "mtu").and_then(|pair| pair[1].parse().ok())
}
