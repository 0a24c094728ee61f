//! Scenario 5: the original's design against ours. Say latency as comet replicas grow, for
//! our pub/sub (the api publishes once to JetStream; each comet consumes) and for the 2006
//! design, in which the web tier notified every chatserver by a synchronous HTTP request before
//! answering. The latter is simulated here, never in the product: after the api's answer the
//! writer, standing in for the web tier, notifies each of K chatserver stand-ins (separate
//! processes of this binary) one after another over kept-alive connections.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lingr_cluster::free_ports;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use crate::http::Connection;
use crate::lingr::{self, Lingr, Member};
use crate::peers::loopback;
use crate::procs::{print_steal, MachineCpu, Steal};
use crate::stats::{ms, Percentiles};
use crate::Servers;

/// The scenario's settings.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Replica counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    replicas: Vec<usize>,
    /// Says per second in all.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Seconds of says per replica count and design.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Writers, each in a room of its own.
    #[arg(long, default_value_t = 10)]
    writers: usize,
    /// Passes over the replica counts, every other one in reverse order; each count's figures
    /// pool its passes. One pass's p50 moves by ±20 % on two shared cores, which a single pass
    /// would show as a trend in the replicas.
    #[arg(long, default_value_t = 3)]
    passes: usize,
    #[command(flatten)]
    servers: Servers,
}

/// The chatserver stand-in's settings.
#[derive(Debug, clap::Args)]
pub struct StandIn {
    /// Where it listens.
    #[arg(long)]
    listen: SocketAddr,
}

/// One replica count's says over every pass, and each pass's p50, for both designs.
#[derive(Default)]
struct Pooled {
    ours: Vec<Duration>,
    synchronous: Vec<Duration>,
    ours_p50s: Vec<Duration>,
    synchronous_p50s: Vec<Duration>,
}

/// Runs the scenario and prints a table: replicas, then p50/p99 for each design.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let passes = args.passes.max(1);
    let machine = MachineCpu::now();
    let mut pooled: std::collections::BTreeMap<usize, Pooled> = Default::default();
    for pass in 0..passes {
        let mut order = args.replicas.clone();
        if pass % 2 == 1 {
            order.reverse();
        }
        for replicas in order {
            let (mut ours, mut synchronous, steal) = measure(&args, replicas).await?;
            let (ours_now, synchronous_now) = (
                Percentiles::of(&mut ours),
                Percentiles::of(&mut synchronous),
            );
            println!(
                "pass {} replicas {replicas:>2}: pub/sub {ours_now} | synchronous fan-out {synchronous_now} | steal {steal} %",
                pass + 1
            );
            let entry = pooled.entry(replicas).or_default();
            entry.ours.append(&mut ours);
            entry.synchronous.append(&mut synchronous);
            entry.ours_p50s.push(ours_now.p50);
            entry.synchronous_p50s.push(synchronous_now.p50);
        }
    }
    let steal = Steal::since(machine);
    println!(
        "== say latency against comet replicas, {} says/s by {} writers for {} s each, {} pass(es) pooled",
        args.rate, args.writers, args.duration, passes
    );
    println!(
        "replicas | pub/sub p50 | pub/sub p99 | pub/sub p50 by pass | synchronous p50 | synchronous p99 | synchronous p50 by pass"
    );
    let range = |p50s: &[Duration]| {
        let low = p50s.iter().min().copied().unwrap_or_default();
        let high = p50s.iter().max().copied().unwrap_or_default();
        format!("{:.2}–{:.2} ms", ms(low), ms(high))
    };
    for (replicas, runs) in &mut pooled {
        let ours = Percentiles::of(&mut runs.ours);
        let synchronous = Percentiles::of(&mut runs.synchronous);
        println!(
            "{replicas:>8} | {:>8.2} ms | {:>8.2} ms | {:>19} | {:>12.2} ms | {:>12.2} ms | {:>23}",
            ms(ours.p50),
            ms(ours.p99),
            range(&runs.ours_p50s),
            ms(synchronous.p50),
            ms(synchronous.p99),
            range(&runs.synchronous_p50s),
        );
        println!(
            "summary scenario=replicas replicas={replicas} passes={} pubsub_p50_ms={:.2} pubsub_p99_ms={:.2} sync_p50_ms={:.2} sync_p99_ms={:.2} steal_pct={steal}",
            passes,
            ms(ours.p50),
            ms(ours.p99),
            ms(synchronous.p50),
            ms(synchronous.p99)
        );
    }
    print_steal(steal, "over every pass");
    println!("{}", crate::reproduce());
    Ok(())
}

/// One pass at `replicas` comets: the says' latencies with pub/sub alone, then with the
/// synchronous notification of as many stand-ins, and the steal over both.
async fn measure(
    args: &Args,
    replicas: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>, Steal)> {
    let dir = tempfile::tempdir()?;
    let options = args.servers.lingr_options(replicas);
    let cluster = Lingr::start(&options, dir.path().to_owned()).await?;
    let machine = MachineCpu::now();
    let ours = says(args, &cluster, &[]).await;
    let stand_ins = start_stand_ins(replicas).await;
    let synchronous = match &stand_ins {
        Ok((_, addresses)) => says(args, &cluster, addresses).await,
        Err(err) => Err(anyhow::anyhow!("{err:#}")),
    };
    let steal = Steal::since(machine);
    cluster.stop().await;
    Ok((ours?, synchronous?, steal))
}

/// Each writer says at its share of the rate; after each answer it notifies every address in
/// `notify` in turn. Returns each say's latency, notifications included.
async fn says(
    args: &Args,
    cluster: &Lingr,
    notify: &[SocketAddr],
) -> anyhow::Result<Vec<Duration>> {
    let interval = Duration::from_secs_f64(args.writers as f64 / f64::from(args.rate.max(1)));
    let until = Instant::now() + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    for writer in 0..args.writers {
        let mut connection = Connection::open(cluster.api, Ipv4Addr::LOCALHOST).await?;
        let member: Member = lingr::join(
            &mut connection,
            &format!("replicas{writer}"),
            Some("writer"),
        )
        .await?;
        let mut chatservers = Vec::new();
        for address in notify {
            chatservers.push(Connection::open(*address, Ipv4Addr::LOCALHOST).await?);
        }
        let offset = interval.mul_f64(writer as f64 / args.writers as f64);
        tasks.push(tokio::spawn(async move {
            let mut next = tokio::time::Instant::now() + offset;
            let mut latencies = Vec::new();
            let mut said = 0u64;
            while Instant::now() < until {
                tokio::time::sleep_until(next).await;
                next += interval;
                said += 1;
                let text = format!("say {said}");
                let sent = Instant::now();
                lingr::say(&mut connection, &member, &text).await?;
                for chatserver in &mut chatservers {
                    let answer = chatserver
                        .send("POST", "/notify", &[], text.as_bytes())
                        .await?;
                    anyhow::ensure!(
                        answer.status == 200,
                        "a chatserver answered {}",
                        answer.status
                    );
                }
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.append(&mut task.await??);
    }
    Ok(all)
}

async fn start_stand_ins(count: usize) -> anyhow::Result<(Vec<Child>, Vec<SocketAddr>)> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    let mut addresses = Vec::new();
    for port in free_ports(count)? {
        let address = loopback(port);
        children.push(
            Command::new(&exe)
                .args(["chatserver", "--listen", &address.to_string()])
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("starting a chatserver stand-in")?,
        );
        addresses.push(address);
    }
    for address in &addresses {
        for _ in 0..100 {
            if TcpStream::connect(address).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok((children, addresses))
}

/// A chatserver stand-in: answers every request with `200 ok` once its body has arrived, as
/// a chatserver acknowledged a notification once it had queued it for its observers.
pub async fn stand_in(args: StandIn) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve(stream));
    }
}

async fn serve(mut stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut buffer = Vec::with_capacity(1024);
    loop {
        let (head, length) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 16];
            let mut request = httparse::Request::new(&mut slots);
            if let httparse::Status::Complete(head) = request.parse(&buffer)? {
                let length = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                    .unwrap_or(0);
                break (head, length);
            }
            if stream.read_buf(&mut buffer).await? == 0 {
                return Ok(());
            }
        };
        while buffer.len() < head + length {
            if stream.read_buf(&mut buffer).await? == 0 {
                return Ok(());
            }
        }
        buffer.drain(..head + length);
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await?;
    }
}
