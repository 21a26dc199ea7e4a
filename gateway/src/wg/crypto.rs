//! The cryptographic primitives of WireGuard (whitepaper §5.4): BLAKE2s HASH and MAC,
//! HMAC-BLAKE2s and the HKDF-style KDF built on it, ChaCha20-Poly1305 (AEAD), XChaCha20-Poly1305
//! (XAEAD) and X25519 (DH).

use blake2::digest::{Digest, KeyInit, Mac as _};
use blake2::{Blake2s256, Blake2sMac};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::aead::consts::U16;
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag, XChaCha20Poly1305, XNonce};
use rand_core::{CryptoRng, RngCore};
use x25519_dalek::{PublicKey, StaticSecret};

pub const HASH_LEN: usize = 32;
pub const KEY_LEN: usize = 32;
pub const MAC_LEN: usize = 16;
pub const TAG_LEN: usize = 16;
pub const XNONCE_LEN: usize = 24;
const BLAKE2S_BLOCK_LEN: usize = 64;

/// An authenticated decryption failed: wrong key, nonce or associated data, or tampered bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptError;

impl std::fmt::Display for DecryptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("authenticated decryption failed (wrong key or tampered message)")
    }
}

impl std::error::Error for DecryptError {}

/// Overwrites `bytes` with zeros in a way the optimiser may not elide, so secrets do not
/// outlive their use in memory we are about to release.
pub fn wipe(bytes: &mut [u8]) {
    for byte in bytes.iter_mut() {
        // SAFETY: `byte` is a valid, aligned, exclusive reference.
        unsafe { std::ptr::write_volatile(byte, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// A 32-byte secret wiped when dropped, compared in constant time.
#[derive(Clone)]
pub struct SecretKey(pub [u8; KEY_LEN]);

impl PartialEq for SecretKey {
    fn eq(&self, other: &SecretKey) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

impl Eq for SecretKey {}

impl SecretKey {
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the comparison from being turned back into an early-exit loop.
    std::hint::black_box(difference) == 0
}

pub fn is_all_zero(bytes: &[u8]) -> bool {
    let accumulated = bytes.iter().fold(0u8, |acc, byte| acc | byte);
    std::hint::black_box(accumulated) == 0
}

/// HASH(input): BLAKE2s-256 over the concatenation of `parts`.
pub fn hash(parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut hasher = Blake2s256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// MAC(key, input): keyed BLAKE2s with a 128-bit output, over the concatenation of `parts`.
/// `key` may be up to 32 bytes (WireGuard uses 32-byte MAC1 keys and 16-byte cookies).
pub fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut mac = <Blake2sMac<U16> as KeyInit>::new_from_slice(key)
        .expect("BLAKE2s accepts keys up to 32 bytes and every caller passes 16 or 32");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// HMAC(key, input) with BLAKE2s-256 (RFC 2104 over BLAKE2s's 64-byte block), as the
/// whitepaper defines it. Written out so the `hmac` crate stays a dev-only dependency: the tests
/// check this against it.
pub fn hmac(key: &[u8; HASH_LEN], input: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut padded_key = [0u8; BLAKE2S_BLOCK_LEN];
    padded_key[..HASH_LEN].copy_from_slice(key);

    for byte in padded_key.iter_mut() {
        *byte ^= 0x36;
    }
    let mut inner = Blake2s256::new();
    inner.update(padded_key);
    for part in input {
        inner.update(part);
    }
    let mut inner_hash: [u8; HASH_LEN] = inner.finalize().into();

    for byte in padded_key.iter_mut() {
        *byte ^= 0x36 ^ 0x5c;
    }
    let mut outer = Blake2s256::new();
    outer.update(padded_key);
    outer.update(inner_hash);
    let result = outer.finalize().into();

    wipe(&mut padded_key);
    wipe(&mut inner_hash);
    result
}

/// The first `N` outputs of KDF_N(key, input): HKDF-Extract with `key` as salt, then Expand with
/// an empty info string, each output block 32 bytes.
fn kdf<const N: usize>(key: &[u8; HASH_LEN], input: &[u8]) -> [[u8; HASH_LEN]; N] {
    let mut pseudorandom_key = hmac(key, &[input]);
    let mut outputs = [[0u8; HASH_LEN]; N];
    for counter in 0..N {
        let label = [counter as u8 + 1];
        outputs[counter] = if counter == 0 {
            hmac(&pseudorandom_key, &[&label])
        } else {
            hmac(&pseudorandom_key, &[&outputs[counter - 1], &label])
        };
    }
    wipe(&mut pseudorandom_key);
    outputs
}

pub fn kdf1(key: &[u8; HASH_LEN], input: &[u8]) -> [u8; HASH_LEN] {
    let [first] = kdf::<1>(key, input);
    first
}

pub fn kdf2(key: &[u8; HASH_LEN], input: &[u8]) -> ([u8; HASH_LEN], [u8; HASH_LEN]) {
    let [first, second] = kdf::<2>(key, input);
    (first, second)
}

pub fn kdf3(
    key: &[u8; HASH_LEN],
    input: &[u8],
) -> ([u8; HASH_LEN], [u8; HASH_LEN], [u8; HASH_LEN]) {
    let [first, second, third] = kdf::<3>(key, input);
    (first, second, third)
}

/// The AEAD nonce: 32 zero bits followed by the 64-bit little-endian counter.
fn aead_nonce(counter: u64) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_le_bytes());
    nonce.into()
}

/// AEAD(key, counter, plain, aad): ChaCha20-Poly1305, encrypting `buffer` in place and
/// returning the tag.
pub fn aead_seal_in_place(
    key: &[u8; KEY_LEN],
    counter: u64,
    aad: &[u8],
    buffer: &mut [u8],
) -> [u8; TAG_LEN] {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    cipher
        .encrypt_in_place_detached(&aead_nonce(counter), aad, buffer)
        .expect("ChaCha20-Poly1305 encrypts any buffer shorter than 256 GiB")
        .into()
}

/// Decrypts `buffer` in place if `tag` authenticates it; on failure `buffer` is unchanged.
pub fn aead_open_in_place(
    key: &[u8; KEY_LEN],
    counter: u64,
    aad: &[u8],
    buffer: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), DecryptError> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    cipher
        .decrypt_in_place_detached(&aead_nonce(counter), aad, buffer, Tag::from_slice(tag))
        .map_err(|_| DecryptError)
}

/// AEAD into a fresh buffer: ciphertext followed by the 16-byte tag.
pub fn aead_seal(key: &[u8; KEY_LEN], counter: u64, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut sealed = Vec::with_capacity(plaintext.len() + TAG_LEN);
    sealed.extend_from_slice(plaintext);
    let tag = aead_seal_in_place(key, counter, aad, &mut sealed);
    sealed.extend_from_slice(&tag);
    sealed
}

/// Opens ciphertext-and-tag produced by [`aead_seal`].
pub fn aead_open(
    key: &[u8; KEY_LEN],
    counter: u64,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, DecryptError> {
    let body_len = sealed.len().checked_sub(TAG_LEN).ok_or(DecryptError)?;
    let (body, tag) = sealed.split_at(body_len);
    let mut plaintext = body.to_vec();
    let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| DecryptError)?;
    aead_open_in_place(key, counter, aad, &mut plaintext, tag)?;
    Ok(plaintext)
}

/// XAEAD(key, nonce, plain, aad): XChaCha20-Poly1305, ciphertext followed by the tag.
pub fn xaead_seal(
    key: &[u8; KEY_LEN],
    nonce: &[u8; XNONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let mut sealed = Vec::with_capacity(plaintext.len() + TAG_LEN);
    sealed.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut sealed)
        .expect("XChaCha20-Poly1305 encrypts any buffer shorter than 256 GiB");
    sealed.extend_from_slice(&tag);
    sealed
}

pub fn xaead_open(
    key: &[u8; KEY_LEN],
    nonce: &[u8; XNONCE_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, DecryptError> {
    let body_len = sealed.len().checked_sub(TAG_LEN).ok_or(DecryptError)?;
    let (body, tag) = sealed.split_at(body_len);
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let mut plaintext = body.to_vec();
    cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            aad,
            &mut plaintext,
            Tag::from_slice(tag),
        )
        .map_err(|_| DecryptError)?;
    Ok(plaintext)
}

/// DH(private, public): X25519. `None` when the result is all zeros, which happens exactly when
/// `public` is a point of small order: such a peer contributes nothing to the shared secret.
pub fn dh(private: &StaticSecret, public: &[u8; KEY_LEN]) -> Option<SecretKey> {
    let shared = private.diffie_hellman(&PublicKey::from(*public));
    let shared = SecretKey(*shared.as_bytes());
    if is_all_zero(shared.as_bytes()) {
        return None;
    }
    Some(shared)
}

/// DH-Pubkey(private).
pub fn public_key(private: &StaticSecret) -> [u8; KEY_LEN] {
    PublicKey::from(private).to_bytes()
}

/// DH-Generate(): a fresh, clamped X25519 private key.
pub fn generate_secret(rng: &mut (impl RngCore + CryptoRng)) -> StaticSecret {
    StaticSecret::random_from_rng(rng)
}

/// A deterministic random source for tests: BLAKE2s in counter mode over a seed, so every
/// test run draws the same keys and nonces.
#[cfg(test)]
pub(crate) struct TestRng {
    seed: u64,
    block_counter: u64,
    block: [u8; HASH_LEN],
    used: usize,
}

#[cfg(test)]
impl TestRng {
    pub(crate) fn seeded(seed: u64) -> Self {
        TestRng { seed, block_counter: 0, block: [0; HASH_LEN], used: HASH_LEN }
    }
}

#[cfg(test)]
impl RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        let mut bytes = [0u8; 4];
        self.fill_bytes(&mut bytes);
        u32::from_le_bytes(bytes)
    }

    fn next_u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        self.fill_bytes(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            if self.used == HASH_LEN {
                self.block = hash(&[&self.seed.to_le_bytes(), &self.block_counter.to_le_bytes()]);
                self.block_counter += 1;
                self.used = 0;
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

#[cfg(test)]
impl CryptoRng for TestRng {}

/// A point of order 8 on Curve25519 (one of the small-order points X25519 implementations
/// blacklist): DH with it yields all zeros whatever the private key.
#[cfg(test)]
pub(crate) const ORDER_8_POINT: [u8; 32] = [
    0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
    0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
];

#[cfg(test)]
mod tests {
    use super::*;
    use hkdf::SimpleHkdf;
    use hmac::SimpleHmac;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn blake2s_matches_rfc7693_appendix_b() {
        assert_eq!(
            hex(&hash(&[b"abc"])),
            "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982"
        );
        assert_eq!(hash(&[b"a", b"bc"]), hash(&[b"abc"]), "parts are concatenated");
    }

    /// RFC 7693 Appendix E: the BLAKE2s-256 of 48 keyed and unkeyed hashes over Fibonacci-
    /// generated inputs. Our `hash` (32-byte output) and `mac` (16-byte output, here with a
    /// 16-byte key as for cookies) produce their share of them; the other output lengths come
    /// from the `blake2` crate directly.
    #[test]
    fn blake2s_matches_rfc7693_appendix_e_self_test() {
        use blake2::digest::{Update, VariableOutput};
        use blake2::{Blake2sMac256, Blake2sVar};
        use chacha20poly1305::aead::consts::{U20, U28};

        fn sequence(len: usize, seed: u32) -> Vec<u8> {
            let (mut a, mut b) = (0xDEAD_4BADu32.wrapping_mul(seed), 1u32);
            (0..len)
                .map(|_| {
                    let t = a.wrapping_add(b);
                    a = b;
                    b = t;
                    (t >> 24) as u8
                })
                .collect()
        }
        fn keyed<M: blake2::digest::Mac + KeyInit>(key: &[u8], input: &[u8]) -> Vec<u8> {
            let mut mac = <M as KeyInit>::new_from_slice(key).unwrap();
            blake2::digest::Mac::update(&mut mac, input);
            mac.finalize().into_bytes().to_vec()
        }

        let mut grand = Blake2s256::new();
        for output_len in [16usize, 20, 28, 32] {
            for input_len in [0usize, 3, 64, 65, 255, 1024] {
                let input = sequence(input_len, input_len as u32);
                let unkeyed = if output_len == 32 {
                    hash(&[&input]).to_vec()
                } else {
                    let mut hasher = Blake2sVar::new(output_len).unwrap();
                    hasher.update(&input);
                    let mut out = vec![0u8; output_len];
                    hasher.finalize_variable(&mut out).unwrap();
                    out
                };
                Digest::update(&mut grand, &unkeyed);
                let key = sequence(output_len, output_len as u32);
                let keyed = match output_len {
                    16 => mac(&key, &[&input]).to_vec(),
                    20 => keyed::<Blake2sMac<U20>>(&key, &input),
                    28 => keyed::<Blake2sMac<U28>>(&key, &input),
                    _ => keyed::<Blake2sMac256>(&key, &input),
                };
                Digest::update(&mut grand, &keyed);
            }
        }
        assert_eq!(
            hex(&grand.finalize()),
            "6a411f08ce25adcdfb02aba641451cec53c598b24f4fc787fbdc88797f4c1dfe"
        );
    }

    #[test]
    fn hmac_matches_an_independent_hmac_blake2s() {
        let key = [0x42u8; 32];
        for input in [&b""[..], b"x", &[7u8; 64][..], &[9u8; 200][..]] {
            let mut reference =
                <SimpleHmac<Blake2s256> as hmac::Mac>::new_from_slice(&key).unwrap();
            hmac::Mac::update(&mut reference, input);
            let expected: [u8; 32] = hmac::Mac::finalize(reference).into_bytes().into();
            assert_eq!(hmac(&key, &[input]), expected, "input of {} bytes", input.len());
        }
    }

    #[test]
    fn kdf_matches_hkdf_with_empty_info() {
        let chaining_key = [0x11u8; 32];
        for input in [&b""[..], &[0x22u8; 32][..], &[0x33u8; 77][..]] {
            let reference = SimpleHkdf::<Blake2s256>::new(Some(&chaining_key), input);
            let mut expected = [0u8; 96];
            reference.expand(&[], &mut expected).unwrap();
            let (t1, t2, t3) = kdf3(&chaining_key, input);
            assert_eq!(t1, expected[..32]);
            assert_eq!(t2, expected[32..64]);
            assert_eq!(t3, expected[64..]);
            assert_eq!(kdf2(&chaining_key, input), (t1, t2));
            assert_eq!(kdf1(&chaining_key, input), t1);
        }
    }

    #[test]
    fn mac_is_keyed_and_128_bits() {
        let with_key_a = mac(&[1u8; 32], &[b"message"]);
        let with_key_b = mac(&[2u8; 32], &[b"message"]);
        assert_ne!(with_key_a, with_key_b);
        assert_eq!(mac(&[1u8; 32], &[b"mess", b"age"]), with_key_a);
        // A 16-byte key (a cookie) is a different key from the same bytes zero-padded to 32.
        let mut padded = [0u8; 32];
        padded[..16].copy_from_slice(&[3u8; 16]);
        assert_ne!(mac(&[3u8; 16], &[b"m"]), mac(&padded, &[b"m"]));
    }

    #[test]
    fn aead_nonce_is_zero_prefix_then_little_endian_counter() {
        let key = [5u8; 32];
        let sealed = aead_seal(&key, 0x0102_0304_0506_0708, b"aad", b"plaintext");
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
        let nonce = [0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1];
        let mut reference = b"plaintext".to_vec();
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"aad", &mut reference)
            .unwrap();
        reference.extend_from_slice(&tag);
        assert_eq!(sealed, reference);
    }

    #[test]
    fn aead_round_trips_and_rejects_tampering() {
        let key = [6u8; 32];
        let sealed = aead_seal(&key, 9, b"aad", b"hello");
        assert_eq!(aead_open(&key, 9, b"aad", &sealed).unwrap(), b"hello");
        assert_eq!(aead_open(&key, 10, b"aad", &sealed), Err(DecryptError));
        assert_eq!(aead_open(&key, 9, b"aae", &sealed), Err(DecryptError));
        assert_eq!(aead_open(&[7u8; 32], 9, b"aad", &sealed), Err(DecryptError));
        for position in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[position] ^= 1;
            assert_eq!(aead_open(&key, 9, b"aad", &tampered), Err(DecryptError));
        }
        assert_eq!(aead_open(&key, 9, b"aad", &sealed[..15]), Err(DecryptError));
    }

    #[test]
    fn xaead_round_trips_and_rejects_tampering() {
        let key = [8u8; 32];
        let nonce = [9u8; 24];
        let sealed = xaead_seal(&key, &nonce, b"mac1", &[1u8; 16]);
        assert_eq!(sealed.len(), 32);
        assert_eq!(xaead_open(&key, &nonce, b"mac1", &sealed).unwrap(), [1u8; 16]);
        assert!(xaead_open(&key, &nonce, b"mac2", &sealed).is_err());
        assert!(xaead_open(&key, &[0u8; 24], b"mac1", &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered[3] ^= 0x80;
        assert!(xaead_open(&key, &nonce, b"mac1", &tampered).is_err());
        assert!(xaead_open(&key, &nonce, b"mac1", &[0u8; 4]).is_err());
    }

    #[test]
    fn dh_agrees_and_refuses_low_order_points() {
        let mut rng = TestRng::seeded(1);
        let alice = generate_secret(&mut rng);
        let bob = generate_secret(&mut rng);
        let ab = dh(&alice, &public_key(&bob)).unwrap();
        let ba = dh(&bob, &public_key(&alice)).unwrap();
        assert_eq!(ab, ba);
        assert!(dh(&alice, &[0u8; 32]).is_none(), "the identity point");
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(dh(&alice, &one).is_none(), "a point of order 1 in Montgomery form");
        assert!(dh(&alice, &ORDER_8_POINT).is_none(), "a point of order 8");
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn wipe_zeroes() {
        let mut secret = [0xffu8; 40];
        wipe(&mut secret);
        assert!(is_all_zero(&secret));
    }
}
