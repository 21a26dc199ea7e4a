//! Peers for a config: private keys derived from a seed and the peer's number, so `peers`
//! (which prints their public keys for the server's config) and `handshakes` (which initiates
//! as them) agree without sharing a file; each with a block of /32s as allowed IPs if asked.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use anyhow::{Result, ensure};
use gateway::uapi::Key;
use gateway::wg::crypto::hash;
use gateway::wg::noise::StaticIdentity;

const KEY_LABEL: &[u8] = b"gateway-bench peer";

#[derive(clap::Args)]
pub struct Options {
    /// How many peers.
    #[arg(long)]
    pub peers: u32,
    /// Seed of their keys (use the same for `handshakes`).
    #[arg(long)]
    pub seed: u64,
    /// Consecutive /32s each peer gets as allowed IPs (0: none).
    #[arg(long, default_value_t = 0)]
    pub allowed_ips_per_peer: u32,
    /// The first of those addresses (peer 0 starts here, peer 1 after peer 0's block, ...).
    #[arg(long, default_value = "10.128.0.0")]
    pub allowed_ips_from: Ipv4Addr,
}

/// Flood peer number `index` of `seed`.
pub fn identity(seed: u64, index: u32) -> StaticIdentity {
    let private_key = hash(&[KEY_LABEL, &seed.to_le_bytes(), &index.to_le_bytes()]);
    StaticIdentity::from_private_key(private_key)
}

/// `[Peer]` sections in wg(8) config format.
pub fn print_config(options: &Options) -> Result<()> {
    print!("{}", config(options)?);
    Ok(())
}

fn config(options: &Options) -> Result<String> {
    ensure!(options.peers > 0, "--peers must be at least 1");
    let first = u64::from(u32::from(options.allowed_ips_from));
    let total = u64::from(options.peers) * u64::from(options.allowed_ips_per_peer);
    ensure!(
        first + total <= 1 << 32,
        "{} peers with {} addresses each do not fit after {}",
        options.peers,
        options.allowed_ips_per_peer,
        options.allowed_ips_from
    );
    let mut config = String::new();
    for index in 0..options.peers {
        let public_key = identity(options.seed, index)
            .public_key()
            .ok_or_else(|| anyhow::anyhow!("derived key {index} is all zeros"))?;
        writeln!(config, "[Peer]\nPublicKey = {}", Key(public_key).to_base64())?;
        if options.allowed_ips_per_peer > 0 {
            let block = first + u64::from(index) * u64::from(options.allowed_ips_per_peer);
            let addresses: Vec<String> = (0..u64::from(options.allowed_ips_per_peer))
                .map(|offset| format!("{}/32", Ipv4Addr::from((block + offset) as u32)))
                .collect();
            writeln!(config, "AllowedIPs = {}", addresses.join(", "))?;
        }
        writeln!(config)?;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_seed_and_index_only() {
        let key = |seed, index| identity(seed, index).public_key().unwrap();
        assert_eq!(key(1, 2), key(1, 2));
        assert_ne!(key(1, 2), key(1, 3));
        assert_ne!(key(1, 2), key(2, 2));
    }

    #[test]
    fn allowed_ips_are_consecutive_blocks() {
        let options = Options {
            peers: 2,
            seed: 1,
            allowed_ips_per_peer: 2,
            allowed_ips_from: Ipv4Addr::new(10, 0, 0, 254),
        };
        let text = config(&options).unwrap();
        assert!(text.contains("AllowedIPs = 10.0.0.254/32, 10.0.0.255/32\n"), "{text}");
        assert!(text.contains("AllowedIPs = 10.0.1.0/32, 10.0.1.1/32\n"), "{text}");
        assert_eq!(text.matches("[Peer]").count(), 2);
    }

    #[test]
    fn blocks_past_the_address_space_are_refused() {
        let options = Options {
            peers: 2,
            seed: 1,
            allowed_ips_per_peer: 2,
            allowed_ips_from: Ipv4Addr::new(255, 255, 255, 254),
        };
        assert!(config(&options).is_err());
    }
}
