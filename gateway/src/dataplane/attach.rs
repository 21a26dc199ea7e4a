//! Attaching the programs to interfaces, and detaching them. XDP attaches through bpf_link
//! (driver mode first, then generic), TC through TCX links (Linux ≥ 6.6, older than what
//! the data plane needs anyway): no clsact qdisc is created, and dropping a link detaches
//! its program, so dropping the `Dataplane` leaves nothing attached and nothing pinned.

use std::collections::HashMap;
use std::ffi::CString;
use std::fmt;

use aya::maps::{DevMapHash, HashMap as BpfHashMap, MapData};
use aya::programs::{
    Link as _, LinkOrder, TcAttachType, XdpMode,
    tc::{SchedClassifierLink, TcAttachOptions},
    xdp::XdpLink,
};
use gateway_common::maps::UNDERLAY_GENERIC_CHECKSUM;
use tracing::{info, warn};

use super::error::{DataplaneError, Result};
use super::loader::Programs;
use super::netdev::{self, TxChecksum};
use super::programs::Program;

/// An interface by name or index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interface {
    Name(String),
    Index(u32),
}

impl From<&str> for Interface {
    fn from(s: &str) -> Self {
        Interface::Name(s.to_string())
    }
}

impl From<String> for Interface {
    fn from(s: String) -> Self {
        Interface::Name(s)
    }
}

impl From<u32> for Interface {
    fn from(i: u32) -> Self {
        Interface::Index(i)
    }
}

impl Interface {
    /// (index, name) of an existing interface.
    pub fn resolve(&self) -> Result<(u32, String)> {
        match self {
            Interface::Name(name) => {
                let c = CString::new(name.as_str())
                    .map_err(|_| DataplaneError::UnknownInterface(name.clone()))?;
                // SAFETY: a valid C string.
                let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
                if index == 0 {
                    return Err(DataplaneError::UnknownInterface(name.clone()));
                }
                Ok((index, name.clone()))
            }
            Interface::Index(index) => {
                let mut buf = [0u8; libc::IF_NAMESIZE];
                // SAFETY: buf holds IF_NAMESIZE bytes as if_indextoname requires.
                let p = unsafe { libc::if_indextoname(*index, buf.as_mut_ptr() as *mut _) };
                if p.is_null() {
                    return Err(DataplaneError::UnknownInterface(format!("index {index}")));
                }
                let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                Ok((*index, String::from_utf8_lossy(&buf[..end]).into_owned()))
            }
        }
    }
}

/// Where to start when attaching the receive path to an underlay; each mode falls back to
/// the next (native XDP → generic XDP → TC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachPreference {
    #[default]
    Native,
    Generic,
    Tc,
}

/// What the TUN's send program gets of the TCP this host sends in bulk. A program seals one
/// packet at a time without SIMD; the daemon seals GSO batches with SIMD and sends each in
/// one call, which is faster for bulk on CPUs that have it (see docs/BENCHMARKS.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TunnelSends {
    /// GSO batches (bulk sends) go to the daemon whole; single segments (ACKs, interactive
    /// traffic, small writes) and everything not TCP go through the program.
    #[default]
    Batched,
    /// Every segment goes through the program: the TUN's `gso_max_segs` is 1 while attached.
    PerSegment,
}

impl fmt::Display for TunnelSends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TunnelSends::Batched => "GSO batches to the daemon",
            TunnelSends::PerSegment => "every TCP segment",
        })
    }
}

/// How the receive path ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// XDP in the driver (plus the TC handoff program).
    NativeXdp,
    /// XDP on skbs, for drivers without XDP support (plus the TC handoff program).
    GenericXdp,
    /// The TC ingress receive program only.
    Tc,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::NativeXdp => "native XDP",
            AttachMode::GenericXdp => "generic XDP",
            AttachMode::Tc => "TC ingress",
        })
    }
}

enum AttachedLink {
    Xdp(XdpLink),
    Tc(SchedClassifierLink),
}

struct Attached {
    ifindex: u32,
    program: Program,
    link: AttachedLink,
}

/// What is attached where, the LAN interfaces entered in `REDIRECT_IFACES`, the underlays'
/// checksum offload in `UNDERLAYS`, and the tunnel's GSO limit as it was before the send
/// program went on it.
pub(super) struct Attachments {
    links: Vec<Attached>,
    redirect_ifaces: DevMapHash<MapData>,
    underlays: BpfHashMap<MapData, u32, u32>,
    lan: Vec<u32>,
    tunnel_gso: Option<TunnelGso>,
    /// How each underlay completes checksums, as last told to the send program.
    underlay_checksums: HashMap<u32, TxChecksum>,
}

struct TunnelGso {
    ifindex: u32,
    previous: u32,
}

impl Attachments {
    pub(super) fn new(
        redirect_ifaces: DevMapHash<MapData>,
        underlays: BpfHashMap<MapData, u32, u32>,
    ) -> Self {
        Attachments {
            links: Vec::new(),
            redirect_ifaces,
            underlays,
            lan: Vec::new(),
            tunnel_gso: None,
            underlay_checksums: HashMap::new(),
        }
    }

    fn attach_xdp(
        &mut self,
        programs: &mut Programs,
        program: Program,
        ifindex: u32,
        mode: XdpMode,
    ) -> Result<()> {
        let p = programs.xdp_mut(program)?;
        let id = p.attach_to_if_index(ifindex, mode).map_err(|e| {
            DataplaneError::kernel_chain(format!("attaching {}", program.name()), &e)
        })?;
        let link = p.take_link(id).map_err(|e| {
            DataplaneError::kernel_chain(format!("attaching {}", program.name()), &e)
        })?;
        self.links.push(Attached { ifindex, program, link: AttachedLink::Xdp(link) });
        Ok(())
    }

    /// Attaches a TC program through TCX, after the interface's other programs, or before
    /// them with `first`.
    fn attach_tc(
        &mut self,
        programs: &mut Programs,
        program: Program,
        name: &str,
        ifindex: u32,
        ty: TcAttachType,
    ) -> Result<()> {
        self.attach_tc_ordered(programs, program, name, ifindex, ty, LinkOrder::default())
    }

    fn attach_tc_ordered(
        &mut self,
        programs: &mut Programs,
        program: Program,
        name: &str,
        ifindex: u32,
        ty: TcAttachType,
        order: LinkOrder,
    ) -> Result<()> {
        let p = programs.tc_mut(program)?;
        let what = || format!("attaching {} to {name} (TCX)", program.name());
        let id = p
            .attach_with_options(name, ty, TcAttachOptions::TcxOrder(order))
            .map_err(|e| DataplaneError::kernel_chain(what(), &e))?;
        let link = p.take_link(id).map_err(|e| DataplaneError::kernel_chain(what(), &e))?;
        self.links.push(Attached { ifindex, program, link: AttachedLink::Tc(link) });
        Ok(())
    }

    /// Attaches the receive path to an underlay interface: XDP in the driver, else generic
    /// XDP, else the TC receive program, starting at `prefer`. With XDP, the TC handoff
    /// program goes on the interface's ingress too. Logs one line naming the mode.
    pub(super) fn attach_underlay(
        &mut self,
        programs: &mut Programs,
        iface: impl Into<Interface>,
        prefer: AttachPreference,
    ) -> Result<AttachMode> {
        let (ifindex, name) = iface.into().resolve()?;
        if !programs.receives() {
            return Err(DataplaneError::Unsupported(format!(
                "no receive program loaded: {name} receives in userspace"
            )));
        }
        let mut failures = Vec::new();
        // XDP needs both halves: the receive program, and the TC program that hands its
        // decrypted frames to the tunnel interface.
        let xdp = programs.is_loaded(Program::RxXdp) && programs.is_loaded(Program::RxHandoff);
        let tries: &[(AttachMode, XdpMode)] = match prefer {
            _ if !xdp => &[],
            AttachPreference::Native => {
                &[(AttachMode::NativeXdp, XdpMode::Driver), (AttachMode::GenericXdp, XdpMode::Skb)]
            }
            AttachPreference::Generic => &[(AttachMode::GenericXdp, XdpMode::Skb)],
            AttachPreference::Tc => &[],
        };
        for &(mode, xdp_mode) in tries {
            match self.attach_xdp(programs, Program::RxXdp, ifindex, xdp_mode) {
                Ok(()) => {
                    if let Err(e) = self.attach_tc(
                        programs,
                        Program::RxHandoff,
                        &name,
                        ifindex,
                        TcAttachType::Ingress,
                    ) {
                        self.detach_interface(ifindex)?;
                        failures.push(format!("{mode}: {e}"));
                        continue;
                    }
                    info!("data plane: receiving on {name} with {mode}");
                    self.describe_underlay(ifindex, &name);
                    return Ok(mode);
                }
                Err(e) => failures.push(format!("{mode}: {e}")),
            }
        }
        match self.attach_tc(programs, Program::RxTc, &name, ifindex, TcAttachType::Ingress) {
            Ok(()) => {
                let why = if failures.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", failures.join("; "))
                };
                info!("data plane: receiving on {name} with TC ingress{why}");
                self.describe_underlay(ifindex, &name);
                Ok(AttachMode::Tc)
            }
            Err(e) => {
                failures.push(format!("TC ingress: {e}"));
                Err(DataplaneError::kernel(
                    format!("attaching to underlay {name}"),
                    failures.join("; "),
                ))
            }
        }
    }

    /// Reads how an underlay completes checksums (ethtool) and tells the send program, with
    /// one log line when TCP this host sends cannot leave through it from the program.
    fn describe_underlay(&mut self, ifindex: u32, name: &str) {
        if !self.underlay_checksums.contains_key(&ifindex) {
            note_veth(name);
        }
        let checksum = netdev::tx_checksum(name).unwrap_or_else(|e| {
            warn!("data plane: reading {name}'s checksum offload: {e}");
            TxChecksum::ByProtocol
        });
        if self.underlay_checksums.get(&ifindex) == Some(&checksum) {
            return;
        }
        if !checksum.follows_offsets() {
            info!(
                "data plane: {name} offloads checksums by protocol (tx-checksum-ipv4/ipv6): TCP \
                 this host sends through it takes the userspace path"
            );
        }
        if let Err(e) = self.set_underlay_checksum(ifindex, checksum) {
            warn!("data plane: {name}: {e}");
        }
    }

    /// How an attached underlay completes checksums, as the send program knows it.
    pub(super) fn underlay_checksum(&self, ifindex: u32) -> Option<TxChecksum> {
        self.underlay_checksums.get(&ifindex).copied()
    }

    /// Reads an attached underlay's checksum offload again (after a link change).
    pub(super) fn refresh_underlay(&mut self, ifindex: u32) {
        if let Ok((_, name)) = Interface::Index(ifindex).resolve() {
            self.describe_underlay(ifindex, &name);
        }
    }

    /// Tells the send program how an underlay completes the checksums the stack leaves to
    /// it (`UNDERLAYS`): whether TCP this host originates can leave through it from the
    /// program (see gateway-ebpf's `partial`). `attach_underlay` does this by itself.
    pub(super) fn set_underlay_checksum(
        &mut self,
        ifindex: u32,
        checksum: TxChecksum,
    ) -> Result<()> {
        let flags = if checksum.follows_offsets() { UNDERLAY_GENERIC_CHECKSUM } else { 0 };
        self.underlays
            .insert(ifindex, flags, 0)
            .map_err(|e| DataplaneError::kernel_chain("updating UNDERLAYS", &e))?;
        self.underlay_checksums.insert(ifindex, checksum);
        Ok(())
    }

    /// Puts the send program on the TUN's egress. With `TunnelSends::PerSegment` the stack
    /// hands the TUN one segment per skb (`gso_max_segs` 1, restored on detach), so the
    /// program sends all of this host's TCP; with `Batched` the GSO batches of bulk sends go
    /// to the daemon whole.
    pub(super) fn attach_tunnel(
        &mut self,
        programs: &mut Programs,
        iface: impl Into<Interface>,
        sends: TunnelSends,
    ) -> Result<()> {
        let (ifindex, name) = iface.into().resolve()?;
        if sends == TunnelSends::PerSegment {
            let what = || format!("limiting GSO on {name}");
            let previous =
                netdev::gso_max_segs(ifindex).map_err(|e| DataplaneError::kernel(what(), e))?;
            netdev::set_gso_max_segs(ifindex, 1).map_err(|e| DataplaneError::kernel(what(), e))?;
            self.tunnel_gso = Some(TunnelGso { ifindex, previous });
        }
        if let Err(e) =
            self.attach_tc(programs, Program::TxTun, &name, ifindex, TcAttachType::Egress)
        {
            self.detach_interface(ifindex)?;
            return Err(e);
        }
        info!("data plane: sending from {name} with TC egress ({sends})");
        Ok(())
    }

    /// Puts the entry point's proxy program on the TUN's egress, before every other program
    /// there whenever it is attached (the send program must see the rewritten source). It
    /// continues to the next program whatever it does, so it works alone too: without the
    /// send program its packets reach the daemon through the TUN fd. Only an entry point
    /// needs it; elsewhere it would cost every packet into the tunnel one more program.
    pub(super) fn attach_proxy_steering(
        &mut self,
        programs: &mut Programs,
        iface: impl Into<Interface>,
    ) -> Result<()> {
        let (ifindex, name) = iface.into().resolve()?;
        self.attach_tc_ordered(
            programs,
            Program::EntryProxy,
            &name,
            ifindex,
            TcAttachType::Egress,
            LinkOrder::first(),
        )?;
        info!("data plane: proxied connections on {name} carry their clients' addresses");
        Ok(())
    }

    /// Puts the masquerade programs on the interface peers' traffic leaves by: `masq_out` on
    /// its egress, `masq_in` on its ingress before every other program there (the receive
    /// handoff ends the chain for the frames it does not redirect).
    pub(super) fn attach_masquerade(
        &mut self,
        programs: &mut Programs,
        iface: impl Into<Interface>,
    ) -> Result<()> {
        let (ifindex, name) = iface.into().resolve()?;
        self.attach_tc(programs, Program::MasqOut, &name, ifindex, TcAttachType::Egress)?;
        if let Err(e) = self.attach_tc_ordered(
            programs,
            Program::MasqIn,
            &name,
            ifindex,
            TcAttachType::Ingress,
            LinkOrder::first(),
        ) {
            self.detach_program(ifindex, Program::MasqOut);
            return Err(e);
        }
        info!("data plane: masquerading out of {name} with TC egress and ingress");
        Ok(())
    }

    /// Detaches one program from one interface (nothing if it is not there).
    fn detach_program(&mut self, ifindex: u32, program: Program) {
        for error in self.detach_links(|a| a.ifindex == ifindex && a.program == program) {
            warn!("data plane: {error}");
        }
    }

    /// Detaches the links `which` selects and forgets them; the failures, one each.
    fn detach_links(&mut self, which: impl Fn(&Attached) -> bool) -> Vec<DataplaneError> {
        let (gone, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.links).into_iter().partition(|a| which(a));
        self.links = kept;
        let mut errors = Vec::new();
        for a in gone {
            let r = match a.link {
                AttachedLink::Xdp(l) => l.detach(),
                AttachedLink::Tc(l) => l.detach(),
            };
            if let Err(e) = r {
                errors.push(DataplaneError::kernel(format!("detaching {}", a.program.name()), e));
            }
        }
        errors
    }

    /// Puts the LAN send program on a LAN interface (driver XDP, else generic) and lets the
    /// receive path redirect decrypted packets out of it.
    pub(super) fn attach_lan(
        &mut self,
        programs: &mut Programs,
        iface: impl Into<Interface>,
    ) -> Result<AttachMode> {
        let (ifindex, name) = iface.into().resolve()?;
        let mode = match self.attach_xdp(programs, Program::TxLan, ifindex, XdpMode::Driver) {
            Ok(()) => AttachMode::NativeXdp,
            Err(_) => {
                self.attach_xdp(programs, Program::TxLan, ifindex, XdpMode::Skb)?;
                AttachMode::GenericXdp
            }
        };
        // Replies of an entry peer's flow that LAN XDP cannot seal are handed to the tunnel's
        // egress through this TC program (see gateway-ebpf's `tx::from_lan`); without it
        // they are dropped, never routed out of the default route.
        if programs.is_loaded(Program::RxHandoff)
            && let Err(e) =
                self.attach_tc(programs, Program::RxHandoff, &name, ifindex, TcAttachType::Ingress)
        {
            warn!("data plane: no tunnel handoff on LAN interface {name}: {e}");
        }
        if let Err(e) = self.redirect_ifaces.insert(ifindex, ifindex, None, 0) {
            self.detach_interface(ifindex)?;
            return Err(DataplaneError::kernel_chain(
                format!("adding {name} to REDIRECT_IFACES"),
                &e,
            ));
        }
        self.lan.push(ifindex);
        info!("data plane: LAN interface {name} with {mode}");
        note_veth(&name);
        Ok(mode)
    }

    /// Attaches the do-nothing XDP program (native mode), e.g. to the far end of a veth pair,
    /// which only accepts XDP_TX/redirected frames while it runs an XDP program.
    pub(super) fn attach_xdp_pass(
        &mut self,
        programs: &mut Programs,
        iface: impl Into<Interface>,
    ) -> Result<()> {
        let (ifindex, _) = iface.into().resolve()?;
        self.attach_xdp(programs, Program::XdpPass, ifindex, XdpMode::Driver)
    }

    /// Detaches every program from one interface (and forgets it as a LAN interface).
    pub(super) fn detach_interface(&mut self, ifindex: u32) -> Result<()> {
        let mut first_error = self.detach_links(|a| a.ifindex == ifindex).into_iter().next();
        // Not every interface is in UNDERLAYS.
        let _ = self.underlays.remove(&ifindex);
        self.underlay_checksums.remove(&ifindex);
        if let Some(gso) = self.tunnel_gso.take_if(|g| g.ifindex == ifindex)
            && let Err(e) = netdev::set_gso_max_segs(ifindex, gso.previous)
        {
            first_error.get_or_insert(DataplaneError::kernel("restoring the tunnel's GSO", e));
        }
        if let Some(pos) = self.lan.iter().position(|&i| i == ifindex) {
            self.lan.remove(pos);
            if let Err(e) = self.redirect_ifaces.remove(ifindex) {
                first_error.get_or_insert(DataplaneError::kernel_chain(
                    "removing from REDIRECT_IFACES",
                    &e,
                ));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Detaches everything this data plane attached.
    pub(super) fn detach_all(&mut self) -> Result<()> {
        let mut ifaces: Vec<u32> = self.links.iter().map(|a| a.ifindex).collect();
        ifaces.extend(self.lan.iter().copied());
        ifaces.extend(self.tunnel_gso.as_ref().map(|g| g.ifindex));
        ifaces.sort_unstable();
        ifaces.dedup();
        let mut first_error = None;
        for i in ifaces {
            if let Err(e) = self.detach_interface(i) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// (interface index, program) pairs currently attached.
    pub(super) fn attached(&self) -> Vec<(u32, Program)> {
        self.links.iter().map(|a| (a.ifindex, a.program)).collect()
    }
}

/// Says, once per interface, what a veth needs for frames the programs send out of it in XDP
/// (hub and LAN forwarding, replies of the entry point's flows): the veth hands them to its
/// peer only if the peer runs an XDP program, and drops them, uncounted, if not. Containers
/// and network namespaces are where gatewayd meets veths; a physical interface needs nothing.
fn note_veth(name: &str) {
    if netdev::driver(name).is_ok_and(|driver| driver == "veth") {
        info!(
            "data plane: {name} is a veth: frames the programs send out of it in XDP reach its \
             peer only if the peer runs an XDP program (attach one that passes packets)"
        );
    }
}
