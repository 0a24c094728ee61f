//! Scenario 3b, second half: a herd of stale observes on a fresh replica. N observers enter
//! and keep the counter their enter returned; the room then gets E more events; the comet is
//! killed and started again (empty room buffers, as after a rolling update); then every
//! observer asks it at once for what it missed. Measures how long each waited, how long until
//! the last was answered, how many backfills the comet made, and its memory meanwhile.

use std::time::{Duration, Instant};

use crate::http::Connection;
use crate::lingr::{self, Lingr};
use crate::observers::{
    self, Protocol, ONCE_ASKED_ROUND, ONCE_CONNECTING_ROUND, ONCE_RETRIED_ROUND, ONCE_ROUND,
    ONCE_SINCE_GO_ROUND,
};
use crate::procs::{print_steal, CpuSeconds, MachineCpu, Sample, Steal};
use crate::stats::{ms, Percentiles};
use crate::workers::{processes_for, Deliveries, Plan, Workers};
use crate::Servers;

/// The scenario's settings.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Observers in the herd.
    #[arg(long, default_value_t = 20_000)]
    observers: usize,
    /// Rooms they are spread over.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Events said in each room after the observers entered (how stale their counters are).
    #[arg(long, default_value_t = 5_000)]
    events: usize,
    /// Loopback source addresses.
    #[arg(long, default_value_t = 8)]
    sources: usize,
    /// Client worker processes (default: one per 15,000 observers).
    #[arg(long)]
    processes: Option<usize>,
    #[command(flatten)]
    servers: Servers,
}

/// Connections each room's writer says over at once.
const SAY_LANES: usize = 8;

/// Runs the scenario and prints its figures.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let options = args.servers.lingr_options(1).patient();
    let mut cluster = Lingr::start(&options, dir.path().to_owned()).await?;
    let outcome = measure(&args, &mut cluster).await;
    cluster.stop().await;
    outcome?.print(&args);
    Ok(())
}

struct Report {
    answered: usize,
    /// Answered only after a retry (refused as overloaded, or cut off, first).
    retried: usize,
    from_request: Percentiles,
    from_go: Percentiles,
    /// When each observer began to connect, and sent its request, from the herd's start.
    connecting: Percentiles,
    asked: Percentiles,
    backfills: Option<f64>,
    /// CPU the comet spent from its start to the last answer.
    comet_cpu: CpuSeconds,
    /// The machine's CPU time stolen by the hypervisor over the herd, in per cent.
    steal: Steal,
    fresh: Sample,
    peak_rss_kib: u64,
    after: Sample,
    failures: std::collections::BTreeMap<String, usize>,
}

async fn measure(args: &Args, cluster: &mut Lingr) -> anyhow::Result<Report> {
    let mut workers = Workers::start(&Plan {
        protocol: Protocol::Lingr,
        servers: &cluster.comets,
        api: Some(cluster.api),
        observers: args.observers,
        rooms: args.rooms,
        processes: args
            .processes
            .unwrap_or_else(|| processes_for(args.observers)),
        sources: args.sources,
        once: true,
    })?;
    let mut deliveries = Deliveries::default();
    workers.wait_prepared(&mut deliveries).await?;
    for room in 0..args.rooms {
        say_many(cluster, &observers::room_name(room), args.events).await?;
    }
    cluster.replace_comet(0).await?;
    let comet = cluster.comets[0];
    let fresh = Sample::of(&cluster.comet_pids());
    let machine = MachineCpu::now();

    workers.go().await?;
    let mut peak_rss_kib = fresh.rss_kib;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut sampling = tokio::time::interval(Duration::from_millis(50));
    // Each answered observe reports twice (from its request, from `go`); a failed one once.
    let done = |deliveries: &Deliveries, workers: &Workers| {
        let failed: usize = workers.failures.values().sum();
        deliveries
            .count(ONCE_ROUND)
            .min(deliveries.count(ONCE_SINCE_GO_ROUND))
            + failed
            >= args.observers
    };
    while !done(&deliveries, &workers) && Instant::now() < deadline {
        tokio::select! {
            said = workers.said.recv() => match said {
                Some(said) => workers.absorb(said, &mut deliveries),
                None => break,
            },
            _ = sampling.tick() => {
                peak_rss_kib = peak_rss_kib.max(Sample::of(&cluster.comet_pids()).rss_kib);
            }
        }
    }
    let herd_end = Sample::of(&cluster.comet_pids());
    let steal = Steal::since(machine);
    // A worker prints a batch's rounds in order, so the timeline rounds (4, 5) of the batch
    // that completed the count may still be queued: take in what has arrived.
    while let Ok(said) = workers.said.try_recv() {
        workers.absorb(said, &mut deliveries);
    }
    let comet_cpu = herd_end.cpu_split_since(&fresh);
    let backfills = lingr::metric(comet, "lingr_comet_backfills_total").await;
    let failures = std::mem::take(&mut workers.failures);
    workers.stop().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = Sample::of(&cluster.comet_pids());
    let mut from_request = deliveries.take(ONCE_ROUND);
    let mut from_go = deliveries.take(ONCE_SINCE_GO_ROUND);
    let mut connecting = deliveries.take(ONCE_CONNECTING_ROUND);
    let mut asked = deliveries.take(ONCE_ASKED_ROUND);
    Ok(Report {
        answered: from_request.len(),
        retried: deliveries.count(ONCE_RETRIED_ROUND),
        from_request: Percentiles::of(&mut from_request),
        from_go: Percentiles::of(&mut from_go),
        connecting: Percentiles::of(&mut connecting),
        asked: Percentiles::of(&mut asked),
        backfills,
        comet_cpu,
        steal,
        fresh,
        peak_rss_kib,
        after,
        failures,
    })
}

/// Says `count` messages in `room`, over [`SAY_LANES`] connections at once, each lane a member
/// of its own (a session's say rate is limited).
async fn say_many(cluster: &Lingr, room: &str, count: usize) -> anyhow::Result<()> {
    let mut lanes = Vec::new();
    for lane in 0..SAY_LANES {
        let (api, room) = (cluster.api, room.to_owned());
        let mine = (lane..count).step_by(SAY_LANES).count();
        lanes.push(tokio::spawn(async move {
            let mut connection = Connection::open(api, std::net::Ipv4Addr::LOCALHOST).await?;
            let writer = lingr::join(&mut connection, &room, Some("writer")).await?;
            for _ in 0..mine {
                lingr::say(&mut connection, &writer, "missed while away").await?;
            }
            anyhow::Ok(())
        }));
    }
    for lane in lanes {
        lane.await??;
    }
    Ok(())
}

impl Report {
    fn print(&self, args: &Args) {
        println!(
            "== herd: {} observers in {} room(s), counters {} events old, on a comet just started",
            args.observers, args.rooms, args.events
        );
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "answered with events: {}/{} ({} after one retry, refused as overloaded or cut off \
             first); from each request {}; from the herd's start {}",
            self.answered, args.observers, self.retried, self.from_request, self.from_go
        );
        println!(
            "from the herd's start, the client began to connect {}; sent its requests {}",
            self.connecting, self.asked
        );
        println!(
            "backfills: {}; comet CPU from its start to the last answer: {:.2} s ({:.2} in user space, {:.2} in the kernel)",
            self.backfills.map_or("-".into(), |b| format!("{b:.0}")),
            self.comet_cpu.total(),
            self.comet_cpu.user,
            self.comet_cpu.system
        );
        println!(
            "comet memory: {:.1} MiB fresh, {:.1} MiB at most during the herd, {:.1} MiB 5 s after",
            mib(self.fresh.rss_kib),
            mib(self.peak_rss_kib),
            mib(self.after.rss_kib)
        );
        print_steal(self.steal, "during the herd");
        for (failure, count) in &self.failures {
            println!("failure ×{count}: {failure}");
        }
        println!(
            "summary observers={} rooms={} events={} answered={} retried={} p50_ms={:.1} p99_ms={:.1} \
             last_answer_ms={:.1} backfills={} comet_cpu_s={:.2} comet_user_s={:.2} comet_system_s={:.2} fresh_mib={:.1} peak_mib={:.1} failures={} steal_pct={}",
            args.observers,
            args.rooms,
            args.events,
            self.answered,
            self.retried,
            ms(self.from_request.p50),
            ms(self.from_request.p99),
            ms(self.from_go.max),
            self.backfills.map_or("-".into(), |b| format!("{b:.0}")),
            self.comet_cpu.total(),
            self.comet_cpu.user,
            self.comet_cpu.system,
            mib(self.fresh.rss_kib),
            mib(self.peak_rss_kib),
            self.failures.values().sum::<usize>(),
            self.steal,
        );
        println!("{}", crate::reproduce());
    }
}
