//! Masquerade: the host as an exit node for its peers (`gatewayd --masquerade OUTIF`).
//!
//! Two TC programs on OUTIF, an Ethernet interface (the skb starts at the Ethernet header):
//!
//! - `masq_out` (egress): IPv4 from a tunnel peer (its source in a peer's AllowedIPs, and not
//!   OUTIF's own address) that the stack forwards out of OUTIF leaves with OUTIF's address
//!   and a port of `Masquerade`'s range as its source; an ICMP echo request with an
//!   identifier of that range. A new flow's port comes from a hash of its inside flow, probed
//!   `MASQ_PROBES` times: a port is free towards a remote end unless a live mapping holds it
//!   (`MASQ_IN`'s entry names an inside flow whose `MASQ_OUT` entry still maps to it), so a
//!   timed-out mapping's port is reused without the daemon's help.
//! - `masq_in` (ingress, before the receive handoff): a reply whose destination is OUTIF's
//!   address and a mapped port gets the peer's address and port back and goes to the TUN's
//!   egress, where the send program seals it (or the daemon, through the TUN fd).
//!
//! Both directions keep the `MASQ_OUT` entry's state and time (`masq_timeout_ns`: TCP by
//! its handshake and FIN/RST, UDP, ICMP). The edits go through `bpf_l3_csum_replace` and
//! `bpf_l4_csum_replace`, which know the skb's checksum state (a forwarded GSO packet is
//! CHECKSUM_PARTIAL: only the pseudo-header's part of its TCP checksum is there to update).
//!
//! What is left alone, untouched: fragments, IP options, IPv6, other protocols (counted as
//! `MasqueradeUntranslated`), and anything not from a peer or not to a mapping.

use core::ffi::c_void;
use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    bindings::{__sk_buff, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::generated::{
        bpf_ktime_get_ns, bpf_l3_csum_replace, bpf_l4_csum_replace, bpf_redirect,
        bpf_skb_store_bytes,
    },
};
use gateway_common::maps::{
    FlowKey, IPPROTO_ICMP, MASQ_PROBES, MASQ_STATE_CLOSING, MASQ_STATE_ESTABLISHED,
    MASQ_STATE_TRANSITORY, MasqFlow, Masquerade, Stat, masq_expired,
};

use crate::flow::{self, stale};
use crate::maps::{
    allowed, config, count, masq_in, masq_out, masquerade, record_masq_in, record_masq_out,
};
use crate::packet::{L3, Packet, TcL2};
use crate::parse::{self, ETH_P_IP, IPPROTO_TCP, IPPROTO_UDP};
use crate::scratch::Scratch;
use crate::words::{at_most, byte};

/// The IPv4 header, after the Ethernet header.
const IP: u32 = 14;
/// Its checksum, source and destination.
const IP_CHECK: u32 = IP + 10;
const IP_SRC: u32 = IP + 12;
const IP_DST: u32 = IP + 16;
/// The transport header (no IP options: those packets are not translated).
const L4: u32 = IP + 20;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// What of a packet's transport the masquerade looks at.
struct Flow {
    proto: u8,
    /// The ports word as a `FlowKey` holds it (source port low, destination port high,
    /// memory order); ICMP echo: the identifier as the requester's port, the other 0.
    ports: u32,
    /// TCP flags (0 for the others).
    flags: u8,
}

/// The transport of an IPv4 packet loaded into `head` (from its IP header), if the
/// masquerade translates it: not a fragment, no options, TCP, UDP or ICMP echo of `echo`'s
/// type, all its translated fields within the packet.
#[inline(always)]
fn transport(head: &[u32; 16], len: u32, echo: u8) -> Option<Flow> {
    let inner = parse::inner(head, len)?;
    if inner.family != L3::V4 || inner.fragment || byte(head, 0) != 0x45 {
        return None;
    }
    match inner.proto {
        IPPROTO_TCP if inner.len >= 40 => {
            Some(Flow { proto: IPPROTO_TCP, ports: head[5], flags: byte(head, 33) })
        }
        IPPROTO_UDP if inner.len >= 28 => {
            Some(Flow { proto: IPPROTO_UDP, ports: head[5], flags: 0 })
        }
        IPPROTO_ICMP if inner.len >= 28 && byte(head, 20) == echo && byte(head, 21) == 0 => {
            let id = head[6] & 0xffff;
            let ports = if echo == ICMP_ECHO_REQUEST { id } else { id << 16 };
            Some(Flow { proto: IPPROTO_ICMP, ports, flags: 0 })
        }
        _ => None,
    }
}

/// Loads the first bytes of the IPv4 packet of an Ethernet frame into `s.crypt.head`; its
/// length, or None when the frame is not IPv4.
#[inline(always)]
unsafe fn load_ipv4(ctx: *mut c_void, s: &mut Scratch) -> Option<u32> {
    let skb = ctx as *mut __sk_buff;
    // SAFETY: fields of the program's own context.
    let (protocol, len) = unsafe { ((*skb).protocol, (*skb).len) };
    if protocol != (ETH_P_IP.to_be()) as u32 || len < IP + 20 {
        return None;
    }
    let len = len - IP;
    let n = at_most::<64>(len);
    // SAFETY: head holds 64 bytes, n ≤ 64.
    unsafe { TcL2::load(ctx, IP, s.crypt.head.as_mut_ptr() as *mut u8, n) }.then_some(len)
}

/// The state a mapping moves to on a packet with TCP `flags`, going `out` or coming back.
#[inline(always)]
fn next_state(proto: u8, state: u16, flags: u8, out: bool) -> u16 {
    if proto != IPPROTO_TCP {
        return if out { state } else { MASQ_STATE_ESTABLISHED };
    }
    if flags & (TCP_FIN | TCP_RST) != 0 {
        MASQ_STATE_CLOSING
    } else if !out && state == MASQ_STATE_TRANSITORY && flags & (TCP_SYN | TCP_ACK) != 0 {
        MASQ_STATE_ESTABLISHED
    } else {
        state
    }
}

/// Keeps a live mapping's state and time (its `MASQ_OUT` entry).
#[inline(always)]
fn touch(mapping: *mut MasqFlow, proto: u8, flags: u8, out: bool, now: u64) {
    // SAFETY: a live map value; concurrent writers store the same kind of values.
    unsafe {
        let state = read_volatile(&(*mapping).state);
        let next = next_state(proto, state, flags, out);
        if next != state {
            write_volatile(&mut (*mapping).state, next);
        }
        if next != state || stale(read_volatile(&(*mapping).last_seen_ns), now) {
            write_volatile(&mut (*mapping).last_seen_ns, now);
        }
    }
}

#[inline(always)]
fn set_masq(value: &mut MasqFlow, addr: u32, port: u16, state: u16, now: u64) {
    let w = value as *mut MasqFlow as *mut u32;
    // SAFETY: MasqFlow is 16 bytes: [addr] [port, state] [last_seen (8 bytes)].
    unsafe {
        write_volatile(w, addr);
        write_volatile(w.add(1), port as u32 | (state as u32) << 16);
        write_volatile(&mut value.last_seen_ns, now);
    }
}

/// The `MASQ_IN` key of a mapping: the reply from `remote` to `public`:`port` (memory order).
#[inline(always)]
fn set_reply_key(key: &mut FlowKey, f: &Flow, remote: u32, public: u32, port: u16) {
    // The inside flow's destination port is the reply's source port (ICMP: none).
    let ports = (f.ports >> 16) | (port as u32) << 16;
    flow::set_key(key, L3::V4, f.proto, ports, &[remote, 0, 0, 0], &[public, 0, 0, 0]);
}

/// The `MASQ_OUT` key of the inside flow from `inside`:`port` to `remote`, whose port on
/// the remote end is the high half of `remote_port` (memory order; ICMP: 0).
#[inline(always)]
fn set_inside_key(
    key: &mut FlowKey,
    proto: u8,
    inside: u32,
    port: u16,
    remote: u32,
    remote_port: u32,
) {
    let ports = port as u32 | (remote_port & 0xffff_0000);
    flow::set_key(key, L3::V4, proto, ports, &[inside, 0, 0, 0], &[remote, 0, 0, 0]);
}

/// A 32-bit mix (lowbias32): neighbouring flows land on unrelated ports.
#[inline(always)]
fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^ (h >> 16)
}

/// TC egress on OUTIF.
#[inline(always)]
pub unsafe fn outbound(ctx: *mut c_void, s: &mut Scratch) -> i32 {
    let next = TC_ACT_UNSPEC;
    let Some(m) = masquerade() else {
        return next;
    };
    let public = u32::from_ne_bytes(m.addr);
    if m.ifindex == 0 || m.port_count == 0 {
        return next;
    }
    let Some(len) = (unsafe { load_ipv4(ctx, s) }) else {
        return next;
    };
    let head = &s.crypt.head;
    let (src, dst) = (head[3], head[4]);
    if src == public || allowed(L3::V4, &[src, 0, 0, 0]).is_none() {
        return next;
    }
    let Some(f) = transport(head, len, ICMP_ECHO_REQUEST) else {
        count(Stat::MasqueradeUntranslated);
        return next;
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    flow::set_key(&mut s.flow.key, L3::V4, f.proto, f.ports, &[src, 0, 0, 0], &[dst, 0, 0, 0]);
    let mut port = 0u16;
    if let Some(mapping) = masq_out(&s.flow.key) {
        // SAFETY: a live map value.
        let (state, last_seen, p) = unsafe {
            (
                read_volatile(&(*mapping).state),
                read_volatile(&(*mapping).last_seen_ns),
                (*mapping).port,
            )
        };
        if !masq_expired(f.proto, state, last_seen, now) {
            touch(mapping, f.proto, f.flags, true, now);
            port = p;
        }
    }
    if port == 0 {
        port = allocate(s, m, &f, src, dst, now);
        if port == 0 {
            count(Stat::MasqueradeNoPort);
            return next;
        }
        let state = next_state(f.proto, MASQ_STATE_TRANSITORY, f.flags, true);
        set_masq(&mut s.flow.masq, public, port, state, now);
        if !record_masq_out(&s.flow.key, &s.flow.masq) {
            count(Stat::Error);
            return next;
        }
    }
    let skb = ctx as *mut __sk_buff;
    let stat = if unsafe { rewrite(skb, &f, IP_SRC, src, public, port, 0) } {
        Stat::MasqueradeOut
    } else {
        Stat::Error
    };
    count(stat);
    next
}

/// A port (memory order) for a new inside flow from `inside` to `remote`, its `MASQ_IN`
/// entry made; 0 when every probed port is taken.
#[inline(always)]
fn allocate(s: &mut Scratch, m: &Masquerade, f: &Flow, inside: u32, remote: u32, now: u64) -> u16 {
    let public = u32::from_ne_bytes(m.addr);
    let first = m.first_port as u32;
    let count = m.port_count as u32;
    let hash = mix(inside ^ mix(remote ^ mix(f.ports ^ f.proto as u32)));
    set_masq(&mut s.flow.masq, inside, f.ports as u16, 0, now);
    let mut i = 0;
    while i < MASQ_PROBES {
        // checked_rem: no division-by-zero panic path for the verifier to refuse (the
        // callers never pass an empty range).
        let Some(offset) = hash.wrapping_add(i).checked_rem(count) else {
            return 0;
        };
        let port = ((first + offset) as u16).swap_bytes();
        let [reply, holder] = &mut s.flow.masq_keys;
        set_reply_key(reply, f, remote, public, port);
        if record_masq_in(reply, &s.flow.masq, true) {
            return port;
        }
        // Taken: by a live mapping, or by one that timed out (or was evicted) and is free.
        let live = match masq_in(reply) {
            Some(held) => {
                // SAFETY: a live map value.
                let (addr, held_port) = unsafe { (read_volatile(&(*held).addr), (*held).port) };
                let holder_addr = u32::from_ne_bytes(addr);
                set_inside_key(holder, f.proto, holder_addr, held_port, remote, f.ports);
                masq_out(holder).is_some_and(|mapping| {
                    // SAFETY: a live map value.
                    let (p, state, last_seen) = unsafe {
                        ((*mapping).port, (*mapping).state, read_volatile(&(*mapping).last_seen_ns))
                    };
                    p == port && !masq_expired(f.proto, state, last_seen, now)
                })
            }
            None => false,
        };
        if !live && record_masq_in(reply, &s.flow.masq, false) {
            return port;
        }
        i += 1;
    }
    0
}

/// TC ingress on OUTIF, before the receive handoff.
#[inline(always)]
pub unsafe fn inbound(ctx: *mut c_void, s: &mut Scratch) -> i32 {
    let next = TC_ACT_UNSPEC;
    let skb = ctx as *mut __sk_buff;
    // Frames the XDP receive program hands over carry metadata: decrypted packets, not ours.
    // SAFETY: fields of the program's own context.
    if unsafe { (*skb).data_meta != (*skb).data } {
        return next;
    }
    let (Some(m), Some(cfg)) = (masquerade(), config()) else {
        return next;
    };
    let public = u32::from_ne_bytes(m.addr);
    if m.ifindex == 0 || m.port_count == 0 {
        return next;
    }
    let Some(len) = (unsafe { load_ipv4(ctx, s) }) else {
        return next;
    };
    let head = &s.crypt.head;
    let (remote, dst) = (head[3], head[4]);
    if dst != public {
        return next;
    }
    let Some(f) = transport(head, len, ICMP_ECHO_REPLY) else {
        return next;
    };
    let port = (f.ports >> 16) as u16;
    if (port.swap_bytes().wrapping_sub(m.first_port)) >= m.port_count {
        return next;
    }
    let ttl_proto = head[2] & 0xffff;
    if ttl_proto & 0xff <= 1 {
        // The stack answers "time exceeded".
        return next;
    }
    flow::set_key(
        &mut s.flow.key,
        L3::V4,
        f.proto,
        f.ports,
        &[remote, 0, 0, 0],
        &[public, 0, 0, 0],
    );
    let Some(held) = masq_in(&s.flow.key) else {
        return next;
    };
    // SAFETY: a live map value.
    let (inside, inside_port) =
        unsafe { (u32::from_ne_bytes(read_volatile(&(*held).addr)), (*held).port) };
    let holder = &mut s.flow.masq_keys[1];
    // The reply's source port is the inside flow's destination port.
    set_inside_key(holder, f.proto, inside, inside_port, remote, f.ports << 16);
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(mapping) = masq_out(holder) else {
        return next;
    };
    // SAFETY: a live map value.
    let (mapped, state, last_seen) =
        unsafe { ((*mapping).port, (*mapping).state, read_volatile(&(*mapping).last_seen_ns)) };
    if mapped != port || masq_expired(f.proto, state, last_seen, now) {
        return next;
    }
    touch(mapping, f.proto, f.flags, false, now);
    // SAFETY: helpers on the program's own skb.
    let done = unsafe {
        rewrite(skb, &f, IP_DST, dst, inside, inside_port, 16) && decrement_ttl(skb, ttl_proto)
    };
    if !done {
        count(Stat::Error);
        return TC_ACT_SHOT;
    }
    count(Stat::MasqueradeIn);
    // The TUN has no MAC header: the redirect strips the Ethernet header.
    // SAFETY: a helper taking plain values.
    unsafe { bpf_redirect(cfg.tun_ifindex, 0) as i32 }
}

/// Routers decrement the TTL of what they forward; the packet skips the stack's forwarding.
/// `ttl_proto`: the header's TTL and protocol bytes (memory order, TTL > 1).
#[inline(always)]
unsafe fn decrement_ttl(skb: *mut __sk_buff, ttl_proto: u32) -> bool {
    let new = ttl_proto - 1;
    let ttl = new as u8;
    // SAFETY: helpers on the caller's skb; the IPv4 header is there.
    unsafe {
        bpf_l3_csum_replace(skb, IP_CHECK, ttl_proto as u64, new as u64, 2) == 0
            && bpf_skb_store_bytes(skb, IP + 8, &ttl as *const u8 as *const c_void, 1, 0) == 0
    }
}

/// Replaces the address at `addr_off` (`IP_SRC`/`IP_DST`) `from` → `to` and the port (ICMP:
/// the identifier) that sits in the `shift` half of `f`'s ports word (0: source, 16:
/// destination) with `port`, all memory order, keeping the IPv4 and transport checksums
/// valid.
#[inline(always)]
unsafe fn rewrite(
    skb: *mut __sk_buff,
    f: &Flow,
    addr_off: u32,
    from: u32,
    to: u32,
    port: u16,
    shift: u32,
) -> bool {
    let (check, pseudo, zero_means_none, port_off) = match f.proto {
        IPPROTO_TCP => (L4 + 16, BPF_F_PSEUDO_HDR as u64, 0, L4 + shift / 8),
        IPPROTO_UDP => {
            (L4 + 6, BPF_F_PSEUDO_HDR as u64, BPF_F_MARK_MANGLED_0 as u64, L4 + shift / 8)
        }
        // ICMP: the identifier; no pseudo-header in its checksum.
        _ => (L4 + 2, 0, 0, L4 + 4),
    };
    let old_port = (f.ports >> shift) & 0xffff;
    let addr = to;
    // SAFETY: helpers on the caller's skb; offsets within the headers `transport` checked.
    unsafe {
        bpf_l3_csum_replace(skb, IP_CHECK, from as u64, to as u64, 4) == 0
            && (pseudo == 0
                || bpf_l4_csum_replace(
                    skb,
                    check,
                    from as u64,
                    to as u64,
                    pseudo | zero_means_none | 4,
                ) == 0)
            && bpf_l4_csum_replace(skb, check, old_port as u64, port as u64, zero_means_none | 2)
                == 0
            && bpf_skb_store_bytes(skb, addr_off, &addr as *const u32 as *const c_void, 4, 0) == 0
            && bpf_skb_store_bytes(skb, port_off, &port as *const u16 as *const c_void, 2, 0) == 0
    }
}
