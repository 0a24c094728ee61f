//! Hostile input (guarantee 6): requests shaped to slip past the contract get a clear error,
//! store nothing, and leave the service working. "Nothing stored" is shown by the next
//! accepted say getting the very next counter in a room where nobody else acts.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

use crate::support::client::{events, Member};
use crate::support::{free_port, lingr_binary, sigterm, Client, Db, TestApp};

/// Says something and checks the counter follows `last` directly: nothing was stored between.
async fn say_next(c: &Client, base: &str, member: &Member, last: u64) -> u64 {
    let counter = c.say_ok(base, member, "still works").await;
    assert_eq!(
        counter,
        last + 1,
        "a refused call must not have stored an event"
    );
    counter
}

/// Messages kept in the sessions bucket: one per session ever stored there.
async fn session_writes(app: &TestApp) -> u64 {
    let js = app.jetstream().await;
    let mut stream = js
        .get_stream(format!("KV_{}", lingr_proto::subjects::SESSIONS_BUCKET))
        .await
        .expect("sessions bucket");
    stream.info().await.expect("info").state.messages
}

#[tokio::test]
async fn head_requests_run_no_handler() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let alice = c.join(&base, "heads", "alice").await;
    let last = c.say_ok(&base, &alice, "before").await;
    let sessions = session_writes(&app).await;

    let say = c
        .request(c.http().head(format!("{base}/api/room/say")).query(&[
            ("session", alice.session.as_str()),
            ("ticket", alice.ticket.as_str()),
            ("message", "sneaky"),
        ]))
        .await;
    assert_eq!(say.status, 405);
    let create = c
        .request(
            c.http()
                .head(format!("{base}/api/session/create?nickname=eve")),
        )
        .await;
    assert_eq!(create.status, 405);

    assert_eq!(session_writes(&app).await, sessions, "HEAD made a session");
    say_next(c, &base, &alice, last).await;
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_callback_is_honoured_on_routing_and_body_errors() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;

    let unknown = c.get(&base, "room/dance", &[("callback", "cb")]).await;
    assert_eq!(unknown.jsonp("cb")["code"], "not_found");
    let put = c
        .request(c.http().put(format!("{base}/api/room/say?callback=cb")))
        .await;
    assert_eq!(put.jsonp("cb")["code"], "method_not_allowed");
    let padding = "x".repeat(17 * 1024);
    let big = c
        .request(
            c.http()
                .post(format!("{base}/api/room/say?callback=cb"))
                .json(&json!({ "message": padding })),
        )
        .await;
    assert_eq!(big.jsonp("cb")["code"], "body_too_large");
    let malformed = c
        .request(
            c.http()
                .post(format!("{base}/api/room/say?callback=cb"))
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_eq!(malformed.jsonp("cb")["code"], "invalid_body");
    let bad_form = c
        .request(
            c.http()
                .post(format!("{base}/api/session/create?callback=cb"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(b"nickname=\xff".to_vec()),
        )
        .await;
    assert_eq!(bad_form.jsonp("cb")["code"], "invalid_body");
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn jsonp_bodies_escape_line_separators_and_markup() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let alice = c.join(&base, "scripts", "alice").await;
    let text = "a\u{2028}b\u{2029}c</script><!--d";
    c.say_ok(&base, &alice, text).await;

    let counter = alice.counter.to_string();
    let observed = c
        .get(
            &base,
            "room/observe",
            &[
                ("session", alice.session.as_str()),
                ("ticket", alice.ticket.as_str()),
                ("counter", counter.as_str()),
                ("timeout", "5"),
                ("callback", "cb"),
            ],
        )
        .await;
    // History is written a moment behind the stream.
    let paged =
        crate::support::eventually("the say in history", Duration::from_secs(10), || async {
            let paged = c
                .messages(
                    &base,
                    "scripts",
                    &[("after", counter.as_str()), ("callback", "cb")],
                )
                .await;
            paged.body.contains("\"text\"").then_some(paged)
        })
        .await;
    for answer in [&observed, &paged] {
        assert!(
            !answer.body.contains(['\u{2028}', '\u{2029}', '<']),
            "unescaped: {}",
            answer.body
        );
    }
    assert_eq!(events(&observed.jsonp("cb"))[0]["text"], text);
    let paged = paged.jsonp("cb");
    assert_eq!(paged["messages"][0]["text"], text);
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn parameters_decode_strictly() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let alice = c.join(&base, "strict", "alice").await;
    let last = c.say_ok(&base, &alice, "before").await;
    let who = format!("session={}&ticket={}", alice.session, alice.ticket);

    c.get_raw(&base, "room/say", &format!("{who}&message=%FF"))
        .await
        .assert_error(400, "invalid_parameter");
    c.post_raw(
        &base,
        "room/say",
        "application/x-www-form-urlencoded",
        format!("{who}&message=%C3").into_bytes(),
    )
    .await
    .assert_error(400, "invalid_body");
    let mut raw_json = format!(
        r#"{{"session":"{}","ticket":"{}","message":""#,
        alice.session, alice.ticket
    )
    .into_bytes();
    raw_json.extend_from_slice(b"\xff\"}");
    c.post_raw(&base, "room/say", "application/json", raw_json)
        .await
        .assert_error(400, "invalid_body");
    c.get_raw(&base, "room/say", &format!("{who}&message=one&message=two"))
        .await
        .assert_error(400, "invalid_parameter");
    for counter in [
        "%2B5",
        "%205",
        "5%20",
        "0x5",
        "1e3",
        "-1",
        "99999999999999999999999",
    ] {
        c.get_raw(
            &base,
            "room/observe",
            &format!("{who}&counter={counter}&timeout=0"),
        )
        .await
        .assert_error(400, "invalid_parameter");
        c.get_raw(
            &base,
            "room/get_messages",
            &format!("room=strict&before={counter}"),
        )
        .await
        .assert_error(400, "invalid_parameter");
    }
    let last = say_next(c, &base, &alice, last).await;

    let shouting = c
        .post_raw(
            &base,
            "room/say",
            "APPLICATION/JSON; Charset=UTF-8",
            serde_json::to_vec(&json!({"session": alice.session, "ticket": alice.ticket, "message": "upper case type"}))
                .expect("json"),
        )
        .await
        .ok();
    assert_eq!(shouting["counter"], last + 1);
    let negative_zero = format!(
        r#"{{"session":"{}","ticket":"{}","message":-0}}"#,
        alice.session, alice.ticket
    );
    let stored = c
        .post_raw(
            &base,
            "room/say",
            "application/json",
            negative_zero.into_bytes(),
        )
        .await
        .ok();
    assert_eq!(
        stored["event"]["text"], "-0",
        "a number keeps the text it was sent as"
    );
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn messages_carry_no_controls_and_emoji_nicknames_are_fine() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let alice = c.join(&base, "hidden", "alice").await;
    let last = c.say_ok(&base, &alice, "before").await;

    for message in [
        "nul\0byte",
        "\u{1B}[31mred",
        "\u{9B}31m",
        "\u{200B}\u{FEFF}",
        "\u{3164} \u{2800}",
    ] {
        c.say(&base, &alice, message)
            .await
            .assert_error(400, "invalid_message");
    }
    let last = say_next(c, &base, &alice, last).await;
    let coder = c.join(&base, "hidden", "👩\u{200D}💻 dev").await;
    assert_eq!(
        coder.counter,
        last + 1,
        "an emoji sequence is a fine nickname"
    );
    c.say_ok(&base, &alice, "tabs\tand\r\nnew lines are fine")
        .await;
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn metrics_can_move_to_a_listener_of_their_own() {
    let app = TestApp::new(Db::Default).await;
    let metrics_listen = format!("127.0.0.1:{}", free_port());
    let (mut api, base) = crate::support::topology::spawn_role(
        &app,
        "api",
        vec!["--metrics-listen".to_owned(), metrics_listen.clone()],
    )
    .await;
    let c = &app.client;
    let public = c.request(c.http().get(format!("{base}/metrics"))).await;
    public.assert_error(404, "not_found");
    let private = c
        .request(c.http().get(format!("http://{metrics_listen}/metrics")))
        .await;
    assert_eq!(private.status, 200);
    assert!(
        private.body.contains("lingr_api_events_published_total"),
        "{}",
        private.body
    );
    let _ = api.kill().await;
    app.cleanup().await;
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn dev_keeps_its_secrets_private_and_its_nats_server_closed_to_strangers() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // A secret an older version left readable by everyone.
    std::fs::write(data.join("secret"), "0123456789abcdef0123456789abcdef").expect("secret");
    std::fs::set_permissions(data.join("secret"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let port = free_port();
    let mut child = Command::new(lingr_binary())
        .args([
            "dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn lingr dev");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let banner = stdout.next_line().await.expect("read").expect("banner");
    let nats_url = banner
        .split("(NATS ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("banner names NATS: {banner}"))
        .to_owned();
    let base = format!("http://127.0.0.1:{port}");
    let c = Client::new();
    c.wait_ready(&base).await;
    c.join(&base, "private", "alice").await;

    assert_eq!(mode(&data), 0o700);
    for file in ["secret", "history.db", "nats/lingr-auth.conf"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&data.join("nats")), 0o700);
    let stranger = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::ConnectOptions::new().connect(nats_url.as_str()),
    )
    .await
    .expect("the server answers");
    assert!(stranger.is_err(), "a client without the token got in");
    // Stopped as a user would, so it stops its own nats-server too (a SIGKILL would orphan it).
    sigterm(&child).await;
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("lingr dev exits")
        .expect("status");
    assert!(status.success(), "{status}");
}

/// Holds an observe of `member` in the background.
fn hold(
    c: &Client,
    base: &str,
    member: &Member,
) -> tokio::task::JoinHandle<crate::support::client::Answer> {
    let (c, base, member) = (c.clone(), base.to_owned(), member.clone());
    tokio::spawn(async move { c.observe(&base, &member, member.counter, 60).await })
}

#[tokio::test]
async fn an_anonymous_observers_held_observe_ends_when_it_leaves() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let alice = c.join(&base, "badges", "alice").await;
    let exits = c
        .enter_with(&base, &c.session(&base, None).await, "badges", None)
        .await;
    let destroyed = c
        .enter_with(&base, &c.session(&base, None).await, "badges", None)
        .await;
    let held = [hold(c, &base, &exits), hold(c, &base, &destroyed)];
    c.wait_held(&base, 2).await;

    c.get(
        &base,
        "room/exit",
        &[("session", &exits.session), ("ticket", &exits.ticket)],
    )
    .await
    .ok();
    c.get(&base, "session/destroy", &[("session", &destroyed.session)])
        .await
        .ok();
    for observe in held {
        // Long before their 60 s hold ends, and before anything else is said in the room.
        let answer = tokio::time::timeout(Duration::from_secs(10), observe)
            .await
            .expect("the held observe ended")
            .expect("task");
        answer.assert_error(401, "invalid_ticket");
    }
    c.say_ok(&base, &alice, "nobody left to leak this to").await;
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn tickets_survive_a_secret_rotation_until_the_previous_secret_is_dropped() {
    let app = TestApp::new(Db::Default).await;
    let new_secret = "the-rotated-in-secret-0123456789";
    let rotating = |role: &str| {
        let flags = [
            "--secret",
            new_secret,
            "--previous-secret",
            crate::support::SECRET,
        ];
        (role.to_owned(), flags.map(str::to_owned).to_vec())
    };
    let spawn = |(role, flags): (String, Vec<String>)| {
        let app = &app;
        async move { crate::support::topology::spawn_role(app, &role, flags).await }
    };
    let (mut old_api, old_base) = spawn(("api".to_owned(), Vec::new())).await;
    let c = &app.client;
    let alice = c.join(&old_base, "rotation", "alice").await;

    let (mut api, api_base) = spawn(rotating("api")).await;
    let (mut comet, comet_base) = spawn(rotating("comet")).await;
    let said = c
        .say_ok(&api_base, &alice, "an old ticket still speaks")
        .await;
    let seen = c.observe(&comet_base, &alice, alice.counter, 5).await.ok();
    assert_eq!(events(&seen)[0]["counter"], said);
    let session = c.session(&api_base, Some("bob")).await;
    let bob = c.enter_with(&api_base, &session, "rotation", None).await;
    c.say(&old_base, &bob, "new tickets use the new secret")
        .await
        .assert_error(401, "invalid_ticket");

    let done = ["--secret", new_secret].map(str::to_owned).to_vec();
    let (mut final_comet, final_base) = spawn(("comet".to_owned(), done)).await;
    c.observe(&final_base, &alice, said, 0)
        .await
        .assert_error(401, "invalid_ticket");
    c.observe(&final_base, &bob, bob.counter, 0).await.ok();
    for child in [&mut old_api, &mut api, &mut comet, &mut final_comet] {
        let _ = child.kill().await;
    }
    app.cleanup().await;
}
