//! `gatewayd --masquerade OUTIF`: the host as an exit node. Peers' IPv4 traffic the stack
//! routes out of OUTIF leaves with OUTIF's address, and the replies come back to them.
//!
//! Who translates: the eBPF programs (`masq_out`/`masq_in` on OUTIF, see gateway-ebpf's
//! `masquerade`) when the data plane runs and both loaded; otherwise the kernel's own NAT,
//! an nftables table of this daemon's (`masquerade` on what leaves OUTIF from the tunnel).
//! Either way the daemon:
//!
//! - turns IPv4 forwarding on for the tunnel (and, for the kernel's NAT, OUTIF: its replies
//!   are forwarded by the stack), as routers need;
//! - reserves the programs' port range from the kernel's ephemeral ports
//!   (`net.ipv4.ip_local_reserved_ports`), so the host's own connections never take a port a
//!   mapping may hold;
//! - puts every sysctl back and removes its table when it exits.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use gateway_common::maps::{MASQ_DEFAULT_FIRST_PORT, MASQ_DEFAULT_PORT_COUNT};

use super::ebpf::EbpfSink;
use super::link;
use crate::dataplane::{Interface, MasqueradeConfig};

const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// Which plane translates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Translator {
    Ebpf,
    /// The kernel, through this nftables table (family ip).
    Kernel {
        table: String,
    },
}

/// What `--masquerade` set up; dropping it undoes it (the programs go with the data plane).
#[derive(Debug)]
pub struct Masquerade {
    pub interface: String,
    pub translator: Translator,
    /// Sysctls as they were before, restored in reverse order.
    restore: Vec<(String, String)>,
}

/// The interface `--masquerade` names, checked before anything is created.
#[derive(Debug, Clone)]
pub struct Target {
    ifindex: u32,
    name: String,
    addr: Ipv4Addr,
}

impl Target {
    /// OUTIF exists and has an IPv4 address, or one line saying which is not so.
    pub fn resolve(outif: &str) -> Result<Target, String> {
        let (ifindex, name) =
            Interface::from(outif).resolve().map_err(|e| format!("--masquerade {outif}: {e}"))?;
        let addr = outside_address(&name)?;
        Ok(Target { ifindex, name, addr })
    }
}

impl Masquerade {
    /// Sets up masquerading out of `target` for the tunnel `tunnel`, in eBPF through `sink`
    /// when it can, else in the kernel. An error names what is wrong, and leaves nothing
    /// changed.
    pub fn start(
        target: Target,
        tunnel: &str,
        sink: Option<&mut EbpfSink>,
    ) -> Result<Masquerade, String> {
        let Target { ifindex, name, addr } = target;
        let mut masquerade = Masquerade {
            interface: name.clone(),
            translator: Translator::Ebpf,
            restore: Vec::new(),
        };
        masquerade.set_sysctl(&format!("/proc/sys/net/ipv4/conf/{tunnel}/forwarding"), "1")?;
        let reserved = reserve(&read_sysctl(RESERVED_PORTS)?, &port_range());
        masquerade.set_sysctl(RESERVED_PORTS, &reserved)?;
        let config = MasqueradeConfig {
            ifindex,
            addr,
            first_port: MASQ_DEFAULT_FIRST_PORT,
            port_count: MASQ_DEFAULT_PORT_COUNT,
        };
        let in_ebpf = match sink {
            Some(sink) => match sink.start_masquerade(config, &name) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("masquerade: not in eBPF ({e}): the kernel translates");
                    false
                }
            },
            None => false,
        };
        if !in_ebpf {
            masquerade.set_sysctl(&format!("/proc/sys/net/ipv4/conf/{name}/forwarding"), "1")?;
            let table = table_name(tunnel);
            nft(&ruleset(&table, tunnel, &name))
                .map_err(|e| format!("--masquerade {name}: loading nftables table {table}: {e}"))?;
            masquerade.translator = Translator::Kernel { table };
        }
        let by = match &masquerade.translator {
            Translator::Ebpf => "eBPF".to_string(),
            Translator::Kernel { table } => format!("the kernel (nftables table ip {table})"),
        };
        tracing::info!("masquerade: {tunnel}'s peers leave {name} as {addr}, translated by {by}");
        Ok(masquerade)
    }

    /// Writes a sysctl, remembering its value to put back.
    fn set_sysctl(&mut self, path: &str, value: &str) -> Result<(), String> {
        let previous = read_sysctl(path)?;
        if previous == value {
            return Ok(());
        }
        std::fs::write(path, value).map_err(|e| format!("--masquerade: writing {path}: {e}"))?;
        self.restore.push((path.to_string(), previous));
        Ok(())
    }
}

impl Drop for Masquerade {
    fn drop(&mut self) {
        if let Translator::Kernel { table } = &self.translator
            && let Err(e) = nft(&format!("delete table ip {table}\n"))
        {
            tracing::warn!("masquerade: removing nftables table {table}: {e}");
        }
        for (path, value) in self.restore.drain(..).rev() {
            // With its newline: an empty write leaves a list (reserved ports) unchanged, "\n"
            // empties it.
            if let Err(e) = std::fs::write(&path, format!("{value}\n")) {
                tracing::warn!("masquerade: restoring {path}: {e}");
            }
        }
    }
}

/// OUTIF's IPv4 address: the source the internet sees.
pub fn outside_address(name: &str) -> Result<Ipv4Addr, String> {
    match link::addresses(name) {
        Ok((Some(v4), _)) => Ok(v4),
        Ok((None, _)) => Err(format!("--masquerade {name}: the interface has no IPv4 address")),
        Err(e) => Err(format!("--masquerade {name}: reading its addresses: {e}")),
    }
}

fn read_sysctl(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|value| value.trim().to_string())
        .map_err(|e| format!("--masquerade: reading {path}: {e}"))
}

/// The programs' ports as `ip_local_reserved_ports` writes a range.
fn port_range() -> String {
    let last = MASQ_DEFAULT_FIRST_PORT as u32 + MASQ_DEFAULT_PORT_COUNT as u32 - 1;
    format!("{MASQ_DEFAULT_FIRST_PORT}-{last}")
}

/// The reserved-ports list with `range` added (unchanged if it is there already).
fn reserve(current: &str, range: &str) -> String {
    if current.split(',').any(|r| r.trim() == range) {
        current.to_string()
    } else if current.is_empty() {
        range.to_string()
    } else {
        format!("{current},{range}")
    }
}

/// The nftables table of one interface's masquerade.
fn table_name(tunnel: &str) -> String {
    format!("gatewayd-masq-{tunnel}")
}

/// The kernel's NAT for the tunnel's traffic out of `outif`. The table is declared and
/// deleted first, so a table a crashed daemon left behind is replaced, not doubled.
fn ruleset(table: &str, tunnel: &str, outif: &str) -> String {
    format!(
        "table ip {table} {{}}\n\
         delete table ip {table}\n\
         table ip {table} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tiifname \"{tunnel}\" oifname \"{outif}\" masquerade\n\
         \t}}\n\
         }}\n"
    )
}

/// Runs `nft -f -` with `script`; its error output when it fails.
fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(|e| format!("writing to nft: {e}"))?;
    }
    let output = child.wait_with_output().map_err(|e| format!("waiting for nft: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().replace('\n', "; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_added_once_to_what_the_operator_reserved() {
        assert_eq!(reserve("", "61000-65535"), "61000-65535");
        assert_eq!(reserve("8080,9000-9100", "61000-65535"), "8080,9000-9100,61000-65535");
        assert_eq!(reserve("8080,61000-65535", "61000-65535"), "8080,61000-65535");
    }

    #[test]
    fn the_default_range_ends_at_the_last_port() {
        assert_eq!(port_range(), "61000-65535");
    }

    #[test]
    fn the_kernel_table_replaces_a_leftover_and_names_both_interfaces() {
        let rules = ruleset("gatewayd-masq-wg0", "wg0", "eth0");
        let delete = rules.find("delete table ip gatewayd-masq-wg0").unwrap();
        let create = rules.rfind("table ip gatewayd-masq-wg0 {\n").unwrap();
        assert!(delete < create, "the leftover goes before the new table is made");
        assert!(rules.contains("iifname \"wg0\" oifname \"eth0\" masquerade"));
    }
}
