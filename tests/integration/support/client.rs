//! A typed HTTP client for the Lingr API, as a third-party client would use it.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

/// One answer: status, headers, raw body and (if it parses) JSON.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: String,
    /// The body as JSON, or `Null` when it is not JSON (JSONP, say).
    pub json: Value,
}

impl Answer {
    /// Asserts `status: ok` and returns the JSON.
    pub fn ok(self) -> Value {
        assert_eq!(
            self.json["status"], "ok",
            "expected ok, got {} {}",
            self.status, self.body
        );
        self.json
    }

    /// Asserts an error with `code` and `status`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (
                self.status,
                self.json["status"].as_str(),
                self.json["code"].as_str()
            ),
            (status, Some("error"), Some(code)),
            "body: {}",
            self.body
        );
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a JSONP answer calling `callback` (status 200, served as script) and returns
    /// the JSON it carries.
    pub fn jsonp(&self, callback: &str) -> Value {
        assert_eq!(self.status, 200, "JSONP is always 200: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/javascript; charset=utf-8"),
            "{}",
            self.body
        );
        let inner = self
            .body
            .strip_prefix(&format!("/**/{callback}("))
            .and_then(|b| b.strip_suffix(");"))
            .unwrap_or_else(|| panic!("not JSONP calling {callback}: {}", self.body));
        serde_json::from_str(inner).expect("JSON inside the JSONP")
    }
}

/// An occupant of a room as a test holds it.
#[derive(Debug, Clone)]
pub struct Member {
    /// The session token.
    pub session: String,
    /// The room ticket.
    pub ticket: String,
    /// The occupant id.
    pub occupant_id: String,
    /// The counter `room/enter` returned.
    pub counter: u64,
    /// The whole enter answer.
    pub entered: Value,
}

impl Member {
    /// The ids of the occupants its enter answer listed.
    pub fn listed_occupants(&self) -> Vec<String> {
        self.entered["room"]["occupants"]
            .as_array()
            .expect("occupants")
            .iter()
            .filter_map(|o| o["id"].as_str().map(str::to_owned))
            .collect()
    }
}

/// The client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Client {
    /// A client whose requests give up after 90 s.
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(90))
                .build()
                .expect("http client"),
        }
    }

    /// Waits until `base/readyz` answers 200.
    pub async fn wait_ready(&self, base: &str) {
        let url = format!("{base}/readyz");
        super::eventually(
            "the server to be ready",
            Duration::from_secs(30),
            || async {
                match self.http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => Some(()),
                    _ => None,
                }
            },
        )
        .await;
    }

    async fn answer(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("body");
        let json = serde_json::from_str(&body).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            json,
        }
    }

    /// GET `base/api/path?params`.
    pub async fn get(&self, base: &str, path: &str, params: &[(&str, &str)]) -> Answer {
        let response = self
            .http
            .get(format!("{base}/api/{path}"))
            .query(params)
            .send()
            .await
            .expect("GET");
        Self::answer(response).await
    }

    /// GET `base/api/path?query` with the query sent exactly as given (already encoded).
    pub async fn get_raw(&self, base: &str, path: &str, query: &str) -> Answer {
        let response = self
            .http
            .get(format!("{base}/api/{path}?{query}"))
            .send()
            .await
            .expect("GET");
        Self::answer(response).await
    }

    /// POST `base/api/path` with a JSON body.
    pub async fn post_json(&self, base: &str, path: &str, body: &Value) -> Answer {
        let response = self
            .http
            .post(format!("{base}/api/{path}"))
            .json(body)
            .send()
            .await
            .expect("POST json");
        Self::answer(response).await
    }

    /// POST `base/api/path` with a form body.
    pub async fn post_form(&self, base: &str, path: &str, params: &[(&str, &str)]) -> Answer {
        let response = self
            .http
            .post(format!("{base}/api/{path}"))
            .form(params)
            .send()
            .await
            .expect("POST form");
        Self::answer(response).await
    }

    /// POST raw bytes with a content type.
    pub async fn post_raw(
        &self,
        base: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let response = self
            .http
            .post(format!("{base}/api/{path}"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST raw");
        Self::answer(response).await
    }

    /// Any request, for CORS and method checks.
    pub async fn request(&self, request: reqwest::RequestBuilder) -> Answer {
        Self::answer(request.send().await.expect("request")).await
    }

    /// The underlying reqwest client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A new session.
    pub async fn session(&self, base: &str, nickname: Option<&str>) -> String {
        let params: Vec<(&str, &str)> = nickname.map(|n| ("nickname", n)).into_iter().collect();
        let json = self.get(base, "session/create", &params).await.ok();
        json["session"].as_str().expect("session").to_owned()
    }

    /// Enters `room` with `session`.
    pub async fn enter_with(
        &self,
        base: &str,
        session: &str,
        room: &str,
        nickname: Option<&str>,
    ) -> Member {
        let mut params = vec![("session", session), ("room", room)];
        if let Some(nickname) = nickname {
            params.push(("nickname", nickname));
        }
        let entered = self.get(base, "room/enter", &params).await.ok();
        Member {
            session: session.to_owned(),
            ticket: entered["ticket"].as_str().expect("ticket").to_owned(),
            occupant_id: entered["occupant_id"]
                .as_str()
                .expect("occupant_id")
                .to_owned(),
            counter: entered["counter"].as_u64().expect("counter"),
            entered,
        }
    }

    /// A new session that enters `room` as `nickname`.
    pub async fn join(&self, base: &str, room: &str, nickname: &str) -> Member {
        let session = self.session(base, Some(nickname)).await;
        self.enter_with(base, &session, room, None).await
    }

    /// Says `text`; returns the answer.
    pub async fn say(&self, base: &str, member: &Member, text: &str) -> Answer {
        self.get(
            base,
            "room/say",
            &[
                ("session", &member.session),
                ("ticket", &member.ticket),
                ("message", text),
            ],
        )
        .await
    }

    /// Says `text` and returns the stored event's counter.
    pub async fn say_ok(&self, base: &str, member: &Member, text: &str) -> u64 {
        self.say(base, member, text).await.ok()["counter"]
            .as_u64()
            .expect("counter")
    }

    /// Observes after `counter`, holding at most `timeout` seconds.
    pub async fn observe(&self, base: &str, member: &Member, counter: u64, timeout: u64) -> Answer {
        let (counter, timeout) = (counter.to_string(), timeout.to_string());
        self.get(
            base,
            "room/observe",
            &[
                ("session", &member.session),
                ("ticket", &member.ticket),
                ("counter", &counter),
                ("timeout", &timeout),
            ],
        )
        .await
    }

    /// Keeps observing from `after`, as a client does, until `count` events have come; fails
    /// if an observe times out first.
    pub async fn observe_events(
        &self,
        base: &str,
        member: &Member,
        after: u64,
        count: usize,
    ) -> Vec<Value> {
        let (mut seen, mut from) = (Vec::new(), after);
        while seen.len() < count {
            let answer = self.observe(base, member, from, 5).await.ok();
            let got = events(&answer);
            assert!(
                !got.is_empty(),
                "an observe timed out after {} of {count} events: {seen:?}",
                seen.len()
            );
            seen.extend(got);
            from = answer["counter"].as_u64().expect("counter");
        }
        seen
    }

    /// A series' value from a server's `/metrics`, if it has one.
    pub async fn metric(&self, base: &str, name: &str) -> Option<u64> {
        let text = self
            .request(self.http().get(format!("{base}/metrics")))
            .await
            .body;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits until the server's `/metrics` shows `count` held observes.
    pub async fn wait_held(&self, base: &str, count: usize) {
        let wanted = format!("lingr_comet_held_observes {count}\n");
        super::eventually("observes to be held", Duration::from_secs(10), || async {
            let metrics = self
                .request(self.http().get(format!("{base}/metrics")))
                .await
                .body;
            metrics.contains(&wanted).then_some(())
        })
        .await;
    }

    /// `room/get_messages` with extra parameters.
    pub async fn messages(&self, base: &str, room: &str, extra: &[(&str, &str)]) -> Answer {
        let mut params = vec![("room", room)];
        params.extend_from_slice(extra);
        self.get(base, "room/get_messages", &params).await
    }
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

/// The events of an observe answer.
pub fn events(json: &Value) -> Vec<Value> {
    json["events"].as_array().cloned().unwrap_or_default()
}

/// The counters of a list of events.
pub fn counters(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| e["counter"].as_u64())
        .collect()
}
