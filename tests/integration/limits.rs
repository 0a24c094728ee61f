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
async fn nicknames_are_1_to_32_characters_that_hide_nothing() {
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
    let hiding = [
        "evil\u{202E}gnp.exe",
        "zero\u{200B}width",
        "\u{FEFF}bom",
        "\u{3164}",
        "\u{200B}\u{200B}",
        "a\u{200D}b",
        "line\u{2028}break",
    ];
    let out_of_bounds = [too_long.as_str(), "bell\u{7}", "   ", "new\nline"];
    for bad in out_of_bounds.into_iter().chain(hiding) {
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

/// Makes `call` as fast as possible, round-robin over `bases`, until refused with 429
/// `rate_limited`; checks that no more were accepted than a burst of `burst` (less the
/// `spent` tokens taken before) plus `rate` a second allows. Returns the last accepted answer.
async fn call_until_rate_limited<F, Fut>(
    bases: &[String],
    (rate, burst, spent): (f64, f64, f64),
    call: F,
) -> serde_json::Value
where
    F: Fn(String, usize) -> Fut,
    Fut: std::future::Future<Output = crate::support::client::Answer>,
{
    let started = std::time::Instant::now();
    let (mut last, mut accepted) = (serde_json::Value::Null, 0u32);
    for i in 0..500 {
        let answer = call(bases[i % bases.len()].clone(), i).await;
        if answer.status == 429 {
            answer.assert_error(429, "rate_limited");
            let elapsed = started.elapsed().as_secs_f64();
            // The burst at once, plus the rate for every second the loop took.
            let allowed = burst - spent + rate * elapsed;
            assert!(
                f64::from(accepted) >= burst - spent && f64::from(accepted) <= allowed + 1.0,
                "accepted {accepted} in {elapsed:.2}s over {} replicas; allowed {allowed:.1}",
                bases.len()
            );
            return last;
        }
        last = answer.ok();
        accepted += 1;
    }
    panic!("500 calls in a row were never rate limited");
}

/// Says until refused: 20 at once (less the enter's token), then 10 a second.
async fn say_until_rate_limited(c: &Client, bases: &[String], member: &Member) -> u64 {
    let last = call_until_rate_limited(bases, (10.0, 20.0, 1.0), |base, i| async move {
        c.say(&base, member, &format!("burst {i}")).await
    })
    .await;
    last["counter"].as_u64().expect("counter")
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
    crate::support::assert_served(c, &base, "rate-bystander").await;
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
async fn set_nickname_enter_and_exit_draw_from_the_says_bucket() {
    let app = TestApp::new(Db::Default).await;
    // A slow refill, so the bucket stays empty while the other verbs are tried.
    let api = ApiConfig {
        call_rate: 0.01,
        ..ApiConfig::default()
    };
    let server = app.start(all_roles(api, CometConfig::default())).await;
    let base = server.base();
    let c = &app.client;
    let alice = c.join(&base, "names-rate", "alice").await;
    let bob = c.join(&base, "names-rate", "bob").await;

    let bases = [base.clone()];
    let last = call_until_rate_limited(&bases, (0.01, 20.0, 1.0), |base, i| {
        let alice = &alice;
        async move {
            let nickname = format!("alice{i}");
            c.get(
                &base,
                "room/set_nickname",
                &[
                    ("session", &alice.session),
                    ("ticket", &alice.ticket),
                    ("nickname", &nickname),
                ],
            )
            .await
        }
    })
    .await;
    let last = last["counter"].as_u64().expect("counter");
    // The bucket is empty for every verb of alice's session, and for hers only.
    c.get(
        &base,
        "room/enter",
        &[("session", &alice.session), ("room", "elsewhere")],
    )
    .await
    .assert_error(429, "rate_limited");
    c.get(
        &base,
        "room/exit",
        &[("session", &alice.session), ("ticket", &alice.ticket)],
    )
    .await
    .assert_error(429, "rate_limited");
    c.say(&base, &alice, "me too")
        .await
        .assert_error(429, "rate_limited");
    let bob_said = c.say_ok(&base, &bob, "not limited").await;
    assert_eq!(bob_said, last + 1, "the refused calls stored nothing");
    crate::support::assert_served(c, &base, "names-bystander").await;
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

async fn create_session_from(
    c: &Client,
    base: &str,
    forwarded_for: &str,
) -> crate::support::client::Answer {
    c.request(
        c.http()
            .get(format!("{base}/api/session/create"))
            .header("x-forwarded-for", forwarded_for),
    )
    .await
}

#[tokio::test]
async fn session_create_is_limited_per_client_address() {
    let app = TestApp::new(Db::Default).await;
    // One api that believes X-Forwarded-For from its loopback peer (a stand-in load balancer),
    // one that does not.
    // A slow refill, so the buckets stay empty while the forged header is tried.
    let flags = |trusted: &[&str]| {
        let mut flags = vec!["--session-rate".to_owned(), "0.01".to_owned()];
        flags.extend(trusted.iter().map(|f| (*f).to_owned()));
        flags
    };
    let (mut behind_proxy, proxied) = crate::support::topology::spawn_role(
        &app,
        "api",
        flags(&["--trusted-proxies", "127.0.0.1/32"]),
    )
    .await;
    let (mut exposed, direct) = crate::support::topology::spawn_role(&app, "api", flags(&[])).await;
    let c = &app.client;

    let bases = [proxied.clone()];
    call_until_rate_limited(&bases, (0.01, 30.0, 0.0), |base, _| async move {
        create_session_from(c, &base, "203.0.113.1").await
    })
    .await;
    let other = create_session_from(c, &proxied, "203.0.113.2").await;
    assert_eq!(
        other.json["status"], "ok",
        "another client has its own bucket: {}",
        other.body
    );
    let forged = create_session_from(c, &proxied, "198.51.100.1, 203.0.113.1").await;
    forged.assert_error(429, "rate_limited");

    // Without trust, the header is the client's own word and changes nothing.
    let bases = [direct.clone()];
    call_until_rate_limited(&bases, (0.01, 30.0, 0.0), |base, i| async move {
        create_session_from(c, &base, &format!("192.0.2.{}", i % 250)).await
    })
    .await;
    let _ = behind_proxy.kill().await;
    let _ = exposed.kill().await;
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
async fn one_address_cannot_fill_a_comet_with_many_sessions() {
    let app = TestApp::new(Db::Default).await;
    let api = app
        .start(crate::support::api_only(crate::support::fast_api()))
        .await;
    let (mut comet, comet_base) = crate::support::topology::spawn_role(
        &app,
        "comet",
        [
            "--trusted-proxies",
            "127.0.0.1",
            "--observes-per-address",
            "6",
        ]
        .map(str::to_owned)
        .to_vec(),
    )
    .await;
    let c = app.client.clone();
    let observe_from = |member: &Member, address: &'static str| {
        let (c, base, member) = (c.clone(), comet_base.clone(), member.clone());
        async move {
            let counter = member.counter.to_string();
            c.request(
                c.http()
                    .get(format!("{base}/api/room/observe"))
                    .header("x-forwarded-for", address)
                    .query(&[
                        ("session", member.session.as_str()),
                        ("ticket", member.ticket.as_str()),
                        ("counter", counter.as_str()),
                        ("timeout", "60"),
                    ]),
            )
            .await
        }
    };
    let victim = c.join(&api.base(), "crowd", "victim").await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let session = c.session(&api.base(), None).await;
        sessions.push(c.enter_with(&api.base(), &session, "crowd", None).await);
    }
    let mut held = Vec::new();
    for member in sessions.iter().take(3) {
        for _ in 0..2 {
            held.push(tokio::spawn(observe_from(member, "203.0.113.7")));
        }
    }
    c.wait_held(&comet_base, 6).await;
    // A fourth session from the same address: each session is under its own limit of 4.
    observe_from(&sessions[3], "203.0.113.7")
        .await
        .assert_error(429, "too_many_observes");
    let victims = tokio::spawn(observe_from(&victim, "198.51.100.20"));
    c.wait_held(&comet_base, 7).await;
    let said = c.say_ok(&api.base(), &victim, "still served").await;
    assert!(counters(&events(&victims.await.expect("task").ok())).contains(&said));
    for observe in held {
        assert!(counters(&events(&observe.await.expect("task").ok())).contains(&said));
    }
    let _ = comet.kill().await;
    api.stop().await;
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
    // Once the comet has the last one, it has them all: the cap is what limits the answer.
    c.observe_events(&base, &alice, said[518], 1).await;
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
