//! The test harness: a real nats-server per test, a fresh PostgreSQL database or SQLite file,
//! Lingr roles started in-process on `127.0.0.1:0` (or as real `lingr` processes), and a typed
//! HTTP client so test bodies read as what a user does.

pub mod client;
pub mod postgres;
pub mod topology;
pub mod waits;

use std::path::PathBuf;
use std::time::Duration;

use lingr::dev::NatsServer;
use lingr_api::ApiConfig;
use lingr_comet::CometConfig;
use tempfile::TempDir;

pub use client::Client;
pub use lingr::process::Roles;
pub use topology::Running;
pub use waits::eventually;

/// The secret every test process signs tickets with.
pub const SECRET: &str = "integration-test-secret-0123456789";

/// Which database history uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// SQLite with roles in-process; PostgreSQL when roles run as separate processes, as in
    /// a deployment.
    Default,
    /// A SQLite file in the test's temp dir.
    Sqlite,
    /// A fresh database on the PostgreSQL server.
    Postgres,
}

/// One test's world: NATS, a database and the processes started against them.
pub struct TestApp {
    /// The nats-server (None while a test has it stopped).
    pub nats: Option<NatsServer>,
    nats_port: u16,
    /// The history database URL.
    pub database_url: String,
    postgres_name: Option<String>,
    /// The temp dir holding NATS storage and SQLite.
    pub dir: TempDir,
    /// HTTP client.
    pub client: Client,
    /// Retention of the event stream.
    pub retention: Duration,
}

impl TestApp {
    /// NATS and a database, with no roles started yet.
    pub async fn new(db: Db) -> Self {
        Self::with_retention(db, Duration::from_secs(3600)).await
    }

    /// Like [`TestApp::new`] with a given stream retention.
    pub async fn with_retention(db: Db, retention: Duration) -> Self {
        lingr_platform::telemetry::init("test");
        let dir = tempfile::tempdir().expect("temp dir");
        let nats = NatsServer::start(&dir.path().join("nats"), None, None)
            .await
            .expect("nats-server starts (is it installed?)");
        let db = match db {
            Db::Default if topology::separate_processes() => Db::Postgres,
            Db::Default => Db::Sqlite,
            named => named,
        };
        let (database_url, postgres_name) = match db {
            Db::Sqlite | Db::Default => (
                format!("sqlite://{}", dir.path().join("history.db").display()),
                None,
            ),
            Db::Postgres => {
                let (url, name) = create_postgres_database().await;
                (url, Some(name))
            }
        };
        Self {
            nats_port: nats.port(),
            nats: Some(nats),
            database_url,
            postgres_name,
            dir,
            client: Client::new(),
            retention,
        }
    }

    /// The NATS URL.
    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.nats_port)
    }

    /// A NATS client connected as the roles connect.
    pub async fn lingr_client(&self) -> async_nats::Client {
        lingr_platform::nats::connect(
            &self.nats_url(),
            "test",
            &Default::default(),
            lingr_platform::readiness::Signal::new(),
        )
        .await
        .expect("connect to NATS")
    }

    /// A NATS client for looking at the stream directly.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(self.nats_url())
            .await
            .expect("connect to NATS");
        async_nats::jetstream::new(client)
    }

    /// The event stream, as the api made it.
    pub async fn events_stream(&self) -> async_nats::jetstream::stream::Stream {
        self.jetstream()
            .await
            .get_stream(lingr_proto::subjects::EVENTS_STREAM)
            .await
            .expect("the event stream exists")
    }

    /// The keys of `bucket` matching `pattern` (a NATS subject pattern such as `>` or
    /// `comet.>`) that hold a value now, with that value; deleted ones left out.
    ///
    /// Listed from the stream's subjects (STREAM.INFO requests, paged), then read one by one,
    /// not with `kv::Store::keys`: that one reads through a consumer, and on a bucket whose
    /// keys are rewritten or deleted while it reads (the presence bucket, every flush) it
    /// waited past a 30 s limit in CI.
    pub async fn live_entries(&self, bucket: &str, pattern: &str) -> Vec<(String, Vec<u8>)> {
        use futures::TryStreamExt as _;
        let js = self.jetstream().await;
        let store = js.get_key_value(bucket).await.expect("bucket");
        let prefix = format!("$KV.{bucket}.");
        let stream = js
            .get_stream(format!("KV_{bucket}"))
            .await
            .expect("bucket stream");
        let subjects: Vec<(String, usize)> = stream
            .info_with_subjects(format!("{prefix}{pattern}"))
            .await
            .expect("stream subjects")
            .try_collect()
            .await
            .expect("stream subjects");
        let mut live = Vec::new();
        for (subject, _) in subjects {
            let Some(key) = subject.strip_prefix(&prefix) else {
                continue;
            };
            if let Some(value) = store.get(key).await.expect("get") {
                live.push((key.to_owned(), value.to_vec()));
            }
        }
        live
    }

    /// Starts `roles`: in this process, or as `lingr` processes when
    /// `LINGR_TEST_TOPOLOGY=processes`.
    pub async fn start(&self, roles: Roles) -> Running {
        if topology::separate_processes() {
            topology::start_processes(self, roles).await
        } else {
            topology::start_in_process(self, roles).await
        }
    }

    /// All roles in one process, default settings.
    pub async fn start_all(&self) -> Running {
        self.start(all_roles(ApiConfig::default(), CometConfig::default()))
            .await
    }

    /// Kills the nats-server (SIGKILL).
    pub async fn kill_nats(&mut self) {
        if let Some(nats) = self.nats.take() {
            nats.kill().await;
        }
    }

    /// Freezes the nats-server (SIGSTOP) or lets it go on (SIGCONT): a hung server keeps its
    /// connections open and answers nothing, unlike a dead one.
    pub async fn signal_nats(&self, signal: &str) {
        let pid = self
            .nats
            .as_ref()
            .and_then(NatsServer::pid)
            .expect("nats-server runs");
        send_signal(pid, signal).await;
    }

    /// Starts the nats-server again on the same port with the same storage.
    pub async fn restart_nats(&mut self) {
        let store = self.dir.path().join("nats");
        self.nats = Some(
            NatsServer::start(&store, Some(self.nats_port), None)
                .await
                .expect("nats-server restarts"),
        );
    }

    /// Drops the PostgreSQL database, if any.
    pub async fn cleanup(mut self) {
        if let Some(name) = self.postgres_name.take() {
            drop_postgres_database(&name).await;
        }
    }
}

impl Drop for TestApp {
    /// A test that panicked before [`TestApp::cleanup`] still drops its database. Drop cannot
    /// await, so a thread of its own does it.
    fn drop(&mut self) {
        let Some(name) = self.postgres_name.take() else {
            return;
        };
        let dropped = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(drop_postgres_database(&name));
            }
        });
        let _ = dropped.join();
    }
}

/// A normal client's visit while some abuse runs: a new person enters `room`, says something
/// and observes it. Fails if any step is refused.
pub async fn assert_served(c: &Client, base: &str, room: &str) {
    let visitor = c.join(base, room, "visitor").await;
    let said = c.say_ok(base, &visitor, "served as usual").await;
    let seen = c.observe(base, &visitor, visitor.counter, 10).await.ok();
    assert_eq!(
        client::counters(&client::events(&seen)),
        [said],
        "a normal client's say reaches its observe during the abuse"
    );
}

/// Every role, with the given settings.
pub fn all_roles(api: ApiConfig, comet: CometConfig) -> Roles {
    Roles {
        api: Some(api),
        comet: Some(comet),
        history: true,
    }
}

/// Api settings without rate limits, for tests that say a lot.
pub fn fast_api() -> ApiConfig {
    ApiConfig {
        call_rate: 100_000.0,
        call_burst: 100_000,
        session_rate: 0.0,
        ..ApiConfig::default()
    }
}

/// Just the api.
pub fn api_only(api: ApiConfig) -> Roles {
    Roles {
        api: Some(api),
        ..Roles::default()
    }
}

/// Just a comet.
pub fn comet_only(comet: CometConfig) -> Roles {
    Roles {
        comet: Some(comet),
        ..Roles::default()
    }
}

/// Just history.
pub fn history_only() -> Roles {
    Roles {
        history: true,
        ..Roles::default()
    }
}

/// The PostgreSQL server tests use: `LINGR_TEST_POSTGRES` or the local one.
fn postgres_admin_url() -> String {
    std::env::var("LINGR_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

async fn create_postgres_database() -> (String, String) {
    use sqlx::Connection as _;
    let admin = postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL answers (see README: tests need one)");
    let mut random = [0u8; 8];
    lingr_platform::config::random_bytes(&mut random).expect("random");
    let name = format!("lingr_test_{}", lingr_proto::values::hex(&random));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base)
        .to_owned();
    (format!("{base}/{name}"), name)
}

async fn drop_postgres_database(name: &str) {
    use sqlx::Connection as _;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

/// A port nothing listens on right now, for a server a test starts a moment later.
///
/// It is taken below Linux's ephemeral range (32768-60999), where the kernel never puts the
/// outgoing connections other tests make all the time: a port from `bind(0)` comes from that
/// range, and one test's connection took it before the server could bind it.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher as _, RandomState};
    const FIRST: u16 = 20_000;
    const COUNT: u64 = 12_000;
    // RandomState is seeded differently in each process, and the counter moves it on.
    let seed = RandomState::new();
    (0u64..)
        .map(|attempt| FIRST + (seed.hash_one(attempt) % COUNT) as u16)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// Sends SIGTERM to a child process, as Kubernetes or Ctrl-C would.
pub async fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(status.success());
}

/// The `lingr` binary, built by the test command before the tests run.
pub fn lingr_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("LINGR_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    let path = target.join("debug/lingr");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p lingr` first (the README's test command does)",
        path.display()
    );
    path
}

/// Sends `signal` (`-STOP`, `-CONT`) to process `pid`.
pub async fn send_signal(pid: u32, signal: &str) {
    let pid = pid.to_string();
    let status = tokio::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .await
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}
