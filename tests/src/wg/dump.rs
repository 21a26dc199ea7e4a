//! `wg show <interface> dump`: one tab-separated line for the interface, then one per peer.

use std::net::SocketAddr;

use anyhow::{Context as _, Result, anyhow, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgDump {
    pub private_key: Option<String>,
    pub public_key: Option<String>,
    pub listen_port: u16,
    pub fwmark: Option<u32>,
    pub peers: Vec<PeerStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub public_key: String,
    pub preshared_key: Option<String>,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<String>,
    /// Seconds since the Unix epoch; `None` before the first handshake.
    pub latest_handshake: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive: Option<u16>,
}

impl WgDump {
    pub fn parse(text: &str) -> Result<WgDump> {
        let mut lines = text.lines().filter(|line| !line.trim().is_empty());
        let interface = lines.next().ok_or_else(|| anyhow!("empty `wg show dump` output"))?;
        let fields = split_fields(interface, 4).context("interface line")?;
        let peers = lines
            .map(|line| PeerStatus::parse(line).with_context(|| format!("peer line {line:?}")))
            .collect::<Result<Vec<_>>>()?;
        Ok(WgDump {
            private_key: optional(fields[0]).map(String::from),
            public_key: optional(fields[1]).map(String::from),
            listen_port: fields[2]
                .parse()
                .with_context(|| format!("listen port {:?}", fields[2]))?,
            fwmark: parse_fwmark(fields[3])?,
            peers,
        })
    }

    /// The peer with this public key, or an error listing the ones present.
    pub fn peer(&self, public_key: &str) -> Result<&PeerStatus> {
        self.peers.iter().find(|peer| peer.public_key == public_key).ok_or_else(|| {
            let present: Vec<&str> =
                self.peers.iter().map(|peer| peer.public_key.as_str()).collect();
            anyhow!("no peer {public_key} in wg show dump (peers: {})", present.join(", "))
        })
    }
}

impl PeerStatus {
    fn parse(line: &str) -> Result<PeerStatus> {
        let fields = split_fields(line, 8)?;
        let endpoint = optional(fields[2])
            .map(|text| text.parse().with_context(|| format!("endpoint {text:?}")))
            .transpose()?;
        let allowed_ips = match optional(fields[3]) {
            Some(list) => list.split(',').map(String::from).collect(),
            None => Vec::new(),
        };
        let latest_handshake = match fields[4].parse::<u64>() {
            Ok(0) => None,
            Ok(seconds) => Some(seconds),
            Err(_) => bail!("latest handshake {:?} is not a number", fields[4]),
        };
        let number = |index: usize, what: &str| -> Result<u64> {
            fields[index].parse().with_context(|| format!("{what} {:?}", fields[index]))
        };
        let persistent_keepalive = match fields[7] {
            "off" => None,
            text => Some(text.parse().with_context(|| format!("persistent keepalive {text:?}"))?),
        };
        Ok(PeerStatus {
            public_key: fields[0].to_string(),
            preshared_key: optional(fields[1]).map(String::from),
            endpoint,
            allowed_ips,
            latest_handshake,
            rx_bytes: number(5, "rx bytes")?,
            tx_bytes: number(6, "tx bytes")?,
            persistent_keepalive,
        })
    }
}

fn split_fields(line: &str, expected: usize) -> Result<Vec<&str>> {
    let fields: Vec<&str> = line.split('\t').collect();
    if fields.len() != expected {
        bail!("expected {expected} tab-separated fields, found {}", fields.len());
    }
    Ok(fields)
}

/// `wg` prints `(none)` for absent keys, endpoints and allowed IPs.
fn optional(field: &str) -> Option<&str> {
    (field != "(none)").then_some(field)
}

fn parse_fwmark(field: &str) -> Result<Option<u32>> {
    if field == "off" {
        return Ok(None);
    }
    let parsed = match field.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => field.parse(),
    };
    parsed.map(Some).with_context(|| format!("fwmark {field:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "cPriv=\tcPub=\t51820\toff\n\
        pPub1=\t(none)\t192.0.2.1:51820\t10.77.0.0/24,fd77::/64\t1700000000\t1234\t5678\t25\n\
        pPub2=\tpsk=\t(none)\t(none)\t0\t0\t0\toff\n\
        pPub3=\t(none)\t[2001:db8::1]:4500\t10.9.0.0/16\t1700000001\t1\t2\toff\n";

    #[test]
    fn parses_interface_and_peers() {
        let dump = WgDump::parse(DUMP).unwrap();
        assert_eq!(dump.private_key.as_deref(), Some("cPriv="));
        assert_eq!(dump.listen_port, 51820);
        assert_eq!(dump.fwmark, None);
        assert_eq!(dump.peers.len(), 3);
        let first = dump.peer("pPub1=").unwrap();
        assert_eq!(first.endpoint, Some("192.0.2.1:51820".parse().unwrap()));
        assert_eq!(first.allowed_ips, vec!["10.77.0.0/24", "fd77::/64"]);
        assert_eq!(first.latest_handshake, Some(1_700_000_000));
        assert_eq!((first.rx_bytes, first.tx_bytes), (1234, 5678));
        assert_eq!(first.persistent_keepalive, Some(25));
        let second = dump.peer("pPub2=").unwrap();
        assert_eq!(second.preshared_key.as_deref(), Some("psk="));
        assert_eq!(second.endpoint, None);
        assert!(second.allowed_ips.is_empty());
        assert_eq!(second.latest_handshake, None);
        assert_eq!(second.persistent_keepalive, None);
        let third = dump.peer("pPub3=").unwrap();
        assert_eq!(third.endpoint, Some("[2001:db8::1]:4500".parse().unwrap()));
    }

    #[test]
    fn fwmark_and_absent_keys() {
        let dump = WgDump::parse("(none)\t(none)\t0\t0x1234\n").unwrap();
        assert_eq!(dump.private_key, None);
        assert_eq!(dump.fwmark, Some(0x1234));
        assert!(dump.peers.is_empty());
    }

    #[test]
    fn malformed_dumps_are_errors_naming_the_field() {
        assert!(WgDump::parse("").is_err());
        assert!(WgDump::parse("a\tb\tc\n").is_err());
        let error = WgDump::parse("a\tb\tport\toff\n").unwrap_err();
        assert!(format!("{error:#}").contains("listen port"), "{error:#}");
        let bad_peer = "a\tb\t1\toff\np\t(none)\tnot-an-endpoint\t(none)\t0\t0\t0\toff\n";
        let error = WgDump::parse(bad_peer).unwrap_err();
        assert!(format!("{error:#}").contains("endpoint"), "{error:#}");
        assert!(WgDump::parse("a\tb\t1\toff\np\t(none)\t(none)\t(none)\t0\tx\t0\toff\n").is_err());
    }

    #[test]
    fn missing_peer_lists_present_ones() {
        let dump = WgDump::parse(DUMP).unwrap();
        let error = dump.peer("nope=").unwrap_err().to_string();
        assert!(error.contains("pPub1="), "{error}");
    }
}
