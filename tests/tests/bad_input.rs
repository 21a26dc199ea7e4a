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
//! - Starting from a bad configuration file (`gatewayd --config`, with and without `--check`):
//!   one line naming file, line and field; a listen port in use: one line; nothing left.

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

#[test]
fn bad_peer_commands_fail_with_one_line_and_change_nothing() -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new("bad-peer-commands")?;
    let netns = Netns::new("bad")?;
    let name = unique_ifname("gw")?;
    let gatewayd =
        Gatewayd::start(&netns, &dir, &name, &GatewaydOptions::new(DataPath::Userspace))?;
    refuse_peer_commands(&netns, &dir, &gatewayd, &name).map_err(|error| dir.attach_logs(error))
}

/// `gateway status/peers/routes/forwards/export/remove-peer` with an interface no gatewayd
/// runs, a peer no key starts with, a prefix two keys share, an unwritable PNG path, a private
/// key that is not the peer's or is missing where a QR code needs it, a bad endpoint, an
/// unknown shell: one line each, and the peers are what they were.
fn refuse_peer_commands(
    netns: &Netns,
    dir: &TestDir,
    gatewayd: &Gatewayd,
    name: &str,
) -> Result<()> {
    let own = KeyPair::generate()?;
    let phone = KeyPair::generate()?;
    let laptop = KeyPair::generate()?;
    // Two keys that share their first 42 base64 characters.
    let twin = |last: u8| {
        let mut key = [1u8; 32];
        key[31] = last;
        gateway::uapi::Key(key).to_base64()
    };
    let (twin_a, twin_b) = (twin(1), twin(2));
    let shared = &twin_a[..8];
    ensure!(twin_b.starts_with(shared), "{twin_a} and {twin_b} share no prefix");
    let own_key = dir.file("own.key");
    std::fs::write(&own_key, format!("{}\n", own.private_key))?;
    let phone_key = dir.file("phone.key");
    std::fs::write(&phone_key, format!("{}\n", phone.private_key))?;
    let laptop_key = dir.file("laptop.key");
    std::fs::write(&laptop_key, format!("{}\n", laptop.private_key))?;
    let own_key = own_key.to_string_lossy().into_owned();
    let phone_key = phone_key.to_string_lossy().into_owned();
    let laptop_key = laptop_key.to_string_lossy().into_owned();
    gatewayd.set(&["private-key", &own_key])?;
    gatewayd.set(&["peer", &phone.public_key, "allowed-ips", "10.9.0.2/32"])?;
    gatewayd.set(&["peer", &twin_a, "allowed-ips", "10.9.0.3/32"])?;
    gatewayd.set(&["peer", &twin_b, "allowed-ips", "10.9.0.4/32"])?;
    let before = gatewayd.show()?;
    ensure!(before.peers.len() == 3, "the peers were not set: {before:?}");

    let absent = unique_ifname("gw")?;
    let no_daemon = format!("no gatewayd runs on {absent}");
    let unwritable = dir.file("no-such-directory/phone.png");
    let unwritable = unwritable.to_string_lossy().into_owned();
    let phone_prefix = &phone.public_key[..8];
    let export = |extra: &[&'static str]| -> Vec<String> {
        let mut args: Vec<String> =
            ["export", name, phone_prefix, "--endpoint", "vps.example:51820"]
                .map(String::from)
                .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let with = |mut args: Vec<String>, more: &[&str]| {
        args.extend(more.iter().map(|s| s.to_string()));
        args
    };
    let words = |line: &str| line.split(' ').map(String::from).collect::<Vec<String>>();
    let mistakes: Vec<(Vec<String>, String)> = vec![
        (words(&format!("status {absent}")), no_daemon.clone()),
        (words(&format!("status {absent} --json")), no_daemon.clone()),
        (words(&format!("peers {absent}")), no_daemon.clone()),
        (words(&format!("peers {absent} --json")), no_daemon.clone()),
        (words(&format!("routes {absent}")), no_daemon.clone()),
        (words(&format!("forwards {absent}")), no_daemon.clone()),
        (words(&format!("remove-peer {absent} {phone_prefix}")), no_daemon.clone()),
        (
            words(&format!("export {absent} {phone_prefix} --endpoint vps.example:51820")),
            no_daemon.clone(),
        ),
        (words("peers bad/name"), "invalid interface name".into()),
        (words(&format!("remove-peer {name} {shared}")), format!("peer {shared} is ambiguous")),
        (
            words(&format!("remove-peer {name} no-such-key")),
            format!("no peer no-such-key on {name}"),
        ),
        (
            words(&format!("export {name} no-such-key --endpoint vps.example:51820")),
            format!("no peer no-such-key on {name}"),
        ),
        (
            with(export(&["--private-key"]), &[&phone_key, "--png", &unwritable]),
            format!("cannot write {unwritable}"),
        ),
        (
            with(export(&["--private-key"]), &[&laptop_key]),
            format!("the private key in {laptop_key} is not peer"),
        ),
        (
            with(export(&["--private-key"]), &["/nonexistent/phone.key"]),
            "cannot read /nonexistent/phone.key".into(),
        ),
        (export(&["--qr"]), "would not import: give it with --private-key FILE".into()),
        (
            words(&format!("export {name} {phone_prefix} --endpoint vps.example")),
            "endpoint \"vps.example\" must be host:port".into(),
        ),
        (words("completions tcsh"), "invalid value 'tcsh'".into()),
    ];
    for (args, naming) in mistakes {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ended, _) = cli(netns, &args)?;
        check_refusal(&ended, &naming).with_context(|| format!("gateway {}", args.join(" ")))?;
        let after = gatewayd.show()?;
        ensure!(
            after.peers.len() == before.peers.len(),
            "`gateway {}` changed the peers: {after:?}",
            args.join(" ")
        );
    }
    ensure!(!std::path::Path::new(&unwritable).exists(), "a PNG appeared at {unwritable}");
    Ok(())
}

/// `gatewayd --config FILE`: a file with a mistake (unknown key, wrong type, bad key, bad
/// CIDR, bad endpoint, a peer twice, a missing or unreadable key file, a missing file) and a
/// listen port in use: one line naming file, line and field, in the foreground and not, with
/// and without `--check`, and no interface, socket or process left.
#[test]
fn bad_config_files_fail_with_one_line_naming_file_line_and_field() -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new("bad-config-files")?;
    let netns = Netns::new("bcf")?;
    let (key, peer) = (KeyPair::generate()?, KeyPair::generate()?);
    let good = |extra_interface: &str, extra_peer: &str| {
        format!(
            "# a gateway\n[interface]\nprivate_key = \"{}\"\n{extra_interface}\n\n[[peer]]\n\
             public_key = \"{}\"\nallowed_ips = [\"10.77.0.2/32\"]\n{extra_peer}\n",
            key.private_key, peer.public_key
        )
    };
    let twice = format!("{}[[peer]]\npublic_key = \"{}\"\n", good("", ""), peer.public_key);
    let cases: Vec<(String, &str)> = vec![
        (good("listen_prot = 1", ""), ":4: interface.listen_prot: unknown field `listen_prot`"),
        (good("listen_port = \"x\"", ""), ":4: interface.listen_port: invalid type: string"),
        (good("", "preshared_key = \"abc\""), ":9: peer[0].preshared_key: not a base64 key"),
        (good("addresses = [\"10.77.0.1/40\"]", ""), ":4: interface.addresses[0]: `10.77.0.1/40'"),
        (good("", "endpoint = \"nowhere\""), ":9: peer[0].endpoint: `nowhere' is not host:port"),
        (twice, ":11: peer[1].public_key: the same peer as peer[0] (line 7)"),
        (
            good("", "").replace(
                &format!("private_key = \"{}\"", key.private_key),
                "private_key_file = \"absent.key\"",
            ),
            ":3: interface.private_key_file: cannot read ",
        ),
    ];
    for (index, (text, naming)) in cases.iter().enumerate() {
        let name = unique_ifname("cf")?;
        let file = dir.file(&format!("bad{index}.toml"));
        std::fs::write(&file, text)?;
        let path = file.display().to_string();
        let expected = format!("{path}{naming}");
        for args in [
            vec!["--config", &path, "--check"],
            vec!["-f", "--no-ebpf", "--config", &path, &name],
            vec!["--no-ebpf", "--config", &path, &name],
        ] {
            let refusal = refused_start(&netns, &[], &args)?;
            check_refusal(&refusal, &expected)
                .with_context(|| format!("gatewayd {}\n{text}", args.join(" ")))?;
        }
        let left = leftovers(&netns, &name, &[])?;
        ensure!(left.is_empty(), "a refused --config start left {left:?}");
    }
    let absent = dir.file("absent.toml").display().to_string();
    let refusal = refused_start(&netns, &[], &["--config", &absent, "--check"])?;
    check_refusal(&refusal, &format!("{absent}: no such file"))?;

    // A listen port in use: found when binding, before the interface is configured.
    let entered = netns.enter()?;
    let holder = UdpSocket::bind("0.0.0.0:0");
    drop(entered);
    let holder = holder?;
    let port = holder.local_addr()?.port();
    let file = dir.file("port.toml");
    std::fs::write(&file, good(&format!("listen_port = {port}"), ""))?;
    let name = unique_ifname("cf")?;
    let path = file.display().to_string();
    let refusal = refused_start(&netns, &[], &["-f", "--no-ebpf", "--config", &path, &name])?;
    check_refusal(&refusal, &format!("UDP port {port} is already in use"))?;
    let left = leftovers(&netns, &name, &[])?;
    ensure!(left.is_empty(), "a start on a port in use left {left:?}");
    Ok(())
}
