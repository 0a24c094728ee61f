//! Serving HTTP/1.1 to clients that may be hostile: every connection must earn its place.
//!
//! A connection has [`HttpLimits::header_read_timeout`] to send a request's headers (from
//! when it opened, or from the first byte of a later request), may sit idle between requests
//! for [`HttpLimits::idle_timeout`], and must take what it is sent: a write the client leaves
//! unread for [`HttpLimits::write_timeout`] closes it. Connections that have sent nothing yet
//! are capped ([`HttpLimits::max_pending_connections`]), and so are connections in all
//! ([`HttpLimits::max_connections`], below the open-files limit): past either, the silent or
//! idle connection that has waited longest is closed to admit the new one (see the `connection`
//! module), so a flood of sockets cannot lock out a client that speaks at once. A request being
//! answered (a held observe) has no deadline here: its handler bounds it.
//!
//! hyper's own header-read timeout also runs between keep-alive requests, which would close a
//! load balancer's pooled connections after 10 s; hence this module's watchdog, one per
//! connection, driven by what the connection does, and woken by the registry's sweeper while
//! a new connection has sent nothing or a connection idles between requests.
//!
//! Each request carries the client's address ([`ClientAddr`], see the `client_addr` module) and
//! the body timeout. Connections are accepted on a thread of their own (the `acceptor`
//! module), so a herd of them is taken as it arrives however busy the runtime is, and each is
//! served on one of the process's single-threaded connection runtimes (the `runtimes`
//! module).

mod acceptor;
mod access;
mod client_addr;
mod connection;
mod runtimes;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use acceptor::Acceptor;
use anyhow::Context as _;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::Instrument as _;

use access::RequestMetrics;
pub use client_addr::{ClientAddr, TrustedProxies};
use connection::{Armed, Connection, Deadlines, Gauges, Phase, Registry};
pub use runtimes::{set_count as set_connection_runtimes, RuntimeNotify};

use crate::config::parse_seconds;
use crate::http::App;
use crate::metrics::{Counter, Metrics};
use crate::respond::BodyTimeout;

/// The largest request head (request line and headers) read, and the read buffer's cap: a
/// say of 2,000 emoji percent-encoded in a query is about 24 KiB.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Descriptors kept free beside connections when their cap follows the open-files limit:
/// NATS, the database, the listener, logs.
const FD_HEADROOM: u64 = 64;

/// How connections are bounded; flags shared by every role.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpLimits {
    /// Seconds a client has to send a request's headers, from connecting or from the first
    /// byte of a later request; also bounds reading a request body.
    #[arg(long, env = "LINGR_HEADER_READ_TIMEOUT", default_value = "10", value_parser = parse_seconds)]
    pub header_read_timeout: Duration,
    /// Seconds a keep-alive connection may sit idle between requests (above a load balancer's
    /// own idle timeout, so it never reuses a connection we are closing).
    #[arg(long, env = "LINGR_IDLE_TIMEOUT", default_value = "75", value_parser = parse_seconds)]
    pub idle_timeout: Duration,
    /// Seconds an answer may wait for the client to read it before the connection is closed.
    #[arg(long, env = "LINGR_WRITE_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub write_timeout: Duration,
    /// Connections that may wait for their first request at once; beyond it the oldest such
    /// connection is closed. As many as the kernel queues unaccepted ([`LISTEN_BACKLOG`]): a
    /// herd the kernel held must not be closed once accepted while its clients (on a loaded
    /// machine or a slow network) are still sending their requests.
    #[arg(long, env = "LINGR_MAX_PENDING_CONNECTIONS", default_value_t = LISTEN_BACKLOG as usize)]
    pub max_pending_connections: usize,
    /// Connections open at once; beyond it the silent or idle connection that has waited
    /// longest is closed, and with none, the new one. Default: the open-files limit less 64.
    #[arg(long, env = "LINGR_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Proxies whose `X-Forwarded-For` is believed: comma-separated addresses or CIDR blocks
    /// (the load balancer's). Without it, the peer address is the client's.
    #[arg(long, env = "LINGR_TRUSTED_PROXIES", default_value = "", value_parser = TrustedProxies::parse)]
    pub trusted_proxies: TrustedProxies,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            write_timeout: Duration::from_secs(30),
            max_pending_connections: LISTEN_BACKLOG as usize,
            max_connections: None,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

impl HttpLimits {
    /// The cap on open connections: as configured, else the open-files limit less headroom.
    fn connection_cap(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            crate::config::open_files_limit().map_or(usize::MAX, |files| {
                usize::try_from(files.saturating_sub(FD_HEADROOM)).unwrap_or(usize::MAX)
            })
        })
    }

    fn deadlines(&self) -> Deadlines {
        Deadlines {
            header_read: self.header_read_timeout,
            idle: self.idle_timeout,
            write: self.write_timeout,
        }
    }
}

/// Connection counts for `/metrics`.
#[derive(Clone)]
struct ConnectionMetrics {
    gauges: Gauges,
    timed_out: Counter,
    evicted: Counter,
    refused: Counter,
}

impl ConnectionMetrics {
    fn register(metrics: &Metrics) -> Self {
        Self {
            gauges: Gauges {
                open: metrics.gauge("lingr_http_connections", "HTTP connections open."),
                pending: metrics.gauge(
                    "lingr_http_connections_pending",
                    "Connections that have not sent their first request yet.",
                ),
                idle: metrics.gauge(
                    "lingr_http_connections_idle",
                    "Keep-alive connections between requests.",
                ),
            },
            timed_out: metrics.counter(
                "lingr_http_connections_timed_out",
                "Connections closed for sending headers too slowly, idling too long or not reading their answer.",
            ),
            evicted: metrics.counter(
                "lingr_http_connections_evicted",
                "Silent or idle connections closed to admit new ones past a connection cap.",
            ),
            refused: metrics.counter(
                "lingr_http_connections_refused",
                "Connections closed at once because every open one was busy.",
            ),
        }
    }
}

/// What every connection of one listener shares.
struct Shared {
    app: App,
    registry: Arc<Registry>,
    metrics: ConnectionMetrics,
    requests: RequestMetrics,
    limits: HttpLimits,
    force_close: CancellationToken,
}

/// Serves `app` on `listener` until `shutdown` fires, then lets open requests finish for at
/// most `grace` before closing every connection.
///
/// # Errors
/// When the accept thread cannot start.
pub async fn serve(
    listener: TcpListener,
    app: App,
    limits: HttpLimits,
    metrics: Metrics,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    let connection_metrics = ConnectionMetrics::register(&metrics);
    let shared = Arc::new(Shared {
        app,
        registry: Arc::new(Registry::new(
            limits.max_pending_connections,
            limits.connection_cap(),
            limits.deadlines(),
            connection_metrics.gauges.clone(),
        )),
        metrics: connection_metrics,
        requests: RequestMetrics::register(&metrics),
        limits,
        force_close: CancellationToken::new(),
    });
    // Not stopped with this future: it ends when the last connection has let go of the
    // registry.
    tokio::spawn(Registry::sweep_while_held(Arc::downgrade(&shared.registry)));
    let connections = TaskTracker::new();
    let acceptor = Acceptor::start(
        listener,
        Arc::clone(&shared),
        connections.clone(),
        shutdown.clone(),
    )
    .context("starting the accept thread")?;
    shutdown.cancelled().await;
    acceptor.stop().await;
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            "requests still open after the grace period; closing"
        );
        shared.force_close.cancel();
        connections.wait().await;
    }
    Ok(())
}

/// hyper's HTTP/1 settings for every connection.
fn http1() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(MAX_HEAD_BYTES)
        // Deadlines are the watchdog's; hyper's would also close pooled idle connections.
        .header_read_timeout(None);
    builder
}

/// Drives one connection until it ends, its deadline passes, or it is evicted.
async fn serve_connection(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    // Judged silent only from here: accepted in a burst, its request may be waiting unread.
    let evicted = shared.registry.listen(&connection);
    shared.metrics.evicted.inc_by(evicted as u64);
    let service = {
        let (shared, connection) = (Arc::clone(&shared), Arc::clone(&connection));
        hyper::service::service_fn(move |request: Request<Incoming>| {
            handle(Arc::clone(&shared), Arc::clone(&connection), peer, request)
        })
    };
    let io = TokioIo::new(Watched {
        stream,
        connection: Arc::clone(&connection),
    });
    let http = http1().serve_connection(io, service);
    let mut http = Box::pin(http);
    // The watchdog is a task of its own, whose verdict this one waits for. A fan-out wakes the
    // connection two or three times per answer, and polling the watchdog's tokens, timer and
    // notification each time was ~5 % of a comet's CPU; and a watchdog's timer firing while an
    // observe is held polled hyper and the observe's own select too.
    let mut watchdog = spawn_watch(
        Arc::clone(&shared),
        Arc::clone(&connection),
        peer,
        Some(shutdown.child_token()),
    );
    loop {
        tokio::select! {
            // Biased towards the connection: a request that has fully arrived is served even
            // if the process was too busy to look until after its deadline.
            biased;
            result = poll_then_wait(http.as_mut(), &connection) => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                break;
            }
            // A watchdog that panicked leaves no one to hold the deadlines: close.
            verdict = &mut watchdog => match verdict.unwrap_or(Verdict::Close) {
                Verdict::Close => break,
                Verdict::Drain => {
                    http.as_mut().graceful_shutdown();
                    watchdog = spawn_watch(Arc::clone(&shared), Arc::clone(&connection), peer, None);
                }
            },
        }
    }
    // Dropping the connection drops any request still in it, whose guard marks the connection
    // idle: that must happen before it is closed, or a closed connection would idle on.
    drop(http);
    shared.registry.close(&connection);
}

/// Polls hyper's side of the connection, telling the connection when the task has to wait for
/// the client ([`Connection::on_wait`]).
fn poll_then_wait<'a, F: Future>(
    mut http: Pin<&'a mut F>,
    connection: &'a Connection,
) -> impl Future<Output = F::Output> + 'a {
    std::future::poll_fn(move |cx| {
        let polled = http.as_mut().poll(cx);
        if polled.is_pending() {
            connection.on_wait();
        }
        polled
    })
}

/// What a connection's watchdog decided.
enum Verdict {
    /// Close the connection now: its deadline passed, or the grace period after shutdown.
    Close,
    /// The server is shutting down: finish the request in hand, then close.
    Drain,
}

/// [`watch`] as a task, stopped when the connection's task drops it.
fn spawn_watch(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    peer: SocketAddr,
    shutdown: Option<CancellationToken>,
) -> AbortOnDropHandle<Verdict> {
    AbortOnDropHandle::new(tokio::spawn(watch(shared, connection, peer, shutdown)))
}

/// Watches one connection until it must close, or until `shutdown` (if given) fires: holds
/// it to its deadline, which its socket, requests and the registry move.
async fn watch(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    peer: SocketAddr,
    shutdown: Option<CancellationToken>,
) -> Verdict {
    // This connection's own children: every connection polling the listener's tokens
    // contended for their one lock.
    let force_close = shared.force_close.child_token();
    let (forced, shutting_down) = (force_close.cancelled(), async {
        match &shutdown {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    });
    let changed = connection.changed().notified();
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(forced, shutting_down, changed, timer);
    let mut armed = None;
    loop {
        let Armed {
            deadline,
            timer: at,
        } = connection.arm();
        if deadline.is_some_and(|due| due <= Instant::now()) {
            if matches!(connection.phase(), Phase::Evicted) {
                tracing::debug!(%peer, "closing a waiting connection to admit a newer one");
            } else {
                shared.metrics.timed_out.inc();
                tracing::debug!(%peer, "closing a connection that missed its deadline");
            }
            return Verdict::Close;
        }
        if let Some(at) = at.filter(|at| armed != Some(*at)) {
            timer.as_mut().reset(at);
        }
        armed = at;
        tokio::select! {
            () = &mut forced => return Verdict::Close,
            () = &mut shutting_down => return Verdict::Drain,
            () = &mut changed => changed.set(connection.changed().notified()),
            // Fires at or before the deadline (which may have moved later since): either
            // way the loop looks again.
            () = &mut timer, if armed.is_some() => armed = None,
        }
    }
}

/// Answers one request with the app, marking the connection busy until the answer is ready.
async fn handle(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Result<axum::response::Response, std::convert::Infallible> {
    shared.registry.busy(&connection);
    // Idle again when the answer is handed to hyper, or when the client goes away and the
    // request is dropped half-way. An answer the client does not read is bounded by the
    // write deadline.
    let _idle_after = IdleOnDrop(&shared, &connection);
    let proxies = &shared.limits.trusted_proxies;
    client_addr::warn_if_untrusted_proxy(proxies, peer.ip(), request.headers());
    let client = proxies.client_of(peer.ip(), request.headers());
    let extensions = request.extensions_mut();
    extensions.insert(client);
    extensions.insert(ConnectInfo(peer));
    extensions.insert(BodyTimeout(shared.limits.header_read_timeout));
    let method = request.method().clone();
    let span = access::span(&method, request.headers());
    let started = Instant::now();
    let response = shared
        .app
        .call(request.map(axum::body::Body::new))
        .instrument(span.clone())
        .await?;
    access::record(
        &shared.requests,
        &span,
        &method,
        &response,
        started.elapsed(),
    );
    Ok(response)
}

struct IdleOnDrop<'a>(&'a Shared, &'a Arc<Connection>);

impl Drop for IdleOnDrop<'_> {
    fn drop(&mut self) {
        self.0.registry.idle(self.1);
    }
}

/// A socket that tells its connection when bytes arrive and when a write has to wait.
struct Watched {
    stream: TcpStream,
    connection: Arc<Connection>,
}

impl Watched {
    fn written<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.connection.on_write(polled.is_pending());
        polled
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.connection.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.written(polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.written(polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.written(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Connections the kernel completes and queues for a listener before it drops the next SYNs.
/// Linux caps it at `net.core.somaxconn` (4096 since 5.4). tokio's default, 1024, overflowed
/// when a herd of clients reconnected at once to a replica busy answering the first of them:
/// each dropped SYN cost its client a retransmission 1, 3 or 7 s later.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `address` with a [`LISTEN_BACKLOG`], saying which address failed.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    let listen = || {
        let socket = match address {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }?;
        // As TcpListener::bind does: a restarted replica can bind while its old
        // connections are in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().with_context(|| format!("binding {address}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More clients than tokio's default backlog (1024) connect while nobody accepts: each is
    /// queued by the kernel, none has its SYN dropped (its connect would then wait for a
    /// retransmission and, with the queue still full, never complete).
    #[tokio::test]
    async fn a_listener_queues_a_herd_of_connections_it_has_not_accepted() {
        const HERD: usize = 2_000;
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let connects = (0..HERD).map(|_| TcpStream::connect(address));
        let connected =
            tokio::time::timeout(Duration::from_secs(20), futures::future::join_all(connects))
                .await
                .expect("a connect waited for a SYN retransmission: the listen queue is too short");
        let failed = connected.iter().filter(|c| c.is_err()).count();
        assert_eq!(failed, 0, "every connect completes");
        drop(listener);
    }

    /// What a connection wrote, and in how many writes.
    #[derive(Default)]
    struct Written {
        bytes: Vec<u8>,
        writes: usize,
    }

    /// A connection that sends one request, then waits, and takes every write whole.
    struct Scripted {
        request: Option<&'static [u8]>,
        written: Arc<std::sync::Mutex<Written>>,
    }

    impl Scripted {
        fn take(&self, bufs: &[&[u8]]) -> Poll<io::Result<usize>> {
            let mut written = self.written.lock().expect("not poisoned");
            written.writes += 1;
            for buf in bufs {
                written.bytes.extend_from_slice(buf);
            }
            Poll::Ready(Ok(bufs.iter().map(|buf| buf.len()).sum()))
        }
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.request.take() {
                Some(request) => {
                    buf.put_slice(request);
                    Poll::Ready(Ok(()))
                }
                None => Poll::Pending,
            }
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.take(&[buf])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let bufs: Vec<&[u8]> = bufs.iter().map(|buf| &buf[..]).collect();
            self.take(&bufs)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// An answer in parts larger than the read buffer's cap (`MAX_HEAD_BYTES`, which hyper
    /// also applied to its queue of parts to write) leaves in one write, head included. A herd
    /// of ~93 KiB observe answers was flushed before each answer's last part, which then took a
    /// `writev` and a TCP segment of its own (`vendor/hyper/LINGR-PATCH.md`).
    #[tokio::test]
    async fn an_answer_in_parts_beyond_the_head_cap_is_written_at_once() {
        use axum::response::IntoResponse as _;
        use bytes::Bytes;
        let parts = vec![
            Bytes::from_static(b"{\"counter\":1,\"events\":["),
            Bytes::from(vec![b'1'; MAX_HEAD_BYTES * 3 / 2]),
            Bytes::from_static(b"]}"),
        ];
        let body_len: usize =
            parts.iter().map(Bytes::len).sum::<usize>() + r#""status":"ok","#.len();
        let written = Arc::new(std::sync::Mutex::new(Written::default()));
        let io = Scripted {
            request: Some(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            written: Arc::clone(&written),
        };
        let service = hyper::service::service_fn(move |_: Request<Incoming>| {
            let reply = crate::Reply::ok_object_parts(crate::respond::Format::Json, parts.clone());
            async move { Ok::<_, std::convert::Infallible>(reply.into_response()) }
        });
        let connection = tokio::spawn(http1().serve_connection(TokioIo::new(io), service));
        let answered = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                {
                    let written = written.lock().expect("not poisoned");
                    if written.bytes.ends_with(b"]}") {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        connection.abort();
        answered.expect("the whole answer was written");
        let written = written.lock().expect("not poisoned");
        let head_len = written
            .bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head")
            + 4;
        assert_eq!(written.bytes.len() - head_len, body_len, "the body whole");
        assert_eq!(written.writes, 1, "head and every part in one write");
    }

    /// A server of a router answering `GET /` with "hi", on a port of its own, and its
    /// address.
    async fn start_server(
        shutdown: CancellationToken,
    ) -> (SocketAddr, tokio::task::JoinHandle<anyhow::Result<()>>) {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let app = App::from(axum::Router::new().route("/", axum::routing::get(|| async { "hi" })));
        let server = tokio::spawn(serve(
            listener,
            app,
            HttpLimits::default(),
            Metrics::default(),
            shutdown,
            Duration::from_secs(1),
        ));
        (address, server)
    }

    /// `GET /` on a new connection, answered whole.
    async fn get_root(address: SocketAddr) -> Vec<u8> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("answer");
        answer
    }

    /// The accept thread hands connections to the runtime until shutdown; then the listening
    /// socket is shut, so a new connection is refused, and `serve` returns.
    #[tokio::test]
    async fn connections_are_served_until_shutdown_and_refused_after() {
        let shutdown = CancellationToken::new();
        let (address, server) = start_server(shutdown.clone()).await;
        let answer = get_root(address).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 200") && answer.ends_with(b"hi"),
            "{answer:?}"
        );
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task")
            .expect("serve");
        assert!(
            TcpStream::connect(address).await.is_err(),
            "a connection after shutdown is refused"
        );
    }

    /// A server whose future is dropped (its task aborted) stops accepting too: the accept
    /// thread must not go on serving for it.
    #[tokio::test]
    async fn a_dropped_server_stops_accepting() {
        let (address, server) = start_server(CancellationToken::new()).await;
        let answer = get_root(address).await;
        assert!(answer.starts_with(b"HTTP/1.1 200"), "served: {answer:?}");
        server.abort();
        assert!(server.await.is_err_and(|err| err.is_cancelled()));
        assert!(
            TcpStream::connect(address).await.is_err(),
            "a connection after the server is gone is refused"
        );
    }
}
