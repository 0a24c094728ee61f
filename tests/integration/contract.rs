//! The HTTP contract of DESIGN.md: every endpoint, its parameters, answers and error codes,
//! over GET, JSON POST and form POST, with JSONP and CORS.

use serde_json::json;

use crate::support::client::{counters, events, Answer, Member};
use crate::support::{Db, TestApp};

#[tokio::test]
async fn a_conversation_works_end_to_end_over_get() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;

    let alice = c.join(&base, "lobby", "alice").await;
    assert_eq!(alice.entered["room"]["id"], "lobby");
    assert_eq!(
        alice.entered["room"]["occupants"],
        json!([{"id": alice.occupant_id, "nickname": "alice"}])
    );
    let said = c.say(&base, &alice, "hello").await.ok();
    assert_eq!(said["event"]["type"], "message");
    assert_eq!(said["event"]["text"], "hello");
    assert_eq!(said["event"]["nickname"], "alice");
    assert_eq!(said["event"]["room"], "lobby");
    assert_eq!(said["event"]["occupant_id"], alice.occupant_id.as_str());
    assert_eq!(said["event"]["counter"], said["counter"]);
    assert!(said["counter"].as_u64() > Some(alice.counter));

    let bob = c.join(&base, "lobby", "bob").await;
    let messages = bob.entered["room"]["messages"]
        .as_array()
        .expect("messages")
        .clone();
    assert_eq!(
        messages.len(),
        1,
        "bob sees alice's message on enter: {messages:?}"
    );
    assert_eq!(messages[0]["text"], "hello");
    let listed: Vec<&str> = bob.entered["room"]["occupants"]
        .as_array()
        .expect("occupants")
        .iter()
        .filter_map(|o| o["nickname"].as_str())
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&"alice") && listed.contains(&"bob"));

    let seen = c
        .observe(&base, &alice, said["counter"].as_u64().expect("counter"), 5)
        .await
        .ok();
    let seen = events(&seen);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["type"], "enter");
    assert_eq!(seen[0]["nickname"], "bob");

    let renamed = c
        .get(
            &base,
            "room/set_nickname",
            &[
                ("session", &bob.session),
                ("ticket", &bob.ticket),
                ("nickname", "robert"),
            ],
        )
        .await
        .ok();
    assert_eq!(renamed["event"]["type"], "nickname");
    assert_eq!(renamed["event"]["nickname"], "robert");
    assert_eq!(renamed["event"]["prev_nickname"], "bob");

    let exited = c
        .get(
            &base,
            "room/exit",
            &[("session", &bob.session), ("ticket", &bob.ticket)],
        )
        .await
        .ok();
    let exit_counter = exited["counter"].as_u64().expect("counter");
    let tail = c.observe_events(&base, &alice, bob.counter, 2).await;
    assert_eq!(
        tail.iter()
            .map(|e| e["type"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["nickname", "exit"]
    );
    assert_eq!(tail[1]["reason"], "exit");
    assert_eq!(tail[1]["nickname"], "robert");
    assert_eq!(tail[1]["counter"], exit_counter);

    let after_exit = c.say(&base, &bob, "still here?").await;
    after_exit.assert_error(401, "invalid_ticket");
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn every_endpoint_takes_json_and_form_posts() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;

    let session = c
        .post_json(&base, "session/create", &json!({"nickname": "carol"}))
        .await
        .ok()["session"]
        .as_str()
        .expect("session")
        .to_owned();
    let entered = c
        .post_form(
            &base,
            "room/enter",
            &[("session", &session), ("room", "forms")],
        )
        .await
        .ok();
    let ticket = entered["ticket"].as_str().expect("ticket").to_owned();
    let counter = entered["counter"].as_u64().expect("counter");
    let said = c
        .post_json(
            &base,
            "room/say",
            &json!({"session": session, "ticket": ticket, "message": "via json"}),
        )
        .await
        .ok();
    let said_form = c
        .post_form(
            &base,
            "room/say",
            &[
                ("session", &session),
                ("ticket", &ticket),
                ("message", "via form"),
            ],
        )
        .await
        .ok();
    assert_eq!(said["event"]["text"], "via json");
    assert_eq!(said_form["event"]["text"], "via form");
    let wanted = [
        said["counter"].as_u64().expect("c"),
        said_form["counter"].as_u64().expect("c"),
    ];
    let seen = c
        .observe_events(&base, &member_of(&session, &ticket), counter, 2)
        .await;
    assert_eq!(counters(&seen), wanted);
    let renamed = c
        .post_form(
            &base,
            "room/set_nickname",
            &[
                ("session", &session),
                ("ticket", &ticket),
                ("nickname", "caroline"),
            ],
        )
        .await
        .ok();
    assert_eq!(renamed["event"]["prev_nickname"], "carol");
    let history = crate::support::eventually(
        "history to hold both messages",
        std::time::Duration::from_secs(10),
        || async {
            let page = c
                .post_json(&base, "room/get_messages", &json!({"room": "forms"}))
                .await
                .ok();
            (page["messages"].as_array().map_or(0, Vec::len) >= 4).then_some(page)
        },
    )
    .await;
    assert_eq!(history["has_more"], false);
    c.post_form(
        &base,
        "room/exit",
        &[("session", &session), ("ticket", &ticket)],
    )
    .await
    .ok();
    c.post_json(&base, "session/destroy", &json!({"session": session}))
        .await
        .ok();
    c.post_json(&base, "session/destroy", &json!({"session": session}))
        .await
        .assert_error(401, "invalid_session");
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn jsonp_wraps_answers_and_errors_as_script_with_status_200() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;

    let created = c
        .get(
            &base,
            "session/create",
            &[("nickname", "dave"), ("callback", "Lingr.cb_1")],
        )
        .await;
    assert_eq!(created.status, 200);
    assert_eq!(
        created.header("content-type"),
        Some("application/javascript; charset=utf-8")
    );
    assert_eq!(created.header("x-content-type-options"), Some("nosniff"));
    let inner = created
        .body
        .strip_prefix("/**/Lingr.cb_1(")
        .and_then(|b| b.strip_suffix(");"))
        .expect("JSONP shape");
    let inner: serde_json::Value = serde_json::from_str(inner).expect("JSON inside");
    assert_eq!(inner["status"], "ok");
    assert!(inner["session"]
        .as_str()
        .is_some_and(|s| s.starts_with("s_")));

    let refused = c
        .get(
            &base,
            "room/say",
            &[("session", "s_nope"), ("callback", "cb")],
        )
        .await;
    assert_eq!(refused.status, 200, "a script tag cannot read a status");
    let inner = refused
        .body
        .strip_prefix("/**/cb(")
        .and_then(|b| b.strip_suffix(");"))
        .expect("JSONP shape");
    let inner: serde_json::Value = serde_json::from_str(inner).expect("JSON inside");
    assert_eq!(inner["status"], "error");
    assert_eq!(inner["code"], "invalid_session");
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn invalid_jsonp_callbacks_are_refused_as_json_and_never_echoed() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    for bad in [
        "alert(1)",
        "a.b.c.d.e",
        "1abc",
        "x-y",
        "<script>",
        &"a".repeat(65),
    ] {
        let answer = app
            .client
            .get(&base, "session/create", &[("callback", bad)])
            .await;
        answer.assert_error(400, "invalid_callback");
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert!(
            !answer.body.contains(bad),
            "the callback must not be echoed: {}",
            answer.body
        );
    }
    let answer = app
        .client
        .get(
            &base,
            "room/get_messages",
            &[("room", "x"), ("callback", "evil()")],
        )
        .await;
    answer.assert_error(400, "invalid_callback");
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn cors_allows_cross_origin_xhr_without_credentials() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let http = app.client.http();
    let preflight = app
        .client
        .request(
            http.request(reqwest::Method::OPTIONS, format!("{base}/api/room/say"))
                .header("origin", "https://elsewhere.example")
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type"),
        )
        .await;
    assert!(
        preflight.status < 300,
        "preflight status {}",
        preflight.status
    );
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert!(preflight
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("POST")));
    assert!(preflight
        .header("access-control-allow-credentials")
        .is_none());
    let created = app
        .client
        .request(
            http.post(format!("{base}/api/session/create"))
                .header("origin", "https://elsewhere.example")
                .json(&json!({})),
        )
        .await;
    assert_eq!(created.header("access-control-allow-origin"), Some("*"));
    assert_eq!(created.json["status"], "ok");
    // The observe is answered ahead of the router and its CORS layer: it must carry the same
    // CORS headers all the same.
    let alice = app.client.join(&base, "cors", "alice").await;
    let observed = app
        .client
        .request(
            http.get(format!("{base}/api/room/observe"))
                .query(&[
                    ("session", alice.session.as_str()),
                    ("ticket", alice.ticket.as_str()),
                    ("counter", &alice.counter.to_string()),
                    ("timeout", "0"),
                ])
                .header("origin", "https://elsewhere.example"),
        )
        .await;
    assert_eq!(observed.json["status"], "ok", "{}", observed.body);
    let cors_headers = |answer: &Answer| -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = answer
            .headers
            .iter()
            .filter(|(name, _)| name == &"vary" || name.as_str().starts_with("access-control-"))
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("?").to_owned()))
            .collect();
        found.sort();
        found
    };
    assert!(!cors_headers(&created).is_empty());
    assert_eq!(cors_headers(&observed), cors_headers(&created));
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    app.client
        .get(&base, "room/dance", &[])
        .await
        .assert_error(404, "not_found");
    let put = app
        .client
        .request(app.client.http().put(format!("{base}/api/room/say")))
        .await;
    put.assert_error(405, "method_not_allowed");
    // room/observe is answered ahead of the router for GET and POST; other methods still
    // reach the router's 405.
    for method in [reqwest::Method::PUT, reqwest::Method::DELETE] {
        let refused = app
            .client
            .request(
                app.client
                    .http()
                    .request(method.clone(), format!("{base}/api/room/observe")),
            )
            .await;
        refused.assert_error(405, "method_not_allowed");
    }
    let health = app
        .client
        .request(app.client.http().get(format!("{base}/healthz")))
        .await;
    assert_eq!(health.status, 200);
    let metrics = app
        .client
        .request(app.client.http().get(format!("{base}/metrics")))
        .await;
    assert!(
        metrics
            .body
            .contains("# TYPE lingr_comet_held_observes gauge"),
        "{}",
        metrics.body
    );
    assert!(metrics
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain")));
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn sessions_and_tickets_are_checked() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let alice = c.join(&base, "auth", "alice").await;
    let mallory = c.join(&base, "auth", "mallory").await;

    c.get(&base, "room/enter", &[("room", "auth")])
        .await
        .assert_error(400, "missing_parameter");
    c.get(
        &base,
        "room/enter",
        &[("session", "s_0123"), ("room", "auth")],
    )
    .await
    .assert_error(401, "invalid_session");
    let unknown = format!("s_{}", "0".repeat(48));
    c.get(
        &base,
        "room/enter",
        &[("session", &unknown), ("room", "auth")],
    )
    .await
    .assert_error(401, "invalid_session");
    let stolen = c
        .get(
            &base,
            "room/say",
            &[
                ("session", &mallory.session),
                ("ticket", &alice.ticket),
                ("message", "as alice"),
            ],
        )
        .await;
    stolen.assert_error(401, "invalid_ticket");
    let forged = alice
        .ticket
        .replace(&alice.occupant_id, &mallory.occupant_id);
    c.get(
        &base,
        "room/say",
        &[
            ("session", &alice.session),
            ("ticket", &forged),
            ("message", "x"),
        ],
    )
    .await
    .assert_error(401, "invalid_ticket");
    let observe_stolen = c
        .observe(
            &base,
            &crate::support::client::Member {
                session: mallory.session.clone(),
                ..alice.clone()
            },
            0,
            0,
        )
        .await;
    observe_stolen.assert_error(401, "invalid_ticket");
    c.get(
        &base,
        "room/say",
        &[("session", &alice.session), ("ticket", &alice.ticket)],
    )
    .await
    .assert_error(400, "missing_parameter");
    c.get(
        &base,
        "room/observe",
        &[("session", &alice.session), ("ticket", &alice.ticket)],
    )
    .await
    .assert_error(400, "missing_parameter");
    c.get(
        &base,
        "room/observe",
        &[
            ("session", &alice.session),
            ("ticket", &alice.ticket),
            ("counter", "-1"),
        ],
    )
    .await
    .assert_error(400, "invalid_parameter");
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn anonymous_observers_watch_without_being_seen() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let alice = c.join(&base, "badge", "alice").await;
    c.say_ok(&base, &alice, "before the badge").await;

    let anonymous_session = c.session(&base, None).await;
    let badge = c.enter_with(&base, &anonymous_session, "badge", None).await;
    assert_eq!(
        badge.entered["room"]["occupants"],
        json!([{"id": alice.occupant_id, "nickname": "alice"}])
    );
    assert_eq!(
        badge.entered["room"]["messages"][0]["text"],
        "before the badge"
    );
    let said = c.say_ok(&base, &alice, "hi badge").await;
    let seen = c.observe(&base, &badge, badge.counter, 5).await.ok();
    assert_eq!(
        counters(&events(&seen)),
        [said],
        "the badge sees only what came after it, and no enter of its own"
    );
    c.say(&base, &badge, "can I talk?")
        .await
        .assert_error(403, "observer_only");
    c.get(
        &base,
        "room/set_nickname",
        &[
            ("session", &badge.session),
            ("ticket", &badge.ticket),
            ("nickname", "x"),
        ],
    )
    .await
    .assert_error(403, "observer_only");
    let exited = c
        .get(
            &base,
            "room/exit",
            &[("session", &badge.session), ("ticket", &badge.ticket)],
        )
        .await
        .ok();
    assert!(exited["counter"].as_u64() >= Some(said));
    let marker = c.say_ok(&base, &alice, "marker").await;
    let after = c.observe_events(&base, &alice, said, 1).await;
    assert_eq!(
        counters(&after),
        [marker],
        "an anonymous observer raises no enter or exit event"
    );
    c.observe(&base, &badge, said, 0)
        .await
        .assert_error(401, "invalid_ticket");
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn destroying_a_session_exits_every_room_and_kills_its_tickets() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let watcher = c.join(&base, "one", "watcher").await;
    let watcher_two = c.enter_with(&base, &watcher.session, "two", None).await;
    let leaver_session = c.session(&base, Some("leaver")).await;
    let in_one = c.enter_with(&base, &leaver_session, "one", None).await;
    let in_two = c.enter_with(&base, &leaver_session, "two", None).await;

    c.get(&base, "session/destroy", &[("session", &leaver_session)])
        .await
        .ok();
    for (watching, left, since) in [
        (&watcher, &in_one, in_one.counter),
        (&watcher_two, &in_two, in_two.counter),
    ] {
        let seen = c.observe(&base, watching, since, 5).await.ok();
        let seen = events(&seen);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0]["type"], "exit");
        assert_eq!(seen[0]["reason"], "session_destroyed");
        assert_eq!(seen[0]["occupant_id"], left.occupant_id.as_str());
        c.observe(&base, left, since, 0)
            .await
            .assert_error(401, "invalid_ticket");
    }
    c.get(&base, "session/create", &[]).await.ok();
    c.get(
        &base,
        "room/enter",
        &[("session", &leaver_session), ("room", "one")],
    )
    .await
    .assert_error(401, "invalid_session");
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_exited_ticket_stops_working_on_comet_within_a_second() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let alice = c.join(&base, "quick", "alice").await;
    c.get(
        &base,
        "room/exit",
        &[("session", &alice.session), ("ticket", &alice.ticket)],
    )
    .await
    .ok();
    crate::support::eventually(
        "the exited ticket to be refused",
        std::time::Duration::from_secs(1),
        || async { (c.observe(&base, &alice, alice.counter, 0).await.status == 401).then_some(()) },
    )
    .await;
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn observe_holds_until_an_event_or_the_timeout() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = app.client.clone();
    let alice = c.join(&base, "hold", "alice").await;

    let empty = c.observe(&base, &alice, alice.counter, 1).await.ok();
    assert_eq!(empty["events"], json!([]));
    assert_eq!(
        empty["counter"], alice.counter,
        "a timed-out observe keeps the counter"
    );

    let held = {
        let (c, base, alice) = (c.clone(), base.clone(), alice.clone());
        tokio::spawn(async move { c.observe(&base, &alice, alice.counter, 60).await })
    };
    c.wait_held(&base, 1).await;
    let said = c.say_ok(&base, &alice, "wake up").await;
    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), held)
        .await
        .expect("answered before its timeout")
        .expect("task")
        .ok();
    assert_eq!(counters(&events(&answer)), [said]);
    assert_eq!(answer["counter"], said);
    server.stop().await;
    app.cleanup().await;
}

/// A member from a session and ticket, for calls made with raw parameters.
fn member_of(session: &str, ticket: &str) -> Member {
    Member {
        session: session.to_owned(),
        ticket: ticket.to_owned(),
        occupant_id: String::new(),
        counter: 0,
        entered: serde_json::Value::Null,
    }
}

#[tokio::test]
async fn enter_lists_occupants_who_just_entered_through_another_api_replica() {
    let app = TestApp::new(Db::Default).await;
    let first = app
        .start(crate::support::api_only(lingr_api::ApiConfig::default()))
        .await;
    let second = app
        .start(crate::support::api_only(lingr_api::ApiConfig::default()))
        .await;
    let c = &app.client;
    for round in 0..10 {
        let room = format!("crowd{round}");
        let alice = c.join(&first.base(), &room, "alice").await;
        let bob = c.join(&second.base(), &room, "bob").await;
        let listed: Vec<&str> = bob.entered["room"]["occupants"]
            .as_array()
            .expect("occupants")
            .iter()
            .filter_map(|o| o["id"].as_str())
            .collect();
        assert!(
            listed.contains(&alice.occupant_id.as_str()) && listed.contains(&bob.occupant_id.as_str()),
            "round {round}: bob's enter must list alice, who entered just before on the other replica: {listed:?}"
        );
    }
    first.stop().await;
    second.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn the_trace_context_of_a_say_travels_with_its_event_in_nats() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let alice = c.join(&base, "traced", "alice").await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let said = c
        .request(
            c.http()
                .get(format!("{base}/api/room/say"))
                .query(&[
                    ("session", alice.session.as_str()),
                    ("ticket", alice.ticket.as_str()),
                    ("message", "traced"),
                ])
                .header("traceparent", parent),
        )
        .await
        .ok();
    let counter = said["counter"].as_u64().expect("counter");
    let stored = app
        .events_stream()
        .await
        .direct_get(counter)
        .await
        .expect("stored message");
    let carried = stored
        .headers
        .get("traceparent")
        .map(|v| v.as_str().to_owned())
        .expect("a traceparent header");
    assert!(
        carried.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "same trace: {carried}"
    );
    assert_ne!(carried, parent, "a new span for the publish");
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn enter_lists_at_most_100_occupants_with_the_count_and_room_occupants_pages_the_rest() {
    let app = TestApp::new(Db::Default).await;
    let server = app
        .start(crate::support::all_roles(
            crate::support::fast_api(),
            lingr_comet::CometConfig::default(),
        ))
        .await;
    let base = server.base();
    let c = &app.client;
    let mut ids = Vec::new();
    for i in 0..104 {
        ids.push(
            c.join(&base, "crowded", &format!("guest{i}"))
                .await
                .occupant_id,
        );
    }
    // An anonymous observer is neither listed nor counted.
    let watcher = c.session(&base, None).await;
    c.enter_with(&base, &watcher, "crowded", None).await;
    let last = c.join(&base, "crowded", "latecomer").await;
    ids.push(last.occupant_id.clone());
    ids.sort();
    assert_eq!(last.entered["room"]["occupant_count"], 105);
    let listed = last.listed_occupants();
    assert_eq!(listed, ids[..100], "the first 100 by occupant id");

    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut params = vec![("room", "crowded".to_owned()), ("limit", "40".to_owned())];
        if let Some(after) = &after {
            params.push(("after", after.clone()));
        }
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = c.get(&base, "room/occupants", &params).await.ok();
        assert_eq!(page["occupant_count"], 105);
        let ids_on_page: Vec<String> = page["occupants"]
            .as_array()
            .expect("occupants")
            .iter()
            .filter_map(|o| o["id"].as_str().map(str::to_owned))
            .collect();
        assert!(ids_on_page.len() <= 40);
        after = ids_on_page.last().cloned();
        paged.extend(ids_on_page);
        if page["has_more"] != true {
            break;
        }
    }
    assert_eq!(paged, ids, "every occupant once, in order");
    c.get(
        &base,
        "room/occupants",
        &[("room", "crowded"), ("limit", "501")],
    )
    .await
    .assert_error(400, "invalid_parameter");
    c.get(
        &base,
        "room/occupants",
        &[("room", "crowded"), ("after", "nobody")],
    )
    .await
    .assert_error(400, "invalid_parameter");
    c.get(&base, "room/occupants", &[("room", "empty-and-unknown")])
        .await
        .assert_error(404, "room_not_found");
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn the_web_client_and_the_badge_are_served_with_the_api() {
    let app = TestApp::new(Db::Default).await;
    // All roles behind one URL: lingr dev in-process, the path-routing proxy as processes.
    let server = app.start_all().await;
    let c = &app.client;
    for (path, kind, part) in [
        ("/", "text/html", "<label for=\"nickname\">Nickname</label>"),
        (
            "/rooms/lobby",
            "text/html",
            "<label for=\"room\">Room</label>",
        ),
        ("/assets/app.js", "text/javascript", "import"),
        ("/assets/style.css", "text/css", ".composer"),
        ("/badge.js", "text/javascript", "attachShadow"),
    ] {
        let answer = c
            .request(c.http().get(format!("{}{path}", server.base())))
            .await;
        assert_eq!(answer.status, 200, "{path}");
        let content_type = answer.headers[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap_or_default()
            .to_owned();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(answer.body.contains(part), "{path} is the file it names");
    }
    let missing = c
        .request(c.http().get(format!("{}/assets/nothing.js", server.base())))
        .await;
    assert_eq!(missing.status, 404);
    server.stop().await;
    app.cleanup().await;
}
