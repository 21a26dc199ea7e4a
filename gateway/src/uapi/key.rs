//! 32-byte WireGuard keys (private, public, preshared) and their two text forms: lowercase hex
//! on the UAPI socket, base64 in configuration files and `wg` output.

use std::fmt;

pub const KEY_LEN: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Key(pub [u8; KEY_LEN]);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyParseError {
    /// The text has the wrong length for 32 bytes in this encoding.
    Length { expected: usize, found: usize },
    /// A character that is not part of the encoding, at this byte offset.
    InvalidCharacter { offset: usize },
    /// Base64 whose padding or final character encodes more than 32 bytes' worth of bits.
    NonCanonical,
}

impl fmt::Display for KeyParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyParseError::Length { expected, found } => {
                write!(f, "a key is {expected} characters long, this is {found}")
            }
            KeyParseError::InvalidCharacter { offset } => {
                write!(f, "invalid character at offset {offset}")
            }
            KeyParseError::NonCanonical => write!(f, "non-canonical base64 key"),
        }
    }
}

impl std::error::Error for KeyParseError {}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";
const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// 32 bytes take 43 base64 characters and one '=' of padding.
const BASE64_LEN: usize = 44;

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn base64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

impl Key {
    pub const ZERO: Key = Key([0; KEY_LEN]);

    pub fn is_zero(&self) -> bool {
        // Constant time: this is also asked of private and preshared keys.
        self.0.iter().fold(0u8, |acc, byte| acc | byte) == 0
    }

    /// Parses exactly 64 hex digits (either case), as wireguard-go does.
    pub fn from_hex(text: &str) -> Result<Key, KeyParseError> {
        let bytes = text.as_bytes();
        if bytes.len() != 2 * KEY_LEN {
            return Err(KeyParseError::Length { expected: 2 * KEY_LEN, found: bytes.len() });
        }
        let mut key = [0u8; KEY_LEN];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let high =
                hex_value(pair[0]).ok_or(KeyParseError::InvalidCharacter { offset: 2 * i })?;
            let low =
                hex_value(pair[1]).ok_or(KeyParseError::InvalidCharacter { offset: 2 * i + 1 })?;
            key[i] = (high << 4) | low;
        }
        Ok(Key(key))
    }

    /// Lowercase hex, the form the UAPI uses in both directions.
    pub fn to_hex(&self) -> String {
        let mut text = String::with_capacity(2 * KEY_LEN);
        for byte in self.0 {
            text.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
            text.push(char::from(HEX_DIGITS[usize::from(byte & 0xf)]));
        }
        text
    }

    /// Parses the 44-character padded base64 form `wg genkey` prints.
    pub fn from_base64(text: &str) -> Result<Key, KeyParseError> {
        let bytes = text.as_bytes();
        if bytes.len() != BASE64_LEN {
            return Err(KeyParseError::Length { expected: BASE64_LEN, found: bytes.len() });
        }
        if bytes[BASE64_LEN - 1] != b'=' {
            return Err(KeyParseError::InvalidCharacter { offset: BASE64_LEN - 1 });
        }
        let mut bits: u32 = 0;
        let mut pending = 0;
        let mut key = [0u8; KEY_LEN];
        let mut written = 0;
        for (offset, &c) in bytes[..BASE64_LEN - 1].iter().enumerate() {
            let value = base64_value(c).ok_or(KeyParseError::InvalidCharacter { offset })?;
            bits = (bits << 6) | u32::from(value);
            pending += 6;
            if pending >= 8 {
                pending -= 8;
                key[written] = (bits >> pending) as u8;
                written += 1;
            }
        }
        // 43 characters carry 258 bits: the last two must be zero in a canonical encoding.
        if bits & ((1 << pending) - 1) != 0 {
            return Err(KeyParseError::NonCanonical);
        }
        Ok(Key(key))
    }

    pub fn to_base64(&self) -> String {
        let mut text = String::with_capacity(BASE64_LEN);
        for chunk in self.0.chunks(3) {
            let group = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                let index = (group >> (18 - 6 * i)) & 0x3f;
                text.push(char::from(BASE64_ALPHABET[index as usize]));
            }
        }
        text.push('=');
        text
    }

    /// Clamps a Curve25519 private key the way the kernel and wireguard-go store it.
    pub fn clamped(mut self) -> Key {
        self.0[0] &= 248;
        self.0[31] = (self.0[31] & 127) | 64;
        self
    }
}

/// Shows only a prefix: the same type holds private and preshared keys, which must not end up
/// in logs whole.
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({}…)", &self.to_hex()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_case() {
        let key = Key(std::array::from_fn(|i| (i * 7 + 3) as u8));
        let hex = key.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex, hex.to_lowercase());
        assert_eq!(Key::from_hex(&hex), Ok(key));
        assert_eq!(Key::from_hex(&hex.to_uppercase()), Ok(key));
    }

    #[test]
    fn hex_rejects_wrong_lengths_and_non_hex() {
        let good = "e8".repeat(32);
        assert_eq!(
            Key::from_hex(&good[..62]),
            Err(KeyParseError::Length { expected: 64, found: 62 })
        );
        assert_eq!(
            Key::from_hex(&format!("{good}00")),
            Err(KeyParseError::Length { expected: 64, found: 66 })
        );
        assert_eq!(Key::from_hex(""), Err(KeyParseError::Length { expected: 64, found: 0 }));
        let mut bad = good.clone();
        bad.replace_range(10..11, "g");
        assert_eq!(Key::from_hex(&bad), Err(KeyParseError::InvalidCharacter { offset: 10 }));
        let mut spaced = good.clone();
        spaced.replace_range(63..64, " ");
        assert_eq!(Key::from_hex(&spaced), Err(KeyParseError::InvalidCharacter { offset: 63 }));
        // Multi-byte UTF-8 of the right byte length is still not hex.
        let accented = format!("{}é", "a".repeat(62));
        assert!(Key::from_hex(&accented).is_err());
    }

    #[test]
    fn base64_matches_known_wg_key() {
        // A `wg genkey` output, and its bytes as `base64 -d | xxd -p` prints them.
        let base64 = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
        let hex = "c809f3e5317e9575c9b5ed78b638b7ce530dabe85ddab614220241801ddf0669";
        let key = Key::from_base64(base64).unwrap();
        assert_eq!(key.to_hex(), hex);
        assert_eq!(key.to_base64(), base64);
    }

    #[test]
    fn base64_rejects_malformed() {
        let good = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
        assert!(matches!(Key::from_base64(&good[..43]), Err(KeyParseError::Length { .. })));
        assert_eq!(
            Key::from_base64(&good.replace('=', "A")),
            Err(KeyParseError::InvalidCharacter { offset: 43 })
        );
        assert_eq!(
            Key::from_base64(&good.replace('+', "-")),
            Err(KeyParseError::InvalidCharacter { offset: 7 })
        );
        // 'k' leaves a non-zero bit in the two padding bits; 'l' would too.
        assert_eq!(
            Key::from_base64("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBml="),
            Err(KeyParseError::NonCanonical)
        );
    }

    #[test]
    fn clamping_and_zero() {
        assert!(Key::ZERO.is_zero());
        let clamped = Key([0xff; 32]).clamped();
        assert_eq!(clamped.0[0], 0xf8);
        assert_eq!(clamped.0[31], 0x7f);
        assert!(!clamped.is_zero());
        assert_eq!(format!("{clamped:?}"), "Key(f8ffffff…)");
    }
}
