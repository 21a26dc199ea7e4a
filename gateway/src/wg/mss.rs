//! TCP MSS clamping: the maximum segment size a SYN (or SYN-ACK) announces, lowered to what
//! fits the tunnel's path MTU, so that neither end sends segments the path cannot carry
//! (what `iptables -j TCPMSS --clamp-mss-to-pmtu` does on a router in front of a tunnel).
//! The daemon clamps what it seals and what it decrypts; the programs do the same on their
//! paths (`gateway-ebpf/src/nat.rs`).

const IPV4_MIN_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const IPPROTO_TCP: u8 = 6;
const TCP_MIN_HEADER: usize = 20;
const TCP_SYN: u8 = 0x02;
const TCPOPT_END: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_MSS: u8 = 2;
const TCPOLEN_MSS: usize = 4;

/// The largest TCP segment a packet of `mtu` bytes carries in `packet`'s family (IPv4 and
/// TCP headers without options: 40 bytes; IPv6: 60).
pub fn mss_for(packet: &[u8], mtu: usize) -> usize {
    let headers = match packet.first().map(|b| b >> 4) {
        Some(6) => IPV6_HEADER + TCP_MIN_HEADER,
        _ => IPV4_MIN_HEADER + TCP_MIN_HEADER,
    };
    mtu.saturating_sub(headers)
}

/// Where a TCP segment's header starts, if `packet` is an unfragmented IPv4 or IPv6 packet
/// carrying TCP directly (no IPv6 extension headers) with its whole header present.
fn tcp_header(packet: &[u8]) -> Option<usize> {
    let l4 = match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let fragment = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x1fff;
            if ihl < IPV4_MIN_HEADER || fragment != 0 || *packet.get(9)? != IPPROTO_TCP {
                return None;
            }
            ihl
        }
        6 if *packet.get(6)? == IPPROTO_TCP => IPV6_HEADER,
        _ => return None,
    };
    let data_offset = usize::from(packet.get(l4 + 12)? >> 4) * 4;
    (data_offset >= TCP_MIN_HEADER && packet.len() >= l4 + data_offset).then_some(l4)
}

/// Lowers the MSS option of a SYN in `packet` to `mss` if it announces more, keeping the TCP
/// checksum valid (RFC 1624). Returns whether the packet changed. Anything that is not a
/// well-formed SYN with an MSS option is left alone.
pub fn clamp(packet: &mut [u8], mss: usize) -> bool {
    let Some(l4) = tcp_header(packet) else { return false };
    if packet[l4 + 13] & TCP_SYN == 0 || mss == 0 {
        return false;
    }
    let end = l4 + usize::from(packet[l4 + 12] >> 4) * 4;
    let mut at = l4 + TCP_MIN_HEADER;
    while at < end {
        match packet[at] {
            TCPOPT_END => return false,
            TCPOPT_NOP => at += 1,
            kind => {
                let Some(&len) = packet.get(at + 1) else { return false };
                let len = usize::from(len);
                if len < 2 || at + len > end {
                    return false;
                }
                if kind == TCPOPT_MSS && len == TCPOLEN_MSS {
                    return lower(packet, l4, at + 2, mss.min(0xffff) as u16);
                }
                at += len;
            }
        }
    }
    false
}

/// Writes `mss` into the option value at `at` if it is lower, updating the checksum.
fn lower(packet: &mut [u8], l4: usize, at: usize, mss: u16) -> bool {
    let announced = u16::from_be_bytes([packet[at], packet[at + 1]]);
    if announced <= mss {
        return false;
    }
    packet[at..at + 2].copy_from_slice(&mss.to_be_bytes());
    // The option value is 16-bit aligned in the segment (options start at byte 20 and the
    // MSS option's kind and length are two bytes), so it is one word of the sum.
    let check = u16::from_be_bytes([packet[l4 + 16], packet[l4 + 17]]);
    let mut sum = u32::from(!check) + u32::from(!announced) + u32::from(mss);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    packet[l4 + 16..l4 + 18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ones' complement sum of `bytes` (from `initial`), folded.
    fn sum(initial: u32, bytes: &[u8]) -> u16 {
        let mut s = initial;
        for c in bytes.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    /// An IPv4 TCP segment with `flags` and `options`, its checksum valid.
    fn segment(flags: u8, options: &[u8]) -> Vec<u8> {
        let tcp_len = 20 + options.len();
        let total = 20 + tcp_len;
        let mut p = vec![0x45, 0, 0, total as u8, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        p.extend_from_slice(&[0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0]);
        p.extend_from_slice(&[((tcp_len / 4) as u8) << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(options);
        let pseudo = sum(0, &p[12..20]) as u32 + 6 + tcp_len as u32;
        let check = !sum(pseudo, &p[20..]);
        p[36..38].copy_from_slice(&check.to_be_bytes());
        p
    }

    fn checksum_verifies(p: &[u8]) -> bool {
        let pseudo = sum(0, &p[12..20]) as u32 + 6 + (p.len() - 20) as u32;
        sum(pseudo, &p[20..]) == 0xffff
    }

    #[test]
    fn a_syn_announcing_more_is_lowered_and_its_checksum_stays_valid() {
        // NOP, NOP, SACK permitted, then MSS 1460: found after other options too.
        let mut p = segment(TCP_SYN, &[1, 1, 4, 2, 2, 4, 0x05, 0xb4]);
        assert!(clamp(&mut p, 1180));
        assert_eq!(u16::from_be_bytes([p[46], p[47]]), 1180);
        assert!(checksum_verifies(&p));
        assert!(!clamp(&mut p, 1300), "never raised");
        assert_eq!(u16::from_be_bytes([p[46], p[47]]), 1180);
    }

    #[test]
    fn syn_ack_is_clamped_and_other_segments_are_not() {
        let mut syn_ack = segment(TCP_SYN | 0x10, &[2, 4, 0x05, 0xb4]);
        assert!(clamp(&mut syn_ack, 1200));
        assert!(checksum_verifies(&syn_ack));
        let mut ack = segment(0x10, &[2, 4, 0x05, 0xb4]);
        let before = ack.clone();
        assert!(!clamp(&mut ack, 1200));
        assert_eq!(ack, before);
    }

    #[test]
    fn malformed_options_and_fragments_are_left_alone() {
        for options in [&[2u8, 0, 0, 0][..], &[3, 9, 0, 0], &[0, 2, 4, 5]] {
            let mut p = segment(TCP_SYN, options);
            let before = p.clone();
            assert!(!clamp(&mut p, 1000), "{options:?}");
            assert_eq!(p, before);
        }
        let mut fragment = segment(TCP_SYN, &[2, 4, 0x05, 0xb4]);
        fragment[7] = 1;
        assert!(!clamp(&mut fragment, 1000));
        let mut truncated = segment(TCP_SYN, &[2, 4, 0x05, 0xb4]);
        truncated.truncate(42);
        assert!(!clamp(&mut truncated, 1000));
    }

    #[test]
    fn the_mss_leaves_room_for_each_familys_headers() {
        assert_eq!(mss_for(&[0x45], 1220), 1180);
        assert_eq!(mss_for(&[0x60], 1200), 1140);
    }
}
