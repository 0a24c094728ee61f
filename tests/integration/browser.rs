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

/// A cluster whose api and comet can be killed and started again at the same addresses.
struct Cluster {
    app: TestApp,
    running: Running,
    api: Role,
    comet: Role,
}

/// A role run as a process of its own, at an address that outlives it.
struct Role {
    name: &'static str,
    listen: String,
    flags: Vec<String>,
    child: Option<Child>,
}

impl Role {
    async fn start(app: &TestApp, name: &'static str, flags: &[&str]) -> Self {
        let mut role = Self {
            name,
            listen: format!("127.0.0.1:{}", free_port()),
            flags: flags.iter().map(|&f| f.to_owned()).collect(),
            child: None,
        };
        role.restart(app, None).await;
        role
    }

    fn base(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// kill -9: nothing drains, held observes just break.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill the role");
        }
    }

    /// Starts it (again) where it was, with another secret if given.
    async fn restart(&mut self, app: &TestApp, secret: Option<&str>) {
        self.kill().await;
        let mut flags = vec!["--listen".to_owned(), self.listen.clone()];
        flags.extend(self.flags.iter().cloned());
        if let Some(secret) = secret {
            flags.extend(["--secret".to_owned(), secret.to_owned()]);
        }
        self.child = Some(spawn_role(app, self.name, flags).await.0);
    }
}

/// The secret a scenario's `new-secret` step switches to: every ticket signed before is void.
const NEW_SECRET: &str = "another-secret-of-at-least-32-characters";

impl Cluster {
    async fn start(api_flags: &[&str]) -> Self {
        let app = TestApp::new(Db::Default).await;
        let api = Role::start(&app, "api", api_flags).await;
        let comet = Role::start(&app, "comet", &[]).await;
        let (history, history_base) = spawn_role(&app, "history", Vec::new()).await;
        let upstreams = Upstreams::new(api.base(), comet.base(), history_base);
        let running = behind_proxy(&app, upstreams, vec![history]).await;
        Self {
            app,
            running,
            api,
            comet,
        }
    }

    /// Does what a scenario asked.
    async fn step(&mut self, step: &str) {
        match step {
            "kill-comet" => self.comet.kill().await,
            "start-comet" => self.comet.restart(&self.app, None).await,
            "new-secret" => {
                self.api.restart(&self.app, Some(NEW_SECRET)).await;
                self.comet.restart(&self.app, Some(NEW_SECRET)).await;
            }
            other => panic!("the scenario asked for an unknown step: {other}"),
        }
    }

    async fn stop(mut self) {
        self.comet.kill().await;
        self.api.kill().await;
        self.running.stop().await;
        self.app.cleanup().await;
    }
}

/// Runs `tests/browser/<name>.mjs` against a fresh cluster whose api has `api_flags`; fails
/// with the scenario's output if the scenario fails.
async fn scenario(name: &str, api_flags: &[&str]) {
    let dir = scenarios_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci` in tests/browser (scripts/test does)"
    );
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/browser-artifacts")
        .join(name);
    let mut cluster = Cluster::start(api_flags).await;
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
    scenario("chat", &[]).await;
}

#[tokio::test]
async fn the_browser_client_loses_no_message_through_a_comet_restart() {
    scenario("comet-restart", &[]).await;
}

#[tokio::test]
async fn the_browser_client_shows_a_rate_limit_beside_the_field_and_enters_again_when_its_ticket_dies(
) {
    // Three calls in a burst: an enter and two says.
    scenario("errors", &["--call-rate", "1", "--call-burst", "3"]).await;
}
