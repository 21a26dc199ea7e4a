//! `gateway routes IF`: which peer each AllowedIPs prefix goes to (the daemon's cryptokey
//! routing table, as the UAPI reports it), and the kernel's routes into the interface in this
//! network namespace (`ip route show dev IF table all`), which decide what reaches it at all.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::human::short_key;
use super::source::Daemon;
use super::table::Table;

/// One AllowedIPs prefix and the peer it routes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedIpRoute {
    pub prefix: String,
    /// The peer's whole public key.
    pub peer: String,
    pub endpoint: Option<String>,
}

/// A kernel route into the interface (unicast only: the local table's own addresses are not
/// routes into it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelRoute {
    /// A prefix, or "default".
    pub destination: String,
    /// "main", "local" or a number.
    pub table: String,
    pub protocol: Option<String>,
    pub metric: Option<u64>,
}

/// `routes --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutesView {
    pub interface: String,
    pub allowed_ips: Vec<AllowedIpRoute>,
    /// Null where the interface is not a link in this network namespace (or `ip` is missing).
    pub kernel_routes: Option<Vec<KernelRoute>>,
}

impl RoutesView {
    pub fn new(daemon: &Daemon) -> RoutesView {
        let mut prefixes: Vec<(IpNet, &crate::uapi::PeerSnapshot)> = daemon
            .device
            .peers
            .iter()
            .flat_map(|peer| peer.allowed_ips.iter().map(move |ip| (*ip, peer)))
            .collect();
        prefixes.sort_by_key(|(net, _)| (net.addr().is_ipv6(), net.network(), net.prefix_len()));
        let allowed_ips = prefixes
            .into_iter()
            .map(|(prefix, peer)| AllowedIpRoute {
                prefix: prefix.to_string(),
                peer: peer.public_key.to_base64(),
                endpoint: peer.endpoint.map(|e| e.to_string()),
            })
            .collect();
        RoutesView {
            interface: daemon.interface.clone(),
            allowed_ips,
            kernel_routes: kernel_routes(&daemon.interface),
        }
    }

    pub fn render(&self) -> String {
        let mut table = Table::new(&["ALLOWED IP", "PEER", "ENDPOINT"]);
        for route in &self.allowed_ips {
            table.row(vec![
                route.prefix.clone(),
                short_key(&route.peer),
                route.endpoint.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        let mut text = if table.is_empty() {
            format!("no peer of {} has allowed IPs\n", self.interface)
        } else {
            table.render("")
        };
        text += "\n";
        match &self.kernel_routes {
            None => {
                text += &format!(
                    "kernel routes: {} is not a link in this network namespace\n",
                    self.interface
                );
            }
            Some(routes) if routes.is_empty() => {
                text += &format!("kernel routes: none into {}\n", self.interface);
            }
            Some(routes) => {
                let mut table =
                    Table::new(&["KERNEL ROUTE", "TABLE", "PROTO", "METRIC"]).right(&[3]);
                for route in routes {
                    table.row(vec![
                        route.destination.clone(),
                        route.table.clone(),
                        route.protocol.clone().unwrap_or_else(|| "-".into()),
                        route.metric.map(|m| m.to_string()).unwrap_or_default(),
                    ]);
                }
                text += &table.render("");
            }
        }
        text
    }
}

/// The unicast routes of every table into `interface`, IPv4 then IPv6; `None` if it is no
/// link here.
pub fn kernel_routes(interface: &str) -> Option<Vec<KernelRoute>> {
    let ip = |args: &[&str]| {
        let output = std::process::Command::new("ip")
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    };
    ip(&["link", "show", "dev", interface])?;
    let mut routes = Vec::new();
    for family in ["-4", "-6"] {
        let json = ip(&["-j", family, "route", "show", "dev", interface, "table", "all"])?;
        routes.extend(parse_ip_routes(&json)?);
    }
    Some(routes)
}

/// `ip -j route show`'s entries, less those that are not unicast.
pub fn parse_ip_routes(json: &str) -> Option<Vec<KernelRoute>> {
    let json = json.trim();
    if json.is_empty() {
        return Some(Vec::new());
    }
    let entries: Vec<serde_json::Value> = serde_json::from_str(json).ok()?;
    let text = |entry: &serde_json::Value, field: &str| {
        entry.get(field).and_then(|v| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    Some(
        entries
            .iter()
            .filter(|entry| text(entry, "type").is_none_or(|kind| kind == "unicast"))
            .filter_map(|entry| {
                let destination = text(entry, "dst")?;
                // `ip` writes a host route without its length.
                let destination = match destination.parse::<IpAddr>() {
                    Ok(address) => IpNet::from(address).to_string(),
                    Err(_) => destination,
                };
                Some(KernelRoute {
                    destination,
                    table: text(entry, "table").unwrap_or_else(|| "main".into()),
                    protocol: text(entry, "protocol"),
                    metric: entry.get("metric").and_then(serde_json::Value::as_u64),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_route_json_becomes_kernel_routes() {
        let json = r#"[{"dst":"10.77.0.0/24","protocol":"kernel","scope":"link","prefsrc":"10.77.0.1","flags":[]},
            {"dst":"default","table":"51820","flags":[]},
            {"type":"local","dst":"10.77.0.1","table":"local","protocol":"kernel","scope":"host","prefsrc":"10.77.0.1","flags":[]},
            {"dst":"fd77::/64","protocol":"kernel","metric":256,"flags":[],"pref":"medium"},
            {"dst":"192.0.2.9","protocol":"static","flags":[]}]"#;
        let routes = parse_ip_routes(json).unwrap();
        let shown: Vec<(&str, &str, Option<&str>, Option<u64>)> = routes
            .iter()
            .map(|r| (r.destination.as_str(), r.table.as_str(), r.protocol.as_deref(), r.metric))
            .collect();
        assert_eq!(
            shown,
            [
                ("10.77.0.0/24", "main", Some("kernel"), None),
                ("default", "51820", None, None),
                ("fd77::/64", "main", Some("kernel"), Some(256)),
                ("192.0.2.9/32", "main", Some("static"), None),
            ]
        );
        assert_eq!(parse_ip_routes("\n"), Some(Vec::new()));
    }
}
