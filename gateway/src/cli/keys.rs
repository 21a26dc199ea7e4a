//! Keys as `wg genkey` and `wg pubkey` make them.

use rand_core::{OsRng, RngCore};

use crate::uapi::Key;

/// A new Curve25519 private key.
pub fn new_private_key() -> Key {
    let mut k = [0u8; 32];
    OsRng.fill_bytes(&mut k);
    Key(k).clamped()
}

/// The public key of `private`.
pub fn public_of(private: &Key) -> Key {
    Key(x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(private.0)).to_bytes())
}

/// A private key in base64, as `wg genkey` prints it (surrounding blanks ignored).
pub fn parse_private(text: &str) -> Result<Key, String> {
    Key::from_base64(text.trim()).map(Key::clamped).map_err(|e| format!("bad private key: {e}"))
}

/// `gateway pubkey`: the public key of the private key in `input`.
pub fn pubkey(input: &str) -> Result<String, String> {
    Ok(public_of(&parse_private(input)?).to_base64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubkey_is_x25519_of_the_private_key() {
        // RFC 7748, section 6.1: Alice's private and public keys.
        let private =
            Key::from_hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap();
        let public =
            Key::from_hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
                .unwrap();
        assert_eq!(pubkey(&format!("{}\n", private.to_base64())).unwrap(), public.to_base64());
        assert!(pubkey("not a key").unwrap_err().starts_with("bad private key"));
        assert_ne!(new_private_key(), new_private_key());
    }
}
