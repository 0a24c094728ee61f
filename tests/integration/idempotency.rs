//! Guarantee 3 held against clients that bend it: an `idempotent_id` names one call of a
//! session, so reusing it for another call is refused with 409, a true retry gets its first
//! answer even with an empty rate bucket, and an enter that has ended cannot be revived.

use crate::guarantees::stream_counters;
use crate::support::client::{Answer, Member};
use crate::support::{Client, Db, TestApp};

async fn say_with_id(c: &Client, base: &str, member: &Member, text: &str, id: &str) -> Answer {
    c.get(
        base,
        "room/say",
        &[
            ("session", member.session.as_str()),
            ("ticket", member.ticket.as_str()),
            ("message", text),
            ("idempotent_id", id),
        ],
    )
    .await
}

async fn enter_with_id(
    c: &Client,
    base: &str,
    session: &str,
    room: &str,
    nickname: Option<&str>,
    id: &str,
) -> Answer {
    let mut params = vec![("session", session), ("room", room), ("idempotent_id", id)];
    if let Some(nickname) = nickname {
        params.push(("nickname", nickname));
    }
    c.get(base, "room/enter", &params).await
}

/// Writes the record an enter by `session` of `room` as `nickname` with id `id` leaves when it
/// chose `occupant_id` and then died before it was answered.
async fn plant_unanswered_enter(
    app: &TestApp,
    session: &str,
    (room, nickname, id): (&str, &str, &str),
    occupant_id: &lingr_proto::OccupantId,
) {
    let tag = lingr_proto::SessionToken::parse(session)
        .expect("token")
        .tag();
    let id = lingr_proto::IdempotentId::parse(id).expect("id");
    let call = lingr_api::idempotency::Call::new(&tag, &id, &["enter", room, nickname]);
    let record = lingr_api::idempotency::Record {
        fingerprint: call.fingerprint().to_owned(),
        outcome: lingr_api::idempotency::Outcome::Entering {
            occupant_id: occupant_id.clone(),
        },
    };
    app.jetstream()
        .await
        .get_key_value(lingr_proto::subjects::IDEMPOTENCY_BUCKET)
        .await
        .expect("bucket")
        .put(
            call.key(),
            serde_json::to_vec(&record).expect("json").into(),
        )
        .await
        .expect("plant the record");
}

#[tokio::test]
async fn an_exited_occupant_cannot_come_back_through_a_retried_enter() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    for (room, nickname) in [("ghosts", Some("alice")), ("quiet-ghosts", None)] {
        let session = c.session(&base, None).await;
        let entered = enter_with_id(c, &base, &session, room, nickname, "g")
            .await
            .ok();
        let ticket = entered["ticket"].as_str().expect("ticket").to_owned();
        c.get(
            &base,
            "room/exit",
            &[("session", session.as_str()), ("ticket", ticket.as_str())],
        )
        .await
        .ok();
        let before = stream_counters(&app, room).await;

        enter_with_id(c, &base, &session, room, nickname, "g")
            .await
            .assert_error(409, "idempotency_conflict");
        let ghost = Member {
            session: session.clone(),
            ticket: ticket.clone(),
            occupant_id: String::new(),
            counter: 0,
            entered: serde_json::Value::Null,
        };
        if nickname.is_some() {
            c.say(&base, &ghost, "boo")
                .await
                .assert_error(401, "invalid_ticket");
        }
        c.observe(&base, &ghost, 0, 0)
            .await
            .assert_error(401, "invalid_ticket");
        assert_eq!(
            stream_counters(&app, room).await,
            before,
            "nothing stored in {room}"
        );
        // A new id enters again, as a new occupant.
        let again = enter_with_id(c, &base, &session, room, nickname, "g2")
            .await
            .ok();
        assert_ne!(again["occupant_id"], entered["occupant_id"]);
    }
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_id_reused_for_another_say_is_refused_and_loses_nothing() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let session = c.session(&base, Some("alice")).await;
    let in_a = c.enter_with(&base, &session, "room-a", None).await;
    let in_b = c.enter_with(&base, &session, "room-b", None).await;

    let said = say_with_id(c, &base, &in_a, "hello A", "k").await.ok();
    say_with_id(c, &base, &in_b, "hello B", "k")
        .await
        .assert_error(409, "idempotency_conflict");
    say_with_id(c, &base, &in_a, "something else", "k")
        .await
        .assert_error(409, "idempotency_conflict");
    let retried = say_with_id(c, &base, &in_a, "hello A", "k").await.ok();
    assert_eq!(retried, said, "a true retry gets the first answer");

    assert_eq!(
        stream_counters(&app, "room-b").await,
        [in_b.counter],
        "room B holds only the enter: the refused say was not passed off as stored"
    );
    let b_said = c.say_ok(&base, &in_b, "B with no id").await;
    assert_eq!(
        stream_counters(&app, "room-b").await,
        [in_b.counter, b_said]
    );
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_true_retry_is_answered_even_when_the_bucket_is_empty() {
    let app = TestApp::new(Db::Default).await;
    // A slow refill, so the bucket is still empty when the retries come.
    let api = lingr_api::ApiConfig {
        call_rate: 0.01,
        ..lingr_api::ApiConfig::default()
    };
    let server = app
        .start(crate::support::all_roles(
            api,
            lingr_comet::CometConfig::default(),
        ))
        .await;
    let base = server.base();
    let c = &app.client;
    let session = c.session(&base, Some("alice")).await;
    let entered = enter_with_id(c, &base, &session, "retries", None, "e")
        .await
        .ok();
    let alice = Member {
        session: session.clone(),
        ticket: entered["ticket"].as_str().expect("ticket").to_owned(),
        occupant_id: entered["occupant_id"].as_str().expect("id").to_owned(),
        counter: entered["counter"].as_u64().expect("counter"),
        entered: entered.clone(),
    };
    let said = say_with_id(c, &base, &alice, "important", "s").await.ok();
    let mut refused = false;
    for i in 0..100 {
        let answer = c.say(&base, &alice, &format!("filler {i}")).await;
        if answer.status == 429 {
            answer.assert_error(429, "rate_limited");
            refused = true;
            break;
        }
    }
    assert!(refused, "the bucket never emptied");
    c.say(&base, &alice, "still empty")
        .await
        .assert_error(429, "rate_limited");
    let retried = say_with_id(c, &base, &alice, "important", "s").await.ok();
    assert_eq!(retried, said);
    let reentered = enter_with_id(c, &base, &session, "retries", None, "e")
        .await
        .ok();
    for field in ["ticket", "occupant_id", "counter"] {
        assert_eq!(
            reentered[field], entered[field],
            "{field} of the replayed enter"
        );
    }
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_enter_id_reused_for_another_room_or_nickname_is_refused() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let session = c.session(&base, None).await;
    enter_with_id(c, &base, &session, "first", Some("alice"), "x")
        .await
        .ok();
    for (room, nickname) in [
        ("second", Some("alice")),
        ("first", Some("alicia")),
        ("first", None),
    ] {
        enter_with_id(c, &base, &session, room, nickname, "x")
            .await
            .assert_error(409, "idempotency_conflict");
    }
    assert!(stream_counters(&app, "second").await.is_empty());
    let member = c.enter_with(&base, &session, "first", Some("alice")).await;
    say_with_id(c, &base, &member, "a say", "x")
        .await
        .assert_error(409, "idempotency_conflict");
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_unanswered_enter_whose_occupant_left_is_not_resumed() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let session = c.session(&base, None).await;
    let entered = enter_with_id(c, &base, &session, "lost-answer", Some("alice"), "g")
        .await
        .ok();
    // As if the attempt had stored its enter event and been announced, but had died before
    // recording that it was answered: its record still says "entering".
    let occupant_id =
        lingr_proto::OccupantId::parse(entered["occupant_id"].as_str().expect("id")).expect("id");
    plant_unanswered_enter(&app, &session, ("lost-answer", "alice", "g"), &occupant_id).await;
    // ...and as if the reaper had made its occupant leave meanwhile.
    let ticket = entered["ticket"].as_str().expect("ticket");
    c.get(
        &base,
        "room/exit",
        &[("session", session.as_str()), ("ticket", ticket)],
    )
    .await
    .ok();
    let before = stream_counters(&app, "lost-answer").await;

    enter_with_id(c, &base, &session, "lost-answer", Some("alice"), "g")
        .await
        .assert_error(409, "idempotency_conflict");
    assert_eq!(
        stream_counters(&app, "lost-answer").await,
        before,
        "nothing stored"
    );
    let occupants = app
        .jetstream()
        .await
        .get_key_value(lingr_proto::subjects::OCCUPANTS_BUCKET)
        .await
        .expect("bucket");
    let key = format!(
        "lost-answer.{}",
        entered["occupant_id"].as_str().expect("id")
    );
    assert!(
        occupants.get(key).await.expect("read").is_none(),
        "the occupant did not come back"
    );
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_enter_whose_answer_was_lost_after_its_event_was_stored_is_finished_by_the_retry() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let session = c.session(&base, None).await;
    // As if a first attempt had chosen its occupant, stored the enter event, and then lost
    // the PubAck and taken the occupant back: the record says "entering", the stream holds
    // the event, the occupant is absent.
    let occupant_id = lingr_proto::OccupantId::from_bytes(&[9; 16]);
    plant_unanswered_enter(
        &app,
        &session,
        ("lost-ack", "alice", "lost-ack"),
        &occupant_id,
    )
    .await;
    let js = app.jetstream().await;
    let event = serde_json::json!({
        "type": "enter", "room": "lost-ack", "occupant_id": occupant_id.as_str(),
        "nickname": "alice", "timestamp": "2026-11-26T10:00:00.000Z"
    });
    let stored = js
        .send_publish(
            "rooms.lost-ack.events",
            async_nats::jetstream::message::PublishMessage::build()
                .payload(serde_json::to_vec(&event).expect("json").into())
                .message_id(format!("enter:{occupant_id}")),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");

    let retried = enter_with_id(c, &base, &session, "lost-ack", Some("alice"), "lost-ack")
        .await
        .ok();
    assert_eq!(retried["occupant_id"], occupant_id.as_str());
    assert_eq!(
        retried["counter"], stored.sequence,
        "the stored enter event is its enter"
    );
    assert_eq!(
        stream_counters(&app, "lost-ack").await,
        [stored.sequence],
        "no second enter event"
    );
    let member = Member {
        session: session.clone(),
        ticket: retried["ticket"].as_str().expect("ticket").to_owned(),
        occupant_id: occupant_id.to_string(),
        counter: stored.sequence,
        entered: retried.clone(),
    };
    let said = c.say_ok(&base, &member, "I am really here").await;
    let exited = c
        .get(
            &base,
            "room/exit",
            &[
                ("session", session.as_str()),
                ("ticket", member.ticket.as_str()),
            ],
        )
        .await
        .ok();
    assert_eq!(
        stream_counters(&app, "lost-ack").await,
        [
            stored.sequence,
            said,
            exited["counter"].as_u64().expect("counter")
        ],
        "enter, say, exit: the occupant is whole"
    );
    server.stop().await;
    app.cleanup().await;
}
