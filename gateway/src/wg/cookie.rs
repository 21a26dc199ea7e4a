//! MAC1, MAC2 and cookie replies (whitepaper §5.4.4, §5.4.7; kernel `cookie.c`).
//!
//! The [`CookieChecker`] is the device's side: it validates the MACs of incoming handshake
//! messages and, under load, answers a message without a valid MAC2 with a cookie reply bound
//! to the sender's address. The [`CookieMaker`] is a peer's side: it writes MAC1 (and MAC2
//! while it holds a fresh cookie) into outgoing handshake messages and takes in cookie replies.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use gateway_common::wire::HANDSHAKE_COOKIE_LEN;
use rand_core::{CryptoRng, RngCore};

use super::crypto::{
    self, DecryptError, HASH_LEN, KEY_LEN, MAC_LEN, SecretKey, XNONCE_LEN, constant_time_eq, wipe,
    xaead_open, xaead_seal,
};
use super::messages::{
    self, COOKIE_LEN, CookieReply, ENCRYPTED_COOKIE_LEN, MacProtected, MacProtectedMut,
};

/// How long a cookie secret (checker) and a received cookie (maker) live.
pub const COOKIE_SECRET_MAX_AGE: Duration = Duration::from_secs(120);
/// A maker stops using a cookie this much before the checker would have rotated its secret.
pub const COOKIE_SECRET_LATENCY: Duration = Duration::from_secs(5);

const MAC1_KEY_LABEL: &[u8; 8] = b"mac1----";
const COOKIE_KEY_LABEL: &[u8; 8] = b"cookie--";

/// HASH(label || public key): the keys both sides derive from the receiver's public key.
fn derive_key(label: &[u8; 8], public_key: &[u8; KEY_LEN]) -> SecretKey {
    SecretKey(crypto::hash(&[label, public_key]))
}

/// `birth + max_age <= now`, the kernel's `wg_birthdate_has_expired`.
fn has_expired(birth: Instant, max_age: Duration, now: Instant) -> bool {
    birth.checked_add(max_age).is_none_or(|deadline| deadline <= now)
}

/// What the MACs of an incoming handshake message prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacState {
    /// MAC1 is wrong: the sender does not know our public key. Drop silently.
    Invalid,
    /// MAC1 is right; MAC2 was not checked or is not valid for this source.
    ValidMac1,
    /// MAC1 is right and MAC2 carries the cookie we would give this source right now. (Under
    /// load the caller still applies the per-source rate limit, as the kernel does.)
    ValidMac1AndCookie,
}

/// The device's side: MAC1 verification and cookie issuance.
pub struct CookieChecker {
    mac1_key: SecretKey,
    cookie_encryption_key: SecretKey,
    secret: SecretKey,
    secret_birth: Instant,
}

impl CookieChecker {
    /// A checker for a device with public key `local_public` (`None`: no private key yet, in
    /// which case every MAC1 is checked against an all-zero key, as in the kernel).
    pub fn new(
        local_public: Option<&[u8; KEY_LEN]>,
        now: Instant,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> CookieChecker {
        let mut checker = CookieChecker {
            mac1_key: SecretKey([0; KEY_LEN]),
            cookie_encryption_key: SecretKey([0; KEY_LEN]),
            secret: SecretKey([0; HASH_LEN]),
            secret_birth: now,
        };
        rng.fill_bytes(&mut checker.secret.0);
        checker.set_local_public(local_public);
        checker
    }

    /// Re-derives the keys after the device key changed.
    pub fn set_local_public(&mut self, local_public: Option<&[u8; KEY_LEN]>) {
        match local_public {
            Some(public) => {
                self.mac1_key = derive_key(MAC1_KEY_LABEL, public);
                self.cookie_encryption_key = derive_key(COOKIE_KEY_LABEL, public);
            }
            None => {
                self.mac1_key = SecretKey([0; KEY_LEN]);
                self.cookie_encryption_key = SecretKey([0; KEY_LEN]);
            }
        }
    }

    /// The cookie for `source` right now: MAC(secret, source IP bytes || source port, big
    /// endian). The secret is replaced once it is [`COOKIE_SECRET_MAX_AGE`] old.
    fn make_cookie(
        &mut self,
        source: SocketAddr,
        now: Instant,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> [u8; COOKIE_LEN] {
        if has_expired(self.secret_birth, COOKIE_SECRET_MAX_AGE, now) {
            rng.fill_bytes(&mut self.secret.0);
            self.secret_birth = now;
        }
        let port = source.port().to_be_bytes();
        // A dual-stack socket reports IPv4 senders as v4-mapped IPv6; the kernel sees them
        // as IPv4 and hashes the 4-byte address.
        match source.ip().to_canonical() {
            IpAddr::V4(address) => crypto::mac(self.secret.as_bytes(), &[&address.octets(), &port]),
            IpAddr::V6(address) => crypto::mac(self.secret.as_bytes(), &[&address.octets(), &port]),
        }
    }

    /// Checks MAC1, and when `check_cookie` (the device is under load) MAC2 against the cookie
    /// for `source`.
    pub fn validate(
        &mut self,
        message: &impl MacProtected,
        source: SocketAddr,
        check_cookie: bool,
        now: Instant,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> MacState {
        let mac1 = crypto::mac(self.mac1_key.as_bytes(), &[message.covered_by_mac1()]);
        if !constant_time_eq(&mac1, message.mac1()) {
            return MacState::Invalid;
        }
        if !check_cookie {
            return MacState::ValidMac1;
        }
        let mut cookie = self.make_cookie(source, now, rng);
        let mac2 = crypto::mac(&cookie, &[message.covered_by_mac2()]);
        wipe(&mut cookie);
        if !constant_time_eq(&mac2, message.mac2()) {
            return MacState::ValidMac1;
        }
        MacState::ValidMac1AndCookie
    }

    /// A cookie reply to `message` from `source`: the cookie for that source, encrypted under
    /// a random nonce with the message's MAC1 as associated data, addressed to its sender
    /// index.
    pub fn create_reply(
        &mut self,
        message: &impl MacProtected,
        source: SocketAddr,
        now: Instant,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> [u8; HANDSHAKE_COOKIE_LEN] {
        let mut nonce = [0u8; XNONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let mut cookie = self.make_cookie(source, now, rng);
        let encrypted: [u8; ENCRYPTED_COOKIE_LEN] =
            xaead_seal(self.cookie_encryption_key.as_bytes(), &nonce, message.mac1(), &cookie)
                .try_into()
                .expect("a sealed cookie is the cookie plus a tag");
        wipe(&mut cookie);
        messages::build_cookie_reply(message.sender_index(), &nonce, &encrypted)
    }
}

/// Why a cookie reply was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieError {
    /// No handshake message has been sent since the last cookie was taken, so there is no
    /// MAC1 this reply could answer.
    NoMac1Sent,
    /// The reply does not decrypt with our key and the last MAC1 we sent.
    Decrypt(DecryptError),
}

impl std::fmt::Display for CookieError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CookieError::NoMac1Sent => {
                f.write_str("cookie reply without an outstanding handshake message to answer")
            }
            CookieError::Decrypt(_) => {
                f.write_str("cookie reply does not decrypt with the last MAC1 sent")
            }
        }
    }
}

impl std::error::Error for CookieError {}

/// A peer's side: MACs on outgoing messages and the latest cookie received from the peer.
pub struct CookieMaker {
    mac1_key: SecretKey,
    cookie_decryption_key: SecretKey,
    /// The latest cookie and when it was received.
    cookie: Option<([u8; COOKIE_LEN], Instant)>,
    /// MAC1 of the last handshake message sent, until a cookie reply to it is taken.
    last_mac1_sent: Option<[u8; MAC_LEN]>,
}

impl CookieMaker {
    pub fn new(remote_public: &[u8; KEY_LEN]) -> CookieMaker {
        CookieMaker {
            mac1_key: derive_key(MAC1_KEY_LABEL, remote_public),
            cookie_decryption_key: derive_key(COOKIE_KEY_LABEL, remote_public),
            cookie: None,
            last_mac1_sent: None,
        }
    }

    /// Writes MAC1, and MAC2 if the latest cookie is younger than
    /// [`COOKIE_SECRET_MAX_AGE`] − [`COOKIE_SECRET_LATENCY`] (zeros otherwise).
    pub fn add_macs(&mut self, message: &mut impl MacProtectedMut, now: Instant) {
        let mac1 = crypto::mac(self.mac1_key.as_bytes(), &[message.covered_by_mac1()]);
        message.set_mac1(&mac1);
        self.last_mac1_sent = Some(mac1);

        let mac2 = match &self.cookie {
            Some((cookie, birth))
                if !has_expired(*birth, COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY, now) =>
            {
                crypto::mac(cookie, &[message.covered_by_mac2()])
            }
            _ => [0; MAC_LEN],
        };
        message.set_mac2(&mac2);
    }

    /// Takes the cookie from a reply to the last message we sent, once. (Finding this peer by
    /// the reply's receiver index is the caller's job.)
    pub fn consume_reply(
        &mut self,
        reply: &CookieReply<'_>,
        now: Instant,
    ) -> Result<(), CookieError> {
        let last_mac1 = self.last_mac1_sent.ok_or(CookieError::NoMac1Sent)?;
        let mut cookie = xaead_open(
            self.cookie_decryption_key.as_bytes(),
            reply.nonce(),
            &last_mac1,
            reply.encrypted_cookie(),
        )
        .map_err(CookieError::Decrypt)?;
        let value: [u8; COOKIE_LEN] =
            cookie.as_slice().try_into().map_err(|_| CookieError::Decrypt(DecryptError))?;
        wipe(&mut cookie);
        self.cookie = Some((value, now));
        self.last_mac1_sent = None;
        Ok(())
    }

    /// Whether outgoing messages carry a MAC2 at `now`.
    pub fn has_fresh_cookie(&self, now: Instant) -> bool {
        self.cookie.as_ref().is_some_and(|(_, birth)| {
            !has_expired(*birth, COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY, now)
        })
    }
}

impl Drop for CookieMaker {
    fn drop(&mut self) {
        if let Some((cookie, _)) = &mut self.cookie {
            wipe(cookie);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wg::crypto::TestRng;
    use crate::wg::messages::{Packet, build_initiation, build_response, parse};
    use gateway_common::wire::HANDSHAKE_INITIATION_LEN;

    const DEVICE_PUBLIC: [u8; 32] = [0xd1; 32];

    fn source(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn initiation(sender_index: u32) -> [u8; HANDSHAKE_INITIATION_LEN] {
        build_initiation(sender_index, &[0x01; 32], &[0x02; 48], &[0x03; 28])
    }

    fn reply_of(bytes: &[u8]) -> CookieReply<'_> {
        match parse(bytes) {
            Ok(Packet::CookieReply(reply)) => reply,
            other => panic!("expected a cookie reply, got {other:?}"),
        }
    }

    struct Setup {
        rng: TestRng,
        start: Instant,
        checker: CookieChecker,
        maker: CookieMaker,
    }

    fn setup() -> Setup {
        let mut rng = TestRng::seeded(42);
        let start = Instant::now();
        let checker = CookieChecker::new(Some(&DEVICE_PUBLIC), start, &mut rng);
        Setup { rng, start, checker, maker: CookieMaker::new(&DEVICE_PUBLIC) }
    }

    /// Sends one message from the maker, has the checker answer it with a cookie reply, and
    /// hands the reply back to the maker.
    fn obtain_cookie(setup: &mut Setup, from: SocketAddr, now: Instant) {
        let mut message = initiation(9);
        setup.maker.add_macs(&mut message, now);
        let reply = setup.checker.create_reply(&message, from, now, &mut setup.rng);
        setup.maker.consume_reply(&reply_of(&reply), now).unwrap();
    }

    #[test]
    fn mac1_binds_the_message_to_the_receivers_public_key() {
        let mut setup = setup();
        let now = setup.start;
        let from = source("192.0.2.1:51820");
        let mut message = initiation(1);
        setup.maker.add_macs(&mut message, now);
        assert_ne!(message.mac1(), &[0; 16]);
        assert_eq!(message.mac2(), &[0; 16], "no cookie yet");
        assert_eq!(
            setup.checker.validate(&message, from, false, now, &mut setup.rng),
            MacState::ValidMac1
        );
        assert_eq!(
            setup.checker.validate(&message, from, true, now, &mut setup.rng),
            MacState::ValidMac1,
            "under load, no MAC2 is not a valid cookie"
        );
        for position in 0..HANDSHAKE_INITIATION_LEN - 16 {
            let mut tampered = message;
            tampered[position] ^= 0x20;
            assert_eq!(
                setup.checker.validate(&tampered, from, false, now, &mut setup.rng),
                MacState::Invalid,
                "byte {position}"
            );
        }
        let mut other = CookieChecker::new(Some(&[0xd2; 32]), now, &mut setup.rng);
        assert_eq!(other.validate(&message, from, false, now, &mut setup.rng), MacState::Invalid);
        let mut keyless = CookieChecker::new(None, now, &mut setup.rng);
        assert_eq!(keyless.validate(&message, from, false, now, &mut setup.rng), MacState::Invalid);
    }

    #[test]
    fn cookie_flow_under_load_end_to_end() {
        let mut setup = setup();
        let from = source("198.51.100.7:40000");
        let now = setup.start + Duration::from_secs(3);

        let mut first = initiation(0xabcd);
        setup.maker.add_macs(&mut first, now);
        assert_eq!(
            setup.checker.validate(&first, from, true, now, &mut setup.rng),
            MacState::ValidMac1
        );
        let reply = setup.checker.create_reply(&first, from, now, &mut setup.rng);
        let reply = reply_of(&reply);
        assert_eq!(reply.receiver_index(), 0xabcd, "addressed to the message's sender index");
        setup.maker.consume_reply(&reply, now).unwrap();
        assert!(setup.maker.has_fresh_cookie(now));

        let later = now + Duration::from_millis(100);
        let mut second = initiation(0xabce);
        setup.maker.add_macs(&mut second, later);
        assert_ne!(second.mac2(), &[0; 16]);
        assert_eq!(
            setup.checker.validate(&second, from, true, later, &mut setup.rng),
            MacState::ValidMac1AndCookie
        );
        assert_eq!(
            setup.checker.validate(&second, from, false, later, &mut setup.rng),
            MacState::ValidMac1,
            "MAC2 is only examined under load"
        );
        let mut tampered_mac2 = second;
        tampered_mac2[HANDSHAKE_INITIATION_LEN - 1] ^= 1;
        assert_eq!(
            setup.checker.validate(&tampered_mac2, from, true, later, &mut setup.rng),
            MacState::ValidMac1
        );
    }

    #[test]
    fn responses_carry_macs_too() {
        let mut setup = setup();
        let from = source("[2001:db8::1]:51820");
        let now = setup.start;
        obtain_cookie(&mut setup, from, now);
        let mut response = build_response(3, 4, &[0x05; 32], &[0x06; 16]);
        setup.maker.add_macs(&mut response, now);
        assert_eq!(
            setup.checker.validate(&response, from, true, now, &mut setup.rng),
            MacState::ValidMac1AndCookie
        );
        let reply = setup.checker.create_reply(&response, from, now, &mut setup.rng);
        assert_eq!(reply_of(&reply).receiver_index(), 3);
    }

    #[test]
    fn reply_for_a_different_mac1_is_refused() {
        let mut setup = setup();
        let from = source("192.0.2.1:51820");
        let now = setup.start;
        let mut first = initiation(1);
        setup.maker.add_macs(&mut first, now);
        let reply_to_first = setup.checker.create_reply(&first, from, now, &mut setup.rng);
        let mut second = initiation(2);
        setup.maker.add_macs(&mut second, now);
        assert_eq!(
            setup.maker.consume_reply(&reply_of(&reply_to_first), now),
            Err(CookieError::Decrypt(DecryptError))
        );
        assert!(!setup.maker.has_fresh_cookie(now));
        let reply_to_second = setup.checker.create_reply(&second, from, now, &mut setup.rng);
        setup.maker.consume_reply(&reply_of(&reply_to_second), now).unwrap();
        assert_eq!(
            setup.maker.consume_reply(&reply_of(&reply_to_second), now),
            Err(CookieError::NoMac1Sent),
            "a reply is taken once"
        );
    }

    #[test]
    fn reply_without_a_sent_message_or_tampered_is_refused() {
        let mut setup = setup();
        let from = source("192.0.2.1:51820");
        let now = setup.start;
        let mut message = initiation(1);
        let mut other_maker = CookieMaker::new(&DEVICE_PUBLIC);
        other_maker.add_macs(&mut message, now);
        let reply = setup.checker.create_reply(&message, from, now, &mut setup.rng);
        assert_eq!(setup.maker.consume_reply(&reply_of(&reply), now), Err(CookieError::NoMac1Sent));
        for position in 8..64 {
            let mut tampered = reply;
            tampered[position] ^= 0x10;
            assert!(other_maker.consume_reply(&reply_of(&tampered), now).is_err(), "{position}");
        }
        other_maker.consume_reply(&reply_of(&reply), now).unwrap();
        // A maker for a different device key cannot decrypt it.
        let mut wrong_key = CookieMaker::new(&[0xd2; 32]);
        wrong_key.add_macs(&mut message, now);
        let reply = setup.checker.create_reply(&message, from, now, &mut setup.rng);
        assert!(wrong_key.consume_reply(&reply_of(&reply), now).is_err());
    }

    #[test]
    fn mac2_from_a_different_source_is_invalid() {
        let mut setup = setup();
        let now = setup.start;
        let from = source("192.0.2.1:51820");
        obtain_cookie(&mut setup, from, now);
        let mut message = initiation(5);
        setup.maker.add_macs(&mut message, now);
        for elsewhere in ["192.0.2.2:51820", "192.0.2.1:51821", "[2001:db8::1]:51820"] {
            assert_eq!(
                setup.checker.validate(&message, source(elsewhere), true, now, &mut setup.rng),
                MacState::ValidMac1,
                "{elsewhere}"
            );
        }
        assert_eq!(
            setup.checker.validate(&message, from, true, now, &mut setup.rng),
            MacState::ValidMac1AndCookie
        );
        // A dual-stack socket's v4-mapped form of the same source is the same source.
        assert_eq!(
            setup.checker.validate(
                &message,
                source("[::ffff:192.0.2.1]:51820"),
                true,
                now,
                &mut setup.rng
            ),
            MacState::ValidMac1AndCookie
        );
    }

    #[test]
    fn maker_stops_using_a_cookie_before_the_secret_could_rotate() {
        let mut setup = setup();
        let from = source("192.0.2.1:51820");
        let received = setup.start;
        obtain_cookie(&mut setup, from, received);
        let last_use = received + Duration::from_secs(115) - Duration::from_nanos(1);
        let mut message = initiation(1);
        setup.maker.add_macs(&mut message, last_use);
        assert_ne!(message.mac2(), &[0; 16]);
        assert_eq!(
            setup.checker.validate(&message, from, true, last_use, &mut setup.rng),
            MacState::ValidMac1AndCookie
        );
        let expired = received + Duration::from_secs(115);
        assert!(!setup.maker.has_fresh_cookie(expired));
        setup.maker.add_macs(&mut message, expired);
        assert_eq!(message.mac2(), &[0; 16]);
    }

    #[test]
    fn checker_secret_rotates_after_120_seconds() {
        let mut setup = setup();
        let from = source("192.0.2.1:51820");
        // The cookie is issued late in the secret's life, so the maker still considers it
        // fresh when the checker replaces the secret.
        let issued = setup.start + Duration::from_secs(100);
        obtain_cookie(&mut setup, from, issued);
        let just_before = setup.start + Duration::from_secs(120) - Duration::from_nanos(1);
        let mut message = initiation(1);
        setup.maker.add_macs(&mut message, just_before);
        assert_eq!(
            setup.checker.validate(&message, from, true, just_before, &mut setup.rng),
            MacState::ValidMac1AndCookie
        );
        let rotated = setup.start + Duration::from_secs(120);
        setup.maker.add_macs(&mut message, rotated);
        assert_ne!(message.mac2(), &[0; 16], "the maker's cookie is only 20 s old");
        assert_eq!(
            setup.checker.validate(&message, from, true, rotated, &mut setup.rng),
            MacState::ValidMac1,
            "the old cookie died with the old secret"
        );
        obtain_cookie(&mut setup, from, rotated);
        setup.maker.add_macs(&mut message, rotated);
        assert_eq!(
            setup.checker.validate(&message, from, true, rotated, &mut setup.rng),
            MacState::ValidMac1AndCookie
        );
    }

    #[test]
    fn changing_the_device_key_changes_mac1() {
        let mut setup = setup();
        let now = setup.start;
        let from = source("192.0.2.1:51820");
        let mut message = initiation(1);
        setup.maker.add_macs(&mut message, now);
        setup.checker.set_local_public(Some(&[0xd2; 32]));
        assert_eq!(
            setup.checker.validate(&message, from, false, now, &mut setup.rng),
            MacState::Invalid
        );
        setup.checker.set_local_public(Some(&DEVICE_PUBLIC));
        assert_eq!(
            setup.checker.validate(&message, from, false, now, &mut setup.rng),
            MacState::ValidMac1
        );
    }
}
