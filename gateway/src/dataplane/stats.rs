//! `STATS`, summed over CPUs.

use aya::maps::{MapData, PerCpuArray};
use gateway_common::maps::{STAT_COUNT, Stat};

use super::error::{DataplaneError, Result};

/// Declares `Stats` with one named field per `Stat`, and the conversions, from one list.
macro_rules! stats {
    ($($field:ident => $stat:ident),* $(,)?) => {
        /// Packets the programs handled, by what they did (see `gateway_common::maps::Stat`).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Stats {
            $(pub $field: u64,)*
        }

        impl Stats {
            /// The counter for one `Stat`.
            pub fn get(&self, stat: Stat) -> u64 {
                match stat {
                    $(Stat::$stat => self.$field,)*
                }
            }

            fn set(&mut self, index: u32, value: u64) {
                $(if index == Stat::$stat as u32 {
                    self.$field = value;
                })*
            }

            /// Every (stat, count) pair.
            pub fn entries(&self) -> Vec<(Stat, u64)> {
                vec![$((Stat::$stat, self.$field),)*]
            }
        }
    };
}

stats! {
    rx_delivered_local => RxDeliveredLocal,
    rx_hub_forwarded => RxHubForwarded,
    rx_lan_redirected => RxLanRedirected,
    rx_keepalive => RxKeepalive,
    rx_drop_auth => RxDropAuth,
    rx_drop_replay => RxDropReplay,
    rx_drop_source => RxDropSource,
    rx_drop_malformed => RxDropMalformed,
    rx_drop_expired => RxDropExpired,
    rx_pass_to_daemon => RxPassToDaemon,
    rx_pass_handshake => RxPassHandshake,
    rx_pass_other => RxPassOther,
    tx_encrypted => TxEncrypted,
    tx_pass_to_daemon => TxPassToDaemon,
    tx_pass_too_big => TxPassTooBig,
    tx_pass_no_peer => TxPassNoPeer,
    rx_drop_truncated => RxDropTruncated,
    rx_pass_fragment => RxPassFragment,
    rx_pass_unknown_index => RxPassUnknownIndex,
    tx_pass_no_route => TxPassNoRoute,
    tx_pass_offload => TxPassOffload,
    tx_pass_to_stack => TxPassToStack,
    entry_forwarded => EntryForwarded,
    entry_to_tunnel => EntryToTunnel,
    entry_pass_no_forward => EntryPassNoForward,
    entry_reply_translated => EntryReplyTranslated,
    proxy_translated => ProxyTranslated,
    reply_to_sent => ReplyToSent,
    reply_to_tunnel => ReplyToTunnel,
    reply_to_dropped => ReplyToDropped,
    masquerade_out => MasqueradeOut,
    masquerade_in => MasqueradeIn,
    masquerade_no_port => MasqueradeNoPort,
    masquerade_untranslated => MasqueradeUntranslated,
    tx_pass_syn => TxPassSyn,
    rx_mss_clamped => RxMssClamped,
    error => Error,
}

impl Stats {
    /// Counter by counter, what happened since `earlier` (counters only grow).
    pub fn since(&self, earlier: &Stats) -> Stats {
        let mut d = Stats::default();
        for (stat, value) in self.entries() {
            d.set(stat as u32, value.wrapping_sub(earlier.get(stat)));
        }
        d
    }

    /// The counters that are not zero, for messages.
    pub fn nonzero(&self) -> Vec<(Stat, u64)> {
        self.entries().into_iter().filter(|&(_, v)| v != 0).collect()
    }
}

/// The per-CPU `STATS` array.
pub(super) struct StatsMap(PerCpuArray<MapData, u64>);

impl StatsMap {
    pub(super) fn new(map: PerCpuArray<MapData, u64>) -> Self {
        StatsMap(map)
    }

    /// Every counter, summed over CPUs.
    pub(super) fn read(&self) -> Result<Stats> {
        let mut s = Stats::default();
        for i in 0..STAT_COUNT {
            let per_cpu =
                self.0.get(&i, 0).map_err(|e| DataplaneError::kernel_chain("reading STATS", &e))?;
            s.set(i, per_cpu.iter().sum());
        }
        Ok(s)
    }
}
