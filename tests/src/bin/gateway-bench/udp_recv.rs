//! The counting receiver: binds, says `ready` on stdout, counts the datagrams of one run with
//! recvmmsg until the flow has stopped for `--idle-ms` (or `--max-ms` have passed), then prints
//! its counts as JSON.

use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use serde_json::json;

use crate::udp_batch::{Batch, set_buffer};
use crate::udp_payload::belongs_to;

const BATCH: usize = 64;
/// Large enough for any datagram the tunnels carry without fragmentation.
const BUFFER_LEN: usize = 2048;
const RECEIVE_BUFFER: usize = 4 << 20;
/// How often the receive loop wakes up to check its deadlines.
const POLL: Duration = Duration::from_millis(10);

#[derive(clap::Args)]
pub struct Options {
    /// Address and port to listen on.
    #[arg(long)]
    bind: SocketAddr,
    /// Count only datagrams of this run.
    #[arg(long)]
    run_id: u32,
    /// Stop once no datagram of the run arrived for this long (after the first one).
    #[arg(long, default_value_t = 250)]
    idle_ms: u64,
    /// Stop after this long whatever happens.
    #[arg(long, default_value_t = 30_000)]
    max_ms: u64,
}

pub fn run(options: &Options) -> Result<()> {
    ensure!(options.idle_ms > 0, "--idle-ms must be positive");
    let socket =
        UdpSocket::bind(options.bind).with_context(|| format!("binding {}", options.bind))?;
    socket.set_read_timeout(Some(POLL)).context("setting the receive timeout")?;
    let fd = socket.as_raw_fd();
    set_buffer(fd, false, RECEIVE_BUFFER).context("setting the receive buffer")?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready").and_then(|()| stdout.flush()).context("writing to stdout")?;

    let idle = Duration::from_millis(options.idle_ms);
    let started = Instant::now();
    let deadline = started + Duration::from_millis(options.max_ms);
    let mut batch = Batch::new(BATCH, BUFFER_LEN);
    let (mut packets, mut bytes, mut strays) = (0u64, 0u64, 0u64);
    let mut first: Option<Instant> = None;
    let mut last = started;
    loop {
        let now = Instant::now();
        if now >= deadline || first.is_some() && now.duration_since(last) >= idle {
            break;
        }
        let count = match batch.receive(fd) {
            Ok(count) => count,
            Err(error) if matches!(error.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) => {
                continue;
            }
            Err(error) => return Err(error).context("recvmmsg"),
        };
        let now = Instant::now();
        for index in 0..count {
            if belongs_to(batch.received(index), options.run_id) {
                packets += 1;
                bytes += batch.received_len(index) as u64;
                first.get_or_insert(now);
                last = now;
            } else {
                strays += 1;
            }
        }
    }
    let first_to_last = first.map(|first| last.duration_since(first)).unwrap_or_default();
    let report = json!({
        "packets": packets,
        "bytes": bytes,
        "strays": strays,
        "first_to_last_s": first_to_last.as_secs_f64(),
    });
    println!("{report}");
    Ok(())
}
