//! `lingr-soak`: a whole cluster (api ×2, comet ×3, history ×2 on PostgreSQL, one nats-server)
//! under steady traffic in many rooms while a random process is killed (SIGKILL or SIGTERM)
//! and restarted every so often; at the end, every acknowledged say must have reached its
//! room's observer once, in order, and history must hold exactly the stream's events.
//!
//! Run it with `scripts/soak` (it builds `lingr` and finds nats-server and PostgreSQL).

mod traffic;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;

use lingr_cluster::{Cluster, Role, Settings};
use traffic::{Client, Observed, Written};

/// The run's settings.
#[derive(Debug, Parser)]
#[command(about = "Soak a Lingr cluster under traffic and faults, and check nothing is lost.")]
struct Args {
    /// How long the traffic runs, in seconds.
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Rooms, each with a writer saying every second and an observer.
    #[arg(long, default_value_t = 50)]
    rooms: usize,
    /// Seconds between faults.
    #[arg(long, default_value_t = 30)]
    fault_every: u64,
    /// The `lingr` binary.
    #[arg(long, default_value = "target/release/lingr")]
    lingr: PathBuf,
    /// A PostgreSQL URL allowed to create databases.
    #[arg(
        long,
        env = "LINGR_TEST_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,
    /// Where process logs go (a temp dir by default).
    #[arg(long)]
    logs: Option<PathBuf>,
}

/// api ×2, comet ×3, history ×2. One address makes every call of the run: no per-address
/// limits, and a call rate above the writers'.
fn roles() -> Vec<Role> {
    let api = Role::new(
        "api",
        &[
            "--session-rate",
            "0",
            "--call-rate",
            "100",
            "--call-burst",
            "100",
        ],
    );
    let comet = Role::new("comet", &["--observes-per-address", "0"]);
    let history = Role::new("history", &[]);
    vec![
        api.clone(),
        api,
        comet.clone(),
        comet.clone(),
        comet,
        history.clone(),
        history,
    ]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let temp = tempfile::tempdir()?;
    let dir = args.logs.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let mut cluster = Cluster::start(Settings {
        lingr: args.lingr.clone(),
        postgres: args.postgres.clone(),
        dir: dir.clone(),
        roles: roles(),
        log_filter: "warn".into(),
    })
    .await
    .context("starting the cluster")?;
    println!(
        "soak: cluster up (logs in {}); {} rooms for {} s",
        dir.display(),
        args.rooms,
        args.duration
    );
    let client = Client::new(cluster.bases("api"), cluster.bases("comet"));
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut rooms = Vec::new();
    for room in 0..args.rooms {
        let name = format!("soak{room}");
        let writer = client
            .join(&name, "writer")
            .await
            .map_err(|f| anyhow::anyhow!("{f:?}"))?;
        let watcher = client
            .join(&name, "watcher")
            .await
            .map_err(|f| anyhow::anyhow!("{f:?}"))?;
        let last = Arc::new(Mutex::new(None));
        let observing = tokio::spawn(traffic::observe(
            client.clone(),
            watcher,
            Arc::clone(&stop),
            Arc::clone(&last),
        ));
        let writing = tokio::spawn(traffic::write(
            client.clone(),
            writer,
            room,
            Arc::clone(&stop),
        ));
        rooms.push((name, writing, observing, last));
    }

    let faults = inject_faults(&mut cluster, &args, started).await;
    stop.store(true, Ordering::SeqCst);
    let mut results: Vec<(String, Written, Observed)> = Vec::new();
    for (name, writing, observing, last) in rooms {
        let written = writing.await.unwrap_or_default();
        if let Ok(mut last) = last.lock() {
            *last = written.acknowledged.last().copied();
        }
        let observed = tokio::time::timeout(Duration::from_secs(120), observing)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        results.push((name, written, observed));
    }
    let history_mismatches = check_history(&cluster, &results).await?;
    let report = Report::new(started.elapsed(), faults, &results, history_mismatches);
    report.print(&args);
    cluster.stop().await;
    anyhow::ensure!(
        report.clean(),
        "the soak run lost, doubled or misordered events"
    );
    Ok(())
}

/// Kills a random process every `fault_every` seconds until the duration has passed, and
/// restarts it; returns how many faults were injected.
async fn inject_faults(cluster: &mut Cluster, args: &Args, started: Instant) -> usize {
    let until = started + Duration::from_secs(args.duration);
    let mut random = Random::seeded();
    let mut faults = 0;
    loop {
        let next = Instant::now() + Duration::from_secs(args.fault_every);
        if next >= until {
            tokio::time::sleep_until(until.into()).await;
            return faults;
        }
        tokio::time::sleep_until(next.into()).await;
        let index = random.below(cluster.processes.len());
        let signal = if random.below(2) == 0 { "KILL" } else { "TERM" };
        println!(
            "soak: {:>4} s: SIG{signal} to {} {}",
            started.elapsed().as_secs(),
            cluster.processes[index].role,
            cluster.processes[index].base
        );
        match cluster.fault(index, signal).await {
            Ok(()) => faults += 1,
            Err(err) => eprintln!("soak: restarting after a fault failed: {err:#}"),
        }
    }
}

/// Rooms whose history differs from the stream, after giving history a minute to catch up.
async fn check_history(
    cluster: &Cluster,
    results: &[(String, Written, Observed)],
) -> anyhow::Result<usize> {
    let nats = async_nats::connect(&cluster.nats_url).await?;
    let stream = async_nats::jetstream::new(nats).get_stream("ROOMS").await?;
    let history = cluster.bases("history");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut mismatches = 0;
    for (room, _, _) in results {
        let expected = stream_counters(&stream, room).await;
        loop {
            let rows = history_counters(&http, &history[0], room).await;
            if rows.as_ref() == Some(&expected) {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("soak: {room}: history {rows:?} != stream {expected:?}");
                mismatches += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(mismatches)
}

async fn stream_counters(stream: &async_nats::jetstream::stream::Stream, room: &str) -> Vec<u64> {
    let subject = format!("rooms.{room}.events");
    let mut found = Vec::new();
    let mut next = 1;
    while let Ok(message) = stream
        .direct_get_next_for_subject(subject.as_str(), Some(next))
        .await
    {
        found.push(message.sequence);
        next = message.sequence + 1;
    }
    found
}

/// Every counter history holds for `room`, paging forward; none if a page fails.
async fn history_counters(http: &reqwest::Client, base: &str, room: &str) -> Option<Vec<u64>> {
    let mut found = Vec::new();
    let mut after = 0;
    loop {
        let page: serde_json::Value = http
            .get(format!("{base}/api/room/get_messages"))
            .query(&[
                ("room", room),
                ("after", &after.to_string()),
                ("limit", "100"),
            ])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let counters: Vec<u64> = page["messages"]
            .as_array()?
            .iter()
            .filter_map(|m| m["counter"].as_u64())
            .collect();
        found.extend(&counters);
        match counters.last() {
            Some(last) if page["has_more"] == true => after = *last,
            _ => return Some(found),
        }
    }
}

/// The figures of a run.
struct Report {
    duration: Duration,
    faults: usize,
    acknowledged: usize,
    failed_says: usize,
    deliveries: usize,
    lost: usize,
    duplicated: usize,
    misordered: usize,
    refusals: usize,
    history_mismatches: usize,
    slowest_say: Duration,
}

impl Report {
    fn new(
        duration: Duration,
        faults: usize,
        results: &[(String, Written, Observed)],
        history_mismatches: usize,
    ) -> Self {
        let mut report = Self {
            duration,
            faults,
            acknowledged: 0,
            failed_says: 0,
            deliveries: 0,
            lost: 0,
            duplicated: 0,
            misordered: 0,
            refusals: 0,
            history_mismatches,
            slowest_say: Duration::ZERO,
        };
        for (room, written, observed) in results {
            report.acknowledged += written.acknowledged.len();
            report.failed_says += written.failed;
            report.slowest_say = report.slowest_say.max(written.slowest);
            report.deliveries += observed.counters.len();
            report.refusals += observed.refusals.len();
            let seen: std::collections::HashSet<u64> = observed.messages.iter().copied().collect();
            let lost = written
                .acknowledged
                .iter()
                .filter(|c| !seen.contains(c))
                .count();
            if lost > 0 {
                eprintln!("soak: {room}: {lost} acknowledged says never observed");
            }
            report.lost += lost;
            report.duplicated += observed.messages.len() - seen.len();
            report.misordered += observed
                .counters
                .windows(2)
                .filter(|w| w[0] >= w[1])
                .count();
        }
        report
    }

    fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.misordered == 0
            && self.history_mismatches == 0
    }

    fn print(&self, args: &Args) {
        println!(
            "soak: ./scripts/soak --duration {} --rooms {} --fault-every {}",
            args.duration, args.rooms, args.fault_every
        );
        println!("duration            {:.0} s", self.duration.as_secs_f64());
        println!("says acknowledged   {}", self.acknowledged);
        println!("says failed         {}", self.failed_says);
        println!("deliveries          {}", self.deliveries);
        println!("faults injected     {}", self.faults);
        println!("lost                {}", self.lost);
        println!("duplicated          {}", self.duplicated);
        println!("misordered          {}", self.misordered);
        println!("observe refusals    {}", self.refusals);
        println!("history mismatches  {}", self.history_mismatches);
        println!("max say latency     {} ms", self.slowest_say.as_millis());
    }
}

/// SplitMix64: which process to kill needs no cryptography, only well-mixed draws (a plain
/// xorshift seeded from a clock's nanoseconds picked the same few processes run after run).
struct Random(u64);

impl Random {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self((nanos as u64) ^ u64::from(std::process::id()).rotate_left(32))
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        usize::try_from(z % n.max(1) as u64).unwrap_or(0)
    }
}
