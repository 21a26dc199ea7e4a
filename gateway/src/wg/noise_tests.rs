//! Unit tests of noise.rs on virtual time and a seeded RNG.

use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::wg::crypto::{ORDER_8_POINT, TestRng};
use crate::wg::messages::{Packet, parse};
use crate::wg::tai64n::Tai64nClock;

fn identity(rng: &mut TestRng) -> StaticIdentity {
    let mut private = [0u8; 32];
    rng.fill_bytes(&mut private);
    StaticIdentity::from_private_key(private)
}

fn initiation_of(bytes: &[u8]) -> Initiation<'_> {
    match parse(bytes) {
        Ok(Packet::Initiation(initiation)) => initiation,
        other => panic!("expected an initiation, got {other:?}"),
    }
}

fn response_of(bytes: &[u8]) -> Response<'_> {
    match parse(bytes) {
        Ok(Packet::Response(response)) => response,
        other => panic!("expected a response, got {other:?}"),
    }
}

/// Two devices that know each other, on a virtual clock.
struct Pair {
    rng: TestRng,
    clock: Tai64nClock,
    now: Instant,
    alice: StaticIdentity,
    bob: StaticIdentity,
    /// Alice's handshake with Bob, and Bob's with Alice.
    alice_to_bob: Handshake,
    bob_to_alice: Handshake,
}

impl Pair {
    fn new(seed: u64, alice_psk: Option<[u8; 32]>, bob_psk: Option<[u8; 32]>) -> Pair {
        let mut rng = TestRng::seeded(seed);
        let alice = identity(&mut rng);
        let bob = identity(&mut rng);
        let alice_to_bob = Handshake::new(&alice, bob.public_key().unwrap(), alice_psk);
        let bob_to_alice = Handshake::new(&bob, alice.public_key().unwrap(), bob_psk);
        let now = Instant::now();
        Pair {
            rng,
            clock: Tai64nClock::new(now, SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 30)),
            now,
            alice,
            bob,
            alice_to_bob,
            bob_to_alice,
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    fn alice_initiates(&mut self, index: u32) -> [u8; 148] {
        let timestamp = self.clock.timestamp(self.now);
        self.alice_to_bob
            .create_initiation(&self.alice, index, timestamp, &mut self.rng)
            .expect("alice can initiate")
    }

    fn bob_consumes(&mut self, initiation: &[u8]) -> Result<(), NoiseError> {
        let pending = decrypt_initiator(&self.bob, &initiation_of(initiation))?;
        assert_eq!(pending.initiator_static(), &self.alice.public_key().unwrap());
        self.bob_to_alice.consume_initiation(pending, self.now)
    }

    /// A whole handshake, Alice initiating; returns (Alice's keys, Bob's keys).
    fn handshake(&mut self) -> Result<(SessionKeys, SessionKeys), NoiseError> {
        let initiation = self.alice_initiates(0x1111);
        self.bob_consumes(&initiation)?;
        let response = self.bob_to_alice.create_response(0x2222, &mut self.rng)?;
        let response = response_of(&response);
        assert!(self.alice_to_bob.is_awaiting_response(response.receiver_index()));
        self.alice_to_bob.consume_response(&self.alice, &response)?;
        Ok((self.alice_to_bob.begin_session()?, self.bob_to_alice.begin_session()?))
    }
}

fn assert_matching(initiator: &SessionKeys, responder: &SessionKeys) {
    assert_eq!(initiator.sending, responder.receiving);
    assert_eq!(initiator.receiving, responder.sending);
    assert_ne!(initiator.sending, initiator.receiving);
    assert!(initiator.is_initiator);
    assert!(!responder.is_initiator);
    assert_eq!(initiator.local_index, responder.remote_index);
    assert_eq!(initiator.remote_index, responder.local_index);
}

#[test]
fn full_handshake_yields_matching_swapped_keys() {
    let mut pair = Pair::new(1, None, None);
    let (alice, bob) = pair.handshake().unwrap();
    assert_matching(&alice, &bob);
    assert_eq!((alice.local_index, alice.remote_index), (0x1111, 0x2222));
    assert_eq!(pair.alice_to_bob.state(), HandshakeState::Zeroed);
    assert_eq!(pair.bob_to_alice.state(), HandshakeState::Zeroed);
    assert_eq!(pair.alice_to_bob.local_index(), None);

    // The keys work: what one sends, the other opens.
    let sealed = crypto::aead_seal(alice.sending.as_bytes(), 0, &[], b"ping");
    assert_eq!(crypto::aead_open(bob.receiving.as_bytes(), 0, &[], &sealed).unwrap(), b"ping");
}

#[test]
fn handshake_works_in_the_other_direction() {
    let mut pair = Pair::new(2, None, None);
    pair.advance(Duration::from_secs(1));
    let timestamp = pair.clock.timestamp(pair.now);
    let initiation =
        pair.bob_to_alice.create_initiation(&pair.bob, 7, timestamp, &mut pair.rng).unwrap();
    let pending = decrypt_initiator(&pair.alice, &initiation_of(&initiation)).unwrap();
    assert_eq!(pending.initiator_static(), &pair.bob.public_key().unwrap());
    assert_eq!(pending.sender_index(), 7);
    pair.alice_to_bob.consume_initiation(pending, pair.now).unwrap();
    let response = pair.alice_to_bob.create_response(8, &mut pair.rng).unwrap();
    pair.bob_to_alice.consume_response(&pair.bob, &response_of(&response)).unwrap();
    let bob_keys = pair.bob_to_alice.begin_session().unwrap();
    let alice_keys = pair.alice_to_bob.begin_session().unwrap();
    assert_matching(&bob_keys, &alice_keys);
}

#[test]
fn preshared_key_is_mixed_in() {
    let psk = [0x5e; 32];
    let (with_psk_alice, with_psk_bob) = Pair::new(3, Some(psk), Some(psk)).handshake().unwrap();
    assert_matching(&with_psk_alice, &with_psk_bob);
    let (without_alice, _) = Pair::new(3, None, None).handshake().unwrap();
    assert_ne!(with_psk_alice.sending, without_alice.sending, "same seed, only the PSK differs");
}

#[test]
fn wrong_preshared_key_fails_and_leaves_the_initiator_waiting() {
    let mut pair = Pair::new(4, Some([1; 32]), Some([2; 32]));
    let initiation = pair.alice_initiates(1);
    pair.bob_consumes(&initiation).expect("the PSK does not enter the initiation");
    let response = pair.bob_to_alice.create_response(2, &mut pair.rng).unwrap();
    assert_eq!(
        pair.alice_to_bob.consume_response(&pair.alice, &response_of(&response)),
        Err(NoiseError::DecryptFailed)
    );
    assert_eq!(pair.alice_to_bob.state(), HandshakeState::CreatedInitiation);
    assert!(pair.alice_to_bob.begin_session().is_err());
    // One side's PSK missing is a mismatch too.
    let mut pair = Pair::new(4, None, Some([2; 32]));
    assert_eq!(pair.handshake().err(), Some(NoiseError::DecryptFailed));
}

#[test]
fn replayed_initiation_is_rejected() {
    let mut pair = Pair::new(5, None, None);
    let initiation = pair.alice_initiates(1);
    pair.bob_consumes(&initiation).unwrap();
    pair.advance(Duration::from_secs(1));
    assert_eq!(pair.bob_consumes(&initiation), Err(NoiseError::ReplayedTimestamp));
    // An initiation with an older timestamp (created earlier, delivered later) as well.
    let older = pair.clock.timestamp(pair.now - Duration::from_millis(500));
    let stale = pair.alice_to_bob.create_initiation(&pair.alice, 2, older, &mut pair.rng).unwrap();
    let newer = pair.alice_initiates(3);
    pair.bob_consumes(&newer).unwrap();
    pair.advance(Duration::from_secs(1));
    assert_eq!(pair.bob_consumes(&stale), Err(NoiseError::ReplayedTimestamp));
}

#[test]
fn all_zero_timestamp_is_never_newer() {
    let mut pair = Pair::new(6, None, None);
    let initiation = pair
        .alice_to_bob
        .create_initiation(&pair.alice, 1, Tai64n::default(), &mut pair.rng)
        .unwrap();
    assert_eq!(pair.bob_consumes(&initiation), Err(NoiseError::ReplayedTimestamp));
}

#[test]
fn initiation_flood_is_rejected_until_the_interval_passes() {
    let mut pair = Pair::new(7, None, None);
    let first = pair.alice_initiates(1);
    pair.bob_consumes(&first).unwrap();
    let consumed_at = pair.now;
    pair.advance(MIN_INITIATION_INTERVAL / 2);
    // Alice's wall clock is ahead of Bob's idea of elapsed time: her timestamp is newer, only
    // the arrival time is too early.
    let ahead = pair.clock.timestamp(pair.now + Duration::from_secs(1));
    let second = pair.alice_to_bob.create_initiation(&pair.alice, 2, ahead, &mut pair.rng).unwrap();
    assert_eq!(pair.bob_consumes(&second), Err(NoiseError::InitiationFlood));
    assert_eq!(pair.bob_to_alice.remote_index(), 1, "nothing of the flood was committed");
    pair.now = consumed_at + MIN_INITIATION_INTERVAL - Duration::from_nanos(1);
    assert_eq!(pair.bob_consumes(&second), Err(NoiseError::InitiationFlood));
    pair.now = consumed_at + MIN_INITIATION_INTERVAL;
    pair.bob_consumes(&second).expect("accepted 1/50 s after the last one");
    assert_eq!(pair.bob_to_alice.remote_index(), 2);
    assert_eq!(pair.bob_to_alice.last_initiation_consumption(), Some(pair.now));
}

#[test]
fn low_order_peer_keys_never_produce_an_initiation() {
    let mut rng = TestRng::seeded(8);
    let device = identity(&mut rng);
    let timestamp = Tai64n::from_unix(1_000, 0);
    let mut one = [0u8; 32];
    one[0] = 1;
    for low_order in [[0u8; 32], one, ORDER_8_POINT] {
        let mut handshake = Handshake::new(&device, low_order, None);
        assert!(handshake.create_initiation(&device, 1, timestamp, &mut rng).is_none());
        assert_eq!(handshake.state(), HandshakeState::Zeroed);
    }
}

#[test]
fn no_device_key_means_no_initiation_until_one_is_set() {
    let mut rng = TestRng::seeded(9);
    let peer = identity(&mut rng);
    let none = StaticIdentity::none();
    assert!(!none.has_identity());
    assert!(!StaticIdentity::from_private_key([0; 32]).has_identity());
    let mut handshake = Handshake::new(&none, peer.public_key().unwrap(), None);
    let timestamp = Tai64n::from_unix(1_000, 0);
    assert!(handshake.create_initiation(&none, 1, timestamp, &mut rng).is_none());
    let device = identity(&mut rng);
    assert!(handshake.create_initiation(&device, 1, timestamp, &mut rng).is_none());
    handshake.set_local_static(&device);
    assert!(handshake.create_initiation(&device, 1, timestamp, &mut rng).is_some());
}

#[test]
fn initiation_claiming_a_low_order_static_key_is_refused() {
    let mut rng = TestRng::seeded(10);
    let responder = identity(&mut rng);
    // An initiator that claims the order-8 point as its public key.
    let liar = StaticIdentity { keys: Some((crypto::generate_secret(&mut rng), ORDER_8_POINT)) };
    let mut liar_handshake = Handshake::new(&liar, responder.public_key().unwrap(), None);
    let initiation =
        liar_handshake.create_initiation(&liar, 1, Tai64n::from_unix(1_000, 0), &mut rng).unwrap();
    let pending = decrypt_initiator(&responder, &initiation_of(&initiation)).unwrap();
    assert_eq!(pending.initiator_static(), &ORDER_8_POINT);
    let mut responder_handshake = Handshake::new(&responder, ORDER_8_POINT, None);
    assert_eq!(
        responder_handshake.consume_initiation(pending, Instant::now()),
        Err(NoiseError::LowOrderPoint)
    );
}

#[test]
fn low_order_ephemeral_is_refused() {
    let mut pair = Pair::new(11, None, None);
    let mut initiation = pair.alice_initiates(1);
    initiation[8..40].copy_from_slice(&ORDER_8_POINT);
    assert_eq!(
        decrypt_initiator(&pair.bob, &initiation_of(&initiation)).err(),
        Some(NoiseError::LowOrderPoint)
    );
}

#[test]
fn tampered_initiation_fields_are_rejected_and_nothing_is_committed() {
    let mut pair = Pair::new(12, None, None);
    let initiation = pair.alice_initiates(1);
    // ephemeral, encrypted static, encrypted timestamp: everything Noise authenticates.
    for position in 8..116 {
        for bit in [0x01u8, 0x80] {
            let mut tampered = initiation;
            tampered[position] ^= bit;
            let result = decrypt_initiator(&pair.bob, &initiation_of(&tampered))
                .and_then(|pending| pair.bob_to_alice.consume_initiation(pending, pair.now));
            assert!(
                matches!(result, Err(NoiseError::DecryptFailed | NoiseError::LowOrderPoint)),
                "byte {position} bit {bit:#x}: {result:?}"
            );
        }
    }
    assert_eq!(pair.bob_to_alice.state(), HandshakeState::Zeroed);
    assert_eq!(pair.bob_to_alice.latest_timestamp(), Tai64n::default());
    pair.bob_consumes(&initiation).expect("the genuine initiation still goes through");
}

#[test]
fn tampered_response_fields_are_rejected_and_nothing_is_committed() {
    let mut pair = Pair::new(13, None, None);
    let initiation = pair.alice_initiates(1);
    pair.bob_consumes(&initiation).unwrap();
    let response = pair.bob_to_alice.create_response(2, &mut pair.rng).unwrap();
    for position in 12..60 {
        let mut tampered = response;
        tampered[position] ^= 0x04;
        let result = pair.alice_to_bob.consume_response(&pair.alice, &response_of(&tampered));
        assert!(
            matches!(result, Err(NoiseError::DecryptFailed | NoiseError::LowOrderPoint)),
            "byte {position}: {result:?}"
        );
    }
    let mut wrong_receiver = response;
    wrong_receiver[8] ^= 1;
    assert_eq!(
        pair.alice_to_bob.consume_response(&pair.alice, &response_of(&wrong_receiver)),
        Err(NoiseError::IndexMismatch { local_index: Some(1), receiver_index: 0 })
    );
    assert_eq!(pair.alice_to_bob.state(), HandshakeState::CreatedInitiation);
    pair.alice_to_bob.consume_response(&pair.alice, &response_of(&response)).unwrap();
    let alice = pair.alice_to_bob.begin_session().unwrap();
    let bob = pair.bob_to_alice.begin_session().unwrap();
    assert_matching(&alice, &bob);
}

#[test]
fn initiation_for_another_peer_or_device_is_refused() {
    let mut pair = Pair::new(14, None, None);
    let initiation = pair.alice_initiates(1);
    // Someone else's device cannot even open the static key.
    let stranger = identity(&mut pair.rng);
    assert_eq!(
        decrypt_initiator(&stranger, &initiation_of(&initiation)).err(),
        Some(NoiseError::DecryptFailed)
    );
    assert_eq!(
        decrypt_initiator(&StaticIdentity::none(), &initiation_of(&initiation)).err(),
        Some(NoiseError::NoIdentity)
    );
    // Bob's handshake with some other peer refuses Alice's initiation.
    let mut other_peer = Handshake::new(&pair.bob, stranger.public_key().unwrap(), None);
    let pending = decrypt_initiator(&pair.bob, &initiation_of(&initiation)).unwrap();
    assert_eq!(other_peer.consume_initiation(pending, pair.now), Err(NoiseError::WrongPeer));
}

#[test]
fn steps_out_of_order_are_refused() {
    let mut pair = Pair::new(15, None, None);
    assert_eq!(
        pair.bob_to_alice.create_response(1, &mut pair.rng).err(),
        Some(NoiseError::UnexpectedState(HandshakeState::Zeroed))
    );
    assert_eq!(
        pair.alice_to_bob.begin_session().err(),
        Some(NoiseError::UnexpectedState(HandshakeState::Zeroed))
    );
    let initiation = pair.alice_initiates(1);
    assert_eq!(
        pair.alice_to_bob.begin_session().err(),
        Some(NoiseError::UnexpectedState(HandshakeState::CreatedInitiation))
    );
    pair.bob_consumes(&initiation).unwrap();
    assert_eq!(
        pair.bob_to_alice.begin_session().err(),
        Some(NoiseError::UnexpectedState(HandshakeState::ConsumedInitiation))
    );
    let response = pair.bob_to_alice.create_response(2, &mut pair.rng).unwrap();
    // Bob's handshake is waiting for confirmation, not for a response.
    assert_eq!(
        pair.bob_to_alice.consume_response(&pair.bob, &response_of(&response)),
        Err(NoiseError::UnexpectedState(HandshakeState::CreatedResponse))
    );
    pair.alice_to_bob.consume_response(&pair.alice, &response_of(&response)).unwrap();
    assert_eq!(
        pair.alice_to_bob.consume_response(&pair.alice, &response_of(&response)),
        Err(NoiseError::UnexpectedState(HandshakeState::ConsumedResponse)),
        "a response is consumed once"
    );
}

#[test]
fn crossing_initiations_leave_the_later_one_in_charge() {
    // Both sides initiate; Alice consumes Bob's initiation before Bob's response arrives, so the
    // response to her own initiation is no longer wanted (as in the kernel).
    let mut pair = Pair::new(16, None, None);
    let from_alice = pair.alice_initiates(1);
    pair.advance(Duration::from_millis(100));
    let timestamp = pair.clock.timestamp(pair.now);
    let from_bob =
        pair.bob_to_alice.create_initiation(&pair.bob, 2, timestamp, &mut pair.rng).unwrap();
    let pending = decrypt_initiator(&pair.alice, &initiation_of(&from_bob)).unwrap();
    pair.alice_to_bob.consume_initiation(pending, pair.now).unwrap();
    pair.bob_consumes(&from_alice).unwrap();
    let response_to_alice = pair.bob_to_alice.create_response(3, &mut pair.rng).unwrap();
    assert!(!pair.alice_to_bob.is_awaiting_response(1));
    assert_eq!(pair.alice_to_bob.local_index(), Some(1), "still registered until replaced");
    assert_eq!(
        pair.alice_to_bob.consume_response(&pair.alice, &response_of(&response_to_alice)),
        Err(NoiseError::UnexpectedState(HandshakeState::ConsumedInitiation))
    );
    pair.alice_to_bob.create_response(4, &mut pair.rng).unwrap();
    assert_eq!(pair.alice_to_bob.local_index(), Some(4));
}

#[test]
fn changing_the_device_key_recomputes_the_static_static() {
    let mut pair = Pair::new(17, None, None);
    let new_bob = identity(&mut pair.rng);
    // Alice learns Bob's new key; Bob's handshake with Alice learns Bob's new private key.
    pair.alice_to_bob = Handshake::new(&pair.alice, new_bob.public_key().unwrap(), None);
    pair.bob = new_bob;
    let initiation = pair.alice_initiates(1);
    assert_eq!(pair.bob_consumes(&initiation), Err(NoiseError::DecryptFailed), "stale ss");
    pair.bob_to_alice.set_local_static(&pair.bob);
    pair.bob_consumes(&initiation).unwrap();
}

#[test]
fn clear_forgets_the_handshake_but_not_replay_protection() {
    let mut pair = Pair::new(18, None, None);
    let initiation = pair.alice_initiates(1);
    pair.bob_consumes(&initiation).unwrap();
    let latest = pair.bob_to_alice.latest_timestamp();
    pair.bob_to_alice.clear();
    assert_eq!(pair.bob_to_alice.state(), HandshakeState::Zeroed);
    assert_eq!(pair.bob_to_alice.latest_timestamp(), latest);
    pair.advance(Duration::from_secs(1));
    assert_eq!(pair.bob_consumes(&initiation), Err(NoiseError::ReplayedTimestamp));
}

#[test]
fn private_key_is_stored_clamped() {
    let identity = StaticIdentity::from_private_key([0xff; 32]);
    let private = identity.private_key().unwrap();
    assert_eq!(private.as_bytes()[0], 0xf8);
    assert_eq!(private.as_bytes()[31], 0x7f);
    assert_eq!(identity.public_key(), StaticIdentity::from_private_key(private.0).public_key());
}
