//! The paced UDP generator: each thread owns a connected socket and sends batches with
//! sendmmsg, keeping to its share of the target rate.
//!
//! Pacing: a thread sends what is due at its rate since it started, at most one batch per
//! call, and sleeps when nothing is due. A thread that falls behind (descheduled on a busy
//! machine) forgets what it owes beyond [`MAX_BACKLOG`] instead of catching up with a burst, so
//! the offered rate it reports (`rate_pps`) is what it really sent, evenly spread.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::json;

use crate::udp_batch::{Batch, set_buffer};
use crate::udp_payload::{HEADER_LEN, write_header};

const BATCH: usize = 64;
const MAX_BACKLOG: Duration = Duration::from_millis(2);
const SEND_BUFFER: usize = 4 << 20;
/// The largest UDP payload over IPv4.
const MAX_SIZE: usize = 65_507;
const MAX_THREADS: usize = 8;

#[derive(clap::Args)]
pub struct Options {
    /// Where to send (the receiver's address and port).
    #[arg(long)]
    target: SocketAddr,
    /// UDP payload bytes per datagram (at least 16: the header the receiver checks).
    #[arg(long)]
    size: usize,
    /// Datagrams per second, all threads together; 0: as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// How long to send, in milliseconds.
    #[arg(long)]
    duration_ms: u64,
    /// Sending threads, each with its own socket (source port).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Marks this run's datagrams (the receiver counts only its run's).
    #[arg(long)]
    run_id: u32,
}

struct ThreadResult {
    sent: u64,
    errors: u64,
    elapsed: Duration,
}

pub fn run(options: &Options) -> Result<()> {
    ensure!(
        (HEADER_LEN..=MAX_SIZE).contains(&options.size),
        "--size {} is outside {HEADER_LEN}..={MAX_SIZE}",
        options.size
    );
    ensure!(
        (1..=MAX_THREADS).contains(&options.threads),
        "--threads {} is outside 1..={MAX_THREADS}",
        options.threads
    );
    ensure!(options.duration_ms > 0, "--duration-ms must be positive");
    // Sleeps that overshoot by the default 50 µs timer slack would make pacing lumpy.
    // SAFETY: prctl with an integer argument.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let duration = Duration::from_millis(options.duration_ms);
    let per_thread_rate = options.rate as f64 / options.threads as f64;
    let results: Vec<Result<ThreadResult>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..options.threads)
            .map(|index| {
                scope.spawn(move || send_thread(options, index, per_thread_rate, duration))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| bail!("a sending thread panicked")))
            .collect()
    });
    let results = results.into_iter().collect::<Result<Vec<_>>>()?;
    let sent: u64 = results.iter().map(|result| result.sent).sum();
    let errors: u64 = results.iter().map(|result| result.errors).sum();
    let seconds = results.iter().map(|result| result.elapsed).max().unwrap_or_default();
    let seconds = seconds.as_secs_f64().max(f64::EPSILON);
    let report = json!({
        "sent": sent,
        "errors": errors,
        "seconds": seconds,
        "rate_pps": sent as f64 / seconds,
        "target_pps": options.rate,
    });
    println!("{report}");
    Ok(())
}

fn send_thread(
    options: &Options,
    index: usize,
    rate: f64,
    duration: Duration,
) -> Result<ThreadResult> {
    let bind: SocketAddr =
        if options.target.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    let socket = UdpSocket::bind(bind).context("binding the sending socket")?;
    socket.connect(options.target).with_context(|| format!("connecting to {}", options.target))?;
    let fd = socket.as_raw_fd();
    set_buffer(fd, true, SEND_BUFFER).context("setting the send buffer")?;
    let mut batch = Batch::new(BATCH, options.size);
    // Sequence numbers of different threads never collide: the thread index is in the top bits.
    let mut sequence = (index as u64) << 48;
    let max_backlog = ((rate * MAX_BACKLOG.as_secs_f64()) as u64).max(BATCH as u64);
    let (mut sent, mut errors, mut owed_base) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    loop {
        let elapsed = started.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = if rate > 0.0 {
            let owed = (rate * elapsed.as_secs_f64()) as u64;
            let mut due = owed.saturating_sub(sent + owed_base);
            if due > max_backlog {
                owed_base += due - max_backlog;
                due = max_backlog;
            }
            if due == 0 {
                let next = (sent + owed_base + 1) as f64 / rate;
                let wait = Duration::from_secs_f64(next).saturating_sub(elapsed);
                thread::sleep(wait.min(duration.saturating_sub(elapsed)));
                continue;
            }
            due.min(BATCH as u64) as usize
        } else {
            BATCH
        };
        for slot in 0..due {
            write_header(batch.buffer_mut(slot), options.run_id, sequence + slot as u64);
        }
        match batch.send(fd, due) {
            Ok(count) => {
                sent += count as u64;
                sequence += count as u64;
            }
            // A full queue, or ICMP unreachable reported on the connected socket: counted,
            // and the offered rate shows it.
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc::EAGAIN | libc::ENOBUFS | libc::ECONNREFUSED | libc::EHOSTUNREACH)
                ) =>
            {
                errors += 1;
            }
            Err(error) => return Err(error).context("sendmmsg"),
        }
    }
    Ok(ThreadResult { sent, errors, elapsed: started.elapsed() })
}
