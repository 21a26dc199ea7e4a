//! The values of a gateway configuration file that are text with rules: each newtype checks
//! its rule while it is deserialized, so that a bad value is reported by the deserializer with
//! the line and the field it came from (see `load.rs`), never later with no place to point at.
//!
//! The rules are those of the wg-quick format and the CLI (`wg_quick`'s parsers, `Key`'s
//! base64, the metrics address of `--metrics`): a value means the same in every front end.

use std::fmt;
use std::net::SocketAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::wg_quick::{self, Table};
use crate::uapi::Key;

/// Deserializes a string and hands it to `check`, whose error becomes the field's error.
fn from_text<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct Text(&'static str);
    impl Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, value: &str) -> Result<String, E> {
            Ok(value.to_string())
        }
    }
    let text = deserializer.deserialize_str(Text(expecting))?;
    check(&text).map_err(de::Error::custom)
}

/// A WireGuard key in base64 (a public, private or preshared key).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Base64Key(pub Key);

impl fmt::Debug for Base64Key {
    // Private and preshared keys must not reach a log through a Debug print.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Base64Key(..)")
    }
}

impl<'de> Deserialize<'de> for Base64Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_text(deserializer, "a base64 key", |text| {
            Key::from_base64(text.trim())
                .map(Base64Key)
                .map_err(|e| format!("not a base64 key ({e})"))
        })
    }
}

/// An address with its prefix length (`10.8.0.1/24`); a bare address is a host prefix, as
/// `ip address add` and wg-quick's Address read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix(pub IpNet);

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_text(deserializer, "an address with an optional /prefix", |text| {
            wg_quick::parse_address(text.trim())
                .map(Prefix)
                .map_err(|_| format!("`{text}' is not an address with an optional /prefix"))
        })
    }
}

/// `host:port` or `[IPv6]:port`; the host is resolved when the configuration is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint(pub String);

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_text(deserializer, "host:port or [IPv6]:port", |text| {
            wg_quick::parse_endpoint(text.trim())
                .map(Endpoint)
                .map_err(|_| format!("`{text}' is not host:port or [IPv6]:port"))
        })
    }
}

/// The tunnel interface's MTU: 68 (IPv4's least) to 65535 (a TUN device's most).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mtu(pub u32);

impl<'de> Deserialize<'de> for Mtu {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u64::deserialize(deserializer)?;
        u32::try_from(value)
            .ok()
            .filter(|mtu| (68..=65535).contains(mtu))
            .map(Mtu)
            .ok_or_else(|| de::Error::custom(format!("{value} is not an MTU from 68 to 65535")))
    }
}

/// Which routing table the peers' AllowedIPs are routed in: `"auto"` (the main table),
/// `"off"` (no routes), or a table number or name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable(pub Table);

impl<'de> Deserialize<'de> for RouteTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either;
        impl Visitor<'_> for Either {
            type Value = RouteTable;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("\"auto\", \"off\", a table number or a table name")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<RouteTable, E> {
                u32::try_from(value)
                    .map(|number| RouteTable(Table::Named(number.to_string())))
                    .map_err(|_| E::custom(format!("{value} is not a routing table number")))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<RouteTable, E> {
                wg_quick::parse_table(value).map(RouteTable).map_err(|_| {
                    E::custom(format!(
                        "`{value}' is not \"auto\", \"off\", a table number or a table name"
                    ))
                })
            }
        }
        deserializer.deserialize_any(Either)
    }
}

/// A network interface's name (1 to 15 characters, no `/`, `:` or blanks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceName(pub String);

impl<'de> Deserialize<'de> for InterfaceName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_text(deserializer, "an interface name", |text| {
            crate::tun::validate_name(text)
                .map(|()| InterfaceName(text.to_string()))
                .map_err(|_| format!("`{text}' is not an interface name (1 to 15 characters)"))
        })
    }
}

/// Where the metrics are served, as `--metrics` takes it: `ADDR:PORT`, a port alone
/// (loopback) or an address alone (port 9586).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddress(pub SocketAddr);

impl<'de> Deserialize<'de> for MetricsAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_text(deserializer, "ADDR:PORT, a port or an address", |text| {
            crate::metrics::address::parse(text).map(MetricsAddress).map_err(|e| e.to_string())
        })
    }
}

/// How the receive programs attach to the underlays (each falls back to the next).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    #[default]
    Native,
    Generic,
    Tc,
}
