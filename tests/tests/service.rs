//! gatewayd as systemd runs it (dist/systemd/gatewayd@.service), without systemd: the unit's
//! foreground command in a namespace, with exactly the unit's capability bounding set (through
//! setpriv) and `NOTIFY_SOCKET` naming a datagram socket the test listens on, as the service
//! manager's.
//!
//! - The unit's ExecStart (`gatewayd --foreground --config /etc/gateway/%i.toml %i`, the file
//!   the test's): READY=1 arrives once the daemon serves and has applied the file: when it
//!   does, the interface exists, `wg` reaches the UAPI socket and shows the file's peer and
//!   port, the interface has the file's address, is up and routes the peer's LAN, and the status
//!   socket reports the eBPF data path (the capabilities are enough for the programs). The
//!   unit's ExecReload (SIGHUP) applies an edited file. SIGTERM brings STOPPING=1, exit 0, and
//!   the interface is gone.
//! - A start gatewayd refuses (a name too long) exits non-zero without READY=1.
//! - The ExecStartPre step (`gatewayd --config … --check`) refuses a bad file with one line
//!   naming file, line and field, including what the service could not undo when gatewayd
//!   stops (a default route with table = "auto") and the example's placeholders.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use gateway::daemon::status;
use gateway_tests::gatewayd::{gatewayd_binary, read_status};
use gateway_tests::wg::KeyPair;
use gateway_tests::{Netns, Process, TestDir, require_root, require_tools, unique_ifname};

const TOOLS: &[&str] = &["ip", "wg", "setpriv"];
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

fn dist(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist").join(path)
}

/// The unit's value of `key` (the last assignment, as systemd reads it).
fn unit_setting(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
        .map(|value| value.trim().to_string())
}

/// The unit's CapabilityBoundingSet as setpriv's `--bounding-set` (`-all,+net_admin,...`).
fn bounding_set(unit: &str) -> Result<String> {
    let caps = unit_setting(unit, "CapabilityBoundingSet")
        .context("the unit sets no CapabilityBoundingSet")?;
    let mut spec = "-all".to_string();
    for cap in caps.split_whitespace() {
        let name =
            cap.strip_prefix("CAP_").with_context(|| format!("{cap} is not a capability"))?;
        spec.push_str(&format!(",+{}", name.to_lowercase()));
    }
    Ok(spec)
}

/// `setpriv` with the unit's bounding set, inside `netns`, running `program`.
fn with_units_capabilities(netns: &Netns, unit: &str, program: &Path) -> Result<Command> {
    let mut command = netns.command("setpriv");
    command.args(["--bounding-set", &bounding_set(unit)?, "--inh-caps=-all"]).arg(program);
    Ok(command)
}

/// A command line of the unit (ExecStart, ExecStartPre) as it runs for instance `ifname`
/// with `config` as its configuration file: the words after the program.
fn unit_arguments(command: &str, ifname: &str, config: &Path) -> Vec<String> {
    command
        .split_whitespace()
        .skip(1)
        .map(|word| {
            word.replace("/etc/gateway/%i.toml", &config.to_string_lossy()).replace("%i", ifname)
        })
        .collect()
}

/// The next notification, while `process` runs (its exit is an error).
fn next_notification(
    socket: &UnixDatagram,
    process: &mut Process,
    timeout: Duration,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buffer = [0u8; 4096];
    loop {
        match socket.recv(&mut buffer) {
            Ok(length) => return Ok(String::from_utf8_lossy(&buffer[..length]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("reading the notify socket"),
        }
        process.check_running()?;
        if Instant::now() >= deadline {
            bail!("no notification within {timeout:?}; gatewayd's output:\n{}", process.log());
        }
    }
}

#[test]
fn ready_once_serving_with_the_units_capabilities_then_stopping() -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new("service-ready")?;
    let unit = std::fs::read_to_string(dist("systemd/gatewayd@.service"))?;
    ensure!(
        unit_setting(&unit, "Type").as_deref() == Some("notify"),
        "the unit is not Type=notify"
    );
    let exec_start = unit_setting(&unit, "ExecStart").context("the unit has no ExecStart")?;
    ensure!(
        exec_start.contains("--foreground"),
        "ExecStart does not keep gatewayd in the foreground"
    );

    ensure!(
        unit_setting(&unit, "ExecReload").as_deref() == Some("/bin/kill -HUP $MAINPID"),
        "the unit does not reload with SIGHUP"
    );

    let netns = Netns::new("svc")?;
    let ifname = unique_ifname("sv")?;
    let (own, peer) = (KeyPair::generate()?, KeyPair::generate()?);
    let config = dir.file(&format!("{ifname}.toml"));
    let text = format!(
        "[interface]\nprivate_key = \"{}\"\naddresses = [\"10.77.0.1/24\"]\nlisten_port = 51877\n\n\
         [[peer]]\npublic_key = \"{}\"\nallowed_ips = [\"10.77.0.3/32\", \"192.168.77.0/24\"]\n",
        own.private_key, peer.public_key
    );
    std::fs::write(&config, &text)?;
    let notify_path = dir.file("notify.sock");
    let notify = UnixDatagram::bind(&notify_path)?;
    let mut command = with_units_capabilities(&netns, &unit, &gatewayd_binary()?)?;
    command.args(unit_arguments(&exec_start, &ifname, &config)).env("NOTIFY_SOCKET", &notify_path);
    let mut gatewayd = Process::spawn(&dir, &ifname, &mut command)?;
    let result = (|| -> Result<()> {
        let ready = next_notification(&notify, &mut gatewayd, READY_TIMEOUT)?;
        // What systemd's ExecStartPost may rely on, checked the moment READY=1 arrived.
        netns.ip(&["link", "show", "dev", &ifname]).context("the interface at READY=1")?;
        netns.run("wg", &["show", &ifname]).context("the UAPI socket at READY=1")?;
        let status = read_status(&status::socket_path(&ifname)).context("the status socket")?;
        ensure!(
            ready == format!("READY=1\nSTATUS=serving {ifname} (eBPF data path)"),
            "the first notification: {ready:?}"
        );
        ensure!(
            status.data_path == "ebpf",
            "with the unit's capabilities the data path is {}; gatewayd's output:\n{}",
            status.data_path,
            gatewayd.log()
        );

        // What ExecStart applied from the file before READY=1.
        let peers = netns.run("wg", &["show", &ifname, "peers"])?;
        ensure!(peers.trim() == peer.public_key, "peers at READY=1: {peers:?}");
        let port = netns.run("wg", &["show", &ifname, "listen-port"])?;
        ensure!(port.trim() == "51877", "listen port at READY=1: {port:?}");
        let link = netns.ip(&["-o", "address", "show", "dev", &ifname])?;
        ensure!(link.contains("inet 10.77.0.1/24"), "addresses at READY=1: {link}");
        let flags = netns.ip(&["-o", "link", "show", "dev", &ifname])?;
        ensure!(flags.contains(",UP"), "the link at READY=1: {flags}");
        let routes = netns.ip(&["route", "show", "dev", &ifname])?;
        ensure!(routes.contains("192.168.77.0/24"), "routes at READY=1: {routes}");
        // 10.77.0.3/32 is inside the address's /24: no route of its own, as wg-quick.
        ensure!(!routes.contains("10.77.0.3"), "routes at READY=1: {routes}");

        // ExecReload: SIGHUP applies the edited file.
        let second = KeyPair::generate()?;
        let edited = format!(
            "{text}\n[[peer]]\npublic_key = \"{}\"\nallowed_ips = [\"10.77.0.4/32\"]\n",
            second.public_key
        );
        std::fs::write(&config, edited)?;
        gatewayd.signal(libc::SIGHUP);
        dir.wait_for("the reload to add the second peer", READY_TIMEOUT, || {
            let peers = netns.run("wg", &["show", &ifname, "peers"])?;
            Ok(if peers.contains(&second.public_key) {
                gateway_tests::Probe::Ready(())
            } else {
                gateway_tests::Probe::NotYet(peers)
            })
        })?;

        gatewayd.signal(libc::SIGTERM);
        let stopping = next_notification(&notify, &mut gatewayd, EXIT_TIMEOUT)?;
        ensure!(stopping.starts_with("STOPPING=1\n"), "after SIGTERM: {stopping:?}");
        let exit = gatewayd.wait_exit(EXIT_TIMEOUT)?;
        ensure!(exit.success(), "gatewayd exited with {exit}");
        ensure!(
            netns.ip(&["link", "show", "dev", &ifname]).is_err(),
            "{ifname} is still there after gatewayd exited"
        );
        Ok(())
    })();
    gatewayd.stop();
    result.map_err(|error| dir.attach_logs(error))
}

#[test]
fn a_refused_start_sends_no_readiness() -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new("service-refused")?;
    let netns = Netns::new("svr")?;
    let notify_path = dir.file("notify.sock");
    let notify = UnixDatagram::bind(&notify_path)?;
    let mut command = netns.command(gatewayd_binary()?);
    command.args(["--foreground", "a-name-too-long-for-linux"]).env("NOTIFY_SOCKET", &notify_path);
    let mut gatewayd = Process::spawn(&dir, "refused", &mut command)?;
    let exit = gatewayd.wait_exit(EXIT_TIMEOUT)?;
    ensure!(!exit.success(), "gatewayd accepted a 25-character interface name");
    notify.set_nonblocking(true)?;
    let mut buffer = [0u8; 512];
    match notify.recv(&mut buffer) {
        Ok(length) => {
            bail!("a refused start notified {:?}", String::from_utf8_lossy(&buffer[..length]))
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The unit's ExecStartPre (`gatewayd --config … --check`) on `text`, written as
/// `dir/wg9.toml`: its exit and stderr.
fn check(dir: &TestDir, text: &str) -> Result<(bool, String)> {
    let path = dir.file("wg9.toml");
    std::fs::write(&path, text)?;
    check_file(&path)
}

fn check_file(path: &Path) -> Result<(bool, String)> {
    let unit = std::fs::read_to_string(dist("systemd/gatewayd@.service"))?;
    let pre = unit_setting(&unit, "ExecStartPre").context("the unit has no ExecStartPre")?;
    ensure!(pre.contains("--check"), "ExecStartPre does not check: {pre}");
    let output =
        Command::new(gatewayd_binary()?).args(unit_arguments(&pre, "wg9", path)).output()?;
    Ok((output.status.success(), String::from_utf8_lossy(&output.stderr).trim().to_string()))
}

#[test]
fn the_start_check_refuses_what_the_service_cannot_undo() -> Result<()> {
    let dir = TestDir::new("service-check")?;
    let key = "eFMYgDy5lbB9RH8TJ6qYVOcUPjPGOO4ON7MdJfz2fnY=";
    let interface =
        format!("[interface]\nprivate_key = \"{key}\"\naddresses = [\"10.9.0.1/24\"]\n");
    let peer = "[[peer]]\npublic_key = \"VCxVk4u5rgRMG8bpkVGfOwrNm7P5j4DWx5mjLLmd3Ek=\"\n";

    let (ok, said) = check(&dir, &format!("{interface}{peer}allowed_ips = [\"10.9.0.2/32\"]\n"))?;
    ensure!(ok && said.is_empty(), "a plain file was refused: {said}");
    let (ok, said) =
        check(&dir, &format!("{interface}table = \"off\"\n{peer}allowed_ips = [\"0.0.0.0/0\"]\n"))?;
    ensure!(ok, "a default route with table = off was refused: {said}");

    for (text, expected) in [
        (format!("{interface}dns = [\"1.1.1.1\"]\n"), ":4: interface.dns: unknown field `dns`"),
        (format!("{interface}post_up = \"iptables -A FORWARD\"\n"), ":4: interface.post_up"),
        (
            format!("{interface}{peer}allowed_ips = [\"10.9.0.2/32\", \"::/0\"]\n"),
            "interface.table: a peer's allowed_ips hold the default route ::/0",
        ),
        (format!("{interface}mtu = \"big\"\n"), ":4: interface.mtu: invalid type: string"),
    ] {
        let (ok, said) = check(&dir, &text)?;
        ensure!(!ok, "accepted, expected a refusal with {expected:?}:\n{text}");
        ensure!(said.lines().count() == 1, "more than one line: {said}");
        ensure!(
            said.contains(expected) && said.contains("wg9.toml"),
            "expected {expected:?} naming the file, got: {said}"
        );
    }
    let (ok, said) = check(&dir, "")?;
    ensure!(!ok && said.contains("wg9.toml: interface: missing"), "an empty file: {said}");
    let (ok, said) = check_file(&dist("etc/gateway/wg0.toml"))?;
    ensure!(
        !ok && said.contains("wg0.toml:11: interface.private_key: not a base64 key"),
        "the example's placeholder key: {said}"
    );
    let (ok, said) = check_file(&dir.file("absent.toml"))?;
    ensure!(!ok && said.contains("absent.toml: no such file"), "a missing file: {said}");
    Ok(())
}
