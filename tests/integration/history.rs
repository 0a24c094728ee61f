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
