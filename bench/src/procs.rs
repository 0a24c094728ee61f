//! What the servers under test cost, read from /proc: the resident memory and CPU time of a
//! process and every process under it (nginx's workers, pushpin's services).

use std::time::{Duration, Instant};

/// Memory and CPU time of a group of processes at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// CPU time in user space and in the kernel, in clock ticks.
    pub ticks: CpuTicks,
    /// When it was read.
    pub at: Instant,
}

/// CPU time in clock ticks, as /proc/PID/stat counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// In user space (utime).
    pub user: u64,
    /// In the kernel on the processes' behalf (stime).
    pub system: u64,
}

/// CPU seconds spent in user space and in the kernel: system calls, the softirqs that run in
/// the process's time (on loopback, the delivery of what it sends), and switching its threads.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSeconds {
    /// In user space.
    pub user: f64,
    /// In the kernel.
    pub system: f64,
}

impl CpuSeconds {
    /// Both together.
    pub fn total(&self) -> f64 {
        self.user + self.system
    }
}

impl Sample {
    /// Reads every process in `roots` and all their descendants.
    pub fn of(roots: &[u32]) -> Self {
        let pids = with_descendants(roots);
        Self {
            rss_kib: pids.iter().filter_map(|p| rss_kib(*p)).sum(),
            ticks: pids
                .iter()
                .filter_map(|p| cpu_ticks(*p))
                .fold(CpuTicks::default(), |sum, t| CpuTicks {
                    user: sum.user + t.user,
                    system: sum.system + t.system,
                }),
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
        self.cpu_split_since(earlier).total()
    }

    /// CPU seconds used since `earlier`, in user space and in the kernel.
    pub fn cpu_split_since(&self, earlier: &Sample) -> CpuSeconds {
        let per_tick = 1.0 / ticks_per_second();
        CpuSeconds {
            user: self.ticks.user.saturating_sub(earlier.ticks.user) as f64 * per_tick,
            system: self.ticks.system.saturating_sub(earlier.ticks.system) as f64 * per_tick,
        }
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

/// The fields after the command name of /proc/PID/stat.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(fields_after_name(&stat)?.map(str::to_owned).collect())
}

/// The fields of a stat line after the command name, which may hold spaces and parentheses
/// (it ends at the line's last `)`).
fn fields_after_name(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    Some(stat.rsplit_once(')')?.1.split_whitespace())
}

fn cpu_ticks(pid: u32) -> Option<CpuTicks> {
    cpu_ticks_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime and stime of a stat line: fields 14 and 15, the 12th and 13th after the name.
fn cpu_ticks_of(stat: &str) -> Option<CpuTicks> {
    let mut fields = fields_after_name(stat)?.skip(11);
    Some(CpuTicks {
        user: fields.next()?.parse().ok()?,
        system: fields.next()?.parse().ok()?,
    })
}

fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Whether `pid` has ended and waits only for its parent to read its status (a zombie):
/// nothing is left of it to stop.
pub fn has_ended(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|fields| fields.first().is_some_and(|state| state == "Z"))
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

/// The whole machine's CPU time at one moment, from the first line of /proc/stat: how much
/// of it the hypervisor gave to other guests (steal). On a virtual machine that share moves
/// a run's figures more than most changes do, so each scenario reports it for its window.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    /// Ticks stolen by the hypervisor.
    steal: u64,
    /// Ticks of every kind (user to steal; guest time is already within user).
    total: u64,
}

impl MachineCpu {
    /// Reads /proc/stat; none where it cannot be read (a steal of zero would look measured).
    pub fn now() -> Option<Self> {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| Self::parse(stat.lines().next()?))
    }

    /// `cpu  user nice system idle iowait irq softirq steal guest guest_nice`.
    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let ticks: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
        Some(Self {
            steal: *ticks.get(7)?,
            total: ticks.iter().take(8).sum(),
        })
    }

    /// The share of the machine's CPU time stolen since `earlier`, in per cent.
    pub fn steal_percent_since(&self, earlier: &MachineCpu) -> f64 {
        let total = self.total.saturating_sub(earlier.total).max(1);
        100.0 * self.steal.saturating_sub(earlier.steal) as f64 / total as f64
    }
}

/// The share of the machine's CPU time stolen over a window, in per cent, if /proc/stat
/// could be read at both of its ends. Shown as `-` when not.
#[derive(Debug, Clone, Copy, Default)]
pub struct Steal(Option<f64>);

impl Steal {
    /// From `start`, read when the window began, until now.
    pub fn since(start: Option<MachineCpu>) -> Self {
        Self(
            start
                .zip(MachineCpu::now())
                .map(|(earlier, later)| later.steal_percent_since(&earlier)),
        )
    }
}

impl std::fmt::Display for Steal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(pct) => write!(f, "{pct:.1}"),
            None => f.write_str("-"),
        }
    }
}

/// Prints a scenario's steal, `window` saying over what (every scenario words it alike).
pub fn print_steal(steal: Steal, window: &str) {
    match steal.0 {
        Some(pct) => {
            println!("machine: {pct:.1} % of its CPU time stolen by the hypervisor {window}");
        }
        None => println!("machine: steal unknown {window} (/proc/stat could not be read)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_a_share_of_all_the_machines_ticks() {
        let earlier = MachineCpu::parse("cpu  100 0 50 800 10 0 5 20 0 0").expect("parses");
        let later = MachineCpu::parse("cpu  160 0 80 880 10 0 10 70 30 0").expect("parses");
        // 60 + 30 + 80 + 5 + 50 = 225 ticks passed, 50 of them stolen; guest is within user.
        let steal = later.steal_percent_since(&earlier);
        assert!((steal - 100.0 * 50.0 / 225.0).abs() < 1e-9, "{steal}");
        assert!(MachineCpu::parse("cpu0 1 2 3").is_none());
    }

    /// User and kernel time come from utime and stime, after a name that may hold `) `.
    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "4242 (web (1) x) S 1 4242 4242 0 -1 4194560 1800 0 0 0 731 269 0 0 20 0 \
                    3 0 1234 5678 90 18446744073709551615";
        assert_eq!(
            cpu_ticks_of(stat),
            Some(CpuTicks {
                user: 731,
                system: 269
            })
        );
        assert_eq!(cpu_ticks_of("4242 (cut"), None);
        assert_eq!(cpu_ticks_of("4242 (short) S 1 2"), None);
    }

    #[test]
    fn an_unread_window_shows_as_unknown_not_as_zero() {
        assert_eq!(Steal::since(None).to_string(), "-");
        assert_eq!(Steal(Some(0.04)).to_string(), "0.0");
    }
}
