//! One module per measurement: TCP throughput and CPU cost, the UDP rate search, ping, the
//! scale tests, the eBPF microbenchmark, the verifier's instruction counts, and the entry
//! point's connection rate and time to first byte.

pub mod connections;
pub mod micro;
pub mod ping;
pub mod scale;
pub mod tcp;
pub mod udp_rate;
pub mod verifier;
