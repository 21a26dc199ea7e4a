//! What the `ebpf_*` tests and the per-program benchmark share: root check, frames built and
//! parsed byte by byte, the WireGuard AEAD from the `chacha20poly1305` crate, network
//! namespaces, a data plane with test peers. These are test helpers: they panic, with a message
//! saying what failed, instead of returning errors.

pub mod bench;
pub mod entry;
pub mod frames;
pub mod lab;
pub mod netns;
pub mod transport;
pub mod verifier_log;

use std::time::Instant;

use gateway::dataplane::{
    Capacities, Dataplane, PeerEndpoint, PeerSlot, SessionEntry, SessionSlot, SessionState,
    SessionUse, TunnelConfig,
};
use gateway::wg::session_memory::{CounterCell, SessionMemory};

/// These tests load eBPF programs and make namespaces: they need root.
pub fn require_root() {
    // SAFETY: a plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "the eBPF tests need root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for namespaces): \
             run `sudo -E cargo test -p gateway-tests --test <name>`"
        );
    }
}

pub fn load() -> Dataplane {
    require_root();
    let caps = Capacities { sessions: 64, peers: 64, allowed_ips: 1024 };
    Dataplane::load(caps).unwrap_or_else(|e| panic!("loading the data plane: {e}"))
}

pub const LISTEN_PORT: u16 = 51820;

/// One side of a session, as a test peer sees it.
#[derive(Clone, Copy)]
pub struct Keys {
    /// What the gateway decrypts with (the test encrypts with it).
    pub gateway_recv: [u8; 32],
    /// What the gateway encrypts with (the test decrypts with it).
    pub gateway_send: [u8; 32],
    /// The gateway's receiver index (the test's packets carry it).
    pub gateway_index: u32,
    /// The test peer's receiver index (the gateway's packets carry it).
    pub peer_index: u32,
}

impl Keys {
    pub fn new(seed: u8) -> Keys {
        let mut gateway_recv = [0u8; 32];
        let mut gateway_send = [0u8; 32];
        for i in 0..32 {
            gateway_recv[i] = seed.wrapping_mul(31).wrapping_add((i as u8).wrapping_mul(7));
            gateway_send[i] =
                seed.wrapping_mul(17).wrapping_add((i as u8).wrapping_mul(13)).wrapping_add(1);
        }
        Keys {
            gateway_recv,
            gateway_send,
            gateway_index: 0x1000_0000 + seed as u32,
            peer_index: 0x2000_0000 + seed as u32,
        }
    }
}

/// A peer with one session, usable both ways.
pub struct TestPeer {
    pub slot: PeerSlot,
    pub session: SessionSlot,
    pub keys: Keys,
    /// Holds the session's slot (and its shared counters) for as long as the test needs it.
    pub counters: CounterCell,
}

pub fn add_peer(
    dp: &mut Dataplane,
    keys: Keys,
    allowed: &[&str],
    endpoint: Option<PeerEndpoint>,
    created: Instant,
) -> TestPeer {
    let slot = dp.add_peer().unwrap();
    let nets: Vec<ipnet::IpNet> = allowed.iter().map(|s| s.parse().unwrap()).collect();
    dp.set_allowed_ips(slot, &nets).unwrap();
    dp.set_peer_endpoint(slot, endpoint.as_ref()).unwrap();
    let counters = dp.session_pool().allocate().expect("a free session slot");
    let session = SessionSlot(counters.slot().expect("a mapped slot"));
    dp.publish_session(
        session,
        &SessionEntry {
            peer: slot,
            local_index: keys.gateway_index,
            remote_index: keys.peer_index,
            created,
            send_key: keys.gateway_send,
            recv_key: keys.gateway_recv,
        },
        SessionState { usable: SessionUse { receive: true, send: true }, initiator: false },
    )
    .unwrap();
    dp.set_peer_tx_session(slot, Some(session)).unwrap();
    TestPeer { slot, session, keys, counters }
}

pub fn config(tun_ifindex: u32, tun_mtu: u32) -> TunnelConfig {
    TunnelConfig {
        tun_ifindex,
        tun_mtu,
        listen_port: LISTEN_PORT,
        hub_forward: false,
        lan_redirect: false,
        fwmark: 0,
        entry: false,
        reply_to: false,
    }
}

/// A deterministic byte stream for payloads.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
