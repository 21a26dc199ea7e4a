//! Traffic between namespaces: ping, iperf3, ncat echo.

mod echo;
mod iperf;
mod ping;

pub use echo::{EchoServer, echo_check};
pub use iperf::{IperfOptions, IperfReport, IperfServer, iperf3_client};
pub use ping::{PingOptions, PingReport, ping, ping_with, wait_for_ping};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}
