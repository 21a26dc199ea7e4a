//! Interoperability known-answer tests: complete handshakes, transport packets both ways and
//! the cookie exchange between this crate's handshake layer and boringtun's sans-IO `Tunn`,
//! an independent public implementation. Our side runs on virtual time and a seeded RNG;
//! boringtun reads its own clock and random source.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use gateway_common::wire::{IPV4_HEADER_LEN, MESSAGE_PADDING_MULTIPLE};

use super::cookie::{CookieChecker, CookieMaker, MacState};
use super::crypto::{self, TestRng};
use super::messages::{self, MacProtected, Packet, parse};
use super::noise::{self, Handshake, HandshakeState, SessionKeys, StaticIdentity};
use super::tai64n::Tai64nClock;

const OUR_PRIVATE: [u8; 32] = [0x21; 32];
const THEIR_PRIVATE: [u8; 32] = [0x42; 32];
const OUR_ADDRESS: &str = "192.0.2.10:51820";

/// Our device and its one peer (boringtun), with the boringtun tunnel that is that peer.
struct Interop {
    rng: TestRng,
    clock: Tai64nClock,
    now: Instant,
    identity: StaticIdentity,
    handshake: Handshake,
    maker: CookieMaker,
    checker: CookieChecker,
    their_public: [u8; 32],
    tunn: Tunn,
    buffer: Vec<u8>,
}

impl Interop {
    fn new(preshared_key: Option<[u8; 32]>) -> Interop {
        let mut rng = TestRng::seeded(0x1e7e);
        let identity = StaticIdentity::from_private_key(OUR_PRIVATE);
        let our_public = identity.public_key().unwrap();
        let their_secret = x25519::StaticSecret::from(THEIR_PRIVATE);
        let their_public = x25519::PublicKey::from(&their_secret).to_bytes();
        let tunn = Tunn::new(
            their_secret,
            x25519::PublicKey::from(our_public),
            preshared_key,
            None,
            7,
            None,
        );
        let now = Instant::now();
        Interop {
            clock: Tai64nClock::new(now, SystemTime::now()),
            checker: CookieChecker::new(Some(&our_public), now, &mut rng),
            handshake: Handshake::new(&identity, their_public, preshared_key),
            maker: CookieMaker::new(&their_public),
            rng,
            now,
            identity,
            their_public,
            tunn,
            buffer: vec![0u8; 2048],
        }
    }

    fn source() -> IpAddr {
        OUR_ADDRESS.parse::<SocketAddr>().unwrap().ip()
    }

    /// Hands a datagram to boringtun and returns what it wants to send back, if anything.
    fn deliver_to_boringtun(&mut self, datagram: &[u8]) -> Option<Vec<u8>> {
        match self.tunn.decapsulate(Some(Self::source()), datagram, &mut self.buffer) {
            TunnResult::WriteToNetwork(reply) => Some(reply.to_vec()),
            TunnResult::Done => None,
            other => panic!("boringtun did not answer with a datagram: {other:?}"),
        }
    }

    fn our_initiation(&mut self, local_index: u32) -> [u8; 148] {
        self.now += Duration::from_secs(1);
        let timestamp = self.clock.timestamp(self.now);
        let mut initiation = self
            .handshake
            .create_initiation(&self.identity, local_index, timestamp, &mut self.rng)
            .expect("we have a key and the peer's key is fine");
        self.maker.add_macs(&mut initiation, self.now);
        initiation
    }

    /// Sends `plaintext` (an IP packet) over our session and returns what boringtun delivers.
    fn send_deliver_to_boringtun(
        &mut self,
        keys: &SessionKeys,
        counter: u64,
        plaintext: &[u8],
    ) -> Vec<u8> {
        let padded_len = plaintext.len().next_multiple_of(MESSAGE_PADDING_MULTIPLE);
        let mut padded = plaintext.to_vec();
        padded.resize(padded_len, 0);
        let sealed = crypto::aead_seal(keys.sending.as_bytes(), counter, &[], &padded);
        let datagram = messages::build_data(keys.remote_index, counter, &sealed);
        match self.tunn.decapsulate(Some(Self::source()), &datagram, &mut self.buffer) {
            TunnResult::WriteToTunnelV4(packet, source) => {
                assert_eq!(source, Ipv4Addr::new(10, 0, 0, 2));
                packet.to_vec()
            }
            other => panic!("boringtun did not deliver our data packet: {other:?}"),
        }
    }

    /// Has boringtun send `plaintext` and opens it with our session; returns the plaintext.
    fn receive_from_boringtun(&mut self, keys: &SessionKeys, plaintext: &[u8]) -> Vec<u8> {
        let datagram = match self.tunn.encapsulate(plaintext, &mut self.buffer) {
            TunnResult::WriteToNetwork(datagram) => datagram.to_vec(),
            other => panic!("boringtun did not encrypt: {other:?}"),
        };
        open_data(keys, &datagram)
    }
}

fn open_data(keys: &SessionKeys, datagram: &[u8]) -> Vec<u8> {
    let Ok(Packet::Data(data)) = parse(datagram) else {
        panic!("expected a data message, got {:?}", parse(datagram));
    };
    assert_eq!(data.receiver_index(), keys.local_index);
    crypto::aead_open(keys.receiving.as_bytes(), data.counter(), &[], data.encrypted_payload())
        .expect("boringtun's data packet opens with our receiving key")
}

fn ipv4_packet(source: Ipv4Addr, destination: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total_len = (IPV4_HEADER_LEN + payload.len()) as u16;
    let mut packet = vec![0x45, 0];
    packet.extend_from_slice(&total_len.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    packet.extend_from_slice(&source.octets());
    packet.extend_from_slice(&destination.octets());
    packet.extend_from_slice(payload);
    packet
}

fn exchange_data(interop: &mut Interop, keys: &SessionKeys) {
    let ours = ipv4_packet(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1), b"to boringtun");
    assert_eq!(interop.send_deliver_to_boringtun(keys, 0, &ours), ours);
    let theirs =
        ipv4_packet(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), b"from boringtun");
    let received = interop.receive_from_boringtun(keys, &theirs);
    assert_eq!(&received[..theirs.len()], &theirs[..]);
    assert!(received[theirs.len()..].iter().all(|byte| *byte == 0), "only zero padding follows");
}

fn we_initiate(preshared_key: Option<[u8; 32]>) {
    let mut interop = Interop::new(preshared_key);
    let initiation = interop.our_initiation(0x0102_0304);
    let response = interop.deliver_to_boringtun(&initiation).expect("boringtun responds");
    let Ok(Packet::Response(response)) = parse(&response) else {
        panic!("expected a response, got {:?}", parse(&response));
    };
    let source: SocketAddr = "203.0.113.5:51820".parse().unwrap();
    assert_eq!(
        interop.checker.validate(&response, source, false, interop.now, &mut interop.rng),
        MacState::ValidMac1,
        "boringtun's MAC1 verifies under our key"
    );
    assert!(interop.handshake.is_awaiting_response(response.receiver_index()));
    interop.handshake.consume_response(&interop.identity, &response).unwrap();
    let keys = interop.handshake.begin_session().unwrap();
    assert!(keys.is_initiator);
    assert_eq!(keys.local_index, 0x0102_0304);
    assert_eq!(keys.remote_index, response.sender_index());
    exchange_data(&mut interop, &keys);
}

fn boringtun_initiates(preshared_key: Option<[u8; 32]>) {
    let mut interop = Interop::new(preshared_key);
    let initiation = match interop.tunn.format_handshake_initiation(&mut interop.buffer, false) {
        TunnResult::WriteToNetwork(initiation) => initiation.to_vec(),
        other => panic!("boringtun did not initiate: {other:?}"),
    };
    let keys = respond(&mut interop, &initiation, 0x0a0b_0c0d);
    exchange_data(&mut interop, &keys);
}

/// Consumes boringtun's initiation, answers it, and checks the keepalive boringtun confirms
/// the session with.
fn respond(interop: &mut Interop, initiation: &[u8], local_index: u32) -> SessionKeys {
    let Ok(Packet::Initiation(initiation)) = parse(initiation) else {
        panic!("expected an initiation");
    };
    let source: SocketAddr = "203.0.113.5:51820".parse().unwrap();
    assert_ne!(
        interop.checker.validate(&initiation, source, false, interop.now, &mut interop.rng),
        MacState::Invalid
    );
    let pending = noise::decrypt_initiator(&interop.identity, &initiation).unwrap();
    assert_eq!(pending.initiator_static(), &interop.their_public);
    interop.now += Duration::from_secs(1);
    interop.handshake.consume_initiation(pending, interop.now).unwrap();
    let mut response = interop.handshake.create_response(local_index, &mut interop.rng).unwrap();
    interop.maker.add_macs(&mut response, interop.now);
    let keepalive =
        interop.deliver_to_boringtun(&response).expect("boringtun confirms with a keepalive");
    let keys = interop.handshake.begin_session().unwrap();
    assert!(!keys.is_initiator);
    assert_eq!(keys.remote_index, initiation.sender_index());
    assert_eq!(interop.handshake.state(), HandshakeState::Zeroed);
    assert!(open_data(&keys, &keepalive).is_empty(), "a keepalive has no payload");
    keys
}

#[test]
fn we_initiate_to_boringtun() {
    we_initiate(None);
}

#[test]
fn we_initiate_to_boringtun_with_preshared_key() {
    we_initiate(Some([0x77; 32]));
}

#[test]
fn boringtun_initiates_to_us() {
    boringtun_initiates(None);
}

#[test]
fn boringtun_initiates_to_us_with_preshared_key() {
    boringtun_initiates(Some([0x77; 32]));
}

#[test]
fn mismatched_preshared_keys_do_not_interoperate() {
    let mut interop = Interop::new(Some([1; 32]));
    interop.handshake.set_preshared_key(Some([2; 32]));
    let initiation = interop.our_initiation(1);
    let response = interop.deliver_to_boringtun(&initiation).unwrap();
    let Ok(Packet::Response(response)) = parse(&response) else { panic!("no response") };
    assert_eq!(
        interop.handshake.consume_response(&interop.identity, &response),
        Err(noise::NoiseError::DecryptFailed)
    );
}

/// boringtun counts handshake messages and, past its limit (10), answers any without a valid
/// MAC2 with a cookie reply. Our maker must take that cookie and produce a MAC2 boringtun
/// accepts.
#[test]
fn boringtun_cookie_reply_is_consumed_and_our_mac2_accepted() {
    let mut interop = Interop::new(None);
    let mut index = 100;
    let cookie_reply = loop {
        index += 1;
        assert!(index < 120, "boringtun never came under load");
        let initiation = interop.our_initiation(index);
        let reply = interop.deliver_to_boringtun(&initiation).expect("boringtun answers");
        if let Ok(Packet::CookieReply(_)) = parse(&reply) {
            break reply;
        }
    };
    let Ok(Packet::CookieReply(reply)) = parse(&cookie_reply) else { unreachable!() };
    assert_eq!(reply.receiver_index(), index);
    interop.maker.consume_reply(&reply, interop.now).expect("boringtun's cookie decrypts");

    let initiation = interop.our_initiation(index + 1);
    assert_ne!(initiation.mac2(), &[0; 16]);
    let response = interop.deliver_to_boringtun(&initiation).expect("boringtun answers");
    let Ok(Packet::Response(response)) = parse(&response) else {
        panic!("with a valid MAC2 boringtun responds: {:?}", parse(&response));
    };
    interop.handshake.consume_response(&interop.identity, &response).unwrap();
    let keys = interop.handshake.begin_session().unwrap();
    exchange_data(&mut interop, &keys);
}

/// The reverse: we answer boringtun's initiation with our cookie reply; boringtun takes it and
/// its next initiation carries a MAC2 our checker accepts for that source.
#[test]
fn our_cookie_reply_is_consumed_by_boringtun() {
    let mut interop = Interop::new(None);
    let source: SocketAddr = "203.0.113.5:40001".parse().unwrap();
    let first = match interop.tunn.format_handshake_initiation(&mut interop.buffer, false) {
        TunnResult::WriteToNetwork(initiation) => initiation.to_vec(),
        other => panic!("boringtun did not initiate: {other:?}"),
    };
    let Ok(Packet::Initiation(first_view)) = parse(&first) else { panic!("no initiation") };
    assert_eq!(
        interop.checker.validate(&first_view, source, true, interop.now, &mut interop.rng),
        MacState::ValidMac1
    );
    let reply = interop.checker.create_reply(&first_view, source, interop.now, &mut interop.rng);
    assert_eq!(interop.deliver_to_boringtun(&reply), None, "boringtun takes the cookie silently");

    let second = match interop.tunn.format_handshake_initiation(&mut interop.buffer, true) {
        TunnResult::WriteToNetwork(initiation) => initiation.to_vec(),
        other => panic!("boringtun did not initiate again: {other:?}"),
    };
    let Ok(Packet::Initiation(second_view)) = parse(&second) else { panic!("no initiation") };
    assert_eq!(
        interop.checker.validate(&second_view, source, true, interop.now, &mut interop.rng),
        MacState::ValidMac1AndCookie
    );
    let elsewhere: SocketAddr = "203.0.113.6:40001".parse().unwrap();
    assert_eq!(
        interop.checker.validate(&second_view, elsewhere, true, interop.now, &mut interop.rng),
        MacState::ValidMac1
    );
    let keys = respond(&mut interop, &second, 0x5555_0001);
    exchange_data(&mut interop, &keys);
}
