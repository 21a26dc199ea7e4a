//! The network's addresses, in clan-core's layout with its weak points fixed.
//!
//! - The network has an IPv6 ULA /40: `fd` and 32 random bits (RFC 4193's random global ID,
//!   drawn once and stored; clan-core hashes the network's name, so two networks of one name
//!   collide).
//! - Each controller has a /56 of it: 16 bits derived from the controller's name, at bits
//!   40–55; the controller itself is `::1` of the /64 that follows (bits 56–63 zero).
//! - Each member's address is its controller's /56, bits 56–63 zero, and a 64-bit interface
//!   identifier derived from the member's name. Derived, then checked against the addresses
//!   already given: a collision tries the next derivation (`attempt`), so two names never share
//!   an address, and `::`/`::1` are never a member's. The result is stored: addresses never
//!   change while the member exists, even if the derivation's inputs would give another now.
//! - Each member also gets an IPv4 address from a pool (default 100.64.0.0/10, the CGNAT
//!   range, as Tailscale uses), derived from the name the same way, collision-checked.
//!
//! Derivations hash a domain-separated input with BLAKE2s-256 (already the protocol's hash):
//! `"gateway network v1 <kind>\0" ‖ name ‖ attempt (u32, little endian)`.

use std::net::{Ipv4Addr, Ipv6Addr};

use blake2::{Blake2s256, Digest};
use ipnet::{Ipv4Net, Ipv6Net};
use rand_core::CryptoRngCore;

use super::name::Name;

/// How many derivations are tried before giving up: a pool so full that 64 hashes all
/// collide has no room worth finding by luck.
pub const MAX_ATTEMPTS: u32 = 64;

/// The default IPv4 pool: the shared address space of RFC 6598.
pub const DEFAULT_IPV4_POOL: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10) {
    Ok(net) => net,
    Err(_) => unreachable!(),
};

/// The network's /40.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkPrefix(Ipv6Net);

/// Why an address could not be given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocationError {
    /// Every derivation collided: the /56 or the pool is (nearly) full.
    Exhausted { what: &'static str, name: String },
    /// A stored prefix is not of the layout.
    BadPrefix(String),
}

impl std::fmt::Display for AllocationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllocationError::Exhausted { what, name } => write!(
                f,
                "no free {what} for `{name}' after {MAX_ATTEMPTS} tries: the network is full there"
            ),
            AllocationError::BadPrefix(text) => write!(f, "{text} is not a network's ULA /40"),
        }
    }
}

impl std::error::Error for AllocationError {}

impl NetworkPrefix {
    /// A fresh prefix: `fd` and 32 random bits.
    pub fn random(rng: &mut impl CryptoRngCore) -> NetworkPrefix {
        let mut global = [0u8; 4];
        rng.fill_bytes(&mut global);
        let mut octets = [0u8; 16];
        octets[0] = 0xfd;
        octets[1..5].copy_from_slice(&global);
        NetworkPrefix(Ipv6Net::new(Ipv6Addr::from(octets), 40).expect("40 <= 128"))
    }

    /// A stored prefix, checked to be of the layout.
    pub fn parse(text: &str) -> Result<NetworkPrefix, AllocationError> {
        let bad = || AllocationError::BadPrefix(text.to_string());
        let net: Ipv6Net = text.parse().map_err(|_| bad())?;
        if net.prefix_len() != 40 || net.addr().octets()[0] != 0xfd || net.trunc() != net {
            return Err(bad());
        }
        Ok(NetworkPrefix(net))
    }

    pub fn net(&self) -> Ipv6Net {
        self.0
    }

    /// The /56 of the controller whose subnet id is `subnet`.
    pub fn controller_prefix(&self, subnet: u16) -> Ipv6Net {
        let mut octets = self.0.addr().octets();
        octets[5..7].copy_from_slice(&subnet.to_be_bytes());
        Ipv6Net::new(Ipv6Addr::from(octets), 56).expect("56 <= 128")
    }
}

/// The subnet id a controller's name derives to at `attempt` (bits 40–55 of its /56).
pub fn controller_subnet(name: &Name, attempt: u32) -> u16 {
    let hash = derive("controller", name, attempt);
    u16::from_be_bytes([hash[0], hash[1]])
}

/// The first free subnet id for a controller: `taken` says which are given already.
pub fn allocate_controller_subnet(
    name: &Name,
    taken: impl Fn(u16) -> bool,
) -> Result<u16, AllocationError> {
    (0..MAX_ATTEMPTS)
        .map(|attempt| controller_subnet(name, attempt))
        .find(|&subnet| !taken(subnet))
        .ok_or_else(|| AllocationError::Exhausted {
            what: "controller /56",
            name: name.to_string(),
        })
}

/// The controller's own address in its /56: `::1` of its first /64.
pub fn controller_address(controller: Ipv6Net) -> Ipv6Addr {
    let mut octets = controller.addr().octets();
    octets[7..].fill(0);
    octets[15] = 1;
    Ipv6Addr::from(octets)
}

/// The interface identifier a member's name derives to at `attempt`; None for the two
/// reserved ones (`::`, the subnet-router anycast address, and `::1`, the controller's).
pub fn member_suffix(name: &Name, attempt: u32) -> Option<u64> {
    let hash = derive("member", name, attempt);
    let suffix = u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"));
    (suffix > 1).then_some(suffix)
}

/// The member address of `suffix` under a controller's /56 (bits 56–63 zero).
pub fn member_address(controller: Ipv6Net, suffix: u64) -> Ipv6Addr {
    let mut octets = controller.addr().octets();
    octets[7] = 0;
    octets[8..].copy_from_slice(&suffix.to_be_bytes());
    Ipv6Addr::from(octets)
}

/// The first free IPv6 address a member's name derives to under its controller's /56.
pub fn allocate_member_v6(
    controller: Ipv6Net,
    name: &Name,
    taken: impl Fn(Ipv6Addr) -> bool,
) -> Result<Ipv6Addr, AllocationError> {
    (0..MAX_ATTEMPTS)
        .filter_map(|attempt| member_suffix(name, attempt))
        .map(|suffix| member_address(controller, suffix))
        .find(|&address| !taken(address))
        .ok_or_else(|| AllocationError::Exhausted { what: "IPv6 address", name: name.to_string() })
}

/// The IPv4 address of the pool a member's name derives to at `attempt`; None for the pool's
/// first and last addresses (network and broadcast) and its second (the first controller's
/// by convention, as `.1` usually is a gateway's).
pub fn member_v4(pool: Ipv4Net, name: &Name, attempt: u32) -> Option<Ipv4Addr> {
    let hash = derive("member ipv4", name, attempt);
    let hosts = 1u64 << (32 - pool.prefix_len());
    let offset = u64::from(u32::from_be_bytes(hash[..4].try_into().expect("4 bytes"))) % hosts;
    if offset <= 1 || offset == hosts - 1 {
        return None;
    }
    Some(Ipv4Addr::from(u32::from(pool.network()) + offset as u32))
}

/// The first free IPv4 address a member's name derives to in `pool`.
pub fn allocate_member_v4(
    pool: Ipv4Net,
    name: &Name,
    taken: impl Fn(Ipv4Addr) -> bool,
) -> Result<Ipv4Addr, AllocationError> {
    (0..MAX_ATTEMPTS)
        .filter_map(|attempt| member_v4(pool, name, attempt))
        .find(|&address| !taken(address))
        .ok_or_else(|| AllocationError::Exhausted { what: "IPv4 address", name: name.to_string() })
}

fn derive(kind: &str, name: &Name, attempt: u32) -> [u8; 32] {
    let mut hash = Blake2s256::new();
    hash.update(b"gateway network v1 ");
    hash.update(kind.as_bytes());
    hash.update([0]);
    hash.update(name.as_str().as_bytes());
    hash.update(attempt.to_le_bytes());
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn name(text: &str) -> Name {
        Name::parse(text).unwrap()
    }

    fn prefix() -> NetworkPrefix {
        NetworkPrefix::parse("fd12:3456:7800::/40").unwrap()
    }

    /// Golden vectors, computed apart from this code (Python's hashlib.blake2s over the same
    /// inputs): a change of the derivation changes them. Stored addresses would not move,
    /// but new members' would no longer be what the documentation says.
    #[test]
    fn the_derivation_gives_these_addresses() {
        let vps = prefix().controller_prefix(controller_subnet(&name("vps"), 0));
        assert_eq!(vps.to_string(), GOLDEN_VPS_PREFIX);
        assert_eq!(controller_address(vps).to_string(), GOLDEN_VPS_ADDRESS);
        let nas = member_address(vps, member_suffix(&name("nas"), 0).unwrap());
        assert_eq!(nas.to_string(), GOLDEN_NAS_V6);
        let phone = member_address(vps, member_suffix(&name("phone"), 0).unwrap());
        assert_eq!(phone.to_string(), GOLDEN_PHONE_V6);
        assert_eq!(
            member_v4(DEFAULT_IPV4_POOL, &name("nas"), 0).unwrap().to_string(),
            GOLDEN_NAS_V4
        );
        let small: Ipv4Net = "10.99.0.0/24".parse().unwrap();
        assert_eq!(member_v4(small, &name("phone"), 0).unwrap().to_string(), GOLDEN_PHONE_V4_SMALL);
    }

    const GOLDEN_VPS_PREFIX: &str = "fd12:3456:78bd:4400::/56";
    const GOLDEN_VPS_ADDRESS: &str = "fd12:3456:78bd:4400::1";
    const GOLDEN_NAS_V6: &str = "fd12:3456:78bd:4400:a8cd:f36d:ae3:e447";
    const GOLDEN_PHONE_V6: &str = "fd12:3456:78bd:4400:b861:3fb4:431c:b679";
    const GOLDEN_NAS_V4: &str = "100.114.20.111";
    const GOLDEN_PHONE_V4_SMALL: &str = "10.99.0.31";

    #[test]
    fn the_layout_holds_for_any_name() {
        let net = prefix().net();
        for text in ["a", "nas", "phone-2", "x".repeat(63).as_str()] {
            let controller = prefix().controller_prefix(controller_subnet(&name(text), 0));
            assert!(net.contains(&controller), "{controller} outside {net}");
            assert_eq!(controller.prefix_len(), 56);
            let address = allocate_member_v6(controller, &name(text), |_| false).unwrap();
            assert!(controller.contains(&address));
            assert_eq!(address.octets()[7], 0, "bits 56-63 are zero: {address}");
            assert_ne!(address, controller_address(controller));
            let v4 = allocate_member_v4(DEFAULT_IPV4_POOL, &name(text), |_| false).unwrap();
            assert!(DEFAULT_IPV4_POOL.contains(&v4));
        }
    }

    #[test]
    fn a_collision_takes_the_next_derivation_and_a_full_space_is_an_error() {
        let controller = prefix().controller_prefix(1);
        let first = allocate_member_v6(controller, &name("nas"), |_| false).unwrap();
        let second = allocate_member_v6(controller, &name("nas"), |a| a == first).unwrap();
        assert_ne!(first, second);
        assert_eq!(second, member_address(controller, member_suffix(&name("nas"), 1).unwrap()));
        assert_eq!(
            allocate_member_v6(controller, &name("nas"), |_| true).unwrap_err().to_string(),
            "no free IPv6 address for `nas' after 64 tries: the network is full there"
        );
        // A /30 has one member address (.2): .0 and .3 are network and broadcast, .1 reserved.
        let tiny: Ipv4Net = "10.0.0.0/30".parse().unwrap();
        let mut given = HashSet::new();
        for text in ["a", "b", "c"] {
            if let Ok(address) = allocate_member_v4(tiny, &name(text), |a| given.contains(&a)) {
                assert_eq!(address, Ipv4Addr::new(10, 0, 0, 2));
                given.insert(address);
            }
        }
        assert_eq!(given.len(), 1);
    }

    #[test]
    fn stored_prefixes_are_checked() {
        for bad in ["fd12:3456:7800::/48", "fc12:3456:7800::/40", "fd12:3456:7801::/40", "x"] {
            assert!(NetworkPrefix::parse(bad).is_err(), "{bad}");
        }
        let mut rng = rand_core::OsRng;
        let random = NetworkPrefix::random(&mut rng);
        assert_eq!(NetworkPrefix::parse(&random.net().to_string()).unwrap(), random);
    }
}
