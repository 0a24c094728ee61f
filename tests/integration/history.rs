//! `room/get_messages` on PostgreSQL and on SQLite: paging both ways, `has_more`, the limit
//! and its bounds, and unknown rooms.

use std::time::Duration;

use lingr_comet::CometConfig;
use serde_json::Value;

use crate::support::client::counters;
use crate::support::{all_roles, eventually, Db, TestApp};

fn page(answer: &Value) -> (Vec<u64>, bool) {
    let messages = answer["messages"].as_array().cloned().unwrap_or_default();
    (
        counters(&messages),
        answer["has_more"].as_bool().expect("has_more"),
    )
}

async fn pages_both_ways(db: Db) {
    let app = TestApp::new(db).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let alice = c.join(&base, "pages", "alice").await;
    let mut all = vec![alice.counter];
    for i in 0..7 {
        all.push(c.say_ok(&base, &alice, &format!("m{i}")).await);
    }
    let everything = eventually(
        "history to hold every event",
        Duration::from_secs(20),
        || async {
            let answer = c.messages(&base, "pages", &[]).await.ok();
            (page(&answer).0.len() == all.len()).then_some(answer)
        },
    )
    .await;
    assert_eq!(page(&everything), (all.clone(), false));
    assert_eq!(
        everything["messages"][0]["type"], "enter",
        "events of every type"
    );
    assert_eq!(everything["messages"][1]["text"], "m0");

    let s = |n: u64| n.to_string();
    assert_eq!(
        page(&c.messages(&base, "pages", &[("limit", "3")]).await.ok()),
        (all[5..].to_vec(), true)
    );
    assert_eq!(
        page(
            &c.messages(&base, "pages", &[("before", &s(all[5])), ("limit", "3")])
                .await
                .ok()
        ),
        (all[2..5].to_vec(), true)
    );
    assert_eq!(
        page(
            &c.messages(&base, "pages", &[("before", &s(all[2])), ("limit", "3")])
                .await
                .ok()
        ),
        (all[..2].to_vec(), false)
    );
    assert_eq!(
        page(
            &c.messages(&base, "pages", &[("after", &s(all[1])), ("limit", "3")])
                .await
                .ok()
        ),
        (all[2..5].to_vec(), true)
    );
    assert_eq!(
        page(
            &c.messages(&base, "pages", &[("after", &s(all[4])), ("limit", "3")])
                .await
                .ok()
        ),
        (all[5..].to_vec(), false)
    );
    assert_eq!(
        page(
            &c.messages(&base, "pages", &[("after", &s(all[7]))])
                .await
                .ok()
        ),
        (Vec::new(), false)
    );
    assert_eq!(
        page(&c.messages(&base, "pages", &[("limit", "200")]).await.ok()),
        (all.clone(), false)
    );

    for bad in [
        vec![("limit", "201")],
        vec![("limit", "0")],
        vec![("limit", "many")],
        vec![("before", "3"), ("after", "1")],
    ] {
        c.messages(&base, "pages", &bad)
            .await
            .assert_error(400, "invalid_parameter");
    }
    c.messages(&base, "nowhere", &[])
        .await
        .assert_error(404, "room_not_found");
    c.get(&base, "room/get_messages", &[])
        .await
        .assert_error(400, "missing_parameter");
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn get_messages_pages_both_ways_on_postgres() {
    pages_both_ways(Db::Postgres).await;
}

#[tokio::test]
async fn get_messages_pages_both_ways_on_sqlite() {
    pages_both_ways(Db::Sqlite).await;
}

#[tokio::test]
async fn get_messages_returns_50_by_default_and_enter_the_last_30_messages() {
    let app = TestApp::new(Db::Default).await;
    let api = crate::support::fast_api();
    let server = app.start(all_roles(api, CometConfig::default())).await;
    let base = server.base();
    let c = &app.client;
    let alice = c.join(&base, "long", "alice").await;
    let mut said = Vec::new();
    for i in 0..60 {
        said.push(c.say_ok(&base, &alice, &format!("n{i}")).await);
    }
    let bob = c.join(&base, "long", "bob").await;
    let recent: Vec<u64> = counters(
        bob.entered["room"]["messages"]
            .as_array()
            .expect("messages"),
    );
    assert_eq!(
        recent,
        said[30..],
        "enter returns the last 30 messages, oldest first"
    );
    let newest = eventually(
        "history to hold every message",
        Duration::from_secs(20),
        || async {
            let answer = c.messages(&base, "long", &[]).await.ok();
            (page(&answer).0.last() == Some(&bob.counter)).then_some(answer)
        },
    )
    .await;
    let (counters_page, has_more) = page(&newest);
    assert_eq!(counters_page.len(), 50);
    assert!(has_more);
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_flood_of_recent_message_requests_is_answered_without_queueing_without_bound() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    let base = server.base();
    let c = &app.client;
    let client = async_nats::connect(app.nats_url()).await.expect("connect");
    // Asking for messages before a counter nobody will reach holds each answer for the whole
    // catch-up wait, so the requests pile up as a flood would.
    let request = serde_json::to_vec(&lingr_proto::api::RecentRequest {
        room: "flooded".to_owned(),
        before: 1_000_000_000,
        limit: 30,
    })
    .expect("json");
    let flood = 64 + 100;
    let mut asked = Vec::new();
    for _ in 0..flood {
        let client = client.clone();
        let payload = request.clone();
        asked.push(tokio::spawn(async move {
            client
                .request(lingr_proto::subjects::HISTORY_RECENT, payload.into())
                .await
        }));
    }
    let alice = c.join(&base, "flooded-neighbour", "alice").await;
    let said = c.say_ok(&base, &alice, "history still serves").await;
    let mut answered = 0;
    for reply in asked {
        let reply = reply.await.expect("task").expect("answered");
        let reply: lingr_proto::api::RecentReply =
            serde_json::from_slice(&reply.payload).expect("reply");
        assert!(!reply.complete, "nothing reaches that counter");
        answered += 1;
    }
    assert_eq!(answered, flood);
    let refused = c
        .metric(&base, "lingr_history_recent_refused_total")
        .await
        .expect("the refused-requests metric");
    assert!(
        refused >= 100,
        "at most 64 requests waited at once; {refused} were refused"
    );
    crate::support::eventually(
        "the say in history",
        std::time::Duration::from_secs(10),
        || async {
            let page = c.messages(&base, "flooded-neighbour", &[]).await.ok();
            page["messages"]
                .as_array()?
                .iter()
                .any(|m| m["counter"] == said)
                .then_some(())
        },
    )
    .await;
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn rooms_nobody_enters_age_out_of_their_bucket() {
    let app = TestApp::new(Db::Default).await;
    let server = app.start_all().await;
    app.client.join(&server.base(), "ageing", "alice").await;
    let js = app.jetstream().await;
    let mut rooms = js
        .get_stream(format!("KV_{}", lingr_proto::subjects::ROOMS_BUCKET))
        .await
        .expect("rooms bucket");
    let max_age = rooms.info().await.expect("info").config.max_age;
    assert_eq!(max_age, lingr_platform::nats::ROOM_MAX_AGE);
    server.stop().await;
    app.cleanup().await;
}
