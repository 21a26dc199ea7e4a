//! Invitations: what `gateway network invite` prints and `gateway network join` reads.
//!
//! The scheme is innernet's: an invitation carries a one-time WireGuard private key (the
//! *enrollment key*) that the controller has already added as a peer, allowed one address
//! (the *enrollment address*) and nothing else. The member brings its interface up with that
//! key, asks the controller over the tunnel to enroll it (the invitation's id and secret, the
//! name it wants, and the public key of a key pair it has just made), and on success switches
//! to its own key, which never leaves it. The controller keeps only a hash of the secret;
//! an invitation it does not know, one past its expiry, or a used single-use one is refused.
//!
//! The token is `gwn1.` followed by the invitation as JSON in unpadded base64url: one word,
//! safe to paste in a shell or a QR code. It is a secret until used: whoever holds it may
//! join.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use blake2::{Blake2s256, Digest};
use serde::{Deserialize, Serialize};

use super::name::Name;
use crate::uapi::Key;

const PREFIX: &str = "gwn1.";

/// An invitation as the member receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invitation {
    /// The network's name (its DNS domain).
    pub network: String,
    /// The controller that issued it: the peer the member starts with.
    pub controller: ControllerContact,
    /// The one-time key the member's interface starts with (base64).
    pub enrollment_key: String,
    /// The only address the controller accepts from the enrollment key.
    pub enrollment_address: IpAddr,
    /// Names the invitation in the controller's store.
    pub id: String,
    /// Proves the invitation (base64); the controller keeps its hash.
    pub secret: String,
    /// Unix seconds after which the controller refuses it.
    pub expires_at: u64,
}

/// How a member reaches a controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerContact {
    pub name: String,
    /// Its WireGuard public key (base64).
    pub public_key: String,
    /// Where its WireGuard port is, as given to `invite` (`host:port`; a name is resolved by
    /// the member).
    pub endpoint: String,
    /// Its address inside the tunnel and the port of its API there.
    pub api: SocketAddr,
}

/// Why a token cannot be read: one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteError(pub String);

impl std::fmt::Display for InviteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a network invitation: {}", self.0)
    }
}

impl std::error::Error for InviteError {}

impl Invitation {
    pub fn to_token(&self) -> String {
        let json = serde_json::to_vec(self).expect("an invitation serializes");
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    /// Reads a token, checking every field's form (keys, names): what it says is checked by
    /// the controller.
    pub fn from_token(token: &str) -> Result<Invitation, InviteError> {
        let token = token.trim();
        let body = token.strip_prefix(PREFIX).ok_or_else(|| {
            InviteError(format!("it does not begin with `{PREFIX}' (was it copied whole?)"))
        })?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| InviteError(format!("damaged (base64: {e}); was it copied whole?")))?;
        let invitation: Invitation =
            serde_json::from_slice(&json).map_err(|e| InviteError(format!("damaged ({e})")))?;
        Name::parse(&invitation.network).map_err(|e| InviteError(e.to_string()))?;
        Name::parse(&invitation.controller.name).map_err(|e| InviteError(e.to_string()))?;
        for (what, text) in [
            ("controller key", &invitation.controller.public_key),
            ("enrollment key", &invitation.enrollment_key),
            ("secret", &invitation.secret),
        ] {
            Key::from_base64(text).map_err(|e| InviteError(format!("its {what}: {e}")))?;
        }
        Ok(invitation)
    }

    /// The hash of the secret the controller compares with its own.
    pub fn secret_hash(&self) -> Option<[u8; 32]> {
        Key::from_base64(&self.secret).ok().map(|secret| secret_hash(&secret.0))
    }
}

/// BLAKE2s-256 of an invitation's secret, with a domain separator.
pub fn secret_hash(secret: &[u8; 32]) -> [u8; 32] {
    let mut hash = Blake2s256::new();
    hash.update(b"gateway network v1 invitation secret\0");
    hash.update(secret);
    hash.finalize().into()
}

/// `--expires`: a number and a unit, `s`, `m`, `h` or `d` (e.g. `30m`, `1h`, `7d`).
pub fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let bad = || format!("--expires `{text}' is not a lifetime such as 30m, 1h or 7d");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let seconds = number.checked_mul(unit).filter(|&s| s > 0).ok_or_else(bad)?;
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invitation() -> Invitation {
        Invitation {
            network: "home".to_string(),
            controller: ControllerContact {
                name: "vps".to_string(),
                public_key: Key([1; 32]).to_base64(),
                endpoint: "vps.example.net:51820".to_string(),
                api: "[fd12:3456:78bd:4400::1]:7946".parse().unwrap(),
            },
            enrollment_key: Key([2; 32]).to_base64(),
            enrollment_address: "fd12:3456:78bd:4400:ffff::7".parse().unwrap(),
            id: "k3v9".to_string(),
            secret: Key([3; 32]).to_base64(),
            expires_at: 1_800_000_000,
        }
    }

    #[test]
    fn a_token_is_one_word_that_reads_back() {
        let token = invitation().to_token();
        assert!(token.starts_with("gwn1."));
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)), "{token}");
        assert_eq!(Invitation::from_token(&format!("  {token}\n")).unwrap(), invitation());
        assert_eq!(invitation().secret_hash(), Some(secret_hash(&[3; 32])));
    }

    #[test]
    fn damaged_tokens_are_refused_with_one_line() {
        let token = invitation().to_token();
        let refused = |text: &str| Invitation::from_token(text).unwrap_err().to_string();
        assert_eq!(
            refused(&token[1..]),
            "not a network invitation: it does not begin with `gwn1.' (was it copied whole?)"
        );
        assert!(
            refused(&token[..token.len() - 5]).starts_with("not a network invitation: damaged")
        );
        let mut bad_key = invitation();
        bad_key.enrollment_key = "AAAA".to_string();
        assert!(refused(&bad_key.to_token()).contains("its enrollment key"));
        let mut bad_name = invitation();
        bad_name.network = "my home".to_string();
        assert!(refused(&bad_name.to_token()).contains("`my home' is not a name"));
    }

    #[test]
    fn lifetimes_read_like_durations() {
        assert_eq!(parse_lifetime("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_lifetime("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_lifetime("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "h", "10", "0h", "1w", "-1h", "99999999999999999999d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?}");
        }
    }
}
