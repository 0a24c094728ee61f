//! Scenario 4: says through the api at a steady rate, acknowledged by JetStream on file
//! storage: the latency each writer sees, the rate reached, and whether history keeps up (its
//! consumer's pending count while the says run, and how long it takes to drain after).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::http::Connection;
use crate::lingr::{self, Lingr, Member};
use crate::procs::{print_steal, MachineCpu, Steal};
use crate::stats::{ms, Percentiles};
use crate::Servers;

/// The scenario's settings.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Says per second in all.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Seconds the says run.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Writers, each a session in a room of its own, each saying at rate / writers.
    #[arg(long, default_value_t = 50)]
    writers: usize,
    #[command(flatten)]
    servers: Servers,
}

/// Runs the scenario and prints its figures.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let options = args.servers.lingr_options(1);
    let cluster = Lingr::start(&options, dir.path().to_owned()).await?;
    let outcome = measure(&args, &cluster).await;
    cluster.stop().await;
    let Outcome {
        mut latencies,
        failures,
        elapsed,
        max_pending,
        drained,
        steal,
    } = outcome?;
    let figures = Percentiles::of(&mut latencies);
    println!(
        "== say: {} says/s asked for {} s by {} writers (api, 1 comet, history on PostgreSQL)",
        args.rate, args.duration, args.writers
    );
    println!(
        "acknowledged: {} in {:.1} s = {:.0} says/s; failed: {failures}",
        figures.count,
        elapsed.as_secs_f64(),
        figures.count as f64 / elapsed.as_secs_f64()
    );
    println!("say latency: {figures}");
    println!(
        "history: consumer pending at most {max_pending}; drained {}",
        drained.map_or("not within 60 s".into(), |d| format!(
            "{:.1} s after the last say",
            d.as_secs_f64()
        ))
    );
    print_steal(steal, "while the says ran");
    println!(
        "summary scenario=say rate={} achieved={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.1} history_max_pending={max_pending} failures={failures} steal_pct={steal}",
        args.rate,
        figures.count as f64 / elapsed.as_secs_f64(),
        ms(figures.p50),
        ms(figures.p99),
        ms(figures.max),
    );
    println!("{}", crate::reproduce());
    Ok(())
}

/// What one run measured.
struct Outcome {
    latencies: Vec<Duration>,
    failures: usize,
    elapsed: Duration,
    max_pending: u64,
    /// How long history took to have nothing pending after the last say.
    drained: Option<Duration>,
    steal: Steal,
}

async fn measure(args: &Args, cluster: &Lingr) -> anyhow::Result<Outcome> {
    let mut writers: Vec<(Connection, Member)> = Vec::new();
    for writer in 0..args.writers {
        let mut connection = Connection::open(cluster.api, Ipv4Addr::LOCALHOST).await?;
        let member = lingr::join(&mut connection, &format!("say{writer}"), Some("writer")).await?;
        writers.push((connection, member));
    }
    let history = cluster
        .history_address()
        .ok_or_else(|| anyhow::anyhow!("no history"))?;
    let interval = Duration::from_secs_f64(args.writers as f64 / f64::from(args.rate.max(1)));
    let started = Instant::now();
    let machine = MachineCpu::now();
    let until = started + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    let count = writers.len();
    let api = cluster.api;
    for (index, (mut connection, member)) in writers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            // Writers start spread over one interval, so the says do not come in waves.
            let offset = interval.mul_f64(index as f64 / count as f64);
            let mut next = tokio::time::Instant::now() + offset;
            let mut latencies = Vec::new();
            let mut failures = 0;
            let mut said = 0u64;
            while Instant::now() < until {
                tokio::time::sleep_until(next).await;
                next += interval;
                let sent = Instant::now();
                said += 1;
                match lingr::say(&mut connection, &member, &format!("say {said}")).await {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(_) => {
                        failures += 1;
                        if let Ok(fresh) = Connection::open(api, Ipv4Addr::LOCALHOST).await {
                            connection = fresh;
                        }
                    }
                }
            }
            (latencies, failures)
        }));
    }
    let mut max_pending = 0u64;
    let watching = tokio::spawn(async move {
        let mut max_pending = 0u64;
        while Instant::now() < until {
            if let Some(pending) = lingr::metric(history, "lingr_history_consumer_pending").await {
                max_pending = max_pending.max(pending as u64);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        max_pending
    });
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (mut mine, failed) = task.await?;
        latencies.append(&mut mine);
        failures += failed;
    }
    let elapsed = started.elapsed();
    let steal = Steal::since(machine);
    max_pending = max_pending.max(watching.await.unwrap_or(0));
    let last = Instant::now();
    let mut drained = None;
    while last.elapsed() < Duration::from_secs(60) {
        if lingr::metric(history, "lingr_history_consumer_pending").await == Some(0.0) {
            drained = Some(last.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Outcome {
        latencies,
        failures,
        elapsed,
        max_pending,
        drained,
        steal,
    })
}
