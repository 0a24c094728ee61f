//! Guarantee 5: presence is true. Silent occupants leave with `reason: timeout` exactly once
//! even with several api replicas reaping; observing keeps an occupant and its session alive;
//! sessions unused for the TTL expire. Timeouts are configured short; every wait is on a
//! condition (events seen, reaper passes counted), never on the clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lingr_api::ApiConfig;
use lingr_comet::CometConfig;
use serde_json::Value;

use lingr_proto::records::OccupantRecord;

use crate::support::client::{events, Member};
use crate::support::{api_only, comet_only, eventually, history_only, Client, Db, TestApp};

/// Short enough for a test, long enough that a scheduler stalled for a second on two busy
/// cores cannot pass for an occupant's silence.
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(3);

/// How often reapers run and comets record presence: a tenth of the timeout, so a number of
/// passes is a number of timeouts.
const TICK: Duration = Duration::from_millis(300);

fn quick_presence() -> ApiConfig {
    ApiConfig {
        presence_timeout: PRESENCE_TIMEOUT,
        reap_interval: TICK,
        ..ApiConfig::default()
    }
}

fn quick_flush() -> CometConfig {
    CometConfig {
        presence_flush: TICK,
        ..CometConfig::default()
    }
}

/// A metric's value from a server's `/metrics`.
async fn metric(c: &Client, base: &str, name: &str) -> u64 {
    c.metric(base, name)
        .await
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

/// Waits until every given api has completed `passes` more reaper passes.
async fn reaper_passes(c: &Client, apis: &[String], passes: u64) {
    let mut targets = Vec::new();
    for base in apis {
        targets.push(metric(c, base, "lingr_api_reaper_passes_total").await + passes);
    }
    for (base, target) in apis.iter().zip(targets) {
        eventually("the reaper to run", Duration::from_secs(30), || async {
            (metric(c, base, "lingr_api_reaper_passes_total").await >= target).then_some(())
        })
        .await;
    }
}

/// Events an observer has seen so far.
type Seen = Arc<Mutex<Vec<Value>>>;

/// Observes in the background, collecting every event into `seen`, until `stop` is set.
fn keep_observing(
    c: &Client,
    comet: String,
    member: &Member,
    stop: Arc<AtomicBool>,
    seen: Seen,
) -> tokio::task::JoinHandle<()> {
    let (c, member) = (c.clone(), member.clone());
    tokio::spawn(async move {
        let mut counter = member.counter;
        while !stop.load(Ordering::SeqCst) {
            let answer = c.observe(&comet, &member, counter, 1).await.ok();
            counter = answer["counter"].as_u64().expect("counter");
            seen.lock().expect("lock").extend(events(&answer));
        }
    })
}

/// Puts an occupant straight into NATS, entered a minute ago under a session that does not
/// exist: what a crashed or raced api call leaves behind.
async fn plant_occupant(
    app: &TestApp,
    room: &str,
    nickname: &str,
    id: u8,
    enter_counter: Option<u64>,
) -> OccupantRecord {
    let record = OccupantRecord {
        room: lingr_proto::RoomId::parse(room).expect("room"),
        occupant_id: lingr_proto::OccupantId::from_bytes(&[id; 16]),
        session_tag: "000000000000000000000000".to_owned(),
        nickname: Some(lingr_proto::Nickname::parse(nickname).expect("nickname")),
        entered_ms: lingr_platform::clock::now_ms() - 60_000,
        enter_counter,
        idempotency_key: None,
        leaving: false,
    };
    let occupants = app
        .jetstream()
        .await
        .get_key_value("lingr_occupants")
        .await
        .expect("occupants bucket");
    occupants
        .put(
            record.key(),
            serde_json::to_vec(&record).expect("json").into(),
        )
        .await
        .expect("occupant");
    record
}

#[tokio::test]
async fn a_silent_occupant_times_out_once_with_two_api_replicas_reaping() {
    let app = TestApp::new(Db::Default).await;
    let apis = [
        app.start(api_only(quick_presence())).await,
        app.start(api_only(quick_presence())).await,
    ];
    let comet = app.start(comet_only(quick_flush())).await;
    let history = app.start(history_only()).await;
    let api_bases: Vec<String> = apis.iter().map(|a| a.base()).collect();
    let c = app.client.clone();

    let watcher = c.join(&api_bases[0], "presence", "watcher").await;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Seen::default();
    let observer = keep_observing(
        &c,
        comet.base(),
        &watcher,
        Arc::clone(&stop),
        Arc::clone(&seen),
    );
    let silent = c.join(&api_bases[1], "presence", "silent").await;

    let exit_seen = eventually(
        "the silent occupant to time out",
        Duration::from_secs(30),
        || async {
            let page = c.messages(&history.base(), "presence", &[]).await.ok();
            page["messages"]
                .as_array()?
                .iter()
                .find(|e| e["type"] == "exit")
                .cloned()
        },
    )
    .await;
    assert_eq!(exit_seen["occupant_id"], silent.occupant_id.as_str());
    assert_eq!(exit_seen["reason"], "timeout");
    // Both reapers get many more chances to emit a second exit (20 passes = 2 timeouts).
    reaper_passes(&c, &api_bases, 20).await;
    let said = c.say_ok(&api_bases[0], &watcher, "still here").await;
    eventually(
        "the watcher to see its own message",
        Duration::from_secs(10),
        || async {
            seen.lock()
                .expect("lock")
                .iter()
                .any(|e| e["counter"] == said)
                .then_some(())
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    observer.await.expect("observer");
    let seen = seen.lock().expect("lock").clone();
    let exits: Vec<&Value> = seen.iter().filter(|e| e["type"] == "exit").collect();
    assert_eq!(
        exits.len(),
        1,
        "exactly one exit, for the silent occupant only: {exits:?}"
    );
    assert_eq!(exits[0]["occupant_id"], silent.occupant_id.as_str());
    c.say(&api_bases[1], &silent, "too late")
        .await
        .assert_error(401, "invalid_ticket");
    c.observe(&comet.base(), &silent, silent.counter, 0)
        .await
        .assert_error(401, "invalid_ticket");
    for server in apis {
        server.stop().await;
    }
    comet.stop().await;
    history.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn sessions_unused_for_the_ttl_expire_while_observing_keeps_one_alive() {
    let app = TestApp::new(Db::Default).await;
    let api = ApiConfig {
        session_ttl: PRESENCE_TIMEOUT,
        reap_interval: TICK,
        ..ApiConfig::default()
    };
    let server = app
        .start(crate::support::all_roles(api, quick_flush()))
        .await;
    let base = server.base();
    let c = app.client.clone();

    let idle = c.session(&base, Some("idle")).await;
    let observer = c.join(&base, "ttl", "observer").await;
    let stop = Arc::new(AtomicBool::new(false));
    let observing = keep_observing(
        &c,
        base.clone(),
        &observer,
        Arc::clone(&stop),
        Seen::default(),
    );

    // Any call would use the idle session, so wait on the reaper, not on the session itself.
    eventually(
        "the reaper to expire the idle session",
        Duration::from_secs(30),
        || async {
            (metric(&c, &base, "lingr_api_sessions_expired_total").await >= 1).then_some(())
        },
    )
    .await;
    c.get(&base, "room/enter", &[("session", &idle), ("room", "ttl")])
        .await
        .assert_error(401, "invalid_session");
    // The observer has outlived the TTL several times over by now.
    reaper_passes(&c, std::slice::from_ref(&base), 30).await;
    c.say_ok(&base, &observer, "observing kept my session")
        .await;
    stop.store(true, Ordering::SeqCst);
    observing.await.expect("observer");
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_occupant_whose_session_vanished_is_made_to_leave() {
    let app = TestApp::new(Db::Default).await;
    let api = ApiConfig {
        reap_interval: TICK,
        ..ApiConfig::default()
    };
    let server = app
        .start(crate::support::all_roles(api, quick_flush()))
        .await;
    let base = server.base();
    let c = app.client.clone();
    let watcher = c.join(&base, "orphans", "watcher").await;

    // What a destroy racing an enter leaves behind: an occupant, present, of no session.
    let presence = presence_bucket(&app).await;
    let now = lingr_platform::clock::now_ms().to_string();
    presence
        .put(
            lingr_proto::OccupantId::from_bytes(&[9; 16]).as_str(),
            now.into(),
        )
        .await
        .expect("presence");
    let ghost = plant_occupant(&app, "orphans", "ghost", 9, Some(1)).await;

    let seen = c.observe_events(&base, &watcher, watcher.counter, 1).await;
    assert_eq!(seen[0]["type"], "exit");
    assert_eq!(seen[0]["occupant_id"], ghost.occupant_id.as_str());
    assert_eq!(seen[0]["reason"], "session_destroyed");
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_occupant_whose_enter_was_never_stored_leaves_without_an_exit_event() {
    let app = TestApp::new(Db::Default).await;
    let server = app
        .start(crate::support::all_roles(quick_presence(), quick_flush()))
        .await;
    let base = server.base();
    let c = app.client.clone();
    let watcher = c.join(&base, "halfway", "watcher").await;
    let stop = Arc::new(AtomicBool::new(false));
    let observing = keep_observing(
        &c,
        base.clone(),
        &watcher,
        Arc::clone(&stop),
        Seen::default(),
    );

    // What an api that died between storing an occupant and publishing its enter leaves behind.
    let half = plant_occupant(&app, "halfway", "half", 7, None).await;
    let occupants = app
        .jetstream()
        .await
        .get_key_value("lingr_occupants")
        .await
        .expect("occupants bucket");
    eventually(
        "the reaper to remove it",
        Duration::from_secs(20),
        || async {
            occupants
                .get(half.key())
                .await
                .expect("read")
                .is_none()
                .then_some(())
        },
    )
    .await;
    let marker = c.say_ok(&base, &watcher, "marker").await;
    let seen = c.observe_events(&base, &watcher, watcher.counter, 1).await;
    assert_eq!(
        crate::support::client::counters(&seen),
        [marker],
        "no exit for an enter nobody saw"
    );
    stop.store(true, Ordering::SeqCst);
    observing.await.expect("observer");
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_occupant_who_only_says_stays_present() {
    let app = TestApp::new(Db::Default).await;
    let api = ApiConfig {
        call_rate: 100.0,
        call_burst: 100,
        ..quick_presence()
    };
    let server = app
        .start(crate::support::all_roles(api, quick_flush()))
        .await;
    let base = server.base();
    let c = app.client.clone();
    let talker = c.join(&base, "talkative", "talker").await;
    // Say every tenth of the timeout while the reaper runs 30 passes (3 timeouts).
    let target = metric(&c, &base, "lingr_api_reaper_passes_total").await + 30;
    let mut pace = tokio::time::interval(PRESENCE_TIMEOUT / 10);
    while metric(&c, &base, "lingr_api_reaper_passes_total").await < target {
        pace.tick().await;
        c.say_ok(&base, &talker, "still talking").await;
    }
    let page = c
        .messages(&base, "talkative", &[("limit", "200")])
        .await
        .ok();
    let exits = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|e| e["type"] == "exit")
        .count();
    assert_eq!(exits, 0, "saying keeps an occupant present");
    server.stop().await;
    app.cleanup().await;
}

/// The presence bucket, as the roles write it.
async fn presence_bucket(app: &TestApp) -> async_nats::jetstream::kv::Store {
    app.jetstream()
        .await
        .get_key_value("lingr_presence")
        .await
        .expect("presence bucket")
}

/// How many writes the presence bucket has taken so far.
async fn presence_writes(app: &TestApp) -> u64 {
    let js = app.jetstream().await;
    let mut stream = js
        .get_stream("KV_lingr_presence")
        .await
        .expect("presence stream");
    stream.info().await.expect("info").state.last_sequence
}

/// The occupants listed by comet replicas' presence batches.
async fn batched_occupants(app: &TestApp) -> Vec<String> {
    use lingr_proto::records::PresenceRecord;
    let mut listed = Vec::new();
    for (_, raw) in app
        .live_entries(lingr_proto::subjects::PRESENCE_BUCKET, "comet.>")
        .await
    {
        if let Ok(PresenceRecord::Batch(batch)) = serde_json::from_slice(&raw) {
            listed.extend(batch.occupants.iter().map(|o| o.as_str().to_owned()));
        }
    }
    listed
}

#[tokio::test]
async fn observers_cost_one_presence_write_per_flush_and_one_reaper_look_per_timeout() {
    const OBSERVERS: u64 = 20;
    let app = TestApp::new(Db::Default).await;
    let server = app
        .start(crate::support::all_roles(quick_presence(), quick_flush()))
        .await;
    let base = server.base();
    let c = app.client.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let mut members = Vec::new();
    let mut observing = Vec::new();
    for i in 0..OBSERVERS {
        let member = c.join(&base, "crowd", &format!("member{i}")).await;
        observing.push(keep_observing(
            &c,
            base.clone(),
            &member,
            Arc::clone(&stop),
            Seen::default(),
        ));
        members.push(member);
    }
    eventually(
        "every observer in the comet's batch",
        Duration::from_secs(30),
        || async {
            let listed = batched_occupants(&app).await;
            members
                .iter()
                .all(|m| listed.contains(&m.occupant_id))
                .then_some(())
        },
    )
    .await;

    let (writes_before, checks_before) = (
        presence_writes(&app).await,
        metric(&c, &base, "lingr_api_reaper_checks_total").await,
    );
    let started = std::time::Instant::now();
    // Three presence timeouts, thirty flushes and reaper passes.
    reaper_passes(&c, std::slice::from_ref(&base), 30).await;
    let elapsed = started.elapsed();
    let writes = presence_writes(&app).await - writes_before;
    let checks = metric(&c, &base, "lingr_api_reaper_checks_total").await - checks_before;
    let flushes = elapsed.as_millis() / TICK.as_millis() + 2;
    // One write per observer per flush was 20 times as many.
    assert!(
        u128::from(writes) <= flushes,
        "{writes} presence writes in {elapsed:?} ({flushes} flushes at most) for {OBSERVERS} observers"
    );
    // Looking at everyone every pass was 30 looks each.
    let timeouts = elapsed.as_millis() / PRESENCE_TIMEOUT.as_millis() + 2;
    assert!(
        u128::from(checks) <= u128::from(OBSERVERS) * timeouts,
        "{checks} reaper looks in {elapsed:?} ({timeouts} timeouts) for {OBSERVERS} observers"
    );
    assert_eq!(
        metric(&c, &base, "lingr_api_presence_timeouts_total").await,
        0,
        "observing keeps every occupant present"
    );
    stop.store(true, Ordering::SeqCst);
    for task in observing {
        task.await.expect("observer");
    }
    server.stop().await;
    app.cleanup().await;
}
