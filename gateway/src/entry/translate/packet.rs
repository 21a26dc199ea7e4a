//! Where the fields a translation reads and writes are in one IP packet: the addresses, the
//! ports and the transport checksum of an IPv4 or IPv6 packet carrying TCP or UDP, whole and
//! unfragmented. Anything else has no flow here and is left as it is.

use gateway_common::maps::{AF_INET, AF_INET6, FlowKey};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

const IPV4_MIN_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
/// IPv4 flags and fragment offset: "more fragments" and the offset's 13 bits.
const IPV4_MORE_FRAGMENTS: u16 = 0x2000;
const IPV4_FRAGMENT_OFFSET: u16 = 0x1fff;
/// Offset of the IPv4 header checksum.
pub(super) const IPV4_CHECKSUM: usize = 10;

/// What must be there of the transport header: all of TCP's fixed header (its checksum sits
/// at 16), UDP's whole header.
const TCP_MIN_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
const TCP_CHECKSUM: usize = 16;
const UDP_CHECKSUM: usize = 6;

/// The fields of one TCP or UDP packet, as offsets into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Layout {
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    pub proto: u8,
    /// Where the source address starts; the destination follows it.
    pub addresses: usize,
    /// 4 (IPv4) or 16 (IPv6) bytes per address.
    pub address_len: usize,
    /// Where the transport header starts: source port, then destination port.
    pub transport: usize,
}

impl Layout {
    /// Finds the fields of `packet`. None for anything but a whole, unfragmented IPv4 or
    /// IPv6 packet whose complete TCP or UDP header follows the IP header directly: IPv6
    /// packets with extension headers (a fragment header among them) are left alone, as the
    /// programs leave them.
    pub fn of(packet: &[u8]) -> Option<Layout> {
        match packet.first()? >> 4 {
            4 => Layout::ipv4(packet),
            6 => Layout::ipv6(packet),
            _ => None,
        }
    }

    fn ipv4(packet: &[u8]) -> Option<Layout> {
        if packet.len() < IPV4_MIN_HEADER {
            return None;
        }
        let header_len = usize::from(packet[0] & 0x0f) * 4;
        let total_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        let fragment = u16::from_be_bytes([packet[6], packet[7]]);
        if header_len < IPV4_MIN_HEADER
            || total_len < header_len
            || total_len > packet.len()
            || fragment & (IPV4_MORE_FRAGMENTS | IPV4_FRAGMENT_OFFSET) != 0
        {
            return None;
        }
        Layout::transport(AF_INET, packet[9], 12, 4, header_len, total_len)
    }

    fn ipv6(packet: &[u8]) -> Option<Layout> {
        if packet.len() < IPV6_HEADER {
            return None;
        }
        let total_len = usize::from(u16::from_be_bytes([packet[4], packet[5]])) + IPV6_HEADER;
        if total_len > packet.len() {
            return None;
        }
        Layout::transport(AF_INET6, packet[6], 8, 16, IPV6_HEADER, total_len)
    }

    fn transport(
        family: u16,
        proto: u8,
        addresses: usize,
        address_len: usize,
        transport: usize,
        total_len: usize,
    ) -> Option<Layout> {
        let needed = match proto {
            IPPROTO_TCP => TCP_MIN_HEADER,
            IPPROTO_UDP => UDP_HEADER,
            _ => return None,
        };
        (transport + needed <= total_len).then_some(Layout {
            family,
            proto,
            addresses,
            address_len,
            transport,
        })
    }

    /// Where the source (`destination` false) or destination address is.
    pub fn address(&self, destination: bool) -> std::ops::Range<usize> {
        let start = self.addresses + usize::from(destination) * self.address_len;
        start..start + self.address_len
    }

    /// Where the source or destination port is.
    pub fn port(&self, destination: bool) -> std::ops::Range<usize> {
        let start = self.transport + usize::from(destination) * 2;
        start..start + 2
    }

    /// Where the TCP or UDP checksum is.
    pub fn checksum(&self) -> std::ops::Range<usize> {
        let at =
            self.transport + if self.proto == IPPROTO_TCP { TCP_CHECKSUM } else { UDP_CHECKSUM };
        at..at + 2
    }

    pub fn is_udp(&self) -> bool {
        self.proto == IPPROTO_UDP
    }

    /// The packet's flow, as the maps key it.
    pub fn key(&self, packet: &[u8]) -> FlowKey {
        let address = |destination| {
            let mut bytes = [0; 16];
            bytes[..self.address_len].copy_from_slice(&packet[self.address(destination)]);
            bytes
        };
        let port = |destination| {
            let range = self.port(destination);
            u16::from_ne_bytes([packet[range.start], packet[range.start + 1]])
        };
        FlowKey {
            family: self.family,
            proto: self.proto,
            _pad: 0,
            src_port: port(false),
            dst_port: port(true),
            src: address(false),
            dst: address(true),
        }
    }
}
