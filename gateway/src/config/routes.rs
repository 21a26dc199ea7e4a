//! The routing `gateway up` sets up for an interface, planned as wg-quick plans it.
//!
//! - `Table = off`: nothing.
//! - `Table = <name or number>`: every AllowedIP is routed through the interface in that table.
//! - `Table = auto` (the default): every AllowedIP is routed through the interface in the main
//!   table, unless a route through the interface already covers it (the one its Address
//!   implies, typically). A default route (`0.0.0.0/0`, `::/0`) cannot go there: the tunnel's
//!   own encrypted packets would be routed into the tunnel. It goes into a table of its own,
//!   numbered like the device's fwmark, with two policy rules per family: packets *not* carrying
//!   the fwmark (everything but the tunnel's own) look that table up, and before that the main
//!   table is consulted for anything more specific than a default route
//!   (`suppress_prefixlength 0`), so local networks stay reachable. nftables rules keep replies
//!   to the tunnel's UDP socket on the mark (conntrack) and drop packets for the tunnel's
//!   addresses arriving from elsewhere.

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use super::wg_quick::Table;

/// The first table (and fwmark) wg-quick tries for default routes; the next free one is used.
pub const FIRST_DEFAULT_ROUTE_TABLE: u32 = 51820;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(prefix: &IpNet) -> Family {
        match prefix {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// The `ip` option selecting the family.
    pub fn ip_flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }

    /// The nftables family (and the address expression's keyword).
    pub fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
}

/// One `ip route add <prefix> dev <interface> [table <table>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: IpNet,
    /// None: the main table.
    pub table: Option<String>,
    /// Skip it when a route through the interface already covers the prefix.
    pub unless_covered: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    /// Most specific first, as wg-quick adds them.
    pub routes: Vec<Route>,
    /// Default routes that need the fwmark table and policy rules (Table = auto only).
    pub default_routes: Vec<IpNet>,
}

/// Plans the routes for `allowed_ips` (every peer's, as the device reports them).
pub fn plan(table: &Table, allowed_ips: impl IntoIterator<Item = IpNet>) -> RoutePlan {
    let mut prefixes: Vec<IpNet> = allowed_ips.into_iter().map(|p| p.trunc()).collect();
    // Longest prefixes first, as wg-quick sorts them; ties in address order so that duplicates
    // (the same prefix listed by two peers' snapshots) sit together.
    prefixes.sort_by_key(|prefix| (std::cmp::Reverse(prefix.prefix_len()), *prefix));
    prefixes.dedup();
    let mut plan = RoutePlan::default();
    for prefix in prefixes {
        match table {
            Table::Off => {}
            Table::Named(name) => {
                plan.routes.push(Route { prefix, table: Some(name.clone()), unless_covered: false })
            }
            Table::Auto if prefix.prefix_len() == 0 => plan.default_routes.push(prefix),
            Table::Auto => plan.routes.push(Route { prefix, table: None, unless_covered: true }),
        }
    }
    plan
}

/// The `ip rule add` arguments (after `ip -4`/`-6 rule add`) for default routes in `table`.
pub fn policy_rules(table: u32) -> [Vec<String>; 2] {
    [
        vec!["not".into(), "fwmark".into(), table.to_string(), "table".into(), table.to_string()],
        vec!["table".into(), "main".into(), "suppress_prefixlength".into(), "0".into()],
    ]
}

/// The name of the nftables table holding an interface's rules. wg-quick's name, so that its
/// own cleanup (and an operator's habits) apply to interfaces brought up either way.
pub fn nft_table(interface: &str) -> String {
    format!("wg-quick-{interface}")
}

/// An `nft -f` script adding the default-route rules of one family: conntrack carries the
/// fwmark from the tunnel's outgoing UDP to the replies (so they are routed like it), and
/// packets for the interface's own `addresses` that do not come in through it, nor from a
/// local address, are dropped before routing (they could only be spoofed).
pub fn nft_script(family: Family, interface: &str, mark: u32, addresses: &[IpAddr]) -> String {
    let (pf, table) = (family.nft(), nft_table(interface));
    let mut script = String::new();
    let _ = writeln!(script, "add table {pf} {table}");
    let _ = writeln!(
        script,
        "add chain {pf} {table} preraw {{ type filter hook prerouting priority -300; }}"
    );
    let _ = writeln!(
        script,
        "add chain {pf} {table} premangle {{ type filter hook prerouting priority -150; }}"
    );
    let _ = writeln!(
        script,
        "add chain {pf} {table} postmangle {{ type filter hook postrouting priority -150; }}"
    );
    for address in addresses.iter().filter(|a| a.is_ipv4() == (family == Family::V4)) {
        let _ = writeln!(
            script,
            "add rule {pf} {table} preraw iifname != \"{interface}\" {pf} daddr {address} \
             fib saddr type != local drop"
        );
    }
    let _ = writeln!(
        script,
        "add rule {pf} {table} postmangle meta l4proto udp mark {mark} ct mark set mark"
    );
    let _ =
        writeln!(script, "add rule {pf} {table} premangle meta l4proto udp meta mark set ct mark");
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|p| p.parse().unwrap()).collect()
    }

    #[test]
    fn auto_routes_most_specific_first_and_defaults_apart() {
        let plan = plan(
            &Table::Auto,
            prefixes(&[
                "10.0.0.0/8",
                "0.0.0.0/0",
                "10.1.2.3/32",
                "::/0",
                "fd00::/64",
                "10.0.0.9/8",
            ]),
        );
        let routed: Vec<String> = plan.routes.iter().map(|r| r.prefix.to_string()).collect();
        // By prefix length, whatever the family; host bits masked, duplicates gone.
        assert_eq!(routed, ["fd00::/64", "10.1.2.3/32", "10.0.0.0/8"]);
        assert!(plan.routes.iter().all(|r| r.table.is_none() && r.unless_covered));
        assert_eq!(plan.default_routes, prefixes(&["0.0.0.0/0", "::/0"]));
    }

    #[test]
    fn a_named_table_takes_every_route_including_defaults() {
        let plan = plan(&Table::Named("1234".into()), prefixes(&["0.0.0.0/0", "10.0.0.0/24"]));
        assert!(plan.default_routes.is_empty());
        assert_eq!(
            plan.routes,
            vec![
                Route {
                    prefix: "10.0.0.0/24".parse().unwrap(),
                    table: Some("1234".into()),
                    unless_covered: false
                },
                Route {
                    prefix: "0.0.0.0/0".parse().unwrap(),
                    table: Some("1234".into()),
                    unless_covered: false
                },
            ]
        );
    }

    #[test]
    fn off_routes_nothing() {
        assert_eq!(
            plan(&Table::Off, prefixes(&["0.0.0.0/0", "10.0.0.0/24"])),
            RoutePlan::default()
        );
    }

    #[test]
    fn policy_rules_skip_the_marked_tunnel_traffic() {
        let [lookup, suppress] = policy_rules(51820);
        assert_eq!(lookup.join(" "), "not fwmark 51820 table 51820");
        assert_eq!(suppress.join(" "), "table main suppress_prefixlength 0");
    }

    #[test]
    fn nft_script_of_one_family() {
        let addresses: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()];
        let script = nft_script(Family::V4, "wg0", 51820, &addresses);
        assert!(script.starts_with("add table ip wg-quick-wg0\n"));
        assert!(script.contains(
            "preraw iifname != \"wg0\" ip daddr 10.0.0.1 fib saddr type != local drop\n"
        ));
        assert!(!script.contains("fd00::1"));
        assert!(script.contains("postmangle meta l4proto udp mark 51820 ct mark set mark\n"));
        assert!(script.contains("premangle meta l4proto udp meta mark set ct mark\n"));
        assert!(nft_script(Family::V6, "wg0", 7, &addresses).contains("ip6 daddr fd00::1 fib"));
    }
}
