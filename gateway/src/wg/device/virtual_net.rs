//! Two devices on a virtual network, driven by a virtual clock, without a socket or a sleep:
//! the protocol's own tests run on it, and so do those of what mirrors it (`crate::mirror`).

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use rand_core::{CryptoRng, RngCore};

use super::*;
use crate::wg::peer::Endpoint;
use gateway_common::ecn;

/// xorshift: deterministic, and "crypto" only as far as these tests are concerned.
pub(crate) struct TestRng(pub(crate) u64);
impl RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            *b = self.next_u64() as u8;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for TestRng {}

pub(crate) fn key(seed: u8) -> [u8; 32] {
    let mut k = [0u8; 32];
    TestRng(u64::from(seed) * 0x9e37_79b9 + 1).fill_bytes(&mut k);
    k
}

pub(crate) fn public(private: [u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(private)).to_bytes()
}

pub(crate) const A_ADDR: &str = "192.0.2.1:51820";
pub(crate) const B_ADDR: &str = "192.0.2.2:51820";

pub(crate) fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An IPv4/UDP packet from `src` to `dst` with `len` bytes of payload.
pub(crate) fn packet(src: [u8; 4], dst: [u8; 4], len: usize) -> Vec<u8> {
    let total = 28 + len;
    let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[
        0x30,
        0x39,
        0x30,
        0x39,
        (len as u16 + 8).to_be_bytes()[0],
        (len as u16 + 8).to_be_bytes()[1],
        0,
        0,
    ]);
    p.extend((0..len).map(|i| i as u8));
    p
}

pub(crate) const A_INNER: [u8; 4] = [10, 0, 0, 1];
pub(crate) const B_INNER: [u8; 4] = [10, 0, 0, 2];

pub(crate) struct Net {
    pub(crate) now: Instant,
    pub(crate) a: Device,
    pub(crate) b: Device,
    pub(crate) a_peer: PeerId,
    pub(crate) b_peer: PeerId,
    /// What each side's TUN received.
    pub(crate) a_tun: Vec<Vec<u8>>,
    pub(crate) b_tun: Vec<Vec<u8>>,
    /// Every datagram put on the wire, (to b?, bytes), for replay tests.
    pub(crate) wire: Vec<(bool, Vec<u8>)>,
    /// Drop datagrams instead of delivering them.
    pub(crate) cut: bool,
    /// The path marks every packet to b Congestion Experienced.
    pub(crate) congested: bool,
    /// The ECN bits of each datagram a sent.
    pub(crate) ecn_to_b: Vec<u8>,
    /// Handshake backlog each side reports (to simulate load).
    pub(crate) a_backlog: usize,
    pub(crate) b_backlog: usize,
    pub(crate) b_sees_a_from: SocketAddr,
}

impl Net {
    pub(crate) fn new() -> Net {
        Net::with(DeviceOptions::default(), 0)
    }

    pub(crate) fn with(options: DeviceOptions, keepalive: u16) -> Net {
        Net::with_each(options.clone(), options, keepalive)
    }

    /// Each side with its own options (e.g. its own session memory).
    pub(crate) fn with_each(a: DeviceOptions, b: DeviceOptions, keepalive: u16) -> Net {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut a = Device::new(now, wall, Box::new(TestRng(1)), a);
        let mut b = Device::new(now, wall, Box::new(TestRng(2)), b);
        a.set_private_key(Some(key(1)));
        b.set_private_key(Some(key(2)));
        a.set_listen_port(51820);
        b.set_listen_port(51820);
        let a_peer = a.upsert_peer(public(key(2)), false).unwrap().unwrap();
        let b_peer = b.upsert_peer(public(key(1)), false).unwrap().unwrap();
        a.add_allowed_ip(a_peer, "10.0.0.2/32".parse().unwrap());
        b.add_allowed_ip(b_peer, "10.0.0.1/32".parse().unwrap());
        a.set_endpoint(a_peer, sa(B_ADDR));
        b.set_endpoint(b_peer, sa(A_ADDR));
        a.set_up(now, true);
        b.set_up(now, true);
        a.set_persistent_keepalive(now, a_peer, keepalive);
        let mut net = Net {
            now,
            a,
            b,
            a_peer,
            b_peer,
            a_tun: vec![],
            b_tun: vec![],
            wire: vec![],
            cut: false,
            congested: false,
            ecn_to_b: vec![],
            a_backlog: 0,
            b_backlog: 0,
            b_sees_a_from: sa(A_ADDR),
        };
        net.pump();
        while net.a.poll_event().is_some() {}
        while net.b.poll_event().is_some() {}
        net
    }

    /// Delivers everything in flight, both ways, until quiet.
    pub(crate) fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                assert_eq!(t.to.addr, sa(B_ADDR));
                self.wire.push((true, t.data.clone()));
                self.ecn_to_b.push(t.ecn);
                if !self.cut {
                    let outer = if self.congested { ecn::CE } else { t.ecn };
                    self.deliver_to_b_marked(t.data, outer);
                }
            }
            while let Some(t) = self.b.poll_transmit() {
                moved = true;
                self.wire.push((false, t.data.clone()));
                if !self.cut {
                    self.deliver_to_a(t.data);
                }
            }
            while let Some(p) = self.a.poll_tun() {
                self.a_tun.push(p);
            }
            while let Some(p) = self.b.poll_tun() {
                self.b_tun.push(p);
            }
            if !moved {
                return;
            }
        }
    }

    pub(crate) fn deliver_to_b(&mut self, data: Vec<u8>) -> Received {
        self.deliver_to_b_marked(data, 0)
    }

    pub(crate) fn deliver_to_b_marked(&mut self, mut data: Vec<u8>, outer_ds: u8) -> Received {
        let from = Endpoint::new(self.b_sees_a_from);
        let r = self.b.handle_datagram(self.now, from, outer_ds, &mut data, self.b_backlog);
        if let Received::Tun(range) = &r {
            self.b_tun.push(data[range.clone()].to_vec());
        }
        r
    }

    pub(crate) fn deliver_to_a(&mut self, mut data: Vec<u8>) -> Received {
        let from = Endpoint::new(sa(B_ADDR));
        let r = self.a.handle_datagram(self.now, from, 0, &mut data, self.a_backlog);
        if let Received::Tun(range) = &r {
            self.a_tun.push(data[range.clone()].to_vec());
        }
        r
    }

    pub(crate) fn a_sends(&mut self, len: usize) -> Vec<u8> {
        let p = packet(A_INNER, B_INNER, len);
        self.a.handle_tun_packet(self.now, &p);
        self.pump();
        p
    }

    pub(crate) fn b_sends(&mut self, len: usize) -> Vec<u8> {
        let p = packet(B_INNER, A_INNER, len);
        self.b.handle_tun_packet(self.now, &p);
        self.pump();
        p
    }

    /// Advances the clock, firing every timer on the way, in order.
    pub(crate) fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            let next = [self.a.next_timeout(), self.b.next_timeout()]
                .into_iter()
                .flatten()
                .filter(|t| *t <= end)
                .min();
            let Some(t) = next else { break };
            self.now = t.max(self.now);
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
            self.pump();
        }
        self.now = end;
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.pump();
    }

    pub(crate) fn types_on_wire(&self, to_b: bool) -> Vec<u8> {
        self.wire.iter().filter(|(d, _)| *d == to_b).map(|(_, p)| p[0]).collect()
    }

    pub(crate) fn a_current(&self) -> Option<u32> {
        self.a.peer(self.a_peer).unwrap().keypairs.current.as_ref().map(|k| k.local_index)
    }

    pub(crate) fn b_current(&self) -> Option<u32> {
        self.b.peer(self.b_peer).unwrap().keypairs.current.as_ref().map(|k| k.local_index)
    }
}
