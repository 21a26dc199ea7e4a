//! Parsing and printing of the UAPI's value formats, each as strict as wireguard-go's parser
//! (Go's `strconv.ParseUint`, `netip.ParseAddrPort`, `netip.ParsePrefix`).

use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::error::UapiError;
use super::key::Key;

/// Flags such as `replace_peers` and `remove` have one valid value.
pub(crate) fn parse_true(key: &'static str, value: &str) -> Result<(), UapiError> {
    if value == "true" {
        Ok(())
    } else {
        Err(UapiError::invalid(key, value, "the only valid value is \"true\""))
    }
}

/// Unsigned decimal: digits only (leading zeros allowed, no sign, no spaces), at most `max`.
pub(crate) fn parse_decimal(key: &'static str, value: &str, max: u64) -> Result<u64, UapiError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UapiError::invalid(key, value, "not an unsigned decimal number"));
    }
    value
        .bytes()
        .try_fold(0u64, |acc, digit| acc.checked_mul(10)?.checked_add(u64::from(digit - b'0')))
        .filter(|number| *number <= max)
        .ok_or_else(|| UapiError::invalid(key, value, format!("out of range (maximum {max})")))
}

pub(crate) fn parse_key(key: &'static str, value: &str) -> Result<Key, UapiError> {
    Key::from_hex(value).map_err(|e| UapiError::invalid(key, value, e))
}

fn parse_port(value: &str, port: &str) -> Result<u16, UapiError> {
    let number = parse_decimal("endpoint", port, u64::from(u16::MAX))
        .map_err(|_| UapiError::invalid("endpoint", value, format!("invalid port {port:?}")))?;
    Ok(number as u16)
}

/// An IPv6 zone: a numeric scope id, or an interface name as `getnameinfo` prints it (which
/// is what `wg` sends for link-local endpoints).
fn parse_zone(value: &str, zone: &str) -> Result<u32, UapiError> {
    if !zone.is_empty() && zone.bytes().all(|b| b.is_ascii_digit()) {
        return zone
            .parse::<u32>()
            .map_err(|_| UapiError::invalid("endpoint", value, "scope id out of range"));
    }
    let name = CString::new(zone)
        .map_err(|_| UapiError::invalid("endpoint", value, "zone contains a NUL byte"))?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(UapiError::invalid("endpoint", value, format!("no interface {zone:?}")));
    }
    Ok(index)
}

/// `a.b.c.d:port` or `[v6]:port`, with an optional `%zone` inside the brackets.
pub(crate) fn parse_endpoint(value: &str) -> Result<SocketAddr, UapiError> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| UapiError::invalid("endpoint", value, "not an ip:port"))?;
    if host.is_empty() || port.is_empty() {
        return Err(UapiError::invalid("endpoint", value, "not an ip:port"));
    }
    let port = parse_port(value, port)?;
    if let Some(bracketed) = host.strip_prefix('[') {
        let inner = bracketed
            .strip_suffix(']')
            .ok_or_else(|| UapiError::invalid("endpoint", value, "missing ]"))?;
        let (address, scope_id) = match inner.split_once('%') {
            Some((address, zone)) => (address, parse_zone(value, zone)?),
            None => (inner, 0),
        };
        let address: Ipv6Addr = address.parse().map_err(|_| {
            UapiError::invalid("endpoint", value, "square brackets need an IPv6 address")
        })?;
        return Ok(SocketAddr::V6(SocketAddrV6::new(address, port, 0, scope_id)));
    }
    let address: Ipv4Addr = host.parse().map_err(|_| {
        UapiError::invalid("endpoint", value, "not an IPv4 address (IPv6 needs [brackets])")
    })?;
    Ok(SocketAddr::V4(SocketAddrV4::new(address, port)))
}

/// `address/length`, as `netip.ParsePrefix` accepts it: no zone, a length without sign or
/// leading zeros, at most 32 or 128. Host bits are kept (the table masks them).
pub(crate) fn parse_prefix(value: &str) -> Result<IpNet, UapiError> {
    let (address, length) =
        value.rsplit_once('/').ok_or_else(|| UapiError::invalid("allowed_ip", value, "no '/'"))?;
    let canonical_length = !length.is_empty()
        && length.bytes().all(|b| b.is_ascii_digit())
        && (length == "0" || !length.starts_with('0'));
    let length: u8 = match length.parse() {
        Ok(length) if canonical_length => length,
        _ => return Err(UapiError::invalid("allowed_ip", value, "bad prefix length")),
    };
    let address: IpAddr = address
        .parse()
        .map_err(|_| UapiError::invalid("allowed_ip", value, "not an IP address"))?;
    let prefix = match address {
        IpAddr::V4(v4) => Ipv4Net::new(v4, length).map(IpNet::V4),
        IpAddr::V6(v6) => Ipv6Net::new(v6, length).map(IpNet::V6),
    };
    prefix.map_err(|_| UapiError::invalid("allowed_ip", value, "prefix length out of range"))
}

/// `addr/len` as `netip.Prefix.String` prints it (RFC 5952 for IPv6).
pub(crate) fn format_prefix(prefix: &IpNet) -> String {
    format!("{}/{}", prefix.addr(), prefix.prefix_len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_is_digits_only() {
        assert_eq!(parse_decimal("listen_port", "51820", 65535), Ok(51820));
        assert_eq!(parse_decimal("listen_port", "0", 65535), Ok(0));
        assert_eq!(parse_decimal("listen_port", "00080", 65535), Ok(80));
        assert_eq!(parse_decimal("fwmark", "4294967295", u64::from(u32::MAX)), Ok(4294967295));
        for bad in ["", "+1", "-1", " 1", "1 ", "0x10", "1_000", "65536", "99999999999999999999"] {
            assert!(parse_decimal("listen_port", bad, 65535).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(parse_endpoint("192.0.2.1:51820"), Ok("192.0.2.1:51820".parse().unwrap()));
        assert_eq!(parse_endpoint("[2001:db8::1]:0"), Ok("[2001:db8::1]:0".parse().unwrap()));
        assert_eq!(
            parse_endpoint("[::ffff:192.0.2.1]:7"),
            Ok("[::ffff:192.0.2.1]:7".parse().unwrap())
        );
        let scoped = parse_endpoint("[fe80::1%7]:51820").unwrap();
        assert_eq!(
            scoped,
            SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 51820, 0, 7))
        );
        let named = parse_endpoint("[fe80::1%lo]:51820").unwrap();
        let SocketAddr::V6(named) = named else { panic!("not IPv6") };
        assert_ne!(named.scope_id(), 0);
        for bad in [
            "",
            "192.0.2.1",
            "192.0.2.1:",
            ":51820",
            "192.0.2.1:65536",
            "192.0.2.1:+1",
            "192.0.2.1:-1",
            "2001:db8::1:51820",
            "[192.0.2.1]:51820",
            "[2001:db8::1:51820",
            "[2001:db8::1]51820",
            "[fe80::1%no-such-interface-x]:1",
            "example.com:51820",
            "01.2.3.4:5",
            "1.2.3.4.5:6",
        ] {
            let error = parse_endpoint(bad).expect_err(bad);
            assert_eq!(error.errno(), -22, "{bad:?}");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(parse_prefix("10.0.0.1/8"), Ok("10.0.0.1/8".parse().unwrap()));
        assert_eq!(parse_prefix("0.0.0.0/0"), Ok("0.0.0.0/0".parse().unwrap()));
        assert_eq!(parse_prefix("::/0"), Ok("::/0".parse().unwrap()));
        assert_eq!(parse_prefix("2001:db8::/128"), Ok("2001:db8::/128".parse().unwrap()));
        assert_eq!(parse_prefix("::ffff:10.0.0.0/104"), Ok("::ffff:10.0.0.0/104".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/08",
            "10.0.0.0/+8",
            "10.0.0.0/-8",
            "10.0.0.0/ 8",
            "::/129",
            "::/256",
            "fe80::1%1/64",
            "10.0.0/8",
            "010.0.0.0/8",
            "/8",
            "10.0.0.0/8/8",
        ] {
            assert!(parse_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn prefix_text_is_rfc5952() {
        let printed = |text: &str| format_prefix(&parse_prefix(text).unwrap());
        assert_eq!(printed("2001:0DB8:0000:0000:0000:0000:0000:0001/128"), "2001:db8::1/128");
        assert_eq!(printed("2001:db8:0:0:1:0:0:1/64"), "2001:db8::1:0:0:1/64");
        assert_eq!(printed("::ffff:192.0.2.0/120"), "::ffff:192.0.2.0/120");
        assert_eq!(printed("192.0.2.7/24"), "192.0.2.7/24");
    }
}
