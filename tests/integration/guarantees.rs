//! Guarantees 1–4 of DESIGN.md, shown with real processes failing: NATS killed and
//! restarted, an api, a comet and a history replica killed, comets alternating and starting
//! late. Every check compares against what JetStream itself stored.

use std::time::Duration;

use lingr_api::ApiConfig;
use lingr_comet::CometConfig;

use crate::support::client::{counters, events, Member};
use crate::support::{
    api_only, comet_only, eventually, fast_api, history_only, Client, Db, Roles, Running, TestApp,
};

/// The counters JetStream holds for `room`, read straight from the stream.
pub async fn stream_counters(app: &TestApp, room: &str) -> Vec<u64> {
    let stream = app.events_stream().await;
    let subject = format!("rooms.{room}.events");
    let mut found = Vec::new();
    let mut next = 1;
    while let Ok(message) = stream
        .direct_get_next_for_subject(subject.as_str(), Some(next))
        .await
    {
        found.push(message.sequence);
        next = message.sequence + 1;
    }
    found
}

/// Waits until history's rows for `room` are exactly the stream's events.
pub async fn history_matches_stream(app: &TestApp, room: &str) -> Vec<u64> {
    let store = lingr_history::store::Store::connect(&app.database_url)
        .await
        .expect("open history database");
    let expected = stream_counters(app, room).await;
    let rows = eventually(
        "history to equal the stream",
        Duration::from_secs(30),
        || async {
            let rows = store.counters(room).await.expect("read rows");
            (rows == expected).then_some(rows)
        },
    )
    .await;
    store.close().await;
    rows
}

/// Observes from `after` until every counter in `wanted` has been seen, alternating between
/// `bases`; returns everything seen, in the order seen.
async fn observe_until(
    c: &Client,
    bases: &[String],
    member: &Member,
    after: u64,
    wanted: &[u64],
) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut counter = after;
    let mut turn = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while !wanted.iter().all(|w| seen.contains(w)) {
            let base = &bases[turn % bases.len()];
            turn += 1;
            let answer = c.observe(base, member, counter, 5).await.ok();
            seen.extend(counters(&events(&answer)));
            counter = answer["counter"].as_u64().expect("counter");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("observers saw {seen:?} but not all of {wanted:?}"));
    seen
}

/// The counters `base` answers from `after` in one observe, asked once it holds the newest
/// of `said` (it is asked for that first), so the answer cannot lack an event still on its
/// way to it.
async fn answered_once_it_holds(
    c: &Client,
    base: &str,
    member: &Member,
    after: u64,
    said: &[u64],
) -> Vec<u64> {
    let newest = c.observe(base, member, said[said.len() - 2], 5).await.ok();
    assert_eq!(counters(&events(&newest)), said[said.len() - 1..]);
    counters(&events(&c.observe(base, member, after, 5).await.ok()))
}

fn assert_increasing(seen: &[u64]) {
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "events must come once each, in counter order: {seen:?}"
    );
}

/// An api, two comets and history, each its own server.
struct Split {
    api: Running,
    comets: Vec<Running>,
    history: Running,
}

impl Split {
    async fn start(app: &TestApp) -> Self {
        Self {
            api: app.start(api_only(fast_api())).await,
            comets: vec![
                app.start(comet_only(CometConfig::default())).await,
                app.start(comet_only(CometConfig::default())).await,
            ],
            history: app.start(history_only()).await,
        }
    }

    fn comet_bases(&self) -> Vec<String> {
        self.comets.iter().map(Running::base).collect()
    }

    async fn stop(self) {
        self.api.stop().await;
        for comet in self.comets {
            comet.stop().await;
        }
        self.history.stop().await;
    }
}

#[tokio::test]
async fn acknowledged_says_survive_a_nats_server_kill_and_restart() {
    let mut app = TestApp::new(Db::Postgres).await;
    let server = app
        .start(Roles {
            api: Some(fast_api()),
            comet: Some(CometConfig::default()),
            history: true,
        })
        .await;
    let base = server.base();
    let c = app.client.clone();
    let alice = c.join(&base, "outage", "alice").await;
    let mut acknowledged = vec![c.say_ok(&base, &alice, "before").await];

    app.kill_nats().await;
    let during = c.say(&base, &alice, "during").await;
    during.assert_error(503, "unavailable");
    app.restart_nats().await;
    let after = eventually(
        "says to be accepted again",
        Duration::from_secs(30),
        || async {
            let answer = c.say(&base, &alice, "after").await;
            (answer.status == 200).then(|| answer.json["counter"].as_u64().expect("counter"))
        },
    )
    .await;
    acknowledged.push(after);
    acknowledged.push(c.say_ok(&base, &alice, "later").await);

    let seen = observe_until(
        &c,
        std::slice::from_ref(&base),
        &alice,
        alice.counter,
        &acknowledged,
    )
    .await;
    assert_increasing(&seen);
    let stream = stream_counters(&app, "outage").await;
    assert_eq!(
        seen,
        stream
            .into_iter()
            .filter(|c| *c > alice.counter)
            .collect::<Vec<_>>()
    );
    history_matches_stream(&app, "outage").await;
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_observer_continues_on_another_comet_when_its_comet_dies() {
    let app = TestApp::new(Db::Postgres).await;
    let mut split = Split::start(&app).await;
    let base = split.api.base();
    let c = &app.client;
    let alice = c.join(&base, "failover", "alice").await;
    let first = c.say_ok(&base, &alice, "one").await;
    let on_first = c
        .observe(&split.comets[0].base(), &alice, alice.counter, 5)
        .await
        .ok();
    assert_eq!(counters(&events(&on_first)), [first]);

    let dead = split.comets.remove(0);
    dead.kill().await;
    let more = [
        c.say_ok(&base, &alice, "two").await,
        c.say_ok(&base, &alice, "three").await,
    ];
    let seen = observe_until(c, &split.comet_bases(), &alice, first, &more).await;
    assert_eq!(seen, more);
    split.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_say_retried_on_another_api_after_the_first_died_is_stored_once() {
    let app = TestApp::new(Db::Postgres).await;
    let first_api = app.start(api_only(ApiConfig::default())).await;
    let second_api = app.start(api_only(ApiConfig::default())).await;
    let history = app.start(history_only()).await;
    let c = &app.client;
    let alice = c.join(&first_api.base(), "retry", "alice").await;
    let params = [
        ("session", alice.session.as_str()),
        ("ticket", alice.ticket.as_str()),
        ("message", "exactly once"),
        ("idempotent_id", "msg-1"),
    ];
    let original = c.get(&first_api.base(), "room/say", &params).await.ok();
    first_api.kill().await;
    let retried = c.get(&second_api.base(), "room/say", &params).await.ok();
    assert_eq!(retried, original, "the retry gets the original answer");
    let stream = stream_counters(&app, "retry").await;
    assert_eq!(
        stream,
        [
            alice.counter,
            original["counter"].as_u64().expect("counter")
        ]
    );
    history_matches_stream(&app, "retry").await;
    second_api.stop().await;
    history.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn observers_alternating_between_two_comets_see_every_event_once_in_order() {
    let app = TestApp::new(Db::Postgres).await;
    let split = Split::start(&app).await;
    let base = split.api.base();
    let c = app.client.clone();
    let watcher = c.join(&base, "busy", "watcher").await;
    let mut sayers = Vec::new();
    for name in ["a", "b", "c"] {
        let member = c.join(&base, "busy", name).await;
        let (c, base) = (c.clone(), base.clone());
        sayers.push(tokio::spawn(async move {
            let mut said = Vec::new();
            for i in 0..30 {
                said.push(c.say_ok(&base, &member, &format!("{i}")).await);
            }
            said
        }));
    }
    let mut said = Vec::new();
    for sayer in sayers {
        said.extend(sayer.await.expect("sayer"));
    }
    let seen = observe_until(&c, &split.comet_bases(), &watcher, watcher.counter, &said).await;
    assert_increasing(&seen);
    let stream: Vec<u64> = stream_counters(&app, "busy")
        .await
        .into_iter()
        .filter(|c| *c > watcher.counter)
        .collect();
    assert_eq!(
        seen, stream,
        "the observer saw exactly the stream's events after its enter"
    );
    history_matches_stream(&app, "busy").await;
    split.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_comet_started_after_events_were_said_fills_them_from_the_stream() {
    let app = TestApp::new(Db::Default).await;
    let api = app.start(api_only(fast_api())).await;
    let base = api.base();
    let c = &app.client;
    let alice = c.join(&base, "late", "alice").await;
    let mut said = Vec::new();
    for i in 0..12 {
        said.push(c.say_ok(&base, &alice, &format!("early {i}")).await);
    }
    let late = app.start(comet_only(CometConfig::default())).await;
    let tiny = app
        .start(comet_only(CometConfig {
            room_buffer: 3,
            ..CometConfig::default()
        }))
        .await;
    for comet in [&late, &tiny] {
        let seen = c
            .observe(&comet.base(), &alice, alice.counter, 5)
            .await
            .ok();
        assert_eq!(
            counters(&events(&seen)),
            said,
            "a new replica answers gaplessly from the stream"
        );
    }
    let mut more = Vec::new();
    for i in 0..8 {
        more.push(c.say_ok(&base, &alice, &format!("later {i}")).await);
    }
    let last_early = *said.last().expect("said");
    let seen = observe_until(c, &[tiny.base(), late.base()], &alice, last_early, &more).await;
    assert_eq!(
        seen, more,
        "a replica whose buffer holds 3 events still answers 8 in order"
    );
    // observe_until's last answer may have come from the other replica.
    assert_eq!(
        answered_once_it_holds(c, &tiny.base(), &alice, alice.counter, &more).await,
        [said.clone(), more.clone()].concat()
    );
    let mut last = Vec::new();
    for i in 0..8 {
        last.push(c.say_ok(&base, &alice, &format!("last {i}")).await);
    }
    // Once the tiny replica holds the newest, its buffer has moved 8 events past the run
    // read above: an old counter is still answered with every event after it, not with
    // the run's part and the rest left for later.
    assert_eq!(
        answered_once_it_holds(c, &tiny.base(), &alice, alice.counter, &last).await,
        [said, more, last].concat(),
        "one answer carries every event after the counter"
    );
    late.stop().await;
    tiny.stop().await;
    api.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_herd_of_old_observes_on_a_fresh_comet_shares_one_read_of_the_stream() {
    let app = TestApp::new(Db::Default).await;
    let api = app.start(api_only(fast_api())).await;
    let base = api.base();
    let c = &app.client;
    let alice = c.join(&base, "herd", "alice").await;
    let mut said = Vec::new();
    for i in 0..40 {
        said.push(
            c.say_ok(&base, &alice, &format!("before the herd {i}"))
                .await,
        );
    }
    let mut herd = Vec::new();
    for _ in 0..8 {
        let session = c.session(&base, None).await;
        let member = c.enter_with(&base, &session, "herd", None).await;
        herd.push(crate::support::client::Member {
            counter: alice.counter,
            ..member
        });
    }
    let comet = app.start(comet_only(CometConfig::default())).await;
    let mut observes = Vec::new();
    for member in &herd {
        for _ in 0..4 {
            let (c, base, member) = (c.clone(), comet.base(), member.clone());
            observes.push(tokio::spawn(async move {
                c.observe(&base, &member, member.counter, 10).await
            }));
        }
    }
    for observe in observes {
        let answer = observe.await.expect("task").ok();
        assert_eq!(
            counters(&events(&answer)),
            said,
            "every observe of the herd is answered in full"
        );
    }
    assert_eq!(
        c.metric(&comet.base(), "lingr_comet_backfills_total").await,
        Some(1),
        "32 observes with the same old counter read the stream once"
    );
    comet.stop().await;
    api.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_comet_takes_in_only_the_rooms_it_has_observers_for_and_lets_go_of_idle_ones() {
    let app = TestApp::new(Db::Default).await;
    let api = app.start(api_only(fast_api())).await;
    let comet = app
        .start(comet_only(CometConfig {
            room_idle: Duration::from_secs(1),
            ..CometConfig::default()
        }))
        .await;
    let (base, c, comet_base) = (api.base(), &app.client, comet.base());
    let alice = c.join(&base, "served", "alice").await;
    let bob = c.join(&base, "elsewhere", "bob").await;
    let held = {
        let (c, comet, alice) = (c.clone(), comet.base(), alice.clone());
        tokio::spawn(async move { c.observe(&comet, &alice, alice.counter, 10).await })
    };
    c.wait_held(&comet.base(), 1).await;
    for i in 0..5 {
        c.say_ok(&base, &bob, &format!("not for this comet {i}"))
            .await;
    }
    let first = c.say_ok(&base, &alice, "for this comet").await;
    let answer = held.await.expect("task").ok();
    assert_eq!(counters(&events(&answer)), [first]);
    let applied = || c.metric(&comet_base, "lingr_comet_events_applied_total");
    assert_eq!(
        applied().await,
        Some(1),
        "the other room's five were not taken in"
    );
    let followed = || c.metric(&comet_base, "lingr_comet_rooms_followed");
    assert_eq!(followed().await, Some(1));

    // Nobody waits on the room for its idle time: the comet lets go of it.
    eventually("the room to be let go", Duration::from_secs(10), || async {
        (followed().await == Some(0)).then_some(())
    })
    .await;
    let unfollowed = c.say_ok(&base, &alice, "while nobody observes here").await;
    // Long enough for a live event to arrive, were the room still followed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(applied().await, Some(1), "a room let go of is not taken in");
    // Observing again follows it again, and what was said meanwhile comes from the stream.
    let next = c.say_ok(&base, &alice, "after").await;
    let seen = c.observe_events(&comet.base(), &alice, first, 2).await;
    assert_eq!(counters(&seen), [unfollowed, next]);
    comet.stop().await;
    api.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn observes_needing_the_stream_answer_503_promptly_while_nats_is_away() {
    let mut app = TestApp::new(Db::Default).await;
    let api = app.start(api_only(fast_api())).await;
    let base = api.base();
    let c = &app.client.clone();
    let alice = c.join(&base, "stranded", "alice").await;
    for i in 0..5 {
        c.say_ok(&base, &alice, &format!("before {i}")).await;
    }
    let mut herd = Vec::new();
    for _ in 0..6 {
        let session = c.session(&base, None).await;
        let member = c.enter_with(&base, &session, "stranded", None).await;
        herd.push(Member {
            counter: alice.counter,
            ..member
        });
    }
    // A fresh comet holds none of the room's events: every observe must read the stream.
    let comet = app.start(comet_only(CometConfig::default())).await;
    app.kill_nats().await;
    let mut observes = Vec::new();
    for member in herd {
        let (c, base) = (c.clone(), comet.base());
        observes.push(tokio::spawn(async move {
            let asked = std::time::Instant::now();
            let answer = c.observe(&base, &member, member.counter, 30).await;
            (answer, asked.elapsed())
        }));
    }
    for observe in observes {
        let (answer, took) = tokio::time::timeout(Duration::from_secs(20), observe)
            .await
            .expect("answered while NATS is away")
            .expect("task");
        answer.assert_error(503, "unavailable");
        // Guarantee 8: each within 5 s, not its turn behind the others' failures.
        assert!(took <= Duration::from_secs(5), "an observe took {took:?}");
    }
    app.restart_nats().await;
    comet.stop().await;
    api.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn the_same_idempotent_id_stores_one_event_and_repeats_the_answer() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let session = c.session(&base, Some("alice")).await;
    let enter = [
        ("session", session.as_str()),
        ("room", "idem"),
        ("idempotent_id", "enter-1"),
    ];
    let entered = c.get(&base, "room/enter", &enter).await.ok();
    let entered_again = c.get(&base, "room/enter", &enter).await.ok();
    for field in ["ticket", "occupant_id", "counter"] {
        assert_eq!(
            entered[field], entered_again[field],
            "{field} of a retried enter"
        );
    }
    let ticket = entered["ticket"].as_str().expect("ticket");
    let base_ref = base.as_str();
    let say = |text: &'static str, id: &'static str| {
        let session = session.clone();
        let ticket = ticket.to_owned();
        let base = base_ref;
        async move {
            let params = [
                ("session", session.as_str()),
                ("ticket", ticket.as_str()),
                ("message", text),
                ("idempotent_id", id),
            ];
            c.get(base, "room/say", &params).await.ok()
        }
    };
    let said = say("once", "k").await;
    let retried = say("once", "k").await;
    assert_eq!(said, retried, "the retry gets the same answer");
    let other = say("twice", "k2").await;
    assert_ne!(other["counter"], said["counter"]);

    let bob = c.join(&base, "idem", "bob").await;
    let bobs = c
        .get(
            &base,
            "room/say",
            &[
                ("session", &bob.session),
                ("ticket", &bob.ticket),
                ("message", "same id, other session"),
                ("idempotent_id", "k"),
            ],
        )
        .await
        .ok();
    assert_ne!(
        bobs["counter"], said["counter"],
        "ids are scoped to the session"
    );
    let stream = stream_counters(&app, "idem").await;
    let expected: Vec<u64> = [
        &entered["counter"],
        &said["counter"],
        &other["counter"],
        &bob.entered["counter"],
        &bobs["counter"],
    ]
    .iter()
    .filter_map(|v| v.as_u64())
    .collect();
    assert_eq!(
        stream, expected,
        "one enter and one message per idempotent id"
    );
    server.stop().await;
    app.cleanup().await;
}

async fn history_survives_restarts_mid_stream(db: Db) {
    let app = TestApp::new(db).await;
    let front = app
        .start(Roles {
            api: Some(fast_api()),
            comet: Some(CometConfig::default()),
            history: false,
        })
        .await;
    let base = front.base();
    let c = app.client.clone();
    let alice = c.join(&base, "ledger", "alice").await;
    let sayer = {
        let (c, base, alice) = (c.clone(), base.clone(), alice.clone());
        tokio::spawn(async move {
            let mut said = Vec::new();
            for i in 0..150 {
                said.push(c.say_ok(&base, &alice, &format!("entry {i}")).await);
            }
            said
        })
    };
    let store = lingr_history::store::Store::connect(&app.database_url)
        .await
        .expect("open history database");
    let mut history = app.start(history_only()).await;
    for round in 1..=2 {
        eventually(
            "history to make progress",
            Duration::from_secs(30),
            || async {
                (store.counters("ledger").await.expect("rows").len() >= round * 40).then_some(())
            },
        )
        .await;
        history.kill().await;
        history = app.start(history_only()).await;
    }
    let said = sayer.await.expect("sayer");
    assert_eq!(said.len(), 150);
    let rows = history_matches_stream(&app, "ledger").await;
    assert_eq!(rows.len(), 151, "the enter and every message, once each");
    store.close().await;
    history.stop().await;
    front.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn history_killed_mid_stream_keeps_every_event_once_on_postgres() {
    history_survives_restarts_mid_stream(Db::Postgres).await;
}

#[tokio::test]
async fn history_killed_mid_stream_keeps_every_event_once_on_sqlite() {
    history_survives_restarts_mid_stream(Db::Sqlite).await;
}

#[tokio::test]
async fn an_observe_older_than_the_stream_is_refused_with_410() {
    let app = TestApp::with_retention(Db::Default, Duration::from_secs(1)).await;
    let api = app.start(api_only(ApiConfig::default())).await;
    let c = &app.client;
    let alice = c.join(&api.base(), "ageing", "alice").await;
    c.say_ok(&api.base(), &alice, "soon gone").await;
    let js = app.jetstream().await;
    eventually(
        "the stream to age its events out",
        Duration::from_secs(20),
        || async {
            let mut stream = js.get_stream("ROOMS").await.ok()?;
            (stream.info().await.ok()?.state.messages == 0).then_some(())
        },
    )
    .await;
    let comet = app.start(comet_only(CometConfig::default())).await;
    c.observe(&comet.base(), &alice, alice.counter, 0)
        .await
        .assert_error(410, "counter_expired");
    let fresh = c.say_ok(&api.base(), &alice, "new").await;
    let seen = c.observe(&comet.base(), &alice, fresh - 1, 5).await.ok();
    assert_eq!(
        counters(&events(&seen)),
        [fresh],
        "observing from a kept counter still works"
    );
    comet.stop().await;
    api.stop().await;
    app.cleanup().await;
}
