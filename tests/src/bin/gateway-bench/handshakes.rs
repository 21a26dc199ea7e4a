//! The handshake flood: initiations from `--peers` peers (see `peers`), each from a socket of
//! its own, built with the gateway's own Noise and cookie code, sent with at most `--window`
//! unanswered at a time, and the responses counted.
//!
//! The Noise part of every initiation (two X25519 operations) is computed before the clock
//! starts, on every core, so the generator spends its measured time sending and receiving;
//! MACs are added when sending, so a cookie reply is honoured as a real peer would (the peer's
//! next initiation carries MAC2). A small window keeps the responder's queue short: what is
//! measured is how fast it answers, not its behaviour under load.
//!
//! Timestamps are synthetic: round `r` of a peer's initiations carries the start time plus
//! `r` × [`ROUND_SPACING`], more than the responder's timestamp granularity (~16.8 ms), so each
//! is newer than the last whatever the generation speed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use gateway::uapi::Key;
use gateway::wg::cookie::CookieMaker;
use gateway::wg::messages::{self, Packet};
use gateway::wg::noise::Handshake;
use gateway::wg::tai64n::Tai64n;
use gateway_common::wire::HANDSHAKE_INITIATION_LEN;
use rand_core::{OsRng, RngCore as _};
use serde_json::json;

use crate::peer_sockets::PeerSockets;
use crate::peers;

const ROUND_SPACING: Duration = Duration::from_millis(20);
const RECEIVE_POLL: Duration = Duration::from_millis(1);

#[derive(clap::Args)]
pub struct Options {
    /// The responder's address and port.
    #[arg(long)]
    target: SocketAddr,
    /// The responder's public key (base64).
    #[arg(long)]
    server_public: String,
    /// Peers to initiate as (the responder must have them configured: `peers`).
    #[arg(long)]
    peers: u32,
    /// Seed of the peers' keys.
    #[arg(long)]
    seed: u64,
    /// Initiations to prepare (sent round-robin over the peers).
    #[arg(long)]
    initiations: u32,
    /// Unanswered initiations allowed at once.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Stop sending after this long (milliseconds), even if initiations are left.
    #[arg(long)]
    duration_ms: u64,
    /// An initiation unanswered for this long (milliseconds) counts as lost.
    #[arg(long, default_value_t = 500)]
    timeout_ms: u64,
}

struct Prepared {
    peer: u32,
    sender_index: u32,
    message: [u8; HANDSHAKE_INITIATION_LEN],
}

#[derive(Default)]
struct Counts {
    sent: u64,
    responses: u64,
    cookies: u64,
    lost: u64,
    strays: u64,
}

pub fn run(options: &Options) -> Result<()> {
    ensure!(options.peers > 0, "--peers must be at least 1");
    ensure!(options.initiations > 0, "--initiations must be at least 1");
    ensure!(options.window > 0, "--window must be at least 1");
    let server_public = Key::from_base64(&options.server_public)
        .map_err(|error| anyhow!("--server-public {:?}: {error}", options.server_public))?
        .0;
    let prepare_started = Instant::now();
    let prepared = prepare(options, &server_public)?;
    let prepare_seconds = prepare_started.elapsed().as_secs_f64();

    let sockets = PeerSockets::open(options.peers as usize, options.target)?;
    let mut makers: Vec<CookieMaker> =
        (0..options.peers).map(|_| CookieMaker::new(&server_public)).collect();
    let (counts, seconds) = flood(options, &sockets, &prepared, &mut makers)?;
    let report = json!({
        "sent": counts.sent,
        "responses": counts.responses,
        "cookie_replies": counts.cookies,
        "lost": counts.lost,
        "strays": counts.strays,
        "seconds": seconds,
        "handshakes_per_second": counts.responses as f64 / seconds.max(f64::EPSILON),
        "prepare_seconds": prepare_seconds,
    });
    println!("{report}");
    Ok(())
}

/// Every initiation, in sending order (round by round over the peers), computed on all cores.
fn prepare(options: &Options, server_public: &[u8; 32]) -> Result<Vec<Prepared>> {
    let threads = thread::available_parallelism().map_or(1, |count| count.get()) as u32;
    let index_base = OsRng.next_u32();
    let start = SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?;
    let per_thread: Vec<Result<Vec<(u64, Prepared)>>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread_index| {
                scope.spawn(move || {
                    let mut out = Vec::new();
                    for peer in (thread_index..options.peers).step_by(threads as usize) {
                        prepare_peer(options, server_public, peer, start, index_base, &mut out)?;
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| bail!("a preparing thread panicked")))
            .collect()
    });
    let mut all = Vec::with_capacity(options.initiations as usize);
    for part in per_thread {
        all.extend(part?);
    }
    all.sort_unstable_by_key(|(order, _)| *order);
    Ok(all.into_iter().map(|(_, prepared)| prepared).collect())
}

fn prepare_peer(
    options: &Options,
    server_public: &[u8; 32],
    peer: u32,
    start: Duration,
    index_base: u32,
    out: &mut Vec<(u64, Prepared)>,
) -> Result<()> {
    let identity = peers::identity(options.seed, peer);
    let mut handshake = Handshake::new(&identity, *server_public, None);
    for round in 0u64.. {
        let order = round * u64::from(options.peers) + u64::from(peer);
        if order >= u64::from(options.initiations) {
            return Ok(());
        }
        let at = start + ROUND_SPACING * u32::try_from(round).unwrap_or(u32::MAX);
        let timestamp = Tai64n::from_unix(at.as_secs() as i64, at.subsec_nanos());
        let sender_index = index_base.wrapping_add(order as u32);
        let message = handshake
            .create_initiation(&identity, sender_index, timestamp, &mut OsRng)
            .ok_or_else(|| {
            anyhow!("cannot initiate to --server-public: the key is of small order")
        })?;
        out.push((order, Prepared { peer, sender_index, message }));
    }
    Ok(())
}

fn flood(
    options: &Options,
    sockets: &PeerSockets,
    prepared: &[Prepared],
    makers: &mut [CookieMaker],
) -> Result<(Counts, f64)> {
    let timeout = Duration::from_millis(options.timeout_ms);
    let mut counts = Counts::default();
    let mut outstanding: HashMap<u32, (u32, Instant)> = HashMap::new();
    let mut next = 0;
    let mut buffer = [0u8; 256];
    let mut ready = Vec::new();
    let started = Instant::now();
    let deadline = started + Duration::from_millis(options.duration_ms);
    let mut last_activity = started;
    loop {
        let now = Instant::now();
        while outstanding.len() < options.window && next < prepared.len() && now < deadline {
            let initiation = &prepared[next];
            let peer = initiation.peer as usize;
            let mut message = initiation.message;
            makers[peer].add_macs(&mut message, now);
            match sockets.socket(peer).send(&message) {
                Ok(_) => {}
                // A full socket buffer: this initiation is lost like any other.
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error).context("sending an initiation"),
            }
            outstanding.insert(initiation.sender_index, (initiation.peer, now));
            counts.sent += 1;
            next += 1;
            last_activity = now;
        }
        let before = outstanding.len();
        outstanding.retain(|_, (_, sent_at)| now.duration_since(*sent_at) < timeout);
        counts.lost += (before - outstanding.len()) as u64;
        let sending_done = next == prepared.len() || now >= deadline;
        if sending_done && outstanding.is_empty() {
            break;
        }
        sockets.ready(RECEIVE_POLL, &mut ready)?;
        for &peer in &ready {
            loop {
                let length = match sockets.socket(peer).recv(&mut buffer) {
                    Ok(length) => length,
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                    // ICMP errors (port unreachable) surface here: count them as strays.
                    Err(_) => {
                        counts.strays += 1;
                        break;
                    }
                };
                let now = Instant::now();
                if handle_reply(&buffer[..length], &mut outstanding, makers, &mut counts, now) {
                    last_activity = now;
                }
            }
        }
    }
    Ok((counts, last_activity.duration_since(started).as_secs_f64()))
}

/// Counts one datagram from the responder; true if it answered an initiation in flight.
fn handle_reply(
    datagram: &[u8],
    outstanding: &mut HashMap<u32, (u32, Instant)>,
    makers: &mut [CookieMaker],
    counts: &mut Counts,
    now: Instant,
) -> bool {
    match messages::parse(datagram) {
        Ok(Packet::Response(response))
            if outstanding.remove(&response.receiver_index()).is_some() =>
        {
            counts.responses += 1;
            true
        }
        Ok(Packet::CookieReply(reply)) => match outstanding.remove(&reply.receiver_index()) {
            Some((peer, _)) => {
                // Ignoring a reply that does not open is what a peer does too.
                let _ = makers[peer as usize].consume_reply(&reply, now);
                counts.cookies += 1;
                true
            }
            None => {
                counts.strays += 1;
                false
            }
        },
        _ => {
            counts.strays += 1;
            false
        }
    }
}
