//! Per-CPU working memory for one packet. The BPF stack is 512 bytes for all frames
//! together, so everything larger than a few words lives here (`maps::SCRATCH`).

use gateway_common::{
    aead::Poly1305,
    maps::{FlowKey, FlowNat, MasqFlow, ReplyTo},
};

/// The AEAD loop's state (see `crypto`).
#[repr(C)]
pub struct Crypt {
    pub key: [u32; 8],
    pub nonce: [u32; 3],
    /// Packet offset of the first byte of plaintext/ciphertext.
    pub off: u32,
    /// Bytes to process.
    pub len: u32,
    /// Sealing: bytes of real plaintext; `[data_len, len)` is sealed as zeros (padding).
    pub data_len: u32,
    /// Set by the loop when a helper failed.
    pub err: u32,
    /// `SUM_*` bits: which running checksums to keep.
    pub sums: u32,
    pub poly: Poly1305,
    pub buf: [u32; 16],
    pub tag: [u32; 4],
    /// Ones' complement running sums (see `csum`) of the plaintext and of the ciphertext.
    pub sum_plain: u64,
    pub sum_cipher: u64,
    /// The first 64 bytes of plaintext: captured while opening (the inner headers, without a
    /// second load), loaded before sealing.
    pub head: [u32; 16],
}

/// Keep `Crypt::sum_plain`.
pub const SUM_PLAIN: u32 = 1;
/// Keep `Crypt::sum_cipher`.
pub const SUM_CIPHER: u32 = 2;

/// The kernel's `struct bpf_fib_lookup` (64 bytes; aya's binding predates the `mark` field
/// that shares its place with the MAC addresses).
#[repr(C)]
pub struct FibParams {
    pub family: u8,
    pub l4_protocol: u8,
    pub sport: u16,
    pub dport: u16,
    /// In: the packet's L3 length for the MTU check (0: none). Out: the MTU when too big.
    pub tot_len: u16,
    pub ifindex: u32,
    /// IPv4: TOS in the first byte; IPv6: flow info.
    pub tos: u32,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub tbid: u32,
    /// In: the mark in word 0. Out: source MAC (bytes 0..6) and destination MAC (6..12).
    pub macs: [u32; 3],
}

/// Headers as loaded from the packet or being built for it. Byte 2 of the buffer is the
/// first byte of the Ethernet header, so that the IP header starts word-aligned at byte 16.
pub const HDR_ETH: usize = 2;
pub const HDR_IP: usize = 16;
pub const HDR_WORDS: usize = 24;

#[repr(C)]
pub struct Scratch {
    pub crypt: Crypt,
    /// The frame's headers as received (Ethernet at `HDR_ETH`, IP at `HDR_IP`).
    pub rx: [u32; HDR_WORDS],
    /// The outer UDP header and the WireGuard message header of the received frame.
    pub l4: [u32; 6],
    /// Headers of the frame being sent, laid out like `rx`.
    pub tx: [u32; HDR_WORDS],
    pub fib: FibParams,
    /// Bulk copies and checksums of packet bytes (see `partial`); the first bytes of an ICMP
    /// error being translated (see `translate`).
    pub bulk: [u32; BULK_BYTES / 4],
    /// Keys and values of the flow maps (`flow`): map helpers take them by pointer, and the
    /// BPF stack has no room to spare.
    pub flow: Flow,
    /// The `Stat` a packet is to be counted as once it is on its way, when more than one
    /// path leads to the same code: kept here rather than in a register, the verifier walks
    /// that code once for all of them instead of once per value (`tx::from_lan`).
    pub outcome: u32,
}

/// A flow map's key and the values written to them, word-aligned so `flow` can fill them a
/// word at a time.
#[repr(C, align(8))]
pub struct Flow {
    pub key: FlowKey,
    pub nat: FlowNat,
    pub reply_to: ReplyTo,
    /// Masquerade (`masquerade`): a mapping's other key, and the key of the inside flow that
    /// holds a probed port.
    pub masq_keys: [FlowKey; 2],
    pub masq: MasqFlow,
}

pub const BULK_BYTES: usize = 512;
