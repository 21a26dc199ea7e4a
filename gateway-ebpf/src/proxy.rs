//! The entry point's proxied (tls/http) connections on their way into the tunnel
//! (`entry_proxy_tun`: TC egress on the TUN, before the send program). The daemon's proxy
//! connects to the backend from its own tunnel address; `PROXY_FLOWS` says which client each
//! such connection stands for, and this program makes its packets carry the client's address
//! and port as their source, so the backend sees the client. The decrypted replies get the
//! proxy's address back in the receive program (`translate`).
//!
//! The program returns "next" (`TC_ACT_UNSPEC`, TCX's next) whatever it did: the send
//! program runs after it and seals the packet, or, without it, the packet goes on to the
//! daemon through the TUN fd. The edits go through `bpf_l3_csum_replace` and
//! `bpf_l4_csum_replace`, which know the skb's checksum state: TCP the proxy sends is
//! CHECKSUM_PARTIAL (the stack left the sum to the device, its field holding the
//! pseudo-header's), and the helpers then update only that seed, leaving the port to the
//! device's sum.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{__sk_buff, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_UNSPEC},
    helpers::generated::{bpf_l3_csum_replace, bpf_l4_csum_replace, bpf_skb_store_bytes},
};
use gateway_common::maps::{CONFIG_ENTRY, NAT_SOURCE, Stat};

use crate::flow::{self, nat_address};
use crate::maps::{config, count, proxy_flow};
use crate::nat::Transport;
use crate::packet::{L3, Packet, TcL3};
use crate::parse::{self, IPPROTO_TCP};
use crate::scratch::Scratch;
use crate::words::at_most;

/// Offset of the IPv4 header checksum.
const IPV4_CHECK: u32 = 10;

/// Rewrites the source of a proxied connection's packet (the skb starts at its IP header).
#[inline(always)]
pub unsafe fn steer(ctx: *mut c_void, s: &mut Scratch) -> i32 {
    let next = TC_ACT_UNSPEC;
    let Some(cfg) = config() else {
        return next;
    };
    if cfg.flags & CONFIG_ENTRY == 0 {
        return next;
    }
    let skb = ctx as *mut __sk_buff;
    // SAFETY: a field of the program's own context.
    let len = unsafe { (*skb).len };
    if len < 20 {
        return next;
    }
    let head_len = at_most::<64>(len);
    // SAFETY: head is 64 bytes.
    if !unsafe { TcL3::load(ctx, 0, s.crypt.head.as_mut_ptr() as *mut u8, head_len) } {
        return next;
    }
    let Some(inner) = parse::inner(&s.crypt.head, len) else {
        return next;
    };
    let Some(t) = Transport::of(&s.crypt.head, &inner) else {
        return next;
    };
    let head = &s.crypt.head;
    let (src, dst) = parse::inner_addrs(head, t.family);
    let ports = t.ports(head);
    flow::set_key(&mut s.flow.key, t.family, t.proto, ports, &src, &dst);
    let Some(nat) = proxy_flow(&s.flow.key) else {
        return next;
    };
    // SAFETY: a live map value the daemon writes whole.
    let (rewrite, port) = unsafe { ((*nat).rewrite, (*nat).port) };
    if rewrite != NAT_SOURCE {
        return next;
    }
    let client = nat_address(nat);
    let stat = if unsafe { rewrite_source(skb, &t, &src, &client, ports, port) } {
        Stat::ProxyTranslated
    } else {
        Stat::Error
    };
    count(stat);
    next
}

/// Sets the packet's source address to `to` and its source port to `port` (memory order),
/// the checksums through the helpers.
#[inline(always)]
unsafe fn rewrite_source(
    skb: *mut __sk_buff,
    t: &Transport,
    from: &[u32; 4],
    to: &[u32; 4],
    ports: u32,
    port: u16,
) -> bool {
    let l4 = 4 * t.l4 as u32;
    let (check, zero_means_none) =
        if t.proto == IPPROTO_TCP { (l4 + 16, 0) } else { (l4 + 6, BPF_F_MARK_MANGLED_0 as u64) };
    let (src_off, words) = match t.family {
        L3::V4 => (12u32, 1usize),
        L3::V6 => (8u32, 4usize),
    };
    let pseudo = BPF_F_PSEUDO_HDR as u64 | zero_means_none | 4;
    let mut i = 0;
    while i < words {
        let (old, new) = (from[i & 3] as u64, to[i & 3] as u64);
        // SAFETY: helpers on the program's own skb, offsets within the headers checked.
        unsafe {
            if t.family == L3::V4 && bpf_l3_csum_replace(skb, IPV4_CHECK, old, new, 4) != 0 {
                return false;
            }
            if bpf_l4_csum_replace(skb, check, old, new, pseudo) != 0 {
                return false;
            }
        }
        i += 1;
    }
    let old_port = (ports & 0xffff) as u64;
    // SAFETY: as above; the new address and port from the stack.
    unsafe {
        bpf_l4_csum_replace(skb, check, old_port, port as u64, zero_means_none | 2) == 0
            && bpf_skb_store_bytes(skb, src_off, to.as_ptr() as *const c_void, 4 * words as u32, 0)
                == 0
            && bpf_skb_store_bytes(skb, l4, &port as *const u16 as *const c_void, 2, 0) == 0
    }
}
