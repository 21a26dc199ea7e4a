//! The tcp and udp forwards as the programs find them: `ENTRY_PORTS[transport][port]` leads to
//! a slot of `ENTRY_FORWARDS`, and the slots of one port's forwards on different listen
//! addresses are chained through `EntryForward::next`.
//!
//! A slot holds one *piece*: a run of ports that one forward takes and on which the set of
//! forwards sharing them does not change. Every forward is cut at the first port and one past
//! the last port of every other forward of its transport (only forwards on other listen
//! addresses can overlap it, the table refuses the rest), so any two pieces that share a port
//! have the same ports: one chain serves every port of its pieces, and the program never
//! follows a link to a forward that does not take the port. Forwards that overlap nothing are
//! one piece each.
//!
//! Changes are written as the difference from what was published, in an order that never
//! lets a program reach a slot being written or cleared:
//!
//! 1. new pieces' slots, whole (their `next` leads only to pieces that stay or are new);
//! 2. the `next` of pieces that stay, where their chain changed;
//! 3. `ENTRY_PORTS`, where a port's first piece changed;
//! 4. the slots of pieces that went, cleared, and freed for a later change (first freed,
//!    first reused).
//!
//! Slots are a fixed pool (`MAX_ENTRY_FORWARDS`). When a change needs more fresh slots than
//! are free while its old pieces still hold theirs, it is made in two steps: first what
//! stays (old pieces retired), then what comes.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::IpAddr;

use gateway_common::maps::{
    AF_INET, AF_INET6, AF_NONE, ENTRY_PORTS_LEN, ENTRY_PORTS_PER_TRANSPORT, EntryForward,
    MAX_ENTRY_CHAIN, MAX_ENTRY_FORWARDS,
};

use super::map_ops::ForwardOps;
use crate::dataplane::{EntryTransport, ForwardSlot, Result};
use crate::entry::forward::{Forward, Protocol};
use crate::entry::table::ForwardTable;

/// Ports `first..=last` of one forward, and where they go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Piece {
    pub transport: EntryTransport,
    pub first: u16,
    pub last: u16,
    /// None: every local address.
    pub listen: Option<IpAddr>,
    pub to: IpAddr,
    /// The backend port of `first`; port `p` goes to `to_port + (p - first)`.
    pub to_port: u16,
}

impl Piece {
    /// The slot's content, leading on to `next`.
    pub fn entry(&self, next: Option<ForwardSlot>) -> EntryForward {
        let (family, to_addr) = family_and_bytes(self.to);
        let (listen_family, listen) = self.listen.map_or((AF_NONE, [0; 16]), family_and_bytes);
        EntryForward {
            family,
            listen_family,
            first_port: self.first,
            to_port: self.to_port,
            next: next.map_or(0, |slot| slot.0 + 1),
            to_addr,
            listen,
        }
    }
}

impl Piece {
    /// Whether the piece is one of `forward`'s. The table lets no two forwards of one
    /// transport and listen address overlap, so a piece is one forward's at most.
    pub fn is_of(&self, forward: &Forward) -> bool {
        let selector = forward.selector();
        let protocol = match self.transport {
            EntryTransport::Tcp => Protocol::Tcp,
            EntryTransport::Udp => Protocol::Udp,
        };
        let ports = selector.ports();
        selector.protocol() == protocol
            && selector.listen() == self.listen
            && ports.first() <= self.first
            && self.last <= ports.last()
    }
}

fn family_and_bytes(address: IpAddr) -> (u16, [u8; 16]) {
    let mut bytes = [0; 16];
    match address {
        IpAddr::V4(v4) => {
            bytes[..4].copy_from_slice(&v4.octets());
            (AF_INET, bytes)
        }
        IpAddr::V6(v6) => (AF_INET6, v6.octets()),
    }
}

/// Why the data plane cannot hold a table's tcp and udp forwards: one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// More forwards on different listen addresses take one port than a chain may hold.
    ChainTooLong { transport: EntryTransport, port: u16, forwards: usize },
    /// The forwards need more slots than `ENTRY_FORWARDS` has.
    TooManyPieces { pieces: usize },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::ChainTooLong { transport, port, forwards } => write!(
                f,
                "{forwards} forwards on different listen addresses would take {} port {port}; \
                 the data plane takes at most {MAX_ENTRY_CHAIN} per port",
                transport_name(*transport)
            ),
            PlanError::TooManyPieces { pieces } => write!(
                f,
                "the tcp and udp forwards would need {pieces} data plane entries; it holds \
                 {MAX_ENTRY_FORWARDS}"
            ),
        }
    }
}

impl std::error::Error for PlanError {}

fn transport_name(transport: EntryTransport) -> &'static str {
    match transport {
        EntryTransport::Tcp => "tcp",
        EntryTransport::Udp => "udp",
    }
}

/// The pieces a table's tcp and udp forwards are published as, in chain order: by transport
/// and ports, then by listen address. Pieces with the same transport and first port form
/// one chain (they have the same last port too).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardPlan {
    pieces: Vec<Piece>,
}

impl ForwardPlan {
    /// The plan for `table`, or why the data plane cannot hold it. tls and http forwards are
    /// the proxy's, not the programs'.
    pub fn of(table: &ForwardTable) -> std::result::Result<ForwardPlan, PlanError> {
        let mut pieces = Vec::new();
        for (transport, protocol) in
            [(EntryTransport::Tcp, Protocol::Tcp), (EntryTransport::Udp, Protocol::Udp)]
        {
            let forwards: Vec<&Forward> = table
                .forwards()
                .iter()
                .filter(|forward| forward.selector().protocol() == protocol)
                .collect();
            // u32: one past port 65535 is a boundary too.
            let boundaries: BTreeSet<u32> = forwards
                .iter()
                .flat_map(|forward| {
                    let ports = forward.selector().ports();
                    [u32::from(ports.first()), u32::from(ports.last()) + 1]
                })
                .collect();
            for forward in forwards {
                cut(forward, transport, &boundaries, &mut pieces);
            }
        }
        pieces.sort_by_key(|piece| {
            (piece.transport == EntryTransport::Udp, piece.first, piece.listen)
        });
        let plan = ForwardPlan { pieces };
        for chain in plan.chains() {
            if chain.len() > MAX_ENTRY_CHAIN as usize {
                let piece = chain[0];
                let (transport, port, forwards) = (piece.transport, piece.first, chain.len());
                return Err(PlanError::ChainTooLong { transport, port, forwards });
            }
        }
        if plan.pieces.len() > MAX_ENTRY_FORWARDS as usize {
            return Err(PlanError::TooManyPieces { pieces: plan.pieces.len() });
        }
        Ok(plan)
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// The pieces by chain, each in chain order.
    pub fn chains(&self) -> impl Iterator<Item = &[Piece]> {
        self.pieces
            .chunk_by(|one, other| (one.transport, one.first) == (other.transport, other.first))
    }

    /// The plan without the pieces `keep` refuses (chains close up over them).
    fn keeping(&self, keep: impl Fn(&Piece) -> bool) -> ForwardPlan {
        ForwardPlan { pieces: self.pieces.iter().filter(|piece| keep(piece)).copied().collect() }
    }
}

/// Cuts `forward` at every boundary inside its ports.
fn cut(
    forward: &Forward,
    transport: EntryTransport,
    boundaries: &BTreeSet<u32>,
    pieces: &mut Vec<Piece>,
) {
    let ports = forward.selector().ports();
    let (first, end) = (u32::from(ports.first()), u32::from(ports.last()) + 1);
    let mut starts = boundaries.range(first..end).peekable();
    while let Some(&start) = starts.next() {
        let next = starts.peek().map_or(end, |&&next| next);
        // Both within 1..=65535: they lie inside the forward's ports.
        let (piece_first, piece_last) = (start as u16, (next - 1) as u16);
        let to_port = forward.target_port(piece_first).unwrap_or(piece_first);
        pieces.push(Piece {
            transport,
            first: piece_first,
            last: piece_last,
            listen: forward.selector().listen(),
            to: forward.target().address(),
            to_port,
        });
    }
}

/// What was published: each piece's slot and the `next` written in it, and `ENTRY_PORTS`.
pub(super) struct Forwards {
    slots: HashMap<Piece, (ForwardSlot, Option<ForwardSlot>)>,
    /// slot + 1 (0: none) per `ENTRY_PORTS` index; empty while nothing was ever written.
    ports: Vec<u32>,
    free: VecDeque<u32>,
}

impl Default for Forwards {
    fn default() -> Self {
        Forwards {
            slots: HashMap::new(),
            ports: Vec::new(),
            free: (0..MAX_ENTRY_FORWARDS).collect(),
        }
    }
}

impl Forwards {
    /// Makes the maps hold `plan`: in two steps when the fresh slots it needs are not free
    /// until its old pieces are retired.
    pub(super) fn publish(&mut self, ops: &mut impl ForwardOps, plan: &ForwardPlan) -> Result<()> {
        let fresh = plan.pieces.iter().filter(|piece| !self.slots.contains_key(piece)).count();
        if fresh > self.free.len() {
            let staying = plan.keeping(|piece| self.slots.contains_key(piece));
            self.apply(ops, &staying)?;
        }
        self.apply(ops, plan)
    }

    /// The number of pieces published.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Each published piece and its slot.
    pub(super) fn slots(&self) -> impl Iterator<Item = (&Piece, ForwardSlot)> {
        self.slots.iter().map(|(piece, (slot, _))| (piece, *slot))
    }

    fn apply(&mut self, ops: &mut impl ForwardOps, plan: &ForwardPlan) -> Result<()> {
        let fresh: Vec<Piece> =
            plan.pieces.iter().filter(|piece| !self.slots.contains_key(piece)).copied().collect();
        if fresh.len() > self.free.len() {
            return Err(crate::dataplane::DataplaneError::Invalid(format!(
                "{} forward slots needed, {} free",
                fresh.len(),
                self.free.len()
            )));
        }
        let mut slot_of: HashMap<Piece, ForwardSlot> =
            self.slots.iter().map(|(piece, (slot, _))| (*piece, *slot)).collect();
        let mut unwritten: Vec<(Piece, ForwardSlot)> = Vec::new();
        for piece in &fresh {
            let slot = ForwardSlot(self.free.pop_front().expect("counted above"));
            slot_of.insert(*piece, slot);
            unwritten.push((*piece, slot));
        }
        let mut next_of: HashMap<Piece, Option<ForwardSlot>> = HashMap::new();
        for chain in plan.chains() {
            for (index, piece) in chain.iter().enumerate() {
                next_of.insert(*piece, chain.get(index + 1).map(|next| slot_of[next]));
            }
        }

        // 1. New pieces, whole: nothing leads to them yet.
        unwritten.reverse();
        while let Some((piece, slot)) = unwritten.pop() {
            let next = next_of[&piece];
            if let Err(e) = ops.set_entry_forward(slot, Some(&piece.entry(next))) {
                // Their slots were never written: free again, for the retry.
                self.free.push_front(slot.0);
                for (_, slot) in unwritten {
                    self.free.push_front(slot.0);
                }
                return Err(e);
            }
            self.slots.insert(piece, (slot, next));
        }
        // 2. Chains that changed around pieces that stay.
        for piece in &plan.pieces {
            let (slot, written) = self.slots[piece];
            let next = next_of[piece];
            if written != next {
                ops.set_entry_forward(slot, Some(&piece.entry(next)))?;
                self.slots.insert(*piece, (slot, next));
            }
        }
        // 3. The ports, to the first piece of their chain.
        let mut wanted = vec![0u32; ENTRY_PORTS_LEN as usize];
        for chain in plan.chains() {
            let head = chain[0];
            let value = slot_of[&head].0 + 1;
            let base = port_index(head.transport, 0);
            wanted[base + head.first as usize..=base + head.last as usize].fill(value);
        }
        self.write_ports(ops, &wanted)?;
        // 4. Pieces that went: nothing leads to them any more.
        let wanted_pieces: HashSet<&Piece> = plan.pieces.iter().collect();
        let mut gone: Vec<(Piece, ForwardSlot)> = self
            .slots
            .iter()
            .filter(|(piece, _)| !wanted_pieces.contains(piece))
            .map(|(piece, (slot, _))| (*piece, *slot))
            .collect();
        gone.sort_by_key(|(_, slot)| *slot);
        for (piece, slot) in gone {
            ops.set_entry_forward(slot, None)?;
            self.slots.remove(&piece);
            self.free.push_back(slot.0);
        }
        Ok(())
    }

    /// Writes the runs of ports whose value differs from what was published, one call per run
    /// of one value.
    fn write_ports(&mut self, ops: &mut impl ForwardOps, wanted: &[u32]) -> Result<()> {
        if self.ports.is_empty() {
            self.ports = vec![0; ENTRY_PORTS_LEN as usize];
        }
        for transport in [EntryTransport::Tcp, EntryTransport::Udp] {
            let base = port_index(transport, 0);
            let mut port: u32 = 1;
            while port < ENTRY_PORTS_PER_TRANSPORT {
                let index = base + port as usize;
                if self.ports[index] == wanted[index] {
                    port += 1;
                    continue;
                }
                let value = wanted[index];
                let mut last = port;
                while last + 1 < ENTRY_PORTS_PER_TRANSPORT {
                    let after = base + last as usize + 1;
                    if wanted[after] != value || self.ports[after] == value {
                        break;
                    }
                    last += 1;
                }
                let slot = value.checked_sub(1).map(ForwardSlot);
                ops.set_entry_ports(transport, port as u16, last as u16, slot)?;
                self.ports[index..=base + last as usize].fill(value);
                port = last + 1;
            }
        }
        Ok(())
    }
}

fn port_index(transport: EntryTransport, port: u16) -> usize {
    let base = match transport {
        EntryTransport::Tcp => gateway_common::maps::ENTRY_TRANSPORT_TCP,
        EntryTransport::Udp => gateway_common::maps::ENTRY_TRANSPORT_UDP,
    };
    (base * ENTRY_PORTS_PER_TRANSPORT) as usize + port as usize
}
