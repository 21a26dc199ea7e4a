//! The UAPI server driven by the real `wg` binary (wireguard-tools), plus raw-socket checks of
//! the connection handling `wg` never exercises.
//!
//! Every test serves a fresh in-memory device at /var/run/wireguard/<unique name>.sock (that
//! is where `wg` looks) under a name that is no kernel link, so `wg` must use the socket; the
//! socket and temporary files are removed even when a test fails. Needs root (for
//! /var/run/wireguard) and `wg` (`apt-get install --no-install-recommends wireguard-tools`).

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use gateway::uapi::{
    AllowedIpChange, BindError, DeviceSnapshot, DeviceUpdate, Key, PeerSnapshot, ServeEnd,
    UapiError, UapiHandler, UapiServer, socket_path,
};
use gateway::wg::allowed_ips::AllowedIps;
use ipnet::IpNet;

/// A port the fake device pretends is taken, to exercise the EADDRINUSE path.
const BUSY_PORT: u16 = 1;

fn public_key_of(private: &Key) -> Key {
    let secret = x25519_dalek::StaticSecret::from(private.0);
    Key(x25519_dalek::PublicKey::from(&secret).to_bytes())
}

/// A deterministic private key, and the matching public key.
fn key_pair(seed: u8) -> (Key, Key) {
    let private =
        Key(std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8))).clamped();
    (private, public_key_of(&private))
}

struct PeerState {
    public_key: Key,
    preshared_key: Option<Key>,
    endpoint: Option<SocketAddr>,
    persistent_keepalive_interval: u16,
    rx_bytes: u64,
    tx_bytes: u64,
    last_handshake_nanos: u64,
}

#[derive(Default)]
struct DeviceState {
    private_key: Option<Key>,
    listen_port: u16,
    fwmark: u32,
    peers: Vec<PeerState>,
    allowed_ips: AllowedIps<Key>,
}

/// A device model with the kernel's `set` semantics: enough for `wg` to see a consistent
/// interface, and for the tests to check what each command changed.
#[derive(Default)]
struct MemoryDevice {
    state: Mutex<DeviceState>,
    gets: AtomicUsize,
    sets: AtomicUsize,
}

impl DeviceState {
    fn peer_index(&self, key: &Key) -> Option<usize> {
        self.peers.iter().position(|peer| peer.public_key == *key)
    }

    fn remove_peer(&mut self, key: &Key) {
        if let Some(index) = self.peer_index(key) {
            self.peers.remove(index);
            self.allowed_ips.remove_by_value(key);
        }
    }
}

impl UapiHandler for MemoryDevice {
    fn get(&self) -> DeviceSnapshot {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let state = self.state.lock().unwrap();
        DeviceSnapshot {
            private_key: state.private_key,
            listen_port: state.listen_port,
            fwmark: state.fwmark,
            peers: state
                .peers
                .iter()
                .map(|peer| {
                    let mut snapshot = PeerSnapshot::new(peer.public_key);
                    snapshot.preshared_key = peer.preshared_key;
                    snapshot.endpoint = peer.endpoint;
                    snapshot.persistent_keepalive_interval = peer.persistent_keepalive_interval;
                    snapshot.rx_bytes = peer.rx_bytes;
                    snapshot.tx_bytes = peer.tx_bytes;
                    snapshot.last_handshake = (peer.last_handshake_nanos != 0)
                        .then(|| UNIX_EPOCH + Duration::from_nanos(peer.last_handshake_nanos));
                    snapshot.allowed_ips =
                        state.allowed_ips.prefixes_of(&peer.public_key).collect();
                    snapshot
                })
                .collect(),
        }
    }

    fn set(&self, update: DeviceUpdate) -> Result<(), UapiError> {
        self.sets.fetch_add(1, Ordering::SeqCst);
        let mut state = self.state.lock().unwrap();
        if update.listen_port == Some(BUSY_PORT) {
            return Err(UapiError::PortInUse(format!("port {BUSY_PORT} is taken")));
        }
        if let Some(key) = update.private_key {
            state.private_key = (!key.is_zero()).then_some(key);
            if let Some(own) = state.private_key.as_ref().map(public_key_of) {
                state.remove_peer(&own);
            }
        }
        if let Some(port) = update.listen_port {
            state.listen_port = if port == 0 { 40000 } else { port };
        }
        if let Some(mark) = update.fwmark {
            state.fwmark = mark;
        }
        if update.replace_peers {
            state.peers.clear();
            state.allowed_ips.clear();
        }
        let own_public = state.private_key.as_ref().map(public_key_of);
        for peer in update.peers {
            let key = peer.public_key;
            if Some(key) == own_public {
                continue;
            }
            if peer.remove {
                state.remove_peer(&key);
                continue;
            }
            let index = match state.peer_index(&key) {
                Some(index) => index,
                None if peer.update_only => continue,
                None => {
                    state.peers.push(PeerState {
                        public_key: key,
                        preshared_key: None,
                        endpoint: None,
                        persistent_keepalive_interval: 0,
                        rx_bytes: 0,
                        tx_bytes: 0,
                        last_handshake_nanos: 0,
                    });
                    state.peers.len() - 1
                }
            };
            let entry = &mut state.peers[index];
            if let Some(psk) = peer.preshared_key {
                entry.preshared_key = (!psk.is_zero()).then_some(psk);
            }
            if let Some(endpoint) = peer.endpoint {
                entry.endpoint = Some(endpoint);
            }
            if let Some(interval) = peer.persistent_keepalive_interval {
                entry.persistent_keepalive_interval = interval;
            }
            for change in peer.allowed_ips {
                match change {
                    AllowedIpChange::RemoveAll => {
                        state.allowed_ips.remove_by_value(&key);
                    }
                    AllowedIpChange::Add(prefix) => {
                        state.allowed_ips.insert(prefix, key);
                    }
                    AllowedIpChange::Remove(prefix) => {
                        state.allowed_ips.remove_if_owned_by(&prefix, &key);
                    }
                }
            }
        }
        Ok(())
    }
}

static NEXT_NAME: AtomicUsize = AtomicUsize::new(0);

/// Removes a file when dropped, also when a test panics.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct TestDaemon {
    name: String,
    path: PathBuf,
    device: Arc<MemoryDevice>,
    runtime: tokio::runtime::Runtime,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<ServeEnd>>,
    temporary_files: Vec<RemoveOnDrop>,
    _socket_guard: RemoveOnDrop,
}

fn unique_name() -> String {
    let name =
        format!("gwu{}x{}", std::process::id() % 100_000, NEXT_NAME.fetch_add(1, Ordering::SeqCst));
    // `wg` would use netlink for a kernel link of that name instead of the socket.
    let link = Command::new("ip").args(["link", "show", &name]).output().expect("run ip");
    assert!(!link.status.success(), "a kernel link named {name} exists");
    name
}

impl TestDaemon {
    fn start() -> TestDaemon {
        let name = unique_name();
        let path = socket_path(&name).unwrap();
        let device = Arc::new(MemoryDevice::default());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = {
            let _entered = runtime.enter();
            UapiServer::bind(&path, Arc::clone(&device)).expect("bind the UAPI socket")
        };
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let served = runtime.spawn(server.serve(async move {
            let _ = stop.await;
        }));
        TestDaemon {
            name,
            _socket_guard: RemoveOnDrop(path.clone()),
            path,
            device,
            runtime,
            shutdown: Some(shutdown),
            served: Some(served),
            temporary_files: Vec::new(),
        }
    }

    fn wg(&self, args: &[&str]) -> Output {
        let args: Vec<&str> =
            args.iter().map(|arg| if *arg == "IFACE" { self.name.as_str() } else { arg }).collect();
        Command::new("wg").args(&args).output().expect("run wg (is wireguard-tools installed?)")
    }

    /// Runs `wg`, requires success, returns its standard output.
    fn wg_ok(&self, args: &[&str]) -> String {
        let output = self.wg(args);
        assert!(
            output.status.success(),
            "wg {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn file(&mut self, label: &str, contents: &str) -> String {
        let path = std::env::temp_dir().join(format!("{}-{label}", self.name));
        std::fs::write(&path, contents).unwrap();
        let text = path.to_str().unwrap().to_owned();
        self.temporary_files.push(RemoveOnDrop(path));
        text
    }

    fn connect(&self) -> UnixStream {
        let stream = UnixStream::connect(&self.path).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream
    }

    fn stop(mut self) -> ServeEnd {
        self.finish().expect("server already stopped")
    }

    fn finish(&mut self) -> Option<ServeEnd> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let served = self.served.take()?;
        Some(self.runtime.block_on(served).expect("the server task panicked"))
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Sends `request` and reads the reply up to and including its blank line.
fn exchange(stream: &mut UnixStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).unwrap();
    read_reply(stream)
}

/// Reads byte by byte: a buffered reader would swallow the start of the next reply when two
/// arrive back to back (pipelined requests), and lose it when dropped.
fn read_reply(stream: &mut UnixStream) -> String {
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !(reply.ends_with(b"\n\n") || reply == b"\n") {
        if stream.read(&mut byte).unwrap() == 0 {
            break;
        }
        reply.push(byte[0]);
    }
    String::from_utf8(reply).unwrap()
}

/// Whether the server closed the connection: EOF, or ECONNRESET when it closed with some of
/// our data unread (rather than more data or a time-out).
fn is_closed(stream: &mut UnixStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

#[test]
fn wg_show_reads_the_device_through_the_socket() {
    let daemon = TestDaemon::start();
    let (private, public) = key_pair(1);
    let (_, peer_public) = key_pair(2);
    let psk = Key([7; 32]);
    {
        let mut state = daemon.device.state.lock().unwrap();
        state.private_key = Some(private);
        state.listen_port = 51820;
        state.fwmark = 0x42;
        state.peers.push(PeerState {
            public_key: peer_public,
            preshared_key: Some(psk),
            endpoint: Some("[2001:db8::7]:4500".parse().unwrap()),
            persistent_keepalive_interval: 25,
            rx_bytes: 1000,
            tx_bytes: 2000,
            last_handshake_nanos: 1_700_000_000_123_456_789,
        });
        state.allowed_ips.insert(net("10.9.0.0/16"), peer_public);
        state.allowed_ips.insert(net("fd00:9::/64"), peer_public);
    }
    let dump = daemon.wg_ok(&["show", "IFACE", "dump"]);
    let expected = format!(
        "{}\t{}\t51820\t0x42\n{}\t{}\t[2001:db8::7]:4500\t10.9.0.0/16,fd00:9::/64\t1700000000\t1000\t2000\t25\n",
        private.to_base64(),
        public.to_base64(),
        peer_public.to_base64(),
        psk.to_base64(),
    );
    assert_eq!(dump, expected);
    assert!(daemon.device.gets.load(Ordering::SeqCst) >= 1, "wg did not use the socket");

    let human = daemon.wg_ok(&["show", "IFACE"]);
    assert!(human.contains(&format!("interface: {}", daemon.name)), "{human}");
    assert!(human.contains(&format!("public key: {}", public.to_base64())), "{human}");
    assert!(human.contains("listening port: 51820"), "{human}");
    assert!(human.contains("allowed ips: 10.9.0.0/16, fd00:9::/64"), "{human}");
    assert!(human.contains("transfer: 1000 B received, 1.95 KiB sent"), "{human}");
    assert!(human.contains("persistent keepalive: every 25 seconds"), "{human}");

    let interfaces = daemon.wg_ok(&["show", "interfaces"]);
    assert!(interfaces.split_whitespace().any(|name| name == daemon.name), "{interfaces}");
    assert_eq!(daemon.stop(), ServeEnd::Shutdown);
}

#[test]
fn wg_set_configures_every_field() {
    let mut daemon = TestDaemon::start();
    let (private, public) = key_pair(3);
    let (_, peer) = key_pair(4);
    let psk = Key([9; 32]);
    let private_file = daemon.file("private", &private.to_base64());
    let psk_file = daemon.file("psk", &psk.to_base64());
    daemon.wg_ok(&[
        "set",
        "IFACE",
        "private-key",
        &private_file,
        "listen-port",
        "51999",
        "fwmark",
        "0x10",
        "peer",
        &peer.to_base64(),
        "preshared-key",
        &psk_file,
        "endpoint",
        "192.0.2.10:51820",
        "persistent-keepalive",
        "15",
        "allowed-ips",
        "10.1.0.0/24,fd00:1::/64",
    ]);
    {
        let state = daemon.device.state.lock().unwrap();
        assert_eq!(state.private_key, Some(private));
        assert_eq!((state.listen_port, state.fwmark), (51999, 0x10));
        assert_eq!(state.peers.len(), 1);
        assert_eq!(state.peers[0].preshared_key, Some(psk));
        assert_eq!(state.peers[0].endpoint, Some("192.0.2.10:51820".parse().unwrap()));
        assert_eq!(state.peers[0].persistent_keepalive_interval, 15);
    }
    let showconf = daemon.wg_ok(&["showconf", "IFACE"]);
    let expected = format!(
        "[Interface]\nListenPort = 51999\nFwMark = 0x10\nPrivateKey = {}\n\n\
         [Peer]\nPublicKey = {}\nPresharedKey = {}\nAllowedIPs = 10.1.0.0/24, fd00:1::/64\n\
         Endpoint = 192.0.2.10:51820\nPersistentKeepalive = 15\n",
        private.to_base64(),
        peer.to_base64(),
        psk.to_base64()
    );
    assert_eq!(showconf, expected);
    assert_eq!(daemon.wg_ok(&["show", "IFACE", "public-key"]), format!("{}\n", public.to_base64()));

    // Adding allowed IPs replaces the list; an empty one clears it; keepalive off; psk removed.
    daemon.wg_ok(&["set", "IFACE", "peer", &peer.to_base64(), "allowed-ips", "10.2.0.0/16"]);
    let listed = daemon.wg_ok(&["show", "IFACE", "allowed-ips"]);
    assert_eq!(listed, format!("{}\t10.2.0.0/16\n", peer.to_base64()));
    let none = daemon.file("none", "");
    daemon.wg_ok(&[
        "set",
        "IFACE",
        "peer",
        &peer.to_base64(),
        "allowed-ips",
        "",
        "persistent-keepalive",
        "off",
        "preshared-key",
        &none,
    ]);
    let dump = daemon.wg_ok(&["show", "IFACE", "dump"]);
    let peer_line = dump.lines().nth(1).unwrap();
    assert_eq!(
        peer_line,
        format!("{}\t(none)\t192.0.2.10:51820\t(none)\t0\t0\t0\toff", peer.to_base64())
    );

    daemon.wg_ok(&["set", "IFACE", "peer", &peer.to_base64(), "remove"]);
    assert!(daemon.device.state.lock().unwrap().peers.is_empty());
    assert!(daemon.wg_ok(&["show", "IFACE", "peers"]).is_empty());
}

#[test]
fn wg_reports_the_errno_the_handler_returns() {
    let daemon = TestDaemon::start();
    let output = daemon.wg(&["set", "IFACE", "listen-port", &BUSY_PORT.to_string()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Address already in use"), "{stderr}");
    assert_eq!(daemon.device.state.lock().unwrap().listen_port, 0);
    // The connection survives a rejected (well-formed) request: the next one is answered.
    let mut stream = daemon.connect();
    assert_eq!(exchange(&mut stream, "set=1\nlisten_port=1\n\n"), "errno=-98\n\n");
    assert_eq!(exchange(&mut stream, "set=1\nlisten_port=2\n\n"), "errno=0\n\n");
    assert_eq!(daemon.device.state.lock().unwrap().listen_port, 2);
}

#[test]
fn wg_setconf_showconf_syncconf() {
    let mut daemon = TestDaemon::start();
    let (private, _) = key_pair(5);
    let (_, a) = key_pair(6);
    let (_, b) = key_pair(7);
    let (_, c) = key_pair(8);
    let psk = Key([3; 32]);
    let first = format!(
        "[Interface]\nListenPort = 41000\nFwMark = 0x7\nPrivateKey = {}\n\n\
         [Peer]\nPublicKey = {}\nPresharedKey = {}\nAllowedIPs = 10.10.0.0/16, fd10::/48\n\
         Endpoint = 192.0.2.1:41001\nPersistentKeepalive = 20\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 10.11.0.0/16\n",
        private.to_base64(),
        a.to_base64(),
        psk.to_base64(),
        b.to_base64()
    );
    let first_file = daemon.file("first.conf", &first);
    daemon.wg_ok(&["setconf", "IFACE", &first_file]);
    assert_eq!(daemon.wg_ok(&["showconf", "IFACE"]), first);

    // setconf replaces everything: b goes, a's addresses are replaced, c is new.
    let second = format!(
        "[Interface]\nListenPort = 41000\nPrivateKey = {}\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 10.12.0.0/16\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 10.13.0.0/16\nEndpoint = [2001:db8::13]:41013\n",
        private.to_base64(),
        a.to_base64(),
        c.to_base64()
    );
    let second_file = daemon.file("second.conf", &second);
    daemon.wg_ok(&["setconf", "IFACE", &second_file]);
    // setconf sends every device field (fwmark=0 for the missing FwMark) and replace_peers,
    // so a is re-created without its old endpoint, exactly as on the kernel.
    assert_eq!(daemon.wg_ok(&["showconf", "IFACE"]), second);
    assert_eq!(daemon.device.state.lock().unwrap().fwmark, 0);

    // syncconf: only differences are sent; the result equals the file.
    let third = format!(
        "[Interface]\nListenPort = 41002\nPrivateKey = {}\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 10.13.0.0/16, 10.14.0.0/16\n\
         Endpoint = [2001:db8::13]:41013\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 10.15.0.0/16\n",
        private.to_base64(),
        c.to_base64(),
        b.to_base64()
    );
    let third_file = daemon.file("third.conf", &third);
    daemon.wg_ok(&["syncconf", "IFACE", &third_file]);
    let state = daemon.device.state.lock().unwrap();
    assert_eq!(state.listen_port, 41002);
    let keys: HashSet<Key> = state.peers.iter().map(|p| p.public_key).collect();
    assert_eq!(keys, HashSet::from([b, c]));
    let of = |key: &Key| state.allowed_ips.prefixes_of(key).collect::<Vec<_>>();
    assert_eq!(of(&c), vec![net("10.13.0.0/16"), net("10.14.0.0/16")]);
    assert_eq!(of(&b), vec![net("10.15.0.0/16")]);
    assert_eq!(of(&a), vec![]);
    assert_eq!(state.allowed_ips.len(), 3);
}

#[test]
fn setconf_with_130k_allowed_ips() {
    let mut daemon = TestDaemon::start();
    let (private, _) = key_pair(9);
    let mut conf =
        format!("[Interface]\nPrivateKey = {}\nListenPort = 42000\n", private.to_base64());
    let peers = 1000u32;
    let per_peer = 130u32;
    let mut peer_keys = Vec::new();
    for p in 0..peers {
        let public = Key(std::array::from_fn(|i| (p >> (8 * (i % 4))) as u8 ^ i as u8));
        peer_keys.push(public);
        let ips: Vec<String> = (0..per_peer)
            .map(|i| {
                let n = p * per_peer + i;
                if n.is_multiple_of(2) {
                    format!("10.{}.{}.{}/32", n >> 16, (n >> 8) & 0xff, n & 0xff)
                } else {
                    format!("fd00::{:x}:{:x}/128", n >> 16, n & 0xffff)
                }
            })
            .collect();
        conf.push_str(&format!(
            "\n[Peer]\nPublicKey = {}\nAllowedIPs = {}\n",
            public.to_base64(),
            ips.join(", ")
        ));
    }
    let file = daemon.file("big.conf", &conf);
    let started = Instant::now();
    daemon.wg_ok(&["setconf", "IFACE", &file]);
    let elapsed = started.elapsed();
    eprintln!("wg setconf with {} allowed IPs took {elapsed:?}", peers * per_peer);
    {
        let state = daemon.device.state.lock().unwrap();
        assert_eq!(state.allowed_ips.len(), (peers * per_peer) as usize);
        assert_eq!(state.peers.len(), peers as usize);
        assert_eq!(state.allowed_ips.prefixes_of(&peer_keys[999]).count(), per_peer as usize);
    }
    // The bound covers an unoptimized build on a loaded 2-core machine; see the report for
    // the measured figure.
    assert!(elapsed < Duration::from_secs(10), "setconf took {elapsed:?}");
    let started = Instant::now();
    let listed = daemon.wg_ok(&["show", "IFACE", "allowed-ips"]);
    eprintln!("wg show allowed-ips took {:?}", started.elapsed());
    let count: usize = listed.lines().map(|line| line.split_whitespace().count() - 1).sum();
    assert_eq!(count, (peers * per_peer) as usize);
}

#[test]
fn garbage_gets_the_errno_and_changes_nothing() {
    let daemon = TestDaemon::start();
    // A valid line before a bad one: nothing is applied, the errno comes at once, and the
    // connection is closed once the rest of the request is read.
    let mut stream = daemon.connect();
    stream.write_all(b"set=1\nlisten_port=5000\nlisten_port=x\n").unwrap();
    assert_eq!(read_reply(&mut stream), "errno=-22\n\n");
    stream.write_all(b"fwmark=1\n\n").unwrap();
    assert!(is_closed(&mut stream));
    assert_eq!(daemon.device.state.lock().unwrap().listen_port, 0);
    assert_eq!(daemon.device.sets.load(Ordering::SeqCst), 0);

    let mut stream = daemon.connect();
    assert_eq!(exchange(&mut stream, "set=1\nthis is not a pair\n\n"), "errno=-71\n\n");
    assert!(is_closed(&mut stream));

    let mut stream = daemon.connect();
    let peer = Key([1; 32]).to_hex();
    let reply = exchange(&mut stream, &format!("set=1\npublic_key={peer}\nrx_bytes=5\n\n"));
    assert_eq!(reply, "errno=-22\n\n");

    // Not an operation: closed without a reply, as wireguard-go does.
    let mut stream = daemon.connect();
    stream.write_all(b"hello=1\n").unwrap();
    assert!(is_closed(&mut stream));

    // get=1 must be followed by the blank line.
    let mut stream = daemon.connect();
    assert_eq!(exchange(&mut stream, "get=1\nx"), "errno=-22\n\n");

    // A request cut off before its blank line is not applied.
    let mut stream = daemon.connect();
    stream.write_all(b"set=1\nlisten_port=6000\n").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_reply(&mut stream), "errno=-71\n\n");
    assert_eq!(daemon.device.state.lock().unwrap().listen_port, 0);

    // An over-long line: EIO, and the connection is closed.
    let mut stream = daemon.connect();
    let long = format!("set=1\nlisten_port={}\n\n", "1".repeat(10_000));
    stream.write_all(long.as_bytes()).unwrap();
    assert_eq!(read_reply(&mut stream), "errno=-5\n\n");
    assert!(is_closed(&mut stream));

    // Binary noise.
    let mut stream = daemon.connect();
    stream.write_all(b"set=1\n\xff\xfe=\x00\n\n").unwrap();
    assert_eq!(read_reply(&mut stream), "errno=-22\n\n");

    // After all that, the server still answers, and nothing was applied.
    assert_eq!(daemon.device.sets.load(Ordering::SeqCst), 0);
    assert!(daemon.wg(&["show", "IFACE"]).status.success());
}

#[test]
fn one_connection_carries_many_requests_including_allowed_ip_removal() {
    let daemon = TestDaemon::start();
    let peer = Key([5; 32]).to_hex();
    let other = Key([6; 32]).to_hex();
    let mut stream = daemon.connect();
    // Requests may also arrive back to back in one write.
    let pipelined = format!(
        "set=1\npublic_key={peer}\nallowed_ip=10.0.0.0/8\nallowed_ip=10.1.0.0/16\n\
         public_key={other}\nallowed_ip=10.2.0.0/16\n\nget=1\n\n"
    );
    stream.write_all(pipelined.as_bytes()).unwrap();
    assert_eq!(read_reply(&mut stream), "errno=0\n\n");
    let get = read_reply(&mut stream);
    assert!(get.ends_with("errno=0\n\n"), "{get}");
    assert!(get.contains("allowed_ip=10.1.0.0/16\n"), "{get}");

    // `allowed_ip=-prefix` (newer wireguard-tools) removes a prefix only from its owner.
    let reply = exchange(
        &mut stream,
        &format!("set=1\npublic_key={peer}\nallowed_ip=-10.1.0.0/16\nallowed_ip=-10.2.0.0/16\n\n"),
    );
    assert_eq!(reply, "errno=0\n\n");
    {
        let state = daemon.device.state.lock().unwrap();
        assert_eq!(
            state.allowed_ips.prefixes_of(&Key([5; 32])).collect::<Vec<_>>(),
            [net("10.0.0.0/8")]
        );
        assert_eq!(
            state.allowed_ips.prefixes_of(&Key([6; 32])).collect::<Vec<_>>(),
            [net("10.2.0.0/16")]
        );
    }
    for _ in 0..3 {
        assert!(exchange(&mut stream, "get=1\n\n").ends_with("errno=0\n\n"));
    }
    assert_eq!(daemon.device.gets.load(Ordering::SeqCst), 4);
}

#[test]
fn a_stalled_client_does_not_hold_up_others() {
    let daemon = TestDaemon::start();
    let mut stalled = daemon.connect();
    stalled.write_all(b"set=1\nlisten_po").unwrap();
    let mut silent = daemon.connect();
    let started = Instant::now();
    for _ in 0..3 {
        assert!(daemon.wg(&["show", "IFACE"]).status.success());
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // The stalled request completes later and is applied normally.
    stalled.write_all(b"rt=7\n\n").unwrap();
    assert_eq!(read_reply(&mut stalled), "errno=0\n\n");
    assert_eq!(daemon.device.state.lock().unwrap().listen_port, 7);
    silent.write_all(b"get=1\n\n").unwrap();
    assert!(read_reply(&mut silent).ends_with("errno=0\n\n"));
}

#[test]
fn socket_file_lifecycle() {
    let daemon = TestDaemon::start();
    let meta = std::fs::symlink_metadata(&daemon.path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let directory = std::fs::metadata(daemon.path.parent().unwrap()).unwrap();
    assert_eq!(directory.permissions().mode() & 0o777, 0o755);

    // A live socket is not taken over.
    let second = {
        let _entered = daemon.runtime.enter();
        UapiServer::bind(&daemon.path, Arc::new(MemoryDevice::default()))
    };
    assert!(matches!(second, Err(BindError::InUse { .. })), "{:?}", second.err());
    assert!(daemon.wg(&["show", "IFACE"]).status.success(), "the first server was disturbed");

    // Deleting the socket file ends the server (the cross-platform spec asks daemons to exit).
    std::fs::remove_file(&daemon.path).unwrap();
    let end = daemon.runtime.block_on(async {
        let served = daemon.served.as_ref().unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while !served.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    });
    assert!(end.is_ok(), "server did not notice its socket was deleted");
    let mut daemon = daemon;
    assert_eq!(daemon.finish(), Some(ServeEnd::SocketRemoved));
}

#[test]
fn stale_sockets_are_replaced_and_other_files_refused() {
    let name = unique_name();
    let path = socket_path(&name).unwrap();
    let _guard = RemoveOnDrop(path.clone());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // A socket nobody listens on any more: what a crashed daemon leaves.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_socket());

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _entered = runtime.enter();
    let server = UapiServer::bind(&path, Arc::new(MemoryDevice::default())).expect("replace");
    assert_eq!(server.path(), path.as_path());
    let mut stream = UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let serving = runtime.spawn(server.serve(std::future::pending()));
    let reply = runtime.block_on(async {
        tokio::task::spawn_blocking(move || exchange(&mut stream, "get=1\n\n")).await.unwrap()
    });
    assert_eq!(reply, "errno=0\n\n");
    serving.abort();
    let _ = runtime.block_on(serving);
    // The server was dropped: its socket file went with it.
    assert!(!path.exists());

    std::fs::write(&path, "not a socket").unwrap();
    let refused = UapiServer::bind(&path, Arc::new(MemoryDevice::default()));
    assert!(matches!(refused, Err(BindError::NotASocket { .. })), "{:?}", refused.err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    assert!(Path::new(&path).exists());
}
