//! Races between two calls of one occupant, and between one occupant leaving and another
//! entering: whatever order they land in, an occupant that has left stays gone, and nobody is
//! told of an occupant whose exit they will never see.

use std::process::Stdio;
use std::time::Duration;

use crate::support::topology::spawn_role_with;

use crate::guarantees::stream_counters;
use crate::support::{all_roles, eventually, fast_api, history_only, sigterm, Db, TestApp};
use lingr_comet::CometConfig;

/// Whether the occupants bucket holds `occupant_id` in any room.
async fn occupant_stored(app: &TestApp, room: &str, occupant_id: &str) -> bool {
    let js = app.jetstream().await;
    let bucket = js
        .get_key_value(lingr_proto::subjects::OCCUPANTS_BUCKET)
        .await
        .expect("occupants bucket");
    bucket
        .get(format!("{room}.{occupant_id}"))
        .await
        .expect("read occupant")
        .is_some()
}

#[tokio::test]
async fn set_nickname_racing_exit_never_brings_the_occupant_back() {
    let app = TestApp::new(Db::Default).await;
    let server = app
        .start(all_roles(fast_api(), CometConfig::default()))
        .await;
    let base = server.base();
    let c = &app.client;
    for round in 0..30 {
        let alice = c.join(&base, "racing", "alice").await;
        let nickname = format!("alice{round}");
        let rename_params = [
            ("session", alice.session.as_str()),
            ("ticket", alice.ticket.as_str()),
            ("nickname", nickname.as_str()),
        ];
        let exit_params = [
            ("session", alice.session.as_str()),
            ("ticket", alice.ticket.as_str()),
        ];
        // Sweep the rename's start across the exit's lifetime, so some round lands its write
        // just after the exit's delete.
        let rename = async {
            tokio::time::sleep(std::time::Duration::from_millis(round)).await;
            c.get(&base, "room/set_nickname", &rename_params).await
        };
        let exit = c.get(&base, "room/exit", &exit_params);
        let (_, exited) = tokio::join!(rename, exit);
        exited.ok();
        assert!(
            !occupant_stored(&app, "racing", &alice.occupant_id).await,
            "round {round}: the occupant came back after its exit"
        );
        c.say(&base, &alice, "ghost?")
            .await
            .assert_error(401, "invalid_ticket");
    }
    server.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_exit_stored_before_an_enter_is_not_in_that_enters_occupant_list() {
    let app = TestApp::new(Db::Default).await;
    let history = app.start(history_only()).await;
    // The exit's record is deleted two seconds after its event is stored: an enter lands in
    // between, every time.
    let (mut api, base) = spawn_role_with(
        &app,
        "api",
        Vec::new(),
        &[("FAILPOINTS", "api::leave::exit-published=return(2000)")],
        Stdio::inherit(),
    )
    .await;
    let c = &app.client;
    for round in 0..3 {
        let room = format!("crossing{round}");
        let alice = c.join(&base, &room, "alice").await;
        let exit = {
            let (c, base, alice) = (c.clone(), base.clone(), alice.clone());
            tokio::spawn(async move {
                c.get(
                    &base,
                    "room/exit",
                    &[("session", &alice.session), ("ticket", &alice.ticket)],
                )
                .await
            })
        };
        // The exit event is stored at once; its occupant lingers through the fault point.
        eventually("the exit to be stored", Duration::from_secs(10), || async {
            (stream_counters(&app, &room).await.len() == 2).then_some(())
        })
        .await;
        let bob = c.join(&base, &room, "bob").await;
        assert!(
            !exit.is_finished(),
            "the fault point did not hold the exit through bob's enter: build lingr with \
             --features failpoints (./scripts/test does)"
        );
        let exited = exit.await.expect("exit task").ok();
        let exit_counter = exited["counter"].as_u64().expect("exit counter");
        assert!(
            exit_counter < bob.counter,
            "round {round}: the exit ({exit_counter}) was stored before bob's enter ({})",
            bob.counter
        );
        let listed = bob.listed_occupants();
        assert!(
            !listed.contains(&alice.occupant_id),
            "round {round}: bob was told alice is here, and will never see her leave: {listed:?}"
        );
    }
    sigterm(&api).await;
    let _ = api.wait().await;
    history.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_enter_racing_its_session_being_destroyed_is_refused_and_leaves_nothing() {
    let app = TestApp::new(Db::Default).await;
    // The enter waits two seconds after storing its occupant: the destroy lands in between.
    let (mut api, base) = spawn_role_with(
        &app,
        "api",
        Vec::new(),
        &[("FAILPOINTS", "api::enter::occupant-stored=return(2000)")],
        Stdio::inherit(),
    )
    .await;
    let c = &app.client;
    let session = c.session(&base, Some("alice")).await;
    let enter = {
        let (c, base, session) = (c.clone(), base.clone(), session.clone());
        tokio::spawn(async move {
            c.get(
                &base,
                "room/enter",
                &[("session", &session), ("room", "doomed")],
            )
            .await
        })
    };
    let stored_occupants = || app.live_entries(lingr_proto::subjects::OCCUPANTS_BUCKET, ">");
    eventually(
        "the occupant to be stored",
        Duration::from_secs(10),
        || async { (!stored_occupants().await.is_empty()).then_some(()) },
    )
    .await;
    c.get(&base, "session/destroy", &[("session", &session)])
        .await
        .ok();
    assert!(
        !enter.is_finished(),
        "the fault point did not hold the enter through the destroy: build lingr with \
         --features failpoints (./scripts/test does)"
    );
    let entered = enter.await.expect("enter task");
    entered.assert_error(401, "invalid_session");
    assert!(
        stored_occupants().await.is_empty(),
        "the refused enter left an occupant behind"
    );
    let stream = app.events_stream().await;
    assert_eq!(
        stream.cached_info().state.messages,
        0,
        "nobody saw an enter that was refused"
    );
    sigterm(&api).await;
    let _ = api.wait().await;
    app.cleanup().await;
}
