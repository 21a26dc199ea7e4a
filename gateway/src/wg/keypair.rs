//! Keypairs (sessions) and their current/previous/next rotation, as the kernel's noise.c
//! rotates them.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Tag};
use gateway_common::replay::Verdict;
use gateway_common::wire::{
    AEAD_TAG_LEN, DATA_HEADER_LEN, MESSAGE_DATA, REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES,
};

use super::crypto::SecretKey;
use super::noise::SessionKeys;
use super::session_memory::CounterCell;

pub struct Keypair {
    pub local_index: u32,
    pub remote_index: u32,
    pub initiator: bool,
    pub birth: Instant,
    send_key: SecretKey,
    recv_key: SecretKey,
    sender: ChaCha20Poly1305,
    receiver: ChaCha20Poly1305,
    sending_valid: bool,
    receiving_valid: bool,
    pub counters: CounterCell,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum OpenError {
    /// Expired, exhausted or invalidated: the kernel's `receiving.is_valid` is false.
    Invalid,
    /// Authentication failed.
    Forged,
    /// Authentic, but the counter was seen before or fell out of the window.
    Replayed,
}

fn nonce(counter: u64) -> chacha20poly1305::Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

impl Keypair {
    pub fn new(keys: SessionKeys, birth: Instant, counters: CounterCell) -> Self {
        Keypair {
            local_index: keys.local_index,
            remote_index: keys.remote_index,
            initiator: keys.is_initiator,
            birth,
            sender: ChaCha20Poly1305::new(keys.sending.as_bytes().into()),
            receiver: ChaCha20Poly1305::new(keys.receiving.as_bytes().into()),
            send_key: keys.sending,
            recv_key: keys.receiving,
            sending_valid: true,
            receiving_valid: true,
            counters,
        }
    }

    pub fn send_key(&self) -> &[u8; 32] {
        self.send_key.as_bytes()
    }

    pub fn recv_key(&self) -> &[u8; 32] {
        self.recv_key.as_bytes()
    }

    pub fn sending_valid(&self) -> bool {
        self.sending_valid
    }

    pub fn receiving_valid(&self) -> bool {
        self.receiving_valid
    }

    pub fn invalidate_sending(&mut self) {
        self.sending_valid = false;
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.birth)
    }

    /// Nonces handed out so far (by either path).
    pub fn sent_messages(&self) -> u64 {
        self.counters.send_nonce.load(Ordering::Relaxed)
    }

    /// The kernel's `keep_key_fresh` condition on the sending side.
    pub fn wants_rekey_for_sending(&self, now: Instant, rekey_after_time: Duration) -> bool {
        self.sending_valid
            && (self.sent_messages() > REKEY_AFTER_MESSAGES
                || (self.initiator && self.age(now) >= rekey_after_time))
    }

    /// Whether packets may still be sent with this keypair at `now`.
    pub fn usable_for_sending(&self, now: Instant, reject_after_time: Duration) -> bool {
        self.sending_valid && self.age(now) < reject_after_time
    }

    /// Seals `buf[DATA_HEADER_LEN..]` (padded plaintext) in place, fills the header and
    /// appends the tag. `None` (and the keypair stops sending) when it is expired or its
    /// nonces are exhausted: the caller then needs a new handshake.
    pub fn seal(
        &mut self,
        now: Instant,
        reject_after_time: Duration,
        buf: &mut Vec<u8>,
    ) -> Option<u64> {
        if !self.usable_for_sending(now, reject_after_time) {
            self.sending_valid = false;
            return None;
        }
        let counter = self.counters.send_nonce.fetch_add(1, Ordering::Relaxed);
        if counter >= REJECT_AFTER_MESSAGES {
            self.sending_valid = false;
            return None;
        }
        buf[0..4].copy_from_slice(&MESSAGE_DATA.to_le_bytes());
        buf[4..8].copy_from_slice(&self.remote_index.to_le_bytes());
        buf[8..16].copy_from_slice(&counter.to_le_bytes());
        let tag = self
            .sender
            .encrypt_in_place_detached(&nonce(counter), b"", &mut buf[DATA_HEADER_LEN..])
            .ok()?;
        buf.extend_from_slice(&tag);
        Some(counter)
    }

    /// Opens a transport message's encrypted payload (`ciphertext || tag`) in place; returns
    /// the plaintext's length. Replay protection is applied after authentication.
    pub fn open(
        &mut self,
        now: Instant,
        reject_after_time: Duration,
        counter: u64,
        payload: &mut [u8],
    ) -> Result<usize, OpenError> {
        if !self.receiving_valid
            || self.age(now) >= reject_after_time
            || self.counters.replay.next_expected() >= REJECT_AFTER_MESSAGES
        {
            self.receiving_valid = false;
            return Err(OpenError::Invalid);
        }
        if payload.len() < AEAD_TAG_LEN {
            return Err(OpenError::Forged);
        }
        if self.counters.replay.check(counter) != Verdict::Accepted {
            return Err(OpenError::Replayed);
        }
        let split = payload.len() - AEAD_TAG_LEN;
        let (data, tag) = payload.split_at_mut(split);
        let tag = Tag::clone_from_slice(tag);
        self.receiver
            .decrypt_in_place_detached(&nonce(counter), b"", data, &tag)
            .map_err(|_| OpenError::Forged)?;
        match self.counters.replay.accept(counter) {
            Verdict::Accepted => Ok(split),
            Verdict::Exhausted => {
                self.receiving_valid = false;
                Err(OpenError::Invalid)
            }
            Verdict::Replayed | Verdict::Contended => Err(OpenError::Replayed),
        }
    }
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keypair")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("initiator", &self.initiator)
            .field("sending_valid", &self.sending_valid)
            .field("receiving_valid", &self.receiving_valid)
            .finish_non_exhaustive()
    }
}

/// A peer's keypairs. `current` sends; all three receive. A responder's new keypair waits in
/// `next` until the initiator proves it has it by sending with it.
#[derive(Default, Debug)]
pub struct Keypairs {
    pub current: Option<Keypair>,
    pub previous: Option<Keypair>,
    pub next: Option<Keypair>,
}

impl Keypairs {
    /// The kernel's `add_new_keypair`. Returns the keypairs it displaced, whose receiver
    /// indexes the caller must forget.
    pub fn add(&mut self, new: Keypair) -> Vec<Keypair> {
        let mut gone = Vec::new();
        if new.initiator {
            if let Some(next) = self.next.take() {
                gone.extend(self.previous.replace(next));
                gone.extend(self.current.take());
            } else {
                gone.extend(std::mem::replace(&mut self.previous, self.current.take()));
            }
            self.current = Some(new);
        } else {
            gone.extend(self.next.replace(new));
            gone.extend(self.previous.take());
        }
        gone
    }

    /// The kernel's `wg_noise_received_with_keypair`: data arrived with the keypair whose
    /// receiver index is `local_index`; if that is `next`, it becomes `current`. Returns
    /// whether that happened and the keypair it displaced.
    pub fn received_with(&mut self, local_index: u32) -> (bool, Option<Keypair>) {
        if self.next.as_ref().map(|k| k.local_index) != Some(local_index) {
            return (false, None);
        }
        let gone = std::mem::replace(&mut self.previous, self.current.take());
        self.current = self.next.take();
        (true, gone)
    }

    pub fn get_mut(&mut self, local_index: u32) -> Option<&mut Keypair> {
        [&mut self.current, &mut self.previous, &mut self.next]
            .into_iter()
            .flatten()
            .find(|k| k.local_index == local_index)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Keypair> {
        [&self.current, &self.previous, &self.next].into_iter().flatten()
    }

    /// The kernel's `wg_noise_keypairs_clear`.
    pub fn clear(&mut self) -> Vec<Keypair> {
        [self.current.take(), self.previous.take(), self.next.take()]
            .into_iter()
            .flatten()
            .collect()
    }

    /// The kernel's `wg_noise_expire_current_peer_keypairs` (keypair part): stop sending with
    /// `next` and `current`, so the next packet triggers a handshake.
    pub fn expire_sending(&mut self) {
        for k in [&mut self.next, &mut self.current].into_iter().flatten() {
            k.invalidate_sending();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wg::session_memory::CounterCell;

    const REJECT: Duration = Duration::from_secs(180);

    fn pair(local: u32, initiator: bool, now: Instant) -> Keypair {
        Keypair::new(
            SessionKeys {
                sending: SecretKey([local as u8; 32]),
                receiving: SecretKey([local as u8 ^ 0xff; 32]),
                local_index: local,
                remote_index: local + 1000,
                is_initiator: initiator,
            },
            now,
            CounterCell::on_heap(),
        )
    }

    /// Two ends of one session: a's sending key is b's receiving key.
    fn linked(now: Instant) -> (Keypair, Keypair) {
        let a = Keypair::new(
            SessionKeys {
                sending: SecretKey([1; 32]),
                receiving: SecretKey([2; 32]),
                local_index: 10,
                remote_index: 20,
                is_initiator: true,
            },
            now,
            CounterCell::on_heap(),
        );
        let b = Keypair::new(
            SessionKeys {
                sending: SecretKey([2; 32]),
                receiving: SecretKey([1; 32]),
                local_index: 20,
                remote_index: 10,
                is_initiator: false,
            },
            now,
            CounterCell::on_heap(),
        );
        (a, b)
    }

    fn seal(k: &mut Keypair, now: Instant, plain: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; DATA_HEADER_LEN];
        buf.extend_from_slice(plain);
        k.seal(now, REJECT, &mut buf).unwrap();
        buf
    }

    #[test]
    fn seal_open_round_trip_and_replay() {
        let now = Instant::now();
        let (mut a, mut b) = linked(now);
        let pkt = seal(&mut a, now, b"hello world 1234");
        assert_eq!(u32::from_le_bytes(pkt[4..8].try_into().unwrap()), 20);
        let counter = u64::from_le_bytes(pkt[8..16].try_into().unwrap());
        assert_eq!(counter, 0);
        let mut payload = pkt[16..].to_vec();
        let n = b.open(now, REJECT, counter, &mut payload).unwrap();
        assert_eq!(&payload[..n], b"hello world 1234");
        let mut again = pkt[16..].to_vec();
        assert_eq!(b.open(now, REJECT, counter, &mut again), Err(OpenError::Replayed));
    }

    #[test]
    fn forged_packets_do_not_move_the_window() {
        let now = Instant::now();
        let (mut a, mut b) = linked(now);
        let pkt = seal(&mut a, now, b"x");
        let mut bad = pkt[16..].to_vec();
        bad[0] ^= 1;
        assert_eq!(b.open(now, REJECT, 0, &mut bad), Err(OpenError::Forged));
        let mut good = pkt[16..].to_vec();
        assert!(b.open(now, REJECT, 0, &mut good).is_ok());
        let mut short = vec![0u8; 15];
        assert_eq!(b.open(now, REJECT, 1, &mut short), Err(OpenError::Forged));
    }

    #[test]
    fn expired_keypairs_refuse_both_directions() {
        let now = Instant::now();
        let (mut a, mut b) = linked(now);
        let later = now + REJECT;
        let mut buf = vec![0u8; DATA_HEADER_LEN];
        assert_eq!(a.seal(later, REJECT, &mut buf), None);
        assert!(!a.sending_valid());
        let pkt = seal(&mut linked(now).0, now, b"");
        let mut payload = pkt[16..].to_vec();
        assert_eq!(b.open(later, REJECT, 0, &mut payload), Err(OpenError::Invalid));
        assert!(!b.receiving_valid());
    }

    #[test]
    fn exhausted_nonces_stop_sending() {
        let now = Instant::now();
        let (mut a, _) = linked(now);
        a.counters.send_nonce.store(REJECT_AFTER_MESSAGES, Ordering::Relaxed);
        let mut buf = vec![0u8; DATA_HEADER_LEN];
        assert_eq!(a.seal(now, REJECT, &mut buf), None);
        assert!(!a.sending_valid());
    }

    #[test]
    fn rekey_wanted_after_time_only_for_the_initiator_and_after_messages_for_both() {
        let now = Instant::now();
        let rekey = Duration::from_secs(120);
        let (a, b) = linked(now);
        assert!(!a.wants_rekey_for_sending(now + Duration::from_secs(119), rekey));
        assert!(a.wants_rekey_for_sending(now + rekey, rekey));
        assert!(!b.wants_rekey_for_sending(now + rekey, rekey));
        b.counters.send_nonce.store(REKEY_AFTER_MESSAGES + 1, Ordering::Relaxed);
        assert!(b.wants_rekey_for_sending(now, rekey));
    }

    fn indexes(k: &Keypairs) -> (Option<u32>, Option<u32>, Option<u32>) {
        (
            k.current.as_ref().map(|k| k.local_index),
            k.previous.as_ref().map(|k| k.local_index),
            k.next.as_ref().map(|k| k.local_index),
        )
    }

    fn gone(v: Vec<Keypair>) -> Vec<u32> {
        v.iter().map(|k| k.local_index).collect()
    }

    #[test]
    fn rotation_follows_the_kernel() {
        let now = Instant::now();
        let mut k = Keypairs::default();
        // initiator: new keypair becomes current at once
        assert!(k.add(pair(1, true, now)).is_empty());
        assert_eq!(indexes(&k), (Some(1), None, None));
        assert!(k.add(pair(2, true, now)).is_empty());
        assert_eq!(indexes(&k), (Some(2), Some(1), None));
        assert_eq!(gone(k.add(pair(3, true, now))), vec![1]);
        assert_eq!(indexes(&k), (Some(3), Some(2), None));
        // responder: waits in next, previous goes away
        assert_eq!(gone(k.add(pair(4, false, now))), vec![2]);
        assert_eq!(indexes(&k), (Some(3), None, Some(4)));
        // data on a non-next keypair changes nothing
        assert!(!k.received_with(3).0);
        // data on next promotes it
        let (promoted, displaced) = k.received_with(4);
        assert!(promoted);
        assert!(displaced.is_none());
        assert_eq!(indexes(&k), (Some(4), Some(3), None));
        // responder again, then initiator before confirmation: next becomes previous,
        // current is dropped
        k.add(pair(5, false, now));
        assert_eq!(indexes(&k), (Some(4), None, Some(5)));
        assert_eq!(gone(k.add(pair(6, true, now))), vec![4]);
        assert_eq!(indexes(&k), (Some(6), Some(5), None));
        // a second responder keypair replaces an unconfirmed next
        k.add(pair(7, false, now));
        assert_eq!(gone(k.add(pair(8, false, now))), vec![7]);
        assert_eq!(indexes(&k), (Some(6), None, Some(8)));
        assert_eq!(gone(k.clear()), vec![6, 8]);
    }

    #[test]
    fn expire_sending_keeps_receiving() {
        let now = Instant::now();
        let mut k = Keypairs::default();
        k.add(pair(1, true, now));
        k.add(pair(2, false, now));
        k.expire_sending();
        assert!(!k.current.as_ref().unwrap().sending_valid());
        assert!(!k.next.as_ref().unwrap().sending_valid());
        assert!(k.current.as_ref().unwrap().receiving_valid());
    }
}
