//! Scenario 3: many rooms. Writers say at a steady total rate, going round R rooms;
//! observers sit in the first O of them, room r always on serving comet r mod K; one more
//! comet serves nobody. Measures deliveries per second and their latency, and for each comet
//! its CPU, memory and events taken in against the rooms it serves: a comet that serves no one
//! should cost next to nothing.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::http::Connection;
use crate::lingr::{self, Lingr, Member};
use crate::observers::{self, Protocol};
use crate::procs::Sample;
use crate::stats::{ms, Percentiles};
use crate::workers::{processes_for, Deliveries, Plan, Workers};
use crate::Servers;

/// The scenario's settings.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Rooms said to.
    #[arg(long, default_value_t = 10_000)]
    rooms: usize,
    /// Rooms with observers (the first this many); a multiple of --comets.
    #[arg(long, default_value_t = 100)]
    observed_rooms: usize,
    /// Observers in each observed room.
    #[arg(long, default_value_t = 10)]
    observers_per_room: usize,
    /// Comets serving observers (one more serves nobody).
    #[arg(long, default_value_t = 2)]
    comets: usize,
    /// Says per second in all.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Seconds of saying.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Loopback source addresses.
    #[arg(long, default_value_t = 8)]
    sources: usize,
    #[command(flatten)]
    servers: Servers,
}

/// Rooms one writer session is in (the api allows 64).
const ROOMS_PER_WRITER: usize = 50;
/// Connections saying at once.
const SAY_LANES: usize = 16;

/// Runs the scenario and prints its figures.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.comets > 0 && args.observed_rooms.is_multiple_of(args.comets),
        "--observed-rooms must be a multiple of --comets"
    );
    anyhow::ensure!(
        args.observed_rooms <= args.rooms,
        "more observed rooms than rooms"
    );
    let dir = tempfile::tempdir()?;
    let options = args.servers.lingr_options(args.comets + 1).patient();
    let cluster = Lingr::start(&options, dir.path().to_owned()).await?;
    let outcome = measure(&args, &cluster).await;
    cluster.stop().await;
    outcome?.print(&args);
    Ok(())
}

/// One comet's cost over the saying.
struct CometCost {
    rooms_served: usize,
    /// CPU in user space and in the kernel, in per cent of one core.
    user_percent: f64,
    system_percent: f64,
    rss_mib: f64,
    events_per_second: f64,
}

impl CometCost {
    /// CPU in all, in per cent of one core.
    fn cpu_percent(&self) -> f64 {
        self.user_percent + self.system_percent
    }
}

struct Report {
    said: usize,
    elapsed: Duration,
    delivered: Percentiles,
    expected: usize,
    comets: Vec<CometCost>,
    failures: std::collections::BTreeMap<String, usize>,
}

async fn measure(args: &Args, cluster: &Lingr) -> anyhow::Result<Report> {
    let writers = enter_writers(cluster.api, args.rooms).await?;
    let serving = &cluster.comets[..args.comets];
    let mut workers = Workers::start(&Plan {
        protocol: Protocol::Lingr,
        servers: serving,
        api: Some(cluster.api),
        observers: args.observed_rooms * args.observers_per_room,
        rooms: args.observed_rooms,
        processes: processes_for(args.observed_rooms * args.observers_per_room),
        sources: args.sources,
        once: false,
    })?;
    let mut deliveries = Deliveries::default();
    workers.wait_prepared(&mut deliveries).await?;
    workers.go().await?;
    let observers = args.observed_rooms * args.observers_per_room;
    let deadline = Instant::now() + Duration::from_secs(300);
    while cluster.held().await.unwrap_or(0) < observers as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let pids = cluster.comet_pids();
    let before: Vec<(Sample, f64)> = sample_comets(cluster, &pids).await;
    let started = Instant::now();
    let mut saying = tokio::spawn(say_round_robin(
        cluster.api,
        writers,
        args.observed_rooms,
        args.rate,
        Duration::from_secs(args.duration),
    ));
    let (said, to_observed) = loop {
        tokio::select! {
            finished = &mut saying => break finished??,
            said = workers.said.recv() => match said {
                Some(said) => workers.absorb(said, &mut deliveries),
                None => break saying.await??,
            },
        }
    };
    let elapsed = started.elapsed();
    let after = sample_comets(cluster, &pids).await;
    // Answers still on their way are counted, not the cost of waiting for them.
    let settle = Instant::now() + Duration::from_secs(3);
    while let Ok(Some(said)) = tokio::time::timeout_at(settle.into(), workers.said.recv()).await {
        workers.absorb(said, &mut deliveries);
    }
    let failures = std::mem::take(&mut workers.failures);
    workers.stop().await;
    let served = args.observed_rooms / args.comets;
    let comets = before
        .iter()
        .zip(&after)
        .enumerate()
        .map(|(n, ((b, b_events), (a, a_events)))| {
            let seconds = a.at.duration_since(b.at).as_secs_f64().max(0.001);
            let split = a.cpu_split_since(b);
            CometCost {
                rooms_served: if n < args.comets { served } else { 0 },
                user_percent: 100.0 * split.user / seconds,
                system_percent: 100.0 * split.system / seconds,
                rss_mib: a.rss_kib as f64 / 1024.0,
                events_per_second: (a_events - b_events) / seconds,
            }
        })
        .collect();
    Ok(Report {
        said,
        elapsed,
        delivered: Percentiles::of(&mut deliveries.take(1)),
        // A say to an observed room reaches every observer of that room.
        expected: to_observed * args.observers_per_room,
        comets,
        failures,
    })
}

/// Each comet's memory and CPU, and the events it has taken in so far.
async fn sample_comets(cluster: &Lingr, pids: &[u32]) -> Vec<(Sample, f64)> {
    let mut samples = Vec::new();
    for (pid, address) in pids.iter().zip(&cluster.comets) {
        let events = lingr::metric(*address, "lingr_comet_events_applied_total")
            .await
            .unwrap_or(0.0);
        samples.push((Sample::of(&[*pid]), events));
    }
    samples
}

/// A member in every room `bench0..rooms`, [`ROOMS_PER_WRITER`] rooms to a session; the
/// member for room r is at index r.
async fn enter_writers(api: std::net::SocketAddr, rooms: usize) -> anyhow::Result<Vec<Member>> {
    let sessions = rooms.div_ceil(ROOMS_PER_WRITER);
    let mut lanes = Vec::new();
    for lane in 0..SAY_LANES {
        let mine: Vec<usize> = (lane..sessions).step_by(SAY_LANES).collect();
        lanes.push(tokio::spawn(async move {
            let mut connection = Connection::open(api, Ipv4Addr::LOCALHOST).await?;
            let mut members = Vec::new();
            for session in mine {
                let first = session * ROOMS_PER_WRITER;
                let last = (first + ROOMS_PER_WRITER).min(rooms);
                let created =
                    lingr::call(&mut connection, "session/create", &[("nickname", "writer")])
                        .await?;
                let token = created["session"]
                    .as_str()
                    .context("no session")?
                    .to_owned();
                for room in first..last {
                    let entered = lingr::call(
                        &mut connection,
                        "room/enter",
                        &[("session", &token), ("room", &observers::room_name(room))],
                    )
                    .await?;
                    members.push((
                        room,
                        Member {
                            session: token.clone(),
                            ticket: entered["ticket"].as_str().context("no ticket")?.to_owned(),
                            counter: entered["counter"].as_u64().context("no counter")?,
                        },
                    ));
                }
            }
            anyhow::Ok(members)
        }));
    }
    let mut members = Vec::new();
    for lane in lanes {
        members.extend(lane.await??);
    }
    members.sort_by_key(|(room, _)| *room);
    Ok(members.into_iter().map(|(_, member)| member).collect())
}

/// Says at `rate` a second in all for `duration` over [`SAY_LANES`] connections, each lane
/// going round the rooms of its own writer sessions (calls of one session at once would contend
/// for its rate-limit record); returns how many were said, and how many to observed rooms.
async fn say_round_robin(
    api: std::net::SocketAddr,
    writers: Vec<Member>,
    observed_rooms: usize,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<(usize, usize)> {
    let writers = std::sync::Arc::new(writers);
    // Fewer sessions than lanes leave some lanes idle: the others share the whole rate.
    let saying_lanes = writers.len().div_ceil(ROOMS_PER_WRITER).clamp(1, SAY_LANES);
    let interval = Duration::from_secs_f64(saying_lanes as f64 / f64::from(rate.max(1)));
    let until = Instant::now() + duration;
    let mut lanes = Vec::new();
    for lane in 0..SAY_LANES {
        let writers = std::sync::Arc::clone(&writers);
        let rooms: Vec<usize> = (0..writers.len())
            .filter(|room| (room / ROOMS_PER_WRITER) % SAY_LANES == lane)
            .collect();
        lanes.push(tokio::spawn(async move {
            let (mut said, mut to_observed) = (0usize, 0usize);
            if rooms.is_empty() {
                return anyhow::Ok((said, to_observed));
            }
            let mut connection = Connection::open(api, Ipv4Addr::LOCALHOST).await?;
            let offset = interval.mul_f64(lane as f64 / saying_lanes as f64);
            let mut next = tokio::time::Instant::now() + offset;
            for &room in rooms.iter().cycle() {
                if Instant::now() >= until {
                    break;
                }
                tokio::time::sleep_until(next).await;
                next += interval;
                lingr::say(&mut connection, &writers[room], &observers::message(1)).await?;
                said += 1;
                to_observed += usize::from(room < observed_rooms);
            }
            anyhow::Ok((said, to_observed))
        }));
    }
    let (mut said, mut to_observed) = (0, 0);
    for lane in lanes {
        let (lane_said, lane_to_observed) = lane.await??;
        said += lane_said;
        to_observed += lane_to_observed;
    }
    Ok((said, to_observed))
}

impl Report {
    fn print(&self, args: &Args) {
        println!(
            "== rooms: {} says/s over {} rooms for {} s; {} observers in each of the first {} rooms, on {} comets; one more comet serves nobody",
            args.rate, args.rooms, args.duration, args.observers_per_room, args.observed_rooms, args.comets
        );
        let rate = self.delivered.count as f64 / self.elapsed.as_secs_f64();
        println!(
            "said {} in {:.1} s; delivered {}/{}: {}; {rate:.0} deliveries/s",
            self.said,
            self.elapsed.as_secs_f64(),
            self.delivered.count,
            self.expected,
            self.delivered
        );
        for (n, comet) in self.comets.iter().enumerate() {
            println!(
                "comet {n}: serves {} rooms; CPU {:.1} % of one core ({:.1} in user space, {:.1} in the kernel), \
                 {:.1} MiB, {:.0} events/s taken in",
                comet.rooms_served,
                comet.cpu_percent(),
                comet.user_percent,
                comet.system_percent,
                comet.rss_mib,
                comet.events_per_second
            );
        }
        for (failure, count) in &self.failures {
            println!("failure ×{count}: {failure}");
        }
        let serving: Vec<&CometCost> = self.comets.iter().filter(|c| c.rooms_served > 0).collect();
        let idle = self.comets.iter().find(|c| c.rooms_served == 0);
        let mean = |f: fn(&CometCost) -> f64| {
            serving.iter().map(|c| f(c)).sum::<f64>() / serving.len().max(1) as f64
        };
        println!(
            "summary scenario=rooms rooms={} observed_rooms={} observers={} rate={} said={} delivered={}/{} \
             deliveries_per_s={rate:.0} p50_ms={:.1} p99_ms={:.1} serving_cpu_pct={:.1} serving_user_pct={:.1} serving_system_pct={:.1} serving_mib={:.1} \
             idle_cpu_pct={:.1} idle_mib={:.1} idle_events_per_s={:.0} failures={}",
            args.rooms,
            args.observed_rooms,
            args.observed_rooms * args.observers_per_room,
            args.rate,
            self.said,
            self.delivered.count,
            self.expected,
            ms(self.delivered.p50),
            ms(self.delivered.p99),
            mean(CometCost::cpu_percent),
            mean(|c| c.user_percent),
            mean(|c| c.system_percent),
            mean(|c| c.rss_mib),
            idle.map_or(0.0, CometCost::cpu_percent),
            idle.map_or(0.0, |c| c.rss_mib),
            idle.map_or(0.0, |c| c.events_per_second),
            self.failures.values().sum::<usize>(),
        );
        println!("{}", crate::reproduce());
    }
}
