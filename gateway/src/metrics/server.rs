//! The HTTP server of the metrics endpoint: hyper's HTTP/1 server on the daemon's tokio
//! runtime. `GET /metrics` (and `HEAD`) answers with what the scrape function returns, run on
//! the blocking pool (it takes the daemon's lock, which packet threads hold for a protocol
//! step at a time); the response is written after it returned, with the lock released.
//!
//! Bounded so a scraper gone wrong cannot cost the daemon more than a few descriptors: at
//! most [`MAX_CONNECTIONS`] at once (more wait in the kernel's backlog), a request's head must
//! arrive within [`HEADER_TIMEOUT`], and a connection lasts at most [`CONNECTION_LIFETIME`].

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::exposition;

pub const MAX_CONNECTIONS: usize = 16;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// Produces one exposition document; called once per scrape.
pub type Scrape = Arc<dyn Fn() -> String + Send + Sync>;

/// The metrics address cannot be listened on.
#[derive(Debug)]
pub struct BindError {
    pub address: SocketAddr,
    pub error: std::io::Error,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let address = self.address;
        match self.error.kind() {
            std::io::ErrorKind::AddrInUse => {
                write!(f, "metrics address {address} is already in use")
            }
            std::io::ErrorKind::AddrNotAvailable => {
                write!(f, "metrics address {address} is not an address of this host")
            }
            _ => write!(f, "cannot listen for metrics on {address}: {}", self.error),
        }
    }
}

impl std::error::Error for BindError {}

/// Binds the listening socket now (before the daemon detaches, so a taken address is the
/// operator's error on the spot); [`serve`] takes it on the runtime.
pub fn bind(address: SocketAddr) -> Result<std::net::TcpListener, BindError> {
    let error = |error| BindError { address, error };
    let listener = std::net::TcpListener::bind(address).map_err(error)?;
    listener.set_nonblocking(true).map_err(error)?;
    Ok(listener)
}

/// Serves scrapes on `listener` until the runtime stops.
pub async fn serve(listener: std::net::TcpListener, scrape: Scrape) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("metrics endpoint: {e}; no metrics are served");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was taken: try again
                // shortly rather than spin.
                tracing::debug!("metrics endpoint: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let scrape = Arc::clone(&scrape);
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(request, Arc::clone(&scrape)));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            // Past its lifetime a connection is closed; the scraper opens another.
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                tracing::debug!("metrics endpoint: connection: {e}");
            }
            drop(slot);
        });
    }
}

async fn respond(
    request: Request<Incoming>,
    scrape: Scrape,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let readable = matches!(*request.method(), Method::GET | Method::HEAD);
    Ok(match (request.uri().path(), readable) {
        ("/metrics", true) => match tokio::task::spawn_blocking(move || scrape()).await {
            Ok(text) => reply(StatusCode::OK, exposition::CONTENT_TYPE, text),
            Err(e) => {
                tracing::error!("metrics endpoint: collecting the metrics failed: {e}");
                reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    "collecting the metrics failed\n".to_string(),
                )
            }
        },
        ("/", true) => reply(StatusCode::OK, TEXT, "gatewayd: metrics at /metrics\n".to_string()),
        ("/metrics" | "/", false) => {
            let mut response =
                reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET and HEAD\n".to_string());
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
        _ => reply(StatusCode::NOT_FOUND, TEXT, "not found: the metrics are at /metrics\n".into()),
    })
}

const TEXT: &str = "text/plain; charset=utf-8";

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Sends `request` on a new connection and reads until the server closes it.
    async fn exchange(address: SocketAddr, request: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
            .await
            .expect("the server answers and closes")
            .unwrap();
        String::from_utf8(response).unwrap()
    }

    fn request(method: &str, path: &str) -> String {
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn scrapes_answer_with_the_text_format_and_other_requests_do_not() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let scrape: Scrape = Arc::new(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            format!("# TYPE gateway_scrapes counter\ngateway_scrapes_total {n}\n")
        });
        let server = tokio::spawn(serve(listener, scrape));

        let response = exchange(address, &request("GET", "/metrics")).await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{response}"
        );
        assert!(
            response.ends_with("\r\n\r\n# TYPE gateway_scrapes counter\ngateway_scrapes_total 1\n")
        );

        let response = exchange(address, &request("GET", "/metrics")).await;
        assert!(response.ends_with("gateway_scrapes_total 2\n"), "read at each scrape: {response}");

        let response = exchange(address, &request("HEAD", "/metrics")).await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\n"), "no body for HEAD: {response}");

        let response = exchange(address, &request("POST", "/metrics")).await;
        assert!(response.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{response}");
        assert!(response.contains("allow: GET, HEAD\r\n"), "{response}");

        let response = exchange(address, &request("GET", "/elsewhere")).await;
        assert!(response.starts_with("HTTP/1.1 404 Not Found\r\n"), "{response}");

        let response = exchange(address, "this is not HTTP\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{response:?}");

        assert_eq!(calls.load(Ordering::SeqCst), 3, "scraped for GET and HEAD only");
        server.abort();
    }

    #[tokio::test]
    async fn a_scrape_that_fails_is_a_server_error_and_the_server_goes_on() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = listener.local_addr().unwrap();
        let first = Arc::new(AtomicUsize::new(0));
        let scrape: Scrape = Arc::new(move || {
            if first.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("a bug in the collection");
            }
            "gateway_x 1\n".to_string()
        });
        let server = tokio::spawn(serve(listener, scrape));
        let response = exchange(address, &request("GET", "/metrics")).await;
        assert!(response.starts_with("HTTP/1.1 500 Internal Server Error\r\n"), "{response}");
        let response = exchange(address, &request("GET", "/metrics")).await;
        assert!(response.ends_with("gateway_x 1\n"), "{response}");
        server.abort();
    }

    #[test]
    fn an_address_in_use_is_one_line_naming_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let error = bind(address).expect_err("the address is taken").to_string();
        assert_eq!(error, format!("metrics address {address} is already in use"));
    }
}
