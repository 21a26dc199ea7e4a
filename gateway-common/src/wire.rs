//! WireGuard message layouts and protocol limits (whitepaper §5.4, kernel `messages.h`).
//!
//! Multi-byte fields on the wire are little-endian. A receiver index read from a packet with
//! a native `u32` load on a little-endian machine (x86, bpfel) equals the value userspace gets
//! from `u32::from_le_bytes`, so maps keyed by receiver index use that value directly.

pub const MESSAGE_HANDSHAKE_INITIATION: u32 = 1;
pub const MESSAGE_HANDSHAKE_RESPONSE: u32 = 2;
pub const MESSAGE_HANDSHAKE_COOKIE: u32 = 3;
pub const MESSAGE_DATA: u32 = 4;

pub const HANDSHAKE_INITIATION_LEN: usize = 148;
pub const HANDSHAKE_RESPONSE_LEN: usize = 92;
pub const HANDSHAKE_COOKIE_LEN: usize = 64;

/// type(4) receiver(4) counter(8)
pub const DATA_HEADER_LEN: usize = 16;
pub const DATA_RECEIVER_OFFSET: usize = 4;
pub const DATA_COUNTER_OFFSET: usize = 8;
pub const AEAD_TAG_LEN: usize = 16;
/// A keepalive: header and tag around an empty plaintext.
pub const DATA_MIN_LEN: usize = DATA_HEADER_LEN + AEAD_TAG_LEN;
/// Plaintext is zero-padded to a multiple of this, capped at the tunnel MTU.
pub const MESSAGE_PADDING_MULTIPLE: usize = 16;

pub const IPV4_HEADER_LEN: usize = 20;
pub const IPV6_HEADER_LEN: usize = 40;
pub const UDP_HEADER_LEN: usize = 8;
pub const ETH_HEADER_LEN: usize = 14;

/// Bytes a transport-data packet adds around its (padded) plaintext, outer IPv4 or IPv6
/// included: what the tunnel MTU must leave room for.
pub const DATA_OVERHEAD_V4: usize = IPV4_HEADER_LEN + UDP_HEADER_LEN + DATA_MIN_LEN;
pub const DATA_OVERHEAD_V6: usize = IPV6_HEADER_LEN + UDP_HEADER_LEN + DATA_MIN_LEN;

/// Replay window geometry (kernel `counter_values`): 8192 bits of history, of which one
/// word's worth is redundant, so counters up to `REPLAY_WINDOW` below the highest accepted
/// one are still accepted once.
pub const REPLAY_BITS_TOTAL: u64 = 8192;
pub const REPLAY_REDUNDANT_BITS: u64 = 64;
pub const REPLAY_WINDOW: u64 = REPLAY_BITS_TOTAL - REPLAY_REDUNDANT_BITS;

/// Protocol limits (kernel `enum limits`). Times in seconds.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - REPLAY_WINDOW - 1;
pub const REKEY_TIMEOUT_SECS: u64 = 5;
/// Upper bound of the random jitter added to handshake retransmissions (kernel: HZ / 3).
pub const REKEY_TIMEOUT_JITTER_MAX_MS: u64 = 333;
pub const REKEY_AFTER_TIME_SECS: u64 = 120;
pub const REJECT_AFTER_TIME_SECS: u64 = 180;
pub const INITIATIONS_PER_SECOND: u64 = 50;
pub const MAX_PEERS_PER_DEVICE: usize = 1 << 20;
pub const KEEPALIVE_TIMEOUT_SECS: u64 = 10;
pub const MAX_TIMER_HANDSHAKES: u32 = (90 / REKEY_TIMEOUT_SECS) as u32;
pub const MAX_QUEUED_INCOMING_HANDSHAKES: usize = 4096;
pub const MAX_STAGED_PACKETS: usize = 128;
pub const MAX_QUEUED_PACKETS: usize = 1024;

pub const NSEC_PER_SEC: u64 = 1_000_000_000;
pub const REJECT_AFTER_TIME_NS: u64 = REJECT_AFTER_TIME_SECS * NSEC_PER_SEC;
