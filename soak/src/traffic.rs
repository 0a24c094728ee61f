//! The traffic of the run, as careful clients make it: in each room a writer says something
//! every second and an observer keeps observing. A call that fails is retried on another
//! replica (a say with the same `idempotent_id`, so it is stored once); an observe that fails
//! is repeated with the same counter on another comet. What each got is kept for the checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A client of the cluster.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    apis: Arc<Vec<String>>,
    comets: Arc<Vec<String>>,
}

/// An occupant as a client holds it.
#[derive(Clone)]
pub struct Member {
    session: String,
    ticket: String,
    /// The counter its enter returned.
    pub counter: u64,
}

/// Why a call failed.
#[derive(Debug)]
pub enum Failure {
    /// No answer (the replica died, or is restarting).
    Transport,
    /// An error answer.
    Refused(u16, String),
}

impl Client {
    /// A client of these replicas.
    pub fn new(apis: Vec<String>, comets: Vec<String>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(70))
                .build()
                .unwrap_or_default(),
            apis: Arc::new(apis),
            comets: Arc::new(comets),
        }
    }

    async fn call(
        &self,
        base: &str,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<Value, Failure> {
        let answer = self
            .http
            .get(format!("{base}/api/{path}"))
            .query(params)
            .send()
            .await
            .map_err(|_| Failure::Transport)?;
        let status = answer.status().as_u16();
        let json: Value = answer.json().await.map_err(|_| Failure::Transport)?;
        if status == 200 {
            Ok(json)
        } else {
            let code = json["code"].as_str().unwrap_or_default().to_owned();
            Err(Failure::Refused(status, code))
        }
    }

    /// Calls an api replica, moving to the next one after a failure that a retry can cure,
    /// until it succeeds or `limit` passes.
    async fn call_api(
        &self,
        path: &str,
        params: &[(&str, &str)],
        limit: Duration,
    ) -> Result<Value, Failure> {
        let started = Instant::now();
        let mut turn = 0;
        loop {
            let base = &self.apis[turn % self.apis.len()];
            turn += 1;
            match self.call(base, path, params).await {
                Ok(json) => return Ok(json),
                Err(Failure::Refused(status, code)) if status != 503 && status != 429 => {
                    return Err(Failure::Refused(status, code))
                }
                Err(failure) if started.elapsed() > limit => return Err(failure),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// A new session that enters `room` as `nickname`.
    pub async fn join(&self, room: &str, nickname: &str) -> Result<Member, Failure> {
        let limit = Duration::from_secs(60);
        let created = self
            .call_api("session/create", &[("nickname", nickname)], limit)
            .await?;
        let session = created["session"].as_str().unwrap_or_default().to_owned();
        let id = format!("enter-{room}-{nickname}");
        let entered = self
            .call_api(
                "room/enter",
                &[
                    ("session", &session),
                    ("room", room),
                    ("idempotent_id", &id),
                ],
                limit,
            )
            .await?;
        Ok(Member {
            session,
            ticket: entered["ticket"].as_str().unwrap_or_default().to_owned(),
            counter: entered["counter"].as_u64().unwrap_or_default(),
        })
    }

    /// Says `text` with `id` until stored; returns its counter.
    pub async fn say(&self, member: &Member, text: &str, id: &str) -> Result<u64, Failure> {
        let params = [
            ("session", member.session.as_str()),
            ("ticket", member.ticket.as_str()),
            ("message", text),
            ("idempotent_id", id),
        ];
        let said = self
            .call_api("room/say", &params, Duration::from_secs(60))
            .await?;
        said["counter"].as_u64().ok_or(Failure::Transport)
    }

    /// One observe after `counter`, on comet number `turn` (modulo their number).
    pub async fn observe(
        &self,
        member: &Member,
        counter: u64,
        turn: usize,
    ) -> Result<Value, Failure> {
        let base = &self.comets[turn % self.comets.len()];
        let counter = counter.to_string();
        self.call(
            base,
            "room/observe",
            &[
                ("session", &member.session),
                ("ticket", &member.ticket),
                ("counter", &counter),
                ("timeout", "20"),
            ],
        )
        .await
    }
}

/// What a room's writer had stored, and how long the slowest say took.
#[derive(Default)]
pub struct Written {
    /// The counters of its acknowledged says, in order.
    pub acknowledged: Vec<u64>,
    /// Says that failed for good (not retried further).
    pub failed: usize,
    /// The longest from a say's first attempt to its acknowledgement.
    pub slowest: Duration,
}

/// Says something every second until `stop`.
pub async fn write(client: Client, member: Member, room: usize, stop: Arc<AtomicBool>) -> Written {
    let mut written = Written::default();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let started = Instant::now();
        let text = format!("room {room} message {n}");
        match client.say(&member, &text, &format!("say-{room}-{n}")).await {
            Ok(counter) => {
                written.acknowledged.push(counter);
                written.slowest = written.slowest.max(started.elapsed());
            }
            Err(failure) => {
                eprintln!("soak: room {room}: say {n} failed: {failure:?}");
                written.failed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    written
}

/// What a room's observer saw.
#[derive(Default)]
pub struct Observed {
    /// Every event's counter, in the order seen.
    pub counters: Vec<u64>,
    /// The counters of message events, in the order seen.
    pub messages: Vec<u64>,
    /// Observes refused for a reason a retry does not cure (expired counter, dead ticket).
    pub refusals: Vec<String>,
}

/// Observes until `stop` is set and `last` (if given by then) has been seen.
pub async fn observe(
    client: Client,
    member: Member,
    stop: Arc<AtomicBool>,
    last: Arc<std::sync::Mutex<Option<u64>>>,
) -> Observed {
    let mut observed = Observed::default();
    let mut counter = member.counter;
    let mut turn = 0;
    loop {
        if stop.load(Ordering::SeqCst) {
            let wanted = last.lock().map(|l| *l).unwrap_or(None);
            if wanted.is_none_or(|w| counter >= w) {
                return observed;
            }
        }
        match client.observe(&member, counter, turn).await {
            Ok(answer) => {
                for event in answer["events"].as_array().into_iter().flatten() {
                    let c = event["counter"].as_u64().unwrap_or_default();
                    observed.counters.push(c);
                    if event["type"] == "message" {
                        observed.messages.push(c);
                    }
                }
                counter = answer["counter"].as_u64().unwrap_or(counter);
            }
            Err(Failure::Refused(status, code)) if status != 503 && status != 429 => {
                observed.refusals.push(code);
                if observed.refusals.len() > 10 {
                    return observed;
                }
                turn += 1;
            }
            Err(_) => {
                turn += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
