//! The contract between the control plane (userspace) and the data plane (eBPF).
//!
//! Everything here is `no_std` and `repr(C)`: the eBPF programs and the daemon read and write
//! the same bytes. `maps` holds map value layouts, `wire` the WireGuard message layouts and
//! protocol limits, `replay` the anti-replay window both sides update concurrently, `aead`
//! the word-oriented ChaCha20-Poly1305 the programs run, and `ecn` how both mark ECN.
#![no_std]
// BPF only: the atomic read-modify-write intrinsics behind `atomic::SharedU64`.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

pub mod aead;
pub mod atomic;
pub mod ecn;
pub mod maps;
pub mod replay;
pub mod wire;
