//! One module per measurement: TCP throughput and CPU cost, the UDP rate search, ping, the
//! scale tests, the eBPF microbenchmark, and the verifier's instruction counts.

pub mod micro;
pub mod ping;
pub mod scale;
pub mod tcp;
pub mod udp_rate;
pub mod verifier;
