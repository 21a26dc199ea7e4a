//! FIB lookups: where an inner packet would be routed (the tunnel, a LAN interface, this
//! host), and how to reach a peer's endpoint (egress interface, MAC addresses, source).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_OUTPUT, BPF_FIB_LOOKUP_SRC,
    },
    helpers::generated::bpf_fib_lookup,
};
use gateway_common::maps::{AF_INET, AF_INET6, Endpoint};

use crate::packet::L3;
use crate::parse::IPPROTO_UDP;
use crate::scratch::FibParams;
use crate::words::{copy, zero};

pub const FIB_SUCCESS: i64 = BPF_FIB_LKUP_RET_SUCCESS as i64;
/// Forwarding is off on the interface the lookup starts from (checked even for output
/// lookups), and nothing was looked up.
pub const FIB_FWD_DISABLED: i64 = BPF_FIB_LKUP_RET_FWD_DISABLED as i64;
pub const FIB_NO_NEIGH: i64 = BPF_FIB_LKUP_RET_NO_NEIGH as i64;
pub const FIB_FRAG_NEEDED: i64 = BPF_FIB_LKUP_RET_FRAG_NEEDED as i64;

#[inline(always)]
fn family_code(family: L3) -> u8 {
    match family {
        L3::V4 => AF_INET as u8,
        L3::V6 => AF_INET6 as u8,
    }
}

#[inline(always)]
unsafe fn lookup(ctx: *mut c_void, fib: &mut FibParams, flags: u32) -> i64 {
    // SAFETY: FibParams has the kernel's layout and size.
    unsafe {
        bpf_fib_lookup(
            ctx,
            fib as *mut FibParams as *mut _,
            core::mem::size_of::<FibParams>() as i32,
            flags,
        )
    }
}

/// Routes a packet as if it had been received on `ifindex` (the forwarding decision the
/// stack would make). `tot_len` enables the MTU check.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn forward(
    ctx: *mut c_void,
    fib: &mut FibParams,
    family: L3,
    src: &[u32; 4],
    dst: &[u32; 4],
    dsfield: u8,
    tot_len: u32,
    ifindex: u32,
) -> i64 {
    fib.family = family_code(family);
    fib.l4_protocol = 0;
    fib.sport = 0;
    fib.dport = 0;
    fib.tot_len = tot_len as u16;
    fib.ifindex = ifindex;
    fib.tos = match family {
        L3::V4 => dsfield as u32,
        L3::V6 => 0,
    };
    copy(&mut fib.src, src);
    copy(&mut fib.dst, dst);
    fib.tbid = 0;
    zero(&mut fib.macs);
    unsafe { lookup(ctx, fib, 0) }
}

/// Routes an outer packet to a peer's endpoint. With the interface the peer was last heard
/// on, as a local output route through it; without, as forwarded from `fallback_ifindex`.
/// Without a known local address, the FIB picks the source (`BPF_FIB_LOOKUP_SRC`).
#[inline(always)]
pub unsafe fn to_endpoint(
    ctx: *mut c_void,
    fib: &mut FibParams,
    endpoint: &Endpoint,
    local_port: u16,
    tot_len: u32,
    mark: u32,
    fallback_ifindex: u32,
) -> i64 {
    let addr = endpoint.addr.as_ptr() as *const [u32; 4];
    let local = endpoint.local.as_ptr() as *const [u32; 4];
    // SAFETY: Endpoint is repr(C) with addr and local 4-byte aligned at offsets 8 and 24.
    let (addr, local) = unsafe { (&*addr, &*local) };
    let v4 = endpoint.family == AF_INET;
    fib.family = if v4 { AF_INET as u8 } else { AF_INET6 as u8 };
    fib.l4_protocol = IPPROTO_UDP;
    fib.sport = local_port;
    fib.dport = endpoint.port;
    fib.tot_len = tot_len as u16;
    fib.tos = 0;
    let mut flags = 0;
    copy(&mut fib.src, local);
    copy(&mut fib.dst, addr);
    let unspecified =
        if v4 { local[0] == 0 } else { local[0] | local[1] | local[2] | local[3] == 0 };
    if unspecified {
        flags |= BPF_FIB_LOOKUP_SRC;
    }
    if endpoint.ifindex != 0 {
        fib.ifindex = endpoint.ifindex;
        flags |= BPF_FIB_LOOKUP_OUTPUT;
    } else {
        fib.ifindex = fallback_ifindex;
    }
    fib.tbid = 0;
    zero(&mut fib.macs);
    fib.macs[0] = mark;
    unsafe { lookup(ctx, fib, flags) }
}
