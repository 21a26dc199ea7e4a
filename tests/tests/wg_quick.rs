//! `WG_QUICK_USERSPACE_IMPLEMENTATION=gatewayd wg-quick up <conf>` in a namespace (wg-quick
//! finds gatewayd in PATH and runs it daemonized, as it would wireguard-go), traffic to a
//! wireguard-go peer through the eBPF path, then `wg-quick down <conf>`: afterwards no
//! interface, no socket, no process and no program is left.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use gateway_common::maps::Stat;
use gateway_tests::gatewayd::{
    DetachedGatewayd, bpf_links_of, gatewayd_binary, leftovers, read_status,
};
use gateway_tests::pair::{
    GATEWAYD_PORT, GATEWAYD_TUNNEL, PEER_PORT, PEER_TUNNEL, TUNNEL_MTU, tunnel_cidrs, wg_config,
};
use gateway_tests::topology::{Direct, TopologyOptions};
use gateway_tests::traffic::{ping_until_clean, wait_for_ping};
use gateway_tests::wg::{Implementation, KeyPair, WgPeer};
use gateway_tests::{Netns, Probe, TestDir, require_root, require_tools, unique_ifname};

const TOOLS: &[&str] = &["ip", "ping", "wg", "wg-quick", "bpftool", "wireguard-go"];
const TIMEOUT: Duration = Duration::from_secs(15);

fn wg_quick(netns: &Netns, action: &str, config: &Path, bin_dir: &Path) -> Result<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin_dir.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    let mut command = netns.command("wg-quick");
    command
        .env("WG_QUICK_USERSPACE_IMPLEMENTATION", "gatewayd")
        .env("PATH", std::env::join_paths(dirs)?)
        .args([action, &config.to_string_lossy()]);
    let output = command.output().context("running wg-quick")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!("`wg-quick {action}` failed ({}):\n{text}", output.status);
    }
    Ok(text)
}

#[test]
fn wg_quick_up_traffic_down_leaves_nothing() -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new("wg-quick")?;
    let direct = Direct::build(&TopologyOptions::default())?;
    let binary = gatewayd_binary()?;
    let bin_dir: PathBuf = binary.parent().context("gatewayd has no folder")?.to_path_buf();
    let ifname = unique_ifname("wq")?;
    let (ours, theirs) = (KeyPair::generate()?, KeyPair::generate()?);
    let peer =
        WgPeer::start(Implementation::WireguardGo, &direct.server, &dir, &unique_ifname("wg")?)?;
    peer.setconf(&wg_config(&theirs, PEER_PORT, &ours, GATEWAYD_TUNNEL, None))?;
    peer.bring_up(&tunnel_cidrs(PEER_TUNNEL), TUNNEL_MTU)?;
    let endpoint = format!("{}:{PEER_PORT}", direct.server_if.v4);
    let config = dir.file(&format!("{ifname}.conf"));
    std::fs::write(
        &config,
        format!(
            "[Interface]\nPrivateKey = {}\nListenPort = {GATEWAYD_PORT}\n\
             Address = {}/24, {}/64\nMTU = {TUNNEL_MTU}\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {}/32, {}/128\nEndpoint = {endpoint}\n",
            ours.private_key,
            GATEWAYD_TUNNEL.0,
            GATEWAYD_TUNNEL.1,
            theirs.public_key,
            PEER_TUNNEL.0,
            PEER_TUNNEL.1,
        ),
    )?;

    let said = wg_quick(&direct.client, "up", &config, &bin_dir)?;
    let daemon = DetachedGatewayd::find(&ifname)?.with_context(|| {
        format!("no gatewayd process for {ifname} after wg-quick up; it said:\n{said}")
    })?;
    let result = (|| -> Result<()> {
        let status = read_status(&gateway::daemon::status::socket_path(&ifname))?;
        ensure!(
            status.data_path == "ebpf",
            "wg-quick's gatewayd runs the {} path",
            status.data_path
        );
        wait_for_ping(&direct.client, IpAddr::V4(PEER_TUNNEL.0), TIMEOUT)?;
        let report = ping_until_clean(&direct.server, IpAddr::V4(GATEWAYD_TUNNEL.0), 5, TIMEOUT)?;
        ping_until_clean(&direct.client, IpAddr::V6(PEER_TUNNEL.1), 3, TIMEOUT)?;
        let status = read_status(&gateway::daemon::status::socket_path(&ifname))?;
        let delivered =
            status.ebpf_stats.get(&format!("{:?}", Stat::RxDeliveredLocal)).copied().unwrap_or(0);
        ensure!(
            delivered >= u64::from(report.received),
            "XDP delivered {delivered} packets for {} requests",
            report.received
        );

        let links = bpf_links_of(daemon.pid)?;
        ensure!(!links.is_empty(), "wg-quick's gatewayd attached no program");
        let said = wg_quick(&direct.client, "down", &config, &bin_dir)?;
        dir.wait_for("gatewayd to exit after wg-quick down", TIMEOUT, || {
            Ok(if daemon.alive() {
                Probe::NotYet(format!("pid {} alive; wg-quick said: {said}", daemon.pid))
            } else {
                Probe::Ready(())
            })
        })?;
        let left = leftovers(&direct.client, &ifname, &links)?;
        ensure!(left.is_empty(), "left behind after wg-quick down: {left:?}");
        Ok(())
    })();
    drop(daemon);
    result.map_err(|error| dir.attach_logs(error))
}

/// The command wg-quick runs must be the one the tests built.
#[test]
fn gatewayd_binary_is_the_workspace_build() -> Result<()> {
    let binary = gatewayd_binary()?;
    let version = Command::new(&binary).arg("--version").output()?;
    ensure!(version.status.success(), "{} --version failed", binary.display());
    ensure!(
        String::from_utf8_lossy(&version.stdout).starts_with("gatewayd "),
        "{} is not gatewayd",
        binary.display()
    );
    Ok(())
}
