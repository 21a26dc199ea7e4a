//! The masquerade's maps: where and as what (`MASQUERADE`), and the mappings the programs
//! make (`MASQ_OUT` by inside flow, `MASQ_IN` by reply). The programs make and reuse
//! mappings themselves; the daemon only writes the configuration and sweeps out mappings
//! that timed out, so the LRU maps hold live flows rather than the most recent dead ones.

use std::net::Ipv4Addr;

use aya::maps::{Array, HashMap, MapData, MapError};
use gateway_common::maps::{AF_INET, FlowKey, IPPROTO_ICMP, MasqFlow, Masquerade, masq_expired};

use super::error::{DataplaneError, Result};

/// Where the programs masquerade, in the daemon's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MasqueradeConfig {
    pub ifindex: u32,
    pub addr: Ipv4Addr,
    pub first_port: u16,
    pub port_count: u16,
}

impl MasqueradeConfig {
    fn to_map(self) -> Masquerade {
        Masquerade {
            ifindex: self.ifindex,
            addr: self.addr.octets(),
            first_port: self.first_port,
            port_count: self.port_count,
            _pad: 0,
        }
    }
}

pub(super) struct MasqueradeMaps {
    config: Array<MapData, Masquerade>,
    out: HashMap<MapData, FlowKey, MasqFlow>,
    replies: HashMap<MapData, FlowKey, MasqFlow>,
}

impl MasqueradeMaps {
    pub(super) fn new(
        config: Array<MapData, Masquerade>,
        out: HashMap<MapData, FlowKey, MasqFlow>,
        replies: HashMap<MapData, FlowKey, MasqFlow>,
    ) -> Self {
        MasqueradeMaps { config, out, replies }
    }

    /// Writes (or, with None, clears: the programs then translate nothing) `MASQUERADE[0]`.
    pub(super) fn set(&mut self, config: Option<MasqueradeConfig>) -> Result<()> {
        if let Some(c) = config
            && (c.port_count == 0 || c.first_port as u32 + c.port_count as u32 > 65536)
        {
            return Err(DataplaneError::Invalid(format!(
                "masquerade port range {}+{} is empty or past 65535",
                c.first_port, c.port_count
            )));
        }
        let value = config.map(MasqueradeConfig::to_map).unwrap_or_default();
        self.config
            .set(0, value, 0)
            .map_err(|e| DataplaneError::kernel_chain("updating MASQUERADE", &e))
    }

    /// The mappings the programs hold, by inside flow.
    pub(super) fn mappings(&self) -> Vec<(FlowKey, MasqFlow)> {
        self.out.iter().filter_map(|entry| entry.ok()).collect()
    }

    /// Removes the mappings that timed out at `now` (CLOCK_MONOTONIC ns), both of their
    /// entries; returns how many. A `MASQ_IN` entry is removed only while it still names the
    /// timed-out flow (the programs may have given its port to a new one meanwhile).
    pub(super) fn sweep(&mut self, now: u64) -> Result<usize> {
        let expired = timed_out(self.mappings(), now);
        let mut removed = 0;
        for (key, mapping) in &expired {
            let reply = reply_key(key, mapping);
            let still_ours = self
                .replies
                .get(&reply, 0)
                .is_ok_and(|held| held.addr[..] == key.src[..4] && held.port == key.src_port);
            if still_ours {
                ignore_missing(self.replies.remove(&reply))?;
            }
            ignore_missing(self.out.remove(key))?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// A key another program or a concurrent sweep removed first is not an error.
fn ignore_missing(result: std::result::Result<(), MapError>) -> Result<()> {
    match result {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(DataplaneError::kernel_chain("removing a masquerade mapping", &e)),
    }
}

/// The mappings among `mappings` whose timeout (by protocol and state) has passed at `now`.
fn timed_out(mappings: Vec<(FlowKey, MasqFlow)>, now: u64) -> Vec<(FlowKey, MasqFlow)> {
    mappings
        .into_iter()
        .filter(|(key, m)| masq_expired(key.proto, m.state, m.last_seen_ns, now))
        .collect()
}

/// The `MASQ_IN` key of the mapping `mapping` of the inside flow `key`: the reply from the
/// remote end to the public address and port (ICMP echo: the identifier as destination
/// port, no source port), as `gateway-ebpf`'s `masquerade` writes it.
fn reply_key(key: &FlowKey, mapping: &MasqFlow) -> FlowKey {
    let mut public = [0u8; 16];
    public[..4].copy_from_slice(&mapping.addr);
    FlowKey {
        family: AF_INET,
        proto: key.proto,
        _pad: 0,
        src_port: if key.proto == IPPROTO_ICMP { 0 } else { key.dst_port },
        dst_port: mapping.port,
        src: key.dst,
        dst: public,
    }
}

#[cfg(test)]
mod tests {
    use gateway_common::maps::{MASQ_STATE_ESTABLISHED, MASQ_STATE_TRANSITORY};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0; 16];
        out[..4].copy_from_slice(&a);
        out
    }

    fn inside(proto: u8, sport: u16, dport: u16) -> FlowKey {
        FlowKey {
            family: AF_INET,
            proto,
            _pad: 0,
            src_port: sport.to_be(),
            dst_port: dport.to_be(),
            src: v4([10, 77, 0, 2]),
            dst: v4([203, 0, 113, 80]),
        }
    }

    fn mapping(port: u16, state: u16, last_seen_ns: u64) -> MasqFlow {
        MasqFlow { addr: [192, 0, 2, 1], port: port.to_be(), state, last_seen_ns }
    }

    #[test]
    fn a_tcp_reply_comes_from_the_remote_port_to_the_public_port() {
        let key = inside(6, 40000, 80);
        let reply = reply_key(&key, &mapping(61234, 0, 0));
        assert_eq!(reply.src, v4([203, 0, 113, 80]));
        assert_eq!(reply.dst, v4([192, 0, 2, 1]));
        assert_eq!((u16::from_be(reply.src_port), u16::from_be(reply.dst_port)), (80, 61234));
        assert_eq!((reply.family, reply.proto), (AF_INET, 6));
    }

    #[test]
    fn an_echo_reply_carries_the_public_identifier_and_no_source_port() {
        // An echo request's key holds its identifier as source port, 0 as destination port.
        let key = inside(IPPROTO_ICMP, 0x1234, 0);
        let reply = reply_key(&key, &mapping(61001, 0, 0));
        assert_eq!((reply.src_port, u16::from_be(reply.dst_port)), (0, 61001));
    }

    #[test]
    fn timeouts_follow_protocol_and_tcp_state() {
        let now = 10_000 * S;
        let mappings = vec![
            // Established TCP idle for an hour: kept (2 h 4 min).
            (inside(6, 1, 80), mapping(61000, MASQ_STATE_ESTABLISHED, now - 3600 * S)),
            // A SYN never answered, 5 minutes ago: gone (4 min).
            (inside(6, 2, 80), mapping(61001, MASQ_STATE_TRANSITORY, now - 300 * S)),
            // UDP idle 3 minutes: gone (2 min); idle 1 minute: kept.
            (inside(17, 3, 53), mapping(61002, MASQ_STATE_ESTABLISHED, now - 180 * S)),
            (inside(17, 4, 53), mapping(61003, MASQ_STATE_ESTABLISHED, now - 60 * S)),
            // ICMP echo idle 61 s: gone (60 s).
            (inside(IPPROTO_ICMP, 5, 0), mapping(61004, MASQ_STATE_ESTABLISHED, now - 61 * S)),
        ];
        let gone: Vec<u16> =
            timed_out(mappings, now).iter().map(|(k, _)| u16::from_be(k.src_port)).collect();
        assert_eq!(gone, vec![2, 3, 5]);
    }

    #[test]
    fn a_mapping_seen_after_now_is_not_timed_out() {
        // The programs may stamp a time later than the sweep's reading of the clock.
        let mappings = vec![(inside(17, 1, 53), mapping(61000, 0, 20 * S))];
        assert!(timed_out(mappings, 10 * S).is_empty());
    }
}
