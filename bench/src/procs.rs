//! What the servers under test cost, read from /proc: the resident memory and CPU time of a
//! process and every process under it (nginx's workers, pushpin's services).

use std::time::{Duration, Instant};

/// Memory and CPU time of a group of processes at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// When it was read.
    pub at: Instant,
}

impl Sample {
    /// Reads every process in `roots` and all their descendants.
    pub fn of(roots: &[u32]) -> Self {
        let pids = with_descendants(roots);
        Self {
            rss_kib: pids.iter().filter_map(|p| rss_kib(*p)).sum(),
            cpu_ticks: pids.iter().filter_map(|p| cpu_ticks(*p)).sum(),
            at: Instant::now(),
        }
    }

    /// The share of one core the group used since `earlier`, in per cent.
    pub fn cpu_percent_since(&self, earlier: &Sample) -> f64 {
        let elapsed = self
            .at
            .duration_since(earlier.at)
            .max(Duration::from_millis(1));
        100.0 * self.cpu_seconds_since(earlier) / elapsed.as_secs_f64()
    }

    /// CPU seconds used since `earlier` (user plus system).
    pub fn cpu_seconds_since(&self, earlier: &Sample) -> f64 {
        self.cpu_ticks.saturating_sub(earlier.cpu_ticks) as f64 / ticks_per_second()
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The fields after the command name of /proc/PID/stat (the name may hold spaces).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let fields = stat_fields(pid)?;
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// `roots` and every process under them.
pub fn with_descendants(roots: &[u32]) -> Vec<u32> {
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut found = roots.to_vec();
    let mut grew = true;
    while grew {
        grew = false;
        for pid in &all {
            if !found.contains(pid) && parent(*pid).is_some_and(|p| found.contains(&p)) {
                found.push(*pid);
                grew = true;
            }
        }
    }
    found
}

fn ticks_per_second() -> f64 {
    // Linux reports 100 ticks a second on every architecture this runs on (USER_HZ);
    // `getconf CLK_TCK` confirms it where it can run.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
