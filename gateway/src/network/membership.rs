//! What a member keeps of its network: who it is in it, its addresses, the newest map it took
//! (as signed) and the exit node it chose. Saved atomically beside the interface's other state
//! (`network.json`, the owner's alone), so a member restarts into its network without a
//! controller: the data plane never waits for one.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::controller::JoinAnswer;
use super::map::{HeldMap, MapError, SignedMap, peers_for};
use super::peers::WantedPeer;
use crate::config::atomic::replace_private_file;
use crate::uapi::Key;

/// The file's name in the interface's state directory.
pub const FILE_NAME: &str = "network.json";

/// How often a member behind NAT keeps its controller's mapping open.
pub const KEEPALIVE_SECONDS: u16 = 25;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    /// Its name in the network.
    pub name: String,
    pub ipv6: Ipv6Addr,
    pub ipv4: Ipv4Addr,
    /// The newest map taken, exactly as signed.
    pub map: SignedMap,
    /// The member whose default routes it uses, if any.
    #[serde(default)]
    pub exit_node: Option<String>,
}

impl Membership {
    /// The membership an enrollment's answer makes.
    pub fn joined(name: &str, answer: &JoinAnswer) -> Result<Membership, MapError> {
        HeldMap::from_authenticated(&answer.map)?;
        Ok(Membership {
            name: name.to_string(),
            ipv6: answer.ipv6,
            ipv4: answer.ipv4,
            map: answer.map.clone(),
            exit_node: None,
        })
    }

    /// The held map, checked.
    pub fn held(&self) -> Result<HeldMap, MapError> {
        HeldMap::from_authenticated(&self.map)
    }

    /// Takes `signed` if a controller of the network signed it and it is newer (then the caller
    /// saves and applies); the reason if not, and the membership stays as it was.
    pub fn offer(&mut self, signed: &SignedMap) -> Result<(), MapError> {
        let mut held = self.held()?;
        held.offer(signed)?;
        self.map = signed.clone();
        Ok(())
    }

    /// Whether the held map still has this member (a removed member's map does not).
    pub fn is_member(&self) -> Result<bool, MapError> {
        Ok(self.held()?.map().members.iter().any(|member| member.name == self.name))
    }

    /// The peers the member's interface should have, controllers' endpoints resolved by
    /// `resolve` (one that does not resolve is added without one, and learnt on the
    /// controller's first packet).
    pub fn wanted_peers(
        &self,
        resolve: impl Fn(&str) -> Option<SocketAddr>,
    ) -> Result<Vec<WantedPeer>, MapError> {
        let held = self.held()?;
        let peers = peers_for(held.map(), &self.name, self.exit_node.as_deref());
        Ok(peers
            .into_iter()
            .filter_map(|peer| {
                let public_key = Key::from_base64(&peer.public_key).ok()?.0;
                Some(WantedPeer {
                    public_key,
                    allowed_ips: peer.allowed_ips,
                    endpoint: peer.endpoint.as_deref().and_then(&resolve),
                    persistent_keepalive: KEEPALIVE_SECONDS,
                })
            })
            .collect())
    }

    pub fn save(&self, directory: &Path) -> Result<(), String> {
        let mut text = serde_json::to_string_pretty(self).expect("a membership serializes");
        text.push('\n');
        std::fs::create_dir_all(directory)
            .map_err(|e| format!("cannot create {}: {e}", directory.display()))?;
        replace_private_file(&directory.join(FILE_NAME), &text)
    }

    /// The saved membership, None if this interface never joined a network.
    pub fn load(directory: &Path) -> Result<Option<Membership>, String> {
        let path = directory.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let membership: Membership = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a network membership: {e}", path.display()))?;
        membership.held().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some(membership))
    }
}

#[cfg(test)]
mod tests;
