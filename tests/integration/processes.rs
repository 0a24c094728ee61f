//! The `lingr` binary as real processes: SIGTERM drains a comet (guarantee 7), the roles run
//! as separate processes against one nats-server and PostgreSQL, and `lingr dev` runs
//! everything on one port with its own nats-server, or says what to install.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::support::client::{counters, events};
use crate::support::{api_only, eventually, free_port, lingr_binary, sigterm, Db, TestApp, SECRET};

/// A running `lingr` process.
struct Process {
    child: Child,
    base: String,
}

impl Process {
    /// Starts `lingr <role>` against the test's NATS and database, and waits until it is ready.
    async fn start(app: &TestApp, role: &str) -> Self {
        let (child, base) = crate::support::topology::spawn_role(app, role, Vec::new()).await;
        Self { child, base }
    }

    /// Sends SIGTERM and waits for the exit status.
    async fn terminate(mut self) -> std::process::ExitStatus {
        sigterm(&self.child).await;
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("status")
    }
}

#[tokio::test]
async fn sigterm_answers_held_observes_at_once_then_the_comet_exits() {
    let app = TestApp::new(Db::Default).await;
    let api = app.start(api_only(lingr_api::ApiConfig::default())).await;
    let comet = Process::start(&app, "comet").await;
    let c = app.client.clone();
    let alice = c.join(&api.base(), "drain", "alice").await;
    let held = {
        let (c, base, alice) = (c.clone(), comet.base.clone(), alice.clone());
        tokio::spawn(async move { c.observe(&base, &alice, alice.counter, 60).await })
    };
    c.wait_held(&comet.base, 1).await;
    let status = comet.terminate().await;
    assert!(status.success(), "a drained comet exits cleanly: {status}");
    // The observe asked to be held for 60 s; it was answered by the drain, well before.
    let answer = tokio::time::timeout(Duration::from_secs(20), held)
        .await
        .expect("answered by the drain")
        .expect("task")
        .ok();
    assert_eq!(answer["events"], json!([]));
    assert_eq!(
        answer["counter"], alice.counter,
        "the counter is unchanged so the client re-observes elsewhere"
    );
    api.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn separate_api_two_comet_and_history_processes_run_the_service() {
    let app = TestApp::new(Db::Postgres).await;
    let api = Process::start(&app, "api").await;
    let comets = [
        Process::start(&app, "comet").await,
        Process::start(&app, "comet").await,
    ];
    let history = Process::start(&app, "history").await;
    let c = &app.client;
    let alice = c.join(&api.base, "procs", "alice").await;
    let bob = c.join(&api.base, "procs", "bob").await;
    let mut said = Vec::new();
    for i in 0..6 {
        said.push(c.say_ok(&api.base, &alice, &format!("p{i}")).await);
    }
    let mut seen = Vec::new();
    let mut counter = bob.counter;
    for turn in 0.. {
        if seen.len() >= said.len() || turn > 50 {
            break;
        }
        let answer = c
            .observe(&comets[turn % 2].base, &bob, counter, 5)
            .await
            .ok();
        seen.extend(counters(&events(&answer)));
        counter = answer["counter"].as_u64().expect("counter");
    }
    assert_eq!(
        seen, said,
        "bob sees every message once, in order, across both comets"
    );
    eventually(
        "history to hold the conversation",
        Duration::from_secs(20),
        || async {
            let page = c.messages(&history.base, "procs", &[]).await.ok();
            (counters(page["messages"].as_array()?).len() == 2 + said.len()).then_some(())
        },
    )
    .await;
    for process in [api, history] {
        assert!(process.terminate().await.success());
    }
    for comet in comets {
        assert!(comet.terminate().await.success());
    }
    app.cleanup().await;
}

#[tokio::test]
async fn dev_without_nats_server_on_path_says_what_to_install() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(lingr_binary())
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("PATH", dir.path())
        .output()
        .await
        .expect("run lingr dev");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nats-server was not found")
            && stderr.contains("apt-get install nats-server"),
        "{stderr}"
    );
}

#[tokio::test]
async fn dev_serves_everything_on_one_port_and_stops_its_own_nats_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut child = Command::new(lingr_binary())
        .args([
            "dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn lingr dev");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let banner = stdout
        .next_line()
        .await
        .expect("read")
        .expect("banner line");
    let nats_port: u16 = banner
        .split("NATS nats://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|ch: char| !ch.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("banner names the NATS port: {banner}"));
    let base = format!("http://127.0.0.1:{port}");
    let c = crate::support::Client::new();
    c.wait_ready(&base).await;
    let alice = c.join(&base, "dev", "alice").await;
    let said = c.say_ok(&base, &alice, "hello from dev").await;
    assert_eq!(
        counters(&events(
            &c.observe(&base, &alice, alice.counter, 5).await.ok()
        )),
        [said]
    );
    eventually("history in SQLite", Duration::from_secs(20), || async {
        let page = c.messages(&base, "dev", &[]).await.ok();
        (page["messages"].as_array()?.len() == 2).then_some(())
    })
    .await;
    assert!(dir.path().join("history.db").exists());
    assert!(dir.path().join("secret").exists());

    sigterm(&child).await;
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success(), "{status}");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", nats_port))
            .await
            .is_err(),
        "the private nats-server stops with lingr dev"
    );
}

#[tokio::test]
async fn a_draining_comet_refuses_new_observes_with_503() {
    use tower::ServiceExt as _;

    let app = TestApp::new(Db::Default).await;
    let api = app.start(api_only(lingr_api::ApiConfig::default())).await;
    let alice = app.client.join(&api.base(), "closing", "alice").await;
    let client = app.lingr_client().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let link = lingr_platform::readiness::Signal::new();
    link.up();
    let context = lingr_platform::role::Context {
        client,
        link,
        tickets: lingr_proto::ticket::TicketKey::new(SECRET.as_bytes()),
        retention: app.retention,
        stream_replicas: 1,
        metrics: lingr_platform::metrics::Metrics::default(),
        shutdown: shutdown.clone(),
    };
    let comet = lingr_comet::start(lingr_comet::CometConfig::default(), &context)
        .await
        .expect("comet starts");
    let router = comet.router;
    shutdown.cancel();
    let uri = format!(
        "/api/room/observe?session={}&ticket={}&counter={}&timeout=30",
        alice.session, alice.ticket, alice.counter
    );
    let request = axum::http::Request::get(uri)
        .body(axum::body::Body::empty())
        .expect("request");
    let response = router.oneshot(request).await.expect("response");
    assert_eq!(response.status(), 503);
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .expect("body");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(json["code"], "draining");
    for task in comet.tasks {
        task.await.expect("comet task ends on shutdown");
    }
    api.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_comet_short_of_file_descriptors_refuses_with_503_instead_of_hanging() {
    let app = TestApp::new(Db::Default).await;
    let api = app.start(api_only(lingr_api::ApiConfig::default())).await;
    let port = free_port();
    // 160 files leave room for 32 held observes beside the comet's headroom of 128.
    let mut comet = Command::new("sh")
        .args(["-c", "ulimit -n 160 && exec \"$0\" \"$@\""])
        .arg(lingr_binary())
        .args([
            "comet",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--nats",
            &app.nats_url(),
            "--secret",
            SECRET,
        ])
        .args(["--observes-per-session", "100"])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn a comet with few descriptors");
    let base = format!("http://127.0.0.1:{port}");
    let c = app.client.clone();
    c.wait_ready(&base).await;
    let alice = c.join(&api.base(), "crowded", "alice").await;
    let mut held = Vec::new();
    for _ in 0..32 {
        let (c, base, alice) = (c.clone(), base.clone(), alice.clone());
        held.push(tokio::spawn(async move {
            c.observe(&base, &alice, alice.counter, 60).await
        }));
    }
    c.wait_held(&base, 32).await;
    for _ in 0..5 {
        c.observe(&base, &alice, alice.counter, 60)
            .await
            .assert_error(503, "overloaded");
    }
    let health = c.request(c.http().get(format!("{base}/healthz"))).await;
    assert_eq!(health.status, 200, "the comet is still standing");
    let said = c.say_ok(&api.base(), &alice, "everyone wake up").await;
    for observe in held {
        assert_eq!(
            counters(&events(&observe.await.expect("task").ok())),
            [said]
        );
    }
    c.observe(&base, &alice, alice.counter, 0).await.ok();
    sigterm(&comet).await;
    assert!(comet.wait().await.expect("status").success());
    api.stop().await;
    app.cleanup().await;
}
