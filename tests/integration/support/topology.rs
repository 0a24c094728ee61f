//! Where a test's roles run. By default in this process (fast to start, easy to kill); with
//! `LINGR_TEST_TOPOLOGY=processes`, each role is a real `lingr <role>` process, and a test that
//! wants several roles behind one URL gets them behind [`proxy`], a path-routing stand-in for the
//! layer-7 load balancer. The same tests run either way.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use lingr::process::Roles;
use lingr_api::ApiConfig;
use lingr_comet::CometConfig;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{lingr_binary, Client, TestApp, SECRET};

/// Whether roles run as separate processes.
pub fn separate_processes() -> bool {
    std::env::var("LINGR_TEST_TOPOLOGY").is_ok_and(|t| t == "processes")
}

/// Roles started for a test, in-process or as processes.
pub struct Running {
    base: String,
    inner: Inner,
}

enum Inner {
    InProcess {
        token: CancellationToken,
        handle: JoinHandle<anyhow::Result<()>>,
    },
    Processes {
        children: Vec<Child>,
        proxy: Option<(CancellationToken, JoinHandle<()>)>,
    },
}

impl Running {
    /// The base URL every route of these roles answers on.
    pub fn base(&self) -> String {
        self.base.clone()
    }

    /// Shuts down as SIGTERM would, and waits.
    pub async fn stop(self) {
        match self.inner {
            Inner::InProcess { token, handle } => {
                token.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(20), handle).await;
            }
            Inner::Processes { children, proxy } => {
                for mut child in children {
                    if let Some(pid) = child.id() {
                        let _ = Command::new("kill")
                            .args(["-TERM", &pid.to_string()])
                            .status()
                            .await;
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
                }
                stop_proxy(proxy).await;
            }
        }
    }

    /// Kills: every task or process stops where it is, nothing is flushed.
    pub async fn kill(self) {
        match self.inner {
            Inner::InProcess { token, handle } => {
                token.cancel();
                handle.abort();
                let _ = handle.await;
            }
            Inner::Processes { children, proxy } => {
                for mut child in children {
                    let _ = child.kill().await;
                }
                stop_proxy(proxy).await;
            }
        }
    }
}

async fn stop_proxy(proxy: Option<(CancellationToken, JoinHandle<()>)>) {
    if let Some((token, task)) = proxy {
        token.cancel();
        let _ = task.await;
    }
}

/// Starts `roles` in this process.
pub async fn start_in_process(app: &TestApp, roles: Roles) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let backing = lingr::process::Backing {
        nats_url: app.nats_url(),
        nats_auth: Default::default(),
        database: Some(app.database_url.clone()),
        secret: SECRET.as_bytes().to_vec(),
        previous_secret: None,
        retention: app.retention,
        stream_replicas: 1,
        http: Default::default(),
        lifecycle: Default::default(),
    };
    let token = CancellationToken::new();
    let handle = tokio::spawn(lingr::serve_owned(
        backing,
        roles,
        listener.into(),
        token.clone(),
    ));
    let running = Running {
        base: format!("http://{addr}"),
        inner: Inner::InProcess { token, handle },
    };
    app.client.wait_ready(&running.base).await;
    running
}

/// Starts each of `roles` as a `lingr` process, behind a proxy when there are several.
pub async fn start_processes(app: &TestApp, roles: Roles) -> Running {
    let mut children = Vec::new();
    let mut upstreams = Upstreams::default();
    if let Some(api) = &roles.api {
        let (child, base) = spawn_role(app, "api", api_flags(api)).await;
        children.push(child);
        upstreams.api = Some(base);
    }
    if let Some(comet) = &roles.comet {
        let (child, base) = spawn_role(app, "comet", comet_flags(comet)).await;
        children.push(child);
        upstreams.comet = Some(base);
    }
    if roles.history {
        let (child, base) = spawn_role(app, "history", Vec::new()).await;
        children.push(child);
        upstreams.history = Some(base);
    }
    behind_proxy(app, upstreams, children).await
}

/// `children`, serving as `upstreams`, behind one URL: a [`proxy`] routing by path when there
/// are several; waits until they are ready.
pub async fn behind_proxy(
    app: &TestApp,
    mut upstreams: Upstreams,
    children: Vec<Child>,
) -> Running {
    let all: Vec<String> = [&upstreams.api, &upstreams.comet, &upstreams.history]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    if all.len() == 1 {
        return Running {
            base: all[0].clone(),
            inner: Inner::Processes {
                children,
                proxy: None,
            },
        };
    }
    upstreams.all = all;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr: SocketAddr = listener.local_addr().expect("proxy addr");
    let token = CancellationToken::new();
    let app_router = axum::Router::new()
        .fallback(forward)
        .with_state(Arc::new(Proxy {
            upstreams,
            client: reqwest::Client::new(),
        }));
    let stop = token.clone();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app_router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    let running = Running {
        base: format!("http://{addr}"),
        inner: Inner::Processes {
            children,
            proxy: Some((token, task)),
        },
    };
    app.client.wait_ready(&running.base).await;
    running
}

/// Starts `lingr <role> <flags>` on a free port against the test's NATS and database, and
/// waits until it is ready; returns the child and its base URL. The test secret comes through
/// the environment, so a `--secret` among `flags` overrides it.
pub async fn spawn_role(app: &TestApp, role: &str, flags: Vec<String>) -> (Child, String) {
    spawn_role_with(app, role, flags, &[], Stdio::inherit()).await
}

/// [`spawn_role`] with more environment variables (they override the test's), and its
/// standard output (its log) going to `stdout`.
pub async fn spawn_role_with(
    app: &TestApp,
    role: &str,
    flags: Vec<String>,
    env: &[(&str, &str)],
    stdout: Stdio,
) -> (Child, String) {
    let (child, base) = launch_role(app, role, flags, env, stdout);
    Client::new().wait_ready(&base).await;
    (child, base)
}

/// [`spawn_role_with`] without waiting for it to be ready (it may die first, as a test
/// wants).
pub fn launch_role(
    app: &TestApp,
    role: &str,
    flags: Vec<String>,
    env: &[(&str, &str)],
    stdout: Stdio,
) -> (Child, String) {
    // A test that starts a role again where it was passes its address.
    let listen = flags
        .iter()
        .position(|flag| flag == "--listen")
        .and_then(|at| flags.get(at + 1).cloned());
    let (listen, flags) = match listen {
        Some(listen) => (listen, flags),
        None => {
            let listen = format!("127.0.0.1:{}", super::free_port());
            (
                listen.clone(),
                [vec!["--listen".to_owned(), listen], flags].concat(),
            )
        }
    };
    let child = Command::new(lingr_binary())
        .arg(role)
        .args(["--nats", &app.nats_url(), "--database", &app.database_url])
        .args(["--retention", &app.retention.as_secs_f64().to_string()])
        .args(flags)
        .env("LINGR_SECRET", SECRET)
        // No load balancer to wait for; a test that wants a drain delay passes --drain-delay.
        .env("LINGR_DRAIN_DELAY", "0")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(stdout)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn lingr");
    (child, format!("http://{listen}"))
}

fn seconds(d: Duration) -> String {
    d.as_secs_f64().to_string()
}

fn api_flags(c: &ApiConfig) -> Vec<String> {
    [
        ("--presence-timeout", seconds(c.presence_timeout)),
        ("--session-ttl", seconds(c.session_ttl)),
        ("--reap-interval", seconds(c.reap_interval)),
        ("--call-rate", c.call_rate.to_string()),
        ("--call-burst", c.call_burst.to_string()),
        ("--session-rate", c.session_rate.to_string()),
        ("--session-burst", c.session_burst.to_string()),
        (
            "--max-rooms-per-session",
            c.max_rooms_per_session.to_string(),
        ),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect()
}

/// The flags that give a `lingr comet` process the settings `c`.
pub fn comet_flags(c: &CometConfig) -> Vec<String> {
    [
        ("--max-held-observes", c.max_held_observes.to_string()),
        ("--observes-per-session", c.observes_per_session.to_string()),
        ("--observes-per-address", c.observes_per_address.to_string()),
        ("--room-buffer", c.room_buffer.to_string()),
        ("--presence-flush", seconds(c.presence_flush)),
        ("--room-idle", seconds(c.room_idle)),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect()
}

/// The base URL of each role behind a proxy.
#[derive(Default)]
pub struct Upstreams {
    /// Where api listens.
    pub api: Option<String>,
    /// Where comet listens.
    pub comet: Option<String>,
    /// Where history listens.
    pub history: Option<String>,
    all: Vec<String>,
}

impl Upstreams {
    /// Each role at its base URL.
    pub fn new(api: String, comet: String, history: String) -> Self {
        Self {
            api: Some(api),
            comet: Some(comet),
            history: Some(history),
            all: Vec::new(),
        }
    }
}

struct Proxy {
    upstreams: Upstreams,
    client: reqwest::Client,
}

/// Routes as the layer-7 load balancer does: observe to comet, get_messages to history, the
/// rest to api. `/metrics` joins every upstream's; `/readyz` and `/healthz` need all of them.
async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let up = &proxy.upstreams;
    if matches!(path.as_str(), "/metrics" | "/readyz" | "/healthz") {
        let mut text = String::new();
        for base in &up.all {
            match proxy.client.get(format!("{base}{path}")).send().await {
                Ok(r) if r.status().is_success() => {
                    text.push_str(&r.text().await.unwrap_or_default())
                }
                _ => {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("{base} is not ready\n"),
                    )
                        .into_response()
                }
            }
        }
        return text.into_response();
    }
    let upstream = match path.as_str() {
        "/api/room/observe" => up.comet.as_ref(),
        "/api/room/get_messages" => up.history.as_ref(),
        _ => up.api.as_ref(),
    }
    .or_else(|| up.all.first());
    let Some(upstream) = upstream else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or(path.clone(), |pq| pq.as_str().to_owned());
    let method = request.method().clone();
    let headers = request.headers().clone();
    let Ok(body) = axum::body::to_bytes(request.into_body(), usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut outbound = proxy
        .client
        .request(method, format!("{upstream}{path_and_query}"))
        .body(body);
    for (name, value) in &headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            outbound = outbound.header(name, value);
        }
    }
    let Ok(answer) = outbound.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    response
        .body(Body::from(bytes))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}
