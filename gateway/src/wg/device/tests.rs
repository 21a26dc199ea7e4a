//! Every timer, rekey, rotation, replay and cookie case of the protocol, on the virtual
//! network.

use std::net::Ipv4Addr;
use std::time::Duration;

use rand_core::RngCore;

use super::virtual_net::*;
use super::*;
use crate::wg::peer::Endpoint;
use gateway_common::ecn;
use gateway_common::wire::MAX_QUEUED_INCOMING_HANDSHAKES;

#[test]
fn first_packet_triggers_a_handshake_and_is_delivered_after_it() {
    let mut n = Net::new();
    let p = n.a_sends(100);
    // initiation, response, then the staged packet (the keepalive is not needed: data flows)
    assert_eq!(n.types_on_wire(true), vec![1, 4]);
    assert_eq!(n.types_on_wire(false), vec![2]);
    assert_eq!(n.b_tun, vec![p]);
    // the responder's keypair was confirmed by that data packet
    assert!(n.b_current().is_some());
    assert!(n.b.peer(n.b_peer).unwrap().last_handshake.is_some());
    let q = n.b_sends(50);
    assert_eq!(n.a_tun, vec![q]);
}

#[test]
fn responder_cannot_send_before_confirmation_and_initiator_confirms_with_a_keepalive() {
    let mut n = Net::new();
    n.cut = true;
    n.a.handle_tun_packet(n.now, &packet(A_INNER, B_INNER, 10));
    n.pump();
    n.cut = false;
    // deliver only the initiation: b answers; a has nothing staged after the response...
    let (_, init) = n.wire[0].clone();
    n.deliver_to_b(init);
    assert!(n.b_current().is_none(), "responder keypair waits in next");
    assert!(n.b.peer(n.b_peer).unwrap().keypairs.next.is_some());
    // b wants to send: it must stage, not use the unconfirmed keypair
    n.b.handle_tun_packet(n.now, &packet(B_INNER, A_INNER, 20));
    n.pump();
    // a got the response, sent its staged packet, which confirmed b's keypair; b then flushed
    assert_eq!(n.b_tun.len(), 1);
    assert_eq!(n.a_tun.len(), 1);
    assert!(n.b_current().is_some());
}

#[test]
fn initiator_without_staged_data_confirms_with_a_keepalive() {
    let mut n = Net::new();
    n.a.set_persistent_keepalive(n.now, n.a_peer, 25);
    n.pump();
    // persistent keepalive on: a handshakes, then sends a keepalive (type 4, 32 bytes)
    let to_b: Vec<usize> = n.wire.iter().filter(|(d, _)| *d).map(|(_, p)| p.len()).collect();
    assert_eq!(to_b, vec![148, 32]);
    assert!(n.b_current().is_some());
    assert!(n.b_tun.is_empty(), "keepalives are not delivered");
}

#[test]
fn transfer_counts_handshakes_and_messages_like_the_kernel() {
    let mut n = Net::new();
    n.a_sends(100); // 128-byte inner packet, padded to 128: message 160
    let a = n.a.snapshot_peer(n.a_peer).unwrap();
    let b = n.b.snapshot_peer(n.b_peer).unwrap();
    assert_eq!(a.tx_bytes, 148 + 160);
    assert_eq!(a.rx_bytes, 92);
    assert_eq!(b.rx_bytes, 148 + 160);
    assert_eq!(b.tx_bytes, 92);
}

#[test]
fn ecn_crosses_the_tunnel_as_the_kernel_marks_it() {
    let mut n = Net::new();
    n.a_sends(10);
    let send = |n: &mut Net, inner_ecn: u8| {
        n.ecn_to_b.clear();
        n.b_tun.clear();
        let mut p = packet(A_INNER, B_INNER, 10);
        p[1] = 0xb8 | inner_ecn;
        n.a.handle_tun_packet(n.now, &p);
        n.pump();
        assert_eq!(n.b_tun.len(), 1);
        (n.ecn_to_b[0], n.b_tun[0][1] & ecn::MASK)
    };
    assert_eq!(send(&mut n, ecn::ECT_0), (ecn::ECT_0, ecn::ECT_0));
    assert_eq!(send(&mut n, ecn::ECT_1), (ecn::ECT_1, ecn::ECT_1));
    assert_eq!(send(&mut n, ecn::CE), (ecn::ECT_0, ecn::CE), "CE is sent as ECT(0)");
    assert_eq!(send(&mut n, ecn::NOT_ECT), (ecn::NOT_ECT, ecn::NOT_ECT));
    n.congested = true;
    assert_eq!(
        send(&mut n, ecn::ECT_0).1,
        ecn::CE,
        "congestion on the path reaches the inner packet"
    );
    assert_eq!(send(&mut n, ecn::NOT_ECT).1, ecn::NOT_ECT, "not ECN-capable: left as it is");
}

#[test]
fn replayed_and_tampered_datagrams_are_dropped() {
    let mut n = Net::new();
    n.a_sends(10);
    let (_, data) = n.wire.iter().rev().find(|(d, p)| *d && p[0] == 4).unwrap().clone();
    assert_eq!(n.deliver_to_b(data.clone()), Received::Nothing);
    assert_eq!(n.b.drops()[&DropReason::Replayed], 1);
    let mut forged = data;
    forged[20] ^= 1;
    forged[8] = 99; // a fresh counter: must fail authentication, not replay
    assert_eq!(n.deliver_to_b(forged), Received::Nothing);
    assert_eq!(n.b.drops()[&DropReason::Forged], 1);
    assert_eq!(n.b_tun.len(), 1);
    let peer_drops = n.b.peer_drops(n.b_peer).unwrap();
    assert_eq!((peer_drops[&DropReason::Replayed], peer_drops[&DropReason::Forged]), (1, 1));
}

#[test]
fn inner_source_outside_allowed_ips_is_dropped() {
    let mut n = Net::new();
    n.a.add_allowed_ip(n.a_peer, "10.9.0.0/16".parse().unwrap());
    n.a.handle_tun_packet(n.now, &packet([10, 9, 9, 9], B_INNER, 10));
    n.pump();
    // a sends it (a routes by destination), b refuses it (source not b's peer's)
    assert!(n.b_tun.is_empty());
    assert_eq!(n.b.drops()[&DropReason::SourceNotAllowed], 1);
}

#[test]
fn packet_without_a_peer_gets_icmp_host_unreachable() {
    let mut n = Net::new();
    n.a.set_icmp_sources(Some(Ipv4Addr::new(10, 0, 0, 1)), None);
    n.a.handle_tun_packet(n.now, &packet(A_INNER, [10, 7, 7, 7], 10));
    n.pump();
    assert_eq!(n.a_tun.len(), 1);
    let icmp = &n.a_tun[0];
    assert_eq!(icmp[9], 1, "ICMP");
    assert_eq!(&icmp[20..22], &[3, 1], "host unreachable");
    assert!(n.wire.is_empty());
}

#[test]
fn passive_keepalive_ten_seconds_after_receiving_data() {
    let mut n = Net::new();
    n.a_sends(10);
    let before = n.wire.len();
    n.advance(Duration::from_millis(9_900));
    assert_eq!(n.wire.len(), before, "nothing yet");
    n.advance(Duration::from_millis(200));
    let last = &n.wire.last().unwrap();
    assert!(!last.0 && last.1.len() == 32, "b sent a keepalive back");
}

#[test]
fn unanswered_data_starts_a_new_handshake_after_fifteen_seconds() {
    let mut n = Net::new();
    n.a_sends(10);
    n.cut = true;
    n.a_sends(10);
    let before = n.types_on_wire(true).iter().filter(|&&t| t == 1).count();
    n.advance(Duration::from_secs(15) + Duration::from_millis(340));
    let after = n.types_on_wire(true).iter().filter(|&&t| t == 1).count();
    assert_eq!(after, before + 1);
}

#[test]
fn handshake_retries_every_five_seconds_then_gives_up_and_drops_staged_packets() {
    let mut n = Net::new();
    n.cut = true;
    n.a_sends(10);
    n.advance(Duration::from_secs(200));
    let initiations = n.types_on_wire(true).iter().filter(|&&t| t == 1).count();
    assert_eq!(initiations, 20, "1 + MAX_TIMER_HANDSHAKES + 1 retries");
    assert!(n.a.peer(n.a_peer).unwrap().staged.is_empty());
    // after giving up nothing more is sent until new traffic
    let before = n.wire.len();
    n.advance(Duration::from_secs(100));
    assert_eq!(n.wire.len(), before);
}

#[test]
fn initiator_rekeys_after_rekey_after_time_when_sending() {
    let mut n = Net::new();
    n.a_sends(10);
    let first = n.a_current();
    n.advance(Duration::from_secs(119));
    n.a_sends(10);
    assert_eq!(n.a_current(), first);
    n.advance(Duration::from_secs(2));
    n.a_sends(10);
    assert_ne!(n.a_current(), first, "a new session after 120 s");
    let a = n.a.peer(n.a_peer).unwrap();
    assert_eq!(a.keypairs.previous.as_ref().map(|k| k.local_index), first);
    assert_eq!(n.b_tun.len(), 3);
}

#[test]
fn responder_does_not_rekey_on_time_but_stops_at_reject_after_time() {
    let mut n = Net::new();
    n.a_sends(10);
    let b_first = n.b_current();
    n.cut = true;
    n.advance(Duration::from_secs(170));
    n.b.handle_tun_packet(n.now, &packet(B_INNER, A_INNER, 10));
    n.pump();
    assert!(!n.types_on_wire(false).contains(&1), "responder does not rekey by time");
    n.advance(Duration::from_secs(11));
    n.b.handle_tun_packet(n.now, &packet(B_INNER, A_INNER, 10));
    n.pump();
    assert!(n.types_on_wire(false).contains(&1), "expired keypair: new handshake");
    assert_eq!(n.b_current(), b_first, "kept, but no longer used for sending");
}

#[test]
fn initiator_rekeys_at_the_last_minute_when_only_receiving() {
    let mut n = Net::new();
    n.a_sends(10);
    let first = n.a_current();
    n.advance(Duration::from_secs(160));
    n.b_sends(10);
    assert_eq!(n.a_current(), first);
    n.advance(Duration::from_secs(6));
    n.b_sends(10); // 166 s > 180 - 10 - 5
    assert_ne!(n.a_current(), first);
}

#[test]
fn key_material_is_zeroed_after_three_reject_times() {
    let mut n = Net::new();
    n.a_sends(10);
    n.advance(Duration::from_secs(541));
    assert!(n.a.peer(n.a_peer).unwrap().keypairs.iter().next().is_none());
    assert!(n.b.peer(n.b_peer).unwrap().keypairs.iter().next().is_none());
}

#[test]
fn persistent_keepalive_keeps_flowing() {
    let mut n = Net::with(DeviceOptions::default(), 25);
    let count = |n: &Net| n.wire.iter().filter(|(d, p)| *d && p.len() == 32).count();
    let start = count(&n);
    n.advance(Duration::from_secs(100));
    assert_eq!(count(&n) - start, 4);
}

#[test]
fn cookie_exchange_under_load() {
    let mut n = Net::new();
    n.b_backlog = MAX_QUEUED_INCOMING_HANDSHAKES / 8;
    n.a.handle_tun_packet(n.now, &packet(A_INNER, B_INNER, 10));
    n.pump();
    assert_eq!(n.types_on_wire(false), vec![3], "b answers with a cookie reply only");
    assert!(n.b_tun.is_empty());
    // a retries after REKEY_TIMEOUT with a MAC2 made from the cookie: b accepts
    n.advance(Duration::from_secs(6));
    assert_eq!(n.types_on_wire(false), vec![3, 2]);
    assert_eq!(n.b_tun.len(), 1);
    let (a, b) = (n.a.handshake_counts(), n.b.handshake_counts());
    assert_eq!((a.initiations_sent, a.cookie_replies_received, a.responses_received), (2, 1, 1));
    assert_eq!((b.initiations_received, b.cookie_replies_sent, b.responses_sent), (1, 1, 1));
    assert_eq!((a.completed, b.completed), (1, 1));
}

#[test]
fn roaming_follows_authenticated_packets_only() {
    let mut n = Net::new();
    n.a_sends(10);
    n.b_sees_a_from = sa("198.51.100.7:40000");
    n.a_sends(10);
    let b = n.b.snapshot_peer(n.b_peer).unwrap();
    assert_eq!(b.endpoint, Some(sa("198.51.100.7:40000")));
    // a forged packet from elsewhere does not move it
    n.b_sees_a_from = sa("203.0.113.9:1");
    let mut junk = vec![4, 0, 0, 0];
    junk.extend_from_slice(
        &n.b.peer(n.b_peer).unwrap().keypairs.current.as_ref().unwrap().local_index.to_le_bytes(),
    );
    junk.extend_from_slice(&[0u8; 40]);
    n.deliver_to_b(junk);
    assert_eq!(n.b.snapshot_peer(n.b_peer).unwrap().endpoint, Some(sa("198.51.100.7:40000")));
}

#[test]
fn private_key_change_forces_a_new_handshake() {
    let mut n = Net::new();
    n.a_sends(10);
    let first = n.a_current();
    // b learns a's new public key; a switches keys
    n.b.remove_peer(n.b_peer);
    n.a.set_private_key(Some(key(9)));
    let id = n.b.upsert_peer(public(key(9)), false).unwrap().unwrap();
    n.b.add_allowed_ip(id, "10.0.0.1/32".parse().unwrap());
    n.b_peer = id;
    n.a_sends(10);
    assert_ne!(n.a_current(), first);
    assert_eq!(n.b_tun.len(), 2);
}

#[test]
fn peers_with_low_order_public_keys_are_never_sent_anything() {
    let mut n = Net::new();
    let id = n.a.upsert_peer([0u8; 32], false).unwrap().unwrap();
    n.a.add_allowed_ip(id, "10.5.0.0/16".parse().unwrap());
    n.a.set_endpoint(id, sa("192.0.2.50:51820"));
    n.a.handle_tun_packet(n.now, &packet(A_INNER, [10, 5, 0, 1], 10));
    n.advance(Duration::from_secs(30));
    assert!(n.wire.is_empty(), "nothing at all was sent");
}

#[test]
fn our_own_public_key_is_ignored_as_a_peer() {
    let mut n = Net::new();
    assert_eq!(n.a.upsert_peer(public(key(1)), false).unwrap(), None);
}

#[test]
fn downing_the_interface_clears_sessions_and_stops_timers() {
    let mut n = Net::new();
    n.a_sends(10);
    n.a.set_up(n.now, false);
    assert!(n.a_current().is_none());
    let before = n.types_on_wire(true).len();
    n.advance(Duration::from_secs(600));
    assert_eq!(n.types_on_wire(true).len(), before, "no timer of a fires while down");
    let refused = n.a.drops().get(&DropReason::NotRunning).copied().unwrap_or(0);
    n.a.handle_tun_packet(n.now, &packet(A_INNER, B_INNER, 10));
    assert_eq!(n.a.drops()[&DropReason::NotRunning], refused + 1);
    assert!(n.a.poll_transmit().is_none());
}

#[test]
fn staged_queue_is_bounded() {
    let mut n = Net::new();
    n.cut = true;
    for _ in 0..200 {
        n.a.handle_tun_packet(n.now, &packet(A_INNER, B_INNER, 1));
    }
    let staged = n.a.peer(n.a_peer).unwrap().staged.len();
    assert_eq!(staged, gateway_common::wire::MAX_STAGED_PACKETS + 1);
}

#[test]
fn scaled_timers_rekey_quickly_for_interop_tests() {
    let options = DeviceOptions { timer_scale: TimerScale { divisor: 60 }, ..Default::default() };
    let mut n = Net::with(options, 0);
    n.a_sends(10);
    let first = n.a_current();
    n.advance(Duration::from_secs(3));
    n.a_sends(10);
    assert_ne!(n.a_current(), first, "REKEY_AFTER_TIME / 60 = 2 s");
}

#[test]
fn garbage_never_panics() {
    let mut n = Net::new();
    n.a_sends(10);
    let mut rng = TestRng(77);
    for len in 0..400 {
        for _ in 0..8 {
            let mut d = vec![0u8; len];
            rng.fill_bytes(&mut d);
            if len >= 4 {
                d[0] = (rng.next_u32() % 6) as u8;
                d[1] = 0;
                d[2] = 0;
                d[3] = 0;
            }
            n.b.handle_datagram(n.now, Endpoint::new(sa(A_ADDR)), 0, &mut d, 0);
            let mut t = d.clone();
            if !t.is_empty() {
                t[0] = 0x45;
            }
            n.b.handle_tun_packet(n.now, &t);
        }
    }
    assert_eq!(n.b_tun.len(), 1, "only the one genuine packet was ever delivered");
}

#[test]
fn sessions_on_the_heap_are_not_in_the_dataplane_view() {
    let mut n = Net::new();
    n.a_sends(10);
    let view = n.a.dataplane_view(n.a_peer).unwrap();
    assert!(n.a_current().is_some());
    assert!(view.sessions.is_empty(), "no slot: nothing a data plane could publish");
    assert_eq!(view.tx, None);
    assert_eq!(view.prefixes, ["10.0.0.2/32".parse::<ipnet::IpNet>().unwrap()]);
    assert_eq!(view.endpoint, Some(Endpoint::new(sa(B_ADDR))));
}

#[test]
fn the_dataplane_view_stops_sending_at_once_on_a_key_change() {
    use crate::wg::projection::{SessionRole, SessionUse};
    let a = DeviceOptions {
        session_memory: Arc::new(crate::dataplane::HeapRegion::pool(4)),
        ..Default::default()
    };
    let mut n = Net::with_each(a, DeviceOptions::default(), 0);
    n.a_sends(10);
    let view = n.a.dataplane_view(n.a_peer).unwrap();
    let [current] = view.sessions[..] else { panic!("one session: {view:?}") };
    assert_eq!(Some(current.local_index), n.a_current());
    assert_eq!((current.role, current.slot, current.initiator), (SessionRole::Current, 0, true));
    assert_eq!(current.usable, SessionUse { receive: true, send: true });
    assert_eq!(view.tx, Some(0));
    n.a.set_private_key(Some(key(9)));
    let view = n.a.dataplane_view(n.a_peer).unwrap();
    assert_eq!(view.sessions[0].usable, SessionUse { receive: true, send: false });
    assert_eq!(view.tx, None, "the next packet goes to the core, which handshakes");
}
