//! The proxy with real sockets on loopback: clients, the proxy, and backends that greet with
//! their name, echo what they receive, and check when they accept that the flow was steered.
//!
//! Waits are bounded with generous margins ([`PATIENCE`]); nothing passes or fails on how
//! fast it goes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

use super::*;
use crate::entry::forward::{Forward, SelectorArgs};

/// The most any wait here takes before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// --- steering that records -------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Steer(ProxiedFlow),
    Release(ProxiedFlow),
}

#[derive(Default)]
struct Recording {
    events: Mutex<Vec<Event>>,
}

impl FlowSteering for Recording {
    fn steer(&self, flow: &ProxiedFlow) -> Result<(), String> {
        self.events.lock().unwrap().push(Event::Steer(*flow));
        Ok(())
    }

    fn release(&self, flow: &ProxiedFlow) {
        self.events.lock().unwrap().push(Event::Release(*flow));
    }
}

impl Recording {
    /// The flow steered from `local` (the proxy's side towards the backend), if it is steered
    /// and not released.
    fn steered_from(&self, local: SocketAddr) -> Option<ProxiedFlow> {
        let events = self.events.lock().unwrap();
        let steered = events.iter().rev().find_map(|event| match event {
            Event::Steer(flow) if flow.local == local => Some(*flow),
            _ => None,
        })?;
        let released = events.contains(&Event::Release(steered));
        (!released).then_some(steered)
    }

    fn count(&self, wanted: &Event) -> usize {
        self.events.lock().unwrap().iter().filter(|event| *event == wanted).count()
    }
}

// --- backends --------------------------------------------------------------------------

/// Per connection a backend accepted: its peer, and the flow steered from that peer then.
type Accepted = Vec<(SocketAddr, Option<ProxiedFlow>)>;

/// A backend: greets each connection with "NAME\n", then echoes until the client's end, then
/// ends its own side.
struct Backend {
    address: SocketAddr,
    accepted: Arc<Mutex<Accepted>>,
}

impl Backend {
    async fn start(name: &'static str, steering: &Arc<Recording>) -> Backend {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (steering, record) = (Arc::clone(steering), Arc::clone(&accepted));
        tokio::spawn(async move {
            loop {
                let (mut stream, peer) = listener.accept().await.unwrap();
                record.lock().unwrap().push((peer, steering.steered_from(peer)));
                tokio::spawn(async move {
                    stream.write_all(format!("{name}\n").as_bytes()).await?;
                    let (mut reading, mut writing) = stream.split();
                    tokio::io::copy(&mut reading, &mut writing).await?;
                    writing.shutdown().await
                });
            }
        });
        Backend { address, accepted }
    }

    fn accepted(&self) -> Accepted {
        self.accepted.lock().unwrap().clone()
    }
}

// --- forwards and the proxy --------------------------------------------------------------

/// A port free on loopback a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind((LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind((LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

/// `PROTOCOL PORT --listen 127.0.0.1 (--sni|--host NAME | --default) --to BACKEND`; a tcp or
/// udp forward when `name` is None and the protocol is not routed by name.
fn forward(protocol: &str, port: u16, name: Option<&str>, backend: SocketAddr) -> Forward {
    let ports = port.to_string();
    let args = SelectorArgs {
        protocol,
        ports: &ports,
        listen: Some("127.0.0.1"),
        sni: name.filter(|_| protocol == "tls"),
        host: name.filter(|_| protocol == "http"),
        default: name.is_none() && matches!(protocol, "tls" | "http"),
    };
    Forward::parse(&args, &backend.to_string()).unwrap()
}

fn table(forwards: impl IntoIterator<Item = Forward>) -> Arc<ForwardTable> {
    Arc::new(ForwardTable::from_forwards(forwards).unwrap())
}

fn test_limits() -> ProxyLimits {
    ProxyLimits { release_grace: Duration::ZERO, ..ProxyLimits::default() }
}

struct Proxy {
    handle: ProxyHandle,
    table: watch::Sender<Arc<ForwardTable>>,
}

impl Proxy {
    async fn start(
        forwards: Arc<ForwardTable>,
        steering: &Arc<Recording>,
        limits: ProxyLimits,
        listeners: usize,
    ) -> Proxy {
        let (table, receiver) = watch::channel(forwards);
        let steering: Arc<dyn FlowSteering> = Arc::clone(steering) as Arc<dyn FlowSteering>;
        let traffic = Arc::default();
        let handle = spawn(&tokio::runtime::Handle::current(), receiver, steering, limits, traffic);
        let proxy = Proxy { handle, table };
        proxy.until_listening(|count| count == listeners).await;
        proxy
    }

    /// Waits until the count of listening sockets satisfies `done`.
    async fn until_listening(&self, done: impl Fn(usize) -> bool) {
        until(|| done(self.handle.listening().len())).await;
    }
}

/// Polls `done` until it holds; fails the test after [`PATIENCE`].
async fn until(mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future).await.expect("gave up waiting")
}

// --- clients -----------------------------------------------------------------------------

fn vector8(bytes: &[u8]) -> Vec<u8> {
    [vec![u8::try_from(bytes.len()).unwrap()], bytes.to_vec()].concat()
}

fn vector16(bytes: &[u8]) -> Vec<u8> {
    [u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec(), bytes.to_vec()].concat()
}

fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    [kind.to_be_bytes().to_vec(), vector16(data)].concat()
}

/// A TLS 1.3 ClientHello message for `name` whose key share carries `key_share` bytes (1216
/// for X25519MLKEM768 plus 32 for X25519 in today's browsers).
fn client_hello(name: &str, key_share: usize) -> Vec<u8> {
    let server_name = vector16(&[vec![0], vector16(name.as_bytes())].concat());
    let shares = vector16(&[vec![0x11, 0xec], vector16(&vec![0x5a; key_share])].concat());
    let extensions = [
        extension(0, &server_name),
        extension(43, &vector8(&[3, 4])), // supported_versions: TLS 1.3
        extension(51, &shares),           // key_share
        extension(0xfe0d, &[0x3c; 280]),  // encrypted_client_hello (GREASE, as browsers send)
    ]
    .concat();
    let body = [
        vec![3, 3],
        vec![0x42; 32],
        vector8(&[0x24; 32]),
        vector16(&[0x13, 0x01, 0x13, 0x02]),
        vector8(&[0]),
        vector16(&extensions),
    ]
    .concat();
    let length = u32::try_from(body.len()).unwrap().to_be_bytes();
    [vec![1], length[1..].to_vec(), body].concat()
}

/// `message` in handshake records, cut where `cuts` say.
fn records(message: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(message.len());
    bounds
        .windows(2)
        .flat_map(|pair| [vec![22, 3, 1], vector16(&message[pair[0]..pair[1]])].concat())
        .collect()
}

fn hello(name: &str) -> Vec<u8> {
    records(&client_hello(name, 32), &[])
}

fn request(host: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: test\r\n\r\n").into_bytes()
}

async fn connect(port: u16) -> TcpStream {
    within(TcpStream::connect((LOCALHOST, port))).await.unwrap()
}

/// Reads the backend's greeting line, or None if the proxy closed the connection first.
async fn greeting(client: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    loop {
        let mut byte = [0];
        match within(client.read(&mut byte)).await {
            Ok(0) | Err(_) => return None,
            Ok(_) if byte[0] == b'\n' => return Some(String::from_utf8(line).unwrap()),
            Ok(_) => line.push(byte[0]),
        }
    }
}

/// Reads exactly `length` bytes.
async fn echo(client: &mut TcpStream, length: usize) -> Vec<u8> {
    let mut bytes = vec![0; length];
    within(client.read_exact(&mut bytes)).await.unwrap();
    bytes
}

/// Whether the proxy closed `client` without passing it on (EOF or reset, no greeting).
async fn closed_unanswered(client: &mut TcpStream) -> bool {
    greeting(client).await.is_none()
}

/// Sends `first` on a new connection to `port`; the backend that greeted, after checking the
/// bytes came back unchanged.
async fn reach(port: u16, first: &[u8]) -> Option<(String, TcpStream)> {
    let mut client = connect(port).await;
    client.write_all(first).await.unwrap();
    let name = greeting(&mut client).await?;
    assert_eq!(echo(&mut client, first.len()).await, first, "bytes changed on the way");
    Some((name, client))
}

// --- the tests -----------------------------------------------------------------------------

#[tokio::test]
async fn sni_picks_the_exact_name_then_the_wildcard() {
    let steering = Arc::new(Recording::default());
    let (nas, web) =
        (Backend::start("nas", &steering).await, Backend::start("web", &steering).await);
    let port = free_port();
    let forwards = table([
        forward("tls", port, Some("*.example.com"), web.address),
        forward("tls", port, Some("nas.example.com"), nas.address),
    ]);
    let _proxy = Proxy::start(forwards, &steering, test_limits(), 1).await;

    let (name, client) = reach(port, &hello("NAS.example.com")).await.unwrap();
    assert_eq!(name, "nas");
    let (name, _other) = reach(port, &hello("www.example.com")).await.unwrap();
    assert_eq!(name, "web");
    let (name, _deeper) = reach(port, &hello("a.b.example.com")).await.unwrap();
    assert_eq!(name, "web");

    // The backend saw the proxy's side of a flow already steered, for this very client.
    let [(peer, Some(flow))] = nas.accepted()[..] else {
        panic!("nas accepted {:?}", nas.accepted());
    };
    assert_eq!(flow.local, peer);
    assert_eq!(flow.client, client.local_addr().unwrap());
    assert_eq!(flow.backend, nas.address);
    assert_eq!(flow.transport, Transport::Tcp);
}

#[tokio::test]
async fn a_hello_in_two_writes_with_a_pause_between_is_waited_for() {
    let steering = Arc::new(Recording::default());
    let nas = Backend::start("nas", &steering).await;
    let port = free_port();
    let forwards = table([forward("tls", port, Some("nas.example.com"), nas.address)]);
    let _proxy = Proxy::start(forwards, &steering, test_limits(), 1).await;

    let bytes = hello("nas.example.com");
    let mut client = connect(port).await;
    client.write_all(&bytes[..7]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.write_all(&bytes[7..]).await.unwrap();
    assert_eq!(greeting(&mut client).await.as_deref(), Some("nas"));
    assert_eq!(echo(&mut client, bytes.len()).await, bytes);
}

#[tokio::test]
async fn a_post_quantum_hello_in_two_records_and_segments_is_reassembled() {
    let steering = Arc::new(Recording::default());
    let nas = Backend::start("nas", &steering).await;
    let port = free_port();
    let forwards = table([forward("tls", port, Some("nas.example.com"), nas.address)]);
    let _proxy = Proxy::start(forwards, &steering, test_limits(), 1).await;

    let message = client_hello("nas.example.com", 1216 + 32 + 4);
    let bytes = records(&message, &[1000]);
    assert!((1600..1900).contains(&bytes.len()), "{} bytes", bytes.len());
    let mut client = connect(port).await;
    client.set_nodelay(true).unwrap();
    // The first record and part of the second, then the rest.
    client.write_all(&bytes[..1200]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.write_all(&bytes[1200..]).await.unwrap();
    assert_eq!(greeting(&mut client).await.as_deref(), Some("nas"));
    assert_eq!(echo(&mut client, bytes.len()).await, bytes);
}

#[tokio::test]
async fn host_picks_the_backend_and_the_default_takes_the_rest() {
    let steering = Arc::new(Recording::default());
    let (nas, other) =
        (Backend::start("nas", &steering).await, Backend::start("other", &steering).await);
    let port = free_port();
    let forwards = table([
        forward("http", port, Some("nas.example"), nas.address),
        forward("http", port, None, other.address),
    ]);
    let _proxy = Proxy::start(forwards, &steering, test_limits(), 1).await;

    assert_eq!(reach(port, &request("nas.example:80")).await.unwrap().0, "nas");
    assert_eq!(reach(port, &request("photos.example")).await.unwrap().0, "other");
    let http10 = b"GET / HTTP/1.0\r\n\r\n";
    assert_eq!(reach(port, http10).await.unwrap().0, "other");
}

#[tokio::test]
async fn no_match_without_a_default_and_garbage_are_closed() {
    let steering = Arc::new(Recording::default());
    let nas = Backend::start("nas", &steering).await;
    let (tls_port, http_port) = (free_port(), free_port());
    let forwards = table([
        forward("tls", tls_port, Some("nas.example.com"), nas.address),
        forward("http", http_port, Some("nas.example"), nas.address),
    ]);
    let _proxy = Proxy::start(forwards, &steering, test_limits(), 2).await;

    assert!(reach(tls_port, &hello("other.example.com")).await.is_none());
    assert!(reach(http_port, &request("other.example")).await.is_none());
    assert!(reach(tls_port, b"SSH-2.0-OpenSSH_9.6\r\n").await.is_none());
    // A record header announcing a ClientHello larger than 16 KiB.
    assert!(reach(tls_port, &[22, 3, 1, 0x40, 0, 1, 0, 0x40, 0]).await.is_none());
    assert!(reach(http_port, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await.is_none());
    assert!(nas.accepted().is_empty());
    assert!(steering.events.lock().unwrap().is_empty());
    // The listener is none the worse.
    assert_eq!(reach(tls_port, &hello("nas.example.com")).await.unwrap().0, "nas");
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_timeout_and_others_go_on() {
    let steering = Arc::new(Recording::default());
    let nas = Backend::start("nas", &steering).await;
    let port = free_port();
    let forwards = table([forward("tls", port, Some("nas.example.com"), nas.address)]);
    let limits = ProxyLimits { first_bytes_timeout: Duration::from_millis(300), ..test_limits() };
    let _proxy = Proxy::start(forwards, &steering, limits, 1).await;

    let (_, mut relayed) = reach(port, &hello("nas.example.com")).await.unwrap();
    let mut silent = connect(port).await;
    let mut slow = connect(port).await;
    slow.write_all(&hello("nas.example.com")[..20]).await.unwrap();
    assert!(closed_unanswered(&mut silent).await);
    assert!(closed_unanswered(&mut slow).await);
    // The relay established before is untouched, in both directions.
    relayed.write_all(b"still there?").await.unwrap();
    assert_eq!(echo(&mut relayed, 12).await, b"still there?");
    assert_eq!(nas.accepted().len(), 1);
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_until_one_ends() {
    let steering = Arc::new(Recording::default());
    let nas = Backend::start("nas", &steering).await;
    let port = free_port();
    let forwards = table([forward("tls", port, Some("nas.example.com"), nas.address)]);
    let limits = ProxyLimits { max_connections: 2, ..test_limits() };
    let _proxy = Proxy::start(forwards, &steering, limits, 1).await;
    let bytes = hello("nas.example.com");

    let (_, first) = reach(port, &bytes).await.unwrap();
    let (_, _second) = reach(port, &bytes).await.unwrap();
    assert!(reach(port, &bytes).await.is_none(), "a third connection was relayed");
    assert_eq!(nas.accepted().len(), 2);
    // One ends: once the proxy has seen it end, a new one is relayed again.
    drop(first);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while reach(port, &bytes).await.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no connection admitted after one ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(nas.accepted().len(), 3);
}

#[tokio::test]
async fn beyond_the_choosing_limit_the_oldest_silent_connection_is_closed() {
    let steering = Arc::new(Recording::default());
    let nas = Backend::start("nas", &steering).await;
    let port = free_port();
    let forwards = table([forward("tls", port, Some("nas.example.com"), nas.address)]);
    let limits = ProxyLimits { max_choosing: 2, ..test_limits() };
    let _proxy = Proxy::start(forwards, &steering, limits, 1).await;
    let bytes = hello("nas.example.com");

    // Accepted, and so admitted, in the order their handshakes completed.
    let mut oldest = connect(port).await;
    let mut middle = connect(port).await;
    let mut newest = connect(port).await;
    assert!(closed_unanswered(&mut oldest).await);
    for client in [&mut middle, &mut newest] {
        client.write_all(&bytes).await.unwrap();
        assert_eq!(greeting(client).await.as_deref(), Some("nas"));
    }
}

#[tokio::test]
async fn a_relay_passes_half_closes_and_releases_its_flow_once() {
    let steering = Arc::new(Recording::default());
    let nas = Backend::start("nas", &steering).await;
    let port = free_port();
    let forwards = table([forward("tls", port, Some("nas.example.com"), nas.address)]);
    let _proxy = Proxy::start(forwards, &steering, test_limits(), 1).await;

    let bytes = hello("nas.example.com");
    let (_, mut client) = reach(port, &bytes).await.unwrap();
    let [(_, Some(flow))] = nas.accepted()[..] else { panic!("{:?}", nas.accepted()) };
    assert_eq!(steering.count(&Event::Release(flow)), 0);
    // The client says it is done sending; the backend's answer still comes, then its end.
    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within(client.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(rest, b"last words");
    until(|| steering.count(&Event::Release(flow)) == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(steering.count(&Event::Steer(flow)), 1);
    assert_eq!(steering.count(&Event::Release(flow)), 1);
}

#[tokio::test]
async fn removing_a_forward_refuses_new_connections_and_keeps_established_ones() {
    let steering = Arc::new(Recording::default());
    let nas = Backend::start("nas", &steering).await;
    let port = free_port();
    let forwards = table([forward("tls", port, Some("nas.example.com"), nas.address)]);
    let proxy = Proxy::start(forwards, &steering, test_limits(), 1).await;

    let (_, mut established) = reach(port, &hello("nas.example.com")).await.unwrap();
    proxy.table.send(table([])).unwrap();
    proxy.until_listening(|count| count == 0).await;
    let refused = TcpStream::connect((LOCALHOST, port)).await;
    assert!(refused.is_err(), "the port still accepts");
    established.write_all(b"after removal").await.unwrap();
    assert_eq!(echo(&mut established, 13).await, b"after removal");

    // Stopping the proxy altogether leaves it running too.
    drop(proxy);
    established.write_all(b"after stop").await.unwrap();
    assert_eq!(echo(&mut established, 10).await, b"after stop");
}

#[tokio::test]
async fn a_forward_added_later_is_listened_on() {
    let steering = Arc::new(Recording::default());
    let nas = Backend::start("nas", &steering).await;
    let port = free_port();
    let proxy = Proxy::start(table([]), &steering, test_limits(), 0).await;
    assert!(proxy.handle.listening().is_empty());
    proxy.table.send(table([forward("http", port, None, nas.address)])).unwrap();
    proxy.until_listening(|count| count == 1).await;
    assert_eq!(proxy.handle.listening(), [(Transport::Tcp, SocketAddr::new(LOCALHOST, port))]);
    assert_eq!(reach(port, &request("any.example")).await.unwrap().0, "nas");
    // Stopping the proxy closes the port.
    proxy.handle.stop();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while TcpStream::connect((LOCALHOST, port)).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the port stayed open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_port_in_use_is_skipped_and_the_others_are_served() {
    let steering = Arc::new(Recording::default());
    let nas = Backend::start("nas", &steering).await;
    let taken = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let port = free_port();
    let forwards = table([
        forward("http", taken_port, None, nas.address),
        forward("http", port, None, nas.address),
    ]);
    let proxy = Proxy::start(forwards, &steering, test_limits(), 1).await;
    assert_eq!(proxy.handle.listening(), [(Transport::Tcp, SocketAddr::new(LOCALHOST, port))]);
    assert_eq!(reach(port, &request("any.example")).await.unwrap().0, "nas");
}

#[tokio::test]
async fn carried_tcp_forwards_relay_without_waiting_for_the_client() {
    let steering = Arc::new(Recording::default());
    let ssh = Backend::start("ssh", &steering).await;
    let port = free_port();
    let forwards = table([forward("tcp", port, None, ssh.address)]);
    let proxy = Proxy::start(Arc::clone(&forwards), &steering, test_limits(), 0).await;
    // Not carried: nothing listens.
    assert!(proxy.handle.listening().is_empty());
    drop(proxy);

    let limits = ProxyLimits { carry_tcp_forwards: true, ..test_limits() };
    let _proxy = Proxy::start(forwards, &steering, limits, 1).await;
    let mut client = connect(port).await;
    // The server speaks first: the backend greets before the client sends anything.
    assert_eq!(greeting(&mut client).await.as_deref(), Some("ssh"));
    client.write_all(b"hello").await.unwrap();
    assert_eq!(echo(&mut client, 5).await, b"hello");
    let [(peer, Some(flow))] = ssh.accepted()[..] else { panic!("{:?}", ssh.accepted()) };
    assert_eq!((flow.local, flow.transport), (peer, Transport::Tcp));
}

#[tokio::test]
async fn carried_udp_forwards_relay_each_client_through_its_own_steered_socket() {
    let steering = Arc::new(Recording::default());
    let backend = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let backend_address = backend.local_addr().unwrap();
    let port = free_udp_port();
    let forwards = table([forward("udp", port, None, backend_address)]);
    let limits = ProxyLimits { carry_udp_forwards: true, ..test_limits() };
    let _proxy = Proxy::start(forwards, &steering, limits, 1).await;

    let mut seen = Vec::new();
    for client_name in ["one", "two"] {
        let client = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        client.connect((LOCALHOST, port)).await.unwrap();
        client.send(client_name.as_bytes()).await.unwrap();
        let mut buffer = [0; 64];
        let (length, from) = within(backend.recv_from(&mut buffer)).await.unwrap();
        assert_eq!(&buffer[..length], client_name.as_bytes());
        let flow = steering.steered_from(from).expect("the backend got an unsteered datagram");
        assert_eq!(flow.client, client.local_addr().unwrap());
        assert_eq!((flow.backend, flow.transport), (backend_address, Transport::Udp));
        backend.send_to(b"reply", from).await.unwrap();
        let length = within(client.recv(&mut buffer)).await.unwrap();
        assert_eq!(&buffer[..length], b"reply");
        seen.push(from);
    }
    assert_ne!(seen[0], seen[1], "two clients shared a socket towards the backend");
}

#[tokio::test]
async fn an_idle_udp_client_is_forgotten_and_released() {
    let steering = Arc::new(Recording::default());
    let backend = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let port = free_udp_port();
    let forwards = table([forward("udp", port, None, backend.local_addr().unwrap())]);
    let limits = ProxyLimits {
        carry_udp_forwards: true,
        udp_idle_timeout: Duration::from_millis(200),
        ..test_limits()
    };
    let _proxy = Proxy::start(forwards, &steering, limits, 1).await;
    let client = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    client.send_to(b"ping", (LOCALHOST, port)).await.unwrap();
    let mut buffer = [0; 64];
    let (_, from) = within(backend.recv_from(&mut buffer)).await.unwrap();
    let flow = steering.steered_from(from).unwrap();
    until(|| steering.count(&Event::Release(flow)) == 1).await;
}
