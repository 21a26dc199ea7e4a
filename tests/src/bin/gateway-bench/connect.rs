//! `connect`: new TCP connections as fast as a few clients can make them, for the entry
//! scenario's connection rate and time to first byte.
//!
//! Each client thread, until the time is up: connects, sends one request (a line, or a
//! ClientHello naming `--sni` so an SNI router can pick the backend), waits for the first byte
//! of the answer (the time from `connect` to it is one sample), reads the answer to the
//! server's close and closes. `peer-report` is the server: it answers once the request is
//! complete and closes first, so the clients keep no TIME_WAIT state and never run out of
//! ports. A connection that fails or times out is counted, not retried.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use gateway_tests::traffic::client_hello;
use serde_json::json;

/// A connection that takes longer than this (connecting, or waiting for its answer) failed.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_CLIENTS: usize = 64;

#[derive(clap::Args)]
pub struct Options {
    /// Where to connect (a forward's public address and port).
    #[arg(long)]
    target: SocketAddr,
    /// Send a ClientHello naming this server instead of a line.
    #[arg(long)]
    sni: Option<String>,
    /// How long to keep connecting, in milliseconds.
    #[arg(long)]
    duration_ms: u64,
    /// Client threads connecting at once.
    #[arg(long, default_value_t = 4)]
    clients: usize,
}

struct ClientResult {
    /// Microseconds from `connect` to the first byte, per completed connection.
    first_byte_us: Vec<u64>,
    failures: u64,
}

pub fn run(options: &Options) -> Result<()> {
    ensure!(
        (1..=MAX_CLIENTS).contains(&options.clients),
        "--clients {} is outside 1..={MAX_CLIENTS}",
        options.clients
    );
    ensure!(options.duration_ms > 0, "--duration-ms must be positive");
    let request = match &options.sni {
        Some(name) => client_hello(name, 0),
        None => b"hello\n".to_vec(),
    };
    let duration = Duration::from_millis(options.duration_ms);
    let started = Instant::now();
    let deadline = started + duration;
    let results: Vec<ClientResult> = thread::scope(|scope| {
        let handles: Vec<_> = (0..options.clients)
            .map(|_| scope.spawn(|| client(options.target, &request, deadline)))
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("a client thread panicked")).collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut samples: Vec<u64> =
        results.iter().flat_map(|result| result.first_byte_us.iter().copied()).collect();
    samples.sort_unstable();
    let failures: u64 = results.iter().map(|result| result.failures).sum();
    let percentile_ms = |p: f64| -> Option<f64> {
        let last = samples.len().checked_sub(1)?;
        let index = ((last as f64) * p).round() as usize;
        Some(samples[index.min(last)] as f64 / 1e3)
    };
    let report = json!({
        "connections": samples.len(),
        "failures": failures,
        "seconds": seconds,
        "per_second": samples.len() as f64 / seconds,
        "first_byte_p50_ms": percentile_ms(0.50),
        "first_byte_p99_ms": percentile_ms(0.99),
    });
    println!("{report}");
    Ok(())
}

fn client(target: SocketAddr, request: &[u8], deadline: Instant) -> ClientResult {
    let mut result = ClientResult { first_byte_us: Vec::new(), failures: 0 };
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        match one_connection(target, request, &mut buffer) {
            Some(first_byte) => result.first_byte_us.push(first_byte.as_micros() as u64),
            None => result.failures += 1,
        }
    }
    result
}

/// The time from `connect` to the answer's first byte, or `None` if the connection failed.
fn one_connection(target: SocketAddr, request: &[u8], buffer: &mut [u8]) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&target, CONNECTION_TIMEOUT).ok()?;
    stream.set_nodelay(true).ok()?;
    stream.set_read_timeout(Some(CONNECTION_TIMEOUT)).ok()?;
    stream.write_all(request).ok()?;
    let first = stream.read(buffer).ok()?;
    if first == 0 {
        return None;
    }
    let first_byte = started.elapsed();
    // The rest of the answer, up to the server's close.
    while matches!(stream.read(buffer), Ok(1..)) {}
    Some(first_byte)
}
