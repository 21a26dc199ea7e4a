//! `CONFIG[0]`: what the programs need to know about the tunnel.

use aya::maps::{Array, MapData};
use gateway_common::maps::{
    CONFIG_ENTRY, CONFIG_HUB_FORWARD, CONFIG_LAN_REDIRECT, CONFIG_REPLY_TO, Config,
};

use super::error::{DataplaneError, Result};

/// The tunnel the programs serve, in host terms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelConfig {
    /// The TUN interface: decrypted packets are delivered as if received on it.
    pub tun_ifindex: u32,
    /// Its MTU (padding is capped at it; larger packets go to the stack).
    pub tun_mtu: u32,
    /// Our UDP listen port (host order).
    pub listen_port: u16,
    /// Re-encrypt and send on packets from one peer to another without the stack.
    pub hub_forward: bool,
    /// Redirect decrypted packets routed out of an attached LAN interface straight there.
    pub lan_redirect: bool,
    /// The kernel's fwmark for packets we send (0: none).
    pub fwmark: u32,
    /// This host is an entry point (it has forwards): the programs translate forwarded and
    /// proxied flows (`CONFIG_ENTRY`).
    pub entry: bool,
    /// Some peer is an entry point: LAN XDP sends the replies of its flows back to it
    /// (`CONFIG_REPLY_TO`).
    pub reply_to: bool,
}

/// The `CONFIG` array (one entry).
pub(super) struct ConfigMap(Array<MapData, Config>);

impl ConfigMap {
    pub(super) fn new(map: Array<MapData, Config>) -> Self {
        ConfigMap(map)
    }

    /// Sets `CONFIG[0]`. Until it is set (listen port 0), the programs pass everything.
    pub(super) fn set(&mut self, c: &TunnelConfig) -> Result<()> {
        let mut flags = 0;
        if c.hub_forward {
            flags |= CONFIG_HUB_FORWARD;
        }
        if c.lan_redirect {
            flags |= CONFIG_LAN_REDIRECT;
        }
        if c.entry {
            flags |= CONFIG_ENTRY;
        }
        if c.reply_to {
            flags |= CONFIG_REPLY_TO;
        }
        let value = Config {
            tun_ifindex: c.tun_ifindex,
            tun_mtu: c.tun_mtu,
            listen_port: c.listen_port.to_be(),
            _pad: 0,
            flags,
            fwmark: c.fwmark,
            _pad2: 0,
        };
        self.0.set(0, value, 0).map_err(|e| DataplaneError::kernel_chain("updating CONFIG", &e))
    }

    pub(super) fn get(&self) -> Result<TunnelConfig> {
        let c =
            self.0.get(&0, 0).map_err(|e| DataplaneError::kernel_chain("reading CONFIG", &e))?;
        Ok(TunnelConfig {
            tun_ifindex: c.tun_ifindex,
            tun_mtu: c.tun_mtu,
            listen_port: u16::from_be(c.listen_port),
            hub_forward: c.flags & CONFIG_HUB_FORWARD != 0,
            lan_redirect: c.flags & CONFIG_LAN_REDIRECT != 0,
            fwmark: c.fwmark,
            entry: c.flags & CONFIG_ENTRY != 0,
            reply_to: c.flags & CONFIG_REPLY_TO != 0,
        })
    }
}
