//! The four WireGuard messages (whitepaper §5.4, kernel `messages.h`): classification with the
//! kernel's exact rules, borrowed views with field accessors, and builders.
//!
//! Layouts (little-endian integers):
//! - initiation, 148 bytes: type, sender, ephemeral[32], static[32+16], timestamp[12+16],
//!   mac1[16], mac2[16]
//! - response, 92 bytes: type, sender, receiver, ephemeral[32], empty[0+16], mac1[16], mac2[16]
//! - cookie reply, 64 bytes: type, receiver, nonce[24], cookie[16+16]
//! - data, at least 32 bytes: type, receiver, counter(u64), payload and tag

use gateway_common::wire::{
    DATA_COUNTER_OFFSET, DATA_HEADER_LEN, DATA_MIN_LEN, DATA_RECEIVER_OFFSET, HANDSHAKE_COOKIE_LEN,
    HANDSHAKE_INITIATION_LEN, HANDSHAKE_RESPONSE_LEN, MESSAGE_DATA, MESSAGE_HANDSHAKE_COOKIE,
    MESSAGE_HANDSHAKE_INITIATION, MESSAGE_HANDSHAKE_RESPONSE,
};

use super::crypto::{KEY_LEN, MAC_LEN, TAG_LEN, XNONCE_LEN};
use super::tai64n::TAI64N_LEN;

pub const ENCRYPTED_STATIC_LEN: usize = KEY_LEN + TAG_LEN;
pub const ENCRYPTED_TIMESTAMP_LEN: usize = TAI64N_LEN + TAG_LEN;
pub const ENCRYPTED_NOTHING_LEN: usize = TAG_LEN;
pub const COOKIE_LEN: usize = MAC_LEN;
pub const ENCRYPTED_COOKIE_LEN: usize = COOKIE_LEN + TAG_LEN;
/// mac1 and mac2, the last 32 bytes of every handshake message.
pub const MACS_LEN: usize = 2 * MAC_LEN;

const TYPE_LEN: usize = 4;
const INDEX_LEN: usize = 4;

const INITIATION_SENDER: usize = TYPE_LEN;
const INITIATION_EPHEMERAL: usize = INITIATION_SENDER + INDEX_LEN;
const INITIATION_STATIC: usize = INITIATION_EPHEMERAL + KEY_LEN;
const INITIATION_TIMESTAMP: usize = INITIATION_STATIC + ENCRYPTED_STATIC_LEN;
const INITIATION_MACS: usize = INITIATION_TIMESTAMP + ENCRYPTED_TIMESTAMP_LEN;

const RESPONSE_SENDER: usize = TYPE_LEN;
const RESPONSE_RECEIVER: usize = RESPONSE_SENDER + INDEX_LEN;
const RESPONSE_EPHEMERAL: usize = RESPONSE_RECEIVER + INDEX_LEN;
const RESPONSE_EMPTY: usize = RESPONSE_EPHEMERAL + KEY_LEN;
const RESPONSE_MACS: usize = RESPONSE_EMPTY + ENCRYPTED_NOTHING_LEN;

const COOKIE_RECEIVER: usize = TYPE_LEN;
const COOKIE_NONCE: usize = COOKIE_RECEIVER + INDEX_LEN;
const COOKIE_ENCRYPTED: usize = COOKIE_NONCE + XNONCE_LEN;

const _: () = assert!(INITIATION_MACS + MACS_LEN == HANDSHAKE_INITIATION_LEN);
const _: () = assert!(RESPONSE_MACS + MACS_LEN == HANDSHAKE_RESPONSE_LEN);
const _: () = assert!(COOKIE_ENCRYPTED + ENCRYPTED_COOKIE_LEN == HANDSHAKE_COOKIE_LEN);

/// Why a datagram is not a WireGuard message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than the 4-byte type field.
    TooShort { len: usize },
    /// The little-endian u32 at offset 0 is none of the four types (this includes a known type
    /// byte followed by nonzero reserved bytes).
    UnknownType { message_type: u32 },
    /// A handshake message whose length is not exactly its type's.
    WrongLength { message_type: u32, expected: usize, actual: usize },
    /// A data message shorter than header plus tag.
    DataTooShort { len: usize },
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::TooShort { len } => {
                write!(f, "datagram of {len} bytes is too short for a message type")
            }
            ParseError::UnknownType { message_type } => {
                write!(f, "unknown message type {message_type:#010x}")
            }
            ParseError::WrongLength { message_type, expected, actual } => {
                write!(f, "message type {message_type} must be {expected} bytes long, got {actual}")
            }
            ParseError::DataTooShort { len } => write!(
                f,
                "data message of {len} bytes is shorter than the {DATA_MIN_LEN}-byte minimum"
            ),
        }
    }
}

impl std::error::Error for ParseError {}

/// A classified datagram, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    Initiation(Initiation<'a>),
    Response(Response<'a>),
    CookieReply(CookieReply<'a>),
    Data(Data<'a>),
}

/// Classifies a datagram as the kernel's `prepare_skb_header` does.
pub fn parse(datagram: &[u8]) -> Result<Packet<'_>, ParseError> {
    let Some(type_bytes) = datagram.first_chunk::<TYPE_LEN>() else {
        return Err(ParseError::TooShort { len: datagram.len() });
    };
    let message_type = u32::from_le_bytes(*type_bytes);
    match message_type {
        MESSAGE_HANDSHAKE_INITIATION => {
            Ok(Packet::Initiation(Initiation(exact_length(datagram, message_type)?)))
        }
        MESSAGE_HANDSHAKE_RESPONSE => {
            Ok(Packet::Response(Response(exact_length(datagram, message_type)?)))
        }
        MESSAGE_HANDSHAKE_COOKIE => {
            Ok(Packet::CookieReply(CookieReply(exact_length(datagram, message_type)?)))
        }
        MESSAGE_DATA if datagram.len() >= DATA_MIN_LEN => Ok(Packet::Data(Data(datagram))),
        MESSAGE_DATA => Err(ParseError::DataTooShort { len: datagram.len() }),
        _ => Err(ParseError::UnknownType { message_type }),
    }
}

fn exact_length<const N: usize>(
    datagram: &[u8],
    message_type: u32,
) -> Result<&[u8; N], ParseError> {
    datagram.try_into().map_err(|_| ParseError::WrongLength {
        message_type,
        expected: N,
        actual: datagram.len(),
    })
}

fn field<const N: usize>(bytes: &[u8], offset: usize) -> &[u8; N] {
    bytes[offset..offset + N].try_into().expect("offsets are checked against the fixed layout")
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(*field(bytes, offset))
}

/// A handshake message protected by mac1 and mac2 (initiation or response). Only the fixed-size
/// message types implement it, so the MAC offsets are always in bounds.
pub trait MacProtected: sealed::Sealed {
    /// The whole message.
    fn message_bytes(&self) -> &[u8];

    /// The sender index, at offset 4 in both handshake messages: where a cookie reply goes.
    fn sender_index(&self) -> u32 {
        read_u32(self.message_bytes(), TYPE_LEN)
    }

    /// The bytes mac1 covers: everything before it.
    fn covered_by_mac1(&self) -> &[u8] {
        let bytes = self.message_bytes();
        &bytes[..bytes.len() - MACS_LEN]
    }

    /// The bytes mac2 covers: everything before it, mac1 included.
    fn covered_by_mac2(&self) -> &[u8] {
        let bytes = self.message_bytes();
        &bytes[..bytes.len() - MAC_LEN]
    }

    fn mac1(&self) -> &[u8; MAC_LEN] {
        let bytes = self.message_bytes();
        field(bytes, bytes.len() - MACS_LEN)
    }

    fn mac2(&self) -> &[u8; MAC_LEN] {
        let bytes = self.message_bytes();
        field(bytes, bytes.len() - MAC_LEN)
    }
}

/// An outgoing handshake message whose MACs can be written.
pub trait MacProtectedMut: MacProtected {
    fn message_bytes_mut(&mut self) -> &mut [u8];

    fn set_mac1(&mut self, mac: &[u8; MAC_LEN]) {
        let bytes = self.message_bytes_mut();
        let start = bytes.len() - MACS_LEN;
        bytes[start..start + MAC_LEN].copy_from_slice(mac);
    }

    fn set_mac2(&mut self, mac: &[u8; MAC_LEN]) {
        let bytes = self.message_bytes_mut();
        let start = bytes.len() - MAC_LEN;
        bytes[start..].copy_from_slice(mac);
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Initiation<'_> {}
    impl Sealed for super::Response<'_> {}
    impl Sealed for [u8; super::HANDSHAKE_INITIATION_LEN] {}
    impl Sealed for [u8; super::HANDSHAKE_RESPONSE_LEN] {}
}

impl MacProtected for [u8; HANDSHAKE_INITIATION_LEN] {
    fn message_bytes(&self) -> &[u8] {
        self
    }
}

impl MacProtectedMut for [u8; HANDSHAKE_INITIATION_LEN] {
    fn message_bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl MacProtected for [u8; HANDSHAKE_RESPONSE_LEN] {
    fn message_bytes(&self) -> &[u8] {
        self
    }
}

impl MacProtectedMut for [u8; HANDSHAKE_RESPONSE_LEN] {
    fn message_bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

/// A handshake initiation (type 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Initiation<'a>(&'a [u8; HANDSHAKE_INITIATION_LEN]);

impl<'a> Initiation<'a> {
    pub fn as_bytes(&self) -> &'a [u8; HANDSHAKE_INITIATION_LEN] {
        self.0
    }

    pub fn sender_index(&self) -> u32 {
        read_u32(self.0, INITIATION_SENDER)
    }

    pub fn unencrypted_ephemeral(&self) -> &'a [u8; KEY_LEN] {
        field(self.0, INITIATION_EPHEMERAL)
    }

    pub fn encrypted_static(&self) -> &'a [u8; ENCRYPTED_STATIC_LEN] {
        field(self.0, INITIATION_STATIC)
    }

    pub fn encrypted_timestamp(&self) -> &'a [u8; ENCRYPTED_TIMESTAMP_LEN] {
        field(self.0, INITIATION_TIMESTAMP)
    }
}

impl MacProtected for Initiation<'_> {
    fn message_bytes(&self) -> &[u8] {
        self.0
    }
}

/// A handshake response (type 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a>(&'a [u8; HANDSHAKE_RESPONSE_LEN]);

impl<'a> Response<'a> {
    pub fn as_bytes(&self) -> &'a [u8; HANDSHAKE_RESPONSE_LEN] {
        self.0
    }

    pub fn sender_index(&self) -> u32 {
        read_u32(self.0, RESPONSE_SENDER)
    }

    pub fn receiver_index(&self) -> u32 {
        read_u32(self.0, RESPONSE_RECEIVER)
    }

    pub fn unencrypted_ephemeral(&self) -> &'a [u8; KEY_LEN] {
        field(self.0, RESPONSE_EPHEMERAL)
    }

    pub fn encrypted_nothing(&self) -> &'a [u8; ENCRYPTED_NOTHING_LEN] {
        field(self.0, RESPONSE_EMPTY)
    }
}

impl MacProtected for Response<'_> {
    fn message_bytes(&self) -> &[u8] {
        self.0
    }
}

/// A cookie reply (type 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieReply<'a>(&'a [u8; HANDSHAKE_COOKIE_LEN]);

impl<'a> CookieReply<'a> {
    pub fn as_bytes(&self) -> &'a [u8; HANDSHAKE_COOKIE_LEN] {
        self.0
    }

    pub fn receiver_index(&self) -> u32 {
        read_u32(self.0, COOKIE_RECEIVER)
    }

    pub fn nonce(&self) -> &'a [u8; XNONCE_LEN] {
        field(self.0, COOKIE_NONCE)
    }

    pub fn encrypted_cookie(&self) -> &'a [u8; ENCRYPTED_COOKIE_LEN] {
        field(self.0, COOKIE_ENCRYPTED)
    }
}

/// A transport data message (type 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a>(&'a [u8]);

impl<'a> Data<'a> {
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    pub fn receiver_index(&self) -> u32 {
        read_u32(self.0, DATA_RECEIVER_OFFSET)
    }

    pub fn counter(&self) -> u64 {
        u64::from_le_bytes(*field(self.0, DATA_COUNTER_OFFSET))
    }

    /// The encrypted, padded payload followed by its 16-byte tag.
    pub fn encrypted_payload(&self) -> &'a [u8] {
        &self.0[DATA_HEADER_LEN..]
    }
}

/// An initiation with zeroed MACs (the cookie maker fills them in).
pub fn build_initiation(
    sender_index: u32,
    unencrypted_ephemeral: &[u8; KEY_LEN],
    encrypted_static: &[u8; ENCRYPTED_STATIC_LEN],
    encrypted_timestamp: &[u8; ENCRYPTED_TIMESTAMP_LEN],
) -> [u8; HANDSHAKE_INITIATION_LEN] {
    let mut message = [0u8; HANDSHAKE_INITIATION_LEN];
    message[..TYPE_LEN].copy_from_slice(&MESSAGE_HANDSHAKE_INITIATION.to_le_bytes());
    message[INITIATION_SENDER..INITIATION_EPHEMERAL].copy_from_slice(&sender_index.to_le_bytes());
    message[INITIATION_EPHEMERAL..INITIATION_STATIC].copy_from_slice(unencrypted_ephemeral);
    message[INITIATION_STATIC..INITIATION_TIMESTAMP].copy_from_slice(encrypted_static);
    message[INITIATION_TIMESTAMP..INITIATION_MACS].copy_from_slice(encrypted_timestamp);
    message
}

/// A response with zeroed MACs (the cookie maker fills them in).
pub fn build_response(
    sender_index: u32,
    receiver_index: u32,
    unencrypted_ephemeral: &[u8; KEY_LEN],
    encrypted_nothing: &[u8; ENCRYPTED_NOTHING_LEN],
) -> [u8; HANDSHAKE_RESPONSE_LEN] {
    let mut message = [0u8; HANDSHAKE_RESPONSE_LEN];
    message[..TYPE_LEN].copy_from_slice(&MESSAGE_HANDSHAKE_RESPONSE.to_le_bytes());
    message[RESPONSE_SENDER..RESPONSE_RECEIVER].copy_from_slice(&sender_index.to_le_bytes());
    message[RESPONSE_RECEIVER..RESPONSE_EPHEMERAL].copy_from_slice(&receiver_index.to_le_bytes());
    message[RESPONSE_EPHEMERAL..RESPONSE_EMPTY].copy_from_slice(unencrypted_ephemeral);
    message[RESPONSE_EMPTY..RESPONSE_MACS].copy_from_slice(encrypted_nothing);
    message
}

pub fn build_cookie_reply(
    receiver_index: u32,
    nonce: &[u8; XNONCE_LEN],
    encrypted_cookie: &[u8; ENCRYPTED_COOKIE_LEN],
) -> [u8; HANDSHAKE_COOKIE_LEN] {
    let mut message = [0u8; HANDSHAKE_COOKIE_LEN];
    message[..TYPE_LEN].copy_from_slice(&MESSAGE_HANDSHAKE_COOKIE.to_le_bytes());
    message[COOKIE_RECEIVER..COOKIE_NONCE].copy_from_slice(&receiver_index.to_le_bytes());
    message[COOKIE_NONCE..COOKIE_ENCRYPTED].copy_from_slice(nonce);
    message[COOKIE_ENCRYPTED..].copy_from_slice(encrypted_cookie);
    message
}

/// The 16-byte header of a data message; the encrypted payload and tag follow it.
pub fn build_data_header(receiver_index: u32, counter: u64) -> [u8; DATA_HEADER_LEN] {
    let mut header = [0u8; DATA_HEADER_LEN];
    header[..TYPE_LEN].copy_from_slice(&MESSAGE_DATA.to_le_bytes());
    header[DATA_RECEIVER_OFFSET..DATA_COUNTER_OFFSET]
        .copy_from_slice(&receiver_index.to_le_bytes());
    header[DATA_COUNTER_OFFSET..].copy_from_slice(&counter.to_le_bytes());
    header
}

/// A whole data message: header, then `encrypted_payload` (ciphertext and tag).
pub fn build_data(receiver_index: u32, counter: u64, encrypted_payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(DATA_HEADER_LEN + encrypted_payload.len());
    message.extend_from_slice(&build_data_header(receiver_index, counter));
    message.extend_from_slice(encrypted_payload);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_initiation() -> [u8; HANDSHAKE_INITIATION_LEN] {
        let mut message = build_initiation(0x0403_0201, &[0xe1; 32], &[0x5a; 48], &[0x7b; 28]);
        message.set_mac1(&[0x11; 16]);
        message.set_mac2(&[0x22; 16]);
        message
    }

    #[test]
    fn initiation_round_trips() {
        let message = sample_initiation();
        assert_eq!(&message[..8], &[1, 0, 0, 0, 1, 2, 3, 4]);
        let Ok(Packet::Initiation(view)) = parse(&message) else { panic!("not an initiation") };
        assert_eq!(view.sender_index(), 0x0403_0201);
        assert_eq!(MacProtected::sender_index(&view), 0x0403_0201);
        assert_eq!(view.unencrypted_ephemeral(), &[0xe1; 32]);
        assert_eq!(view.encrypted_static(), &[0x5a; 48]);
        assert_eq!(view.encrypted_timestamp(), &[0x7b; 28]);
        assert_eq!(view.mac1(), &[0x11; 16]);
        assert_eq!(view.mac2(), &[0x22; 16]);
        assert_eq!(view.covered_by_mac1().len(), 116);
        assert_eq!(view.covered_by_mac2().len(), 132);
        assert_eq!(view.as_bytes(), &message);
    }

    #[test]
    fn response_round_trips() {
        let mut message = build_response(7, 9, &[0xe2; 32], &[0x3c; 16]);
        message.set_mac1(&[0x33; 16]);
        let Ok(Packet::Response(view)) = parse(&message) else { panic!("not a response") };
        assert_eq!(view.sender_index(), 7);
        assert_eq!(view.receiver_index(), 9);
        assert_eq!(view.unencrypted_ephemeral(), &[0xe2; 32]);
        assert_eq!(view.encrypted_nothing(), &[0x3c; 16]);
        assert_eq!(view.mac1(), &[0x33; 16]);
        assert_eq!(view.mac2(), &[0; 16]);
        assert_eq!(view.covered_by_mac1(), &message[..60]);
    }

    #[test]
    fn cookie_reply_round_trips() {
        let message = build_cookie_reply(0xdead_beef, &[0x4e; 24], &[0xc0; 32]);
        let Ok(Packet::CookieReply(view)) = parse(&message) else { panic!("not a cookie") };
        assert_eq!(view.receiver_index(), 0xdead_beef);
        assert_eq!(view.nonce(), &[0x4e; 24]);
        assert_eq!(view.encrypted_cookie(), &[0xc0; 32]);
    }

    #[test]
    fn data_round_trips_keepalive_and_payload() {
        let keepalive = build_data(5, 0x0102_0304_0506_0708, &[0xaa; 16]);
        assert_eq!(keepalive.len(), DATA_MIN_LEN);
        let Ok(Packet::Data(view)) = parse(&keepalive) else { panic!("not data") };
        assert_eq!(view.receiver_index(), 5);
        assert_eq!(view.counter(), 0x0102_0304_0506_0708);
        assert_eq!(view.encrypted_payload(), &[0xaa; 16]);
        let longer = build_data(6, 1, &[0xbb; 100]);
        let Ok(Packet::Data(view)) = parse(&longer) else { panic!("not data") };
        assert_eq!(view.encrypted_payload().len(), 100);
    }

    #[test]
    fn rejects_what_the_kernel_rejects() {
        assert_eq!(parse(&[]), Err(ParseError::TooShort { len: 0 }));
        assert_eq!(parse(&[1, 0, 0]), Err(ParseError::TooShort { len: 3 }));
        let initiation = sample_initiation();
        assert_eq!(
            parse(&initiation[..147]),
            Err(ParseError::WrongLength { message_type: 1, expected: 148, actual: 147 })
        );
        let mut longer = initiation.to_vec();
        longer.push(0);
        assert!(matches!(parse(&longer), Err(ParseError::WrongLength { actual: 149, .. })));
        assert!(matches!(
            parse(&[2u8, 0, 0, 0].repeat(24)[..93]),
            Err(ParseError::WrongLength { message_type: 2, expected: 92, .. })
        ));
        assert!(matches!(
            parse(&[3u8, 0, 0, 0].repeat(16)[..63]),
            Err(ParseError::WrongLength { message_type: 3, expected: 64, .. })
        ));
        assert_eq!(parse(&build_data(1, 1, &[0; 15])), Err(ParseError::DataTooShort { len: 31 }));
        assert_eq!(parse(&[0u8; 148]), Err(ParseError::UnknownType { message_type: 0 }));
        assert_eq!(parse(&[5u8; 148]), Err(ParseError::UnknownType { message_type: 0x0505_0505 }));
    }

    #[test]
    fn nonzero_reserved_bytes_make_the_type_unknown() {
        for reserved in 1..4 {
            let mut message = sample_initiation();
            message[reserved] = 1;
            assert!(
                matches!(parse(&message), Err(ParseError::UnknownType { .. })),
                "reserved byte {reserved}"
            );
            let mut data = build_data(1, 1, &[0; 16]);
            data[reserved] = 0x80;
            assert!(matches!(parse(&data), Err(ParseError::UnknownType { .. })));
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let text = parse(&[1, 0, 0, 0, 9]).unwrap_err().to_string();
        assert!(text.contains("148") && text.contains("5"), "{text}");
        assert!(parse(&[9, 0, 0, 0]).unwrap_err().to_string().contains("unknown message type"));
    }
}
