//! Where the metrics endpoint listens: the value of `gatewayd --metrics [ADDR[:PORT]]`.
//!
//! | value | listens on |
//! |---|---|
//! | (none: a bare `--metrics`, or `--metrics=`) | `127.0.0.1:9586` |
//! | `9100` (a port alone) | `127.0.0.1:9100` |
//! | `0.0.0.0`, `::1`, `[::1]` (an address alone) | that address, port 9586 |
//! | `192.0.2.1:9100`, `[::]:9100` | as given |
//!
//! Loopback unless an address is named: the endpoint answers anyone who reaches it, and what
//! it tells (peers' keys, traffic) is for the operator.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The port when only an address is given: the one Prometheus's list of exporter ports has
/// for WireGuard.
pub const DEFAULT_PORT: u16 = 9586;

/// The address when only a port (or nothing) is given.
pub const DEFAULT_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A `--metrics` value that is not an address to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError {
    value: String,
    why: &'static str,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--metrics '{}': {} (expected ADDR[:PORT] or PORT)", self.value, self.why)
    }
}

impl std::error::Error for AddressError {}

/// The address `value` names, with the defaults above for what it leaves out.
pub fn parse(value: &str) -> Result<SocketAddr, AddressError> {
    let text = value.trim();
    let error = |why| AddressError { value: value.to_string(), why };
    if text.is_empty() {
        return Ok(SocketAddr::new(DEFAULT_ADDRESS, DEFAULT_PORT));
    }
    let address = if text.bytes().all(|b| b.is_ascii_digit()) {
        let port = text.parse::<u16>().map_err(|_| error("the port is out of range"))?;
        SocketAddr::new(DEFAULT_ADDRESS, port)
    } else if let Ok(address) = text.parse::<SocketAddr>() {
        address
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        SocketAddr::new(ip, DEFAULT_PORT)
    } else if let Some(ip) = text.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
        let ip = ip.parse().map_err(|_| error("not an IPv6 address between the brackets"))?;
        SocketAddr::new(IpAddr::V6(ip), DEFAULT_PORT)
    } else if let Some((_, port)) = text.rsplit_once(':')
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_err()
    {
        return Err(error("the port is out of range"));
    } else {
        return Err(error("not an IP address (host names are not resolved)"));
    };
    if address.port() == 0 {
        return Err(error("port 0 is not a port a scraper can be pointed at"));
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(value: &str) -> String {
        parse(value).map(|a| a.to_string()).unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn what_is_left_out_is_loopback_and_the_default_port() {
        assert_eq!(parsed(""), "127.0.0.1:9586", "a bare --metrics");
        assert_eq!(parsed("9100"), "127.0.0.1:9100", "a port alone");
        assert_eq!(parsed("0.0.0.0"), "0.0.0.0:9586", "an address alone");
        assert_eq!(parsed("::1"), "[::1]:9586");
        assert_eq!(parsed("[::1]"), "[::1]:9586");
        assert_eq!(parsed("[fd00::1]:9100"), "[fd00::1]:9100");
        assert_eq!(parsed("192.0.2.1:9100"), "192.0.2.1:9100");
        assert_eq!(parsed(" 10.0.0.1:80 "), "10.0.0.1:80");
    }

    #[test]
    fn what_is_not_an_address_is_one_line_naming_the_value() {
        for (value, why) in [
            ("wg0", "not an IP address"),
            ("localhost:9586", "not an IP address"),
            ("70000", "out of range"),
            ("127.0.0.1:70000", "out of range"),
            ("[::1]:70000", "out of range"),
            ("[nonsense]", "between the brackets"),
            ("0", "port 0"),
            ("127.0.0.1:0", "port 0"),
            ("1.2.3.4:", "not an IP address"),
        ] {
            let error = parse(value).expect_err(value).to_string();
            assert!(error.contains(&format!("'{value}'")), "{error}");
            assert!(error.contains(why), "{value}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }
}
