//! The unix-socket server: accepts `wg`'s connections and answers `get`/`set` requests through
//! a [`UapiHandler`].
//!
//! Connection handling follows wireguard-go (`device/uapi.go`, `IpcHandle`):
//! - a connection carries any number of requests, one after the other;
//! - a first line that is neither `get=1` nor `set=1` closes the connection without a reply;
//! - `get=1` must be followed by the blank line, otherwise the reply is `errno=-22`;
//! - a `set` that fails to parse gets its errno at once (wireguard-go replies at the first bad
//!   line too). The rest of that request, up to its blank line, is read and discarded so that
//!   `wg` can finish writing, and then the connection is closed: wireguard-go would misread
//!   the remaining lines as operations and close it too. Nothing of the request is applied;
//! - a `set` the handler rejects (e.g. port in use) gets that errno, and the connection stays.
//!
//! Each connection is its own task; handler calls run on the blocking pool, so a slow or
//! hostile client only ever holds up itself. Lines longer than [`MAX_LINE_BYTES`] and requests
//! larger than [`MAX_REQUEST_BYTES`] are refused with `errno=-5` (EIO, wireguard-go's answer to
//! an over-long line) and the connection is closed.

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader,
};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use super::error::UapiError;
use super::listener::{self, BindError, SocketFile};
use super::protocol::{
    DeviceSnapshot, DeviceUpdate, Operation, SetParser, SetProgress, format_errno,
    format_get_response,
};

/// The longest line a request may have. The longest valid line (an endpoint with a scoped
/// IPv6 address) is under 100 bytes.
pub const MAX_LINE_BYTES: usize = 4096;
/// The largest `set` request: room for about two million allowed IPs.
pub const MAX_REQUEST_BYTES: usize = 64 << 20;
/// How often the server checks that its socket file still exists.
const SOCKET_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The device behind the socket.
pub trait UapiHandler: Send + Sync + 'static {
    /// The current configuration and statistics.
    fn get(&self) -> DeviceSnapshot;
    /// Applies a validated update (see [`DeviceUpdate`] for the order and semantics), all of it
    /// or, on error, as little as possible.
    fn set(&self, update: DeviceUpdate) -> Result<(), UapiError>;
}

/// Why [`UapiServer::serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeEnd {
    /// The shutdown future completed.
    Shutdown,
    /// The socket file was deleted or replaced: per the cross-platform spec the daemon should
    /// now shut down.
    SocketRemoved,
}

pub struct UapiServer<H> {
    listener: UnixListener,
    socket: SocketFile,
    handler: Arc<H>,
}

impl<H: UapiHandler> UapiServer<H> {
    /// Binds the socket at `path` (see [`super::socket_path`] for the usual one). Must be
    /// called within a tokio runtime with I/O enabled.
    pub fn bind(path: &Path, handler: Arc<H>) -> Result<Self, BindError> {
        // Checked first: tokio would panic when registering the listener without a runtime.
        tokio::runtime::Handle::try_current().map_err(|e| BindError::Io {
            path: path.to_owned(),
            action: "serve (no tokio runtime)",
            source: io::Error::other(e),
        })?;
        let (listener, socket) = listener::bind(path)?;
        Self::from_listener(listener, socket, handler)
    }

    /// Serves a socket bound earlier with [`super::bind_listener`] (a daemon binds before it
    /// detaches, to report a taken name at once). Must be called within a tokio runtime.
    pub fn from_listener(
        listener: std::os::unix::net::UnixListener,
        socket: SocketFile,
        handler: Arc<H>,
    ) -> Result<Self, BindError> {
        let io = |action| {
            let path = socket.path().to_owned();
            move |source| BindError::Io { path, action, source }
        };
        listener.set_nonblocking(true).map_err(io("make non-blocking"))?;
        let listener = UnixListener::from_std(listener).map_err(io("register with tokio"))?;
        Ok(UapiServer { listener, socket, handler })
    }

    pub fn path(&self) -> &Path {
        self.socket.path()
    }

    /// Serves until `shutdown` completes or the socket file disappears. Open connections are
    /// dropped when it returns, and the socket file is removed (if it is still ours).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> ServeEnd {
        let UapiServer { listener, socket, handler } = self;
        let mut connections = JoinSet::new();
        let mut socket_check = tokio::time::interval(SOCKET_CHECK_INTERVAL);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return ServeEnd::Shutdown,
                _ = socket_check.tick() => {
                    if !socket.is_present() {
                        tracing::warn!(path = %socket.path().display(), "UAPI socket removed");
                        return ServeEnd::SocketRemoved;
                    }
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(serve_connection(stream, Arc::clone(&handler)));
                    }
                    // Per-connection failures (e.g. the client already gone) and fd exhaustion
                    // are transient: keep serving, after a pause for the latter.
                    Err(e) => {
                        tracing::warn!("UAPI accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }
}

enum LineRead {
    Complete,
    Eof,
    TooLong,
}

/// Reads one line (without its `\n`) into `line`, refusing lines over `max` bytes.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    line.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(LineRead::Eof);
        }
        let (chunk, found_end) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..end], true),
            None => (available, false),
        };
        if line.len() + chunk.len() > max {
            return Ok(LineRead::TooLong);
        }
        line.extend_from_slice(chunk);
        let consumed = chunk.len() + usize::from(found_end);
        reader.consume(consumed);
        if found_end {
            return Ok(LineRead::Complete);
        }
    }
}

enum SetRead {
    Update(DeviceUpdate),
    /// Parsing failed; `drain` says whether the rest of the request can still be skipped.
    Invalid {
        error: UapiError,
        drain: bool,
    },
    /// The client stopped sending before the blank line.
    Eof,
}

async fn read_set_request<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    budget: &mut usize,
) -> io::Result<SetRead> {
    let mut parser = SetParser::new();
    loop {
        match read_line(reader, line, MAX_LINE_BYTES.min(*budget)).await? {
            LineRead::Eof => return Ok(SetRead::Eof),
            LineRead::TooLong => {
                let error = UapiError::Io(format!(
                    "line or request too long (limits: {MAX_LINE_BYTES} bytes a line, \
                     {MAX_REQUEST_BYTES} a request)"
                ));
                return Ok(SetRead::Invalid { error, drain: false });
            }
            LineRead::Complete => *budget -= line.len().min(*budget),
        }
        match parser.feed_line(line) {
            Ok(SetProgress::NeedMore) => {}
            Ok(SetProgress::Complete(update)) => return Ok(SetRead::Update(update)),
            Err(error) => return Ok(SetRead::Invalid { error, drain: true }),
        }
    }
}

/// Skips the rest of a rejected request, up to its blank line, within the byte budget.
async fn drain_request<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    mut budget: usize,
) -> io::Result<()> {
    while let LineRead::Complete = read_line(reader, line, MAX_LINE_BYTES.min(budget)).await? {
        if line.is_empty() || line == b"\r" {
            break;
        }
        budget -= line.len().min(budget);
    }
    Ok(())
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, UapiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| UapiError::Other(format!("the UAPI handler failed: {e}")))
}

async fn serve_connection<H: UapiHandler>(stream: UnixStream, handler: Arc<H>) {
    if let Err(e) = handle_requests(stream, handler).await {
        tracing::debug!("UAPI connection ended: {e}");
    }
}

async fn handle_requests<H: UapiHandler>(stream: UnixStream, handler: Arc<H>) -> io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        if !matches!(read_line(&mut reader, &mut line, MAX_LINE_BYTES).await?, LineRead::Complete) {
            return Ok(());
        }
        let reply = match Operation::from_line(&line) {
            None => {
                let line = String::from_utf8_lossy(&line);
                tracing::debug!("closing UAPI connection: invalid operation {line:?}");
                return Ok(());
            }
            Some(Operation::Get) => {
                // wireguard-go reads exactly one more byte, which must end the request.
                let Ok(next) = reader.read_u8().await else { return Ok(()) };
                if next == b'\n' {
                    let handler = Arc::clone(&handler);
                    match run_blocking(move || handler.get()).await {
                        Ok(snapshot) => format_get_response(&snapshot),
                        Err(error) => reply_error(&error),
                    }
                } else {
                    reply_error(&UapiError::TrailingGetData)
                }
            }
            Some(Operation::Set) => {
                let mut budget = MAX_REQUEST_BYTES;
                match read_set_request(&mut reader, &mut line, &mut budget).await? {
                    SetRead::Eof => {
                        reply_and_close(&mut writer, &UapiError::Incomplete).await?;
                        return Ok(());
                    }
                    SetRead::Invalid { error, drain } => {
                        reply_and_close(&mut writer, &error).await?;
                        if drain {
                            drain_request(&mut reader, &mut line, budget).await?;
                        }
                        return Ok(());
                    }
                    SetRead::Update(update) => {
                        let handler = Arc::clone(&handler);
                        match run_blocking(move || handler.set(update)).await {
                            Ok(Ok(())) => format_errno(0),
                            Ok(Err(error)) | Err(error) => reply_error(&error),
                        }
                    }
                }
            }
        };
        writer.write_all(reply.as_bytes()).await?;
    }
}

fn reply_error(error: &UapiError) -> String {
    tracing::warn!("UAPI request failed: {error}");
    format_errno(error.errno())
}

async fn reply_and_close(
    writer: &mut tokio::net::unix::OwnedWriteHalf,
    error: &UapiError,
) -> io::Result<()> {
    writer.write_all(reply_error(error).as_bytes()).await?;
    writer.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Unused;

    impl UapiHandler for Unused {
        fn get(&self) -> DeviceSnapshot {
            DeviceSnapshot::default()
        }

        fn set(&self, _: DeviceUpdate) -> Result<(), UapiError> {
            Ok(())
        }
    }

    #[test]
    fn binding_outside_a_runtime_is_an_error_not_a_panic() {
        let path =
            std::env::temp_dir().join(format!("uapi-no-runtime-{}.sock", std::process::id()));
        let result = UapiServer::bind(&path, Arc::new(Unused));
        assert!(matches!(result, Err(BindError::Io { .. })));
        assert!(!path.exists(), "nothing may be left behind");
    }

    #[tokio::test]
    async fn read_line_limits_and_eof() {
        let mut line = Vec::new();
        let mut input: &[u8] = b"abc\n\nlong line\npartial";
        let reader = &mut input;
        assert!(matches!(read_line(reader, &mut line, 16).await.unwrap(), LineRead::Complete));
        assert_eq!(line, b"abc");
        assert!(matches!(read_line(reader, &mut line, 16).await.unwrap(), LineRead::Complete));
        assert!(line.is_empty());
        assert!(matches!(read_line(reader, &mut line, 4).await.unwrap(), LineRead::TooLong));
        let mut input: &[u8] = b"partial";
        assert!(matches!(read_line(&mut input, &mut line, 16).await.unwrap(), LineRead::Eof));
    }
}
