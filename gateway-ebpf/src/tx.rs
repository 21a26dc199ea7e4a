//! Sending packets into the tunnel from a program: TC egress on the TUN (what the stack
//! routes into the tunnel) and XDP on LAN interfaces (forwarded traffic, before the stack).
//! Whatever a program cannot send goes on unchanged to the daemon (through the TUN fd) or to
//! the stack, which behave as the kernel's WireGuard does.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    helpers::generated::{bpf_ktime_get_ns, bpf_redirect, bpf_redirect_neigh},
};
use gateway_common::{
    maps::{CONFIG_REPLY_TO, Config, Stat},
    wire::{AEAD_TAG_LEN, ETH_HEADER_LEN, IPV4_HEADER_LEN, IPV6_HEADER_LEN},
};

use crate::crypto::MAX_PLAINTEXT;
use crate::csum;
use crate::encap::{self, EncapError, Handover, OuterChecksum, Verify};
use crate::maps::{allowed, config, count, count_index};
use crate::mss;
use crate::packet::{L3, Packet, TcL3, Xdp};
use crate::parse::{self, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP, Inner};
use crate::partial::{self, InnerChecksum};
use crate::reply_to;
use crate::rewrite;
use crate::route::{self, FIB_FRAG_NEEDED, FIB_NO_NEIGH, FIB_SUCCESS};
use crate::scratch::{HDR_ETH, Scratch};
use crate::words::{be16, byte};

/// How to check the inner TCP/UDP checksum while sealing (see `encap::encapsulate`), or None
/// when there is none to check: not TCP/UDP, a fragment, IPv4 UDP without a checksum.
#[inline(always)]
fn checksum_verification(head: &[u32; 16], inner: &Inner) -> Option<Verify> {
    if inner.fragment || (inner.proto != IPPROTO_TCP && inner.proto != IPPROTO_UDP) {
        return None;
    }
    match inner.family {
        L3::V4 => {
            let header_len = ((byte(head, 0) & 0x0f) as u32) * 4;
            // An IPv4 UDP checksum of zero means none (bytes 26..28 when there are no
            // options; with options the field is not at hand, and a zero there fails the
            // check below, leaving the packet to the daemon).
            if inner.proto == IPPROTO_UDP
                && header_len == IPV4_HEADER_LEN as u32
                && inner.len >= (IPV4_HEADER_LEN + 8) as u32
                && be16(head, 26) == 0
            {
                return None;
            }
            // A valid IPv4 header sums to zero, so the packet's sum is its transport
            // segment's; add the pseudo-header.
            let l4_len = inner.len.wrapping_sub(header_len) as u16;
            Some(Verify {
                base: head[3] as u64
                    + head[4] as u64
                    + csum::net16(inner.proto as u16)
                    + csum::net16(l4_len),
            })
        }
        L3::V6 => {
            // The packet's sum minus the header words that are not in the pseudo-header
            // (the addresses are in both), plus its length and next-header fields.
            let not_pseudo = !csum::fold(head[0] as u64 + head[1] as u64) as u64;
            let l4_len = (inner.len - IPV6_HEADER_LEN as u32) as u16;
            Some(Verify {
                base: not_pseudo + csum::net16(inner.proto as u16) + csum::net16(l4_len),
            })
        }
    }
}

/// TC egress on the TUN: the skb starts at the inner IP header.
#[inline(always)]
pub unsafe fn from_tun(ctx: *mut c_void, s: &mut Scratch) -> i32 {
    let ok = TC_ACT_OK;
    let Some(cfg) = config() else {
        count(Stat::Error);
        return ok;
    };
    let skb = ctx as *mut __sk_buff;
    // SAFETY: fields of the program's own context.
    let (len, gso) = unsafe { ((*skb).len, (*skb).gso_size) };
    if gso != 0 {
        // One skb, many packets: the kernel segments it on its way to the daemon.
        count(Stat::TxPassOffload);
        return ok;
    }
    let Some(inner) = (unsafe { load_inner::<TcL3>(ctx, s, 0, len) }) else {
        count(Stat::TxPassToDaemon);
        return ok;
    };
    let (_, dst) = parse::inner_addrs(&s.crypt.head, inner.family);
    let Some(peer_slot) = allowed(inner.family, &dst) else {
        count(Stat::TxPassNoPeer);
        return ok;
    };
    if cfg.tun_mtu != 0 && len > cfg.tun_mtu {
        count(Stat::TxPassTooBig);
        return ok;
    }
    if unsafe { mss::needs_clamping::<TcL3>(ctx, s, &inner, 0, cfg.tun_mtu) } {
        count(Stat::TxPassSyn);
        return ok;
    }
    // Locally generated TCP: the stack left its checksum to the device (see `partial`).
    let mut partial = None;
    let origin = unsafe { partial::origin(skb) };
    if let Some(origin) = origin
        && inner.proto == IPPROTO_TCP
        && !inner.fragment
    {
        let Some(l4) = partial::transport_offset(&s.crypt.head, &inner) else {
            count(Stat::TxPassOffload);
            return ok;
        };
        match unsafe { partial::inspect::<TcL3>(ctx, s, &inner, l4, origin) } {
            InnerChecksum::Complete => {}
            InnerChecksum::Partial { value } => partial = Some((l4, value)),
            InnerChecksum::Unknown => {
                count(Stat::TxPassOffload);
                return ok;
            }
        }
    }
    let outer_checksum =
        if partial.is_some() { OuterChecksum::LeftToDevice } else { OuterChecksum::Computed };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let reserved = unsafe {
        encap::reserve(
            ctx,
            s,
            peer_slot,
            cfg,
            len,
            now,
            cfg.tun_ifindex,
            Handover::Neighbour,
            outer_checksum,
        )
    };
    let plan = match reserved {
        Ok(plan) => plan,
        Err(stat) => {
            count(stat);
            return ok;
        }
    };
    let ds = parse::inner_dsfield(&s.crypt.head, inner.family);
    // Where the plaintext is sealed: in place, or moved (see `partial`).
    let (payload_off, verify) = match partial {
        None => (0, checksum_verification(&s.crypt.head, &inner)),
        Some((l4, value)) => {
            let padded = encap::padded_len(len, cfg.tun_mtu);
            if padded > MAX_PLAINTEXT {
                // Checked before the packet is moved: a moved packet cannot be passed on.
                count(Stat::TxPassOffload);
                return ok;
            }
            let off = partial::payload_offset(l4);
            let new_len = off + padded + AEAD_TAG_LEN as u32;
            if !unsafe { partial::relocate::<TcL3>(ctx, s, len, off, new_len, l4, value) } {
                count(Stat::Error);
                return TC_ACT_SHOT;
            }
            (off, None)
        }
    };
    let sent = unsafe {
        encap::encapsulate::<TcL3>(
            ctx,
            s,
            &plan,
            cfg,
            payload_off,
            len,
            inner.family,
            ds,
            verify,
            len,
            outer_checksum,
        )
    };
    match sent {
        Ok(msg_len) => {
            if cfg.fwmark != 0 {
                // SAFETY: `mark` is writable from TC programs.
                unsafe { (*skb).mark = cfg.fwmark };
            }
            crate::activity::sent_data(plan.peer, msg_len, now);
            count(Stat::TxEncrypted);
            // SAFETY: helpers taking plain values (no neighbour parameters: the kernel looks
            // the next hop up from the outer header).
            unsafe {
                if plan.neighbour {
                    bpf_redirect_neigh(plan.ifindex, core::ptr::null_mut(), 0, 0) as i32
                } else {
                    bpf_redirect(plan.ifindex, 0) as i32
                }
            }
        }
        Err(EncapError::Checksum) => {
            count(Stat::TxPassOffload);
            ok
        }
        Err(EncapError::Untouched) => {
            count(Stat::Error);
            ok
        }
        Err(EncapError::Broken) => {
            count(Stat::Error);
            TC_ACT_SHOT
        }
    }
}

/// Loads the inner IP header at `off` into `s.crypt.head` (40 bytes when there are that
/// many: an IPv4 header and the start of its transport header) and validates it against the
/// `available` bytes from there.
#[inline(always)]
pub unsafe fn load_inner<P: Packet>(
    ctx: *mut c_void,
    s: &mut Scratch,
    off: u32,
    available: u32,
) -> Option<Inner> {
    let head = s.crypt.head.as_mut_ptr() as *mut u8;
    let len = if available >= IPV6_HEADER_LEN as u32 {
        IPV6_HEADER_LEN as u32
    } else if available >= IPV4_HEADER_LEN as u32 {
        IPV4_HEADER_LEN as u32
    } else {
        return None;
    };
    // SAFETY: head is 64 bytes.
    if !unsafe { P::load(ctx, off, head, len) } {
        return None;
    }
    parse::inner(&s.crypt.head, available)
}

/// XDP on a LAN interface: frames the stack would forward into the tunnel are encrypted and
/// sent here instead; everything else passes. Behind an entry point, replies of the flows an
/// entry peer brought in go back to that peer whatever the routes say (`reply_to`).
#[inline(always)]
pub unsafe fn from_lan(ctx: *mut c_void, s: &mut Scratch, ingress: u32) -> u32 {
    let pass = xdp_action::XDP_PASS;
    let Some(cfg) = config() else {
        count(Stat::Error);
        return pass;
    };
    let len = unsafe { Xdp::len(ctx) };
    let eth = ETH_HEADER_LEN as u32;
    let rx = s.rx.as_mut_ptr() as *mut u8;
    // SAFETY: 14 bytes from byte 2 of the 96-byte buffer.
    if len < eth || !unsafe { Xdp::load(ctx, 0, rx.add(HDR_ETH), eth) } {
        count(Stat::TxPassToStack);
        return pass;
    }
    let ethertype = be16(&s.rx, HDR_ETH + 12);
    if ethertype != ETH_P_IP && ethertype != ETH_P_IPV6 {
        count(Stat::TxPassToStack);
        return pass;
    }
    let Some(inner) = (unsafe { load_inner::<Xdp>(ctx, s, eth, len - eth) }) else {
        count(Stat::TxPassToStack);
        return pass;
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let reply_to = if cfg.flags & CONFIG_REPLY_TO != 0 {
        unsafe { reply_to::lookup::<Xdp>(ctx, s, &inner, eth, now) }
    } else {
        None
    };
    let (peer_slot, sent) = match reply_to {
        Some(peer_slot) => (peer_slot, Stat::ReplyToSent),
        None => match unsafe { route_from_lan(ctx, s, inner.len, ingress) } {
            Ok(peer_slot) => (peer_slot, Stat::TxEncrypted),
            Err(stat) => {
                count(stat);
                return pass;
            }
        },
    };
    if !rewrite::ttl_allows_forwarding(&s.crypt.head, inner.family) {
        count(Stat::TxPassToStack);
        return pass;
    }
    if cfg.tun_mtu != 0 && inner.len > cfg.tun_mtu {
        return if reply_to.is_some() {
            unsafe { reply_to_tunnel(ctx, &inner) }
        } else {
            too_big()
        };
    }
    // An entry peer's flow had its MSS clamped by the entry point, which clamps the replies
    // too as it translates them back; the daemon could not send it to that peer.
    if reply_to.is_none() && unsafe { mss::needs_clamping::<Xdp>(ctx, s, &inner, eth, cfg.tun_mtu) }
    {
        // The stack routes it into the tunnel, and the TUN's egress leaves it to the daemon,
        // which clamps it.
        count(Stat::TxPassSyn);
        return pass;
    }
    // In memory across the seal (see `Scratch::outcome`): the verifier's cost doubled with it
    // in a register.
    s.outcome = sent as u32;
    let sealed = unsafe { seal_and_transmit(ctx, s, cfg, &inner, peer_slot, ingress, len, now) };
    match sealed {
        Sealed::Sent(action) => {
            count_index(s.outcome);
            action
        }
        Sealed::Refused(_) if s.outcome == Stat::ReplyToSent as u32 => unsafe {
            reply_to_tunnel(ctx, &inner)
        },
        other => counted(other, Stat::TxEncrypted),
    }
}

/// Whether the stack would route a LAN packet (`len` bytes, its first in `s.crypt.head`)
/// into the tunnel, and to which peer (the one whose AllowedIPs hold its destination); Err:
/// why not.
#[inline(always)]
unsafe fn route_from_lan(
    ctx: *mut c_void,
    s: &mut Scratch,
    len: u32,
    ingress: u32,
) -> Result<u32, Stat> {
    match unsafe { route_from_lan_code(ctx, s, len, ingress) } {
        code if code >= 0 => Ok(code as u32),
        code => Err(stat_of(-code - 1)),
    }
}

/// `route_from_lan`'s work, in a subprogram of its own (its locals in their own stack frame,
/// the program's being at the limit the bpf_loop callbacks leave): the peer's slot, or
/// −(the `Stat`'s index + 1), plain scalars to return.
#[inline(never)]
unsafe fn route_from_lan_code(ctx: *mut c_void, s: &mut Scratch, len: u32, ingress: u32) -> i64 {
    let (Some(cfg), Some(inner)) = (config(), parse::inner(&s.crypt.head, len)) else {
        return -(Stat::Error as i64) - 1;
    };
    match unsafe { route_lan_packet(ctx, s, cfg, &inner, ingress) } {
        Ok(peer_slot) => peer_slot as i64,
        Err(stat) => -(stat as i64) - 1,
    }
}

/// The `Stat`s `route_lan_packet` refuses with, from their index.
#[inline(always)]
fn stat_of(index: i64) -> Stat {
    match index {
        i if i == Stat::TxPassTooBig as i64 => Stat::TxPassTooBig,
        i if i == Stat::TxPassToStack as i64 => Stat::TxPassToStack,
        i if i == Stat::TxPassNoPeer as i64 => Stat::TxPassNoPeer,
        _ => Stat::Error,
    }
}

#[inline(always)]
unsafe fn route_lan_packet(
    ctx: *mut c_void,
    s: &mut Scratch,
    cfg: &Config,
    inner: &Inner,
    ingress: u32,
) -> Result<u32, Stat> {
    let (src, dst) = parse::inner_addrs(&s.crypt.head, inner.family);
    let ds = parse::inner_dsfield(&s.crypt.head, inner.family);
    let rc = unsafe {
        route::forward(ctx, &mut s.fib, inner.family, &src, &dst, ds, inner.len, ingress)
    };
    if rc == FIB_FRAG_NEEDED {
        return Err(Stat::TxPassTooBig);
    }
    if !((rc == FIB_SUCCESS || rc == FIB_NO_NEIGH) && s.fib.ifindex == cfg.tun_ifindex)
        || !rewrite::ttl_allows_forwarding(&s.crypt.head, inner.family)
    {
        return Err(Stat::TxPassToStack);
    }
    if cfg.tun_mtu != 0 && inner.len > cfg.tun_mtu {
        return Err(Stat::TxPassTooBig);
    }
    allowed(inner.family, &dst).ok_or(Stat::TxPassNoPeer)
}

#[inline(always)]
fn too_big() -> u32 {
    count(Stat::TxPassTooBig);
    xdp_action::XDP_PASS
}

/// A reply of an entry peer's flow this program cannot seal (no tailroom for the padding and
/// tag in this frame, no session at that moment, larger than the tunnel's MTU, ...). The
/// stack would route it out of the default route, to the client itself, whose RST would end
/// the connection: it goes to the tunnel's egress instead, through the TC handoff program on
/// this interface (the send program there seals it, else the daemon, which also answers
/// "too big"). Without XDP metadata it is dropped, and retransmitted.
#[inline(always)]
unsafe fn reply_to_tunnel(ctx: *mut c_void, inner: &Inner) -> u32 {
    let eth = ETH_HEADER_LEN as u32;
    if unsafe { Xdp::trim_for_stack(ctx, eth + inner.len) && Xdp::mark_for_tunnel(ctx) } {
        count(Stat::ReplyToTunnel);
        xdp_action::XDP_PASS
    } else {
        count(Stat::ReplyToDropped);
        xdp_action::XDP_DROP
    }
}

/// Counts what `seal_and_transmit` did (`sent` when it sent) and gives LAN XDP's action.
#[inline(always)]
fn counted(sealed: Sealed, sent: Stat) -> u32 {
    match sealed {
        Sealed::Sent(action) => {
            count(sent);
            action
        }
        Sealed::Refused(stat) => {
            count(stat);
            xdp_action::XDP_PASS
        }
        Sealed::Broken => {
            count(Stat::Error);
            xdp_action::XDP_DROP
        }
    }
}

/// What `seal_and_transmit` did with a frame.
pub enum Sealed {
    /// Sealed and on its way: the XDP action that sends it.
    Sent(u32),
    /// Not sealed, and the frame is as it was: why (a `Stat` to count).
    Refused(Stat),
    /// A helper failed part-way: the frame is unusable.
    Broken,
}

/// Seals the IP packet that follows an XDP frame's Ethernet header (`inner`, whose first
/// bytes are in `s.crypt.head`; the frame is `frame_len` bytes) to `peer_slot`, and sends it
/// out of the underlay. The half of sending that LAN XDP and the entry point's forward
/// program share: the caller has decided that the packet goes into the tunnel to this peer
/// and checked what the stack would (TTL, tunnel MTU). The TTL / hop limit is decremented, as
/// forwarding does; it is put back when the packet is refused.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn seal_and_transmit(
    ctx: *mut c_void,
    s: &mut Scratch,
    cfg: &Config,
    inner: &Inner,
    peer_slot: u32,
    ingress: u32,
    frame_len: u32,
    now: u64,
) -> Sealed {
    let eth = ETH_HEADER_LEN as u32;
    let reserved = unsafe {
        encap::reserve(
            ctx,
            s,
            peer_slot,
            cfg,
            inner.len,
            now,
            ingress,
            Handover::Direct,
            OuterChecksum::Computed,
        )
    };
    let plan = match reserved {
        Ok(plan) => plan,
        Err(stat) => return Sealed::Refused(stat),
    };
    let ds = parse::inner_dsfield(&s.crypt.head, inner.family);
    let Ok(saved) =
        (unsafe { rewrite::decrement_ttl::<Xdp>(ctx, &mut s.crypt.head, inner.family, eth) })
    else {
        return Sealed::Broken;
    };
    // From the header as it will be sealed: an IPv6 hop limit is among the words the
    // verification subtracts from the packet's sum.
    let verify = checksum_verification(&s.crypt.head, inner);
    let sent = unsafe {
        encap::encapsulate::<Xdp>(
            ctx,
            s,
            &plan,
            cfg,
            eth,
            inner.len,
            inner.family,
            ds,
            verify,
            frame_len,
            OuterChecksum::Computed,
        )
    };
    match sent {
        Ok(msg_len) => {
            crate::activity::sent_data(plan.peer, msg_len, now);
            Sealed::Sent(transmit(plan.ifindex, ingress))
        }
        Err(EncapError::Checksum) | Err(EncapError::Untouched) => {
            if unsafe { rewrite::restore_word::<Xdp>(ctx, &mut s.crypt.head, saved, eth) } {
                Sealed::Refused(Stat::TxPassOffload)
            } else {
                Sealed::Broken
            }
        }
        Err(EncapError::Broken) => Sealed::Broken,
    }
}

/// XDP_TX back out of the interface the frame came in on, else a redirect.
#[inline(always)]
pub fn transmit(ifindex: u32, ingress: u32) -> u32 {
    if ifindex == ingress {
        xdp_action::XDP_TX
    } else {
        // SAFETY: a helper taking plain values.
        unsafe { bpf_redirect(ifindex, 0) as u32 }
    }
}
