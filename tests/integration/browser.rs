//! The web client and the badge in a real Chromium (Debian's, driven by npm's playwright-core):
//! the scenarios are `tests/browser/*.mjs`. Each runs against api, comet and history as
//! `lingr` processes behind the path-routing proxy (as behind the load balancer), and asks this
//! side, a line on its standard output, to kill or start the comet. Screenshots are kept in
//! `target/browser-artifacts/<scenario>/`.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::support::topology::{behind_proxy, spawn_role, Upstreams};
use crate::support::{free_port, Db, Running, TestApp};

/// Where the scenarios and their npm packages are.
fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../browser")
}

/// A cluster whose comet can be killed and started again at the same address.
struct Cluster {
    app: TestApp,
    running: Running,
    comet_listen: String,
    comet: Option<Child>,
}

impl Cluster {
    async fn start() -> Self {
        let app = TestApp::new(Db::Default).await;
        let (api, api_base) = spawn_role(&app, "api", Vec::new()).await;
        let (history, history_base) = spawn_role(&app, "history", Vec::new()).await;
        let comet_listen = format!("127.0.0.1:{}", free_port());
        let comet = Self::comet(&app, &comet_listen).await;
        let upstreams = Upstreams::new(api_base, format!("http://{comet_listen}"), history_base);
        let running = behind_proxy(&app, upstreams, vec![api, history]).await;
        Self {
            app,
            running,
            comet_listen,
            comet: Some(comet),
        }
    }

    async fn comet(app: &TestApp, listen: &str) -> Child {
        spawn_role(app, "comet", vec!["--listen".to_owned(), listen.to_owned()])
            .await
            .0
    }

    /// Does what a scenario asked.
    async fn step(&mut self, step: &str) {
        match step {
            "kill-comet" => {
                // kill -9: nothing drains, held observes just break.
                if let Some(mut comet) = self.comet.take() {
                    comet.kill().await.expect("kill the comet");
                }
            }
            "start-comet" => {
                self.comet = Some(Self::comet(&self.app, &self.comet_listen).await);
            }
            other => panic!("the scenario asked for an unknown step: {other}"),
        }
    }

    async fn stop(mut self) {
        if let Some(mut comet) = self.comet.take() {
            let _ = comet.kill().await;
        }
        self.running.stop().await;
        self.app.cleanup().await;
    }
}

/// Runs `tests/browser/<name>.mjs` against a fresh cluster; fails with the scenario's output
/// if the scenario fails.
async fn scenario(name: &str) {
    let dir = scenarios_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci` in tests/browser (scripts/test does)"
    );
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/browser-artifacts")
        .join(name);
    let mut cluster = Cluster::start().await;
    let mut node = Command::new("node")
        .arg(format!("{name}.mjs"))
        .arg(cluster.running.base())
        .arg(&artifacts)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node (scripts/test installs it with the npm packages)");
    let mut stdin = node.stdin.take().expect("node's stdin");
    let mut lines = BufReader::new(node.stdout.take().expect("node's stdout")).lines();
    let mut output = Vec::new();
    while let Some(line) =
        tokio::time::timeout(std::time::Duration::from_secs(120), lines.next_line())
            .await
            .expect("the scenario goes on")
            .expect("read the scenario's output")
    {
        println!("{name}: {line}");
        if let Some(step) = line.strip_prefix("step ") {
            cluster.step(step).await;
            stdin
                .write_all(format!("done {step}\n").as_bytes())
                .await
                .expect("answer the scenario");
        }
        output.push(line);
    }
    let status = node.wait().await.expect("node's exit");
    cluster.stop().await;
    assert!(
        status.success() && output.last().is_some_and(|l| l == "ok"),
        "the browser scenario {name} failed:\n{}",
        output.join("\n")
    );
}

#[tokio::test]
async fn two_people_chat_in_the_browser_markup_stays_text_and_the_badge_updates_on_another_origin()
{
    scenario("chat").await;
}

#[tokio::test]
async fn the_browser_client_loses_no_message_through_a_comet_restart() {
    scenario("comet-restart").await;
}
