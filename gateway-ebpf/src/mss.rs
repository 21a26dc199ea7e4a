//! TCP MSS clamping on the programs' paths (the rule is `nat::clamp_mss`, to the tunnel's
//! path MTU in `CONFIG.tun_mtu`). Received SYNs are clamped here, after decryption: a
//! decrypted packet cannot be handed back. SYNs on their way into the tunnel that announce
//! more are not sealed by the send programs at all: they go to the daemon (one or two
//! packets per connection), which clamps them to the peer's own path MTU, and the send
//! programs keep their budget (and never rewrite a checksum the stack has yet to complete).

use core::ffi::c_void;

use crate::maps::config;
use crate::nat::{self, Transport};
use crate::packet::{L3, Packet};
use crate::parse::{self, IPPROTO_TCP, Inner};
use crate::scratch::Scratch;
use crate::words::{at_most, byte};

/// TCP flags: SYN.
const TCP_SYN: u32 = 0x02;
/// TCP option kind and length of the maximum segment size.
const TCPOPT_MSS: u32 = 2;
const TCPOLEN_MSS: u32 = 4;

/// Whether the packet at `off` (its first bytes in `s.crypt.head`) is a TCP SYN (or SYN-ACK)
/// announcing an MSS larger than a packet of `mtu` bytes carries: one the daemon must clamp.
/// As `nat::clamp_mss`, only an MSS that is the first option is seen (every common stack
/// puts it there; the daemon, which walks the options, clamps the rest). Reads bytes 12..24
/// of the TCP header into the last three words of `s.crypt.head`, which nothing loaded there
/// yet (the send programs load 40 bytes).
#[inline(always)]
pub unsafe fn needs_clamping<P: Packet>(
    ctx: *mut c_void,
    s: &mut Scratch,
    inner: &Inner,
    off: u32,
    mtu: u32,
) -> bool {
    if inner.proto != IPPROTO_TCP || inner.fragment || mtu == 0 {
        return false;
    }
    let l4 = match inner.family {
        L3::V4 => (byte(&s.crypt.head, 0) & 0x0f) as u32 * 4,
        L3::V6 => 40,
    };
    if inner.len < l4 + 24 {
        return false;
    }
    let words = &mut s.crypt.head[13] as *mut u32 as *mut u8;
    // SAFETY: 12 bytes into the last three words of head.
    if !unsafe { P::load(ctx, off + l4 + 12, words, 12) } {
        return false;
    }
    // Word 13: [data offset, flags, window]; word 15: the first option.
    let (control, option) = (s.crypt.head[13], s.crypt.head[15]);
    if (control >> 8) & TCP_SYN == 0 || (control & 0xff) >> 4 < 6 {
        return false;
    }
    if option & 0xff != TCPOPT_MSS || (option >> 8) & 0xff != TCPOLEN_MSS {
        return false;
    }
    let announced = ((option >> 16) as u16).swap_bytes();
    announced > nat::mss_for(inner.family, mtu)
}

/// Clamps the MSS of a decrypted SYN (the `len`-byte packet at `payload`, its first 64 bytes
/// in `s.crypt.head`) and stores what changed. 1: clamped, 0: nothing to do, -1: storing
/// failed (the packet is unusable). A subprogram taking scalars, as `translate::reply`, so
/// its locals stay off the receive program's frame.
#[inline(never)]
pub unsafe fn clamp_received<P: Packet>(
    ctx: *mut c_void,
    s: &mut Scratch,
    len: u32,
    payload: u32,
) -> i32 {
    let (Some(cfg), Some(inner)) = (config(), parse::inner(&s.crypt.head, len)) else {
        return 0;
    };
    if cfg.tun_mtu == 0 {
        return 0;
    }
    let Some(t) = Transport::of(&s.crypt.head, &inner) else {
        return 0;
    };
    if !nat::clamp_mss(&mut s.crypt.head, &t, nat::mss_for(t.family, cfg.tun_mtu)) {
        return 0;
    }
    let n = at_most::<64>(len);
    // SAFETY: head is 64 bytes, n ≤ 64.
    if unsafe { P::store(ctx, payload, s.crypt.head.as_ptr() as *const u8, n) } { 1 } else { -1 }
}
