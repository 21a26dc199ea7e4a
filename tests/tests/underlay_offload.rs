//! gatewayd reads how each underlay completes checksums when it attaches, and again whenever
//! the interface changes: the TUN egress program leaves TCP's checksum to the device only
//! through an underlay that follows the skb's offsets. Turning transmit checksumming on and
//! off on gatewayd's underlay (`ethtool -K … tx on|off`) must show in `gateway status`.

use std::time::Duration;

use anyhow::Result;
use gateway_tests::gatewayd::DataPath;
use gateway_tests::pair::{Pair, PairSpec};
use gateway_tests::{Probe, TestDir, require_root, require_tools, wait_for};

const TOOLS: &[&str] = &["ip", "ping", "wg", "ethtool", "wireguard-go"];

#[test]
fn underlay_checksum_offload_is_followed() -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new("underlay-offload")?;
    let spec = PairSpec::with_wireguard_go(DataPath::Ebpf);
    let pair = Pair::build(&dir, &spec)?;
    let run = || -> Result<()> {
        pair.establish(&dir)?;
        let underlay = &pair.gatewayd_underlay().name;
        // The pair's gatewayd host checksums in software (`Pair::build`).
        expect_mode(&pair, underlay, "software")?;
        pair.gatewayd_ns().run("ethtool", &["-K", underlay, "tx", "on"])?;
        expect_mode(&pair, underlay, "generic")?;
        pair.gatewayd_ns().checksum_in_software(underlay)?;
        expect_mode(&pair, underlay, "software")
    };
    run().map_err(|error| dir.attach_logs(error))
}

/// Waits until `gateway status` shows the underlay's receive program with `mode`.
fn expect_mode(pair: &Pair, underlay: &str, mode: &str) -> Result<()> {
    let wanted = format!("(transmit checksum: {mode})");
    wait_for(&format!("{underlay} reported as {mode}"), Duration::from_secs(5), || {
        let attachments = pair.gatewayd.status()?.attachments;
        let line = attachments.iter().find(|a| a.starts_with(&format!("{underlay}: wg_rx")));
        Ok(match line {
            Some(line) if line.ends_with(&wanted) => Probe::Ready(()),
            _ => Probe::NotYet(format!("{attachments:?}")),
        })
    })
}
