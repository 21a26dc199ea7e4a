//! Per-peer counters and timestamps (`PeerActivity`) and roaming, updated with atomics: many
//! CPUs may handle one peer's packets at once, and the daemon reads the same memory.

use core::sync::atomic::Ordering;

use gateway_common::maps::{AF_INET, AF_INET6, Endpoint, Peer};

use crate::packet::L3;
use crate::scratch::{HDR_IP, HDR_WORDS};

#[inline(always)]
pub fn authenticated_rx(peer: &Peer, now: u64) {
    peer.activity.last_rx_ns.store(now, Ordering::Relaxed);
}

#[inline(always)]
pub fn data_rx_started(peer: &Peer, now: u64) {
    peer.activity.last_data_rx_ns.store(now, Ordering::Relaxed);
}

#[inline(always)]
pub fn received(peer: &Peer, msg_len: u32) {
    peer.activity.rx_bytes.fetch_add(msg_len as u64, Ordering::Relaxed);
    peer.activity.rx_packets.fetch_add(1, Ordering::Relaxed);
}

#[inline(always)]
pub fn sent_data(peer: &Peer, msg_len: u32, now: u64) {
    let a = &peer.activity;
    a.tx_bytes.fetch_add(msg_len as u64, Ordering::Relaxed);
    a.tx_packets.fetch_add(1, Ordering::Relaxed);
    a.last_tx_ns.store(now, Ordering::Relaxed);
    a.last_data_tx_ns.store(now, Ordering::Relaxed);
}

/// Word `i` of an endpoint address field (Endpoint is repr(C): `addr` at byte 8, `local` at
/// byte 24, both 4-byte aligned).
#[inline(always)]
fn words(field: &[u8; 16]) -> *mut u32 {
    field.as_ptr() as *mut u32
}

/// The kernel's `wg_socket_set_peer_endpoint_from_skb`: after an authenticated packet, the
/// peer's endpoint becomes the packet's source (and our address it came to, and the interface
/// it came in on), if that differs.
#[inline(always)]
pub fn roam(peer: &Peer, rx: &[u32; HDR_WORDS], family: L3, sport: u16, ingress: u32) {
    let ep: &Endpoint = &peer.endpoint;
    let (src, dst, n, fam) = match family {
        // Word offsets into rx: IPv4 source at HDR_IP + 12, IPv6 source at HDR_IP + 8.
        L3::V4 => ((HDR_IP + 12) / 4, (HDR_IP + 16) / 4, 1usize, AF_INET),
        L3::V6 => ((HDR_IP + 8) / 4, (HDR_IP + 24) / 4, 4usize, AF_INET6),
    };
    let addr = words(&ep.addr);
    let local = words(&ep.local);
    // SAFETY: reads of the peer's slot in the shared map; word offsets < 4.
    let mut same = ep.family == fam && ep.port == sport && ep.ifindex == ingress;
    let mut i = 0;
    while i < n {
        unsafe {
            same = same
                && core::ptr::read_volatile(addr.add(i)) == rx[src + i]
                && core::ptr::read_volatile(local.add(i)) == rx[dst + i];
        }
        i += 1;
    }
    if same {
        return;
    }
    let ep = ep as *const Endpoint as *mut Endpoint;
    // SAFETY: the peer slot is shared memory the programs are allowed to write (roaming);
    // concurrent writers write the same kind of values and the generation tells readers.
    unsafe {
        let mut i = 0;
        while i < 4 {
            let (a, l) = if i < n { (rx[src + i], rx[dst + i]) } else { (0, 0) };
            core::ptr::write_volatile(addr.add(i), a);
            core::ptr::write_volatile(local.add(i), l);
            i += 1;
        }
        core::ptr::write_volatile(&mut (*ep).port, sport);
        core::ptr::write_volatile(&mut (*ep).ifindex, ingress);
        core::ptr::write_volatile(&mut (*ep).family, fam);
    }
    peer.endpoint_generation.fetch_add(1, Ordering::Release);
}
