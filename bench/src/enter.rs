//! Scenario 3b, first half: enters into one room as it grows. New named sessions enter one
//! room until it holds N occupants, over several connections at once; compares the enters
//! into the near-empty room with those into the full one (latency and rate), and reports the
//! size of an enter's answer at the end.

use std::time::{Duration, Instant};

use crate::http::Connection;
use crate::lingr::{self, Lingr};
use crate::stats::{ms, Percentiles};
use crate::Servers;

/// The scenario's settings.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Occupants the room grows to.
    #[arg(long, default_value_t = 20_000)]
    occupants: usize,
    /// Connections entering at once.
    #[arg(long, default_value_t = 16)]
    lanes: usize,
    /// Enters compared at each end (the first and the last this many).
    #[arg(long, default_value_t = 1_000)]
    window: usize,
    #[command(flatten)]
    servers: Servers,
}

/// The room they all enter.
const ROOM: &str = "crowded";

/// Runs the scenario and prints its figures.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.window * 2 <= args.occupants,
        "--window is at most half of --occupants"
    );
    let dir = tempfile::tempdir()?;
    let options = args.servers.lingr_options(1).patient();
    let cluster = Lingr::start(&options, dir.path().to_owned()).await?;
    let outcome = measure(&args, &cluster).await;
    cluster.stop().await;
    outcome?.print(&args);
    Ok(())
}

/// One enter: the room's size before it, when it was answered, how long it took.
struct Enter {
    before: usize,
    answered: Instant,
    took: Duration,
}

struct Report {
    first: Percentiles,
    last: Percentiles,
    first_rate: f64,
    last_rate: f64,
    total: Duration,
    answer_bytes: usize,
}

async fn measure(args: &Args, cluster: &Lingr) -> anyhow::Result<Report> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut lanes = Vec::new();
    for _ in 0..args.lanes {
        let (api, next, occupants) = (cluster.api, std::sync::Arc::clone(&next), args.occupants);
        lanes.push(tokio::spawn(async move {
            let mut connection = Connection::open(api, std::net::Ipv4Addr::LOCALHOST).await?;
            let mut enters = Vec::new();
            loop {
                let before = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if before >= occupants {
                    return anyhow::Ok(enters);
                }
                let created = lingr::call(
                    &mut connection,
                    "session/create",
                    &[("nickname", &format!("m{before}"))],
                )
                .await?;
                let session = created["session"].as_str().unwrap_or_default().to_owned();
                let asked = Instant::now();
                lingr::call(
                    &mut connection,
                    "room/enter",
                    &[("session", &session), ("room", ROOM)],
                )
                .await?;
                enters.push(Enter {
                    before,
                    answered: Instant::now(),
                    took: asked.elapsed(),
                });
            }
        }));
    }
    let mut enters = Vec::new();
    for lane in lanes {
        enters.extend(lane.await??);
    }
    let total = started.elapsed();
    enters.sort_by_key(|e| e.before);
    let (first, last) = (
        &enters[..args.window],
        &enters[enters.len() - args.window..],
    );
    let answer_bytes = last_answer_size(cluster).await?;
    Ok(Report {
        first: Percentiles::of(&mut first.iter().map(|e| e.took).collect::<Vec<_>>()),
        last: Percentiles::of(&mut last.iter().map(|e| e.took).collect::<Vec<_>>()),
        first_rate: rate(first),
        last_rate: rate(last),
        total,
        answer_bytes,
    })
}

/// Enters per second over a run of enters: how many, over the time between the first and the
/// last answer among them.
fn rate(enters: &[Enter]) -> f64 {
    let earliest = enters.iter().map(|e| e.answered).min();
    let latest = enters.iter().map(|e| e.answered).max();
    let span = earliest
        .zip(latest)
        .map_or(Duration::ZERO, |(a, b)| b.duration_since(a));
    enters.len() as f64 / span.as_secs_f64().max(1e-6)
}

/// The size of one more enter's answer into the full room.
async fn last_answer_size(cluster: &Lingr) -> anyhow::Result<usize> {
    let mut connection = Connection::open(cluster.api, std::net::Ipv4Addr::LOCALHOST).await?;
    let created = lingr::call(&mut connection, "session/create", &[("nickname", "last")]).await?;
    let session = created["session"].as_str().unwrap_or_default();
    let query = serde_urlencoded::to_string([("session", session), ("room", ROOM)])?;
    let answer = connection
        .get(&format!("/api/room/enter?{query}"), &[])
        .await?;
    Ok(answer.body.len())
}

impl Report {
    fn print(&self, args: &Args) {
        println!(
            "== enter: named sessions enter one room until it holds {}, over {} connections",
            args.occupants, args.lanes
        );
        println!(
            "first {} enters (room of 0..{}): {}; {:.0} enters/s",
            args.window, args.window, self.first, self.first_rate
        );
        println!(
            "last {} enters (room of {}..{}): {}; {:.0} enters/s",
            args.window,
            args.occupants - args.window,
            args.occupants,
            self.last,
            self.last_rate
        );
        let slower = ms(self.last.p50) / ms(self.first.p50).max(1e-6);
        println!(
            "set up in {:.1} s; an enter into the full room answers {} bytes; p50 full ÷ empty: {slower:.2}",
            self.total.as_secs_f64(),
            self.answer_bytes
        );
        println!(
            "summary occupants={} first_p50_ms={:.2} first_p99_ms={:.2} last_p50_ms={:.2} last_p99_ms={:.2} \
             first_rate={:.0} last_rate={:.0} p50_ratio={slower:.2} setup_s={:.1} answer_bytes={}",
            args.occupants,
            ms(self.first.p50),
            ms(self.first.p99),
            ms(self.last.p50),
            ms(self.last.p99),
            self.first_rate,
            self.last_rate,
            self.total.as_secs_f64(),
            self.answer_bytes
        );
        println!("{}", crate::reproduce());
    }
}
