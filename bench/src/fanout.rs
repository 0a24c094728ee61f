//! Scenarios 1 and 2: held observes and fan-out. Holds N long-polls spread over R rooms (and
//! over K comets for lingr), measures what holding them costs the server (memory per held
//! observe, CPU while idle, NATS messages while idle), then publishes rounds of one message
//! per room at once and measures the time from each publish to each observer's answer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::http::Connection;
use crate::lingr::{self, Lingr, Member};
use crate::observers::{self, Protocol};
use crate::peers::{Nchan, Pushpin};
use crate::pin::Pinning;
use crate::procs::{print_steal, CpuSeconds, MachineCpu, Sample, Steal};
use crate::stats::{ms, Percentiles};
use crate::workers::{processes_for, Deliveries, Plan, Said, Workers};
use crate::Servers;

/// The scenario's settings.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server under test.
    #[arg(long, value_enum, default_value = "lingr")]
    target: Protocol,
    /// Observers held in all.
    #[arg(long, default_value_t = 1000)]
    observers: usize,
    /// Rooms they are spread over; each round publishes one message to every room at once.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Rounds of messages (0 measures holding only).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// lingr comet processes.
    #[arg(long, default_value_t = 1)]
    comets: usize,
    /// Worker processes (default: one per 15,000 observers).
    #[arg(long)]
    processes: Option<usize>,
    /// Loopback source addresses (one gives ~28,000 ports towards one server port).
    #[arg(long, default_value_t = 8)]
    sources: usize,
    /// Seconds of holding over which idle CPU and NATS traffic are measured.
    #[arg(long, default_value_t = 10)]
    idle: u64,
    /// Seconds between one round's last delivery and the next round (default: none). Events in
    /// a chat room come further apart than a server's per-connection timers run; a pause
    /// longer than those measures what an answer costs after them.
    #[arg(long, default_value = "0", value_parser = seconds)]
    pause: Duration,
    /// Seconds to wait before each round when the server cannot say how many it holds
    /// (pushpin; default 2 s plus 1.5 ms per observer).
    #[arg(long, value_parser = seconds)]
    settle: Option<Duration>,
    /// Fail unless every observer was held and got every round's message (the smoke run in
    /// the test command).
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    servers: Servers,
    #[command(flatten)]
    pinning: Pinning,
}

/// A number of seconds given on the command line, refused with a clear error when it is
/// negative or not a number (a `Duration` made from one would panic).
fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("`{text}` is not 0 or more seconds that a duration can hold"))
}

/// The server under test.
enum Server {
    Lingr(Lingr, Vec<Member>),
    Nchan(Nchan),
    Pushpin(Pushpin),
}

impl Server {
    fn pids(&self) -> Vec<u32> {
        match self {
            Server::Lingr(lingr, _) => lingr.comet_pids(),
            Server::Nchan(nchan) => nchan.pids(),
            Server::Pushpin(pushpin) => pushpin.pids(),
        }
    }

    async fn held(&self) -> Option<u64> {
        match self {
            Server::Lingr(lingr, _) => lingr.held().await,
            Server::Nchan(nchan) => nchan.held().await,
            Server::Pushpin(_) => None,
        }
    }

    async fn publisher(&self) -> anyhow::Result<Connection> {
        let address = match self {
            Server::Lingr(lingr, _) => lingr.api,
            Server::Nchan(nchan) => nchan.address,
            Server::Pushpin(pushpin) => pushpin.publish_address,
        };
        Ok(Connection::open(address, std::net::Ipv4Addr::LOCALHOST).await?)
    }

    async fn publish(
        &self,
        connection: &mut Connection,
        room: usize,
        text: &str,
    ) -> anyhow::Result<()> {
        let name = observers::room_name(room);
        match self {
            Server::Lingr(_, writers) => lingr::say(connection, &writers[room], text).await,
            Server::Nchan(nchan) => nchan.publish(connection, &name, text).await,
            Server::Pushpin(pushpin) => pushpin.publish(connection, &name, text).await,
        }
    }

    async fn stop(self) {
        match self {
            Server::Lingr(lingr, _) => lingr.stop().await,
            Server::Nchan(nchan) => nchan.stop().await,
            Server::Pushpin(pushpin) => pushpin.stop().await,
        }
    }
}

/// Runs the scenario and prints its figures.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = match args.target {
        Protocol::Lingr => {
            let mut options = args.servers.lingr_options(args.comets);
            options.comet_wrapper = args.pinning.comet_wrapper(&options.comet_wrapper);
            let cluster = Lingr::start(&options, dir.path().to_owned()).await?;
            let mut connection =
                Connection::open(cluster.api, std::net::Ipv4Addr::LOCALHOST).await?;
            let mut writers = Vec::new();
            for room in 0..args.rooms {
                let name = observers::room_name(room);
                writers.push(lingr::join(&mut connection, &name, Some("writer")).await?);
            }
            Server::Lingr(cluster, writers)
        }
        Protocol::Nchan => {
            Server::Nchan(Nchan::start(dir.path(), args.pinning.server_workers()?).await?)
        }
        Protocol::Pushpin => Server::Pushpin(Pushpin::start(dir.path()).await?),
    };
    let outcome = measure(&args, &server).await;
    server.stop().await;
    let report = outcome?;
    report.print(&args);
    if args.check {
        let short: Vec<String> = report
            .rounds
            .iter()
            .filter(|(_, figures)| figures.count < args.observers)
            .map(|(round, figures)| format!("round {round}: {}/{}", figures.count, args.observers))
            .collect();
        anyhow::ensure!(
            report.held >= args.observers && short.is_empty(),
            "held {}/{}; rounds short of deliveries: {short:?}",
            report.held,
            args.observers
        );
    }
    Ok(())
}

struct Report {
    setup: Duration,
    held: usize,
    before: Sample,
    holding: Sample,
    after: Sample,
    later: Sample,
    idle_cpu: f64,
    /// Server CPU seconds from the first round's publish to the last round's deliveries.
    rounds_cpu: CpuSeconds,
    /// The machine's CPU time stolen by the hypervisor over the rounds, in per cent.
    rounds_steal: Steal,
    nats_per_second: Option<f64>,
    rounds: Vec<(usize, Percentiles)>,
    failures: BTreeMap<String, usize>,
    workers: usize,
}

async fn measure(args: &Args, server: &Server) -> anyhow::Result<Report> {
    let servers = match server {
        Server::Lingr(lingr, _) => lingr.comets.clone(),
        Server::Nchan(nchan) => vec![nchan.address],
        Server::Pushpin(pushpin) => vec![pushpin.address],
    };
    let api = match server {
        Server::Lingr(lingr, _) => Some(lingr.api),
        _ => None,
    };
    args.pinning.apply(&server.pids())?;
    let mut workers = Workers::start(&Plan {
        protocol: args.target,
        servers: &servers,
        api,
        observers: args.observers,
        rooms: args.rooms,
        processes: args
            .processes
            .unwrap_or(processes_for(args.observers))
            .max(1),
        sources: args.sources,
        once: false,
    })?;
    let mut deliveries = Deliveries::default();
    workers.wait_prepared(&mut deliveries).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = Sample::of(&server.pids());

    let started = Instant::now();
    workers.go().await?;
    let opened = workers
        .wait_all(
            Duration::from_secs(900),
            |s| match s {
                Said::Opened(n) => Some(*n),
                _ => None,
            },
            &mut deliveries,
        )
        .await
        .context("opening observes")?;
    let settle = args
        .settle
        .unwrap_or_else(|| Duration::from_secs_f64(2.0 + 0.0015 * args.observers as f64));
    let held = wait_held(server, args.observers, settle, Duration::from_secs(300))
        .await
        .unwrap_or(opened);
    let setup = started.elapsed();

    let holding = Sample::of(&server.pids());
    let nats_before = nats_messages(server).await;
    tokio::time::sleep(Duration::from_secs(args.idle)).await;
    let idle_end = Sample::of(&server.pids());
    let nats_after = nats_messages(server).await;
    let idle_cpu = idle_end.cpu_percent_since(&holding);
    let nats_per_second = nats_before.zip(nats_after).map(|(b, a)| {
        a.saturating_sub(b) as f64 / idle_end.at.duration_since(holding.at).as_secs_f64()
    });

    let mut publisher = Vec::new();
    for _ in 0..args.rooms {
        publisher.push(server.publisher().await?);
    }
    let mut rounds = Vec::new();
    let rounds_start = Sample::of(&server.pids());
    let rounds_machine = MachineCpu::now();
    for round in 1..=args.rounds {
        if round > 1 {
            tokio::time::sleep(args.pause).await;
        }
        wait_held(server, args.observers, settle, Duration::from_secs(30)).await;
        let text = observers::message(round);
        for (room, connection) in publisher.iter_mut().enumerate() {
            // A publish endpoint may close a kept-alive connection (pushpin's does): once,
            // open a new one and publish again.
            if server.publish(connection, room, &text).await.is_err() {
                *connection = server.publisher().await?;
                server.publish(connection, room, &text).await?;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while deliveries.count(round) < held {
            match tokio::time::timeout_at(deadline, workers.said.recv()).await {
                Ok(Some(said)) => workers.absorb(said, &mut deliveries),
                _ => break,
            }
        }
        let mut latencies = deliveries.take(round);
        rounds.push((round, Percentiles::of(&mut latencies)));
    }
    // Steadier than the rates, which move with what the two cores' other processes do.
    let rounds_cpu = Sample::of(&server.pids()).cpu_split_since(&rounds_start);
    let rounds_steal = Steal::since(rounds_machine);
    let failures = std::mem::take(&mut workers.failures);
    let worker_count = workers.len();
    workers.stop().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = Sample::of(&server.pids());
    // An allocator hands pages back after a delay (jemalloc's decay is 10 s): the later
    // sample says whether the memory is given back at all.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let later = Sample::of(&server.pids());
    Ok(Report {
        setup,
        held,
        before,
        holding,
        after,
        later,
        idle_cpu,
        rounds_cpu,
        rounds_steal,
        nats_per_second,
        rounds,
        failures,
        workers: worker_count,
    })
}

/// Waits until the server holds `want` observes, or `settle` where it cannot say; returns how
/// many it held.
async fn wait_held(
    server: &Server,
    want: usize,
    settle: Duration,
    limit: Duration,
) -> Option<usize> {
    if matches!(server, Server::Pushpin(_)) {
        tokio::time::sleep(settle).await;
        return None;
    }
    let deadline = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < deadline {
        last = server.held().await.map(|h| h as usize);
        if last.is_some_and(|h| h >= want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

async fn nats_messages(server: &Server) -> Option<u64> {
    match server {
        Server::Lingr(lingr, _) => lingr.nats_messages_in().await,
        _ => None,
    }
}

impl Report {
    fn print(&self, args: &Args) {
        let mut name = format!("{:?}", args.target).to_lowercase();
        // Comets on a set number of threads are a server of their own in the tables.
        if let (Protocol::Lingr, Some(threads)) = (args.target, args.servers.comet_threads) {
            name = format!("{name}-{threads}-thread");
        }
        // So are rounds apart: what they measure is an answer after a long hold.
        if !args.pause.is_zero() {
            name = format!("{name}-paused");
        }
        // And a server pinned to cores the client does not use.
        if args.pinning.pinned() {
            name = format!("{name}-pinned");
        }
        println!(
            "== fanout: {name}, {} observers in {} room(s){}, {} worker process(es), {} source addresses",
            args.observers,
            args.rooms,
            if args.target == Protocol::Lingr {
                format!(" on {} comet(s)", args.comets)
            } else {
                String::new()
            },
            self.workers,
            args.sources
        );
        let mib = |s: &Sample| s.rss_kib as f64 / 1024.0;
        let per_held = self.holding.rss_kib.saturating_sub(self.before.rss_kib) as f64
            / self.held.max(1) as f64;
        println!("held: {} in {:.1} s", self.held, self.setup.as_secs_f64());
        println!(
            "server memory: {:.1} MiB before, {:.1} MiB holding, {:.1} MiB 5 s and {:.1} MiB 30 s after the observes ended",
            mib(&self.before),
            mib(&self.holding),
            mib(&self.after),
            mib(&self.later)
        );
        println!("memory per held observe: {per_held:.1} KiB");
        println!(
            "CPU while holding ({} s): {:.1} % of one core",
            args.idle, self.idle_cpu
        );
        if let Some(rate) = self.nats_per_second {
            println!("NATS messages in while holding: {rate:.0}/s");
        }
        let mut all = Vec::new();
        let mut rates = Vec::new();
        for (round, figures) in &self.rounds {
            let rate = figures.count as f64 / figures.max.as_secs_f64().max(1e-6);
            rates.push(rate);
            println!(
                "round {round}: {}/{} delivered, {figures}; {rate:.0} deliveries/s",
                figures.count, self.held
            );
            all.push(*figures);
        }
        let worst_p99 = all.iter().map(|p| p.p99).max().unwrap_or_default();
        let median_p50 = {
            let mut p50s: Vec<Duration> = all.iter().map(|p| p.p50).collect();
            Percentiles::of(&mut p50s).p50
        };
        let mean_rate = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
        let delivered: usize = all.iter().map(|p| p.count).sum();
        let per_delivery = |seconds: f64| seconds * 1e6 / delivered.max(1) as f64;
        let cpu_us_per_delivery = per_delivery(self.rounds_cpu.total());
        let (user_us, system_us) = (
            per_delivery(self.rounds_cpu.user),
            per_delivery(self.rounds_cpu.system),
        );
        // User space is the server's own code. The kernel's share is mostly the socket calls
        // and the loopback delivery every server makes, plus the thread switches its design
        // causes.
        println!(
            "server CPU in the rounds: {:.2} s, {cpu_us_per_delivery:.1} µs per delivery \
             ({user_us:.1} in user space, {system_us:.1} in the kernel)",
            self.rounds_cpu.total()
        );
        print_steal(self.rounds_steal, "in the rounds");
        for (failure, count) in &self.failures {
            println!("failure ×{count}: {failure}");
        }
        println!(
            "summary target={name} observers={} rooms={} comets={} held={} setup_s={:.1} kib_per_held={per_held:.1} \
             mib_before={:.1} mib_holding={:.1} mib_after_30s={:.1} idle_cpu_pct={:.1} nats_msgs_per_s={} p50_ms={:.1} worst_p99_ms={:.1} deliveries_per_s={mean_rate:.0} \
             cpu_us_per_delivery={cpu_us_per_delivery:.1} user_us_per_delivery={user_us:.1} system_us_per_delivery={system_us:.1} \
             delivered={delivered}/{} failures={} steal_pct={}",
            args.observers,
            args.rooms,
            args.comets,
            self.held,
            self.setup.as_secs_f64(),
            mib(&self.before),
            mib(&self.holding),
            mib(&self.later),
            self.idle_cpu,
            self.nats_per_second.map_or("-".into(), |r| format!("{r:.0}")),
            ms(median_p50),
            ms(worst_p99),
            self.held * self.rounds.len(),
            self.failures.values().sum::<usize>(),
            self.rounds_steal,
        );
        println!("{}", crate::reproduce());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_refused_when_negative_or_not_a_number() {
        assert_eq!(seconds("12"), Ok(Duration::from_secs(12)));
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("0"), Ok(Duration::ZERO));
        for bad in ["-1", "-0.001", "NaN", "inf", "twelve", ""] {
            assert!(seconds(bad).is_err(), "{bad:?} was taken");
        }
    }
}
