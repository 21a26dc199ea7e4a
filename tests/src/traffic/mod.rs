//! Traffic between namespaces: ping, iperf3, ncat echo, the test's own UDP sockets.

mod capture;
mod echo;
mod iperf;
mod ping;
mod udp;

pub use capture::{CapturedUdp, PacketCapture};
pub use echo::{EchoServer, echo_check};
pub use iperf::{IperfOptions, IperfReport, IperfServer, iperf3_client, iperf3_client_when_ready};
pub use ping::{PingOptions, PingReport, ping, ping_until_clean, ping_with, wait_for_ping};
pub use udp::{receive_all, send_all, udp_socket};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}
