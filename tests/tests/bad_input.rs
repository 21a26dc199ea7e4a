//! Operator mistakes get one clear line and leave nothing behind.
//!
//! - Starting gatewayd wrongly (invalid name, name taken by another interface or another
//!   gatewayd, no CAP_NET_ADMIN): exit status non-zero, one line on stderr naming the problem,
//!   no interface, no socket. Also without `-f`: the error comes before the daemon detaches.
//! - Configuring it wrongly through the UAPI (bad keys, CIDRs, endpoints, ports, a UDP port in
//!   use): `wg set` fails, or where `wg` refuses to send such a request itself the raw request
//!   gets the errno wireguard-go would answer; the device is left exactly as it was.
//! - Asking for a forward wrongly (`gateway forward`: a port out of range, a bad address, an
//!   address no peer routes, an overlapping forward, an unknown interface, a name that is not
//!   a host name, a listen address not of this host, more forwards on one port than the data
//!   plane chains), or naming an entry peer that is not a key (`gatewayd --entry-peer`): one
//!   line naming the problem, and the forwards, listed and saved, are what they were.

use std::net::{IpAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use gateway_tests::gatewayd::{
    DataPath, Gatewayd, GatewaydOptions, gateway_cli_binary, gatewayd_binary, leftovers,
};
use gateway_tests::pair::{GATEWAYD_PORT, PEER_TUNNEL, Pair, PairSpec};
use gateway_tests::traffic::{udp_socket, wait_for_ping};
use gateway_tests::wg::{KeyPair, UAPI_DIR, WgDump};
use gateway_tests::{Netns, TestDir, require_root, require_tools, unique_ifname};

const TOOLS: &[&str] = &["ip", "ping", "wg", "setpriv", "bpftool", "wireguard-go"];
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a failed start ended.
struct Refusal {
    code: Option<i32>,
    stderr: String,
}

/// Runs `gatewayd args...` in `netns` (optionally under `wrapper`, e.g. setpriv) expecting it
/// to refuse; an error if it is still running after [`EXIT_TIMEOUT`].
fn refused_start(netns: &Netns, wrapper: &[&str], args: &[&str]) -> Result<Refusal> {
    let binary = gatewayd_binary()?;
    let mut command = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut command = netns.command(program);
            command.args(rest).arg(&binary);
            command
        }
        None => netns.command(&binary),
    };
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting gatewayd")?;
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output()?;
            bail!(
                "`gatewayd {}` did not refuse to start; it said: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output()?;
    Ok(Refusal {
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Non-zero exit, exactly one line on stderr, which contains `naming`.
fn check_refusal(refusal: &Refusal, naming: &str) -> Result<()> {
    ensure!(
        refusal.code.is_some_and(|code| code != 0),
        "exit status {:?} for a refused start (stderr: {})",
        refusal.code,
        refusal.stderr
    );
    let lines: Vec<&str> = refusal.stderr.lines().filter(|line| !line.trim().is_empty()).collect();
    ensure!(
        lines.len() == 1,
        "expected one line of error, got {}: {:?}",
        lines.len(),
        refusal.stderr
    );
    ensure!(lines[0].contains(naming), "the error {:?} does not name {naming:?}", lines[0]);
    Ok(())
}

fn uapi_socket(ifname: &str) -> PathBuf {
    PathBuf::from(UAPI_DIR).join(format!("{ifname}.sock"))
}

#[test]
fn bad_starts_fail_with_one_line_and_leave_nothing() -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new("bad-starts")?;
    let netns = Netns::new("bad")?;
    let other = Netns::new("bad")?;

    for (name, naming) in [
        ("bad/name", "invalid interface name"),
        ("gtbad-name-is-too-long", "invalid interface name"),
        ("", "invalid interface name"),
    ] {
        for foreground in [true, false] {
            let mut args = if foreground { vec!["-f"] } else { vec![] };
            args.push(name);
            let refusal = refused_start(&netns, &[], &args)?;
            check_refusal(&refusal, naming)
                .with_context(|| format!("gatewayd {}", args.join(" ")))?;
        }
    }

    // A name another interface has: a veth in this namespace.
    let taken = unique_ifname("vx")?;
    netns.ip(&["link", "add", &taken, "type", "veth", "peer", "name", &unique_ifname("vy")?])?;
    for foreground in [true, false] {
        let mut args = if foreground { vec!["-f"] } else { vec![] };
        args.push(&taken);
        let refusal = refused_start(&netns, &[], &args)?;
        check_refusal(&refusal, &format!("interface {taken} already exists"))
            .with_context(|| format!("gatewayd {}", args.join(" ")))?;
        ensure!(
            !uapi_socket(&taken).exists(),
            "a refused start left {}",
            uapi_socket(&taken).display()
        );
        let links = netns.ip(&["-d", "link", "show", &taken])?;
        ensure!(links.contains("veth"), "the existing veth {taken} was disturbed: {links}");
    }

    // A name another gatewayd serves (in another namespace: the socket folder is shared).
    let running_name = unique_ifname("gw")?;
    let running =
        Gatewayd::start(&other, &dir, &running_name, &GatewaydOptions::new(DataPath::Userspace))?;
    let refusal = refused_start(&netns, &[], &["-f", &running_name])?;
    check_refusal(&refusal, "in use").context("a second gatewayd on a name in use")?;
    let shown = running.show().context("the first gatewayd after a second one was refused")?;
    ensure!(shown.listen_port != 0, "the first gatewayd lost its socket: {shown:?}");
    let absent = netns.ip(&["-o", "link", "show"])?;
    ensure!(
        !absent.contains(&running_name),
        "the refused gatewayd created {running_name}: {absent}"
    );
    drop(running);

    // Root without capabilities.
    let name = unique_ifname("gw")?;
    let no_caps = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"];
    let refusal = refused_start(&netns, &no_caps, &["-f", &name])?;
    check_refusal(&refusal, "CAP_NET_ADMIN")?;
    let left = leftovers(&netns, &name, &[])?;
    ensure!(left.is_empty(), "a start without CAP_NET_ADMIN left {left:?}");
    Ok(())
}

/// `wg set` arguments `wg` itself rejects, and the raw request that carries the same mistake
/// to the daemon, answered with EINVAL.
struct Mistake {
    what: &'static str,
    wg_args: Vec<String>,
    raw: String,
}

fn mistakes(valid_peer: &KeyPair, key_file: &str) -> Vec<Mistake> {
    let hex = hex_key(&valid_peer.public_key);
    let peer = |line: &str| format!("set=1\npublic_key={hex}\n{line}\n\n");
    let strings = |args: &[&str]| args.iter().map(|arg| arg.to_string()).collect::<Vec<_>>();
    vec![
        Mistake {
            what: "private key",
            wg_args: strings(&["private-key", key_file]),
            raw: "set=1\nprivate_key=0123456789abcdef\n\n".into(),
        },
        Mistake {
            what: "public key",
            wg_args: strings(&["peer", "not-a-key", "allowed-ips", "10.99.0.0/24"]),
            raw: "set=1\npublic_key=zz\nallowed_ip=10.99.0.0/24\n\n".into(),
        },
        Mistake {
            what: "CIDR",
            wg_args: strings(&["peer", &valid_peer.public_key, "allowed-ips", "10.99.0.0/33"]),
            raw: peer("allowed_ip=10.99.0.0/33"),
        },
        Mistake {
            what: "endpoint",
            // wg resolves endpoints with getaddrinfo, which takes 99999 modulo 65536 (and
            // retries unknown service names for a minute): a missing port is what it
            // refuses at once.
            wg_args: strings(&["peer", &valid_peer.public_key, "endpoint", "192.0.2.1"]),
            raw: peer("endpoint=192.0.2.1:99999"),
        },
        Mistake {
            what: "IPv6 endpoint",
            wg_args: strings(&["peer", &valid_peer.public_key, "endpoint", "[2001:db8::1:51820"]),
            raw: peer("endpoint=[2001:db8::1:51820"),
        },
        Mistake {
            what: "listen port",
            // 70000 would become 4464 in wg's getaddrinfo: a name is what it refuses.
            wg_args: strings(&["listen-port", "no-such-port"]),
            raw: "set=1\nlisten_port=70000\n\n".into(),
        },
        Mistake {
            what: "keepalive",
            wg_args: strings(&["peer", &valid_peer.public_key, "persistent-keepalive", "70000"]),
            raw: peer("persistent_keepalive_interval=70000"),
        },
    ]
}

/// A base64 key as the UAPI wants it (lowercase hex).
fn hex_key(base64: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut bytes = Vec::new();
    for &symbol in base64.as_bytes().iter().take_while(|&&b| b != b'=') {
        let value = ALPHABET.iter().position(|&a| a == symbol).expect("a base64 key") as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count) as u8);
        }
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn bad_configuration_is_refused_and_changes_nothing() -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    for data_path in [DataPath::Ebpf, DataPath::Userspace] {
        let dir = TestDir::new(&format!("bad-config-{data_path}"))?;
        let spec = PairSpec::with_wireguard_go(data_path);
        let pair = Pair::build(&dir, &spec)?;
        refuse_mistakes(&pair, &dir).map_err(|error| dir.attach_logs(error))?;
    }
    Ok(())
}

fn refuse_mistakes(pair: &Pair, dir: &TestDir) -> Result<()> {
    pair.establish(dir)?;
    let before = pair.gatewayd.show()?;
    let stranger = KeyPair::generate()?;
    let key_file = dir.file("bad.key");
    std::fs::write(&key_file, "this is not a key\n")?;
    for mistake in mistakes(&stranger, &key_file.to_string_lossy()) {
        let args: Vec<&str> = mistake.wg_args.iter().map(String::as_str).collect();
        let refused = pair.gatewayd.set(&args);
        ensure!(
            refused.is_err(),
            "`wg set {}` with a bad {} succeeded",
            args.join(" "),
            mistake.what
        );
        let reply = pair.gatewayd.uapi_request(&mistake.raw)?;
        ensure!(
            reply == "errno=-22\n\n",
            "a raw request with a bad {} got {reply:?}, not errno=-22 (EINVAL)",
            mistake.what
        );
        unchanged(&before, &pair.gatewayd.show()?, mistake.what)?;
    }

    // A UDP port something else holds: EADDRINUSE, and the old port stays.
    let blocker: UdpSocket = udp_socket(pair.gatewayd_ns(), "0.0.0.0:0".parse()?)?;
    let taken = blocker.local_addr()?.port();
    let error = pair
        .gatewayd
        .set(&["listen-port", &taken.to_string()])
        .err()
        .context("moving to a UDP port in use succeeded")?;
    ensure!(format!("{error:#}").contains("Address already in use"), "wg said: {error:#}");
    let reply = pair.gatewayd.uapi_request(&format!("set=1\nlisten_port={taken}\n\n"))?;
    ensure!(
        reply == "errno=-98\n\n",
        "a raw request for a port in use got {reply:?}, not errno=-98"
    );
    let after = pair.gatewayd.show()?;
    ensure!(after.listen_port == GATEWAYD_PORT, "the listen port moved to {}", after.listen_port);
    unchanged(&before, &after, "port in use")?;
    // And the tunnel still works on the port it kept.
    wait_for_ping(pair.gatewayd_ns(), IpAddr::V4(PEER_TUNNEL.0), Duration::from_secs(10))?;
    Ok(())
}

/// The device as `wg` sees it is what it was (transfer counters and handshake times aside).
fn unchanged(before: &WgDump, after: &WgDump, mistake: &str) -> Result<()> {
    let shape = |dump: &WgDump| {
        let peers: Vec<_> = dump
            .peers
            .iter()
            .map(|peer| {
                (
                    peer.public_key.clone(),
                    peer.endpoint,
                    peer.allowed_ips.clone(),
                    peer.persistent_keepalive,
                )
            })
            .collect();
        (dump.private_key.clone(), dump.listen_port, dump.fwmark, peers)
    };
    ensure!(
        shape(before) == shape(after),
        "a bad {mistake} changed the device:\nbefore {before:?}\nafter  {after:?}"
    );
    Ok(())
}

/// Runs `gateway args...` in `netns`; how it ended.
fn cli(netns: &Netns, args: &[&str]) -> Result<(Refusal, String)> {
    let output = netns
        .command(gateway_cli_binary()?)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running gateway")?;
    let refusal = Refusal {
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    Ok((refusal, String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// Removes a daemon's state directory (its saved forwards) when dropped.
struct StateDirectory(PathBuf);

impl Drop for StateDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn bad_forwards_fail_with_one_line_and_change_nothing() -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new("bad-forwards")?;
    let netns = Netns::new("bad")?;

    let name = unique_ifname("gw")?;
    let refusal = refused_start(&netns, &[], &["-f", "--entry-peer", "not-a-key", &name])?;
    check_refusal(&refusal, "--entry-peer 'not-a-key' is not a public key")?;
    let left = leftovers(&netns, &name, &[])?;
    ensure!(left.is_empty(), "a start with a bad --entry-peer left {left:?}");

    let name = unique_ifname("gw")?;
    let state = StateDirectory(gateway::daemon::forwards::default_state_directory(&name));
    let gatewayd =
        Gatewayd::start(&netns, &dir, &name, &GatewaydOptions::new(DataPath::Userspace))?;
    refuse_forwards(&netns, &gatewayd, &name, &state.0).map_err(|error| dir.attach_logs(error))
}

fn refuse_forwards(
    netns: &Netns,
    gatewayd: &Gatewayd,
    name: &str,
    state: &std::path::Path,
) -> Result<()> {
    let home = KeyPair::generate()?;
    gatewayd.set(&["peer", &home.public_key, "allowed-ips", "10.77.0.0/24"])?;
    for address in ["192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.14", "192.0.2.15"] {
        netns.ip(&["address", "add", &format!("{address}/32"), "dev", "lo"])?;
    }
    let added = [
        "tcp 8000-8010 --to 10.77.0.2:9000",
        "tls 443 --sni a.example --to 10.77.0.3:443",
        "udp 53 --listen 192.0.2.11 --to 10.77.0.4",
        "udp 5000 --listen 192.0.2.11 --to 10.77.0.5",
        "udp 5000 --listen 192.0.2.12 --to 10.77.0.5",
        "udp 5000 --listen 192.0.2.13 --to 10.77.0.5",
        "udp 5000 --listen 192.0.2.14 --to 10.77.0.5",
    ];
    for forward in added {
        let mut args = vec!["forward", "add", name];
        args.extend(forward.split(' '));
        let (ended, _) = cli(netns, &args)?;
        ensure!(ended.code == Some(0), "`gateway {}` failed: {}", args.join(" "), ended.stderr);
    }
    let list = |netns: &Netns| -> Result<String> {
        let (ended, listed) = cli(netns, &["forward", "list", name, "--json"])?;
        ensure!(ended.code == Some(0), "`gateway forward list` failed: {}", ended.stderr);
        Ok(listed)
    };
    let listed = list(netns)?;
    let saved_path = state.join("forwards.json");
    let saved = std::fs::read(&saved_path)
        .with_context(|| format!("the forwards were not saved in {}", saved_path.display()))?;
    ensure!(listed.matches("\"protocol\"").count() == added.len(), "listed {listed}");

    let absent = unique_ifname("gw")?;
    let mistakes: Vec<(Vec<&str>, String)> = vec![
        (vec!["add", name, "tcp", "70000", "--to", "10.77.0.2"], "'70000' is not a port".into()),
        (vec!["add", name, "udp", "0-10", "--to", "10.77.0.2"], "'0' is not a port".into()),
        (
            vec!["add", name, "tcp", "22", "--to", "10.77.0.300"],
            "--to '10.77.0.300' is not an IP address".into(),
        ),
        (
            vec!["add", name, "tcp", "22", "--to", "192.0.2.9"],
            "no peer's AllowedIPs route 192.0.2.9".into(),
        ),
        (
            vec!["add", name, "tcp", "8005", "--to", "10.77.0.2"],
            "overlaps the forward 'tcp 8000-8010 --to 10.77.0.2:9000'".into(),
        ),
        (
            vec!["add", name, "tls", "443", "--sni", "A.Example", "--to", "10.77.0.9:443"],
            "overlaps the forward 'tls 443 --sni a.example".into(),
        ),
        (
            vec!["add", name, "tls", "443", "--sni", "bad_name!", "--to", "10.77.0.9:443"],
            "'bad_name!' is not a host name".into(),
        ),
        (
            vec!["add", name, "http", "80", "--host", "*", "--to", "10.77.0.9:80"],
            "'*' is not a host name".into(),
        ),
        (
            vec!["add", name, "tcp", "22", "--listen", "192.0.2.77", "--to", "10.77.0.2"],
            "--listen 192.0.2.77 is not an address of this host".into(),
        ),
        (
            vec!["add", name, "tcp", "22", "--listen", "nowhere", "--to", "10.77.0.2"],
            "--listen 'nowhere' is not an IP address".into(),
        ),
        (
            vec!["add", name, "udp", "5000", "--listen", "192.0.2.15", "--to", "10.77.0.5"],
            "at most 4 per port".into(),
        ),
        (vec!["add", name, "quic", "443", "--to", "10.77.0.2"], "unknown protocol 'quic'".into()),
        (vec!["add", name, "tcp", "22"], "--to".into()),
        (
            vec!["add", &absent, "tcp", "22", "--to", "10.77.0.2"],
            format!("no gatewayd runs on {absent}"),
        ),
        (vec!["remove", name, "tcp", "8005"], "there is no forward tcp 8005".into()),
        (vec!["remove", name, "udp", "5000"], "say which with --listen".into()),
        (vec!["remove", &absent, "tcp", "8000-8010"], format!("no gatewayd runs on {absent}")),
        (vec!["list", &absent], format!("no gatewayd runs on {absent}")),
    ];
    for (words, naming) in mistakes {
        let mut args = vec!["forward"];
        args.extend(&words);
        let (ended, _) = cli(netns, &args)?;
        check_refusal(&ended, &naming).with_context(|| format!("gateway {}", args.join(" ")))?;
        ensure!(
            list(netns)? == listed,
            "`gateway {}` changed the forwards: {}",
            args.join(" "),
            list(netns)?
        );
        ensure!(
            std::fs::read(&saved_path)? == saved,
            "`gateway {}` changed {}",
            args.join(" "),
            saved_path.display()
        );
    }
    Ok(())
}
