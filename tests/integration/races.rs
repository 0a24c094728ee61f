//! Races between two calls of one occupant: whatever order they land in, an occupant that has
//! left stays gone.

use crate::support::{all_roles, fast_api, Db, TestApp};
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
