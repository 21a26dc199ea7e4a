//! The network's names: `member.network` (and the controllers' names) answer with their
//! addresses, AAAA and A, from a DNS server each controller serves on its tunnel address.
//! Split DNS: only the network's domain is served here; members' and exported clients'
//! configurations point the domain at it (a client resolves `member` alone through the
//! search domain they set).
//!
//! The server is Hickory DNS's (hickory-server): its catalog with one in-memory authoritative
//! zone, rebuilt from each new network map and swapped in whole, so a query sees one map.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};

use super::map::NetworkMap;

/// Answers may be cached this long: a member's addresses never change while it exists, and
/// a removed member's name is gone from the next map.
const TTL: u32 = 60;
/// How long a TCP client may stay silent.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// The zone of `map`: `<network>.` with an SOA (its serial the map's version), the
/// controllers as its name servers, and an AAAA and an A record per controller and member.
pub fn zone(map: &NetworkMap) -> Result<Catalog, String> {
    let origin = Name::from_str(&format!("{}.", map.network))
        .map_err(|e| format!("the network name as a DNS domain: {e}"))?;
    let name = |label: &str| -> Result<Name, String> {
        Name::from_str(label)
            .and_then(|label| label.append_domain(&origin))
            .map_err(|e| format!("`{label}' as a DNS name: {e}"))
    };
    let mut zone = InMemoryZoneHandler::<hickory_server::net::runtime::TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let serial = map.version as u32;
    let primary = match map.controllers.first() {
        Some(controller) => name(&controller.name)?,
        None => origin.clone(),
    };
    let hostmaster = name("hostmaster")?;
    let soa = SOA::new(primary, hostmaster, serial, 3600, 600, 86_400, TTL);
    zone.upsert_mut(Record::from_rdata(origin.clone(), TTL, RData::SOA(soa)), serial);
    let mut hosts: Vec<(&str, IpAddr, IpAddr)> = Vec::new();
    for controller in &map.controllers {
        zone.upsert_mut(
            Record::from_rdata(origin.clone(), TTL, RData::NS(NS(name(&controller.name)?))),
            serial,
        );
        hosts.push((&controller.name, controller.address.into(), controller.ipv4.into()));
    }
    for member in &map.members {
        hosts.push((&member.name, member.ipv6.into(), member.ipv4.into()));
    }
    for (host, v6, v4) in hosts {
        let owner = name(host)?;
        for address in [v6, v4] {
            let data = match address {
                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                IpAddr::V4(v4) => RData::A(A(v4)),
            };
            zone.upsert_mut(Record::from_rdata(owner.clone(), TTL, data), serial);
        }
    }
    let mut catalog = Catalog::new();
    let handlers: Vec<Arc<dyn ZoneHandler>> = vec![Arc::new(zone)];
    catalog.upsert(LowerName::new(&origin), handlers);
    Ok(catalog)
}

/// The server's request handler: the newest map's catalog.
#[derive(Clone)]
pub struct NetworkNames {
    current: Arc<RwLock<Arc<Catalog>>>,
}

impl NetworkNames {
    pub fn new(map: &NetworkMap) -> Result<NetworkNames, String> {
        Ok(NetworkNames { current: Arc::new(RwLock::new(Arc::new(zone(map)?))) })
    }

    /// Answers from `map` from now on.
    pub fn update(&self, map: &NetworkMap) -> Result<(), String> {
        let catalog = Arc::new(zone(map)?);
        *self.current.write().unwrap_or_else(|poison| poison.into_inner()) = catalog;
        Ok(())
    }
}

#[async_trait::async_trait]
impl RequestHandler for NetworkNames {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let catalog = Arc::clone(&self.current.read().unwrap_or_else(|poison| poison.into_inner()));
        catalog.handle_request::<R, T>(request, response_handle).await
    }
}

/// Serves `names` over UDP and TCP at `address` (port 0: one the kernel picks, the same for
/// both), on the current tokio runtime, until the server is shut down. Returns the server
/// and where it listens.
pub async fn serve(
    names: NetworkNames,
    address: SocketAddr,
) -> std::io::Result<(Server<NetworkNames>, SocketAddr)> {
    let udp = tokio::net::UdpSocket::bind(address).await?;
    let bound = udp.local_addr()?;
    let tcp = tokio::net::TcpListener::bind(bound).await?;
    let mut server = Server::new(names);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_TIMEOUT, 65_535);
    Ok((server, bound))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::network::map::{MapController, MapMember};

    fn map(version: u64, members: &[(&str, &str, &str)]) -> NetworkMap {
        NetworkMap {
            network: "home".to_string(),
            version,
            prefix: "fd12:3456:7800::/40".parse().unwrap(),
            ipv4_pool: "100.64.0.0/10".parse().unwrap(),
            controllers: vec![MapController {
                name: "vps".to_string(),
                public_key: String::new(),
                signing_key: String::new(),
                endpoint: "vps.example.net:51820".to_string(),
                prefix: "fd12:3456:78aa:100::/56".parse().unwrap(),
                address: "fd12:3456:78aa:100::1".parse().unwrap(),
                ipv4: "100.64.0.1".parse().unwrap(),
            }],
            members: members
                .iter()
                .map(|(name, v6, v4)| MapMember {
                    name: name.to_string(),
                    public_key: String::new(),
                    controller: "vps".to_string(),
                    ipv6: v6.parse().unwrap(),
                    ipv4: v4.parse().unwrap(),
                    routes: Vec::new(),
                })
                .collect(),
        }
    }

    /// `dig`'s short answer (or its status line when there is none) for `name` `kind`.
    fn dig(server: SocketAddr, name: &str, kind: &str, tcp: bool) -> String {
        let mut command = Command::new("dig");
        command.args([
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            name,
            kind,
            "+time=2",
            "+tries=1",
        ]);
        if tcp {
            command.arg("+tcp");
        }
        let output = command.output().expect("dig runs (bind9-dnsutils)");
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let status = text
            .lines()
            .find_map(|line| line.split("status: ").nth(1))
            .map(|rest| rest.split(',').next().unwrap_or("").to_string())
            .unwrap_or_else(|| format!("no status in:\n{text}"));
        let answers: Vec<&str> = text
            .lines()
            .skip_while(|line| !line.starts_with(";; ANSWER SECTION:"))
            .skip(1)
            .take_while(|line| !line.is_empty())
            .filter_map(|line| line.split_whitespace().last())
            .collect();
        if answers.is_empty() { status } else { answers.join(" ") }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_and_controllers_resolve_and_a_new_map_is_served_whole() {
        let names =
            NetworkNames::new(&map(1, &[("nas", "fd12:3456:78aa:100::a", "100.64.0.10")])).unwrap();
        let (mut server, address) =
            serve(names.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let ask = move |name: &'static str, kind: &'static str, tcp: bool| {
            tokio::task::spawn_blocking(move || dig(address, name, kind, tcp))
        };
        assert_eq!(ask("nas.home", "AAAA", false).await.unwrap(), "fd12:3456:78aa:100::a");
        assert_eq!(ask("nas.home", "A", true).await.unwrap(), "100.64.0.10");
        assert_eq!(ask("vps.home", "AAAA", false).await.unwrap(), "fd12:3456:78aa:100::1");
        assert_eq!(ask("NAS.Home", "A", false).await.unwrap(), "100.64.0.10", "names ignore case");
        assert_eq!(ask("phone.home", "A", false).await.unwrap(), "NXDOMAIN");
        assert_eq!(
            ask("example.com", "A", false).await.unwrap(),
            "REFUSED",
            "only the network's domain"
        );

        names.update(&map(2, &[("phone", "fd12:3456:78aa:100::b", "100.64.0.11")])).unwrap();
        assert_eq!(ask("phone.home", "A", false).await.unwrap(), "100.64.0.11");
        assert_eq!(ask("nas.home", "A", false).await.unwrap(), "NXDOMAIN", "removed with the map");
        server.shutdown_gracefully().await.unwrap();
    }
}
