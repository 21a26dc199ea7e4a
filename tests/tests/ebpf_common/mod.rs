//! Shared by the `ebpf_*` tests: the helpers in the library (`gateway_tests::ebpf`, which the
//! per-program benchmark uses too) and raw-frame capture.
#![allow(dead_code)]

pub mod capture;

pub use gateway_tests::ebpf::*;
