//! What the data plane reads and sets on network devices besides attaching programs: an
//! underlay's transmit checksum offload (ethtool), and the tunnel's GSO segment limit
//! (rtnetlink).

use std::io;
use std::mem::size_of;

use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage},
};

use super::netlink;

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// How a device completes the transport checksum of a CHECKSUM_PARTIAL skb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxChecksum {
    /// The kernel does it in software before the driver sees the packet.
    Software,
    /// The hardware sums from `csum_start` and stores at `csum_offset`, whatever the protocol
    /// (NETIF_F_HW_CSUM, "tx-checksum-ip-generic").
    Generic,
    /// The hardware checksums TCP/UDP over IPv4/IPv6 by parsing the packet itself
    /// ("tx-checksum-ipv4"/"tx-checksum-ipv6").
    ByProtocol,
}

impl std::fmt::Display for TxChecksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TxChecksum::Software => "software",
            TxChecksum::Generic => "generic",
            TxChecksum::ByProtocol => "by protocol",
        })
    }
}

impl TxChecksum {
    /// Whether the offsets in the skb are what decides (see gateway-ebpf's `partial`).
    pub fn follows_offsets(self) -> bool {
        self != TxChecksum::ByProtocol
    }
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// One `SIOCETHTOOL` call on `ifname` with the command buffer `cmd`.
fn ethtool(socket: libc::c_int, ifname: &str, cmd: &mut [u8]) -> io::Result<()> {
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], data: cmd.as_mut_ptr().cast(), _pad: [0; 16] };
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"));
    }
    for (d, s) in req.name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: req is a valid ifreq whose data points at a buffer laid out for the command
    // in its first word, large enough for the answer the kernel was told to give.
    if unsafe { libc::ioctl(socket, SIOCETHTOOL as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn word(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

/// The name of `ifname`'s driver (`ethtool -i`), e.g. `veth`.
pub fn driver(ifname: &str) -> io::Result<String> {
    // struct ethtool_drvinfo: cmd, then driver[32], version[32], fw_version[32], bus_info[32],
    // erom_version[32], reserved2[12] and five u32 counts.
    let mut info = [0u8; 196];
    info[..4].copy_from_slice(&ETHTOOL_GDRVINFO.to_ne_bytes());
    // SAFETY: a plain socket call; the fd is closed below.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = ethtool(socket, ifname, &mut info);
    // SAFETY: our own fd.
    unsafe { libc::close(socket) };
    result?;
    let driver = &info[4..36];
    let end = driver.iter().position(|&b| b == 0).unwrap_or(driver.len());
    Ok(String::from_utf8_lossy(&driver[..end]).into_owned())
}

/// The transmit checksum offload `ifname` has on now (`ethtool -k`).
pub fn tx_checksum(ifname: &str) -> io::Result<TxChecksum> {
    // SAFETY: a plain socket call; the fd is closed below.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = features_by_name(
        socket,
        ifname,
        ["tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-checksum-ipv6"],
    );
    // SAFETY: our own fd.
    unsafe { libc::close(socket) };
    let [generic, ipv4, ipv6] = result?;
    Ok(if generic {
        TxChecksum::Generic
    } else if ipv4 || ipv6 {
        TxChecksum::ByProtocol
    } else {
        TxChecksum::Software
    })
}

/// Whether each named feature is active (false for names the kernel does not have).
fn features_by_name<const N: usize>(
    socket: libc::c_int,
    ifname: &str,
    names: [&str; N],
) -> io::Result<[bool; N]> {
    // How many feature names there are.
    let mut info = [0u8; 8 + 8 + 4];
    info[..4].copy_from_slice(&ETHTOOL_GSSET_INFO.to_ne_bytes());
    info[8..16].copy_from_slice(&(1u64 << ETH_SS_FEATURES).to_ne_bytes());
    ethtool(socket, ifname, &mut info)?;
    let count = word(&info, 16) as usize;
    // Their names, in bit order.
    let mut strings = vec![0u8; 12 + count * ETH_GSTRING_LEN];
    strings[..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
    strings[4..8].copy_from_slice(&ETH_SS_FEATURES.to_ne_bytes());
    strings[8..12].copy_from_slice(&(count as u32).to_ne_bytes());
    ethtool(socket, ifname, &mut strings)?;
    // Which are active: blocks of {available, requested, active, never_changed}.
    let blocks = count.div_ceil(32);
    let mut features = vec![0u8; 8 + blocks * 16];
    features[..4].copy_from_slice(&ETHTOOL_GFEATURES.to_ne_bytes());
    features[4..8].copy_from_slice(&(blocks as u32).to_ne_bytes());
    ethtool(socket, ifname, &mut features)?;
    let active = |bit: usize| word(&features, 8 + (bit / 32) * 16 + 8) & (1 << (bit % 32)) != 0;
    let name_of = |bit: usize| {
        let raw = &strings[12 + bit * ETH_GSTRING_LEN..12 + (bit + 1) * ETH_GSTRING_LEN];
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        &raw[..end]
    };
    Ok(names.map(|name| (0..count).any(|bit| name_of(bit) == name.as_bytes() && active(bit))))
}

/// The most segments the stack may put in one GSO packet for the interface (asked over
/// rtnetlink: sysfs may show another network namespace's interfaces).
pub fn gso_max_segs(ifindex: u32) -> io::Result<u32> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    let answers = netlink::request(RouteNetlinkMessage::GetLink(msg), false)?;
    answers
        .into_iter()
        .filter_map(|answer| match answer {
            RouteNetlinkMessage::NewLink(link) => Some(link.attributes),
            _ => None,
        })
        .flatten()
        .find_map(|attr| match attr {
            LinkAttribute::GsoMaxSegs(segs) => Some(segs),
            _ => None,
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no IFLA_GSO_MAX_SEGS"))
}

/// Sets it (`ip link set dev … gso_max_segs …`). At 1 the stack hands the device one
/// segment per skb: TCP sends no GSO packets.
pub fn set_gso_max_segs(ifindex: u32, segs: u32) -> io::Result<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    msg.attributes.push(LinkAttribute::GsoMaxSegs(segs));
    netlink::request(RouteNetlinkMessage::SetLink(msg), true).map(drop)
}

const _: () = assert!(size_of::<IfReq>() == 40);

/// What an entry point needs of the tunnel interface, set through its sysctls:
/// - forwarding (IPv4 and IPv6): a translated reply is routed as if received on the tunnel,
///   by `bpf_fib_lookup` in the receive program (which refuses to look up anything on an
///   interface that does not forward) and by the stack where the program leaves it;
/// - `accept_local` (IPv4): a translated reply the programs leave to the stack carries one of
///   this host's addresses as its source (the public one it was forwarded from), which the
///   stack otherwise drops as a martian.
pub fn enable_entry_routing(ifname: &str) -> io::Result<()> {
    for (path, what) in [
        (format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding"), "IPv4 forwarding"),
        (format!("/proc/sys/net/ipv4/conf/{ifname}/accept_local"), "accept_local"),
        (format!("/proc/sys/net/ipv6/conf/{ifname}/forwarding"), "IPv6 forwarding"),
    ] {
        match std::fs::write(&path, "1") {
            Ok(()) => {}
            // No IPv6 on this host: nothing to forward there.
            Err(e) if e.kind() == io::ErrorKind::NotFound && path.contains("ipv6") => {}
            Err(e) => {
                return Err(io::Error::new(e.kind(), format!("enabling {what} on {ifname}: {e}")));
            }
        }
    }
    Ok(())
}

/// Whether the host forwards IPv6 at all (`net.ipv6.conf.all.forwarding`): the stack's IPv6
/// forwarding looks at this switch, not at the interface's, so translated IPv6 replies the
/// programs leave to the stack are dropped while it is off. False when unknown.
pub fn ipv6_forwarding_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding")
        .is_ok_and(|value| value.trim() == "1")
}
