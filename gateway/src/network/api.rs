//! The controller's API, inside the tunnel: HTTP/1.1 (hyper) with JSON bodies at the
//! controller's own network address, port [`API_PORT`]. Who asks is the source address, which
//! WireGuard's cryptokey routing vouches for: only the peer allowed that address can send
//! from it. So the API listens on a tunnel address alone, and nothing outside the tunnel
//! reaches it.
//!
//! ```text
//! POST /v1/join          JoinRequest  → JoinAnswer      from an invitation's enrollment address
//! GET  /v1/map?after=N   → SignedMap (200) once its version is above N, or 204 after
//!                          LONG_POLL without one                     from a member's address
//! POST /v1/routes        {"prefix": "192.168.50.0/24"} → RouteRecord from a member's address
//! ```
//!
//! A refusal is `403` with one line of text, which the member shows as it is.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use super::controller::API_PORT;
use super::controller::{JoinAnswer, JoinRequest};
use super::map::SignedMap;

/// How long a map request waits for a newer map before it is answered "nothing new".
pub const LONG_POLL: Duration = Duration::from_secs(25);
/// The largest request body the controller reads.
const MAX_BODY: usize = 16 * 1024;
/// Connections served at once: each member holds one (its long poll), enrollments come and go.
const MAX_CONNECTIONS: usize = 1024;

/// A route request's answer, and one line of `gateway route list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRecord {
    pub member: String,
    pub prefix: IpNet,
    /// `advertised`, `approved` or `rejected`.
    pub state: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvertiseRequest {
    pub prefix: IpNet,
}

/// The newest map, with its version, as the controller publishes it.
pub type MapFeed = watch::Receiver<Arc<(u64, SignedMap)>>;

/// What the API asks of the controller; `Err` is the refusal's one line.
pub trait ControllerApi: Send + Sync + 'static {
    fn join(&self, from: IpAddr, request: JoinRequest) -> Result<JoinAnswer, String>;
    fn advertise(&self, from: IpAddr, prefix: IpNet) -> Result<RouteRecord, String>;
    /// Whether `from` may read the map: a member's or a controller's address.
    fn may_read_map(&self, from: IpAddr) -> bool;
    fn maps(&self) -> MapFeed;
}

/// Serves the API on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, api: Arc<dyn ControllerApi>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!("network API: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let api = Arc::clone(&api);
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(request, from, Arc::clone(&api)));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!("network API: connection from {from}: {e}");
            }
            drop(slot);
        });
    }
}

/// A v4-mapped peer address (a dual-stack socket's) as the IPv4 address it is.
fn source(from: SocketAddr) -> IpAddr {
    match from.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

async fn respond(
    request: Request<Incoming>,
    from: SocketAddr,
    api: Arc<dyn ControllerApi>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let from = source(from);
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    Ok(match (method, path.as_str()) {
        (Method::POST, "/v1/join") => match body::<JoinRequest>(request).await {
            Err(e) => text(StatusCode::BAD_REQUEST, e),
            Ok(join) => match tokio::task::spawn_blocking(move || api.join(from, join)).await {
                Ok(Ok(answer)) => json(&answer),
                Ok(Err(refusal)) => text(StatusCode::FORBIDDEN, refusal),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            },
        },
        (Method::POST, "/v1/routes") => match body::<AdvertiseRequest>(request).await {
            Err(e) => text(StatusCode::BAD_REQUEST, e),
            Ok(advertise) => {
                match tokio::task::spawn_blocking(move || api.advertise(from, advertise.prefix))
                    .await
                {
                    Ok(Ok(route)) => json(&route),
                    Ok(Err(refusal)) => text(StatusCode::FORBIDDEN, refusal),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
        },
        (Method::GET, "/v1/map") => {
            if !api.may_read_map(from) {
                text(StatusCode::FORBIDDEN, format!("{from} is no member's address"))
            } else {
                match after(&query) {
                    Err(e) => text(StatusCode::BAD_REQUEST, e),
                    Ok(held) => match newer_map(api.maps(), held).await {
                        Some(map) => json(&map),
                        None => text(StatusCode::NO_CONTENT, String::new()),
                    },
                }
            }
        }
        (_, "/v1/join" | "/v1/routes" | "/v1/map") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into())
        }
        _ => text(StatusCode::NOT_FOUND, format!("no {path} here")),
    })
}

/// `after=N` of a map request (absent: 0, any map is newer).
fn after(query: &str) -> Result<u64, String> {
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        if let Some(value) = pair.strip_prefix("after=") {
            return value.parse().map_err(|_| format!("after={value} is not a version"));
        }
    }
    Ok(0)
}

/// The first map above version `held`, waiting up to [`LONG_POLL`] for one.
async fn newer_map(mut maps: MapFeed, held: u64) -> Option<SignedMap> {
    let wait = async {
        loop {
            {
                let current = maps.borrow_and_update();
                if current.0 > held {
                    return Some(current.1.clone());
                }
            }
            if maps.changed().await.is_err() {
                return None;
            }
        }
    };
    tokio::time::timeout(LONG_POLL, wait).await.ok().flatten()
}

async fn body<T: serde::de::DeserializeOwned>(request: Request<Incoming>) -> Result<T, String> {
    let bytes = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("cannot read the request: {e}"))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| format!("bad request: {e}"))
}

fn json(value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("answers serialize");
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn text(status: StatusCode, line: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(line)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Why a call to the controller brought no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The controller answered with a refusal (its one line).
    Refused(String),
    /// No answer: unreachable, timed out, or not the API.
    Failed(String),
}

impl From<String> for CallError {
    fn from(why: String) -> Self {
        CallError::Failed(why)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Refused(why) | CallError::Failed(why) => f.write_str(why),
        }
    }
}

/// The member's side: one request to the controller at `to`, sent from `from` (the address
/// the controller knows the member by), with `timeout` for the whole exchange. `Ok(None)`:
/// the controller had nothing new (204).
pub async fn call<T: serde::de::DeserializeOwned>(
    from: IpAddr,
    to: SocketAddr,
    method: Method,
    path_and_query: &str,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Option<T>, CallError> {
    let exchange = async {
        let socket = match to {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::new(from, 0))
            .map_err(|e| format!("cannot send from {from}: {e}"))?;
        let stream = socket.connect(to).await.map_err(|e| format!("cannot reach {to}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(hyper::header::HOST, to.to_string());
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), 4 * 1024 * 1024)
            .collect()
            .await
            .map_err(|e| format!("the answer: {e}"))?
            .to_bytes();
        match status {
            StatusCode::OK => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| CallError::Failed(format!("the controller's answer: {e}"))),
            StatusCode::NO_CONTENT => Ok(None),
            _ => Err(CallError::Refused(String::from_utf8_lossy(&bytes).trim().to_string())),
        }
    };
    let failed = |e: String| CallError::Failed(e);
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(failed(format!("{to} did not answer within {}s", timeout.as_secs()))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::network::map::NetworkMap;

    struct Fake {
        maps: watch::Sender<Arc<(u64, SignedMap)>>,
        members: Vec<IpAddr>,
        advertised: Mutex<Vec<(IpAddr, IpNet)>>,
    }

    impl ControllerApi for Fake {
        fn join(&self, from: IpAddr, request: JoinRequest) -> Result<JoinAnswer, String> {
            Err(format!("invitation refused: {} from {from}", request.invite))
        }
        fn advertise(&self, from: IpAddr, prefix: IpNet) -> Result<RouteRecord, String> {
            self.advertised.lock().unwrap().push((from, prefix));
            Ok(RouteRecord { member: "nas".into(), prefix, state: "advertised".into() })
        }
        fn may_read_map(&self, from: IpAddr) -> bool {
            self.members.contains(&from)
        }
        fn maps(&self) -> MapFeed {
            self.maps.subscribe()
        }
    }

    fn signed(version: u64) -> (u64, SignedMap) {
        let map = NetworkMap {
            network: "home".into(),
            version,
            prefix: "fd12:3456:7800::/40".parse().unwrap(),
            ipv4_pool: "100.64.0.0/10".parse().unwrap(),
            controllers: Vec::new(),
            members: Vec::new(),
        };
        (version, SignedMap::sign(&map, "vps", &SigningKey::from_bytes(&[7; 32])))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn maps_are_long_polled_refusals_are_one_line_and_strangers_read_nothing() {
        let (maps, _) = watch::channel(Arc::new(signed(1)));
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let fake = Arc::new(Fake { maps, members: vec![loopback], advertised: Mutex::default() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, fake.clone()));
        let second = Duration::from_secs(5);

        let map: Option<SignedMap> =
            call(loopback, address, Method::GET, "/v1/map?after=0", None, second).await.unwrap();
        assert_eq!(map.unwrap(), signed(1).1, "a member without a map gets the current one");

        // A poll at the current version waits until the map moves on.
        let poll = tokio::spawn(async move {
            call::<SignedMap>(loopback, address, Method::GET, "/v1/map?after=1", None, second).await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!poll.is_finished(), "nothing newer yet: the poll waits");
        fake.maps.send_replace(Arc::new(signed(2)));
        assert_eq!(poll.await.unwrap().unwrap().unwrap(), signed(2).1);

        let join = JoinRequest {
            invite: "abc".into(),
            secret: String::new(),
            name: "nas".into(),
            public_key: String::new(),
        };
        let refused = call::<JoinAnswer>(
            loopback,
            address,
            Method::POST,
            "/v1/join",
            Some(serde_json::to_vec(&join).unwrap()),
            second,
        )
        .await
        .unwrap_err();
        assert_eq!(refused, CallError::Refused("invitation refused: abc from 127.0.0.1".into()));

        let route: RouteRecord = call(
            loopback,
            address,
            Method::POST,
            "/v1/routes",
            Some(br#"{"prefix": "192.168.50.0/24"}"#.to_vec()),
            second,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(route.state, "advertised");
        assert_eq!(
            fake.advertised.lock().unwrap()[0],
            (loopback, "192.168.50.0/24".parse().unwrap())
        );

        let bad = call::<RouteRecord>(
            loopback,
            address,
            Method::POST,
            "/v1/routes",
            Some(b"{}".to_vec()),
            second,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(bad.starts_with("bad request: missing field `prefix`"), "{bad}");

        // Another loopback address is no member: it reads no map.
        let stranger: IpAddr = "127.0.0.2".parse().unwrap();
        let refused =
            call::<SignedMap>(stranger, address, Method::GET, "/v1/map", None, second).await;
        assert_eq!(refused.unwrap_err().to_string(), "127.0.0.2 is no member's address");
        server.abort();
    }
}
