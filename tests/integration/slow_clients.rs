//! Slow and silent clients, over real sockets against real `lingr` processes: connections that
//! send nothing, trickle headers, idle after a request, flood the server with silent sockets
//! or half-sent giant headers are closed on time, and a normal client is served meanwhile.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::time::Instant;

use crate::support::client::{counters, events};
use crate::support::topology::spawn_role;
use crate::support::{eventually, Client, Db, TestApp};

/// An api and a comet process with the given connection flags.
struct World {
    app: TestApp,
    api: (Child, String),
    comet: (Child, String),
}

impl World {
    /// Both roles with the same connection flags.
    async fn start(flags: &[&str]) -> Self {
        Self::start_with(flags, flags).await
    }

    async fn start_with(api_flags: &[&str], comet_flags: &[&str]) -> Self {
        let app = TestApp::new(Db::Default).await;
        let owned = |flags: &[&str]| flags.iter().map(|f| (*f).to_owned()).collect();
        let api = spawn_role(&app, "api", owned(api_flags)).await;
        let comet = spawn_role(&app, "comet", owned(comet_flags)).await;
        Self { app, api, comet }
    }

    fn api(&self) -> &str {
        &self.api.1
    }

    fn comet(&self) -> &str {
        &self.comet.1
    }

    /// A normal client's visit: enter, say, and observe the say on the comet.
    async fn normal_client_is_served(&self, room: &str) {
        let c = &self.app.client;
        let alice = c.join(self.api(), room, "alice").await;
        let said = c.say_ok(self.api(), &alice, "still served").await;
        let seen = c
            .observe(self.comet(), &alice, alice.counter, 10)
            .await
            .ok();
        assert_eq!(counters(&events(&seen)), [said]);
    }

    async fn stop(mut self) {
        let _ = self.api.0.kill().await;
        let _ = self.comet.0.kill().await;
        self.app.cleanup().await;
    }
}

fn address(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// Waits until the server closes `stream` (EOF or reset), reading and dropping anything it
/// sends; returns how long that took and what was read. Fails after `limit`.
async fn wait_closed(stream: &mut TcpStream, limit: Duration) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut received = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept the connection open for {limit:?}"
    );
    (started.elapsed(), received)
}

/// Whether the server has closed `stream` already (without waiting).
async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Reads one HTTP/1.1 response with a Content-Length; returns its status.
async fn read_response(stream: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read response");
        assert_eq!(
            n,
            1,
            "closed mid-response: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.expect("body");
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status")
}

async fn metric(c: &Client, base: &str, name: &str) -> u64 {
    c.metric(base, name).await.unwrap_or(0)
}

#[tokio::test]
async fn silent_connections_close_after_the_header_read_timeout_while_others_are_served() {
    let world = World::start(&["--header-read-timeout", "2"]).await;
    let mut silent = Vec::new();
    // Taken before the first connect: the server accepted it no earlier.
    let opened = Instant::now();
    for base in [world.api(), world.comet()] {
        for _ in 0..25 {
            silent.push(TcpStream::connect(address(base)).await.expect("connect"));
        }
    }
    world.normal_client_is_served("silent").await;
    // The first one opened is the first to go: it must have lived out the timeout.
    wait_closed(&mut silent[0], Duration::from_secs(20)).await;
    assert!(
        opened.elapsed() >= Duration::from_millis(1950),
        "closed before the timeout: {:?}",
        opened.elapsed()
    );
    for stream in &mut silent[1..] {
        wait_closed(stream, Duration::from_secs(20)).await;
    }
    assert!(
        metric(
            &world.app.client,
            world.api(),
            "lingr_http_connections_timed_out_total"
        )
        .await
            >= 25
    );
    world.stop().await;
}

/// Sends `request` a byte every 150 ms until the server closes the connection, failing if
/// the server took all of it.
async fn trickle_until_cut_off(stream: &mut TcpStream, request: &[u8]) {
    let started = Instant::now();
    let mut sent = 0;
    for byte in request {
        if stream.write_all(&[*byte]).await.is_err() || is_closed(stream).await {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        sent < request.len(),
        "the server waited for {sent} bytes over {:?}",
        started.elapsed()
    );
}

/// A connection to `base` kept alive after one request was answered.
async fn kept_alive(base: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address(base)).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    assert_eq!(read_response(&mut stream).await, 200);
    stream
}

/// A request's head that never ends.
const TRICKLED: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[tokio::test]
async fn headers_trickled_a_byte_at_a_time_are_cut_off() {
    let world = World::start(&["--header-read-timeout", "2"]).await;
    let mut stream = TcpStream::connect(address(world.api()))
        .await
        .expect("connect");
    trickle_until_cut_off(&mut stream, TRICKLED).await;
    world.normal_client_is_served("trickle").await;
    world.stop().await;
}

/// The same on a kept-alive connection, whose idle deadline (a minute here) is far longer:
/// the head of its next request is held to the header deadline from its first byte. Another
/// connection idles since before it, so the registry's sweep of idle connections (in order
/// of idling) stops there and cannot be what cuts this one off.
#[tokio::test]
async fn a_later_requests_headers_trickled_are_cut_off() {
    let world = World::start(&["--header-read-timeout", "2", "--idle-timeout", "60"]).await;
    let idling_before = kept_alive(world.api()).await;
    let mut stream = kept_alive(world.api()).await;
    trickle_until_cut_off(&mut stream, TRICKLED).await;
    world.normal_client_is_served("trickle-later").await;
    drop(idling_before);
    world.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout_then_closes() {
    let world = World::start(&["--header-read-timeout", "1", "--idle-timeout", "4"]).await;
    let mut stream = TcpStream::connect(address(world.api()))
        .await
        .expect("connect");
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(request).await.expect("first request");
    assert_eq!(read_response(&mut stream).await, 200);
    // Idle for longer than the header timeout: a pooled connection must survive that.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stream.write_all(request).await.expect("second request");
    assert_eq!(read_response(&mut stream).await, 200);
    let (idle_for, _) = wait_closed(&mut stream, Duration::from_secs(20)).await;
    assert!(
        idle_for >= Duration::from_millis(3000),
        "closed after {idle_for:?} idle, before the idle timeout"
    );
    world.stop().await;
}

#[tokio::test]
async fn silent_connections_past_the_cap_push_out_the_oldest_and_clients_still_get_in() {
    let world = World::start(&[
        "--header-read-timeout",
        "60",
        "--max-pending-connections",
        "16",
    ])
    .await;
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(
            TcpStream::connect(address(world.api()))
                .await
                .expect("connect"),
        );
    }
    world.normal_client_is_served("flooded").await;
    let c = &world.app.client;
    eventually(
        "the oldest silent connections to be evicted",
        Duration::from_secs(20),
        || async {
            (metric(c, world.api(), "lingr_http_connections_evicted_total").await >= 48)
                .then_some(())
        },
    )
    .await;
    for stream in &mut silent[..48] {
        wait_closed(stream, Duration::from_secs(10)).await;
    }
    let mut still_open = 0;
    for stream in &mut silent[48..] {
        if !is_closed(stream).await {
            still_open += 1;
        }
    }
    assert!(
        still_open > 0,
        "the newest silent connections wait their turn"
    );
    world.stop().await;
}

#[tokio::test]
async fn half_sent_giant_headers_are_refused_not_buffered() {
    let world = World::start(&["--header-read-timeout", "30"]).await;
    let mut giants = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(address(world.api()))
            .await
            .expect("connect");
        let mut head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 380 * 1024));
        // The server may close before taking it all; that is the point.
        let _ = stream.write_all(&head).await;
        giants.push(stream);
    }
    world.normal_client_is_served("giants").await;
    for stream in &mut giants {
        let (_, answer) = wait_closed(stream, Duration::from_secs(10)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer}"
        );
    }
    world.stop().await;
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408_in_time() {
    let world = World::start(&["--header-read-timeout", "2"]).await;
    let mut stream = TcpStream::connect(address(world.api()))
        .await
        .expect("connect");
    stream
        .write_all(
            b"POST /api/session/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"nick",
        )
        .await
        .expect("send");
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(20), read_response(&mut stream))
        .await
        .expect("answered");
    assert_eq!(status, 408);
    assert!(started.elapsed() >= Duration::from_millis(1800));
    world.normal_client_is_served("trickled-body").await;
    world.stop().await;
}

/// Sends a POST of `session/create` declaring `declared` bytes of body and sending `sent`.
async fn post_oversized(stream: &mut TcpStream, declared: usize, sent: usize) {
    let head = format!(
        "POST /api/session/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    // The server may answer and close before all of it is sent; that is what is being tested.
    let _ = stream.write_all(&vec![b'x'; sent]).await;
}

#[tokio::test]
async fn a_body_a_little_too_large_is_read_to_its_end_so_its_413_arrives_on_a_usable_connection() {
    let world = World::start(&[]).await;
    let mut stream = TcpStream::connect(address(world.api()))
        .await
        .expect("connect");
    // Closing with this much unread would reset the connection and could lose the 413.
    post_oversized(&mut stream, 64 * 1024, 64 * 1024).await;
    assert_eq!(read_response(&mut stream).await, 413);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send the next request");
    assert_eq!(read_response(&mut stream).await, 200);

    // A body far past any limit is not owed the bandwidth: refused at once and closed.
    let mut flood = TcpStream::connect(address(world.api()))
        .await
        .expect("connect");
    post_oversized(&mut flood, 64 * 1024 * 1024, 0).await;
    assert_eq!(read_response(&mut flood).await, 413);
    wait_closed(&mut flood, Duration::from_secs(10)).await;
    world.normal_client_is_served("oversized-bodies").await;
    world.stop().await;
}

#[tokio::test]
async fn idle_connections_past_the_connection_cap_make_room_for_new_clients() {
    let world = World::start(&["--max-connections", "24", "--idle-timeout", "600"]).await;
    let mut idle = Vec::new();
    for _ in 0..24 {
        idle.push(kept_alive(world.api()).await);
    }
    // Every descriptor the api allows is held by an idle keep-alive connection; a new client
    // still gets in, each time pushing out the connection idle the longest.
    world.normal_client_is_served("full-house").await;
    wait_closed(&mut idle[0], Duration::from_secs(10)).await;
    let c = &world.app.client;
    assert!(metric(c, world.api(), "lingr_http_connections_evicted_total").await >= 1);
    assert!(
        !is_closed(&mut idle[23]).await,
        "the most recently idle one stays"
    );
    world.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_answer_is_dropped() {
    let world = World::start_with(
        &["--call-rate", "100000", "--call-burst", "100000"],
        &["--write-timeout", "2"],
    )
    .await;
    let c = &world.app.client;
    let alice = c.join(world.api(), "unread", "alice").await;
    let long = "x".repeat(2000);
    for _ in 0..300 {
        c.say_ok(world.api(), &alice, &long).await;
    }
    // A receive window of a few KiB, never read, and twenty answers of half a MiB asked for at
    // once (pipelined): more than the kernel's buffers take, so writing them must wait.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small window");
    let target: std::net::SocketAddr = address(world.comet()).parse().expect("address");
    let mut stream = socket.connect(target).await.expect("connect");
    let request = format!(
        "GET /api/room/observe?session={}&ticket={}&counter={}&timeout=0 HTTP/1.1\r\nHost: x\r\n\r\n",
        alice.session, alice.ticket, alice.counter
    );
    stream
        .write_all(request.repeat(20).as_bytes())
        .await
        .expect("requests");
    let c2 = c.clone();
    let comet = world.comet().to_owned();
    eventually(
        "the stalled writer to be dropped",
        Duration::from_secs(20),
        || {
            let (c, comet) = (c2.clone(), comet.clone());
            async move {
                (metric(&c, &comet, "lingr_http_connections_timed_out_total").await >= 1)
                    .then_some(())
            }
        },
    )
    .await;
    let (_, received) = wait_closed(&mut stream, Duration::from_secs(10)).await;
    let one_answer = c
        .observe(world.comet(), &alice, alice.counter, 0)
        .await
        .body
        .len();
    assert!(
        received.len() < 10 * one_answer,
        "{} bytes of twenty {one_answer}-byte answers went out: the writer was not stopped",
        received.len()
    );
    world.normal_client_is_served("unread-bystander").await;
    world.stop().await;
}

#[tokio::test]
async fn observes_whose_clients_hang_up_leave_no_connection_behind() {
    let world = World::start(&[]).await;
    let c = &world.app.client;
    let mut hung_up = Vec::new();
    for _ in 0..6 {
        let session = c.session(world.api(), None).await;
        let member = c.enter_with(world.api(), &session, "hang-ups", None).await;
        let mut stream = TcpStream::connect(address(world.comet()))
            .await
            .expect("connect");
        let request = format!(
            "GET /api/room/observe?session={}&ticket={}&counter={}&timeout=60 HTTP/1.1\r\nHost: x\r\n\r\n",
            member.session, member.ticket, member.counter
        );
        stream.write_all(request.as_bytes()).await.expect("request");
        hung_up.push(stream);
    }
    c.wait_held(world.comet(), 6).await;
    drop(hung_up);
    c.wait_held(world.comet(), 0).await;
    // Only the connection asking for metrics may remain: nothing the hung-up clients held.
    eventually(
        "the hung-up connections to be gone",
        Duration::from_secs(10),
        || async {
            let open = c.metric(world.comet(), "lingr_http_connections").await?;
            let idle = c
                .metric(world.comet(), "lingr_http_connections_idle")
                .await?;
            (open <= 1 && idle <= 1).then_some(())
        },
    )
    .await;
    world.stop().await;
}
