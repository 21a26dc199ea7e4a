//! SIGTERM and SIGINT stop gatewayd cleanly, and so does deleting its interface (as with
//! wireguard-go): exit status 0, and its interface, UAPI socket, status socket and (eBPF on)
//! every program it attached — XDP on the underlay it found from the peer's endpoint, TC on
//! its TUN — are gone.

use std::time::Duration;

use anyhow::{Result, ensure};
use gateway_tests::gatewayd::{DataPath, leftovers};
use gateway_tests::pair::{Pair, PairSpec};
use gateway_tests::{TestDir, require_root, require_tools};

const TOOLS: &[&str] = &["ip", "ping", "wg", "bpftool", "wireguard-go"];
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
enum Stop {
    Signal(i32),
    DeleteInterface,
}

fn clean_exit(stop: Stop, data_path: DataPath) -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new(&format!("clean-exit-{stop:?}-{data_path}"))?;
    let spec = PairSpec::with_wireguard_go(data_path);
    let mut pair = Pair::build(&dir, &spec)?;
    let result = (|| -> Result<()> {
        pair.establish(&dir)?;
        let ifname = pair.gatewayd.ifname().to_string();
        let netns = pair.direct.client.name().to_string();
        let links = pair.gatewayd.bpf_links()?;
        let before = leftovers(pair.gatewayd_ns(), &ifname, &links)?;
        // What the check below must find gone is there now (else it would prove nothing):
        // with eBPF, XDP on the underlay, TC ingress there (the handoff) and TC egress on the
        // TUN.
        let mut expected = vec!["interface", "wireguard", "gatewayd"];
        if data_path == DataPath::Ebpf {
            expected.extend(["XDP program on eth0", "xdp link", "tcx link"]);
            let tcx = links.iter().filter(|link| link.kind == "tcx").count();
            ensure!(tcx >= 2, "gatewayd holds {tcx} TCX links, expected 2 or more: {links:?}");
        }
        for what in expected {
            ensure!(
                before.iter().any(|found| found.contains(what)),
                "before stopping, no {what} was found in {netns}: {before:?}"
            );
        }
        let status = match stop {
            Stop::Signal(signal) => pair.gatewayd.signal_and_wait(signal, EXIT_TIMEOUT)?,
            Stop::DeleteInterface => {
                pair.gatewayd_ns().ip(&["link", "delete", &ifname])?;
                pair.gatewayd.wait_exit(EXIT_TIMEOUT)?
            }
        };
        ensure!(status.success(), "gatewayd exited with {status} after {stop:?}");
        let after = leftovers(pair.gatewayd_ns(), &ifname, &links)?;
        ensure!(after.is_empty(), "left behind after {stop:?}: {after:?}");
        Ok(())
    })();
    result.map_err(|error| dir.attach_logs(error))
}

#[test]
fn sigterm_with_ebpf_removes_everything() -> Result<()> {
    clean_exit(Stop::Signal(libc::SIGTERM), DataPath::Ebpf)
}

#[test]
fn sigint_with_ebpf_removes_everything() -> Result<()> {
    clean_exit(Stop::Signal(libc::SIGINT), DataPath::Ebpf)
}

#[test]
fn sigterm_without_ebpf_removes_everything() -> Result<()> {
    clean_exit(Stop::Signal(libc::SIGTERM), DataPath::Userspace)
}

#[test]
fn deleting_the_interface_with_ebpf_removes_everything() -> Result<()> {
    clean_exit(Stop::DeleteInterface, DataPath::Ebpf)
}
