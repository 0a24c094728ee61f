//! Serving HTTP/1.1 to clients that may be hostile: every connection must earn its place.
//!
//! A connection has [`HttpLimits::header_read_timeout`] to send a request's headers (from
//! when it opened, or from the first byte of a later request), may sit idle between requests
//! for [`HttpLimits::idle_timeout`], and while it has not sent its first request it counts
//! against [`HttpLimits::max_pending_connections`]; when that many wait, the one that has
//! waited longest is closed to admit the new one, so a flood of silent sockets cannot lock
//! out a client that speaks at once. A request being answered (a held observe) has no
//! deadline here: its handler bounds it.
//!
//! hyper's own header-read timeout also runs between keep-alive requests, which would close a
//! load balancer's pooled connections after 10 s; hence this module's watchdog, one per
//! connection, driven by what the connection does.
//!
//! Each request carries the client's address ([`ClientAddr`], read from `X-Forwarded-For` only
//! when the peer is a trusted proxy) and the body timeout.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::config::parse_seconds;
use crate::metrics::{Counter, Gauge, Metrics};
use crate::respond::BodyTimeout;

/// The largest request head (request line and headers) read, and the read buffer's cap: a
/// say of 2,000 emoji percent-encoded in a query is about 24 KiB.
const MAX_HEAD_BYTES: usize = 64 * 1024;

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
    /// Connections that may wait for their first request at once; beyond it the oldest such
    /// connection is closed.
    #[arg(long, env = "LINGR_MAX_PENDING_CONNECTIONS", default_value = "1024")]
    pub max_pending_connections: usize,
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
            max_pending_connections: 1024,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// The address a request comes from, as far as this server can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// A key naming the client for per-address limits, usable as a NATS key: the IPv4
    /// address, or the /64 of an IPv6 address (one subscriber gets a whole /64, so counting
    /// single IPv6 addresses would count nothing).
    pub fn limit_key(&self) -> String {
        match self.0 {
            IpAddr::V4(v4) => {
                let [a, b, c, d] = v4.octets();
                format!("ip4-{a}-{b}-{c}-{d}")
            }
            IpAddr::V6(v6) => {
                let prefix = &v6.octets()[..8];
                format!("ip6-{}", lingr_proto::values::hex(prefix))
            }
        }
    }
}

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8, 127.0.0.1, ::1`.
    ///
    /// # Errors
    /// When an entry is neither an address nor a CIDR block.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("'{entry}' is not an IP address or CIDR block"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The client behind `peer`: the peer itself unless it is trusted, else the rightmost
    /// `X-Forwarded-For` entry that is not a trusted proxy (entries left of it were written
    /// by the client and prove nothing).
    pub fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> ClientAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return ClientAddr(client);
        }
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for entry in forwarded.iter().rev() {
            let Some(hop) = parse_forwarded(entry.trim()) else {
                break;
            };
            client = hop.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        ClientAddr(client)
    }
}

/// An `X-Forwarded-For` entry: an address, with or without a port or IPv6 brackets.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })
}

/// Connection counts for `/metrics`.
#[derive(Clone)]
struct ConnectionMetrics {
    open: Gauge,
    pending: Gauge,
    timed_out: Counter,
    evicted: Counter,
}

impl ConnectionMetrics {
    fn register(metrics: &Metrics) -> Self {
        Self {
            open: metrics.gauge("lingr_http_connections", "HTTP connections open."),
            pending: metrics.gauge(
                "lingr_http_connections_pending",
                "Connections that have not sent their first request yet.",
            ),
            timed_out: metrics.counter(
                "lingr_http_connections_timed_out_total",
                "Connections closed for sending headers too slowly or idling too long.",
            ),
            evicted: metrics.counter(
                "lingr_http_connections_evicted_total",
                "Silent connections closed to admit new ones past the pending cap.",
            ),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` fires, then lets open requests finish for at
/// most `grace` before closing every connection.
///
/// # Errors
/// When the listener fails for good.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    metrics: Metrics,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        // Resolved once: every connection shares this route table.
        app: app.with_state(()),
        pending: Pending::default(),
        metrics: ConnectionMetrics::register(&metrics),
        limits,
        force_close: CancellationToken::new(),
    });
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Admitted here, in accept order, so the longest-waiting is evicted first.
                let connection = admit(&shared);
                connections.spawn(serve_connection(
                    Arc::clone(&shared),
                    connection,
                    stream,
                    peer,
                    shutdown.clone(),
                ));
            }
            Err(err) => {
                // Out of descriptors, most likely: wait for some to close rather than spin.
                tracing::warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
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

/// What every connection of one listener shares.
struct Shared {
    app: Router,
    pending: Pending,
    metrics: ConnectionMetrics,
    limits: HttpLimits,
    force_close: CancellationToken,
}

/// Where a connection is in its life, which fixes its deadline.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Opened; no request yet.
    Opened(Instant),
    /// Between requests.
    Idle(Instant),
    /// The first bytes of a later request arrived at this instant.
    Reading(Instant),
    /// A request is being answered.
    Busy,
    /// Pushed out of the pending set by a newer connection.
    Evicted,
}

/// One connection's state, shared by its socket wrapper, its requests and its watchdog.
struct Connection {
    phase: Mutex<Phase>,
    changed: tokio::sync::Notify,
    pending_id: Mutex<Option<u64>>,
}

impl Connection {
    fn phase(&self) -> Phase {
        self.phase.lock().map_or(Phase::Evicted, |p| *p)
    }

    fn set(&self, next: Phase) {
        if let Ok(mut phase) = self.phase.lock() {
            *phase = next;
        }
        self.changed.notify_one();
    }

    /// Bytes arrived: an idle connection starts reading a request's head.
    fn on_read(&self) {
        let started = match self.phase.lock() {
            Ok(mut phase) if matches!(*phase, Phase::Idle(_)) => {
                *phase = Phase::Reading(Instant::now());
                true
            }
            _ => false,
        };
        if started {
            self.changed.notify_one();
        }
    }

    fn deadline(&self, limits: &HttpLimits) -> Option<Instant> {
        match self.phase() {
            Phase::Opened(at) | Phase::Reading(at) => Some(at + limits.header_read_timeout),
            Phase::Idle(at) => Some(at + limits.idle_timeout),
            Phase::Busy => None,
            Phase::Evicted => Some(Instant::now()),
        }
    }
}

/// Connections that have not sent a request yet, oldest first.
#[derive(Default)]
struct Pending {
    waiting: Mutex<(u64, BTreeMap<u64, Arc<Connection>>)>,
}

impl Pending {
    /// Admits `connection`, evicting the longest-waiting ones beyond `cap`; returns how many
    /// were evicted.
    fn admit(&self, connection: &Arc<Connection>, cap: usize) -> usize {
        let Ok(mut waiting) = self.waiting.lock() else {
            return 0;
        };
        let (next_id, map) = &mut *waiting;
        *next_id += 1;
        map.insert(*next_id, Arc::clone(connection));
        if let Ok(mut id) = connection.pending_id.lock() {
            *id = Some(*next_id);
        }
        let mut evicted = 0;
        while map.len() > cap.max(1) {
            if let Some((_, oldest)) = map.pop_first() {
                oldest.set(Phase::Evicted);
                evicted += 1;
            }
        }
        evicted
    }

    /// Takes `connection` out (it sent a request, or closed); false if it was not in.
    fn remove(&self, connection: &Connection) -> bool {
        let id = connection
            .pending_id
            .lock()
            .ok()
            .and_then(|mut id| id.take());
        match (id, self.waiting.lock()) {
            (Some(id), Ok(mut waiting)) => waiting.1.remove(&id).is_some(),
            _ => false,
        }
    }
}

/// A new connection, counted as open and pending.
fn admit(shared: &Shared) -> Arc<Connection> {
    let connection = Arc::new(Connection {
        phase: Mutex::new(Phase::Opened(Instant::now())),
        changed: tokio::sync::Notify::new(),
        pending_id: Mutex::new(None),
    });
    let metrics = &shared.metrics;
    metrics.open.inc();
    metrics.pending.inc();
    let evicted = shared
        .pending
        .admit(&connection, shared.limits.max_pending_connections);
    metrics.evicted.add(evicted as u64);
    for _ in 0..evicted {
        metrics.pending.dec();
    }
    connection
}

async fn serve_connection(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let metrics = &shared.metrics;

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
    let http = hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD_BYTES)
        // Deadlines are the watchdog's; hyper's would also close pooled idle connections.
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(http);
    let mut graceful = false;
    loop {
        let changed = connection.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let deadline = connection.deadline(&shared.limits);
        tokio::select! {
            result = http.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                break;
            }
            () = until(deadline) => {
                if connection.deadline(&shared.limits).is_some_and(|d| d <= Instant::now()) {
                    if matches!(connection.phase(), Phase::Evicted) {
                        tracing::debug!(%peer, "closing a silent connection to admit a newer one");
                    } else {
                        metrics.timed_out.inc();
                        tracing::debug!(%peer, "closing a connection that sent nothing in time");
                    }
                    break;
                }
            }
            () = &mut changed => {}
            () = shutdown.cancelled(), if !graceful => {
                graceful = true;
                http.as_mut().graceful_shutdown();
            }
            () = shared.force_close.cancelled() => break,
        }
    }
    if shared.pending.remove(&connection) {
        metrics.pending.dec();
    }
    metrics.open.dec();
}

/// Sleeps until `deadline`, or forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Answers one request with the app, marking the connection busy until the answer is ready.
async fn handle(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Result<axum::response::Response, std::convert::Infallible> {
    if shared.pending.remove(&connection) {
        shared.metrics.pending.dec();
    }
    connection.set(Phase::Busy);
    // Idle again when the answer is handed to hyper, or when the client goes away and the
    // request is dropped half-way.
    let _idle_after = IdleOnDrop(&connection);
    let client = shared
        .limits
        .trusted_proxies
        .client_of(peer.ip(), request.headers());
    let extensions = request.extensions_mut();
    extensions.insert(client);
    extensions.insert(ConnectInfo(peer));
    extensions.insert(BodyTimeout(shared.limits.header_read_timeout));
    shared
        .app
        .clone()
        .oneshot(request.map(axum::body::Body::new))
        .await
}

struct IdleOnDrop<'a>(&'a Connection);

impl Drop for IdleOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(Phase::Idle(Instant::now()));
    }
}

/// A socket that tells its connection when bytes arrive.
struct Watched {
    stream: TcpStream,
    connection: Arc<Connection>,
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
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Binds `address`, saying which address failed.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn forwarded(list: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in list {
            headers.append(
                "x-forwarded-for",
                HeaderValue::from_str(value).expect("header"),
            );
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_trusted() {
        let none = TrustedProxies::default();
        let headers = forwarded(&["203.0.113.9"]);
        assert_eq!(none.client_of(ip("10.0.0.5"), &headers).0, ip("10.0.0.5"));
        let proxies = TrustedProxies::parse("10.0.0.0/8").expect("valid");
        assert_eq!(
            proxies.client_of(ip("10.0.0.5"), &headers).0,
            ip("203.0.113.9")
        );
        assert_eq!(
            proxies.client_of(ip("192.0.2.1"), &headers).0,
            ip("192.0.2.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").expect("valid");
        // The client wrote 1.1.1.1 itself; 198.51.100.7 is what our proxy saw.
        let headers = forwarded(&["1.1.1.1, 198.51.100.7", "10.1.2.3"]);
        assert_eq!(
            proxies.client_of(ip("127.0.0.1"), &headers).0,
            ip("198.51.100.7")
        );
        let garbage = forwarded(&["nonsense"]);
        assert_eq!(
            proxies.client_of(ip("10.0.0.1"), &garbage).0,
            ip("10.0.0.1")
        );
        let with_port = forwarded(&["[2001:db8::1]:443"]);
        assert_eq!(
            proxies.client_of(ip("10.0.0.1"), &with_port).0,
            ip("2001:db8::1")
        );
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        let a = ClientAddr(ip("2001:db8:1:2::1")).limit_key();
        let b = ClientAddr(ip("2001:db8:1:2:ffff::9")).limit_key();
        assert_eq!(a, b);
        assert_ne!(a, ClientAddr(ip("2001:db8:1:3::1")).limit_key());
        assert_eq!(
            ClientAddr(ip("::ffff:192.0.2.1").to_canonical()).limit_key(),
            "ip4-192-0-2-1"
        );
        assert!(TrustedProxies::parse("10.0.0.0/8,bogus").is_err());
    }

    #[test]
    fn the_longest_waiting_connection_is_evicted_past_the_cap() {
        let pending = Pending::default();
        let make = || {
            Arc::new(Connection {
                phase: Mutex::new(Phase::Opened(Instant::now())),
                changed: tokio::sync::Notify::new(),
                pending_id: Mutex::new(None),
            })
        };
        let (first, second, third) = (make(), make(), make());
        assert_eq!(pending.admit(&first, 2), 0);
        assert_eq!(pending.admit(&second, 2), 0);
        assert_eq!(pending.admit(&third, 2), 1);
        assert!(matches!(first.phase(), Phase::Evicted));
        assert!(matches!(second.phase(), Phase::Opened(_)));
        assert!(
            pending.remove(&second),
            "a connection that speaks leaves the set"
        );
        assert!(!pending.remove(&first), "the evicted one is gone already");
    }
}
