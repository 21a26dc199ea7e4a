//! Choosing a tls or http connection's backend from its first bytes.
//!
//! The bytes are read into a buffer bounded by what the parser may need
//! ([`MAX_CLIENT_HELLO`], [`MAX_HEADER_BLOCK`]) and handed to [`read_client_hello`] or
//! [`read_host`] after every read, until they give an answer: the whole ClientHello however
//! many segments and records it came in, or the whole header block. The caller bounds the
//! wait. What was read is kept, to be written to the backend first.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::entry::forward::{Forward, Protocol, Selector, Transport};
use crate::entry::http::{HostScan, MAX_HEADER_BLOCK, read_host};
use crate::entry::name::HostName;
use crate::entry::table::ForwardTable;
use crate::entry::tls::{ClientHelloScan, MAX_CLIENT_HELLO, read_client_hello};

/// Why a connection's first bytes choose no backend.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unreadable {
    /// The client closed before its first bytes were all in.
    Closed,
    NotTls,
    NotHttp,
    Malformed(&'static str),
    Failed(std::io::ErrorKind),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Closed => f.write_str("the client closed before sending its first bytes"),
            Unreadable::NotTls => f.write_str("not TLS"),
            Unreadable::NotHttp => f.write_str("not HTTP/1.x"),
            Unreadable::Malformed(why) => f.write_str(why),
            Unreadable::Failed(kind) => write!(f, "reading failed: {kind}"),
        }
    }
}

/// The first bytes of a connection and the name they carry (None: no usable name).
#[derive(Debug)]
pub(super) struct FirstBytes {
    pub(super) bytes: Vec<u8>,
    pub(super) name: Option<HostName>,
}

/// Reads `client`'s ClientHello (`Protocol::Tls`) or request header block (`Protocol::Http`).
pub(super) async fn read_first_bytes(
    client: &mut (impl AsyncRead + Unpin),
    protocol: Protocol,
) -> Result<FirstBytes, Unreadable> {
    let bound = match protocol {
        Protocol::Http => MAX_HEADER_BLOCK,
        _ => MAX_CLIENT_HELLO,
    };
    let mut buffer = vec![0; bound];
    let mut received = 0;
    loop {
        let bytes = &buffer[..received];
        let name = match protocol {
            Protocol::Http => match read_host(bytes) {
                HostScan::NeedMore => None,
                HostScan::Found(name) => Some(name),
                HostScan::NotHttp => return Err(Unreadable::NotHttp),
                HostScan::Malformed(why) => return Err(Unreadable::Malformed(why)),
            },
            _ => match read_client_hello(bytes) {
                ClientHelloScan::NeedMore(_) => None,
                ClientHelloScan::Found(name) => Some(name),
                ClientHelloScan::NotTls => return Err(Unreadable::NotTls),
                ClientHelloScan::Malformed(why) => return Err(Unreadable::Malformed(why)),
            },
        };
        if let Some(name) = name {
            buffer.truncate(received);
            return Ok(FirstBytes { bytes: buffer, name });
        }
        if received == bound {
            // The parsers refuse at their bound themselves; this keeps the loop finite even
            // if one did not.
            return Err(Unreadable::Malformed("first bytes longer than their bound"));
        }
        match client.read(&mut buffer[received..]).await {
            Ok(0) => return Err(Unreadable::Closed),
            Ok(count) => received += count,
            Err(error) => return Err(Unreadable::Failed(error.kind())),
        }
    }
}

/// Where a name-routed connection to `local` presenting `name` goes; None: nowhere (no
/// forward takes it, and the port has no default).
pub(super) fn named_backend(
    table: &ForwardTable,
    protocol: Protocol,
    local: SocketAddr,
    name: Option<&HostName>,
) -> Option<(SocketAddr, Selector)> {
    let forward = table.backend(protocol, local.ip(), local.port(), name)?;
    target(forward, local.port())
}

/// Where a plain tcp connection, or udp client, reaching `local` goes (when the proxy carries
/// tcp and udp forwards).
pub(super) fn port_backend(
    table: &ForwardTable,
    transport: Transport,
    local: SocketAddr,
) -> Option<(SocketAddr, Selector)> {
    target(table.port_forward(transport, local.ip(), local.port())?, local.port())
}

/// The backend `forward` sends `public_port` to, and the forward (whose traffic it counts).
fn target(forward: &Forward, public_port: u16) -> Option<(SocketAddr, Selector)> {
    let address: IpAddr = forward.target().address();
    let backend = SocketAddr::new(address, forward.target_port(public_port)?);
    Some((backend, forward.selector().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn read_all_of(protocol: Protocol, chunks: &[&[u8]]) -> Result<FirstBytes, Unreadable> {
        let (mut near, mut far) = tokio::io::duplex(64 * 1024);
        for chunk in chunks {
            far.write_all(chunk).await.unwrap();
        }
        drop(far);
        read_first_bytes(&mut near, protocol).await
    }

    #[tokio::test]
    async fn a_header_block_gives_its_host_and_keeps_what_came_after_it() {
        let request: &[u8] = b"GET / HTTP/1.1\r\nHost: NAS.example:8080\r\n\r\nbody";
        let first = read_all_of(Protocol::Http, &[&request[..10], &request[10..]]).await.unwrap();
        assert_eq!(first.name, Some(HostName::parse("nas.example").unwrap()));
        assert_eq!(first.bytes, request);
    }

    #[tokio::test]
    async fn other_protocols_and_early_closes_are_told_apart() {
        let ssh: &[u8] = b"SSH-2.0-OpenSSH_9.6\r\n";
        assert_eq!(read_all_of(Protocol::Tls, &[ssh]).await.unwrap_err(), Unreadable::NotTls);
        assert_eq!(
            read_all_of(Protocol::Http, &[&[0x16, 3, 1]]).await.unwrap_err(),
            Unreadable::NotHttp
        );
        let cut: &[u8] = b"GET / HTTP/1.1\r\nHost: a.example\r\n";
        assert_eq!(read_all_of(Protocol::Http, &[cut]).await.unwrap_err(), Unreadable::Closed);
        assert_eq!(read_all_of(Protocol::Tls, &[]).await.unwrap_err(), Unreadable::Closed);
    }

    #[tokio::test]
    async fn an_endless_header_block_is_malformed_at_its_bound() {
        let mut request = b"GET / HTTP/1.1\r\n".to_vec();
        while request.len() < 3 * MAX_HEADER_BLOCK {
            request.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let scan = read_all_of(Protocol::Http, &[&request]).await.unwrap_err();
        assert!(matches!(scan, Unreadable::Malformed(_)), "{scan:?}");
    }
}
