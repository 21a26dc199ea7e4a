//! `peer-report`: a server that tells each client which address and port it saw the client
//! at, so a test can check that a forward kept the client's real address.
//!
//! ```text
//! peer-report --name nas --tcp 0.0.0.0:8080 --udp 0.0.0.0:5353 ...
//! ```
//!
//! Every reply carries one line, `name=NAME peer=IP:PORT local=IP:PORT bytes=N`: the server's
//! name, the peer as `accept`/`recvfrom` gave it, the local address the connection or datagram
//! arrived at, and how many bytes of request it read.
//!
//! - UDP: every datagram is answered with the line, from the socket it arrived on.
//! - TCP: the request is read until it is complete, then answered and the connection closed
//!   (the server sends its FIN first). A request is complete as soon as it is one of:
//!   a whole TLS record (first byte 0x16: a ClientHello, however many segments it came in),
//!   an HTTP/1.x request head (up to the blank line; answered as `200 OK` with the line as
//!   body), a line (up to `\n`), or whatever came before the client shut its side.
//!
//! Each listening socket has a thread, and each connection one too; the server runs until
//! killed. A bad argument or a port it cannot bind ends it with one line on stderr.

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

/// A client that sends nothing complete for this long is answered with what it sent so far.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most request bytes read (a ClientHello with post-quantum key shares is ~1.7 KB).
const MAX_REQUEST: usize = 64 * 1024;
/// TLS record header: type, version (2), length (2).
const TLS_RECORD_HEADER: usize = 5;
const TLS_HANDSHAKE: u8 = 0x16;

struct Options {
    name: String,
    tcp: Vec<SocketAddr>,
    udp: Vec<SocketAddr>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options { name: String::new(), tcp: Vec::new(), udp: Vec::new() };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let address = || -> Result<SocketAddr, String> {
            value.parse().map_err(|_| format!("{flag} {value:?} is not an ADDRESS:PORT"))
        };
        match flag.as_str() {
            "--name" => options.name = value.clone(),
            "--tcp" => options.tcp.push(address()?),
            "--udp" => options.udp.push(address()?),
            _ => return Err(format!("unknown option {flag:?} (--name, --tcp, --udp)")),
        }
    }
    if options.name.is_empty() || !options.name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("--name NAME (printable, no spaces) is required".to_string());
    }
    if options.tcp.is_empty() && options.udp.is_empty() {
        return Err("nothing to serve: give --tcp and/or --udp ADDRESS:PORT".to_string());
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(problem) => {
            eprintln!("peer-report: {problem}");
            return ExitCode::FAILURE;
        }
    };
    let mut threads = Vec::new();
    // Bind everything before serving anything: a port that cannot be bound is reported at once.
    for address in &options.tcp {
        match TcpListener::bind(address) {
            Ok(listener) => {
                let name = options.name.clone();
                threads.push(thread::spawn(move || serve_tcp(&name, &listener)));
            }
            Err(error) => {
                eprintln!("peer-report: cannot listen on TCP {address}: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    for address in &options.udp {
        match UdpSocket::bind(address) {
            Ok(socket) => {
                let name = options.name.clone();
                threads.push(thread::spawn(move || serve_udp(&name, &socket)));
            }
            Err(error) => {
                eprintln!("peer-report: cannot bind UDP {address}: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("peer-report {}: serving", options.name);
    for thread in threads {
        let _ = thread.join();
    }
    ExitCode::FAILURE
}

fn report(name: &str, peer: SocketAddr, local: SocketAddr, bytes: usize) -> String {
    format!("name={name} peer={peer} local={local} bytes={bytes}")
}

fn serve_udp(name: &str, socket: &UdpSocket) {
    let local = match socket.local_addr() {
        Ok(local) => local,
        Err(error) => return eprintln!("peer-report: UDP socket: {error}"),
    };
    let mut buffer = vec![0u8; 65536];
    loop {
        match socket.recv_from(&mut buffer) {
            Ok((length, peer)) => {
                let line = report(name, peer, local, length);
                if let Err(error) = socket.send_to(line.as_bytes(), peer) {
                    eprintln!("peer-report: answering {peer} over UDP: {error}");
                }
            }
            Err(error) => eprintln!("peer-report: UDP receive on {local}: {error}"),
        }
    }
}

fn serve_tcp(name: &str, listener: &TcpListener) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let name = name.to_string();
                thread::spawn(move || {
                    if let Err(error) = answer(&name, stream, peer) {
                        eprintln!("peer-report: connection from {peer}: {error}");
                    }
                });
            }
            // Out of descriptors or a connection reset before accept: keep serving.
            Err(error) => eprintln!("peer-report: accept: {error}"),
        }
    }
}

fn answer(name: &str, mut stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
    let local = stream.local_addr()?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    while request.len() < MAX_REQUEST && !is_complete(&request) {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => request.extend_from_slice(&buffer[..count]),
            Err(error)
                if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
            {
                break;
            }
            Err(error) => return Err(error),
        }
    }
    let line = report(name, peer, local, request.len());
    let reply = if is_http(&request) {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{line}\n",
            line.len() + 1
        )
    } else {
        format!("{line}\n")
    };
    stream.write_all(reply.as_bytes())?;
    stream.shutdown(Shutdown::Write)?;
    // Wait for the client's FIN so unread bytes never turn the close into a reset.
    while matches!(stream.read(&mut buffer), Ok(1..)) {}
    Ok(())
}

fn is_complete(request: &[u8]) -> bool {
    match request.first() {
        None => false,
        Some(&TLS_HANDSHAKE) => {
            request.len() >= TLS_RECORD_HEADER
                && request.len()
                    >= TLS_RECORD_HEADER + usize::from(u16::from_be_bytes([request[3], request[4]]))
        }
        Some(_) if is_http(request) => request.windows(4).any(|w| w == b"\r\n\r\n"),
        Some(_) => request.contains(&b'\n'),
    }
}

/// An HTTP/1.x request line starts with a method in capitals and a space.
fn is_http(request: &[u8]) -> bool {
    let method_length = request.iter().take_while(|b| b.is_ascii_uppercase()).count();
    method_length > 0 && request.get(method_length) == Some(&b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_record_is_complete_only_when_whole() {
        let mut record = vec![TLS_HANDSHAKE, 3, 1, 0, 4, 1, 2];
        assert!(!is_complete(&record));
        record.extend_from_slice(&[3, 4]);
        assert!(is_complete(&record));
        assert!(!is_complete(&record[..3]));
    }

    #[test]
    fn http_waits_for_the_blank_line_and_lines_for_their_end() {
        assert!(!is_complete(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(is_complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(is_http(b"GET / HTTP/1.1"));
        assert!(!is_http(b"hello\n"));
        assert!(!is_complete(b"hello"));
        assert!(is_complete(b"hello\n"));
        assert!(!is_complete(b""));
    }
}
