//! Receiving transport data from the underlay: classify, check the session, authenticate
//! and decrypt, accept the counter, check the inner packet and its source, then deliver it
//! (hub forwarding, LAN redirect, or the local stack as if received on the tunnel). Written
//! once over `Packet`, for XDP and for TC.
//!
//! On an entry point (`CONFIG_ENTRY`), replies of forwarded and proxied flows are translated
//! first (`translate`); behind one, the flows an entry peer brings in are remembered so
//! their replies go back to it (`reply_to`).

use core::{ffi::c_void, ptr::read_volatile};

use aya_ebpf::helpers::generated::bpf_ktime_get_ns;
use gateway_common::{
    maps::{
        CONFIG_ENTRY, CONFIG_HUB_FORWARD, CONFIG_LAN_REDIRECT, Config, PEER_ENTRY, Peer,
        SESSION_RECV_VALID, Stat,
    },
    replay::Verdict,
    wire::{ETH_HEADER_LEN, REJECT_AFTER_TIME_NS},
};

use crate::activity;
use crate::crypto::{self, MAX_PLAINTEXT};
use crate::encap;
use crate::maps::{allowed, config, count, peer, redirect_iface, rx_session_slot, session};
use crate::mss;
use crate::packet::{L3, Packet};
use crate::parse::{self, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, Inner, Outer, Parsed};
use crate::reply_to;
use crate::rewrite;
use crate::route::{self, FIB_NO_NEIGH, FIB_SUCCESS};
use crate::scratch::{HDR_ETH, Scratch};
use crate::translate::{self, Translation};
use crate::words::set_be16;

/// What the program does with the frame once `receive` is done with it.
pub enum RxAction {
    /// Unchanged, to the stack (and the daemon's socket).
    Pass,
    /// Not WireGuard for us (uncounted yet): on an entry point (`entry`), the XDP program
    /// hands it to the forward program; otherwise it passes as `RxPassOther`.
    Other {
        entry: bool,
    },
    Drop,
    /// Rewritten to Ethernet + inner packet and marked: deliver on the tunnel interface.
    Local,
    /// Re-encrypted for another peer: transmit out of this interface.
    Transmit(u32),
    /// Rewritten for a LAN interface: redirect out of it.
    Lan(u32),
}

#[inline(always)]
fn pass(stat: Stat) -> RxAction {
    count(stat);
    RxAction::Pass
}

#[inline(always)]
fn drop(stat: Stat) -> RxAction {
    count(stat);
    RxAction::Drop
}

/// Handles one frame from the underlay; `ingress` is the interface it arrived on.
#[inline(always)]
pub unsafe fn receive<P: Packet>(ctx: *mut c_void, s: &mut Scratch, ingress: u32) -> RxAction {
    let Some(cfg) = config() else {
        return pass(Stat::Error);
    };
    let o = match unsafe { parse::outer::<P>(ctx, s, cfg.listen_port) } {
        Parsed::Data(o) => o,
        Parsed::Pass(Stat::RxPassOther) => {
            return RxAction::Other { entry: cfg.flags & CONFIG_ENTRY != 0 };
        }
        Parsed::Pass(stat) => return pass(stat),
        Parsed::Drop(stat) => return drop(stat),
    };
    let receiver = s.l4[3];
    let counter = s.l4[4] as u64 | (s.l4[5] as u64) << 32;
    let Some(slot) = rx_session_slot(receiver) else {
        return pass(Stat::RxPassUnknownIndex);
    };
    let Some(sess) = session(slot) else {
        return pass(Stat::RxPassUnknownIndex);
    };
    // SAFETY: aligned fields of a map value the daemon publishes state-last.
    let state = unsafe { read_volatile(&sess.state) };
    if unsafe { read_volatile(&sess.local_index) } != receiver {
        return pass(Stat::RxPassUnknownIndex);
    }
    if state & SESSION_RECV_VALID == 0 {
        return pass(Stat::RxPassToDaemon);
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let created = sess.created_ns;
    if now > created && now - created >= REJECT_AFTER_TIME_NS {
        return drop(Stat::RxDropExpired);
    }
    match sess.counters.replay.check(counter) {
        Verdict::Accepted => {}
        Verdict::Exhausted => return drop(Stat::RxDropExpired),
        _ => return drop(Stat::RxDropReplay),
    }
    let plaintext_len = o.plaintext_len();
    if plaintext_len > MAX_PLAINTEXT || !unsafe { P::prepare_handoff(ctx) } {
        return pass(Stat::RxPassToDaemon);
    }
    let payload = o.payload_off();
    crypto::begin(&mut s.crypt, &sess.recv_key, counter, payload, plaintext_len, plaintext_len);
    match unsafe { crypto::open::<P>(ctx, &mut s.crypt) } {
        Ok(true) => {}
        Ok(false) => return drop(Stat::RxDropAuth),
        Err(()) => return drop(Stat::Error),
    }
    match sess.counters.replay.accept(counter) {
        Verdict::Accepted => {}
        Verdict::Exhausted => return drop(Stat::RxDropExpired),
        _ => return drop(Stat::RxDropReplay),
    }
    let peer_slot = sess.peer;
    let Some(peer) = peer(peer_slot) else {
        return drop(Stat::Error);
    };
    activity::roam(peer, &s.rx, o.family, (s.l4[0] & 0xffff) as u16, ingress);
    activity::authenticated_rx(peer, now);
    if plaintext_len == 0 {
        activity::received(peer, o.msg_len);
        return drop(Stat::RxKeepalive);
    }
    activity::data_rx_started(peer, now);
    let Some(inner) = parse::inner(&s.crypt.head, plaintext_len) else {
        return drop(Stat::RxDropMalformed);
    };
    let (src, _) = parse::inner_addrs(&s.crypt.head, inner.family);
    let owner = allowed(inner.family, &src);
    // An entry peer brings in packets from anywhere: any source no ordinary peer owns.
    if owner != Some(peer_slot)
        && !(is_entry(peer) && owner.is_none_or(|o| crate::maps::peer(o).is_some_and(is_entry)))
    {
        return drop(Stat::RxDropSource);
    }
    activity::received(peer, o.msg_len);
    let outer_ds = parse::outer_dsfield(&s.rx, o.family);
    if unsafe {
        rewrite::decapsulate_ecn::<P>(ctx, &mut s.crypt.head, inner.family, outer_ds, payload)
    }
    .is_err()
    {
        return drop(Stat::Error);
    }
    if is_entry(peer) {
        reply_to::remember(s, inner.len, peer_slot, now);
    }
    let mut translation = Translation::None;
    if cfg.flags & CONFIG_ENTRY != 0 {
        match unsafe { translate::reply::<P>(ctx, s, inner.len, payload, now) } {
            Ok(t) => translation = t,
            Err(()) => return drop(Stat::Error),
        }
    }
    // A forwarded flow's reply had its MSS clamped with its translation.
    if inner.proto == IPPROTO_TCP && translation != Translation::Forwarded {
        match unsafe { mss::clamp_received::<P>(ctx, s, inner.len, payload) } {
            0 => {}
            1 => count(Stat::RxMssClamped),
            _ => return drop(Stat::Error),
        }
    }
    unsafe { deliver::<P>(ctx, s, cfg, &o, &inner, peer_slot, ingress, now, translation) }
}

/// Whether a peer is an entry point (`PEER_ENTRY`).
#[inline(always)]
fn is_entry(peer: &Peer) -> bool {
    // SAFETY: an aligned field of a live map value the daemon updates.
    let state = unsafe { read_volatile(&peer.state) };
    state & PEER_ENTRY != 0
}

/// Where a forwarded flow's reply, its source now the public address, leaves without the
/// stack: the interface the FIB routes it out of, if that is the one it came in on
/// (`ingress`: XDP_TX) or one the programs may redirect to; 0 for the stack, which forwards
/// it (the FIB lookup needs forwarding enabled on the TUN; the stack, for IPv4,
/// `accept_local` there too: the reply's source is now one of this host's addresses, which
/// it otherwise drops as martian). A subprogram of its own, so its locals do not grow the
/// receive program's frame (see `translate::reply`); the packet is `len` bytes, its first in
/// `s.crypt.head`.
#[inline(never)]
unsafe fn public_route(ctx: *mut c_void, s: &mut Scratch, len: u32, ingress: u32) -> u32 {
    let (Some(cfg), Some(inner)) = (config(), parse::inner(&s.crypt.head, len)) else {
        return 0;
    };
    if !rewrite::ttl_allows_forwarding(&s.crypt.head, inner.family) {
        return 0;
    }
    let (src, dst) = parse::inner_addrs(&s.crypt.head, inner.family);
    let ds = parse::inner_dsfield(&s.crypt.head, inner.family);
    let rc = unsafe {
        route::forward(ctx, &mut s.fib, inner.family, &src, &dst, ds, inner.len, cfg.tun_ifindex)
    };
    let out = s.fib.ifindex;
    if rc == FIB_SUCCESS && (out == ingress || (out != cfg.tun_ifindex && redirect_iface(out))) {
        out
    } else {
        0
    }
}

/// Routes the decrypted packet as the stack would for one received on the tunnel, and takes
/// the fast path when there is one. A translated reply of a forwarded flow leaves through
/// the public interface (`public_route`), one of a proxied connection goes up the stack to
/// the proxy; each is counted as translated.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn deliver<P: Packet>(
    ctx: *mut c_void,
    s: &mut Scratch,
    cfg: &Config,
    o: &Outer,
    inner: &Inner,
    peer_slot: u32,
    ingress: u32,
    now: u64,
    translation: Translation,
) -> RxAction {
    // Out of this interface without the stack (0: up the stack), and what counts the packet.
    let mut out = 0;
    let mut stat = Stat::RxDeliveredLocal;
    if translation == Translation::Forwarded {
        stat = Stat::EntryReplyTranslated;
        out = unsafe { public_route(ctx, s, inner.len, ingress) };
    } else if translation == Translation::Proxied {
        stat = Stat::ProxyTranslated;
    } else if cfg.flags & (CONFIG_HUB_FORWARD | CONFIG_LAN_REDIRECT) != 0
        && rewrite::ttl_allows_forwarding(&s.crypt.head, inner.family)
    {
        let (src, dst) = parse::inner_addrs(&s.crypt.head, inner.family);
        let ds = parse::inner_dsfield(&s.crypt.head, inner.family);
        let rc = unsafe {
            route::forward(
                ctx,
                &mut s.fib,
                inner.family,
                &src,
                &dst,
                ds,
                inner.len,
                cfg.tun_ifindex,
            )
        };
        let fib_out = s.fib.ifindex;
        if cfg.flags & CONFIG_HUB_FORWARD != 0
            && (rc == FIB_SUCCESS || rc == FIB_NO_NEIGH)
            && fib_out == cfg.tun_ifindex
        {
            if let Some(next_peer) = allowed(inner.family, &dst)
                && let Some(action) =
                    unsafe { hub::<P>(ctx, s, cfg, o, inner, next_peer, ingress, now) }
            {
                return action;
            }
        } else if cfg.flags & CONFIG_LAN_REDIRECT != 0
            && rc == FIB_SUCCESS
            && fib_out != cfg.tun_ifindex
            && redirect_iface(fib_out)
        {
            out = fib_out;
            stat = Stat::RxLanRedirected;
        }
    }
    if out != 0 {
        let action = if out == ingress { RxAction::Transmit(out) } else { RxAction::Lan(out) };
        return unsafe { lan::<P>(ctx, s, o, inner, action, stat) };
    }
    unsafe { local::<P>(ctx, s, o, inner, peer_slot, stat) }
}

/// Hub forwarding: the packet is for another peer. None when that peer cannot be sent to
/// from here (the packet then goes to the stack, which routes it into the tunnel, where the
/// TUN egress program or the daemon sends it).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn hub<P: Packet>(
    ctx: *mut c_void,
    s: &mut Scratch,
    cfg: &Config,
    o: &Outer,
    inner: &Inner,
    next_peer: u32,
    ingress: u32,
    now: u64,
) -> Option<RxAction> {
    let plan = unsafe {
        encap::reserve(
            ctx,
            s,
            next_peer,
            cfg,
            inner.len,
            now,
            ingress,
            encap::Handover::Direct,
            encap::OuterChecksum::Computed,
        )
    }
    .ok()?;
    let payload = o.payload_off();
    if unsafe { rewrite::decrement_ttl::<P>(ctx, &mut s.crypt.head, inner.family, payload) }
        .is_err()
    {
        return Some(drop(Stat::Error));
    }
    let ds = parse::inner_dsfield(&s.crypt.head, inner.family);
    let sent = unsafe {
        encap::encapsulate::<P>(
            ctx,
            s,
            &plan,
            cfg,
            payload,
            inner.len,
            o.family,
            ds,
            None,
            0,
            encap::OuterChecksum::Computed,
        )
    };
    Some(match sent {
        Ok(msg_len) => {
            activity::sent_data(plan.peer, msg_len, now);
            count(Stat::RxHubForwarded);
            RxAction::Transmit(plan.ifindex)
        }
        Err(_) => drop(Stat::Error),
    })
}

#[inline(always)]
fn ethertype(family: L3) -> u16 {
    match family {
        L3::V4 => ETH_P_IP,
        L3::V6 => ETH_P_IPV6,
    }
}

/// Cuts the frame down to Ethernet + inner packet (the Ethernet header to be rewritten);
/// `for_stack`: the frame goes up the stack (which trims what the IP length excludes).
#[inline(always)]
unsafe fn strip_to_inner<P: Packet>(
    ctx: *mut c_void,
    o: &Outer,
    inner: &Inner,
    for_stack: bool,
) -> bool {
    let eth = ETH_HEADER_LEN as u32;
    // Shrink the front first: TC checks the remaining length against the outer protocol's
    // minimum header, so the tail (padding, tag) stays until after.
    unsafe {
        P::resize_front(ctx, eth as i32 - o.payload_off() as i32, o.family, inner.family, false)
            && if for_stack {
                P::trim_for_stack(ctx, eth + inner.len)
            } else {
                P::set_len(ctx, eth + inner.len)
            }
    }
}

/// Out of another interface as the FIB lookup in `s.fib` routed the inner packet (a LAN
/// interface, or the public one for a forwarded flow's reply): TTL − 1, outer headers
/// stripped, Ethernet from the FIB; `action` sends it, `stat` counts it.
#[inline(always)]
unsafe fn lan<P: Packet>(
    ctx: *mut c_void,
    s: &mut Scratch,
    o: &Outer,
    inner: &Inner,
    action: RxAction,
    stat: Stat,
) -> RxAction {
    let payload = o.payload_off();
    if unsafe { rewrite::decrement_ttl::<P>(ctx, &mut s.crypt.head, inner.family, payload) }
        .is_err()
        || !unsafe { strip_to_inner::<P>(ctx, o, inner, false) }
    {
        return drop(Stat::Error);
    }
    // Ethernet: destination MAC (fib bytes 6..12), source MAC (fib bytes 0..6).
    let macs = s.fib.macs;
    let t = &mut s.tx;
    t[0] = macs[1] & 0xffff_0000;
    t[1] = macs[2];
    t[2] = macs[0];
    t[3] = macs[1] & 0xffff;
    set_be16(t, HDR_ETH + 12, ethertype(inner.family));
    // SAFETY: 14 bytes from byte 2 of the 96-byte buffer.
    if !unsafe { P::store(ctx, 0, (t.as_ptr() as *const u8).add(HDR_ETH), 14) } {
        return drop(Stat::Error);
    }
    count(stat);
    action
}

/// Local delivery: Ethernet (the frame's own addresses, the inner ethertype) + the inner
/// packet, marked for delivery on the tunnel interface; `stat` counts it.
#[inline(always)]
unsafe fn local<P: Packet>(
    ctx: *mut c_void,
    s: &mut Scratch,
    o: &Outer,
    inner: &Inner,
    peer_slot: u32,
    stat: Stat,
) -> RxAction {
    if !unsafe { strip_to_inner::<P>(ctx, o, inner, true) } {
        return drop(Stat::Error);
    }
    set_be16(&mut s.rx, HDR_ETH + 12, ethertype(inner.family));
    // SAFETY: 14 bytes from byte 2 of the 96-byte buffer.
    let rx = unsafe { (s.rx.as_ptr() as *const u8).add(HDR_ETH) };
    if !unsafe { P::store(ctx, 0, rx, 14) && P::mark_handoff(ctx, peer_slot) } {
        return drop(Stat::Error);
    }
    count(stat);
    RxAction::Local
}
