//! Peers in the shared `PEERS` array: where to send (endpoint, current session) and what
//! the programs saw (activity, roaming).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use gateway_common::maps::{AF_INET, AF_INET6, Endpoint, PEER_ACTIVE, PEER_ENTRY, Peer};

use super::clock::monotonic_ns_to_instant;
use super::error::{DataplaneError, Result};
use super::mmap::MappedArray;
use super::sessions::SessionSlot;
use super::slots::SlotAllocator;

/// A slot of `PEERS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerSlot(pub u32);

/// Where a peer's packets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerEndpoint {
    pub addr: SocketAddr,
    /// Our address the peer's packets arrive at (the source of ours); None: the route's.
    pub local: Option<IpAddr>,
    /// The underlay interface the peer was heard on; 0: unknown (the programs then route as
    /// if forwarding from the interface the packet came in on).
    pub ifindex: u32,
}

/// What the programs counted for a peer (they keep their own counters: add the daemon's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerActivitySnapshot {
    /// WireGuard message bytes, as the kernel counts them.
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    /// Last authenticated packet of any kind (keepalives included).
    pub last_rx: Option<Instant>,
    pub last_tx: Option<Instant>,
    /// Last data packet (non-empty plaintext).
    pub last_data_rx: Option<Instant>,
    pub last_data_tx: Option<Instant>,
}

fn endpoint_to_map(e: Option<&PeerEndpoint>) -> Endpoint {
    let Some(e) = e else { return Endpoint::default() };
    let mut out = Endpoint {
        family: if e.addr.is_ipv4() { AF_INET } else { AF_INET6 },
        port: e.addr.port().to_be(),
        ifindex: e.ifindex,
        addr: [0; 16],
        local: [0; 16],
    };
    match e.addr.ip() {
        IpAddr::V4(a) => out.addr[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out.addr.copy_from_slice(&a.octets()),
    }
    match e.local {
        Some(IpAddr::V4(a)) => out.local[..4].copy_from_slice(&a.octets()),
        Some(IpAddr::V6(a)) => out.local.copy_from_slice(&a.octets()),
        None => {}
    }
    out
}

fn endpoint_from_map(e: &Endpoint) -> Option<PeerEndpoint> {
    let (addr, local) = match e.family {
        AF_INET => {
            let a = Ipv4Addr::new(e.addr[0], e.addr[1], e.addr[2], e.addr[3]);
            let l = Ipv4Addr::new(e.local[0], e.local[1], e.local[2], e.local[3]);
            (IpAddr::V4(a), (!l.is_unspecified()).then_some(IpAddr::V4(l)))
        }
        AF_INET6 => {
            let a = Ipv6Addr::from(e.addr);
            let l = Ipv6Addr::from(e.local);
            (IpAddr::V6(a), (!l.is_unspecified()).then_some(IpAddr::V6(l)))
        }
        _ => return None,
    };
    Some(PeerEndpoint {
        addr: SocketAddr::new(addr, u16::from_be(e.port)),
        local,
        ifindex: e.ifindex,
    })
}

/// The mapped `PEERS` array and which of its slots are in use.
pub(super) struct PeerMaps {
    array: MappedArray<Peer>,
    slots: SlotAllocator,
}

impl PeerMaps {
    pub(super) fn new(array: MappedArray<Peer>) -> Self {
        let slots = SlotAllocator::new(array.entries());
        PeerMaps { array, slots }
    }

    pub(super) fn is_used(&self, slot: PeerSlot) -> bool {
        self.slots.is_used(slot.0)
    }

    /// The slot, if it is in use.
    pub(super) fn check(&self, slot: PeerSlot) -> Result<()> {
        self.ptr(slot).map(drop)
    }

    fn ptr(&self, slot: PeerSlot) -> Result<*mut Peer> {
        if !self.slots.is_used(slot.0) {
            return Err(DataplaneError::Invalid(format!("peer slot {} is not in use", slot.0)));
        }
        self.array
            .slot(slot.0)
            .ok_or_else(|| DataplaneError::Invalid(format!("peer slot {} out of range", slot.0)))
    }

    fn tx_session_word(&self, slot: PeerSlot) -> Result<&AtomicU32> {
        let p = self.ptr(slot)?;
        // SAFETY: an aligned u32 in mapped memory that lives as long as `self`.
        Ok(unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*p).tx_session)) })
    }

    /// A fresh peer slot: no endpoint, no session, zeroed activity.
    pub(super) fn add(&mut self) -> Result<PeerSlot> {
        let slot = PeerSlot(self.slots.allocate("peer")?);
        let p = self.ptr(slot)?;
        // SAFETY: the slot was free: no session refers to it, programs do not reach it.
        unsafe {
            std::ptr::addr_of_mut!((*p).tx_session).write_volatile(0);
            std::ptr::addr_of_mut!((*p).endpoint).write_volatile(Endpoint::default());
            (*p).endpoint_generation.store(0, Ordering::Relaxed);
            let a = &(*p).activity;
            for counter in [
                &a.rx_bytes,
                &a.rx_packets,
                &a.tx_bytes,
                &a.tx_packets,
                &a.last_rx_ns,
                &a.last_tx_ns,
                &a.last_data_rx_ns,
                &a.last_data_tx_ns,
            ] {
                counter.store(0, Ordering::Relaxed);
            }
            AtomicU32::from_ptr(std::ptr::addr_of_mut!((*p).state))
                .store(PEER_ACTIVE, Ordering::Release);
        }
        Ok(slot)
    }

    /// Clears the slot's session, state and endpoint, and frees it.
    pub(super) fn remove(&mut self, slot: PeerSlot) -> Result<()> {
        let p = self.ptr(slot)?;
        self.tx_session_word(slot)?.store(0, Ordering::Release);
        // SAFETY: fields of our slot.
        unsafe {
            AtomicU32::from_ptr(std::ptr::addr_of_mut!((*p).state)).store(0, Ordering::Release);
            std::ptr::addr_of_mut!((*p).endpoint).write_volatile(Endpoint::default());
        }
        self.slots.release(slot.0, "peer")
    }

    /// Sets or clears `PEER_ENTRY` in the slot's state.
    pub(super) fn set_entry(&mut self, slot: PeerSlot, entry: bool) -> Result<()> {
        let p = self.ptr(slot)?;
        // SAFETY: an aligned u32 of our slot in mapped memory; programs only read it.
        let state = unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*p).state)) };
        if entry {
            state.fetch_or(PEER_ENTRY, Ordering::Release);
        } else {
            state.fetch_and(!PEER_ENTRY, Ordering::Release);
        }
        Ok(())
    }

    /// Sets (or, with None, clears) where the peer's packets go.
    pub(super) fn set_endpoint(&mut self, slot: PeerSlot, e: Option<&PeerEndpoint>) -> Result<()> {
        let p = self.ptr(slot)?;
        // SAFETY: a plain write of our slot's endpoint; programs only read it or roam it.
        unsafe { std::ptr::addr_of_mut!((*p).endpoint).write_volatile(endpoint_to_map(e)) };
        Ok(())
    }

    /// The peer's endpoint as the programs last left it, and the roaming generation.
    pub(super) fn endpoint(&self, slot: PeerSlot) -> Result<(Option<PeerEndpoint>, u64)> {
        let p = self.ptr(slot)?;
        // SAFETY: reads of mapped memory; a torn read shows as a generation change.
        unsafe {
            loop {
                let before = (*p).endpoint_generation.load(Ordering::Acquire);
                let e = std::ptr::addr_of!((*p).endpoint).read_volatile();
                let after = (*p).endpoint_generation.load(Ordering::Acquire);
                if before == after {
                    return Ok((endpoint_from_map(&e), after));
                }
            }
        }
    }

    /// Sets the session the programs send the peer's packets with; None: the daemon sends.
    pub(super) fn set_tx_session(
        &mut self,
        slot: PeerSlot,
        session: Option<SessionSlot>,
    ) -> Result<()> {
        self.tx_session_word(slot)?.store(session.map_or(0, |s| s.0 + 1), Ordering::Release);
        Ok(())
    }

    /// Stops the peer sending with `session`, if it does.
    pub(super) fn clear_tx_session_if(&self, peer: PeerSlot, session: SessionSlot) {
        if let Ok(word) = self.tx_session_word(peer) {
            let _ = word.compare_exchange(session.0 + 1, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// What the programs counted for the peer.
    pub(super) fn activity(&self, slot: PeerSlot) -> Result<PeerActivitySnapshot> {
        let p = self.ptr(slot)?;
        // SAFETY: atomics in mapped memory.
        let a = unsafe { &(*p).activity };
        let t = |v: u64| monotonic_ns_to_instant(v);
        Ok(PeerActivitySnapshot {
            rx_bytes: a.rx_bytes.load(Ordering::Relaxed),
            rx_packets: a.rx_packets.load(Ordering::Relaxed),
            tx_bytes: a.tx_bytes.load(Ordering::Relaxed),
            tx_packets: a.tx_packets.load(Ordering::Relaxed),
            last_rx: t(a.last_rx_ns.load(Ordering::Relaxed)),
            last_tx: t(a.last_tx_ns.load(Ordering::Relaxed)),
            last_data_rx: t(a.last_data_rx_ns.load(Ordering::Relaxed)),
            last_data_tx: t(a.last_data_tx_ns.load(Ordering::Relaxed)),
        })
    }
}

#[cfg(test)]
mod tests {
    use gateway_common::maps::AF_NONE;

    use super::*;

    #[test]
    fn endpoints_round_trip_through_the_map_layout() {
        let cases = [
            PeerEndpoint { addr: "192.0.2.7:51820".parse().unwrap(), local: None, ifindex: 3 },
            PeerEndpoint {
                addr: "[2001:db8::1]:1234".parse().unwrap(),
                local: Some("2001:db8::2".parse().unwrap()),
                ifindex: 0,
            },
        ];
        for e in cases {
            let m = endpoint_to_map(Some(&e));
            assert_eq!(m.port.to_ne_bytes(), e.addr.port().to_be_bytes(), "network order");
            assert_eq!(endpoint_from_map(&m), Some(e));
        }
        assert_eq!(endpoint_to_map(None).family, AF_NONE);
        assert_eq!(endpoint_from_map(&Endpoint::default()), None);
    }
}
