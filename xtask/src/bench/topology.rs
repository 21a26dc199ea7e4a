//! The benchmark's networks: the harness's shapes (`Direct` for the direct and scale scenarios,
//! `Hub` for the hub scenario, `Entry` for the entry scenario), built fresh for every
//! implementation, with the same tuning for all of them:
//!
//! - forwarding on in every namespace: the eBPF send path resolves routes with
//!   `bpf_fib_lookup`, which needs it on the underlay;
//! - GRO on every veth: a veth only takes frames its peer's XDP program redirected to it (the
//!   eBPF LAN paths) when it runs XDP itself or has GRO on;
//! - in the hub, a pass-through XDP program on the internet router's port facing the VPS: a veth
//!   is only woken up for frames its peer's XDP program sent back with XDP_TX (the eBPF hub
//!   forwarding) when it runs XDP itself (`gateway-bench xdp-pass`); in the entry scenario
//!   likewise on the router's port facing the VPS, whose forwards go back out of the
//!   interface they came in on (sealed to the home, or as replies to the client).
//!
//! Traffic never leaves these namespaces.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::{Context as _, Result};
use gateway_tests::Netns;
use gateway_tests::topology::{Direct, Entry, Hub, TopologyOptions};

use super::plan::Scenario;
use super::tool::Background;

pub enum Topology {
    Direct(Direct),
    Hub {
        // Declared first so it is dropped (killed) before the namespaces are deleted.
        _xdp_pass: Background,
        hub: Box<Hub>,
    },
    Entry {
        _xdp_pass: Background,
        entry: Box<Entry>,
    },
}

impl Topology {
    /// `tool` is `gateway-bench` (for the pass-through XDP program).
    pub fn build(scenario: Scenario, tool: &Path) -> Result<Topology> {
        let options = TopologyOptions::default();
        match scenario {
            Scenario::Direct | Scenario::Scale => {
                let direct = Direct::build(&options)?;
                tune_all(&[&direct.client, &direct.router, &direct.server])?;
                Ok(Topology::Direct(direct))
            }
            Scenario::Hub => {
                let hub = Hub::build(&options)?;
                tune_all(&[
                    &hub.phone,
                    &hub.internet,
                    &hub.vps,
                    &hub.cgnat,
                    &hub.home,
                    &hub.lan_host,
                ])?;
                let xdp_pass = Background::start(
                    tool,
                    &hub.internet,
                    &["xdp-pass".into(), "--iface".into(), hub.internet_vps.name.clone()],
                )
                .context("attaching xdp_pass to the internet router's port facing the VPS")?;
                Ok(Topology::Hub { _xdp_pass: xdp_pass, hub: Box::new(hub) })
            }
            Scenario::Entry => {
                let entry = Entry::build(&options)?;
                tune_all(&entry.namespaces())?;
                // The clients open tens of thousands of connections per run.
                entry.client.set_sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
                let xdp_pass = Background::start(
                    tool,
                    &entry.internet,
                    &["xdp-pass".into(), "--iface".into(), entry.internet_vps.name.clone()],
                )
                .context("attaching xdp_pass to the internet router's port facing the VPS")?;
                Ok(Topology::Entry { _xdp_pass: xdp_pass, entry: Box::new(entry) })
            }
            Scenario::EbpfMicro => anyhow::bail!("the eBPF microbenchmark needs no topology"),
        }
    }

    pub fn namespaces(&self) -> Vec<&Netns> {
        match self {
            Topology::Direct(direct) => vec![&direct.client, &direct.router, &direct.server],
            Topology::Hub { hub, .. } => {
                vec![&hub.phone, &hub.internet, &hub.vps, &hub.cgnat, &hub.home, &hub.lan_host]
            }
            Topology::Entry { entry, .. } => entry.namespaces().to_vec(),
        }
    }

    /// For plain routing in the hub: the phone reaches the home LAN without a tunnel along the
    /// tunnel's hops (phone → internet → VPS → internet → carrier → home → LAN host, and back
    /// the same way): policy routes on the internet router send traffic between the phone and
    /// the home LAN through the VPS, the carrier routes the LAN to the home and does not
    /// masquerade it.
    pub fn route_hub_without_tunnel(hub: &Hub) -> Result<()> {
        let lan = Hub::HOME_LAN_V4;
        let phone_net = format!("{}/24", network_of(hub.phone_wan.v4));
        let vps = hub.vps_wan.v4.to_string();
        let internet = &hub.internet;
        internet.ip(&[
            "rule",
            "add",
            "iif",
            &hub.internet_phone.name,
            "to",
            lan,
            "lookup",
            "100",
        ])?;
        internet.ip(&[
            "rule",
            "add",
            "iif",
            &hub.internet_cgnat.name,
            "to",
            &phone_net,
            "lookup",
            "100",
        ])?;
        internet.ip(&["route", "add", lan, "via", &vps, "table", "100"])?;
        internet.ip(&["route", "add", &phone_net, "via", &vps, "table", "100"])?;
        internet.add_route_via(lan, IpAddr::V4(hub.cgnat_wan.v4))?;
        hub.cgnat.add_route_via(lan, IpAddr::V4(hub.home_wan.v4))?;
        hub.cgnat
            .load_nftables(&format!("insert rule ip cgnat postrouting ip saddr {lan} accept\n"))
            .context("exempting the home LAN from the carrier's masquerade")
    }
}

fn tune_all(namespaces: &[&Netns]) -> Result<()> {
    for netns in namespaces {
        tune(netns).with_context(|| format!("tuning namespace {}", netns.name()))?;
    }
    Ok(())
}

fn tune(netns: &Netns) -> Result<()> {
    netns.enable_forwarding()?;
    let links = netns.ip(&["-o", "link", "show", "type", "veth"])?;
    for device in veth_names(&links) {
        netns.run("ethtool", &["-K", device, "gro", "on"])?;
    }
    Ok(())
}

/// Interface names from `ip -o link show` lines (`2: eth0@if3: <...> ...`).
fn veth_names(listing: &str) -> Vec<&str> {
    listing
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name))
        .collect()
}

fn network_of(address: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(address) & 0xffff_ff00)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_come_from_ip_link_lines() {
        let listing = "2: eth0@if3: <BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue\n\
                       5: phone0@if4: <BROADCAST> mtu 1500\n";
        assert_eq!(veth_names(listing), vec!["eth0", "phone0"]);
        assert!(veth_names("").is_empty());
    }

    #[test]
    fn networks_are_slash_24() {
        assert_eq!(network_of(Ipv4Addr::new(198, 51, 100, 10)), Ipv4Addr::new(198, 51, 100, 0));
    }
}
