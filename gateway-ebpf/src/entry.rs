//! The entry point's tcp/udp forwards (`entry_forward`: XDP on the public interface, reached
//! by a tail call from `wg_rx_xdp` for frames that are not WireGuard). A packet to a
//! forwarded port gets the backend as its destination (the port shifted as the forward's
//! range says), its flow is remembered for the replies (`ENTRY_FLOWS`, keyed by the reply
//! as it will arrive decrypted), and it is sealed to the peer whose AllowedIPs hold the
//! backend and sent back out of the underlay, without the stack.
//!
//! What the program cannot seal (no session yet, no endpoint, no outer route, larger than the
//! tunnel's MTU, TTL expiring...) goes, already translated, where packets the stack routes
//! into the tunnel go: the frame is marked (`TUNNEL_HANDOFF_LEN` bytes of XDP metadata) and
//! passed, and the TC handoff program on the same interface redirects it to the TUN's
//! egress: the send program there, else the daemon through the TUN fd, which queues it and
//! starts a handshake (`EntryToTunnel`). XDP cannot redirect to an L3 TUN itself (it has no
//! `ndo_xdp_xmit`), and going through the stack instead would need forwarding enabled and
//! its firewall's consent.

use core::ffi::c_void;

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_ktime_get_ns};
use gateway_common::{
    maps::{
        AF_INET, AF_INET6, AF_NONE, ENTRY_PORTS_PER_TRANSPORT, ENTRY_TRANSPORT_TCP,
        ENTRY_TRANSPORT_UDP, EntryForward, MAX_ENTRY_CHAIN, NAT_SOURCE, Stat,
    },
    wire::ETH_HEADER_LEN,
};

use crate::flow::{self, nat_address, stale};
use crate::maps::{
    Towards, allowed, config, count, count_entry_flow, count_entry_traffic, entry_flow,
    entry_forward, entry_port, record_entry_flow,
};
use crate::nat::{self, End, Transport};
use crate::packet::{L3, Packet, Xdp};
use crate::parse::{self, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, Inner};
use crate::rewrite;
use crate::scratch::{HDR_ETH, Scratch};
use crate::tx::{Sealed, seal_and_transmit};
use crate::words::{at_most, be16};

#[inline(always)]
fn not_forwarded() -> u32 {
    count(Stat::EntryPassNoForward);
    xdp_action::XDP_PASS
}

/// Handles one frame the receive program found not to be WireGuard.
#[inline(always)]
pub unsafe fn forward(ctx: *mut c_void, s: &mut Scratch, ingress: u32) -> u32 {
    let Some(cfg) = config() else {
        count(Stat::Error);
        return xdp_action::XDP_PASS;
    };
    let len = unsafe { Xdp::len(ctx) };
    let eth = ETH_HEADER_LEN as u32;
    let rx = s.rx.as_mut_ptr() as *mut u8;
    // SAFETY: 14 bytes from byte 2 of the 96-byte buffer.
    if len < eth + 20 || !unsafe { Xdp::load(ctx, 0, rx.add(HDR_ETH), eth) } {
        return not_forwarded();
    }
    let ethertype = be16(&s.rx, HDR_ETH + 12);
    if ethertype != ETH_P_IP && ethertype != ETH_P_IPV6 {
        return not_forwarded();
    }
    // The IP and transport headers (and a SYN's first option): 64 bytes, or the packet.
    let available = len - eth;
    let head_len = at_most::<64>(available);
    // SAFETY: head is 64 bytes.
    if !unsafe { Xdp::load(ctx, eth, s.crypt.head.as_mut_ptr() as *mut u8, head_len) } {
        return not_forwarded();
    }
    let Some(inner) = parse::inner(&s.crypt.head, available) else {
        return not_forwarded();
    };
    let Some(t) = Transport::of(&s.crypt.head, &inner) else {
        return not_forwarded();
    };
    let ports = t.ports(&s.crypt.head);
    let port = ((ports >> 16) as u16).swap_bytes();
    let (_, public) = parse::inner_addrs(&s.crypt.head, t.family);
    let Some((slot, forward)) = find(t.proto, port, t.family, &public) else {
        return not_forwarded();
    };
    let backend = address(&forward.to_addr, t.family);
    let backend_port = forward.to_port.wrapping_add(port - forward.first_port);
    // A backend no peer routes (AllowedIPs changed under the forward): nothing to send to.
    let Some(peer_slot) = allowed(t.family, &backend) else {
        return not_forwarded();
    };
    let head = &mut s.crypt.head;
    nat::translate(head, &t, End::Destination, &backend, backend_port.swap_bytes());
    if cfg.tun_mtu != 0 {
        nat::clamp_mss(head, &t, nat::mss_for(t.family, cfg.tun_mtu));
    }
    // SAFETY: the bytes just loaded, from head.
    if !unsafe { Xdp::store(ctx, eth, head.as_ptr() as *const u8, head_len) } {
        count(Stat::Error);
        return xdp_action::XDP_DROP;
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    flow::set_nat(&mut s.flow.nat, NAT_SOURCE, &public, port.swap_bytes(), now);
    s.flow.nat.forward = slot + 1;
    if remember(s, inner.len) {
        count_entry_flow(slot);
    }
    count_entry_traffic(slot, Towards::Backend, inner.len);
    if (cfg.tun_mtu != 0 && inner.len > cfg.tun_mtu)
        || !rewrite::ttl_allows_forwarding(&s.crypt.head, inner.family)
    {
        return unsafe { to_tunnel(ctx, &inner) };
    }
    match unsafe { seal_and_transmit(ctx, s, cfg, &inner, peer_slot, ingress, len, now) } {
        Sealed::Sent(action) => {
            count(Stat::EntryForwarded);
            action
        }
        Sealed::Refused(_) => unsafe { to_tunnel(ctx, &inner) },
        Sealed::Broken => {
            count(Stat::Error);
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn family_code(family: L3) -> u16 {
    match family {
        L3::V4 => AF_INET,
        L3::V6 => AF_INET6,
    }
}

/// An address field of `EntryForward` as words (IPv4: the first, the rest zero).
#[inline(always)]
fn address(field: &[u8; 16], family: L3) -> [u32; 4] {
    // SAFETY: EntryForward is repr(C) with its address fields 4-byte aligned (offsets 12
    // and 28).
    let w = unsafe { &*(field.as_ptr() as *const [u32; 4]) };
    match family {
        L3::V4 => [w[0], 0, 0, 0],
        L3::V6 => [w[0], w[1], w[2], w[3]],
    }
}

/// The forward that takes `port` (host order) of `proto` on the local address `public`:
/// the first of the port's chain of the packet's family whose listen address, if it has
/// one, is `public`.
#[inline(always)]
fn find(
    proto: u8,
    port: u16,
    family: L3,
    public: &[u32; 4],
) -> Option<(u32, &'static EntryForward)> {
    let transport = if proto == IPPROTO_TCP { ENTRY_TRANSPORT_TCP } else { ENTRY_TRANSPORT_UDP };
    let mut link = entry_port(transport * ENTRY_PORTS_PER_TRANSPORT + port as u32);
    let code = family_code(family);
    let mut i = 0;
    while i < MAX_ENTRY_CHAIN {
        if link == 0 {
            return None;
        }
        let forward = entry_forward(link - 1)?;
        if forward.family == code && port >= forward.first_port {
            if forward.listen_family == AF_NONE {
                return Some((link - 1, forward));
            }
            let listen = address(&forward.listen, family);
            if forward.listen_family == code
                && listen[0] == public[0]
                && listen[1] == public[1]
                && listen[2] == public[2]
                && listen[3] == public[3]
            {
                return Some((link - 1, forward));
            }
        }
        link = forward.next;
        i += 1;
    }
    None
}

/// Remembers how the replies of a translated flow (the `len`-byte packet in `s.crypt.head`,
/// translated) get their public source back (`s.flow.nat`, with the time): key = the reply
/// as it will arrive decrypted (from the backend to the client). An entry already saying so
/// is refreshed at most once a second, in place. True when the flow is new to the map. A
/// subprogram of its own: its locals in their own stack frame, the program's being what the
/// AEAD loop's callbacks stack on.
#[inline(never)]
fn remember(s: &mut Scratch, len: u32) -> bool {
    let Some(t) = parse::inner(&s.crypt.head, len).and_then(|i| Transport::of(&s.crypt.head, &i))
    else {
        return false;
    };
    let head = &s.crypt.head;
    let (client, backend) = parse::inner_addrs(head, t.family);
    let reply_ports = flow::reversed(t.ports(head));
    flow::set_key(&mut s.flow.key, t.family, t.proto, reply_ports, &backend, &client);
    let (public, public_port, now) =
        (nat_address(&s.flow.nat), s.flow.nat.port, s.flow.nat.last_seen_ns);
    if let Some(known) = entry_flow(&s.flow.key) {
        // SAFETY: a live map value; concurrent writers store the same values.
        let (rewrite, port, last_seen) =
            unsafe { ((*known).rewrite, (*known).port, (*known).last_seen_ns) };
        let addr = nat_address(known);
        if rewrite == NAT_SOURCE
            && port == public_port
            && addr[0] == public[0]
            && addr[1] == public[1]
            && addr[2] == public[2]
            && addr[3] == public[3]
        {
            if stale(last_seen, now) {
                // SAFETY: as above.
                unsafe { (*known).last_seen_ns = now };
            }
            return false;
        }
    }
    // A full map evicts its least recently used flow; a failed insert leaves this flow's
    // replies untranslated, as a stateless path would.
    record_entry_flow(&s.flow.key, &s.flow.nat)
}

/// Hands a translated packet the program does not seal to the TUN's egress, through the TC
/// handoff program (see the module's comment). Ethernet padding is cut first (the skb goes
/// to the TUN without passing the IP layer, which would trim it), where the frame is linear.
/// A driver that keeps no XDP metadata gets the packet to the stack instead, which routes it
/// into the tunnel if this host forwards.
#[inline(always)]
unsafe fn to_tunnel(ctx: *mut c_void, inner: &Inner) -> u32 {
    let eth = ETH_HEADER_LEN as u32;
    if !unsafe { Xdp::trim_for_stack(ctx, eth + inner.len) } {
        count(Stat::Error);
        return xdp_action::XDP_DROP;
    }
    // Either way it is on its way into the tunnel, translated.
    unsafe { Xdp::mark_for_tunnel(ctx) };
    count(Stat::EntryToTunnel);
    xdp_action::XDP_PASS
}
