//! A PostgreSQL server of one test's own, which the test may stop and start again: the shared
//! server keeps serving every other test meanwhile. Stopped with `-m immediate`, as a crash
//! or a lost machine would stop it.

use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

/// The server; stopped when dropped.
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
}

impl PrivatePostgres {
    /// Creates a cluster in a temp dir and starts it on a free port.
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries in /usr/lib/postgresql (Debian's postgresql)")
            .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().expect("temp dir");
        let server = Self {
            bin,
            dir,
            port: super::free_port(),
        };
        if is_root() {
            run("chown", &["-R", "postgres", &server.path("")]);
        }
        server.as_owner(&format!(
            "'{}' -D '{}' -U postgres --auth=trust >'{}' 2>&1",
            server.bin.join("initdb").display(),
            server.path("data"),
            server.path("initdb.log"),
        ));
        server.as_owner(&server.pg_ctl(&server.start_args()));
        server
    }

    /// Its URL, for its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops it at once, without a checkpoint.
    pub async fn stop(&self) {
        self.in_background(self.pg_ctl("-m immediate stop")).await;
    }

    /// Starts it again, waiting until it accepts connections.
    pub async fn resume(&self) {
        self.in_background(self.pg_ctl(&self.start_args())).await;
    }

    fn start_args(&self) -> String {
        format!(
            "-w -l '{}' -o \"-p {} -k '{}' -c listen_addresses=127.0.0.1\" start",
            self.path("server.log"),
            self.port,
            self.path(""),
        )
    }

    fn pg_ctl(&self, args: &str) -> String {
        format!(
            "'{}' -D '{}' {args} >/dev/null",
            self.bin.join("pg_ctl").display(),
            self.path("data")
        )
    }

    /// Runs `command` as the owner off the test's runtime, whose threads serve the roles the
    /// test started in-process.
    async fn in_background(&self, command: String) {
        let status = tokio::task::spawn_blocking(move || owner_shell(&command).status())
            .await
            .expect("pg_ctl task")
            .expect("a shell");
        assert!(status.success(), "pg_ctl failed: {status}");
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Runs a shell command as the cluster's owner (PostgreSQL refuses to run as root).
    fn as_owner(&self, command: &str) {
        let status = owner_shell(command).status().expect("a shell");
        assert!(status.success(), "{command} failed: {status}");
    }
}

/// A shell running `command` as the cluster's owner.
fn owner_shell(command: &str) -> Command {
    if is_root() {
        let mut shell = Command::new("su");
        shell.args(["postgres", "-s", "/bin/sh", "-c", command]);
        shell
    } else {
        let mut shell = Command::new("sh");
        shell.args(["-c", command]);
        shell
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let stop = format!(
            "'{}' -D '{}' -m immediate stop >/dev/null 2>&1",
            self.bin.join("pg_ctl").display(),
            self.path("data")
        );
        let _ = owner_shell(&stop).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|err| panic!("{program}: {err}"));
    assert!(status.success(), "{program} {args:?} failed: {status}");
}
