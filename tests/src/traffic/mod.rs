//! Traffic between namespaces: ping, iperf3, ncat echo, the test's own UDP sockets, and for
//! the public entry point: the `peer-report` server with clients that check which address it
//! saw them at, a ClientHello builder, curl, and a TLS server.

mod capture;
mod client_hello;
mod echo;
mod iperf;
mod peer_report;
mod ping;
mod udp;
mod web;

pub use capture::{CapturedUdp, PacketCapture};
pub use client_hello::{POST_QUANTUM_SIZE, client_hello};
pub use echo::{EchoServer, echo_check};
pub use iperf::{IperfOptions, IperfReport, IperfServer, iperf3_client, iperf3_client_when_ready};
pub use peer_report::{
    Exchange, PEER_REPORT_ENV, PeerReport, PeerReportServer, TcpClient, peer_report_binary,
    tcp_exchange, tcp_no_answer, udp_exchange,
};
pub use ping::{PingOptions, PingReport, ping, ping_until_clean, ping_with, wait_for_ping};
pub use udp::{receive_all, send_all, udp_socket};
pub use web::{CurlAnswer, TlsServer, curl_http, curl_https};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}
