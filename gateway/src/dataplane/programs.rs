//! The programs in the embedded object, by role.

/// One program of the data plane (names as in gateway-ebpf/src/main.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Program {
    /// XDP (multi-buffer) on an underlay: the receive path.
    RxXdp,
    /// TC ingress on an underlay running `RxXdp`: delivers marked frames on the TUN.
    RxHandoff,
    /// TC ingress on an underlay without XDP: the receive path on skbs.
    RxTc,
    /// TC egress on the TUN: the send path.
    TxTun,
    /// XDP on a LAN interface: the send path for forwarded LAN traffic.
    TxLan,
    /// XDP, tail-called by `RxXdp` (through `ENTRY_PROGRAMS`) for frames that are not
    /// WireGuard: an entry point's tcp/udp forwards.
    EntryForward,
    /// TC egress on the TUN, before `TxTun`: the client's address as the source of proxied
    /// (tls/http) connections.
    EntryProxy,
    /// TC egress on the masquerade interface: peers' packets leave with its address.
    MasqOut,
    /// TC ingress on the masquerade interface, first: replies to masqueraded flows, back into
    /// the tunnel.
    MasqIn,
    /// XDP that passes everything (veth peers need one to receive XDP_TX/redirected frames).
    XdpPass,
}

impl Program {
    pub const ALL: [Program; 10] = [
        Program::RxXdp,
        Program::RxHandoff,
        Program::RxTc,
        Program::TxTun,
        Program::TxLan,
        Program::EntryForward,
        Program::EntryProxy,
        Program::MasqOut,
        Program::MasqIn,
        Program::XdpPass,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Program::RxXdp => "wg_rx_xdp",
            Program::RxHandoff => "wg_rx_handoff",
            Program::RxTc => "wg_rx_tc",
            Program::TxTun => "wg_tx_tun",
            Program::TxLan => "wg_tx_lan",
            Program::EntryForward => "entry_forward",
            Program::EntryProxy => "entry_proxy_tun",
            Program::MasqOut => "masq_out",
            Program::MasqIn => "masq_in",
            Program::XdpPass => "xdp_pass",
        }
    }

    /// What the data plane does when the kernel cannot load this program.
    pub fn fallback(self) -> &'static str {
        match self {
            Program::RxXdp | Program::RxHandoff => {
                "underlays receive with the TC program (wg_rx_tc), or in userspace without it"
            }
            Program::RxTc => "underlays without XDP receive in userspace",
            Program::TxTun => "the daemon encrypts what the stack sends into the tunnel",
            Program::TxLan => "LAN traffic into the tunnel goes through the stack and the daemon",
            Program::EntryForward => {
                "tcp/udp forwards are not translated: their packets reach the stack unchanged"
            }
            Program::EntryProxy => {
                "proxied connections reach their backends from the tunnel address, not the \
                 client's"
            }
            Program::MasqOut | Program::MasqIn => {
                "the kernel masquerades (an nftables table of gatewayd's own)"
            }
            Program::XdpPass => "nothing: the daemon does not use it",
        }
    }

    pub fn is_xdp(self) -> bool {
        matches!(self, Program::RxXdp | Program::TxLan | Program::EntryForward | Program::XdpPass)
    }
}
