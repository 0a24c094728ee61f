//! The observer side, run in worker processes (a process may open at most 20,000 files): each
//! observer holds one long-poll at a time on its own connection, from one of several source
//! addresses, and reports how long each benchmark message took from its publish to it.
//!
//! Talks to the coordinator by lines: `prepared` once every observer has its credentials,
//! then (after `go` on stdin) `opened N`, `lat ROUND MICROS...` as messages arrive and
//! `err TEXT` for each failure; stdin closing ends the process.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::http::{Answer, Connection};
use crate::lingr::{self, Member};

/// Which server's long-poll protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// `room/observe` with session, ticket and counter.
    Lingr,
    /// nchan's long-poll, resumed by Last-Modified and Etag.
    Nchan,
    /// pushpin's GRIP hold, asked again after each answer.
    Pushpin,
}

/// A worker's share of the observers.
#[derive(Debug, clap::Args)]
pub struct Share {
    /// The protocol spoken.
    #[arg(long, value_enum)]
    pub protocol: Protocol,
    /// Where observes go, comma-separated; observer i uses number i modulo their count.
    #[arg(long, value_delimiter = ',')]
    pub servers: Vec<SocketAddr>,
    /// lingr's api (for sessions and tickets).
    #[arg(long)]
    pub api: Option<SocketAddr>,
    /// Rooms `bench0`..; observer i is in room i modulo this.
    #[arg(long)]
    pub rooms: usize,
    /// The first observer's index.
    #[arg(long)]
    pub first: usize,
    /// How many observers.
    #[arg(long)]
    pub count: usize,
    /// Source addresses, comma-separated; observer i uses number i modulo their count.
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<Ipv4Addr>,
    /// Observes per lingr session (the comet's default limit is 4).
    #[arg(long, default_value_t = 4)]
    pub per_session: usize,
    /// Make one observe each and report how long it took to an answer with events: from its
    /// request as round [`ONCE_ROUND`], from `go` as round [`ONCE_SINCE_GO_ROUND`] (a herd of
    /// stale observes).
    #[arg(long)]
    pub once: bool,
}

/// The round a `--once` observe's latency from its request is reported as.
pub const ONCE_ROUND: usize = 1;
/// The round a `--once` observe's latency from `go` is reported as.
pub const ONCE_SINCE_GO_ROUND: usize = 2;
/// The round a `--once` observe answered only after a retry (refused or cut off first) also
/// reports its latency as.
pub const ONCE_RETRIED_ROUND: usize = 3;
/// The round a `--once` observer reports, as time since `go`, when it began to connect (it
/// had a turn among the connections opened at once).
pub const ONCE_CONNECTING_ROUND: usize = 4;
/// The round a `--once` observer reports, as time since `go`, when its first request left.
pub const ONCE_ASKED_ROUND: usize = 5;
/// How long a failed `--once` observe waits before it asks again: the web client's first
/// back-off (`web/assets/room.js`).
const RETRY_BACKOFF: Duration = Duration::from_millis(250);

/// The benchmark message for `round`, stamped with the time it is sent.
pub fn message(round: usize) -> String {
    format!("bench-{round}-{}", unix_nanos())
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The round of a benchmark message and how long ago it was sent.
fn delivery(text: &str) -> Option<(usize, Duration)> {
    let mut parts = text.trim().strip_prefix("bench-")?.split('-');
    let round = parts.next()?.parse().ok()?;
    let sent: u128 = parts.next()?.parse().ok()?;
    let micros = unix_nanos().saturating_sub(sent) / 1000;
    Some((round, Duration::from_micros(u64::try_from(micros).ok()?)))
}

/// Room number `index`'s name.
pub fn room_name(index: usize) -> String {
    format!("bench{index}")
}

enum Report {
    Delivered(usize, Duration),
    Failed(String),
}

/// Runs a worker until stdin closes.
pub async fn run(share: Share) -> anyhow::Result<()> {
    anyhow::ensure!(
        !share.servers.is_empty() && !share.sources.is_empty(),
        "no servers or sources"
    );
    let members = prepare(&share).await?;
    println!("prepared");
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = stdin.next_line().await? {
        if line == "go" {
            break;
        }
    }
    let (reports, received) = mpsc::unbounded_channel();
    let printer = tokio::spawn(print_reports(received));
    let opening = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let went = std::time::Instant::now();
    let mut opened = Vec::new();
    for offset in 0..share.count {
        let index = share.first + offset;
        let observer = Observer {
            protocol: share.protocol,
            server: share.servers[index % share.servers.len()],
            source: share.sources[index % share.sources.len()],
            room: room_name(index % share.rooms),
            resume: members.get(offset).map(Resume::of),
            last_modified: None,
            etag: None,
        };
        if share.once {
            let (reports, opening) = (reports.clone(), std::sync::Arc::clone(&opening));
            let (first_sent, sent) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let mut timeline = Timeline::default();
                let report = observer.once(&opening, &mut timeline).await;
                let since_go = |at: std::time::Instant| at.saturating_duration_since(went);
                for (round, at) in [
                    (ONCE_CONNECTING_ROUND, timeline.connecting),
                    (ONCE_ASKED_ROUND, timeline.asked),
                ] {
                    if let Some(at) = at {
                        let _ = reports.send(Report::Delivered(round, since_go(at)));
                    }
                }
                let answered = matches!(report, Report::Delivered(..));
                if answered {
                    let since_go = Report::Delivered(ONCE_SINCE_GO_ROUND, went.elapsed());
                    let _ = reports.send(since_go);
                }
                if let Report::Delivered(ONCE_RETRIED_ROUND, latency) = report {
                    // Counted among all the answers from their request, and as a retry.
                    let _ = reports.send(Report::Delivered(ONCE_ROUND, latency));
                }
                let _ = reports.send(report);
                let _ = first_sent.send(answered);
            });
            opened.push(sent);
            continue;
        }
        let (first_sent, sent) = tokio::sync::oneshot::channel();
        tokio::spawn(observer.run(reports.clone(), std::sync::Arc::clone(&opening), first_sent));
        opened.push(sent);
    }
    let mut count = 0;
    for sent in opened {
        count += usize::from(sent.await.unwrap_or(false));
    }
    println!("opened {count}");
    // The observers run until the coordinator closes stdin.
    while stdin.next_line().await?.is_some() {}
    drop(reports);
    printer.abort();
    Ok(())
}

/// Each observer's credentials (lingr only): one session per `per_session` observers of a room.
async fn prepare(share: &Share) -> anyhow::Result<Vec<Member>> {
    if share.protocol != Protocol::Lingr {
        return Ok(Vec::new());
    }
    let api = share.api.context("lingr observers need --api")?;
    let rooms: Vec<usize> = (0..share.count)
        .map(|o| (share.first + o) % share.rooms)
        .collect();
    // Sessions per room, made 16 at a time.
    let mut sessions_needed: Vec<(usize, usize)> = Vec::new();
    for room in 0..share.rooms {
        let observers = rooms.iter().filter(|r| **r == room).count();
        sessions_needed.extend((0..observers.div_ceil(share.per_session)).map(|s| (room, s)));
    }
    let mut joined: Vec<Vec<Member>> = vec![Vec::new(); share.rooms];
    let lanes = 16;
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let mine: Vec<usize> = sessions_needed
            .iter()
            .enumerate()
            .filter(|(i, _)| i % lanes == lane)
            .map(|(_, (room, _))| *room)
            .collect();
        let source = share.sources[lane % share.sources.len()];
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(api, source).await?;
            let mut members = Vec::new();
            for room in mine {
                members.push((
                    room,
                    lingr::join(&mut connection, &room_name(room), None).await?,
                ));
            }
            anyhow::Ok(members)
        }));
    }
    for task in tasks {
        for (room, member) in task.await?? {
            joined[room].push(member);
        }
    }
    // Observer o of room r takes that room's session number (its rank in the room) / per_session.
    let mut rank = vec![0usize; share.rooms];
    let mut members = Vec::with_capacity(share.count);
    for room in rooms {
        let member = joined[room]
            .get(rank[room] / share.per_session)
            .cloned()
            .context("fewer sessions than observers")?;
        rank[room] += 1;
        members.push(member);
    }
    Ok(members)
}

/// When a `--once` observer's first attempt began to connect and sent its request: where a
/// herd member's time went before the server had it.
#[derive(Default)]
struct Timeline {
    connecting: Option<std::time::Instant>,
    asked: Option<std::time::Instant>,
}

struct Observer {
    protocol: Protocol,
    server: SocketAddr,
    source: Ipv4Addr,
    room: String,
    /// Where a lingr observer's next observe resumes.
    resume: Option<Resume>,
    last_modified: Option<String>,
    etag: Option<String>,
}

impl Observer {
    async fn run(
        mut self,
        reports: mpsc::UnboundedSender<Report>,
        opening: std::sync::Arc<tokio::sync::Semaphore>,
        first_sent: tokio::sync::oneshot::Sender<bool>,
    ) {
        let mut first_sent = Some(first_sent);
        loop {
            let permit = opening.acquire().await;
            let opened = Connection::open(self.server, self.source).await;
            drop(permit);
            let mut connection = match opened {
                Ok(mut connection) => {
                    connection.touch_buffer();
                    connection
                }
                Err(err) => {
                    let _ = reports.send(Report::Failed(format!("connect: {err}")));
                    if let Some(sent) = first_sent.take() {
                        let _ = sent.send(false);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Some(sent) = first_sent.take() {
                let _ = sent.send(true);
            }
            loop {
                let target = self.target();
                let headers = self.headers();
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                match connection.get(&target, &headers).await {
                    Ok(answer) => {
                        match self.absorb(&answer) {
                            Ok(texts) => {
                                for (round, latency) in texts.iter().filter_map(|t| delivery(t)) {
                                    let _ = reports.send(Report::Delivered(round, latency));
                                }
                            }
                            Err(failure) => {
                                let _ = reports.send(Report::Failed(failure));
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                        if answer.closes {
                            break;
                        }
                    }
                    Err(err) => {
                        let _ = reports.send(Report::Failed(format!("observe: {err}")));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                }
            }
        }
    }

    /// One observe on a new connection: its latency from request to an answer with events.
    /// Like the web client, an observe refused as overloaded (503), or whose connection failed
    /// (a replica at its connection limit closes its idlest ones), is tried once more with the
    /// same counter, on a new connection, after the client's first back-off; the wait counts
    /// in its latency, and the report counts it as retried.
    async fn once(self, opening: &tokio::sync::Semaphore, timeline: &mut Timeline) -> Report {
        let target = self.target();
        let mut retried = false;
        loop {
            // A herd's answers carry up to 500 events each: parsing them all would make this
            // client, not the server, the bottleneck, so an answer is checked, not read.
            let failure = match self.ask(opening, &target, timeline).await {
                Ok(answer) if answer.status == 200 && has_events(&answer.body) => {
                    let round = if retried {
                        ONCE_RETRIED_ROUND
                    } else {
                        ONCE_ROUND
                    };
                    let since = timeline.asked.map_or(Duration::ZERO, |at| at.elapsed());
                    return Report::Delivered(round, since);
                }
                Ok(answer) if answer.status == 200 => {
                    return Report::Failed("answered without events".into())
                }
                Ok(answer) if answer.status == 503 => "status 503".to_owned(),
                Ok(answer) => return Report::Failed(format!("status {}", answer.status)),
                Err(failure) => failure,
            };
            if retried {
                return Report::Failed(failure);
            }
            retried = true;
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }

    /// Opens a connection and observes once, noting the first attempt in `timeline`.
    async fn ask(
        &self,
        opening: &tokio::sync::Semaphore,
        target: &str,
        timeline: &mut Timeline,
    ) -> Result<Answer, String> {
        let permit = opening.acquire().await;
        timeline
            .connecting
            .get_or_insert_with(std::time::Instant::now);
        let opened = Connection::open(self.server, self.source).await;
        drop(permit);
        let mut connection = opened.map_err(|err| format!("connect: {err}"))?;
        timeline.asked.get_or_insert_with(std::time::Instant::now);
        connection
            .get(target, &[])
            .await
            .map_err(|err| format!("observe: {err}"))
    }

    fn target(&self) -> String {
        match (&self.protocol, &self.resume) {
            (Protocol::Lingr, Some(resume)) => format!("{}{}", resume.prefix, resume.counter),
            _ => format!("/sub?room={}", self.room),
        }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        if let Some(value) = &self.last_modified {
            headers.push(("If-Modified-Since", value.clone()));
        }
        if let Some(value) = &self.etag {
            headers.push(("If-None-Match", value.clone()));
        }
        headers
    }

    /// The message texts an answer carries, after noting where to resume.
    fn absorb(&mut self, answer: &Answer) -> Result<Vec<String>, String> {
        match self.protocol {
            Protocol::Lingr => {
                // Only what the bench needs: a generic JSON value per answer, a map per event,
                // cost this client more per delivery than nchan's whole protocol, on the two
                // cores it shares with the server.
                let body: ObserveAnswer = serde_json::from_slice(&answer.body).map_err(|err| {
                    format!("status {} not an observe answer: {err}", answer.status)
                })?;
                if answer.status != 200 {
                    return Err(format!(
                        "status {} {}",
                        answer.status,
                        body.code.as_deref().unwrap_or("without a code")
                    ));
                }
                if let (Some(resume), Some(counter)) = (&mut self.resume, body.counter) {
                    resume.counter = counter;
                }
                Ok(body.events.into_iter().filter_map(|e| e.text).collect())
            }
            Protocol::Nchan => match answer.status {
                200 => {
                    self.last_modified = answer.header("last-modified").map(str::to_owned);
                    self.etag = answer.header("etag").map(str::to_owned);
                    Ok(vec![String::from_utf8_lossy(&answer.body).into_owned()])
                }
                304 | 408 => Ok(Vec::new()),
                status => Err(format!("status {status}")),
            },
            Protocol::Pushpin => match answer.status {
                200 => Ok(vec![String::from_utf8_lossy(&answer.body).into_owned()]),
                status => Err(format!("status {status}")),
            },
        }
    }
}

/// A lingr observer's next observe: its target up to the counter (`session`, `ticket` and
/// `timeout` do not change from one observe to the next, so they are encoded once), and the
/// counter the last answer gave.
struct Resume {
    prefix: String,
    counter: u64,
}

impl Resume {
    fn of(member: &Member) -> Self {
        let query = serde_urlencoded::to_string([
            ("session", member.session.as_str()),
            ("ticket", member.ticket.as_str()),
            ("timeout", "60"),
        ])
        .unwrap_or_default();
        Self {
            prefix: format!("/api/room/observe?{query}&counter="),
            counter: member.counter,
        }
    }
}

/// What the bench reads of a lingr observe's answer (or of an error answer); the other fields
/// are skipped, not built.
#[derive(serde::Deserialize)]
struct ObserveAnswer {
    counter: Option<u64>,
    #[serde(default)]
    events: Vec<EventText>,
    code: Option<String>,
}

/// An event's text, if it has one (a message).
#[derive(serde::Deserialize)]
struct EventText {
    text: Option<String>,
}

/// Whether a lingr observe answer's JSON lists at least one event.
fn has_events(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"\"events\":[{").is_some()
}

async fn print_reports(mut received: mpsc::UnboundedReceiver<Report>) {
    use std::fmt::Write as _;
    let mut pending: std::collections::BTreeMap<usize, String> = Default::default();
    loop {
        let deadline = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                report = received.recv() => match report {
                    Some(Report::Delivered(round, latency)) => {
                        let line = pending.entry(round).or_default();
                        let _ = write!(line, " {}", latency.as_micros());
                    }
                    Some(Report::Failed(text)) => println!("err {}", text.replace('\n', " ")),
                    None => return,
                },
                () = &mut deadline => break,
            }
        }
        for (round, line) in std::mem::take(&mut pending) {
            println!("lat {round}{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lingr_observer() -> Observer {
        let member = Member {
            session: "s_1".into(),
            ticket: "lobby.o_2.t+3".into(),
            counter: 7,
        };
        Observer {
            protocol: Protocol::Lingr,
            server: SocketAddr::from(([127, 0, 0, 1], 1)),
            source: Ipv4Addr::LOCALHOST,
            room: room_name(0),
            resume: Some(Resume::of(&member)),
            last_modified: None,
            etag: None,
        }
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: bytes::BytesMut::from(body.as_bytes()),
            closes: false,
        }
    }

    /// The observe's target carries every parameter, encoded, and the counter the last
    /// answer gave.
    #[test]
    fn an_observe_resumes_from_the_counter_its_answer_gave() {
        let mut observer = lingr_observer();
        assert_eq!(
            observer.target(),
            "/api/room/observe?session=s_1&ticket=lobby.o_2.t%2B3&timeout=60&counter=7"
        );
        let texts = observer
            .absorb(&answer(
                200,
                r#"{"status":"ok","counter":9,"events":[
                    {"counter":8,"type":"enter","nickname":"a"},
                    {"counter":9,"type":"message","text":"bench-2-5 \"quoted\"","timestamp":"t"}]}"#,
            ))
            .expect("an answer");
        assert_eq!(texts, ["bench-2-5 \"quoted\""]);
        assert!(observer.target().ends_with("&counter=9"));
    }

    #[test]
    fn an_error_answer_is_a_failure_naming_its_code() {
        let mut observer = lingr_observer();
        let failure = observer
            .absorb(&answer(
                403,
                r#"{"status":"error","code":"invalid_ticket","detail":"x"}"#,
            ))
            .expect_err("a failure");
        assert_eq!(failure, "status 403 invalid_ticket");
        assert!(observer.target().ends_with("&counter=7"), "counter kept");
    }
}
