//! `gateway network …` and `gateway route …`: the interface's network, through the daemon's
//! control socket (`daemon::network`). Reads print aligned tables, or the daemon's JSON with
//! `--json`.

use std::time::Duration;

use serde_json::Value;

use super::table::Table;
use crate::daemon::forward_socket::{self, Request, Response};
use crate::daemon::network::NetworkRequest;

/// The daemon's answer to `request`, or its one line of refusal.
pub fn ask(interface: &str, request: NetworkRequest) -> Result<Value, String> {
    match forward_socket::request(interface, &Request::Network(request))? {
        Response::Network(value) => Ok(value),
        Response::Error(e) => Err(e),
        other => Err(format!("gatewayd answered {other:?}")),
    }
}

/// `90s`, `10m`, `1h`, `2d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}' is not a duration (like 90s, 10m, 1h or 2d)");
    let (number, unit) =
        text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    number.checked_mul(seconds).filter(|s| *s > 0).map(Duration::from_secs).ok_or_else(bad)
}

fn text(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::String(text) => text.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `network create`'s line: `home: fd..::/40 (controller vps: fd..::1 10.99.x.y)`.
pub fn created(value: &Value) -> String {
    let controller = &value["controller"];
    format!(
        "{}: {} (controller {}: {} {})\n",
        text(value, "network"),
        text(value, "prefix"),
        text(controller, "name"),
        text(controller, "ipv6"),
        text(controller, "ipv4"),
    )
}

/// `network join`'s line.
pub fn joined(value: &Value) -> String {
    format!(
        "joined {} as {}: {} {}\n",
        text(value, "network"),
        text(value, "name"),
        text(value, "ipv6"),
        text(value, "ipv4"),
    )
}

/// `network members`: one line per member.
pub fn members_table(value: &Value) -> String {
    let mut table = Table::new(&["NAME", "IPV6", "IPV4", "CONTROLLER", "ROUTES"]);
    for member in value.as_array().into_iter().flatten() {
        let routes: Vec<String> = member["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|route| route.as_str().map(str::to_string))
            .collect();
        let routes = if routes.is_empty() { "-".to_string() } else { routes.join(",") };
        table.row(vec![
            text(member, "name"),
            text(member, "ipv6"),
            text(member, "ipv4"),
            text(member, "controller"),
            routes,
        ]);
    }
    table.render("")
}

/// `route list`: one line per advertised route.
pub fn routes_table(value: &Value) -> String {
    let mut table = Table::new(&["MEMBER", "PREFIX", "STATE"]);
    for route in value.as_array().into_iter().flatten() {
        table.row(vec![text(route, "member"), text(route, "prefix"), text(route, "state")]);
    }
    table.render("")
}

/// `network status`: the role and the interface's place in the network.
pub fn status_text(value: &Value) -> String {
    if value["role"] == "none" {
        return "in no network\n".into();
    }
    let mut out = String::new();
    for key in ["role", "network", "name", "prefix", "ipv4_pool", "ipv6", "ipv4", "map_version"] {
        out.push_str(&format!("{key:>12}: {}\n", text(value, key)));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn durations_are_read_as_operators_write_them() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        for bad in ["", "h", "1w", "0", "-1h", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn members_and_routes_are_aligned_tables() {
        let members = json!([
            {"name": "house", "public_key": "k", "ipv6": "fd00::a", "ipv4": "10.99.0.7",
             "controller": "vps", "routes": ["192.168.50.0/24"]},
            {"name": "laptop", "public_key": "k", "ipv6": "fd00::b", "ipv4": "10.99.0.8",
             "controller": "vps", "routes": []},
        ]);
        assert_eq!(
            members_table(&members),
            "NAME    IPV6     IPV4       CONTROLLER  ROUTES\n\
             house   fd00::a  10.99.0.7  vps         192.168.50.0/24\n\
             laptop  fd00::b  10.99.0.8  vps         -\n"
        );
        let routes =
            json!([{"member": "house", "prefix": "192.168.50.0/24", "state": "advertised"}]);
        assert_eq!(
            routes_table(&routes),
            "MEMBER  PREFIX           STATE\nhouse   192.168.50.0/24  advertised\n"
        );
    }
}
