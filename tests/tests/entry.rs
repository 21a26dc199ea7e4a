//! placeholder
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Result, ensure};
use gateway_tests::entry_baseline::{Baseline, BaselineForwards, PortForward};
use gateway_tests::topology::{Entry, TopologyOptions};
use gateway_tests::traffic::{PeerReportServer, client_hello, tcp_exchange, udp_exchange, POST_QUANTUM_SIZE};
use gateway_tests::wg::Implementation;
use gateway_tests::{TestDir, require_root, require_tools};

const TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn baseline() -> Result<()> {
    require_root()?;
    require_tools(&["ip", "nft", "wg", "wireguard-go", "nginx", "ss"])?;
    let dir = TestDir::new("entry-baseline")?;
    let entry = Entry::build(&TopologyOptions::default())?;
    let nas = SocketAddr::new(IpAddr::V4(entry.nas_if.v4), 0);
    let host = SocketAddr::new(IpAddr::V4(entry.host_if.v4), 0);
    let at = |a: SocketAddr, port| SocketAddr::new(a.ip(), port);
    let forwards = BaselineForwards {
        ports: vec![
            PortForward { udp: false, public_port: 2222, backend: at(nas, 22) },
            PortForward { udp: true, public_port: 5353, backend: at(nas, 53) },
        ],
        sni_port: 443,
        sni: vec![("a.example.com".into(), at(nas, 8443)), ("b.example.com".into(), at(host, 8443))],
    };
    let _nas_server = PeerReportServer::start(&entry.nas, &dir, "nas", &[22, 8443], &[53])?;
    let _host_server = PeerReportServer::start(&entry.host, &dir, "host", &[8443], &[])?;
    let _baseline = Baseline::start(&entry, &dir, Implementation::WireguardGo, &forwards)?;
    let public = IpAddr::V4(entry.vps_wan.v4);
    let t = tcp_exchange(&entry.client, SocketAddr::new(public, 2222), &[b"hello\n"], Duration::ZERO, TIMEOUT).map_err(|e| dir.attach_logs(e))?;
    eprintln!("tcp {t:?}");
    let u = udp_exchange(&entry.client, IpAddr::V4(entry.client_wan.v4), SocketAddr::new(public, 5353), b"hi", TIMEOUT)?;
    eprintln!("udp {u:?}");
    let hello = client_hello("a.example.com", POST_QUANTUM_SIZE);
    let (first, second) = hello.split_at(700);
    let s = tcp_exchange(&entry.client, SocketAddr::new(public, 443), &[first, second], Duration::from_millis(200), TIMEOUT).map_err(|e| dir.attach_logs(e))?;
    eprintln!("sni {s:?}");
    let s = tcp_exchange(&entry.client, SocketAddr::new(public, 443), &[&client_hello("b.example.com", 0)], Duration::ZERO, TIMEOUT).map_err(|e| dir.attach_logs(e))?;
    eprintln!("sni {s:?}");
    ensure!(true);
    Ok(())
}
