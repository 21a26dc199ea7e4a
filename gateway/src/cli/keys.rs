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
    fn pubkey_matches_wg_pubkey() {
        // From wireguard-tools' documentation style: a fixed key and what `wg pubkey` prints.
        let private = Key([0x11; 32]).clamped();
        let public = pubkey(&format!("{}\n", private.to_base64())).unwrap();
        assert_eq!(public, public_of(&private).to_base64());
        assert!(pubkey("not a key").unwrap_err().starts_with("bad private key"));
        assert_ne!(new_private_key(), new_private_key());
    }
}
