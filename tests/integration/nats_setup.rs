//! The NATS plumbing every role relies on, against a real nats-server 2.9: buckets created
//! without `create_key_value`, fresh bucket state, mirrors that are only ready once loaded, and
//! the event stream's republishing (added in place from 2.10, refused clearly on 2.9).

use std::time::Duration;

use lingr_platform::mirror::KvMirror;
use lingr_platform::nats;
use tokio_util::sync::CancellationToken;

use crate::support::{Db, TestApp};

async fn open_bucket(app: &TestApp, name: &str) -> async_nats::jetstream::kv::Store {
    nats::Layout::new(app.lingr_client().await, app.retention, 1)
        .bucket(name)
        .await
        .expect("bucket")
}

#[tokio::test]
async fn bucket_state_sees_writes_made_after_the_bucket_was_opened() {
    let app = TestApp::new(Db::Default).await;
    let store = open_bucket(&app, "fresh_state").await;
    let revision = store.put("k", "v".into()).await.expect("put");
    let state = nats::bucket_state(&store).await.expect("state");
    assert_eq!(state.last_sequence, revision);
    assert_eq!(state.messages, 1);
    app.cleanup().await;
}

#[tokio::test]
async fn a_mirror_is_ready_only_once_it_holds_the_bucket_as_it_was() {
    let app = TestApp::new(Db::Default).await;
    let store = open_bucket(&app, "mirrored").await;
    for i in 0..100 {
        store
            .put(format!("key{i}"), i.to_string().into())
            .await
            .expect("put");
    }
    store.delete("key7").await.expect("delete");
    let shutdown = CancellationToken::new();
    let (mirror, task) = KvMirror::<u64>::spawn(store.clone(), shutdown.clone());
    // Look at the very moment it turns ready: this runtime is single-threaded, so the mirror
    // task only advances while this loop yields.
    let at_ready = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if mirror.is_ready() {
                return mirror.snapshot().len();
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the mirror becomes ready");
    assert_eq!(
        at_ready, 99,
        "ready means every key present when it started is loaded"
    );
    assert!(!mirror.contains("key7"), "deleted keys are not mirrored");
    assert_eq!(mirror.get("key42"), Some(42));

    let revision = store.put("later", "7".into()).await.expect("put");
    assert!(mirror.caught_up_to(revision, Duration::from_secs(5)).await);
    assert_eq!(mirror.get("later"), Some(7));
    mirror.retain(|_, value| *value >= 50);
    assert_eq!(
        mirror.snapshot().len(),
        50,
        "retain drops what the caller knows is stale"
    );
    assert_eq!(mirror.get("key42"), None);
    shutdown.cancel();
    task.await.expect("mirror task ends");
    app.cleanup().await;
}

#[tokio::test]
async fn an_event_stream_made_without_republishing_gets_it_or_a_clear_refusal() {
    let app = TestApp::new(Db::Default).await;
    let client = app.lingr_client().await;
    let js = async_nats::jetstream::new(client.clone());
    // The stream as Lingr made it before comets subscribed per room.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: lingr_proto::subjects::EVENTS_STREAM.to_owned(),
        subjects: vec![lingr_proto::subjects::EVENTS_SUBJECTS.to_owned()],
        allow_direct: true,
        ..Default::default()
    })
    .await
    .expect("an old stream");
    let opened = nats::Layout::new(client.clone(), app.retention, 1)
        .events()
        .await;
    let version = client.server_info().version;
    if version.starts_with("2.9.") {
        let refusal = format!("{:#}", opened.expect_err("2.9 cannot add republishing"));
        assert!(
            refusal.contains("upgrade nats-server to 2.10 or later"),
            "{refusal}"
        );
    } else {
        let mut stream = opened.expect("updated in place");
        let config = stream.info().await.expect("info").config.clone();
        assert_eq!(
            config.republish.map(|r| r.destination),
            Some(lingr_proto::subjects::LIVE_SUBJECT_TEMPLATE.to_owned()),
            "nats-server {version} added it"
        );
    }
    app.cleanup().await;
}
