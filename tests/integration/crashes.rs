//! Crashes at the worst instant, on real `lingr` processes that a fault point kills with
//! SIGKILL exactly there (built with `--features failpoints`; `./scripts/test` does): an api
//! after JetStream stored a say and before it answered, and history after its commit and
//! before its acks. Each check ends the same way: every acknowledged say reached the observer
//! once, in order, and history holds exactly the stream's events.

use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::time::Duration;

use lingr_comet::CometConfig;
use tokio::process::Child;

use crate::guarantees::{history_matches_stream, stream_counters};
use crate::support::client::{counters, events, Member};
use crate::support::topology::launch_role;
use crate::support::{
    api_only, comet_only, eventually, fast_api, history_only, Client, Db, TestApp,
};

/// Starts `role` with the fault point `point` set to crash it (without waiting until it is
/// ready: it may crash first).
async fn doomed(app: &TestApp, role: &str, point: &str) -> (Child, String) {
    let failpoints = format!("{point}=return");
    let (child, base) = launch_role(
        app,
        role,
        Vec::new(),
        &[("FAILPOINTS", failpoints.as_str())],
        Stdio::inherit(),
    );
    if role == "api" {
        app.client.wait_ready(&base).await;
    }
    (child, base)
}

/// Waits for `child` to die, and checks it died of SIGKILL at its fault point.
async fn killed_at_its_fault_point(child: &mut Child) {
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the process dies at its fault point (built with --features failpoints?)")
        .expect("wait");
    assert_eq!(status.signal(), Some(9), "killed, not exited: {status}");
}

/// Observes from `member`'s counter until `last` has come; returns every counter seen.
async fn observed_through(c: &Client, comet: &str, member: &Member, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut counter = member.counter;
    tokio::time::timeout(Duration::from_secs(30), async {
        while !seen.contains(&last) {
            let answer = c.observe(comet, member, counter, 5).await.ok();
            seen.extend(counters(&events(&answer)));
            counter = answer["counter"].as_u64().expect("counter");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("saw {seen:?}, never {last}"));
    seen
}

#[tokio::test]
async fn an_api_killed_after_storing_a_say_and_before_answering_loses_nothing_and_a_retry_stores_once(
) {
    let app = TestApp::new(Db::Postgres).await;
    let (mut crashing, crashing_base) = doomed(&app, "api", "api::say::stored").await;
    let api = app.start(api_only(fast_api())).await;
    let comet = app.start(comet_only(CometConfig::default())).await;
    let history = app.start(history_only()).await;
    let c = &app.client;
    let alice = c.join(&api.base(), "worst-instant", "alice").await;
    let bob = c.join(&api.base(), "worst-instant", "bob").await;
    let params = [
        ("session", alice.session.as_str()),
        ("ticket", alice.ticket.as_str()),
        ("message", "stored, never answered"),
        ("idempotent_id", "say-1"),
    ];
    let lost = c
        .http()
        .get(format!("{crashing_base}/api/room/say"))
        .query(&params)
        .send()
        .await;
    assert!(lost.is_err(), "the api died before answering: {lost:?}");
    killed_at_its_fault_point(&mut crashing).await;
    let stored = stream_counters(&app, "worst-instant").await;
    assert_eq!(
        stored.len(),
        3,
        "the say was stored before the crash: {stored:?}"
    );

    // The client retries on another replica, as it must when it got no answer.
    let retried = c.get(&api.base(), "room/say", &params).await.ok();
    let said = retried["counter"].as_u64().expect("counter");
    assert_eq!(said, stored[2], "the retry is answered with the stored say");
    assert_eq!(
        stream_counters(&app, "worst-instant").await,
        [alice.counter, bob.counter, said],
        "the say is stored once"
    );
    let seen = observed_through(c, &comet.base(), &bob, said).await;
    assert_eq!(seen, [said], "bob sees it once");
    history_matches_stream(&app, "worst-instant").await;
    history.stop().await;
    comet.stop().await;
    api.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn history_killed_after_its_commit_and_before_its_acks_keeps_every_event_once() {
    let app = TestApp::new(Db::Postgres).await;
    let api = app.start(api_only(fast_api())).await;
    let comet = app.start(comet_only(CometConfig::default())).await;
    let c = &app.client;
    let bob = c.join(&api.base(), "unacked", "bob").await;
    let alice = c.join(&api.base(), "unacked", "alice").await;
    let mut said = Vec::new();
    for i in 0..20 {
        said.push(c.say_ok(&api.base(), &alice, &format!("entry {i}")).await);
    }
    let (mut crashing, _) = doomed(&app, "history", "history::persist::committed").await;
    killed_at_its_fault_point(&mut crashing).await;
    let store = lingr_history::store::Store::connect(&app.database_url)
        .await
        .expect("open history database");
    let committed = store.counters("unacked").await.expect("rows");
    assert!(
        !committed.is_empty(),
        "the first batch was committed before the crash"
    );
    store.close().await;

    // Its successor is handed the unacknowledged batch again, acknowledges it, and stores
    // nothing twice.
    let history = app.start(history_only()).await;
    let stream = app.events_stream().await;
    eventually(
        "the batch to be redelivered and acknowledged",
        Duration::from_secs(30),
        || {
            let stream = stream.clone();
            async move {
                let info = stream
                    .consumer_info(lingr_proto::subjects::HISTORY_CONSUMER)
                    .await
                    .ok()?;
                // Each delivery takes a consumer sequence: past the stream's 22 events means
                // some came twice.
                let redelivered = info.delivered.consumer_sequence > 22;
                (redelivered && info.num_ack_pending == 0 && info.num_pending == 0).then_some(())
            }
        },
    )
    .await;
    let rows = history_matches_stream(&app, "unacked").await;
    assert_eq!(rows.len(), 22, "two enters and every say, once each");
    assert!(said.iter().all(|s| rows.contains(s)));
    let seen = observed_through(c, &comet.base(), &bob, *said.last().expect("a say")).await;
    let mut expected = vec![alice.counter];
    expected.extend(&said);
    assert_eq!(
        seen, expected,
        "bob saw alice enter and every say, once each, in order"
    );
    history.stop().await;
    comet.stop().await;
    api.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_occupant_whose_api_died_before_publishing_its_enter_is_listed_to_nobody() {
    let app = TestApp::new(Db::Postgres).await;
    let (mut crashing, crashing_base) = doomed(&app, "api", "api::enter::before-publish").await;
    let api = app.start(api_only(fast_api())).await;
    let c = &app.client;
    let session = c.session(&crashing_base, Some("ghost")).await;
    let lost = c
        .http()
        .get(format!("{crashing_base}/api/room/enter"))
        .query(&[("session", session.as_str()), ("room", "haunted")])
        .send()
        .await;
    assert!(lost.is_err(), "the api died before answering: {lost:?}");
    killed_at_its_fault_point(&mut crashing).await;
    assert!(
        !app.live_entries(lingr_proto::subjects::OCCUPANTS_BUCKET, ">")
            .await
            .is_empty(),
        "the crash left its occupant stored, without an enter event"
    );

    let bob = c.join(&api.base(), "haunted", "bob").await;
    assert_eq!(
        bob.listed_occupants(),
        std::slice::from_ref(&bob.occupant_id),
        "nobody saw the ghost enter, so nobody is told it is here"
    );
    assert_eq!(stream_counters(&app, "haunted").await, [bob.counter]);
    api.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_occupant_whose_api_died_after_publishing_its_enter_gets_its_exit_when_reaped() {
    let app = TestApp::new(Db::Postgres).await;
    let (mut crashing, crashing_base) = doomed(&app, "api", "api::enter::published").await;
    // A short presence timeout, so the reaper makes the stranded occupant leave soon.
    let reaping = lingr_api::ApiConfig {
        presence_timeout: Duration::from_secs(3),
        reap_interval: Duration::from_millis(300),
        ..fast_api()
    };
    let api = app.start(api_only(reaping)).await;
    let comet = app
        .start(comet_only(CometConfig {
            presence_flush: Duration::from_millis(300),
            ..CometConfig::default()
        }))
        .await;
    let c = &app.client;
    let bob = c.join(&api.base(), "stranded", "bob").await;
    let session = c.session(&crashing_base, Some("ghost")).await;
    let lost = c
        .http()
        .get(format!("{crashing_base}/api/room/enter"))
        .query(&[("session", session.as_str()), ("room", "stranded")])
        .send()
        .await;
    assert!(lost.is_err(), "the api died before answering: {lost:?}");
    killed_at_its_fault_point(&mut crashing).await;

    // Bob saw the ghost enter; he must see it leave, or keep it for good.
    let mut seen = Vec::new();
    let mut counter = bob.counter;
    let exit = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let answer = c.observe(&comet.base(), &bob, counter, 5).await.ok();
            counter = answer["counter"].as_u64().expect("counter");
            seen.extend(events(&answer));
            if let Some(exit) = seen.iter().find(|e| e["type"] == "exit") {
                return exit.clone();
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the ghost never left: bob saw {seen:?}"));
    let enter = seen
        .iter()
        .find(|e| e["type"] == "enter")
        .expect("bob saw the ghost enter");
    assert_eq!(enter["nickname"], "ghost");
    assert_eq!(
        exit["occupant_id"], enter["occupant_id"],
        "the same occupant left"
    );
    assert_eq!(exit["reason"], "timeout");
    comet.stop().await;
    api.stop().await;
    app.cleanup().await;
}
