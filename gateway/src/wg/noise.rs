//! Noise_IKpsk2 as WireGuard instantiates it (whitepaper §5.4.2–5.4.6), shaped like the
//! kernel's `noise.c`: a device-wide [`StaticIdentity`] and a per-peer [`Handshake`] that moves
//! through Zeroed → CreatedInitiation/ConsumedInitiation → ConsumedResponse/CreatedResponse and
//! back to Zeroed when [`Handshake::begin_session`] hands out the transport keys.
//!
//! The caller owns the index table: it picks local indexes, passes them in, and routes
//! responses to the handshake whose local index they name. Every step computes on copies and
//! commits to the handshake only when it succeeds.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use gateway_common::wire::{
    HANDSHAKE_INITIATION_LEN, HANDSHAKE_RESPONSE_LEN, INITIATIONS_PER_SECOND, NSEC_PER_SEC,
};
use rand_core::{CryptoRng, RngCore};
use x25519_dalek::StaticSecret;

use super::crypto::{
    self, HASH_LEN, KEY_LEN, SecretKey, aead_open, aead_seal, dh, generate_secret, hash,
    is_all_zero, kdf1, kdf2, kdf3, wipe,
};
use super::messages::{
    self, ENCRYPTED_NOTHING_LEN, ENCRYPTED_STATIC_LEN, ENCRYPTED_TIMESTAMP_LEN, Initiation,
    Response,
};
use super::tai64n::{TAI64N_LEN, Tai64n};

pub const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
pub const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";

/// The shortest interval between two initiations a responder consumes from one peer.
pub const MIN_INITIATION_INTERVAL: Duration =
    Duration::from_nanos(NSEC_PER_SEC / INITIATIONS_PER_SECOND);

/// C_i = HASH(CONSTRUCTION), H_i = HASH(C_i || IDENTIFIER): the same for every handshake.
static INITIAL_CHAINING_KEY_AND_HASH: LazyLock<([u8; HASH_LEN], [u8; HASH_LEN])> =
    LazyLock::new(|| {
        let chaining_key = hash(&[CONSTRUCTION]);
        let hash = hash(&[&chaining_key, IDENTIFIER]);
        (chaining_key, hash)
    });

/// Why a handshake step refused to proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseError {
    /// The device has no private key.
    NoIdentity,
    /// A Diffie-Hellman result was all zeros: some public key is a point of small order.
    LowOrderPoint,
    /// An AEAD field did not authenticate: wrong keys, wrong peer or tampered bytes.
    DecryptFailed,
    /// The initiation's static key is not this handshake's peer.
    WrongPeer,
    /// The initiation's timestamp is not newer than the newest one already accepted.
    ReplayedTimestamp,
    /// An initiation arrived less than [`MIN_INITIATION_INTERVAL`] after the last consumed one.
    InitiationFlood,
    /// The step does not apply in the handshake's current state.
    UnexpectedState(HandshakeState),
    /// A response names a receiver index that is not this handshake's local index.
    IndexMismatch { local_index: Option<u32>, receiver_index: u32 },
}

impl std::fmt::Display for NoiseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoiseError::NoIdentity => f.write_str("the device has no private key"),
            NoiseError::LowOrderPoint => {
                f.write_str("a public key is a point of small order (all-zero shared secret)")
            }
            NoiseError::DecryptFailed => {
                f.write_str("handshake field failed to decrypt (wrong keys or tampered message)")
            }
            NoiseError::WrongPeer => f.write_str("the initiation is from a different peer"),
            NoiseError::ReplayedTimestamp => {
                f.write_str("initiation timestamp is not newer than the last accepted one")
            }
            NoiseError::InitiationFlood => {
                write!(f, "initiation less than {MIN_INITIATION_INTERVAL:?} after the previous one")
            }
            NoiseError::UnexpectedState(state) => {
                write!(f, "handshake step not valid in state {state:?}")
            }
            NoiseError::IndexMismatch { local_index, receiver_index } => write!(
                f,
                "response for index {receiver_index:#010x}, handshake has {local_index:?}"
            ),
        }
    }
}

impl std::error::Error for NoiseError {}

/// The device's static key pair. Without one the device can neither initiate nor respond.
pub struct StaticIdentity {
    keys: Option<(StaticSecret, [u8; KEY_LEN])>,
}

impl StaticIdentity {
    pub fn none() -> StaticIdentity {
        StaticIdentity { keys: None }
    }

    /// An identity from a private key, clamped as X25519 uses it. An all-zero key is the
    /// absence of a key, as in the kernel (`wg set ... private-key` of zeros removes it).
    pub fn from_private_key(mut private_key: [u8; KEY_LEN]) -> StaticIdentity {
        if is_all_zero(&private_key) {
            return StaticIdentity::none();
        }
        private_key[0] &= 248;
        private_key[31] &= 127;
        private_key[31] |= 64;
        let secret = StaticSecret::from(private_key);
        wipe(&mut private_key);
        let public = crypto::public_key(&secret);
        StaticIdentity { keys: Some((secret, public)) }
    }

    pub fn has_identity(&self) -> bool {
        self.keys.is_some()
    }

    pub fn public_key(&self) -> Option<[u8; KEY_LEN]> {
        self.keys.as_ref().map(|(_, public)| *public)
    }

    /// The clamped private key (what `wg show` prints).
    pub fn private_key(&self) -> Option<SecretKey> {
        self.keys.as_ref().map(|(secret, _)| SecretKey(secret.to_bytes()))
    }

    fn secret(&self) -> Result<(&StaticSecret, &[u8; KEY_LEN]), NoiseError> {
        self.keys.as_ref().map(|(secret, public)| (secret, public)).ok_or(NoiseError::NoIdentity)
    }
}

impl std::fmt::Debug for StaticIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticIdentity").field("public_key", &self.public_key()).finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeState {
    Zeroed,
    CreatedInitiation,
    ConsumedInitiation,
    CreatedResponse,
    ConsumedResponse,
}

/// The symmetric state of a handshake in flight: chaining key and hash.
struct SymmetricState {
    chaining_key: SecretKey,
    hash: [u8; HASH_LEN],
}

impl SymmetricState {
    fn initial(responder_static: &[u8; KEY_LEN]) -> SymmetricState {
        let (chaining_key, initial_hash) = *INITIAL_CHAINING_KEY_AND_HASH;
        SymmetricState {
            chaining_key: SecretKey(chaining_key),
            hash: hash(&[&initial_hash, responder_static]),
        }
    }

    fn zeroed() -> SymmetricState {
        SymmetricState { chaining_key: SecretKey([0; HASH_LEN]), hash: [0; HASH_LEN] }
    }

    fn mix_hash(&mut self, data: &[u8]) {
        self.hash = hash(&[&self.hash, data]);
    }

    /// The ephemeral public key enters both the transcript and the chaining key.
    fn mix_ephemeral(&mut self, ephemeral: &[u8; KEY_LEN]) {
        self.mix_hash(ephemeral);
        self.chaining_key = SecretKey(kdf1(self.chaining_key.as_bytes(), ephemeral));
    }

    /// Mixes a DH result into the chaining key and returns the derived message key.
    fn mix_key(&mut self, shared: &SecretKey) -> SecretKey {
        let (chaining_key, key) = kdf2(self.chaining_key.as_bytes(), shared.as_bytes());
        self.chaining_key = SecretKey(chaining_key);
        SecretKey(key)
    }

    fn mix_dh(&mut self, private: &StaticSecret, public: &[u8; KEY_LEN]) -> Result<(), NoiseError> {
        let shared = dh(private, public).ok_or(NoiseError::LowOrderPoint)?;
        self.chaining_key = SecretKey(kdf1(self.chaining_key.as_bytes(), shared.as_bytes()));
        Ok(())
    }

    fn mix_preshared_key(&mut self, preshared_key: &SecretKey) -> SecretKey {
        let (chaining_key, mut tau, key) =
            kdf3(self.chaining_key.as_bytes(), preshared_key.as_bytes());
        self.chaining_key = SecretKey(chaining_key);
        self.mix_hash(&tau);
        wipe(&mut tau);
        SecretKey(key)
    }

    fn encrypt_and_hash<const N: usize>(&mut self, key: &SecretKey, plaintext: &[u8]) -> [u8; N] {
        let sealed: [u8; N] = aead_seal(key.as_bytes(), 0, &self.hash, plaintext)
            .try_into()
            .expect("every handshake field's sealed length is fixed by its plaintext length");
        self.mix_hash(&sealed);
        sealed
    }

    fn decrypt_and_hash(&mut self, key: &SecretKey, sealed: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let plaintext = aead_open(key.as_bytes(), 0, &self.hash, sealed)
            .map_err(|_| NoiseError::DecryptFailed)?;
        self.mix_hash(sealed);
        Ok(plaintext)
    }
}

impl Drop for SymmetricState {
    fn drop(&mut self) {
        wipe(&mut self.hash);
    }
}

/// An initiation whose first half has been processed with the device's static key: the caller
/// looks up the peer by [`PendingInitiation::initiator_static`] and finishes with that peer's
/// [`Handshake::consume_initiation`].
pub struct PendingInitiation {
    initiator_static: [u8; KEY_LEN],
    initiator_ephemeral: [u8; KEY_LEN],
    sender_index: u32,
    encrypted_timestamp: [u8; ENCRYPTED_TIMESTAMP_LEN],
    symmetric: SymmetricState,
}

impl PendingInitiation {
    pub fn initiator_static(&self) -> &[u8; KEY_LEN] {
        &self.initiator_static
    }

    pub fn sender_index(&self) -> u32 {
        self.sender_index
    }
}

/// Step one of consuming an initiation (device level): `e`, `es` and the decryption of the
/// initiator's static key.
pub fn decrypt_initiator(
    identity: &StaticIdentity,
    message: &Initiation<'_>,
) -> Result<PendingInitiation, NoiseError> {
    let (static_private, static_public) = identity.secret()?;
    let mut symmetric = SymmetricState::initial(static_public);
    let initiator_ephemeral = *message.unencrypted_ephemeral();
    symmetric.mix_ephemeral(&initiator_ephemeral);
    let shared = dh(static_private, &initiator_ephemeral).ok_or(NoiseError::LowOrderPoint)?;
    let key = symmetric.mix_key(&shared);
    let mut initiator_static = symmetric.decrypt_and_hash(&key, message.encrypted_static())?;
    let static_key: [u8; KEY_LEN] =
        initiator_static.as_slice().try_into().map_err(|_| NoiseError::DecryptFailed)?;
    wipe(&mut initiator_static);
    Ok(PendingInitiation {
        initiator_static: static_key,
        initiator_ephemeral,
        sender_index: message.sender_index(),
        encrypted_timestamp: *message.encrypted_timestamp(),
        symmetric,
    })
}

/// The transport keys and indexes of a completed handshake.
#[derive(Debug, Clone)]
pub struct SessionKeys {
    pub sending: SecretKey,
    pub receiving: SecretKey,
    pub local_index: u32,
    pub remote_index: u32,
    pub is_initiator: bool,
}

/// One peer's handshake.
pub struct Handshake {
    remote_static: [u8; KEY_LEN],
    /// DH(our static, their static), or zeros when either side makes it impossible.
    precomputed_static_static: SecretKey,
    preshared_key: SecretKey,
    state: HandshakeState,
    symmetric: SymmetricState,
    ephemeral_private: Option<StaticSecret>,
    remote_ephemeral: [u8; KEY_LEN],
    /// The index last registered for this handshake, until it is cleared or becomes a
    /// session's.
    local_index: Option<u32>,
    remote_index: u32,
    latest_timestamp: Tai64n,
    last_initiation_consumption: Option<Instant>,
}

impl Handshake {
    pub fn new(
        identity: &StaticIdentity,
        remote_static: [u8; KEY_LEN],
        preshared_key: Option<[u8; KEY_LEN]>,
    ) -> Handshake {
        let mut handshake = Handshake {
            remote_static,
            precomputed_static_static: SecretKey([0; KEY_LEN]),
            preshared_key: SecretKey(preshared_key.unwrap_or([0; KEY_LEN])),
            state: HandshakeState::Zeroed,
            symmetric: SymmetricState::zeroed(),
            ephemeral_private: None,
            remote_ephemeral: [0; KEY_LEN],
            local_index: None,
            remote_index: 0,
            latest_timestamp: Tai64n::default(),
            last_initiation_consumption: None,
        };
        handshake.set_local_static(identity);
        handshake
    }

    /// Recomputes the static-static DH after the device key changed (kernel
    /// `wg_noise_precompute_static_static`). Zeros when there is no device key or the peer's
    /// key is of small order; such a handshake never initiates or accepts anything.
    pub fn set_local_static(&mut self, identity: &StaticIdentity) {
        self.precomputed_static_static = identity
            .secret()
            .ok()
            .and_then(|(private, _)| dh(private, &self.remote_static))
            .unwrap_or(SecretKey([0; KEY_LEN]));
    }

    pub fn set_preshared_key(&mut self, preshared_key: Option<[u8; KEY_LEN]>) {
        self.preshared_key = SecretKey(preshared_key.unwrap_or([0; KEY_LEN]));
    }

    /// Forgets the handshake in flight (kernel `handshake_zero`). The replay and flood
    /// memories survive: they guard the peer, not one handshake.
    pub fn clear(&mut self) {
        self.state = HandshakeState::Zeroed;
        self.symmetric = SymmetricState::zeroed();
        self.ephemeral_private = None;
        self.remote_ephemeral = [0; KEY_LEN];
        self.local_index = None;
        self.remote_index = 0;
    }

    pub fn state(&self) -> HandshakeState {
        self.state
    }

    pub fn remote_static(&self) -> &[u8; KEY_LEN] {
        &self.remote_static
    }

    pub fn preshared_key(&self) -> &[u8; KEY_LEN] {
        self.preshared_key.as_bytes()
    }

    /// The index this handshake was last registered under, until it is cleared or handed to a
    /// session. It survives an initiation consumed after our own initiation, as in the
    /// kernel; the owner of the index table replaces it on the next create step.
    pub fn local_index(&self) -> Option<u32> {
        self.local_index
    }

    pub fn remote_index(&self) -> u32 {
        self.remote_index
    }

    pub fn latest_timestamp(&self) -> Tai64n {
        self.latest_timestamp
    }

    pub fn last_initiation_consumption(&self) -> Option<Instant> {
        self.last_initiation_consumption
    }

    /// Whether a response naming `receiver_index` belongs to this handshake.
    pub fn is_awaiting_response(&self, receiver_index: u32) -> bool {
        self.state == HandshakeState::CreatedInitiation && self.local_index == Some(receiver_index)
    }

    /// Creates an initiation (MACs zeroed) registered under `local_index`. `None` when the
    /// device has no key or the static-static DH is impossible (the peer's key is of small
    /// order): such peers are never sent anything.
    pub fn create_initiation(
        &mut self,
        identity: &StaticIdentity,
        local_index: u32,
        timestamp: Tai64n,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Option<[u8; HANDSHAKE_INITIATION_LEN]> {
        let (_, static_public) = identity.secret().ok()?;
        if is_all_zero(self.precomputed_static_static.as_bytes()) {
            return None;
        }
        let mut symmetric = SymmetricState::initial(&self.remote_static);

        let ephemeral_private = generate_secret(rng);
        let ephemeral_public = crypto::public_key(&ephemeral_private);
        symmetric.mix_ephemeral(&ephemeral_public);

        let shared = dh(&ephemeral_private, &self.remote_static)?;
        let key = symmetric.mix_key(&shared);
        let encrypted_static: [u8; ENCRYPTED_STATIC_LEN] =
            symmetric.encrypt_and_hash(&key, static_public);

        let key = symmetric.mix_key(&self.precomputed_static_static);
        let encrypted_timestamp: [u8; ENCRYPTED_TIMESTAMP_LEN] =
            symmetric.encrypt_and_hash(&key, timestamp.as_bytes());

        self.symmetric = symmetric;
        self.ephemeral_private = Some(ephemeral_private);
        self.local_index = Some(local_index);
        self.state = HandshakeState::CreatedInitiation;
        Some(messages::build_initiation(
            local_index,
            &ephemeral_public,
            &encrypted_static,
            &encrypted_timestamp,
        ))
    }

    /// Step two of consuming an initiation (peer level): `ss` and the timestamp, then the
    /// replay and flood checks. The handshake changes only if all of it succeeds.
    pub fn consume_initiation(
        &mut self,
        mut pending: PendingInitiation,
        now: Instant,
    ) -> Result<(), NoiseError> {
        if !crypto::constant_time_eq(&pending.initiator_static, &self.remote_static) {
            return Err(NoiseError::WrongPeer);
        }
        if is_all_zero(self.precomputed_static_static.as_bytes()) {
            return Err(NoiseError::LowOrderPoint);
        }
        let key = pending.symmetric.mix_key(&self.precomputed_static_static);
        let timestamp = pending.symmetric.decrypt_and_hash(&key, &pending.encrypted_timestamp)?;
        let timestamp = Tai64n(
            <[u8; TAI64N_LEN]>::try_from(timestamp.as_slice())
                .map_err(|_| NoiseError::DecryptFailed)?,
        );

        if timestamp <= self.latest_timestamp {
            return Err(NoiseError::ReplayedTimestamp);
        }
        let earliest_next = self
            .last_initiation_consumption
            .and_then(|last| last.checked_add(MIN_INITIATION_INTERVAL));
        if earliest_next.is_some_and(|earliest_next| now < earliest_next) {
            return Err(NoiseError::InitiationFlood);
        }

        self.remote_ephemeral = pending.initiator_ephemeral;
        self.latest_timestamp = timestamp;
        self.symmetric = std::mem::replace(&mut pending.symmetric, SymmetricState::zeroed());
        self.remote_index = pending.sender_index;
        if self.last_initiation_consumption.is_none_or(|last| last < now) {
            self.last_initiation_consumption = Some(now);
        }
        self.state = HandshakeState::ConsumedInitiation;
        Ok(())
    }

    /// Creates the response (MACs zeroed) to the consumed initiation, registered under
    /// `local_index`.
    pub fn create_response(
        &mut self,
        local_index: u32,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<[u8; HANDSHAKE_RESPONSE_LEN], NoiseError> {
        if self.state != HandshakeState::ConsumedInitiation {
            return Err(NoiseError::UnexpectedState(self.state));
        }
        let mut symmetric = SymmetricState {
            chaining_key: self.symmetric.chaining_key.clone(),
            hash: self.symmetric.hash,
        };

        let ephemeral_private = generate_secret(rng);
        let ephemeral_public = crypto::public_key(&ephemeral_private);
        symmetric.mix_ephemeral(&ephemeral_public);
        symmetric.mix_dh(&ephemeral_private, &self.remote_ephemeral)?;
        symmetric.mix_dh(&ephemeral_private, &self.remote_static)?;
        let key = symmetric.mix_preshared_key(&self.preshared_key);
        let encrypted_nothing: [u8; ENCRYPTED_NOTHING_LEN] = symmetric.encrypt_and_hash(&key, &[]);

        self.symmetric = symmetric;
        self.ephemeral_private = Some(ephemeral_private);
        self.local_index = Some(local_index);
        self.state = HandshakeState::CreatedResponse;
        Ok(messages::build_response(
            local_index,
            self.remote_index,
            &ephemeral_public,
            &encrypted_nothing,
        ))
    }

    /// Consumes the response to our initiation. The caller found this handshake by the
    /// response's receiver index (see [`Handshake::is_awaiting_response`]); it is checked
    /// again here.
    pub fn consume_response(
        &mut self,
        identity: &StaticIdentity,
        message: &Response<'_>,
    ) -> Result<(), NoiseError> {
        let (static_private, _) = identity.secret()?;
        if self.state != HandshakeState::CreatedInitiation {
            return Err(NoiseError::UnexpectedState(self.state));
        }
        if self.local_index != Some(message.receiver_index()) {
            return Err(NoiseError::IndexMismatch {
                local_index: self.local_index,
                receiver_index: message.receiver_index(),
            });
        }
        let ephemeral_private =
            self.ephemeral_private.as_ref().ok_or(NoiseError::UnexpectedState(self.state))?;
        let mut symmetric = SymmetricState {
            chaining_key: self.symmetric.chaining_key.clone(),
            hash: self.symmetric.hash,
        };

        let responder_ephemeral = *message.unencrypted_ephemeral();
        symmetric.mix_ephemeral(&responder_ephemeral);
        symmetric.mix_dh(ephemeral_private, &responder_ephemeral)?;
        symmetric.mix_dh(static_private, &responder_ephemeral)?;
        let key = symmetric.mix_preshared_key(&self.preshared_key);
        symmetric.decrypt_and_hash(&key, message.encrypted_nothing())?;

        self.remote_ephemeral = responder_ephemeral;
        self.symmetric = symmetric;
        self.remote_index = message.sender_index();
        self.state = HandshakeState::ConsumedResponse;
        Ok(())
    }

    /// Derives the transport keys of a completed handshake and clears it. The initiator sends
    /// with the first derived key, the responder with the second.
    pub fn begin_session(&mut self) -> Result<SessionKeys, NoiseError> {
        let is_initiator = match self.state {
            HandshakeState::ConsumedResponse => true,
            HandshakeState::CreatedResponse => false,
            state => return Err(NoiseError::UnexpectedState(state)),
        };
        let local_index = self.local_index.ok_or(NoiseError::UnexpectedState(self.state))?;
        let (first, second) = kdf2(self.symmetric.chaining_key.as_bytes(), &[]);
        let (sending, receiving) = if is_initiator { (first, second) } else { (second, first) };
        let keys = SessionKeys {
            sending: SecretKey(sending),
            receiving: SecretKey(receiving),
            local_index,
            remote_index: self.remote_index,
            is_initiator,
        };
        self.clear();
        Ok(keys)
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        wipe(&mut self.remote_ephemeral);
    }
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("remote_static", &self.remote_static)
            .field("state", &self.state)
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "noise_tests.rs"]
mod tests;
