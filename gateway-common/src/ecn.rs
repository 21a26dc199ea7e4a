//! ECN across the tunnel, as the kernel's WireGuard marks it (`ip_tunnel_ecn_encap` and
//! `INET_ECN_decapsulate`, RFC 6040): the eBPF programs and the userspace path both take
//! their marks from here, so a packet leaves the same whichever path carried it. Arguments
//! are DS fields (IPv4 TOS, IPv6 traffic class); results are the two ECN bits.

pub const NOT_ECT: u8 = 0;
pub const ECT_1: u8 = 1;
pub const ECT_0: u8 = 2;
pub const CE: u8 = 3;
pub const MASK: u8 = 3;

/// The outer header's ECN bits for an inner packet: a copy, except that Congestion
/// Experienced is sent as ECT(0). (The outer DSCP is 0: WireGuard does not copy it.)
pub const fn encapsulate(inner_ds: u8) -> u8 {
    match inner_ds & MASK {
        CE => ECT_0,
        ecn => ecn,
    }
}

/// The inner packet's ECN bits after decapsulation: CE when the outer header was CE and the
/// inner packet is ECN-capable, ECT(1) when the outer was ECT(1) and the inner ECT(0),
/// otherwise unchanged. A packet that is not ECN-capable is delivered unchanged even under a
/// CE outer header: RFC 6040 would drop it, and the kernel's WireGuard ignores that advice.
pub const fn decapsulate(outer_ds: u8, inner_ds: u8) -> u8 {
    let inner = inner_ds & MASK;
    match (outer_ds & MASK, inner) {
        (_, NOT_ECT) => NOT_ECT,
        (CE, _) => CE,
        (ECT_1, ECT_0) => ECT_1,
        _ => inner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encapsulation_copies_ecn_but_not_congestion() {
        assert_eq!(encapsulate(0xb8 | NOT_ECT), NOT_ECT);
        assert_eq!(encapsulate(0xb8 | ECT_1), ECT_1);
        assert_eq!(encapsulate(0xb8 | ECT_0), ECT_0);
        assert_eq!(encapsulate(0xb8 | CE), ECT_0);
    }

    /// Every outer × inner pair against RFC 6040 §4.2's table (with the drop cell kept).
    #[test]
    fn decapsulation_follows_rfc_6040() {
        let table = [
            // inner:   Not-ECT  ECT(0)  ECT(1)  CE          outer:
            [NOT_ECT, ECT_0, ECT_1, CE], // Not-ECT
            [NOT_ECT, ECT_0, ECT_1, CE], // ECT(0)
            [NOT_ECT, ECT_1, ECT_1, CE], // ECT(1)
            [NOT_ECT, CE, CE, CE],       // CE (Not-ECT inner: RFC 6040 drops)
        ];
        for (outer, row) in [NOT_ECT, ECT_0, ECT_1, CE].into_iter().zip(table) {
            for (inner, expected) in [NOT_ECT, ECT_0, ECT_1, CE].into_iter().zip(row) {
                assert_eq!(
                    decapsulate(0x20 | outer, 0x48 | inner),
                    expected,
                    "outer {outer} inner {inner}"
                );
            }
        }
    }
}
