//! One module per measurement: TCP throughput and CPU cost, the UDP rate search, ping, the
//! scale tests, and the eBPF microbenchmark.

pub mod micro;
pub mod ping;
pub mod scale;
pub mod tcp;
pub mod udp_rate;
