//! Traces, logs and metrics. On real `lingr` processes: one say is one trace, holding the api's
//! request and publish, comet's delivery to the observe it woke and history's write, each
//! under its role's `service.name`, exported over OTLP/HTTP to a receiver the test runs; and
//! neither a session token nor a ticket appears in any span or log line of the run. And the
//! latency histograms and outcome counters at `/metrics` count what happened.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message as _;
use serde_json::Value;
use tokio::process::Child;

use crate::support::client::{events, Member};
use crate::support::topology::spawn_role_with;
use crate::support::{
    api_only, comet_only, eventually, fast_api, history_only, sigterm, Db, TestApp,
};
use lingr_comet::CometConfig;

/// A span as the receiver got it: ids in hex, attributes as text.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: Vec<(String, String)>,
}

/// An OTLP/HTTP receiver of traces on a free port.
struct Receiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(Arc::clone(&spans));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app.into_make_service()).await });
        Self { endpoint, spans }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().expect("spans").clone()
    }
}

async fn receive(State(spans): State<Arc<Mutex<Vec<Received>>>>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
    let mut received = spans.lock().expect("spans");
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            received.push(Received {
                service: service.clone(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                attributes: span.attributes.iter().map(attribute).collect(),
            });
        }
    }
    ""
}

fn attribute(kv: &KeyValue) -> (String, String) {
    (kv.key.clone(), text(kv.value.as_ref()))
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A trace id no other test run shares.
fn fresh_trace_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos();
    format!("{:032x}", nanos ^ 0x5eed_0000_0000_0000_0000_0000_0000_0001)
}

/// A role exporting to `receiver`, logging everything at debug level into `log`.
async fn traced_role(
    app: &TestApp,
    role: &str,
    receiver: &Receiver,
    log: &std::path::Path,
) -> (Child, String) {
    let file = std::fs::File::create(log).expect("log file");
    spawn_role_with(
        app,
        role,
        Vec::new(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("RUST_LOG", "debug"),
        ],
        Stdio::from(file),
    )
    .await
}

/// Whether `span` is `ancestor` or below it in `trace`.
fn descends(trace: &[Received], span: &Received, ancestor: &Received) -> bool {
    let mut at = Some(span);
    while let Some(span) = at {
        if span.span_id == ancestor.span_id {
            return true;
        }
        at = trace.iter().find(|s| s.span_id == span.parent_span_id);
    }
    false
}

/// The one span of `service` named `name` in the trace.
fn one<'a>(trace: &'a [Received], service: &str, name: &str) -> Option<&'a Received> {
    let mut found = trace
        .iter()
        .filter(|s| s.service == service && s.name == name);
    let span = found.next()?;
    assert!(
        found.next().is_none(),
        "one {name} span of {service}: {trace:#?}"
    );
    Some(span)
}

#[tokio::test]
async fn one_say_is_one_trace_across_api_comet_and_history_and_no_secret_is_logged() {
    let receiver = Receiver::start().await;
    let app = TestApp::new(Db::Default).await;
    let logs = tempfile::tempdir().expect("log dir");
    let mut processes = Vec::new();
    let mut bases = Vec::new();
    for role in ["api", "comet", "history"] {
        let (child, base) = traced_role(
            &app,
            role,
            &receiver,
            &logs.path().join(format!("{role}.log")),
        )
        .await;
        processes.push(child);
        bases.push(base);
    }
    let (api, comet, history) = (&bases[0], &bases[1], &bases[2]);
    let c = &app.client;
    let alice = c.join(api, "traced", "alice").await;
    let bob = c.join(api, "traced", "bob").await;

    // Bob's observe is held on comet (over JSONP: its session and ticket are in the query).
    let held = {
        let (c, comet, bob) = (c.clone(), comet.clone(), bob.clone());
        tokio::spawn(async move { observe_jsonp(&c, &comet, &bob).await })
    };
    c.wait_held(comet, 1).await;
    let trace_id = fresh_trace_id();
    let caller_span = "00f067aa0ba902b7";
    let said = c
        .request(
            c.http()
                .get(format!("{api}/api/room/say"))
                .query(&[
                    ("session", alice.session.as_str()),
                    ("ticket", alice.ticket.as_str()),
                    ("message", "traced"),
                ])
                .header("traceparent", format!("00-{trace_id}-{caller_span}-01")),
        )
        .await
        .ok();
    let counter = said["counter"].as_u64().expect("counter");
    let delivered = held.await.expect("observe task");
    assert_eq!(
        events(&delivered)
            .iter()
            .map(|e| e["counter"].as_u64())
            .collect::<Vec<_>>(),
        vec![Some(counter)],
        "bob's held observe got the say"
    );

    let trace = eventually(
        "the say's spans from all three roles",
        Duration::from_secs(20),
        || {
            let trace: Vec<Received> = receiver
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            async move {
                let complete = one(&trace, "lingr-api", "GET /api/room/say").is_some()
                    && one(&trace, "lingr-api", "publish").is_some()
                    && one(&trace, "lingr-comet", "comet deliver").is_some()
                    && one(&trace, "lingr-history", "history write").is_some();
                complete.then_some(trace)
            }
        },
    )
    .await;
    let request = one(&trace, "lingr-api", "GET /api/room/say").expect("request span");
    let publish = one(&trace, "lingr-api", "publish").expect("publish span");
    let deliver = one(&trace, "lingr-comet", "comet deliver").expect("deliver span");
    let write = one(&trace, "lingr-history", "history write").expect("write span");
    assert_eq!(
        request.parent_span_id, caller_span,
        "continues the caller's trace"
    );
    assert!(
        descends(&trace, publish, request),
        "the publish is within the request: {trace:#?}"
    );
    assert_eq!(deliver.parent_span_id, publish.span_id);
    assert_eq!(write.parent_span_id, publish.span_id);
    for (key, value) in [
        ("http.route", "/api/room/say"),
        ("http.request.method", "GET"),
        ("http.response.status_code", "200"),
    ] {
        assert!(
            request
                .attributes
                .iter()
                .any(|(k, v)| k == key && v == value),
            "{key}={value} on {request:#?}"
        );
    }
    assert!(
        deliver
            .attributes
            .iter()
            .any(|(k, v)| k == "counter" && *v == counter.to_string()),
        "{deliver:#?}"
    );

    // More calls that carry secrets: an exit and a session destroyed, then a clean stop.
    c.get(
        api,
        "room/exit",
        &[("session", &bob.session), ("ticket", &bob.ticket)],
    )
    .await
    .ok();
    c.get(api, "session/destroy", &[("session", &alice.session)])
        .await
        .ok();
    c.messages(history, "traced", &[]).await.ok();
    for child in &mut processes {
        sigterm(child).await;
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }

    let secrets = [&alice.session, &alice.ticket, &bob.session, &bob.ticket];
    let mut logged = String::new();
    for role in ["api", "comet", "history"] {
        logged += &std::fs::read_to_string(logs.path().join(format!("{role}.log"))).expect("log");
    }
    for route in [
        "/api/room/say",
        "/api/room/observe",
        "/api/room/get_messages",
    ] {
        assert!(
            logged
                .lines()
                .any(|line| line.contains("answered") && line.contains(route)),
            "the access log has {route}: {logged}"
        );
    }
    for secret in secrets {
        assert!(!logged.contains(secret.as_str()), "a secret in the logs");
        for span in receiver.spans() {
            assert!(
                span.attributes
                    .iter()
                    .all(|(_, v)| !v.contains(secret.as_str())),
                "a secret in {span:#?}"
            );
        }
    }
    app.cleanup().await;
}

/// A JSONP observe after `member`'s counter, as a script tag makes it.
async fn observe_jsonp(c: &crate::support::Client, base: &str, member: &Member) -> Value {
    let counter = member.counter.to_string();
    c.get(
        base,
        "room/observe",
        &[
            ("session", &member.session),
            ("ticket", &member.ticket),
            ("counter", &counter),
            ("timeout", "30"),
            ("callback", "cb"),
        ],
    )
    .await
    .jsonp("cb")
}

/// A series of `base`'s `/metrics`, zero while absent.
async fn series(c: &crate::support::Client, base: &str, name: &str) -> u64 {
    c.metric(base, name).await.unwrap_or(0)
}

#[tokio::test]
async fn latency_histograms_and_outcome_counters_follow_the_traffic() {
    let app = TestApp::new(Db::Default).await;
    let api = app.start(api_only(fast_api())).await;
    let comet = app.start(comet_only(CometConfig::default())).await;
    let history = app.start(history_only()).await;
    let (api_base, comet_base, history_base) = (api.base(), comet.base(), history.base());
    let c = &app.client;
    let alice = c.join(&api_base, "measured", "alice").await;
    let bob = c.join(&api_base, "measured", "bob").await;
    let held = {
        let (c, base, bob) = (c.clone(), comet_base.clone(), bob.clone());
        tokio::spawn(async move { c.observe(&base, &bob, bob.counter, 30).await })
    };
    c.wait_held(&comet_base, 1).await;
    let said = c.say_ok(&api_base, &alice, "measured").await;
    let answer = held.await.expect("observe task").ok();
    assert_eq!(crate::support::client::counters(&events(&answer)), [said]);

    assert_eq!(series(c, &api_base, "lingr_api_say_seconds_count").await, 1);
    assert_eq!(
        series(
            c,
            &api_base,
            "lingr_http_request_seconds_count{route=\"/api/room/say\",status=\"200\"}"
        )
        .await,
        1
    );
    assert_eq!(
        series(c, &comet_base, "lingr_comet_fanout_seconds_count").await,
        1,
        "one held observe answered with one live event"
    );
    assert_eq!(
        series(
            c,
            &comet_base,
            "lingr_comet_observes_total{outcome=\"events\"}"
        )
        .await,
        1
    );
    // Answered by the direct route, ahead of the router: still labelled with its route.
    assert_eq!(
        series(
            c,
            &comet_base,
            "lingr_http_request_seconds_count{route=\"/api/room/observe\",status=\"200\"}"
        )
        .await,
        1
    );
    // Two enters and a say, each committed once (redeliveries aside).
    eventually(
        "history to commit the three events",
        Duration::from_secs(10),
        || async {
            (series(c, &history_base, "lingr_history_lag_seconds_count").await >= 3).then_some(())
        },
    )
    .await;
    assert_eq!(
        series(c, &history_base, "lingr_history_consumer_pending").await,
        0
    );

    // Prometheus asks for OpenMetrics, and gets it.
    let scraped = c
        .request(c.http().get(format!("{api_base}/metrics")).header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        ))
        .await;
    assert!(scraped
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/openmetrics-text")));
    assert!(scraped.body.ends_with("# EOF\n"), "{}", scraped.body);

    // A publish JetStream cannot store: 503, and counted.
    assert_eq!(
        series(c, &api_base, "lingr_api_publish_errors_total").await,
        0
    );
    app.jetstream()
        .await
        .delete_stream("ROOMS")
        .await
        .expect("delete the stream");
    c.say(&api_base, &alice, "lost")
        .await
        .assert_error(503, "unavailable");
    assert_eq!(
        series(c, &api_base, "lingr_api_publish_errors_total").await,
        1
    );
    assert_eq!(
        series(
            c,
            &api_base,
            "lingr_http_request_seconds_count{route=\"/api/room/say\",status=\"503\"}"
        )
        .await,
        1
    );
    history.stop().await;
    comet.stop().await;
    api.stop().await;
    app.cleanup().await;
}

#[tokio::test]
async fn otlp_over_grpc_is_chosen_by_the_protocol_variable() {
    use tokio::io::AsyncReadExt as _;
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", collector.local_addr().expect("address"));
    let app = TestApp::new(Db::Default).await;
    let (mut api, base) = spawn_role_with(
        &app,
        "api",
        Vec::new(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        Stdio::null(),
    )
    .await;
    // Any request makes a span; the batch goes out within the schedule delay.
    app.client.session(&base, None).await;
    let (mut socket, _) = tokio::time::timeout(Duration::from_secs(20), collector.accept())
        .await
        .expect("the exporter connects")
        .expect("accept");
    let mut preface = [0u8; 24];
    socket.read_exact(&mut preface).await.expect("a preface");
    assert_eq!(
        &preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "gRPC speaks HTTP/2"
    );
    // Its flush at exit would wait for this silent collector: no need to watch that here.
    api.kill().await.expect("kill the api");
    app.cleanup().await;
}
