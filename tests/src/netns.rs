//! Network namespaces and what the tests put in them: links, addresses, routes, sysctls, nftables.

use std::ffi::OsStr;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd as _;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::names::{self, NAME_PREFIX};
use crate::{command, guard, require};

/// A uniquely named network namespace with `lo` up, deleted on drop.
///
/// Drop does not wait for processes still inside: kill those first (a [`crate::Process`] does so
/// on its own drop; declare it after the namespace so it drops before).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `gt{role}{pid}-{n}`; `role` (lowercase letters, ≤ 3 recommended) says what it is.
    /// IPv6 duplicate address detection is off for every interface made in it.
    pub fn new(role: &str) -> Result<Netns> {
        Netns::with_prefix(NAME_PREFIX, role)
    }

    pub fn with_prefix(prefix: &str, role: &str) -> Result<Netns> {
        require::require_root()?;
        require::require_tools(&["ip"])?;
        guard::install();
        let name = names::unique_name(prefix, role)?;
        command::run(Command::new("ip").args(["netns", "add", &name]))?;
        guard::track_namespace(&name);
        let netns = Netns { name };
        netns.link_up("lo")?;
        // Duplicate address detection would hold every new interface's link-local address for
        // about two seconds, and IPv6 neighbour discovery with it.
        netns.run(
            "sysctl",
            &["-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"],
        )?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec <name> <program>`: add arguments, then run or spawn it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        netns_command(&self.name, program)
    }

    /// Runs `program args...` inside and returns its stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        command::run(self.command(program).args(args))
            .with_context(|| format!("in namespace {}", self.name))
    }

    /// `ip -n <name> args...` (cheaper than `ip netns exec`).
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        command::run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    pub fn link_up(&self, device: &str) -> Result<()> {
        self.ip(&["link", "set", device, "up"]).map(drop)
    }

    pub fn set_mtu(&self, device: &str, mtu: u32) -> Result<()> {
        self.ip(&["link", "set", device, "mtu", &mtu.to_string()]).map(drop)
    }

    /// Adds `address/prefix_len`; IPv6 addresses skip duplicate address detection (`nodad`), so
    /// they are usable at once instead of after a second or two.
    pub fn add_address(&self, device: &str, address: IpAddr, prefix_len: u8) -> Result<()> {
        let cidr = format!("{address}/{prefix_len}");
        let mut args = vec!["address", "add", &cidr, "dev", device];
        if address.is_ipv6() {
            args.push("nodad");
        }
        self.ip(&args).map(drop)
    }

    /// `destination` is a prefix (`10.0.0.0/8`, `fd00::/8`) or `default`; `via` picks the family.
    pub fn add_route_via(&self, destination: &str, via: IpAddr) -> Result<()> {
        let family = if via.is_ipv6() { "-6" } else { "-4" };
        self.ip(&[family, "route", "add", destination, "via", &via.to_string()]).map(drop)
    }

    /// A route straight out of `device` (e.g. a tunnel interface).
    pub fn add_route_dev(&self, destination: &str, device: &str) -> Result<()> {
        self.ip(&["route", "add", destination, "dev", device]).map(drop)
    }

    /// Sets `key` (e.g. `net.ipv4.ip_forward`) for this namespace.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run("sysctl", &["-qw", &format!("{key}={value}")]).map(drop)
    }

    /// Lets the namespace route between its interfaces, IPv4 and IPv6.
    pub fn enable_forwarding(&self) -> Result<()> {
        self.set_sysctl("net.ipv4.ip_forward", "1")?;
        self.set_sysctl("net.ipv6.conf.all.forwarding", "1")
    }

    /// Turns a device's transmit checksum offload off (`ethtool -K dev tx off`): the kernel
    /// then completes every checksum left to the device in software, and the receiver checks
    /// it, as between two machines.
    pub fn checksum_in_software(&self, device: &str) -> Result<()> {
        self.run("ethtool", &["-K", device, "tx", "off"]).map(drop)
    }

    /// UDP datagrams this namespace dropped for a bad checksum, IPv4 and IPv6
    /// (`InCsumErrors` in /proc/net/snmp and /proc/net/snmp6, which follow the reader's
    /// namespace).
    pub fn udp_checksum_errors(&self) -> Result<u64> {
        let snmp = self.run("cat", &["/proc/net/snmp", "/proc/net/snmp6"])?;
        let mut total = 0;
        // IPv4: a "Udp:" header line of names, then a "Udp:" line of values.
        let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp: ")).collect();
        if let [names, values] = udp[..] {
            let at = names.split_whitespace().position(|n| n == "InCsumErrors");
            if let Some(value) = at.and_then(|i| values.split_whitespace().nth(i)) {
                total +=
                    value.parse::<u64>().with_context(|| format!("Udp InCsumErrors {value:?}"))?;
            }
        }
        for line in snmp.lines() {
            if let Some(value) = line.strip_prefix("Udp6InCsumErrors") {
                let value = value.trim();
                total +=
                    value.parse::<u64>().with_context(|| format!("Udp6InCsumErrors {value:?}"))?;
            }
        }
        Ok(total)
    }

    /// Loads an nftables ruleset (the text `nft -f` reads) into this namespace.
    pub fn load_nftables(&self, ruleset: &str) -> Result<()> {
        command::run_with_stdin(self.command("nft").args(["-f", "-"]), ruleset.as_bytes())
            .with_context(|| format!("loading nftables rules in {}:\n{ruleset}", self.name))
            .map(drop)
    }

    /// The packets every `counter` in an nftables chain has counted, summed (e.g. `("inet",
    /// "test", "forward")`).
    pub fn nft_counted_packets(&self, family: &str, table: &str, chain: &str) -> Result<u64> {
        let listing = self.run("nft", &["list", "chain", family, table, chain])?;
        let mut total = 0;
        for (at, _) in listing.match_indices("counter packets ") {
            let number = listing[at + "counter packets ".len()..]
                .split_whitespace()
                .next()
                .unwrap_or_default();
            total += number
                .parse::<u64>()
                .with_context(|| format!("counter value {number:?} in:\n{listing}"))?;
        }
        Ok(total)
    }

    /// A veth pair whose ends are born in their namespaces (`ip link add A netns X type veth peer
    /// name B netns Y`): nothing appears in the root namespace, even briefly. Both ends are up.
    pub fn add_veth(&self, device: &str, peer: &Netns, peer_device: &str) -> Result<()> {
        command::run(Command::new("ip").args([
            "link",
            "add",
            device,
            "netns",
            &self.name,
            "type",
            "veth",
            "peer",
            "name",
            peer_device,
            "netns",
            &peer.name,
        ]))?;
        self.link_up(device)?;
        peer.link_up(peer_device)
    }
}

impl Netns {
    /// Moves the calling thread into this namespace until the guard drops. Sockets made
    /// meanwhile stay in it afterwards: this is how a test sends its own datagrams from inside.
    pub fn enter(&self) -> Result<Entered> {
        let original = File::open("/proc/thread-self/ns/net")
            .context("cannot open this thread's network namespace")?;
        let path = format!("/var/run/netns/{}", self.name);
        let target = File::open(&path).with_context(|| format!("cannot open {path}"))?;
        set_network_namespace(&target).with_context(|| format!("cannot enter {}", self.name))?;
        Ok(Entered { original })
    }
}

/// The calling thread is in another namespace until this drops.
#[derive(Debug)]
pub struct Entered {
    original: File,
}

impl Drop for Entered {
    fn drop(&mut self) {
        if let Err(error) = set_network_namespace(&self.original) {
            // Carrying on in the wrong namespace would make later steps act on the wrong
            // network: stop here.
            panic!("cannot return to the original network namespace: {error}");
        }
    }
}

fn set_network_namespace(namespace: &File) -> Result<()> {
    // SAFETY: setns on the calling thread with a namespace file descriptor we hold open.
    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !guard::delete_namespace(&self.name) {
            eprintln!("gateway-tests: could not delete network namespace {}", self.name);
        }
        guard::untrack_namespace(&self.name);
    }
}

pub(crate) fn netns_command(netns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns]).arg(program);
    command
}

/// The namespaces that exist right now (from `ip netns list`).
pub fn list_namespaces() -> Result<Vec<String>> {
    let listing = command::run(Command::new("ip").args(["netns", "list"]))?;
    // Lines look like `name (id: 3)` or just `name`.
    Ok(listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(String::from)
        .collect())
}
