//! Guarantee 6: every limit of DESIGN.md crossed gets a clear error, stores nothing, and the
//! service works afterwards. "Nothing stored" is shown by the next accepted say getting the
//! very next counter, in rooms where nobody else acts.

use std::time::Duration;

use lingr_api::ApiConfig;
use lingr_comet::CometConfig;
use serde_json::json;

use crate::support::client::{counters, events, Member};
use crate::support::{all_roles, eventually, Client, Db, TestApp};

/// Says `text` and checks the counter follows `last` directly: nothing was stored between.
async fn say_next(c: &Client, base: &str, member: &Member, last: u64) -> u64 {
    let counter = c.say_ok(base, member, "still works").await;
    assert_eq!(
        counter,
        last + 1,
        "a refused call must not have stored an event"
    );
    counter
}

#[tokio::test]
async fn message_length_is_1_to_2000_characters_and_not_only_white_space() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let alice = c.join(&base, "lengths", "alice").await;

    let longest = "😀".repeat(2000);
    let last = c.say_ok(&base, &alice, &longest).await;
    for bad in ["😀".repeat(2001), String::new(), " \n\t ".to_owned()] {
        let answer = c.say(&base, &alice, &bad).await;
        if bad.is_empty() {
            answer.assert_error(400, "missing_parameter");
        } else {
            answer.assert_error(400, "invalid_message");
        }
    }
    say_next(c, &base, &alice, last).await;
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn nicknames_are_1_to_32_characters_without_control_characters() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let longest = "é".repeat(32);
    let alice = c.join(&base, "names", &longest).await;
    assert_eq!(
        alice.entered["room"]["occupants"][0]["nickname"],
        longest.as_str()
    );
    let too_long = "é".repeat(33);
    for bad in [too_long.as_str(), "bell\u{7}", "   ", "new\nline"] {
        c.get(&base, "session/create", &[("nickname", bad)])
            .await
            .assert_error(400, "invalid_nickname");
        c.get(
            &base,
            "room/enter",
            &[
                ("session", &alice.session),
                ("room", "names"),
                ("nickname", bad),
            ],
        )
        .await
        .assert_error(400, "invalid_nickname");
        c.get(
            &base,
            "room/set_nickname",
            &[
                ("session", &alice.session),
                ("ticket", &alice.ticket),
                ("nickname", bad),
            ],
        )
        .await
        .assert_error(400, "invalid_nickname");
    }
    let last = c.say_ok(&base, &alice, "first").await;
    say_next(c, &base, &alice, last).await;
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn room_ids_must_be_single_subject_tokens() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let session = c.session(&base, Some("eve")).await;
    let too_long = "r".repeat(65);
    for bad in ["a.b", "a*", ">", "rooms.x", "a b", "ü", too_long.as_str()] {
        c.get(&base, "room/enter", &[("session", &session), ("room", bad)])
            .await
            .assert_error(400, "invalid_room");
        c.messages(&base, bad, &[])
            .await
            .assert_error(400, "invalid_room");
    }
    let longest = "r".repeat(64);
    let member = c.enter_with(&base, &session, &longest, None).await;
    assert_eq!(member.entered["room"]["id"], longest.as_str());
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn bodies_over_16_kib_are_refused_with_413_and_bad_bodies_with_400() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let alice = c.join(&base, "bodies", "alice").await;
    let last = c.say_ok(&base, &alice, "before").await;

    let padding = "x".repeat(16 * 1024);
    let big = json!({"session": alice.session, "ticket": alice.ticket, "message": "hi", "padding": padding});
    c.post_json(&base, "room/say", &big)
        .await
        .assert_error(413, "body_too_large");
    let big_form = c
        .post_form(
            &base,
            "room/say",
            &[
                ("session", &alice.session),
                ("ticket", &alice.ticket),
                ("message", &padding),
            ],
        )
        .await;
    big_form.assert_error(413, "body_too_large");
    c.post_raw(&base, "room/say", "application/json", b"{not json".to_vec())
        .await
        .assert_error(400, "invalid_body");
    c.post_raw(
        &base,
        "room/say",
        "application/json",
        br#"{"message": ["a"]}"#.to_vec(),
    )
    .await
    .assert_error(400, "invalid_body");

    let exactly_fits = json!({"session": alice.session, "ticket": alice.ticket, "message": "fits"});
    let counter = c.post_json(&base, "room/say", &exactly_fits).await.ok()["counter"]
        .as_u64()
        .expect("counter");
    assert_eq!(counter, last + 1);
    server.stop().await;
    app.cleanup().await;
}

/// Says as fast as possible, round-robin over `bases`, until refused; checks the refusal and
/// that no more were accepted than a burst of 20 plus 10 a second allows. Returns the counter
/// of the last accepted say.
async fn say_until_rate_limited(c: &Client, bases: &[String], member: &Member) -> u64 {
    let started = std::time::Instant::now();
    let (mut last, mut accepted) = (0, 0u32);
    for i in 0..200 {
        let answer = c
            .say(&bases[i % bases.len()], member, &format!("burst {i}"))
            .await;
        if answer.status == 429 {
            answer.assert_error(429, "rate_limited");
            let elapsed = started.elapsed().as_secs_f64();
            // 20 at once, plus 10 for every second the loop took: never more, never fewer than 20.
            let allowed = 20.0 + 10.0 * elapsed;
            assert!(
                accepted >= 20 && f64::from(accepted) <= allowed + 1.0,
                "accepted {accepted} in {elapsed:.2}s over {} replicas; allowed {allowed:.1}",
                bases.len()
            );
            return last;
        }
        last = answer.ok()["counter"].as_u64().expect("counter");
        accepted += 1;
    }
    panic!("200 says in a row were never rate limited");
}

#[tokio::test]
async fn say_is_limited_to_a_burst_of_20_then_10_a_second_per_session() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let alice = c.join(&base, "rate", "alice").await;
    let bob = c.join(&base, "rate", "bob").await;

    let last = say_until_rate_limited(c, std::slice::from_ref(&base), &alice).await;
    let bob_said = c
        .say_ok(&base, &bob, "other sessions are not limited")
        .await;
    assert_eq!(bob_said, last + 1, "the refused say stored nothing");
    eventually(
        "alice's bucket to refill",
        Duration::from_secs(5),
        || async { (c.say(&base, &alice, "after the pause").await.status == 200).then_some(()) },
    )
    .await;
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn the_say_rate_limit_holds_across_api_replicas() {
    let app = TestApp::new(Db::Default).await;
    let apis = [
        app.start(crate::support::api_only(ApiConfig::default()))
            .await,
        app.start(crate::support::api_only(ApiConfig::default()))
            .await,
    ];
    let bases: Vec<String> = apis.iter().map(|a| a.base()).collect();
    let alice = app.client.join(&bases[0], "rate2", "alice").await;
    say_until_rate_limited(&app.client, &bases, &alice).await;
    for api in apis {
        api.stop().await;
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_fifth_held_observe_per_session_is_refused_with_429() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = app.client.clone();
    let alice = c.join(&base, "observes", "alice").await;

    let mut held = Vec::new();
    for _ in 0..4 {
        let (c, base, alice) = (c.clone(), base.clone(), alice.clone());
        held.push(tokio::spawn(async move {
            c.observe(&base, &alice, alice.counter, 60).await
        }));
    }
    c.wait_held(&base, 4).await;
    c.observe(&base, &alice, alice.counter, 60)
        .await
        .assert_error(429, "too_many_observes");
    let said = c.say_ok(&base, &alice, "release them").await;
    for observe in held {
        assert_eq!(
            counters(&events(&observe.await.expect("task").ok())),
            [said]
        );
    }
    let again = c.observe(&base, &alice, alice.counter, 0).await.ok();
    assert_eq!(
        counters(&events(&again)),
        [said],
        "observing works again once they are answered"
    );
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_comet_over_its_held_limit_answers_503_and_recovers() {
    let app = TestApp::new(Db::Default).await;
    let comet = CometConfig {
        max_held_observes: 2,
        ..CometConfig::default()
    };
    let server = app.start(all_roles(ApiConfig::default(), comet)).await;
    let base = server.base();
    let c = app.client.clone();
    let members = [
        c.join(&base, "full", "a").await,
        c.join(&base, "full", "b").await,
        c.join(&base, "full", "c").await,
    ];
    let newest = members[2].counter;
    let mut held = Vec::new();
    for member in members.iter().take(2) {
        let (c, base, member) = (c.clone(), base.clone(), member.clone());
        held.push(tokio::spawn(async move {
            c.observe(&base, &member, newest, 60).await
        }));
    }
    c.wait_held(&base, 2).await;
    c.observe(&base, &members[2], newest, 60)
        .await
        .assert_error(503, "overloaded");
    let said = c.say_ok(&base, &members[2], "wake").await;
    for observe in held {
        assert!(counters(&events(&observe.await.expect("task").ok())).contains(&said));
    }
    c.observe(&base, &members[2], said, 0).await.ok();
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn observe_timeout_is_at_most_60_seconds_and_answers_at_most_500_events() {
    let app = TestApp::new(Db::Default).await;
    let api = crate::support::fast_api();
    let server = app.start(all_roles(api, CometConfig::default())).await;
    let base = server.base();
    let c = &app.client;
    let alice = c.join(&base, "many", "alice").await;
    c.observe(&base, &alice, alice.counter, 61)
        .await
        .assert_error(400, "invalid_parameter");
    c.get(
        &base,
        "room/observe",
        &[
            ("session", &alice.session),
            ("ticket", &alice.ticket),
            ("counter", "0"),
            ("timeout", "soon"),
        ],
    )
    .await
    .assert_error(400, "invalid_parameter");

    let mut said = Vec::new();
    for i in 0..520 {
        said.push(c.say_ok(&base, &alice, &format!("m{i}")).await);
    }
    let first = c.observe(&base, &alice, alice.counter, 5).await.ok();
    let first_counters = counters(&events(&first));
    assert_eq!(first_counters.len(), 500);
    assert_eq!(first_counters, said[..500]);
    assert_eq!(first["counter"], said[499]);
    let rest = c.observe_events(&base, &alice, said[499], 20).await;
    assert_eq!(counters(&rest), said[500..]);
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_session_may_be_in_a_limited_number_of_rooms() {
    let app = TestApp::new(Db::Default).await;
    let api = ApiConfig {
        max_rooms_per_session: 2,
        ..ApiConfig::default()
    };
    let server = app.start(all_roles(api, CometConfig::default())).await;
    let base = server.base();
    let c = &app.client;
    let session = c.session(&base, Some("roamer")).await;
    let first = c.enter_with(&base, &session, "r1", None).await;
    c.enter_with(&base, &session, "r2", None).await;
    c.get(
        &base,
        "room/enter",
        &[("session", &session), ("room", "r3")],
    )
    .await
    .assert_error(429, "too_many_rooms");
    c.get(
        &base,
        "room/exit",
        &[("session", &session), ("ticket", &first.ticket)],
    )
    .await
    .ok();
    c.enter_with(&base, &session, "r3", None).await;
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn idempotency_ids_are_1_to_64_visible_characters() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let alice = c.join(&base, "ids", "alice").await;
    let last = c.say_ok(&base, &alice, "before").await;
    let too_long = "k".repeat(65);
    for bad in [too_long.as_str(), "has space", "tab\t"] {
        let answer = c
            .get(
                &base,
                "room/say",
                &[
                    ("session", &alice.session),
                    ("ticket", &alice.ticket),
                    ("message", "x"),
                    ("idempotent_id", bad),
                ],
            )
            .await;
        answer.assert_error(400, "invalid_parameter");
    }
    say_next(c, &base, &alice, last).await;
    server.stop().await;
    app.cleanup().await;
}
