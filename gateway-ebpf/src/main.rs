//! The data-plane programs. See docs/ARCHITECTURE.md, "Packet paths".
//!
//! | program | hook | does |
//! |---|---|---|
//! | `wg_rx_xdp` | XDP (frags) on the underlay | receive: decrypt, deliver/forward |
//! | `wg_rx_handoff` | TC ingress on an underlay with `wg_rx_xdp` | hand marked frames to the TUN |
//! | `wg_rx_tc` | TC ingress on an underlay without XDP | receive, on skbs |
//! | `wg_tx_tun` | TC egress on the TUN | send what the stack routes into the tunnel |
//! | `wg_tx_lan` | XDP (frags) on LAN interfaces | send forwarded LAN traffic before the stack |
//! | `entry_forward` | XDP (frags), tail-called by `wg_rx_xdp` | an entry point's tcp/udp forwards |
//! | `entry_proxy_tun` | TC egress on the TUN, before `wg_tx_tun` | proxied connections: the client's source |
//! | `masq_out` | TC egress on `--masquerade OUTIF` | peers' traffic leaves with OUTIF's address |
//! | `masq_in` | TC ingress on OUTIF, first | replies back to the peers, into the tunnel |
//! | `xdp_pass` | XDP | nothing (veth peers need a program to receive XDP frames) |
#![no_std]
#![no_main]

mod activity;
mod crypto;
mod csum;
mod encap;
mod entry;
mod flow;
mod maps;
mod masquerade;
mod mss;
mod nat;
mod packet;
mod parse;
mod partial;
mod proxy;
mod reply_to;
mod rewrite;
mod route;
mod rx;
mod scratch;
mod translate;
mod tx;
mod words;

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_INGRESS, TC_ACT_OK, TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    helpers::generated::bpf_redirect,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use gateway_common::maps::{Stat, XdpHandoff};

use crate::maps::{SCRATCH_TC_EGRESS, SCRATCH_TC_INGRESS, SCRATCH_XDP, config, count, scratch};
use crate::packet::{TUNNEL_HANDOFF_LEN, TcL2, Xdp};
use crate::rx::RxAction;

#[xdp(frags)]
pub fn wg_rx_xdp(ctx: XdpContext) -> u32 {
    let Some(s) = scratch(SCRATCH_XDP) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: the program's own context.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    match unsafe { rx::receive::<Xdp>(ctx.as_ptr(), s, ingress) } {
        RxAction::Pass | RxAction::Local => xdp_action::XDP_PASS,
        RxAction::Other { entry } => {
            if entry {
                // Returns only when the forward program is not in its slot.
                unsafe { maps::tail_call_entry_forward(&ctx) };
            }
            count(Stat::RxPassOther);
            xdp_action::XDP_PASS
        }
        RxAction::Drop => xdp_action::XDP_DROP,
        RxAction::Transmit(ifindex) => tx::transmit(ifindex, ingress),
        RxAction::Lan(ifindex) => maps::redirect_to_iface(ifindex).unwrap_or(xdp_action::XDP_DROP),
    }
}

/// Frames `wg_rx_xdp` decrypted for local delivery arrive here with an `XdpHandoff` in their
/// metadata: redirecting them to the TUN's ingress makes the stack see them as received on
/// the tunnel interface. Frames the entry point's forward program translated but could not
/// seal arrive with `TUNNEL_HANDOFF_LEN` bytes of metadata: redirected to the TUN's egress,
/// they go where packets the stack routes into the tunnel go (the send program, else the
/// daemon through the TUN fd; XDP cannot redirect to an L3 TUN itself). Everything else
/// passes untouched.
///
/// The signal is the metadata's length, not its content: with generic XDP the stack places
/// the metadata relative to the network header where native XDP places it relative to the
/// Ethernet header, so the content is only where the program wrote it in native mode. The
/// length is as trustworthy: only an XDP program on this interface can set metadata, and
/// `wg_rx_xdp` (with the forward program it calls) passes frames with metadata of those
/// lengths only for these two handoffs.
#[classifier]
pub fn wg_rx_handoff(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: fields of the program's own context.
    let meta_len = unsafe { (*skb).data.wrapping_sub((*skb).data_meta) };
    let flags = if meta_len == size_of::<XdpHandoff>() as u32 {
        BPF_F_INGRESS as u64
    } else if meta_len == TUNNEL_HANDOFF_LEN {
        0
    } else {
        return TC_ACT_OK;
    };
    match config() {
        // SAFETY: a helper taking plain values. The TUN has no MAC header: the redirect
        // strips the Ethernet header.
        Some(cfg) => unsafe { bpf_redirect(cfg.tun_ifindex, flags) as i32 },
        None => TC_ACT_SHOT,
    }
}

/// The receive path on skbs, for underlays where XDP cannot attach.
#[classifier]
pub fn wg_rx_tc(ctx: TcContext) -> i32 {
    let Some(s) = scratch(SCRATCH_TC_INGRESS) else {
        return TC_ACT_OK;
    };
    let skb = ctx.skb.skb;
    // SAFETY: the program's own context.
    let ingress = unsafe { (*skb).ifindex };
    let action = unsafe { rx::receive::<TcL2>(ctx.as_ptr(), s, ingress) };
    // SAFETY: bpf_redirect takes plain values.
    unsafe {
        match action {
            RxAction::Pass => TC_ACT_OK,
            // The forwards are translated in XDP only (`entry_forward`).
            RxAction::Other { .. } => {
                count(Stat::RxPassOther);
                TC_ACT_OK
            }
            RxAction::Drop => TC_ACT_SHOT,
            RxAction::Local => match config() {
                Some(cfg) => bpf_redirect(cfg.tun_ifindex, BPF_F_INGRESS as u64) as i32,
                None => TC_ACT_SHOT,
            },
            RxAction::Transmit(ifindex) | RxAction::Lan(ifindex) => bpf_redirect(ifindex, 0) as i32,
        }
    }
}

#[classifier]
pub fn wg_tx_tun(ctx: TcContext) -> i32 {
    let Some(s) = scratch(SCRATCH_TC_EGRESS) else {
        return TC_ACT_OK;
    };
    unsafe { tx::from_tun(ctx.as_ptr(), s) }
}

#[xdp(frags)]
pub fn wg_tx_lan(ctx: XdpContext) -> u32 {
    let Some(s) = scratch(SCRATCH_XDP) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: the program's own context.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    unsafe { tx::from_lan(ctx.as_ptr(), s, ingress) }
}

/// The entry point's tcp/udp forwards, tail-called by `wg_rx_xdp` (`ENTRY_PROGRAMS`) for
/// frames that are not WireGuard; see `entry`.
#[xdp(frags)]
pub fn entry_forward(ctx: XdpContext) -> u32 {
    let Some(s) = scratch(SCRATCH_XDP) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: the program's own context.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    unsafe { entry::forward(ctx.as_ptr(), s, ingress) }
}

/// The entry point's proxied connections on the TUN's egress, before `wg_tx_tun`: the
/// client's address as their source; always continues to the next program (see `proxy`).
#[classifier]
pub fn entry_proxy_tun(ctx: TcContext) -> i32 {
    let Some(s) = scratch(SCRATCH_TC_EGRESS) else {
        return TC_ACT_UNSPEC;
    };
    unsafe { proxy::steer(ctx.as_ptr(), s) }
}

/// Masquerade, outbound: see `masquerade`. Always continues to the next program.
#[classifier]
pub fn masq_out(ctx: TcContext) -> i32 {
    let Some(s) = scratch(SCRATCH_TC_EGRESS) else {
        return TC_ACT_UNSPEC;
    };
    unsafe { masquerade::outbound(ctx.as_ptr(), s) }
}

/// Masquerade, replies: see `masquerade`. What is not a reply continues to the next program
/// (the receive handoff).
#[classifier]
pub fn masq_in(ctx: TcContext) -> i32 {
    let Some(s) = scratch(SCRATCH_TC_INGRESS) else {
        return TC_ACT_UNSPEC;
    };
    unsafe { masquerade::inbound(ctx.as_ptr(), s) }
}

#[xdp(frags)]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Any panic path left in the object would show up to the verifier as this infinite loop,
/// so a program that could panic fails to load rather than misbehaving.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
