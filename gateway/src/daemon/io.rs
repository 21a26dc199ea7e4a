//! The threads that move packets: one per TUN queue, one per UDP socket, one for handshake
//! messages (so a flood of them queues up, which is what puts the device "under load" and
//! makes it demand cookies), and the timer thread.
//!
//! Blocking reads on dedicated threads: the data path has nothing to await but the next
//! packet, and this keeps it free of an async runtime's overhead.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;

use gateway_common::wire::{
    MAX_QUEUED_INCOMING_HANDSHAKES, MESSAGE_HANDSHAKE_INITIATION, MESSAGE_HANDSHAKE_RESPONSE,
};

use super::core::Shared;
use super::udp::{self, Sockets};
use crate::tun::TunQueue;
use crate::wg::device::Received;
use crate::wg::peer::Endpoint;

/// Large enough for any TUN packet (jumbo frames included).
const BUFFER: usize = 65536;

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.to_string()).spawn(f)
}

pub fn start_tun_readers(shared: &Arc<Shared>) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..shared.tun.queues().len())
        .map(|q| {
            let shared = Arc::clone(shared);
            spawn(&format!("tun-{q}"), move || tun_reader(&shared, q))
        })
        .collect()
}

/// Packets taken from the TUN per lock of the device: what the stack has queued (a burst of
/// a bulk send) is sealed in one step, and its datagrams leave in few system calls.
const TUN_BATCH: usize = 64;
/// Where a batch is read: room for `TUN_BATCH` packets of a usual MTU, and always at least
/// one of the largest.
const TUN_ARENA: usize = 256 * 1024;

fn tun_reader(shared: &Shared, queue: usize) {
    let file = &shared.tun.queues()[queue];
    let mut tun = TunQueue(file);
    // Reads stop at an empty queue instead of waiting; `wait_readable` waits.
    if let Err(e) = tun.set_nonblocking() {
        tracing::warn!("TUN queue {queue}: {e}; reading one packet per step");
    }
    let mut arena = vec![0u8; TUN_ARENA];
    let mut packets: Vec<(usize, usize)> = Vec::with_capacity(TUN_BATCH);
    loop {
        packets.clear();
        let mut used = 0;
        let mut failure = None;
        while packets.len() < TUN_BATCH && TUN_ARENA - used >= BUFFER {
            match tun.read_packet(&mut arena[used..used + BUFFER]) {
                Ok(n) => {
                    packets.push((used, n));
                    used += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if !packets.is_empty() {
            // Proxied connections the daemon translates leave with the client's address; the
            // staged queue and the sealing see them as they leave (see `proxy_nat`).
            if let Some(table) = shared.proxy_nat.outbound() {
                for &(at, len) in &packets {
                    table.translate(&mut arena[at..at + len]);
                }
            }
            let now = Instant::now();
            shared.step(|core| {
                for &(at, len) in &packets {
                    core.device.handle_tun_packet(now, &arena[at..at + len]);
                }
            });
        }
        let failure = match failure {
            Some(e) => Some(e),
            None if packets.is_empty() => tun.wait_readable().err(),
            None => None,
        };
        if let Some(e) = failure {
            if !shared.stopping.load(Ordering::Acquire) {
                tracing::info!("TUN read failed ({e}): the interface is gone, shutting down");
                shared.stop();
            }
            return;
        }
    }
}

/// The handshake queue: bounded like the kernel's, its length is the "backlog".
pub struct HandshakeQueue {
    tx: SyncSender<(Endpoint, Vec<u8>)>,
}

pub fn start_handshake_worker(
    shared: &Arc<Shared>,
) -> std::io::Result<(HandshakeQueue, JoinHandle<()>)> {
    let (tx, rx) = sync_channel(MAX_QUEUED_INCOMING_HANDSHAKES);
    let shared = Arc::clone(shared);
    let handle = spawn("handshakes", move || handshake_worker(&shared, rx))?;
    Ok((HandshakeQueue { tx }, handle))
}

fn handshake_worker(shared: &Shared, rx: Receiver<(Endpoint, Vec<u8>)>) {
    while let Ok((from, mut datagram)) = rx.recv() {
        let backlog = shared.handshake_backlog.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        shared.step(|core| {
            // Handshake messages carry no packet to mark: their DS field does not matter.
            core.device.handle_datagram(Instant::now(), from, 0, &mut datagram, backlog);
        });
    }
}

pub fn start_udp_readers(
    shared: &Arc<Shared>,
    sockets: &Arc<Sockets>,
    queue: &HandshakeQueue,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut handles = Vec::new();
    for (family, present) in [("udp4", sockets.v4.is_some()), ("udp6", sockets.v6.is_some())] {
        if !present {
            continue;
        }
        let shared = Arc::clone(shared);
        let sockets = Arc::clone(sockets);
        let tx = queue.tx.clone();
        let v6 = family == "udp6";
        handles.push(spawn(family, move || udp_reader(&shared, &sockets, v6, &tx))?);
    }
    Ok(handles)
}

fn udp_reader(
    shared: &Shared,
    sockets: &Arc<Sockets>,
    v6: bool,
    handshakes: &SyncSender<(Endpoint, Vec<u8>)>,
) {
    let Some(sock) = (if v6 { sockets.v6.as_ref() } else { sockets.v4.as_ref() }) else {
        return;
    };
    let mut batch = udp::ReceiveBatch::default();
    let mut data = Vec::with_capacity(udp::BATCH);
    let mut deliveries = Vec::with_capacity(udp::BATCH);
    loop {
        let n = match batch.receive(sock) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return, // shut down (rebind or exit)
        };
        // Held, not dropped, while the interface is down (see `Shared::wait_until_up`): the
        // first handshake initiation of a peer that dialled before we were up.
        if !shared.wait_until_up(sockets) {
            return;
        }
        data.clear();
        for i in 0..n {
            let datagram = batch.datagram(i);
            let message_type = datagram.first_chunk::<4>().map(|t| u32::from_le_bytes(*t));
            if !matches!(
                message_type,
                Some(MESSAGE_HANDSHAKE_INITIATION | MESSAGE_HANDSHAKE_RESPONSE)
            ) {
                data.push(i);
                continue;
            }
            let from = batch.arrival(i).from;
            shared.handshake_backlog.fetch_add(1, Ordering::AcqRel);
            match handshakes.try_send((from, datagram.to_vec())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    shared.handshake_backlog.fetch_sub(1, Ordering::AcqRel);
                    tracing::debug!(from = %from.addr, "handshake queue full, dropping");
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        if data.is_empty() {
            continue;
        }
        // One lock for the whole batch; the TUN writes happen after it is released.
        deliveries.clear();
        shared.step(|core| {
            let now = Instant::now();
            for &i in &data {
                let (from, ds) = (batch.arrival(i).from, batch.arrival(i).ds);
                if let Received::Tun(range) =
                    core.device.handle_datagram(now, from, ds, batch.datagram_mut(i), 0)
                {
                    deliveries.push((i, range));
                }
            }
        });
        // Replies of proxied connections go to the proxy's socket (see `proxy_nat`).
        if let Some(table) = shared.proxy_nat.inbound() {
            for (i, range) in &deliveries {
                table.translate(&mut batch.datagram_mut(*i)[range.clone()]);
            }
        }
        let Some(queue) = shared.tun.queues().first() else { continue };
        for (i, range) in deliveries.drain(..) {
            if let Err(e) = TunQueue(queue).write_packet(&batch.datagram(i)[range]) {
                tracing::debug!("TUN write failed: {e}");
            }
        }
    }
}

pub fn start_timer(shared: &Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
    let shared = Arc::clone(shared);
    spawn("timers", move || {
        let mut next_tick: Option<Instant> = None;
        while !shared.stopping.load(Ordering::Acquire) {
            let now = Instant::now();
            let deadline = shared.step(|core| {
                core.device.handle_timeout(now);
                let tick = core.sink.as_ref().and_then(|s| s.tick_every());
                if let Some(every) = tick {
                    if next_tick.is_none_or(|t| t <= now) {
                        if let Some(sink) = core.sink.as_mut() {
                            sink.tick(&mut core.device, now);
                        }
                        next_tick = Some(now + every);
                    }
                } else {
                    next_tick = None;
                }
                [core.device.next_timeout(), next_tick].into_iter().flatten().min()
            });
            shared.sleep_until(deadline);
        }
    })
}
