//! A pod's life on real `lingr` processes: alive from the first moment, ready only when it can
//! serve, not thrown out of the load balancer by a momentary NATS reconnect, and on SIGTERM
//! not-ready at once, serving through the drain delay, then answering held observes and exiting
//! within the drain timeout, even with NATS gone.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::process::{Child, Command};

use crate::support::topology::spawn_role;
use crate::support::{
    api_only, eventually, free_port, lingr_binary, sigterm, Client, Db, TestApp, SECRET,
};

/// The status of `base/path`, or none while nothing listens there.
async fn status(c: &Client, base: &str, path: &str) -> Option<u16> {
    let response = c.http().get(format!("{base}{path}")).send().await.ok()?;
    Some(response.status().as_u16())
}

async fn readyz(c: &Client, base: &str) -> u16 {
    status(c, base, "/readyz").await.unwrap_or(0)
}

/// Starts `lingr api` against `nats_url` with `flags` and waits until it is alive (not ready:
/// that is what the caller looks at); returns it and its base URL.
async fn spawn_alive_api(c: &Client, nats_url: &str, flags: &[&str]) -> (Child, String) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let api = Command::new(lingr_binary())
        .args([
            "api",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--nats",
            nats_url,
        ])
        .args(flags)
        .env("LINGR_SECRET", SECRET)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn lingr api");
    eventually("/healthz", Duration::from_secs(10), || async {
        (status(c, &base, "/healthz").await == Some(200)).then_some(())
    })
    .await;
    (api, base)
}

fn owned(flags: &[&str]) -> Vec<String> {
    flags.iter().map(|f| (*f).to_owned()).collect()
}

#[tokio::test]
async fn sigterm_turns_not_ready_serves_through_the_drain_delay_then_answers_held_observes() {
    let app = TestApp::new(Db::Default).await;
    let api = app.start(api_only(lingr_api::ApiConfig::default())).await;
    let (mut comet, base) = spawn_role(&app, "comet", owned(&["--drain-delay", "2"])).await;
    let c = app.client.clone();
    let alice = c.join(&api.base(), "draining", "alice").await;
    let hold = |member: crate::support::client::Member| {
        let (c, base) = (c.clone(), base.clone());
        tokio::spawn(async move {
            let answer = c.observe(&base, &member, member.counter, 60).await;
            (answer, Instant::now())
        })
    };
    let before = hold(alice.clone());
    c.wait_held(&base, 1).await;

    sigterm(&comet).await;
    let terminated = Instant::now();
    eventually("not ready at once", Duration::from_secs(1), || async {
        (readyz(&c, &base).await == 503).then_some(())
    })
    .await;
    // Still serving while the load balancer takes it out: a new observe is held too.
    let session = c.session(&api.base(), None).await;
    let bob = c.enter_with(&api.base(), &session, "draining", None).await;
    let during = hold(bob.clone());
    c.wait_held(&base, 2).await;

    for (held, member) in [(before, &alice), (during, &bob)] {
        let (answer, at) = tokio::time::timeout(Duration::from_secs(20), held)
            .await
            .expect("answered by the drain")
            .expect("task");
        let answer = answer.ok();
        assert_eq!(answer["events"], json!([]));
        assert_eq!(
            answer["counter"], member.counter,
            "observe again elsewhere from here"
        );
        assert!(
            at.duration_since(terminated) >= Duration::from_millis(1500),
            "answered {:?} after SIGTERM, before the 2 s drain delay was over",
            at.duration_since(terminated)
        );
    }
    let status = tokio::time::timeout(Duration::from_secs(20), comet.wait())
        .await
        .expect("exits after draining")
        .expect("status");
    assert!(status.success(), "{status}");
    api.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn alive_before_nats_answers_and_ready_once_it_does() {
    let app = TestApp::new(Db::Default).await;
    let nats_port = free_port();
    let c = &app.client;
    // Alive with nothing listening on the NATS port yet.
    let (mut api, base) = spawn_alive_api(c, &format!("nats://127.0.0.1:{nats_port}"), &[]).await;
    assert_eq!(readyz(c, &base).await, 503, "not ready without NATS");
    c.get(&base, "session/create", &[])
        .await
        .assert_error(503, "unavailable");

    let dir = tempfile::tempdir().expect("temp dir");
    let nats = lingr::dev::NatsServer::start(&dir.path().join("nats"), Some(nats_port), None)
        .await
        .expect("nats-server");
    eventually(
        "ready once NATS answers",
        Duration::from_secs(30),
        || async { (readyz(c, &base).await == 200).then_some(()) },
    )
    .await;
    c.session(&base, Some("alice")).await;
    let _ = api.kill().await;
    nats.kill().await;
    app.cleanup().await;
}

#[tokio::test]
async fn readiness_rides_out_a_nats_blip_and_drops_after_the_grace() {
    let mut app = TestApp::new(Db::Default).await;
    let (mut api, base) = spawn_role(&app, "api", owned(&["--readiness-grace", "3"])).await;
    let c = app.client.clone();
    assert_eq!(readyz(&c, &base).await, 200);

    app.kill_nats().await;
    let killed = Instant::now();
    assert_eq!(
        readyz(&c, &base).await,
        200,
        "a moment without NATS is within the grace"
    );
    eventually(
        "not ready after the grace",
        Duration::from_secs(20),
        || async { (readyz(&c, &base).await == 503).then_some(()) },
    )
    .await;
    assert!(
        killed.elapsed() >= Duration::from_millis(2500),
        "not ready {:?} after NATS went, inside the 3 s grace",
        killed.elapsed()
    );
    app.restart_nats().await;
    eventually("ready again", Duration::from_secs(30), || async {
        (readyz(&c, &base).await == 200).then_some(())
    })
    .await;
    let _ = api.kill().await;
    app.cleanup().await;
}

#[tokio::test]
async fn with_nats_gone_sigterm_still_exits_within_the_drain_timeout() {
    let mut app = TestApp::new(Db::Default).await;
    let (api, _base) = spawn_role(
        &app,
        "api",
        owned(&["--drain-delay", "1", "--drain-timeout", "4"]),
    )
    .await;
    let (comet, _) = spawn_role(
        &app,
        "comet",
        owned(&["--drain-delay", "1", "--drain-timeout", "4"]),
    )
    .await;
    app.kill_nats().await;
    for mut child in [api, comet] {
        sigterm(&child).await;
        let terminated = Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .expect("exits without NATS")
            .expect("status");
        assert!(status.success(), "{status}");
        assert!(
            terminated.elapsed() >= Duration::from_millis(900),
            "the drain delay was kept"
        );
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_comet_whose_feed_fails_turns_not_ready() {
    let app = TestApp::new(Db::Default).await;
    let (mut comet, base) = spawn_role(&app, "comet", owned(&["--readiness-grace", "1"])).await;
    let c = &app.client;
    assert_eq!(readyz(c, &base).await, 200);
    // The stream it consumes is gone: its feed cannot resume.
    app.jetstream()
        .await
        .delete_stream(lingr_proto::subjects::EVENTS_STREAM)
        .await
        .expect("delete the stream");
    eventually(
        "not ready with a failed feed",
        Duration::from_secs(30),
        || async { (readyz(c, &base).await == 503).then_some(()) },
    )
    .await;
    let health = c.request(c.http().get(format!("{base}/healthz"))).await;
    assert_eq!(
        health.status, 200,
        "not ready, but alive: no restart needed"
    );
    let _ = comet.kill().await;
    app.cleanup().await;
}

#[tokio::test]
async fn stream_replicas_reach_nats_and_an_unplaceable_stream_keeps_a_replica_not_ready() {
    let app = TestApp::new(Db::Default).await;
    let c = &app.client;
    // Three replicas cannot be placed on one server: the api stays alive but never ready.
    let (mut wanting_three, base) =
        spawn_alive_api(c, &app.nats_url(), &["--stream-replicas", "3"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        readyz(c, &base).await,
        503,
        "the stream could not be created"
    );
    let _ = wanting_three.kill().await;

    let (mut one, _) = spawn_role(&app, "api", owned(&["--stream-replicas", "1"])).await;
    let mut stream = app.events_stream().await;
    assert_eq!(stream.info().await.expect("info").config.num_replicas, 1);
    let _ = one.kill().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_replica_refuses_the_placeholder_secrets_of_the_example_manifests() {
    let app = TestApp::new(Db::Default).await;
    for (flag, value) in [
        ("--secret", "REPLACE_ME-with-at-least-32-random-characters"),
        ("--nats-token", "REPLACE_ME-nats-token-letters-first"),
    ] {
        let output = Command::new(lingr_binary())
            .args(["api", "--listen", "127.0.0.1:0", "--nats", &app.nats_url()])
            .args([flag, value])
            // The other one is real, so only `flag` can be what is refused.
            .env("LINGR_SECRET", SECRET)
            .output()
            .await
            .expect("run lingr api");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{flag}: started with a placeholder"
        );
        assert!(
            stderr.contains("REPLACE_ME placeholder"),
            "{flag}: {stderr}"
        );
    }
    app.cleanup().await;
}
