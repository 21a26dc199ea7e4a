//! The forwards of one interface, and the lookups the data paths make in them.
//!
//! Two forwards may not take the same connection. Forwards *share ports* when they are of one
//! transport (tcp, tls and http are all TCP), their port ranges intersect and their listen
//! addresses meet (no `--listen` meets every address). Sharing ports is a conflict, except
//! between tls forwards, or http forwards, of different names: one port then carries several
//! names, and the name a connection presents picks among them. So a port cannot be both
//! plain tcp and tls, nor both tls and http, nor carry the same name (or two defaults) twice.
//!
//! The forwards are kept in the order they were added, which is what `list` shows; indexes
//! beside them answer the per-connection lookups in O(log n) for a port and O(labels) for a
//! name. They are extended on an addition and rebuilt on a removal: changes are operator commands,
//! lookups are traffic.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use super::forward::{Forward, Protocol, Selector, Transport};
use super::name::{HostName, NamePattern};

/// The most forwards one interface keeps: a bound on the state file and on what the data
/// paths are asked to hold, far beyond what an operator types.
pub const MAX_FORWARDS: usize = 4096;

#[derive(Clone, Debug, Default)]
pub struct ForwardTable {
    forwards: Vec<Forward>,
    /// tcp and udp forwards by (transport, listen address, first port) → (last port, index).
    /// Forwards of one transport and listen address never intersect, so the one entry at or
    /// below a port is the only one that can take it.
    by_port: BTreeMap<(Transport, Option<IpAddr>, u16), (u16, usize)>,
    /// tls and http forwards by (protocol, port).
    by_name: HashMap<(Protocol, u16), NameRoutes>,
}

/// The forwards of one tls or http port. Each list holds forwards with the same pattern on
/// listen addresses that do not meet: at most one of them takes a given local address.
#[derive(Clone, Debug, Default)]
struct NameRoutes {
    exact: HashMap<String, Vec<usize>>,
    /// By the suffix after `*.`.
    wildcard: HashMap<String, Vec<usize>>,
    default: Vec<usize>,
}

impl ForwardTable {
    pub fn new() -> ForwardTable {
        ForwardTable::default()
    }

    /// A table of `forwards`, added in order; on a conflict, the index of the first forward
    /// that could not be added, and why.
    pub fn from_forwards(
        forwards: impl IntoIterator<Item = Forward>,
    ) -> Result<ForwardTable, (usize, TableError)> {
        let mut table = ForwardTable::new();
        for (index, forward) in forwards.into_iter().enumerate() {
            table.add(forward).map_err(|error| (index, error))?;
        }
        Ok(table)
    }

    /// The forwards, in the order they were added.
    pub fn forwards(&self) -> &[Forward] {
        &self.forwards
    }

    pub fn len(&self) -> usize {
        self.forwards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.forwards.is_empty()
    }

    /// Adds `forward`, unless it would take a connection another forward takes.
    pub fn add(&mut self, forward: Forward) -> Result<(), TableError> {
        if let Some(existing) = self.forwards.iter().find(|existing| conflict(existing, &forward)) {
            return Err(TableError::Overlap {
                new: Box::new(forward.selector().clone()),
                existing: Box::new(existing.clone()),
            });
        }
        if self.forwards.len() >= MAX_FORWARDS {
            return Err(TableError::Full);
        }
        self.forwards.push(forward);
        self.index(self.forwards.len() - 1);
        Ok(())
    }

    /// Removes the forward `selector` names and returns it. A selector without a listen
    /// address also names a forward with one, when it is the only forward that fits otherwise
    /// (the operator need not repeat `--listen` unless it tells forwards apart).
    pub fn remove(&mut self, selector: &Selector) -> Result<Forward, TableError> {
        let index = match self.position(selector) {
            Some(index) => index,
            None => return Err(self.not_found(selector)),
        };
        let removed = self.forwards.remove(index);
        self.reindex();
        Ok(removed)
    }

    fn position(&self, selector: &Selector) -> Option<usize> {
        if let Some(index) = self.forwards.iter().position(|f| f.selector() == selector) {
            return Some(index);
        }
        if selector.listen().is_some() {
            return None;
        }
        let same_but_listen = |forward: &Forward| {
            let other = forward.selector();
            other.protocol() == selector.protocol()
                && other.ports() == selector.ports()
                && other.name() == selector.name()
        };
        let mut candidates = self.forwards.iter().enumerate().filter(|(_, f)| same_but_listen(f));
        match (candidates.next(), candidates.next()) {
            (Some((index, _)), None) => Some(index),
            _ => None,
        }
    }

    fn not_found(&self, selector: &Selector) -> TableError {
        let same_but_listen = self.forwards.iter().filter(|forward| {
            let other = forward.selector();
            other.protocol() == selector.protocol()
                && other.ports() == selector.ports()
                && other.name() == selector.name()
        });
        let count = same_but_listen.count();
        if selector.listen().is_none() && count > 1 {
            return TableError::Ambiguous { selector: Box::new(selector.clone()), count };
        }
        let covering =
            self.forwards.iter().find(|f| selectors_conflict(f.selector(), selector)).cloned();
        TableError::NotFound {
            selector: Box::new(selector.clone()),
            covering: covering.map(Box::new),
        }
    }

    /// The tcp or udp forward that takes connections to `local`:`port`.
    pub fn port_forward(&self, transport: Transport, local: IpAddr, port: u16) -> Option<&Forward> {
        [Some(local), None].into_iter().find_map(|listen| {
            let (&(found_transport, found_listen, _), &(last, index)) =
                self.by_port.range(..=(transport, listen, port)).next_back()?;
            let takes = found_transport == transport && found_listen == listen && port <= last;
            takes.then(|| &self.forwards[index])
        })
    }

    /// Whether connections to `local`:`port` are tls or http, routed by name (the caller hands
    /// them to the proxy, which reads the name and asks [`ForwardTable::backend`]).
    pub fn name_routed(&self, local: IpAddr, port: u16) -> Option<Protocol> {
        [Protocol::Tls, Protocol::Http].into_iter().find(|&protocol| {
            self.by_name.get(&(protocol, port)).is_some_and(|routes| {
                let lists = routes.exact.values().chain(routes.wildcard.values());
                lists.chain([&routes.default]).any(|list| self.taking(list, local).is_some())
            })
        })
    }

    /// The forward a tls or http connection to `local`:`port` presenting `name` goes to: the
    /// forward of that exact name, else the wildcard with the longest suffix that takes it,
    /// else the port's default. None: nothing takes it, the connection is closed.
    pub fn backend(
        &self,
        protocol: Protocol,
        local: IpAddr,
        port: u16,
        name: Option<&HostName>,
    ) -> Option<&Forward> {
        let routes = self.by_name.get(&(protocol, port))?;
        let named = name.and_then(|name| {
            let exact = routes.exact.get(name.as_str()).and_then(|list| self.taking(list, local));
            // Parents come nearest first, so the first wildcard found has the longest suffix.
            exact.or_else(|| {
                name.parents().find_map(|parent| self.taking(routes.wildcard.get(parent)?, local))
            })
        });
        named.or_else(|| self.taking(&routes.default, local))
    }

    /// The forward of `list` whose listen address takes `local`.
    fn taking(&self, list: &[usize], local: IpAddr) -> Option<&Forward> {
        list.iter()
            .map(|&index| &self.forwards[index])
            .find(|forward| forward.selector().listen().is_none_or(|listen| listen == local))
    }

    /// Rebuilds the indexes from scratch: after a removal, which shifts the indexes after it.
    fn reindex(&mut self) {
        self.by_port.clear();
        self.by_name.clear();
        for index in 0..self.forwards.len() {
            self.index(index);
        }
    }

    fn index(&mut self, index: usize) {
        let selector = self.forwards[index].selector();
        let (protocol, ports) = (selector.protocol(), selector.ports());
        let Some(name) = selector.name() else {
            let key = (protocol.transport(), selector.listen(), ports.first());
            self.by_port.insert(key, (ports.last(), index));
            return;
        };
        let routes = self.by_name.entry((protocol, ports.first())).or_default();
        let list = match name {
            NamePattern::Exact(name) => routes.exact.entry(name.to_string()).or_default(),
            NamePattern::Wildcard(suffix) => routes.wildcard.entry(suffix.to_string()).or_default(),
            NamePattern::Default => &mut routes.default,
        };
        list.push(index);
    }
}

/// Whether `one` and `another` could both take some connection.
fn conflict(one: &Forward, another: &Forward) -> bool {
    selectors_conflict(one.selector(), another.selector())
}

fn selectors_conflict(one: &Selector, another: &Selector) -> bool {
    let names_tell_apart = one.protocol() == another.protocol()
        && one.protocol().routes_by_name()
        && one.name() != another.name();
    one.shares_ports_with(another) && !names_tell_apart
}

/// Why a table refused a change. Each prints as one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    /// The new forward would take connections `existing` takes.
    Overlap {
        new: Box<Selector>,
        existing: Box<Forward>,
    },
    /// No forward is named so; `covering` takes (some of) its ports, when one does.
    NotFound {
        selector: Box<Selector>,
        covering: Option<Box<Forward>>,
    },
    /// Several forwards on different listen addresses fit a selector without `--listen`.
    Ambiguous {
        selector: Box<Selector>,
        count: usize,
    },
    Full,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::Overlap { new, existing } => {
                write!(f, "{new} overlaps the forward '{existing}'")
            }
            TableError::NotFound { selector, covering: None } => {
                write!(f, "there is no forward {selector}")
            }
            TableError::NotFound { selector, covering: Some(covering) } => write!(
                f,
                "there is no forward {selector}; '{covering}' takes its ports: remove it with \
                 its own arguments"
            ),
            TableError::Ambiguous { selector, count } => write!(
                f,
                "{count} forwards {selector} exist on different addresses: say which with --listen"
            ),
            TableError::Full => write!(f, "an interface keeps at most {MAX_FORWARDS} forwards"),
        }
    }
}

impl std::error::Error for TableError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::forward::SelectorArgs;

    /// A forward from `forward add` words, e.g. `tls 443 --sni a.example --to 10.0.0.2:443`.
    fn forward(words: &str) -> Forward {
        Forward::from_words(words)
    }

    fn selector(words: &str) -> Selector {
        Selector::parse(&SelectorArgs::from_words(words)).unwrap()
    }

    fn table(lines: &[&str]) -> ForwardTable {
        ForwardTable::from_forwards(lines.iter().map(|line| forward(line))).unwrap()
    }

    fn add_error(table: &mut ForwardTable, words: &str) -> String {
        let before = table.forwards().to_vec();
        let error = table.add(forward(words)).unwrap_err().to_string();
        assert_eq!(table.forwards(), before, "a refused add changed the table");
        error
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn name(text: &str) -> HostName {
        HostName::parse(text).unwrap()
    }

    const PUBLIC: &str = "192.0.2.1";

    #[test]
    fn overlapping_port_ranges_of_one_transport_conflict() {
        let mut forwards = table(&["tcp 8000-8010 --to 10.0.0.2"]);
        assert_eq!(
            add_error(&mut forwards, "tcp 8010-8020 --to 10.0.0.3"),
            "tcp 8010-8020 overlaps the forward 'tcp 8000-8010 --to 10.0.0.2'"
        );
        add_error(&mut forwards, "tcp 7000-9000 --to 10.0.0.3");
        add_error(&mut forwards, "tcp 8005 --listen 192.0.2.1 --to 10.0.0.3");
        add_error(&mut forwards, "tls 8000 --sni a.example --to 10.0.0.3");
        add_error(&mut forwards, "http 8010 --default --to 10.0.0.3");
        forwards.add(forward("udp 8000-8010 --to 10.0.0.2")).unwrap();
        forwards.add(forward("tcp 7990-7999 --to 10.0.0.2")).unwrap();
        forwards.add(forward("tcp 8011 --to 10.0.0.2")).unwrap();
        assert_eq!(forwards.len(), 4);
    }

    #[test]
    fn distinct_listen_addresses_keep_forwards_apart() {
        let mut forwards = table(&[
            "tcp 22 --listen 192.0.2.1 --to 10.0.0.2",
            "tcp 22 --listen 192.0.2.2 --to 10.0.0.3",
            "tcp 22 --listen 2001:db8::1 --to fd00::2",
        ]);
        add_error(&mut forwards, "tcp 22 --to 10.0.0.4");
        add_error(&mut forwards, "tcp 20-30 --listen 192.0.2.2 --to 10.0.0.4");
        let found = |local| forwards.port_forward(Transport::Tcp, ip(local), 22).unwrap();
        assert_eq!(found("192.0.2.1").target().to_string(), "10.0.0.2");
        assert_eq!(found("192.0.2.2").target().to_string(), "10.0.0.3");
        assert_eq!(found("2001:db8::1").target().to_string(), "fd00::2");
        assert!(forwards.port_forward(Transport::Tcp, ip("192.0.2.3"), 22).is_none());
    }

    #[test]
    fn one_name_routed_port_carries_several_names_but_each_once() {
        let mut forwards = table(&[
            "tls 443 --sni a.example --to 10.0.0.2:443",
            "tls 443 --sni *.example --to 10.0.0.3:443",
            "tls 443 --default --to 10.0.0.4:443",
        ]);
        assert_eq!(
            add_error(&mut forwards, "tls 443 --sni A.example. --to 10.0.0.5:443"),
            "tls 443 --sni a.example overlaps the forward 'tls 443 --sni a.example --to 10.0.0.2:443'"
        );
        add_error(&mut forwards, "tls 443 --listen 192.0.2.1 --sni *.example --to 10.0.0.5");
        add_error(&mut forwards, "tls 443 --default --to 10.0.0.5:443");
        add_error(&mut forwards, "http 443 --host b.example --to 10.0.0.5:80");
        add_error(&mut forwards, "tcp 443 --to 10.0.0.5");
        forwards.add(forward("tls 443 --sni b.example --to 10.0.0.5:443")).unwrap();
        forwards.add(forward("tls 443 --sni example --to 10.0.0.5:443")).unwrap();
        forwards.add(forward("http 80 --host a.example --to 10.0.0.2:80")).unwrap();
        forwards.add(forward("udp 443 --to 10.0.0.6")).unwrap();
        assert_eq!(forwards.len(), 7);
    }

    #[test]
    fn tls_and_http_may_share_a_port_number_on_different_addresses() {
        let forwards = table(&[
            "tls 8443 --listen 192.0.2.1 --default --to 10.0.0.2",
            "http 8443 --listen 192.0.2.2 --default --to 10.0.0.3",
        ]);
        assert_eq!(forwards.name_routed(ip("192.0.2.1"), 8443), Some(Protocol::Tls));
        assert_eq!(forwards.name_routed(ip("192.0.2.2"), 8443), Some(Protocol::Http));
        assert_eq!(forwards.name_routed(ip("192.0.2.3"), 8443), None);
        assert_eq!(forwards.name_routed(ip("192.0.2.1"), 443), None);
    }

    #[test]
    fn the_port_lookup_finds_the_range_that_takes_a_port() {
        let forwards = table(&[
            "tcp 8000-8010 --to 10.0.0.2:9000",
            "tcp 80 --to 10.0.0.3",
            "udp 8005 --to 10.0.0.4",
            "tcp 65535 --to 10.0.0.5",
            "tls 443 --default --to 10.0.0.6",
        ]);
        let target = |transport, port| {
            let forward = forwards.port_forward(transport, ip(PUBLIC), port)?;
            Some((forward.target().address().to_string(), forward.target_port(port)?))
        };
        assert_eq!(target(Transport::Tcp, 8000), Some(("10.0.0.2".into(), 9000)));
        assert_eq!(target(Transport::Tcp, 8005), Some(("10.0.0.2".into(), 9005)));
        assert_eq!(target(Transport::Tcp, 8010), Some(("10.0.0.2".into(), 9010)));
        assert_eq!(target(Transport::Tcp, 8011), None);
        assert_eq!(target(Transport::Tcp, 7999), None);
        assert_eq!(target(Transport::Tcp, 80), Some(("10.0.0.3".into(), 80)));
        assert_eq!(target(Transport::Tcp, 81), None);
        assert_eq!(target(Transport::Tcp, 1), None);
        assert_eq!(target(Transport::Tcp, 65535), Some(("10.0.0.5".into(), 65535)));
        assert_eq!(target(Transport::Udp, 8005), Some(("10.0.0.4".into(), 8005)));
        assert_eq!(target(Transport::Udp, 8006), None);
        // tls ports belong to the proxy, not to the translated forwards.
        assert_eq!(target(Transport::Tcp, 443), None);
        assert_eq!(forwards.name_routed(ip(PUBLIC), 443), Some(Protocol::Tls));
        assert_eq!(forwards.name_routed(ip(PUBLIC), 80), None);
    }

    #[test]
    fn exact_names_beat_wildcards_and_the_longest_wildcard_wins_then_the_default() {
        let forwards = table(&[
            "tls 443 --sni *.example.com --to 10.0.0.1",
            "tls 443 --sni *.dev.example.com --to 10.0.0.2",
            "tls 443 --sni api.dev.example.com --to 10.0.0.3",
            "tls 443 --default --to 10.0.0.4",
            "tls 443 --sni example.com --to 10.0.0.5",
            "http 80 --host *.example.com --to 10.0.0.6",
        ]);
        let backend = |host: Option<&str>| {
            let host = host.map(name);
            let forward = forwards.backend(Protocol::Tls, ip(PUBLIC), 443, host.as_ref())?;
            Some(forward.target().to_string())
        };
        assert_eq!(backend(Some("api.dev.example.com")).unwrap(), "10.0.0.3");
        assert_eq!(backend(Some("web.dev.example.com")).unwrap(), "10.0.0.2");
        assert_eq!(backend(Some("a.b.dev.example.com")).unwrap(), "10.0.0.2");
        assert_eq!(backend(Some("dev.example.com")).unwrap(), "10.0.0.1");
        assert_eq!(backend(Some("www.example.com")).unwrap(), "10.0.0.1");
        assert_eq!(backend(Some("example.com")).unwrap(), "10.0.0.5");
        assert_eq!(backend(Some("example.org")).unwrap(), "10.0.0.4");
        assert_eq!(backend(None).unwrap(), "10.0.0.4");
        let http = |host| {
            forwards
                .backend(Protocol::Http, ip(PUBLIC), 80, Some(&name(host)))
                .map(|f| f.target().to_string())
        };
        assert_eq!(http("www.example.com").unwrap(), "10.0.0.6");
        assert_eq!(http("example.com"), None, "no default on port 80");
        assert!(forwards.backend(Protocol::Http, ip(PUBLIC), 443, None).is_none());
        assert!(forwards.backend(Protocol::Tls, ip(PUBLIC), 8443, None).is_none());
    }

    #[test]
    fn name_lookups_respect_listen_addresses() {
        let forwards = table(&[
            "tls 443 --listen 192.0.2.1 --sni a.example --to 10.0.0.1",
            "tls 443 --listen 192.0.2.2 --sni a.example --to 10.0.0.2",
            "tls 443 --sni *.example --to 10.0.0.3",
        ]);
        let backend = |local| {
            forwards
                .backend(Protocol::Tls, ip(local), 443, Some(&name("a.example")))
                .unwrap()
                .target()
                .to_string()
        };
        assert_eq!(backend("192.0.2.1"), "10.0.0.1");
        assert_eq!(backend("192.0.2.2"), "10.0.0.2");
        assert_eq!(backend("192.0.2.3"), "10.0.0.3");
    }

    #[test]
    fn remove_takes_exactly_what_it_names_and_says_when_nothing_is() {
        let mut forwards = table(&[
            "tcp 8000-8010 --to 10.0.0.2",
            "tls 443 --sni a.example --to 10.0.0.3",
            "tls 443 --default --to 10.0.0.4",
            "udp 53 --listen 192.0.2.1 --to 10.0.0.5",
        ]);
        assert_eq!(
            forwards.remove(&selector("tcp 8005")).unwrap_err().to_string(),
            "there is no forward tcp 8005; 'tcp 8000-8010 --to 10.0.0.2' takes its ports: \
             remove it with its own arguments"
        );
        assert_eq!(
            forwards.remove(&selector("udp 54")).unwrap_err().to_string(),
            "there is no forward udp 54"
        );
        assert!(forwards.remove(&selector("tls 443 --sni b.example")).is_err());
        assert!(forwards.remove(&selector("udp 53 --listen 192.0.2.2")).is_err());
        assert_eq!(forwards.len(), 4);
        let removed = forwards.remove(&selector("tls 443 --sni A.example")).unwrap();
        assert_eq!(removed.to_string(), "tls 443 --sni a.example --to 10.0.0.3");
        let fallback = forwards.backend(Protocol::Tls, ip(PUBLIC), 443, Some(&name("a.example")));
        assert_eq!(fallback.unwrap().target().to_string(), "10.0.0.4");
        // Without --listen, the one forward that fits otherwise.
        assert_eq!(
            forwards.remove(&selector("udp 53")).unwrap().selector().listen(),
            Some(ip("192.0.2.1"))
        );
        forwards.remove(&selector("tcp 8000-8010")).unwrap();
        assert!(forwards.port_forward(Transport::Tcp, ip(PUBLIC), 8005).is_none());
        assert_eq!(forwards.forwards(), [forward("tls 443 --default --to 10.0.0.4")]);
    }

    #[test]
    fn remove_without_listen_refuses_to_guess_between_addresses() {
        let mut forwards = table(&[
            "tcp 22 --listen 192.0.2.1 --to 10.0.0.2",
            "tcp 22 --listen 192.0.2.2 --to 10.0.0.3",
        ]);
        assert_eq!(
            forwards.remove(&selector("tcp 22")).unwrap_err().to_string(),
            "2 forwards tcp 22 exist on different addresses: say which with --listen"
        );
        forwards.remove(&selector("tcp 22 --listen 192.0.2.2")).unwrap();
        assert_eq!(forwards.len(), 1);
    }

    #[test]
    fn the_list_keeps_the_order_of_adding_and_the_size_is_bounded() {
        let mut forwards = ForwardTable::new();
        for port in 1..=MAX_FORWARDS as u16 {
            forwards.add(forward(&format!("udp {port} --to 10.0.0.2"))).unwrap();
        }
        assert_eq!(forwards.forwards()[0].selector().ports().first(), 1);
        assert_eq!(
            forwards.forwards()[MAX_FORWARDS - 1].selector().ports().first(),
            MAX_FORWARDS as u16
        );
        assert_eq!(
            add_error(&mut forwards, "udp 60000 --to 10.0.0.2"),
            "an interface keeps at most 4096 forwards"
        );
    }

    #[test]
    fn from_forwards_names_the_first_that_conflicts() {
        let forwards = ["tcp 80 --to 10.0.0.2", "tcp 81 --to 10.0.0.2", "tcp 80-81 --to 10.0.0.3"];
        let (index, error) =
            ForwardTable::from_forwards(forwards.iter().map(|f| forward(f))).unwrap_err();
        assert_eq!(index, 2);
        assert!(matches!(error, TableError::Overlap { .. }));
    }
}
