//! One forward: which connections on the public side it takes, and where they go.
//!
//! The operator writes forwards as `gateway forward add` arguments:
//!
//! ```text
//! tcp|udp PORT[-PORT] [--listen ADDR] --to IP[:PORT]
//! tls  PORT [--listen ADDR] (--sni NAME | --default) --to IP[:PORT]
//! http PORT [--listen ADDR] (--host NAME | --default) --to IP[:PORT]
//! ```
//!
//! and removes them by what selects them (`forward remove`: the same arguments without
//! `--to`). A range maps onto the same ports, or, when `--to` has a port, onto that port plus
//! the offset into the range. `--default` marks the backend of a tls or http port for the
//! connections whose name no other forward on the port takes (or that carry none); without
//! one, those are closed. NAME is a host name or `*.` and one (see [`NamePattern`]).
//!
//! tcp and udp forwards with `--listen` need `--to` of the same address family, since they
//! are translated per packet; tls and http are proxied, so either family reaches either.
//!
//! Parsing here is the whole validation: what [`Selector::parse`] and [`Forward::parse`]
//! accept is a forward the rest of the layer can rely on, and what they refuse comes back as
//! one line naming the problem.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use super::name::{NamePattern, NameProblem};

/// What a forward carries, as the operator names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    /// TLS over TCP, passed through unchanged to the backend its ClientHello's SNI selects.
    Tls,
    /// HTTP/1.x over TCP, passed through unchanged to the backend its Host header selects.
    Http,
}

/// The transport a forward's public port belongs to: ports of one transport are one space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn parse(text: &str) -> Result<Protocol, ForwardError> {
        match text {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "tls" => Ok(Protocol::Tls),
            "http" => Ok(Protocol::Http),
            _ => Err(ForwardError::UnknownProtocol(text.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Tls => "tls",
            Protocol::Http => "http",
        }
    }

    pub fn transport(self) -> Transport {
        match self {
            Protocol::Udp => Transport::Udp,
            Protocol::Tcp | Protocol::Tls | Protocol::Http => Transport::Tcp,
        }
    }

    /// Whether connections are routed by the name they carry (so one port may have several
    /// forwards) rather than by the port alone.
    pub fn routes_by_name(self) -> bool {
        matches!(self, Protocol::Tls | Protocol::Http)
    }

    /// The option that names the backend's host for this protocol.
    fn name_option(self) -> &'static str {
        match self {
            Protocol::Tls => "--sni",
            _ => "--host",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Public ports `first..=last`, never empty and never port 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    pub fn single(port: u16) -> Result<PortRange, ForwardError> {
        PortRange::new(port, port)
    }

    pub fn new(first: u16, last: u16) -> Result<PortRange, ForwardError> {
        if first == 0 {
            return Err(ForwardError::BadPort("0".to_string()));
        }
        if first > last {
            return Err(ForwardError::BackwardRange(format!("{first}-{last}")));
        }
        Ok(PortRange { first, last })
    }

    /// `PORT` or `PORT-PORT`, each 1 to 65535.
    pub fn parse(text: &str) -> Result<PortRange, ForwardError> {
        match text.split_once('-') {
            None => PortRange::single(parse_port(text)?),
            Some((first, last)) => {
                let range = PortRange::new(parse_port(first)?, parse_port(last)?);
                range.map_err(|_| ForwardError::BackwardRange(text.to_string()))
            }
        }
    }

    pub fn first(self) -> u16 {
        self.first
    }

    pub fn last(self) -> u16 {
        self.last
    }

    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    pub fn overlaps(self, other: PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    pub fn is_single(self) -> bool {
        self.first == self.last
    }
}

/// `80` or `8000-8010`.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

fn parse_port(text: &str) -> Result<u16, ForwardError> {
    // u16's parser takes a leading '+', which is not how anyone writes a port.
    let digits = !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
    match text.parse::<u16>() {
        Ok(port) if digits && port != 0 => Ok(port),
        _ => Err(ForwardError::BadPort(text.to_string())),
    }
}

/// Where a forward's connections go: an address, and a port unless it is the public one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    address: IpAddr,
    /// The port the first public port maps to; None: every public port maps onto itself.
    port: Option<u16>,
}

impl Target {
    /// `IP`, `IP:PORT`, `[IPv6]` or `[IPv6]:PORT`; a bare IPv6 address takes no port.
    pub fn parse(text: &str) -> Result<Target, ForwardError> {
        let bad = || ForwardError::BadAddress { option: "--to", text: text.to_string() };
        let (address, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(bad)?;
            let address: Ipv6Addr = inside.parse().map_err(|_| bad())?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(bad)?),
            };
            (IpAddr::V6(address), port)
        } else if let Ok(address) = text.parse::<IpAddr>() {
            (address, None)
        } else {
            let (address, port) = text.rsplit_once(':').ok_or_else(bad)?;
            let address = address.parse::<std::net::Ipv4Addr>().map_err(|_| bad())?;
            (IpAddr::V4(address), Some(port))
        };
        if !is_unicast(address) {
            return Err(ForwardError::NotUnicast { option: "--to", address });
        }
        let port = port.map(parse_port).transpose()?;
        Ok(Target { address, port })
    }

    pub fn address(&self) -> IpAddr {
        self.address
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

/// As `--to` takes it back.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.address, self.port) {
            (address, None) => write!(f, "{address}"),
            (IpAddr::V4(address), Some(port)) => write!(f, "{address}:{port}"),
            (IpAddr::V6(address), Some(port)) => write!(f, "[{address}]:{port}"),
        }
    }
}

/// Whether packets can be sent to, or received at, this one address.
fn is_unicast(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

/// The textual arguments that select a forward: `add`'s without `--to`, and `remove`'s.
#[derive(Clone, Copy, Debug, Default)]
pub struct SelectorArgs<'a> {
    pub protocol: &'a str,
    pub ports: &'a str,
    pub listen: Option<&'a str>,
    pub sni: Option<&'a str>,
    pub host: Option<&'a str>,
    pub default: bool,
}

/// Test shorthand: the arguments from `forward add`/`remove` words, e.g. `tls 443 --sni
/// a.example`.
#[cfg(test)]
impl<'a> SelectorArgs<'a> {
    pub(crate) fn from_words(words: &'a str) -> SelectorArgs<'a> {
        let mut words = words.split(' ');
        let mut args = SelectorArgs {
            protocol: words.next().unwrap(),
            ports: words.next().unwrap(),
            ..SelectorArgs::default()
        };
        while let Some(option) = words.next() {
            match option {
                "--listen" => args.listen = words.next(),
                "--sni" => args.sni = words.next(),
                "--host" => args.host = words.next(),
                "--default" => args.default = true,
                _ => panic!("unknown option {option}"),
            }
        }
        args
    }
}

/// Which connections a forward takes: the identity of a forward in its table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Selector {
    protocol: Protocol,
    /// None: every address of the host.
    listen: Option<IpAddr>,
    ports: PortRange,
    /// Some exactly for the protocols that route by name.
    name: Option<NamePattern>,
}

impl Selector {
    pub fn parse(args: &SelectorArgs<'_>) -> Result<Selector, ForwardError> {
        let protocol = Protocol::parse(args.protocol)?;
        let ports = PortRange::parse(args.ports)?;
        let listen = args.listen.map(parse_listen).transpose()?;
        if args.sni.is_some() && protocol != Protocol::Tls {
            return Err(ForwardError::OptionNotFor("--sni", protocol));
        }
        if args.host.is_some() && protocol != Protocol::Http {
            return Err(ForwardError::OptionNotFor("--host", protocol));
        }
        let name = match protocol {
            Protocol::Tls => Some(name_pattern(protocol, args.sni, args.default)?),
            Protocol::Http => Some(name_pattern(protocol, args.host, args.default)?),
            Protocol::Tcp | Protocol::Udp if args.default => {
                return Err(ForwardError::OptionNotFor("--default", protocol));
            }
            Protocol::Tcp | Protocol::Udp => None,
        };
        if protocol.routes_by_name() && !ports.is_single() {
            return Err(ForwardError::RangeNotFor(protocol));
        }
        Ok(Selector { protocol, listen, ports, name })
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn listen(&self) -> Option<IpAddr> {
        self.listen
    }

    pub fn ports(&self) -> PortRange {
        self.ports
    }

    pub fn name(&self) -> Option<&NamePattern> {
        self.name.as_ref()
    }

    /// Whether a connection could reach both: they take the same transport's ports at an
    /// address in common.
    pub fn shares_ports_with(&self, other: &Selector) -> bool {
        let addresses_meet = match (self.listen, other.listen) {
            (Some(one), Some(another)) => one == another,
            _ => true,
        };
        self.protocol.transport() == other.protocol.transport()
            && self.ports.overlaps(other.ports)
            && addresses_meet
    }
}

/// The options as `forward add`/`remove` take them, e.g. `tls 443 --listen 192.0.2.1 --sni
/// *.example.com`.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol, self.ports)?;
        if let Some(listen) = self.listen {
            write!(f, " --listen {listen}")?;
        }
        match &self.name {
            None => Ok(()),
            Some(NamePattern::Default) => f.write_str(" --default"),
            Some(name) => write!(f, " {} {name}", self.protocol.name_option()),
        }
    }
}

fn parse_listen(text: &str) -> Result<IpAddr, ForwardError> {
    let address: IpAddr = text
        .parse()
        .map_err(|_| ForwardError::BadAddress { option: "--listen", text: text.to_string() })?;
    if address.is_unspecified() {
        // "Every address" is what leaving --listen out says; two spellings of it would let
        // one forward hide behind the other's overlap check.
        return Err(ForwardError::UnspecifiedListen(address));
    }
    if !is_unicast(address) {
        return Err(ForwardError::NotUnicast { option: "--listen", address });
    }
    Ok(address)
}

fn name_pattern(
    protocol: Protocol,
    name: Option<&str>,
    default: bool,
) -> Result<NamePattern, ForwardError> {
    match (name, default) {
        (Some(_), true) => Err(ForwardError::NameAndDefault(protocol.name_option())),
        (None, true) => Ok(NamePattern::Default),
        (None, false) => Err(ForwardError::MissingName(protocol)),
        (Some(text), false) => NamePattern::parse(text)
            .map_err(|problem| ForwardError::BadName { text: text.to_string(), problem }),
    }
}

/// A forward: its selector, and where what it selects goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Forward {
    selector: Selector,
    target: Target,
}

impl Forward {
    /// `forward add`'s arguments: the selector's, and `--to`'s.
    pub fn parse(args: &SelectorArgs<'_>, to: &str) -> Result<Forward, ForwardError> {
        Forward::new(Selector::parse(args)?, Target::parse(to)?)
    }

    pub fn new(selector: Selector, target: Target) -> Result<Forward, ForwardError> {
        let (ports, protocol) = (selector.ports, selector.protocol);
        if let Some(first) = target.port {
            let span = ports.last - ports.first;
            if first.checked_add(span).is_none() {
                return Err(ForwardError::ShiftPastEnd { ports, first });
            }
        }
        if let Some(listen) = selector.listen
            && !protocol.routes_by_name()
            && listen.is_ipv4() != target.address.is_ipv4()
        {
            return Err(ForwardError::FamilyMismatch { listen, to: target.address });
        }
        Ok(Forward { selector, target })
    }

    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The backend port a connection to `public_port` goes to; None if the forward does not
    /// take that port.
    pub fn target_port(&self, public_port: u16) -> Option<u16> {
        let ports = self.selector.ports;
        if !ports.contains(public_port) {
            return None;
        }
        match self.target.port {
            None => Some(public_port),
            // Cannot overflow: `new` checked that the whole range fits.
            Some(first) => first.checked_add(public_port - ports.first),
        }
    }
}

/// Test shorthand: a forward from `forward add` words, e.g. `tcp 22 --to 10.0.0.2`.
#[cfg(test)]
impl Forward {
    pub(crate) fn from_words(words: &str) -> Forward {
        let (selector, to) = words.split_once(" --to ").unwrap();
        Forward::parse(&SelectorArgs::from_words(selector), to).unwrap()
    }
}

/// As `forward add` takes it back: `tcp 8000-8010 --to 10.0.0.2:9000`.
impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} --to {}", self.selector, self.target)
    }
}

/// Why arguments are not a forward. Each prints as one line naming the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardError {
    UnknownProtocol(String),
    BadPort(String),
    BackwardRange(String),
    BadAddress {
        option: &'static str,
        text: String,
    },
    NotUnicast {
        option: &'static str,
        address: IpAddr,
    },
    UnspecifiedListen(IpAddr),
    BadName {
        text: String,
        problem: NameProblem,
    },
    /// An option given to a protocol it does not belong to.
    OptionNotFor(&'static str, Protocol),
    MissingName(Protocol),
    NameAndDefault(&'static str),
    RangeNotFor(Protocol),
    ShiftPastEnd {
        ports: PortRange,
        first: u16,
    },
    FamilyMismatch {
        listen: IpAddr,
        to: IpAddr,
    },
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardError::UnknownProtocol(text) => {
                write!(f, "unknown protocol '{text}': expected tcp, udp, tls or http")
            }
            ForwardError::BadPort(text) => {
                write!(f, "'{text}' is not a port: ports are 1 to 65535")
            }
            ForwardError::BackwardRange(text) => {
                write!(f, "port range '{text}' ends before it starts")
            }
            ForwardError::BadAddress { option, text } => {
                write!(f, "{option} '{text}' is not an IP address")?;
                if *option == "--to" {
                    f.write_str(" (IP, IP:PORT or [IPv6]:PORT)")?;
                }
                Ok(())
            }
            ForwardError::NotUnicast { option, address } => {
                write!(f, "{option} {address} is not the address of one host")
            }
            ForwardError::UnspecifiedListen(address) => {
                write!(f, "--listen {address}: leave --listen out to take every address")
            }
            ForwardError::BadName { text, problem } => {
                write!(f, "'{text}' is not a host name or *.name: {problem}")
            }
            ForwardError::OptionNotFor(option, protocol) => {
                let belongs = match *option {
                    "--sni" => "tls forwards",
                    "--host" => "http forwards",
                    _ => "tls and http forwards",
                };
                write!(f, "{option} is for {belongs}, not {protocol}")
            }
            ForwardError::MissingName(protocol) => {
                let option = protocol.name_option();
                write!(f, "a {protocol} forward needs {option} NAME or --default")
            }
            ForwardError::NameAndDefault(option) => {
                write!(f, "{option} and --default exclude each other: give one")
            }
            ForwardError::RangeNotFor(protocol) => {
                write!(f, "a {protocol} forward takes one port, not a range")
            }
            ForwardError::ShiftPastEnd { ports, first } => {
                write!(f, "ports {ports} shifted onto {first} would run past port 65535")
            }
            ForwardError::FamilyMismatch { listen, to } => write!(
                f,
                "--listen {listen} and --to {to} are of different address families \
                 (only tls and http can bridge them)"
            ),
        }
    }
}

impl std::error::Error for ForwardError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::name::HostName;

    fn args<'a>(protocol: &'a str, ports: &'a str) -> SelectorArgs<'a> {
        SelectorArgs { protocol, ports, ..SelectorArgs::default() }
    }

    fn error(args: SelectorArgs<'_>, to: &str) -> String {
        Forward::parse(&args, to).unwrap_err().to_string()
    }

    #[test]
    fn a_tcp_range_maps_onto_the_same_ports_or_shifted_onto_the_target_port() {
        let same = Forward::parse(&args("tcp", "8000-8010"), "10.0.0.2").unwrap();
        assert_eq!(same.target_port(8000), Some(8000));
        assert_eq!(same.target_port(8010), Some(8010));
        assert_eq!(same.target_port(7999), None);
        assert_eq!(same.target_port(8011), None);
        let shifted = Forward::parse(&args("tcp", "8000-8010"), "10.0.0.2:9000").unwrap();
        assert_eq!(shifted.target_port(8000), Some(9000));
        assert_eq!(shifted.target_port(8007), Some(9007));
        assert_eq!(shifted.target_port(8010), Some(9010));
        assert_eq!(shifted.target_port(8011), None);
        let top = Forward::parse(&args("udp", "60000-60010"), "10.0.0.2:65525").unwrap();
        assert_eq!(top.target_port(60010), Some(65535));
        assert_eq!(shifted.to_string(), "tcp 8000-8010 --to 10.0.0.2:9000");
    }

    #[test]
    fn a_range_that_would_shift_past_65535_is_refused() {
        assert_eq!(
            error(args("udp", "60000-60010"), "10.0.0.2:65526"),
            "ports 60000-60010 shifted onto 65526 would run past port 65535"
        );
    }

    #[test]
    fn ports_out_of_range_and_backward_ranges_are_named() {
        assert_eq!(error(args("tcp", "0"), "10.0.0.2"), "'0' is not a port: ports are 1 to 65535");
        assert_eq!(
            error(args("tcp", "65536"), "10.0.0.2"),
            "'65536' is not a port: ports are 1 to 65535"
        );
        for text in ["", "-", "80-", "-80", "+80", "8 0", "80-90-100", "http"] {
            assert!(PortRange::parse(text).is_err(), "{text:?}");
        }
        assert_eq!(
            error(args("tcp", "9000-8000"), "10.0.0.2"),
            "port range '9000-8000' ends before it starts"
        );
        assert_eq!(
            error(args("tcp", "80"), "10.0.0.2:0"),
            "'0' is not a port: ports are 1 to 65535"
        );
        assert_eq!(PortRange::parse("1-65535").unwrap(), PortRange::new(1, 65535).unwrap());
        assert_eq!(PortRange::parse("443").unwrap().to_string(), "443");
    }

    #[test]
    fn targets_take_both_families_with_and_without_a_port() {
        let cases = [
            ("10.0.0.2", "10.0.0.2", None),
            ("10.0.0.2:8080", "10.0.0.2", Some(8080)),
            ("fd00::2", "fd00::2", None),
            ("[fd00::2]", "fd00::2", None),
            ("[fd00::2]:8080", "fd00::2", Some(8080)),
        ];
        for (text, address, port) in cases {
            let target = Target::parse(text).unwrap();
            assert_eq!(target.address(), address.parse::<IpAddr>().unwrap(), "{text}");
            assert_eq!(target.port(), port, "{text}");
        }
        assert_eq!(Target::parse("[fd00::2]:8080").unwrap().to_string(), "[fd00::2]:8080");
        assert_eq!(Target::parse("fd00::2").unwrap().to_string(), "fd00::2");
    }

    #[test]
    fn bad_addresses_are_named_with_their_option() {
        for text in [
            "",
            "nas.lan",
            "10.0.0",
            "10.0.0.256",
            "[fd00::2",
            "[fd00::2]8080",
            "[10.0.0.2]:80",
            ":80",
        ] {
            assert!(
                error(args("tcp", "80"), text)
                    .starts_with(&format!("--to '{text}' is not an IP address")),
                "{text:?}"
            );
        }
        assert_eq!(
            error(args("tcp", "80"), "10.0.0.2:http"),
            "'http' is not a port: ports are 1 to 65535"
        );
        assert_eq!(
            error(args("tcp", "80"), "0.0.0.0"),
            "--to 0.0.0.0 is not the address of one host"
        );
        assert_eq!(
            error(args("tcp", "80"), "[ff02::1]:80"),
            "--to ff02::1 is not the address of one host"
        );
        assert_eq!(
            error(args("tcp", "80"), "255.255.255.255"),
            "--to 255.255.255.255 is not the address of one host"
        );
        let listen = |text| SelectorArgs { listen: Some(text), ..args("tcp", "80") };
        assert_eq!(error(listen("vps"), "10.0.0.2"), "--listen 'vps' is not an IP address");
        assert_eq!(
            error(listen("0.0.0.0"), "10.0.0.2"),
            "--listen 0.0.0.0: leave --listen out to take every address"
        );
        assert_eq!(
            error(listen("::"), "fd00::2"),
            "--listen ::: leave --listen out to take every address"
        );
        assert_eq!(
            error(listen("224.0.0.1"), "10.0.0.2"),
            "--listen 224.0.0.1 is not the address of one host"
        );
    }

    #[test]
    fn translated_forwards_keep_the_family_proxied_ones_may_bridge_it() {
        let tcp = SelectorArgs { listen: Some("2001:db8::1"), ..args("tcp", "22") };
        assert_eq!(
            error(tcp, "10.0.0.2"),
            "--listen 2001:db8::1 and --to 10.0.0.2 are of different address families \
             (only tls and http can bridge them)"
        );
        let tls = SelectorArgs {
            listen: Some("2001:db8::1"),
            sni: Some("a.example"),
            ..args("tls", "443")
        };
        assert!(Forward::parse(&tls, "10.0.0.2:443").is_ok());
    }

    #[test]
    fn names_belong_to_their_protocol() {
        let tls = |sni, default| SelectorArgs { sni, default, ..args("tls", "443") };
        let forward = Forward::parse(&tls(Some("*.Example.com"), false), "10.0.0.2:443").unwrap();
        let suffix = HostName::parse("example.com").unwrap();
        assert_eq!(forward.selector().name(), Some(&NamePattern::Wildcard(suffix)));
        assert_eq!(forward.to_string(), "tls 443 --sni *.example.com --to 10.0.0.2:443");
        let default = Forward::parse(&tls(None, true), "10.0.0.3:443").unwrap();
        assert_eq!(default.selector().name(), Some(&NamePattern::Default));
        assert_eq!(default.to_string(), "tls 443 --default --to 10.0.0.3:443");
        assert_eq!(
            error(tls(None, false), "10.0.0.2"),
            "a tls forward needs --sni NAME or --default"
        );
        assert_eq!(
            error(tls(Some("a.example"), true), "10.0.0.2"),
            "--sni and --default exclude each other: give one"
        );
        assert_eq!(
            error(tls(Some("a..example"), false), "10.0.0.2"),
            "'a..example' is not a host name or *.name: it has an empty label"
        );
        let host_on_tls = SelectorArgs { host: Some("a.example"), ..tls(Some("a.example"), false) };
        assert_eq!(error(host_on_tls, "10.0.0.2"), "--host is for http forwards, not tls");
        let sni_on_http = SelectorArgs { sni: Some("a.example"), ..args("http", "80") };
        assert_eq!(error(sni_on_http, "10.0.0.2"), "--sni is for tls forwards, not http");
        let sni_on_tcp = SelectorArgs { sni: Some("a.example"), ..args("tcp", "80") };
        assert_eq!(error(sni_on_tcp, "10.0.0.2"), "--sni is for tls forwards, not tcp");
        let default_on_udp = SelectorArgs { default: true, ..args("udp", "53") };
        assert_eq!(
            error(default_on_udp, "10.0.0.2"),
            "--default is for tls and http forwards, not udp"
        );
        let http = SelectorArgs {
            host: Some("nas.example"),
            listen: Some("192.0.2.1"),
            ..args("http", "80")
        };
        assert_eq!(
            Forward::parse(&http, "10.0.0.2:8080").unwrap().to_string(),
            "http 80 --listen 192.0.2.1 --host nas.example --to 10.0.0.2:8080"
        );
    }

    #[test]
    fn name_routed_forwards_take_one_port() {
        let tls = SelectorArgs { sni: Some("a.example"), ..args("tls", "443-444") };
        assert_eq!(error(tls, "10.0.0.2"), "a tls forward takes one port, not a range");
        assert_eq!(
            error(args("quic", "443"), "10.0.0.2"),
            "unknown protocol 'quic': expected tcp, udp, tls or http"
        );
    }

    #[test]
    fn sharing_ports_needs_one_transport_overlapping_ports_and_a_common_address() {
        let selector = |protocol, ports, listen| {
            Selector::parse(&SelectorArgs {
                listen,
                default: protocol == "tls",
                ..args(protocol, ports)
            })
            .unwrap()
        };
        let all = selector("tcp", "8000-8010", None);
        assert!(all.shares_ports_with(&selector("tcp", "8010-8020", None)));
        assert!(all.shares_ports_with(&selector("tcp", "7000-8000", Some("192.0.2.1"))));
        assert!(all.shares_ports_with(&selector("tls", "8005", None)));
        assert!(!all.shares_ports_with(&selector("udp", "8000-8010", None)));
        assert!(!all.shares_ports_with(&selector("tcp", "8011-9000", None)));
        let one = selector("tcp", "80", Some("192.0.2.1"));
        assert!(!one.shares_ports_with(&selector("tcp", "80", Some("192.0.2.2"))));
        assert!(one.shares_ports_with(&selector("tcp", "80", Some("192.0.2.1"))));
    }
}
