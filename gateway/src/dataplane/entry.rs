//! The entry point's maps: tcp/udp forwards (`ENTRY_PORTS`, `ENTRY_FORWARDS`), the flows the
//! programs translate (`ENTRY_FLOWS`, read here for diagnostics), proxied connections
//! (`PROXY_FLOWS`, written per connection by the proxy) and replies behind an entry point
//! (`REPLY_TO`, read here for diagnostics), and what each forward slot carried
//! (`ENTRY_TRAFFIC`, zeroed here when its slot is cleared, so that the next piece given the
//! slot starts from zero). Which forwards to write is decided on the other side of the seam
//! (`crate::mirror`).

use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues};
use gateway_common::maps::{
    ENTRY_PORTS_LEN, ENTRY_PORTS_PER_TRANSPORT, ENTRY_TRANSPORT_TCP, ENTRY_TRANSPORT_UDP,
    EntryForward, EntryTraffic, FlowKey, FlowNat, MAX_ENTRY_FORWARDS, ReplyTo,
};

use super::error::{DataplaneError, Result};

/// The transport a forwarded port belongs to (`ENTRY_PORTS` has one range of 65536 each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryTransport {
    Tcp,
    Udp,
}

impl EntryTransport {
    fn index(self, port: u16) -> u32 {
        let base = match self {
            EntryTransport::Tcp => ENTRY_TRANSPORT_TCP,
            EntryTransport::Udp => ENTRY_TRANSPORT_UDP,
        };
        base * ENTRY_PORTS_PER_TRANSPORT + port as u32
    }
}

/// A slot of `ENTRY_FORWARDS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ForwardSlot(pub u32);

pub(super) struct EntryMaps {
    ports: Array<MapData, u32>,
    forwards: Array<MapData, EntryForward>,
    flows: HashMap<MapData, FlowKey, FlowNat>,
    proxy_flows: HashMap<MapData, FlowKey, FlowNat>,
    reply_to: HashMap<MapData, FlowKey, ReplyTo>,
    traffic: PerCpuArray<MapData, EntryTraffic>,
}

impl EntryMaps {
    pub(super) fn new(
        ports: Array<MapData, u32>,
        forwards: Array<MapData, EntryForward>,
        flows: HashMap<MapData, FlowKey, FlowNat>,
        proxy_flows: HashMap<MapData, FlowKey, FlowNat>,
        reply_to: HashMap<MapData, FlowKey, ReplyTo>,
        traffic: PerCpuArray<MapData, EntryTraffic>,
    ) -> Self {
        debug_assert_eq!(ENTRY_PORTS_LEN, 2 * ENTRY_PORTS_PER_TRANSPORT);
        EntryMaps { ports, forwards, flows, proxy_flows, reply_to, traffic }
    }

    /// `ENTRY_FORWARDS[slot]`; None clears it (family `AF_NONE`) and zeroes its
    /// `ENTRY_TRAFFIC`. A slot is cleared only once no port leads to it any more; packets
    /// in flight, and replies of its flows, may still add a little to it.
    pub(super) fn set_forward(
        &mut self,
        slot: ForwardSlot,
        forward: Option<&EntryForward>,
    ) -> Result<()> {
        if slot.0 >= MAX_ENTRY_FORWARDS {
            return Err(DataplaneError::Invalid(format!("forward slot {} out of range", slot.0)));
        }
        let value = forward.copied().unwrap_or_default();
        self.forwards
            .set(slot.0, value, 0)
            .map_err(|e| DataplaneError::kernel_chain("updating ENTRY_FORWARDS", &e))?;
        if forward.is_none() {
            let zero = PerCpuValues::try_from(vec![EntryTraffic::default(); self.cpus()?])
                .map_err(|e| DataplaneError::Invalid(format!("ENTRY_TRAFFIC values: {e}")))?;
            self.traffic
                .set(slot.0, zero, 0)
                .map_err(|e| DataplaneError::kernel_chain("zeroing ENTRY_TRAFFIC", &e))?;
        }
        Ok(())
    }

    /// What the forward piece in `slot` carried, summed over CPUs.
    pub(super) fn traffic(&self, slot: ForwardSlot) -> Result<EntryTraffic> {
        let per_cpu = self
            .traffic
            .get(&slot.0, 0)
            .map_err(|e| DataplaneError::kernel_chain("reading ENTRY_TRAFFIC", &e))?;
        Ok(per_cpu.iter().fold(EntryTraffic::default(), |sum, cpu| sum + *cpu))
    }

    /// The possible CPUs: one value each in a per-CPU map.
    fn cpus(&self) -> Result<usize> {
        aya::util::nr_cpus()
            .map_err(|(_, e)| DataplaneError::Invalid(format!("counting the possible CPUs: {e}")))
    }

    /// Points every port of `first..=last` of `transport` at `slot` (None: no forward).
    pub(super) fn set_ports(
        &mut self,
        transport: EntryTransport,
        first: u16,
        last: u16,
        slot: Option<ForwardSlot>,
    ) -> Result<()> {
        if first > last {
            return Err(DataplaneError::Invalid(format!("port range {first}-{last}")));
        }
        let value = slot.map_or(0, |s| s.0 + 1);
        for port in first..=last {
            self.ports
                .set(transport.index(port), value, 0)
                .map_err(|e| DataplaneError::kernel_chain("updating ENTRY_PORTS", &e))?;
        }
        Ok(())
    }

    /// The `ENTRY_FORWARDS` slot the programs find for a port (diagnostics and tests).
    pub(super) fn port(&self, transport: EntryTransport, port: u16) -> Result<Option<ForwardSlot>> {
        let value = self
            .ports
            .get(&transport.index(port), 0)
            .map_err(|e| DataplaneError::kernel_chain("reading ENTRY_PORTS", &e))?;
        Ok(value.checked_sub(1).map(ForwardSlot))
    }

    pub(super) fn add_proxy_flow(&mut self, key: &FlowKey, nat: &FlowNat) -> Result<()> {
        self.proxy_flows
            .insert(key, nat, 0)
            .map_err(|e| DataplaneError::kernel_chain("updating PROXY_FLOWS", &e))
    }

    /// Removes a proxied connection's entry; one already gone is not an error.
    pub(super) fn remove_proxy_flow(&mut self, key: &FlowKey) -> Result<()> {
        match self.proxy_flows.remove(key) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(DataplaneError::kernel_chain("updating PROXY_FLOWS", &e)),
        }
    }

    /// The forwarded flows the programs remember (key: the reply as it arrives decrypted).
    pub(super) fn flows(&self) -> Vec<(FlowKey, FlowNat)> {
        self.flows.iter().filter_map(|entry| entry.ok()).collect()
    }

    /// The flows behind an entry point whose replies go back to an entry peer.
    pub(super) fn reply_to(&self) -> Vec<(FlowKey, ReplyTo)> {
        self.reply_to.iter().filter_map(|entry| entry.ok()).collect()
    }

    /// How many entries `ENTRY_FLOWS` and `REPLY_TO` hold, each counted up to `limit`: a walk
    /// is two syscalls per key, and the maps hold up to 262,144 flows, too many to walk while
    /// the daemon's lock is held for a status request.
    pub(super) fn flow_counts(&self, limit: usize) -> (usize, usize) {
        let flows = self.flows.keys().take(limit).filter(|key| key.is_ok()).count();
        let reply_to = self.reply_to.keys().take(limit).filter(|key| key.is_ok()).count();
        (flows, reply_to)
    }
}
