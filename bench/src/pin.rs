//! Pins the server under test and the client to CPUs of their own. On a machine whose every
//! core the client shares with the server, a server of several threads takes turns with the
//! client on each core, and a fan-out measures that sharing as much as the server
//! (docs/BENCHMARKS.md, "After the seventh run"). Pinned, each has its cores.

use std::process::{Command, Stdio};

use anyhow::Context as _;

/// Where the server and the client run; neither or both.
#[derive(Debug, Clone, clap::Args)]
pub struct Pinning {
    /// CPUs the server's processes, and every process under them, run on, as `taskset -c`
    /// takes them (e.g. `1`, or `2-3`); the client runs on `--client-cpus`. For lingr, the
    /// comets are the server, started on these CPUs, so each picks one connection runtime per
    /// CPU here unless `--comet-threads` says otherwise (the api, NATS and history keep every
    /// CPU, the server's included).
    #[arg(long, requires = "client_cpus")]
    server_cpus: Option<String>,
    /// CPUs the client's processes run on (e.g. `0`).
    #[arg(long, requires = "server_cpus")]
    client_cpus: Option<String>,
}

impl Pinning {
    /// Whether the run is pinned.
    pub fn pinned(&self) -> bool {
        self.server_cpus.is_some()
    }

    /// How many workers (nginx's) or connection runtimes (a comet's) the server runs: one
    /// per CPU it is given, as each is configured for the cores it has (nginx's `auto`, a
    /// comet's default); unpinned, one per core of the machine.
    ///
    /// # Errors
    /// When `--server-cpus` is not a CPU list.
    pub fn server_workers(&self) -> anyhow::Result<usize> {
        match &self.server_cpus {
            Some(cpus) => cpu_count(cpus),
            None => Ok(std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)),
        }
    }

    /// `wrapper` (the command a comet runs under) started on the server's CPUs when pinned.
    /// A comet picks one connection runtime per CPU it may use when it starts, as in a pod
    /// given that many CPUs; pinned only after it started, it would keep one per core of the
    /// machine on its fewer cores.
    pub fn comet_wrapper(&self, wrapper: &str) -> String {
        match &self.server_cpus {
            Some(cpus) => format!("taskset --cpu-list {cpus} {wrapper}"),
            None => wrapper.to_owned(),
        }
    }

    /// Pins every thread of the `server` processes, and of every process under them (nginx's
    /// workers, pushpin's services, a comet under `--comet-wrapper`: already running, they
    /// would not take on their parent's new CPUs), to the server's CPUs, and this process to
    /// the client's. Call it after the server started (this process starts it, so it would
    /// otherwise inherit the client's CPUs) and before the client's workers start: they then
    /// inherit this process's CPUs, as whatever the server starts later inherits the
    /// server's.
    ///
    /// # Errors
    /// When `taskset` (util-linux) cannot be run or refuses a CPU list.
    pub fn apply(&self, server: &[u32]) -> anyhow::Result<()> {
        let (Some(server_cpus), Some(client_cpus)) = (&self.server_cpus, &self.client_cpus) else {
            return Ok(());
        };
        for pid in crate::procs::with_descendants(server) {
            taskset(server_cpus, pid)?;
        }
        taskset(client_cpus, std::process::id())
    }
}

/// How many distinct CPUs a list such as `taskset -c` takes (`1`, `2-3`, `0,2-3`) names.
/// Spaces and taskset's strides (`0-6:2`) are refused: the list is also passed on to taskset
/// as one argument.
fn cpu_count(list: &str) -> anyhow::Result<usize> {
    /// Above any CPU number Linux gives (its default `NR_CPUS` limit is 8,192).
    const MAX_CPU: usize = 1 << 16;
    let bad = || anyhow::anyhow!("{list:?} is not a CPU list such as 1, 2-3 or 0,2-3");
    let mut cpus = std::collections::BTreeSet::new();
    for part in list.split(',') {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let (first, last): (usize, usize) = (
            first.parse().map_err(|_| bad())?,
            last.parse().map_err(|_| bad())?,
        );
        anyhow::ensure!(first <= last && last < MAX_CPU, bad());
        cpus.extend(first..=last);
    }
    Ok(cpus.len())
}

/// Sets the CPUs of every thread of `pid`. `--all-tasks` fails when a thread ends between
/// its listing and its pinning (an idle runtime thread does): a second try lists them again.
fn taskset(cpus: &str, pid: u32) -> anyhow::Result<()> {
    for _ in 0..2 {
        let status = Command::new("taskset")
            .args(["--all-tasks", "--pid", "--cpu-list", cpus, &pid.to_string()])
            .stdout(Stdio::null())
            .status()
            .context("running taskset (util-linux) to pin a process")?;
        if status.success() {
            return Ok(());
        }
    }
    anyhow::bail!("taskset could not pin process {pid} to CPUs {cpus} (its message is above)")
}

#[cfg(test)]
mod tests {
    use super::cpu_count;

    #[test]
    fn cpu_lists_are_counted_as_taskset_reads_them() {
        assert_eq!(cpu_count("1").ok(), Some(1));
        assert_eq!(cpu_count("2-3").ok(), Some(2));
        assert_eq!(cpu_count("0,2-5").ok(), Some(5));
        assert_eq!(
            cpu_count("1,1-2").ok(),
            Some(2),
            "a CPU named twice counts once"
        );
        for bad in ["", "a", "3-1", "1,", "-1", "0, 1", "0-6:2", "0-99999999999"] {
            assert!(cpu_count(bad).is_err(), "{bad:?} was taken as a CPU list");
        }
    }
}
