//! Sending to a peer: checking that a program may (valid session, endpoint, route), then
//! padding, sealing and putting outer Ethernet + IP + UDP + WireGuard headers around a packet
//! already in the frame. Shared by TUN egress, LAN XDP and hub forwarding.

use core::{ffi::c_void, sync::atomic::Ordering};

use aya_ebpf::helpers::generated::{bpf_check_mtu, bpf_get_prandom_u32};
use gateway_common::{
    ecn,
    maps::{AF_INET, AF_INET6, Config, Endpoint, Peer, SESSION_SEND_VALID, Session, Stat},
    wire::{
        AEAD_TAG_LEN, DATA_MIN_LEN, ETH_HEADER_LEN, IPV4_HEADER_LEN, IPV6_HEADER_LEN, MESSAGE_DATA,
        MESSAGE_PADDING_MULTIPLE, REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME_NS, UDP_HEADER_LEN,
    },
};

use crate::crypto::{self, MAX_PLAINTEXT};
use crate::csum;
use crate::maps::{completes_checksums, peer, session};
use crate::packet::{L3, Packet};
use crate::parse::{ETH_P_IP, ETH_P_IPV6, IPPROTO_UDP};
use crate::route::{self, FIB_FWD_DISABLED, FIB_NO_NEIGH, FIB_SUCCESS};
use crate::scratch::{HDR_ETH, HDR_IP, SUM_CIPHER, SUM_PLAIN, Scratch};
use crate::words::{copy, set_be16, zero};

/// A peer a program can send to now: its session and the outer route (the route's MAC
/// addresses and source address stay in `Scratch::fib`).
#[derive(Clone, Copy)]
pub struct Plan {
    pub peer: &'static Peer,
    pub session: &'static Session,
    pub family: L3,
    pub ifindex: u32,
    /// Send with `bpf_redirect_neigh`: the route is known but not its neighbour (or the FIB
    /// helper refused the lookup), and the kernel resolves it. The Ethernet header's
    /// addresses are then placeholders the helper replaces.
    pub neighbour: bool,
    /// The send nonce taken for this packet.
    pub counter: u64,
}

/// How a program can hand a sealed frame to the underlay.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// `bpf_redirect` or XDP_TX: the FIB lookup must give the whole route, neighbour
    /// included.
    Direct,
    /// TC may also use `bpf_redirect_neigh`, which resolves the neighbour (queueing the
    /// packet while it does) and routes without the forwarding check `bpf_fib_lookup` makes.
    /// A host that does not forward sends what it originates this way.
    Neighbour,
}

/// Who completes the outer UDP checksum.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OuterChecksum {
    /// The program, while sealing: the frame leaves complete.
    Computed,
    /// The device (or the kernel for it), as for the CHECKSUM_PARTIAL skb the frame still is
    /// (see `partial`): the egress interface must follow `csum_start`/`csum_offset`.
    LeftToDevice,
}

impl Plan {
    /// Bytes in front of the ciphertext: Ethernet + IP + UDP + WireGuard header.
    #[inline(always)]
    pub fn header_len(&self) -> u32 {
        header_len(self.family)
    }
}

#[inline(always)]
pub fn header_len(family: L3) -> u32 {
    let ip = match family {
        L3::V4 => IPV4_HEADER_LEN,
        L3::V6 => IPV6_HEADER_LEN,
    };
    (ETH_HEADER_LEN + ip + UDP_HEADER_LEN + 16) as u32
}

/// The plaintext length after padding (the kernel's `calculate_skb_padding`): a multiple of
/// 16, but never past the tunnel MTU.
#[inline(always)]
pub fn padded_len(len: u32, mtu: u32) -> u32 {
    let m = MESSAGE_PADDING_MULTIPLE as u32;
    if mtu == 0 {
        return (len + m - 1) & !(m - 1);
    }
    let last = if len > mtu { len % mtu } else { len };
    let mut padded = (last + m - 1) & !(m - 1);
    if padded > mtu {
        padded = mtu;
    }
    len + (padded - last)
}

/// Whether `peer` has what sending needs: a current session valid for sending and not
/// expired, an endpoint, and a route to it the `handover` can use (no fragmentation needed;
/// for `Direct`, a resolved neighbour and forwarding allowed); if it has, takes the send nonce
/// (the one side effect, besides the FIB scratch: it comes last, so nothing else refused
/// wastes one).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn reserve(
    ctx: *mut c_void,
    s: &mut Scratch,
    peer_slot: u32,
    cfg: &Config,
    plaintext_len: u32,
    now: u64,
    fallback_ifindex: u32,
    handover: Handover,
    outer_checksum: OuterChecksum,
) -> Result<Plan, Stat> {
    let peer = peer(peer_slot).ok_or(Stat::Error)?;
    // SAFETY: aligned fields of a live map value the daemon updates concurrently.
    let tx = unsafe { core::ptr::read_volatile(&peer.tx_session) };
    if tx == 0 {
        return Err(Stat::TxPassToDaemon);
    }
    let session = session(tx - 1).ok_or(Stat::TxPassToDaemon)?;
    let state = unsafe { core::ptr::read_volatile(&session.state) };
    if state & SESSION_SEND_VALID == 0 {
        return Err(Stat::TxPassToDaemon);
    }
    let created = session.created_ns;
    if now > created && now - created >= REJECT_AFTER_TIME_NS {
        return Err(Stat::TxPassToDaemon);
    }
    if session.counters.send_nonce.load(Ordering::Relaxed) >= REJECT_AFTER_MESSAGES {
        return Err(Stat::TxPassToDaemon);
    }
    let family = match unsafe { core::ptr::read_volatile(&peer.endpoint.family) } {
        AF_INET => L3::V4,
        AF_INET6 => L3::V6,
        _ => return Err(Stat::TxPassToDaemon),
    };
    // IP + UDP + WireGuard header, padded plaintext, tag.
    let outer_len = header_len(family) - ETH_HEADER_LEN as u32
        + padded_len(plaintext_len, cfg.tun_mtu)
        + AEAD_TAG_LEN as u32;
    let rc = unsafe {
        route::to_endpoint(
            ctx,
            &mut s.fib,
            &peer.endpoint,
            cfg.listen_port,
            outer_len,
            cfg.fwmark,
            fallback_ifindex,
        )
    };
    let neighbour = match rc {
        FIB_SUCCESS => false,
        FIB_NO_NEIGH if handover == Handover::Neighbour => {
            // The lookup got as far as the neighbour: interface, source and MTU are checked.
            zero(&mut s.fib.macs);
            true
        }
        FIB_FWD_DISABLED if handover == Handover::Neighbour => {
            // Refused before any lookup: fall back to what the peer was last heard on.
            if !unsafe { endpoint_route(ctx, s, &peer.endpoint, outer_len) } {
                return Err(Stat::TxPassNoRoute);
            }
            true
        }
        _ => return Err(Stat::TxPassNoRoute),
    };
    if outer_checksum == OuterChecksum::LeftToDevice && !completes_checksums(s.fib.ifindex) {
        return Err(Stat::TxPassOffload);
    }
    // Another CPU may have used the last nonces since the check above.
    let counter = session.counters.send_nonce.fetch_add(1, Ordering::Relaxed);
    if counter >= REJECT_AFTER_MESSAGES {
        return Err(Stat::TxPassToDaemon);
    }
    Ok(Plan { peer, session, family, ifindex: s.fib.ifindex, neighbour, counter })
}

/// The outer route without the FIB helper: the interface the peer was last heard on and our
/// address it came to (the kernel's endpoint source), if both are known and the packet fits
/// that interface's MTU. Fills `s.fib` as a successful lookup would, MAC addresses zero.
#[inline(always)]
unsafe fn endpoint_route(
    ctx: *mut c_void,
    s: &mut Scratch,
    endpoint: &Endpoint,
    outer_len: u32,
) -> bool {
    // SAFETY: aligned fields of a live map value the daemon updates concurrently.
    let ifindex = unsafe { core::ptr::read_volatile(&endpoint.ifindex) };
    let local = endpoint.local.as_ptr() as *const [u32; 4];
    // SAFETY: Endpoint is repr(C) with `local` 4-byte aligned at offset 24.
    let local = unsafe { &*local };
    if ifindex == 0 || local[0] | local[1] | local[2] | local[3] == 0 {
        return false;
    }
    let mut mtu_len = outer_len;
    // SAFETY: a helper writing the MTU to a stack word.
    if unsafe { bpf_check_mtu(ctx, ifindex, &mut mtu_len, 0, 0) } != 0 {
        return false;
    }
    s.fib.ifindex = ifindex;
    copy(&mut s.fib.src, local);
    zero(&mut s.fib.macs);
    true
}

/// How the plaintext's own transport checksum is checked before it leaves (see
/// `encapsulate`).
#[derive(Clone, Copy)]
pub struct Verify {
    /// The checksum the plaintext's words must add up to (pseudo-header and corrections),
    /// in the little-endian domain of `csum`.
    pub base: u64,
}

pub enum EncapError {
    /// The inner checksum did not verify: the packet was restored, untouched.
    Checksum,
    /// A helper failed part-way: the frame is unusable.
    Broken,
    /// A helper failed before anything was changed.
    Untouched,
}

/// Pads, seals and encapsulates the `data_len`-byte packet at `payload_off` (which ends the
/// frame's meaningful bytes) for `plan`, using its nonce. The frame afterwards is
/// Ethernet + outer IP + UDP + WireGuard header + ciphertext + tag, ready to transmit.
/// `current` is the network protocol the frame carries now (the inner packet's, or the old
/// outer header's when re-encrypting). Returns the WireGuard message length.
///
/// With `verify`, the plaintext's transport checksum is summed while sealing; if it does
/// not verify (a CHECKSUM_PARTIAL packet the stack would complete later, over what would then
/// be ciphertext), the seal is undone, the frame restored to `restore_len`, and
/// `EncapError::Checksum` returned.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn encapsulate<P: Packet>(
    ctx: *mut c_void,
    s: &mut Scratch,
    plan: &Plan,
    cfg: &Config,
    payload_off: u32,
    data_len: u32,
    current: L3,
    inner_dsfield: u8,
    verify: Option<Verify>,
    restore_len: u32,
    outer_checksum: OuterChecksum,
) -> Result<u32, EncapError> {
    let padded = padded_len(data_len, cfg.tun_mtu);
    if padded > MAX_PLAINTEXT {
        return Err(EncapError::Untouched);
    }
    if !unsafe { P::set_len(ctx, payload_off + padded + AEAD_TAG_LEN as u32) } {
        return Err(EncapError::Untouched);
    }
    let st = &mut s.crypt;
    crypto::begin(st, &plan.session.send_key, plan.counter, payload_off, padded, data_len);
    let computed = outer_checksum == OuterChecksum::Computed;
    st.sums = if computed { SUM_CIPHER } else { 0 } | if verify.is_some() { SUM_PLAIN } else { 0 };
    if !unsafe { crypto::seal::<P>(ctx, st) } {
        return Err(EncapError::Broken);
    }
    if let Some(v) = verify
        && !csum::verifies(st.sum_plain + v.base)
    {
        if unsafe { crypto::unseal::<P>(ctx, st) && P::set_len(ctx, restore_len) } {
            return Err(EncapError::Checksum);
        }
        return Err(EncapError::Broken);
    }
    let header = plan.header_len();
    let delta = header as i32 - payload_off as i32;
    if !unsafe { P::resize_front(ctx, delta, current, plan.family, computed) } {
        return Err(EncapError::Broken);
    }
    let msg_len = padded + DATA_MIN_LEN as u32;
    let sum_cipher = st.sum_cipher;
    write_headers(s, plan, cfg, msg_len, inner_dsfield, outer_checksum, sum_cipher);
    // SAFETY: the header buffer holds `header` bytes from HDR_ETH (at most 78 of 96).
    let ok = unsafe { P::store(ctx, 0, (s.tx.as_ptr() as *const u8).add(HDR_ETH), header & 0x7f) };
    if ok { Ok(msg_len) } else { Err(EncapError::Broken) }
}

/// Builds Ethernet + IP + UDP + WireGuard headers in `s.tx`: the IPv4 checksum, and the UDP
/// checksum or what the device needs to complete it.
#[inline(always)]
fn write_headers(
    s: &mut Scratch,
    plan: &Plan,
    cfg: &Config,
    msg_len: u32,
    inner_dsfield: u8,
    outer_checksum: OuterChecksum,
    sum_cipher: u64,
) {
    let t = &mut s.tx;
    let macs = s.fib.macs;
    // Ethernet at byte 2: destination MAC (fib bytes 6..12), source MAC (fib bytes 0..6).
    // Words 0..4 of the buffer are bytes 0..16: [pad pad d0 d1][d2 d3 d4 d5][s0 s1 s2 s3]
    // [s4 s5 type type].
    t[0] = macs[1] & 0xffff_0000;
    t[1] = macs[2];
    t[2] = macs[0];
    t[3] = macs[1] & 0xffff;
    // The FIB lookup replaces its destination with the next hop: the header takes the
    // endpoint's address.
    let dst = plan.peer.endpoint.addr.as_ptr() as *const u32;
    let outer_ecn = ecn::encapsulate(inner_dsfield);
    let udp_len = msg_len + UDP_HEADER_LEN as u32;
    let (udp, src_dst_sum, kernel_sums) = match plan.family {
        L3::V4 => {
            set_be16(t, HDR_ETH + 12, ETH_P_IP);
            let total = udp_len + IPV4_HEADER_LEN as u32;
            // SAFETY: a helper without arguments.
            let id = unsafe { bpf_get_prandom_u32() } & 0xffff;
            let w = HDR_IP / 4;
            // [ver/ihl tos len_hi len_lo] [id_hi id_lo frag frag] [ttl proto csum csum]
            t[w] = 0x45 | (outer_ecn as u32) << 8 | ((total as u16).to_be() as u32) << 16;
            t[w + 1] = id;
            t[w + 2] = 64 | (IPPROTO_UDP as u32) << 8;
            t[w + 3] = s.fib.src[0];
            // SAFETY: `addr` is 16 bytes at a 4-byte aligned offset of Endpoint.
            t[w + 4] = unsafe { *dst };
            let check = csum::finish(csum::sum_range(t, w, w + 5));
            t[w + 2] |= (check as u32) << 16;
            // Bytes 10..20: checksum, source, destination.
            let kernel_sums = (check as u64) + t[w + 3] as u64 + t[w + 4] as u64;
            (w + 5, t[w + 3] as u64 + t[w + 4] as u64, kernel_sums)
        }
        L3::V6 => {
            set_be16(t, HDR_ETH + 12, ETH_P_IPV6);
            let w = HDR_IP / 4;
            // [6 | tc | flow label] [payload len, next header, hop limit]
            let vtf = (6u32 << 28) | (outer_ecn as u32) << 20;
            t[w] = vtf.to_be();
            t[w + 1] = ((udp_len as u16).to_be() as u32) | (IPPROTO_UDP as u32) << 16 | 64 << 24;
            let mut sum = 0u64;
            let mut i = 0;
            while i < 4 {
                t[w + 2 + i] = s.fib.src[i];
                // SAFETY: i < 4 words of the 16-byte address.
                t[w + 6 + i] = unsafe { *dst.add(i) };
                sum += t[w + 2 + i] as u64 + t[w + 6 + i] as u64;
                i += 1;
            }
            // Bytes 30..40: the last ten bytes of the destination.
            let kernel_sums = (t[w + 7] >> 16) as u64 + t[w + 8] as u64 + t[w + 9] as u64;
            (w + 10, sum, kernel_sums)
        }
    };
    let sport = cfg.listen_port as u32;
    let dport = plan.peer.endpoint.port as u32;
    t[udp] = sport | dport << 16;
    t[udp + 1] = (udp_len as u16).to_be() as u32;
    let receiver = plan.session.remote_index;
    t[udp + 2] = MESSAGE_DATA;
    t[udp + 3] = receiver;
    let counter = plan.counter;
    t[udp + 4] = counter as u32;
    t[udp + 5] = (counter >> 32) as u32;
    let pseudo = src_dst_sum + csum::net16(IPPROTO_UDP as u16) + csum::net16(udp_len as u16);
    if outer_checksum == OuterChecksum::LeftToDevice {
        // The device sums from inside the IP header (see `partial`) and stores the
        // complement: start it at the pseudo-header minus what it takes in from there.
        let seed = csum::fold(pseudo + !csum::fold(kernel_sums) as u64);
        t[udp + 1] |= (seed as u32) << 16;
        return;
    }
    let sum = pseudo
        + t[udp] as u64
        + t[udp + 1] as u64
        + MESSAGE_DATA as u64
        + receiver as u64
        + (counter as u32) as u64
        + (counter >> 32)
        + sum_cipher;
    let mut check = csum::finish(sum);
    if check == 0 {
        check = 0xffff;
    }
    t[udp + 1] |= (check as u32) << 16;
}
