//! One interface over the three kinds of packet the programs handle, so the receive and send
//! logic is written once: XDP frames (possibly multi-buffer), skbs at L2 (TC on an Ethernet
//! underlay or LAN interface) and skbs at L3 (TC egress on the TUN, which starts at the IP
//! header). Payload bytes go through the load/store helpers, which work across fragments.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        __sk_buff, BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_DECAP_L3_IPV6,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, xdp_md,
    },
    helpers::generated as h,
};
use gateway_common::{
    maps::{XDP_HANDOFF_MAGIC, XdpHandoff},
    wire::{ETH_HEADER_LEN, IPV4_HEADER_LEN, IPV6_HEADER_LEN},
};

use crate::parse::{ETH_P_IP, ETH_P_IPV6};

/// Which outer network protocol a frame carries after a header resize: lets TC keep
/// `skb->protocol` in step with the bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    V4,
    V6,
}

pub trait Packet {
    unsafe fn load(ctx: *mut c_void, off: u32, dst: *mut u8, len: u32) -> bool;
    unsafe fn store(ctx: *mut c_void, off: u32, src: *const u8, len: u32) -> bool;
    unsafe fn len(ctx: *mut c_void) -> u32;
    /// Makes the packet `new_len` bytes long at the tail; grown bytes are zero.
    unsafe fn set_len(ctx: *mut c_void, new_len: u32) -> bool;
    /// Grows (`delta > 0`) or shrinks the headers in front of the payload by `delta` bytes.
    /// Payload bytes keep their order and move by `delta`; afterwards the first 14 bytes (the
    /// Ethernet header) are to be rewritten by the caller. `from`/`to` name the outer network
    /// protocol before and after, for the skb's metadata; `encap` says the new headers wrap
    /// the old payload (a tunnel header is being added) rather than uncovering it.
    unsafe fn resize_front(ctx: *mut c_void, delta: i32, from: L3, to: L3, encap: bool) -> bool;

    /// Cuts the frame to `new_len` bytes before it goes up the stack. Bytes past the IP
    /// packet's own length may be left in place when cutting them is unsafe (the stack trims
    /// to the IP length anyway).
    #[inline(always)]
    unsafe fn trim_for_stack(ctx: *mut c_void, new_len: u32) -> bool {
        unsafe { Self::set_len(ctx, new_len) }
    }

    /// Reserves what local delivery will need, before the frame is changed; false if the
    /// frame cannot be delivered locally (it is then left to the stack unchanged).
    #[inline(always)]
    unsafe fn prepare_handoff(_ctx: *mut c_void) -> bool {
        true
    }

    /// Marks a frame for local delivery on the tunnel interface.
    #[inline(always)]
    unsafe fn mark_handoff(_ctx: *mut c_void, _peer: u32) -> bool {
        true
    }
}

pub struct Xdp;

impl Packet for Xdp {
    #[inline(always)]
    unsafe fn load(ctx: *mut c_void, off: u32, dst: *mut u8, len: u32) -> bool {
        unsafe { h::bpf_xdp_load_bytes(ctx as *mut xdp_md, off, dst as *mut c_void, len) == 0 }
    }
    #[inline(always)]
    unsafe fn store(ctx: *mut c_void, off: u32, src: *const u8, len: u32) -> bool {
        unsafe { h::bpf_xdp_store_bytes(ctx as *mut xdp_md, off, src as *mut c_void, len) == 0 }
    }
    #[inline(always)]
    unsafe fn len(ctx: *mut c_void) -> u32 {
        unsafe { h::bpf_xdp_get_buff_len(ctx as *mut xdp_md) as u32 }
    }
    #[inline(always)]
    unsafe fn set_len(ctx: *mut c_void, new_len: u32) -> bool {
        let cur = unsafe { Self::len(ctx) };
        let delta = new_len.wrapping_sub(cur) as i32;
        delta == 0 || unsafe { h::bpf_xdp_adjust_tail(ctx as *mut xdp_md, delta) == 0 }
    }
    #[inline(always)]
    unsafe fn resize_front(ctx: *mut c_void, delta: i32, _: L3, _: L3, _: bool) -> bool {
        delta == 0 || unsafe { h::bpf_xdp_adjust_head(ctx as *mut xdp_md, -delta) == 0 }
    }

    /// Shrinking a multi-buffer frame's fragments before XDP_PASS leaves the skb that veth
    /// and generic XDP build from it with a stale length (they update `data_len` from the
    /// fragments but `len` only for the linear part), and the stack then drops the packet.
    /// So the tail is cut only when the frame is linear.
    #[inline(always)]
    unsafe fn trim_for_stack(ctx: *mut c_void, new_len: u32) -> bool {
        let xdp = ctx as *mut xdp_md;
        // SAFETY: fields of the program's own context, and a helper.
        let (linear, total) =
            unsafe { ((*xdp).data_end - (*xdp).data, h::bpf_xdp_get_buff_len(xdp) as u32) };
        total > linear || unsafe { Self::set_len(ctx, new_len) }
    }

    /// XDP hands frames to the TC ingress program through the metadata area in front of the
    /// frame (the stack keeps it as skb metadata). The area is reserved and zeroed before
    /// anything else changes, so a driver without metadata support costs nothing but the
    /// fast path, and a frame passed for another reason carries no stale marker.
    #[inline(always)]
    unsafe fn prepare_handoff(ctx: *mut c_void) -> bool {
        let xdp = ctx as *mut xdp_md;
        unsafe {
            if h::bpf_xdp_adjust_meta(xdp, -(size_of::<XdpHandoff>() as i32)) != 0 {
                return false;
            }
            write_handoff(xdp, XdpHandoff { magic: 0, peer: 0 })
        }
    }

    #[inline(always)]
    unsafe fn mark_handoff(ctx: *mut c_void, peer: u32) -> bool {
        unsafe { write_handoff(ctx as *mut xdp_md, XdpHandoff { magic: XDP_HANDOFF_MAGIC, peer }) }
    }
}

/// Metadata of this length on a frame `wg_rx_handoff` sees means "into the tunnel": the
/// frame is an IP packet (behind its Ethernet header) to be sent as if the stack had routed it
/// into the TUN (see `entry`). `XdpHandoff`'s length means local delivery; any other length,
/// nothing. Only the length says it (see `wg_rx_handoff`).
pub const TUNNEL_HANDOFF_LEN: u32 = 4;
const _: () = assert!(TUNNEL_HANDOFF_LEN as usize != size_of::<XdpHandoff>());

impl Xdp {
    /// Marks a frame with no metadata yet for the tunnel's egress (`TUNNEL_HANDOFF_LEN`);
    /// false when the driver keeps no metadata.
    #[inline(always)]
    pub unsafe fn mark_for_tunnel(ctx: *mut c_void) -> bool {
        let xdp = ctx as *mut xdp_md;
        // SAFETY: a helper on the program's own frame, then direct access to the area it
        // made, bounds-checked against `data` as the verifier requires.
        unsafe {
            if h::bpf_xdp_adjust_meta(xdp, -(TUNNEL_HANDOFF_LEN as i32)) != 0 {
                return false;
            }
            let meta = (*xdp).data_meta as usize;
            if meta + TUNNEL_HANDOFF_LEN as usize > (*xdp).data as usize {
                return false;
            }
            *(meta as *mut u32) = 0;
        }
        true
    }
}

#[inline(always)]
unsafe fn write_handoff(xdp: *mut xdp_md, value: XdpHandoff) -> bool {
    // SAFETY: direct packet access, bounds-checked against `data` as the verifier requires.
    unsafe {
        let meta = (*xdp).data_meta as usize;
        let data = (*xdp).data as usize;
        if meta + size_of::<XdpHandoff>() > data {
            return false;
        }
        let p = meta as *mut XdpHandoff;
        (*p).magic = value.magic;
        (*p).peer = value.peer;
    }
    true
}

#[inline(always)]
unsafe fn skb_load(ctx: *mut c_void, off: u32, dst: *mut u8, len: u32) -> bool {
    unsafe { h::bpf_skb_load_bytes(ctx as *const c_void, off, dst as *mut c_void, len) == 0 }
}
#[inline(always)]
unsafe fn skb_store(ctx: *mut c_void, off: u32, src: *const u8, len: u32) -> bool {
    unsafe { h::bpf_skb_store_bytes(ctx as *mut __sk_buff, off, src as *const c_void, len, 0) == 0 }
}
#[inline(always)]
unsafe fn skb_len(ctx: *mut c_void) -> u32 {
    unsafe { (*(ctx as *mut __sk_buff)).len }
}
#[inline(always)]
unsafe fn skb_set_len(ctx: *mut c_void, new_len: u32) -> bool {
    new_len == unsafe { skb_len(ctx) }
        || unsafe { h::bpf_skb_change_tail(ctx as *mut __sk_buff, new_len, 0) == 0 }
}

/// `bpf_skb_adjust_room` flags that keep `skb->protocol` right when the outer family
/// changes, and mark a grown header as an encapsulation.
#[inline(always)]
fn adjust_room_flags(delta: i32, from: L3, to: L3, encap: bool) -> u64 {
    let mut flags = 0u64;
    if delta > 0 && encap {
        flags |= (BPF_F_ADJ_ROOM_ENCAP_L4_UDP
            | match to {
                L3::V4 => BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
                L3::V6 => BPF_F_ADJ_ROOM_ENCAP_L3_IPV6,
            }) as u64;
    } else if delta < 0 && from != to {
        flags |= match to {
            L3::V4 => BPF_F_ADJ_ROOM_DECAP_L3_IPV4,
            L3::V6 => BPF_F_ADJ_ROOM_DECAP_L3_IPV6,
        } as u64;
    } else if delta > 0 && from != to {
        // Growing from IPv4 to IPv6 outer headers (hub forwarding between families): the
        // encapsulation flags are the only way to switch skb->protocol while growing.
        flags |= (BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L3_IPV6) as u64;
    }
    flags
}

/// TC at L2 (ingress on an Ethernet interface): the skb starts at the Ethernet header.
pub struct TcL2;

impl Packet for TcL2 {
    #[inline(always)]
    unsafe fn load(ctx: *mut c_void, off: u32, dst: *mut u8, len: u32) -> bool {
        unsafe { skb_load(ctx, off, dst, len) }
    }
    #[inline(always)]
    unsafe fn store(ctx: *mut c_void, off: u32, src: *const u8, len: u32) -> bool {
        unsafe { skb_store(ctx, off, src, len) }
    }
    #[inline(always)]
    unsafe fn len(ctx: *mut c_void) -> u32 {
        unsafe { skb_len(ctx) }
    }
    #[inline(always)]
    unsafe fn set_len(ctx: *mut c_void, new_len: u32) -> bool {
        unsafe { skb_set_len(ctx, new_len) }
    }
    #[inline(always)]
    unsafe fn resize_front(ctx: *mut c_void, delta: i32, from: L3, to: L3, encap: bool) -> bool {
        // BPF_ADJ_ROOM_MAC inserts or removes right after the Ethernet header, which stays.
        delta == 0
            || unsafe {
                h::bpf_skb_adjust_room(
                    ctx as *mut __sk_buff,
                    delta,
                    BPF_ADJ_ROOM_MAC,
                    adjust_room_flags(delta, from, to, encap),
                ) == 0
            }
    }
}

/// TC at L3 (egress on the TUN): the skb starts at the IP header and has no room for an
/// Ethernet header until one is pushed with `bpf_skb_change_head`.
pub struct TcL3;

impl Packet for TcL3 {
    #[inline(always)]
    unsafe fn load(ctx: *mut c_void, off: u32, dst: *mut u8, len: u32) -> bool {
        unsafe { skb_load(ctx, off, dst, len) }
    }
    #[inline(always)]
    unsafe fn store(ctx: *mut c_void, off: u32, src: *const u8, len: u32) -> bool {
        unsafe { skb_store(ctx, off, src, len) }
    }
    #[inline(always)]
    unsafe fn len(ctx: *mut c_void) -> u32 {
        unsafe { skb_len(ctx) }
    }
    #[inline(always)]
    unsafe fn set_len(ctx: *mut c_void, new_len: u32) -> bool {
        unsafe { skb_set_len(ctx, new_len) }
    }
    /// The tunnel headers go in front of the inner packet (mac_len is 0, so
    /// BPF_ADJ_ROOM_MAC inserts or removes at offset 0), then an Ethernet header is pushed in
    /// front of them. With `encap`, only growth: the skb is marked as an encapsulation. Without
    /// (a frame whose outer checksum the device completes, see `partial`), it stays a plain
    /// packet, so the device checksums it as UDP; the family then changes through
    /// `bpf_skb_change_proto`, which resizes by the difference of the IP headers itself.
    #[inline(always)]
    unsafe fn resize_front(ctx: *mut c_void, delta: i32, from: L3, to: L3, encap: bool) -> bool {
        let skb = ctx as *mut __sk_buff;
        let mut tunnel = delta - ETH_HEADER_LEN as i32;
        if encap {
            return tunnel > 0
                && unsafe {
                    h::bpf_skb_adjust_room(
                        skb,
                        tunnel,
                        BPF_ADJ_ROOM_MAC,
                        adjust_room_flags(tunnel, from, to, true),
                    ) == 0
                        && h::bpf_skb_change_head(skb, ETH_HEADER_LEN as u32, 0) == 0
                };
        }
        if from != to {
            let (protocol, grown) = match to {
                L3::V4 => (ETH_P_IP, -((IPV6_HEADER_LEN - IPV4_HEADER_LEN) as i32)),
                L3::V6 => (ETH_P_IPV6, (IPV6_HEADER_LEN - IPV4_HEADER_LEN) as i32),
            };
            if unsafe { h::bpf_skb_change_proto(skb, protocol.to_be(), 0) } != 0 {
                return false;
            }
            tunnel -= grown;
        }
        unsafe {
            (tunnel == 0 || h::bpf_skb_adjust_room(skb, tunnel, BPF_ADJ_ROOM_MAC, 0) == 0)
                && h::bpf_skb_change_head(skb, ETH_HEADER_LEN as u32, 0) == 0
        }
    }
}
