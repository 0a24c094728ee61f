//! Request parameters and API answers, the same for every endpoint of every role.
//!
//! [`Params`] reads parameters from the query string and, for POST, from a JSON or form body of
//! at most 16 KiB that must arrive within the body timeout; decoding is strict (see
//! [`lingr_proto::params`]). A valid `callback` in the query turns every answer into JSONP,
//! errors about the body included: `/**/CB(JSON);`, served as `application/javascript` with
//! status 200 even for errors, since a script tag cannot read a status. An invalid callback is
//! refused as plain JSON and never echoed.

use std::borrow::Cow;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use lingr_proto::params::{
    decode_json, decode_urlencoded, is_json_media_type, merge, Merged, Pairs, Source,
};
use lingr_proto::values::Invalid;
use lingr_proto::{Callback, ErrorCode};
use serde::Serialize;

use crate::server::ClientAddr;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// How an answer is wrapped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Format {
    /// Plain JSON with a fitting HTTP status.
    #[default]
    Json,
    /// JSONP with the validated callback.
    Jsonp(Callback),
}

/// An error answer: its code fixes the HTTP status; `detail` is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The API error code.
    pub code: ErrorCode,
    /// Human text; never carries internal error text or user input.
    pub detail: Cow<'static, str>,
}

impl ApiError {
    /// An error with a code and a fixed detail.
    pub fn new(code: ErrorCode, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    /// A backing service failed: logs the cause once, here, and answers 503 without it.
    pub fn unavailable(doing: &str, cause: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "{doing} failed");
        Self::new(
            ErrorCode::Unavailable,
            "a backing service is unavailable; retry shortly",
        )
    }

    /// A fault of ours: logs the cause once, here, and answers 500 without it.
    pub fn internal(doing: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{doing} failed");
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// A required parameter is absent.
    pub fn missing(name: &'static str) -> Self {
        Self::new(
            ErrorCode::MissingParameter,
            format!("parameter '{name}' is required"),
        )
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        Self::new(invalid.code, invalid.detail)
    }
}

/// The parameters of one API call and the format its answer takes.
#[derive(Debug, Default)]
pub struct Params {
    values: Merged,
    /// JSON, or JSONP when a valid callback was given.
    pub format: Format,
    /// The client's address, as the server resolved it.
    pub client: Option<ClientAddr>,
}

impl Params {
    /// A parameter, if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).filter(|v| !v.is_empty())
    }

    /// A required parameter.
    ///
    /// # Errors
    /// `missing_parameter` when absent or empty.
    pub fn required(&self, name: &'static str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::missing(name))
    }

    /// An optional unsigned integer parameter, spelled with digits only.
    ///
    /// # Errors
    /// `invalid_parameter` when given but not 1-20 ASCII digits that fit in 64 bits.
    pub fn u64(&self, name: &'static str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|raw| {
                lingr_proto::values::parse_decimal(raw).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidParameter,
                        format!("'{name}' must be a non-negative integer"),
                    )
                })
            })
            .transpose()
    }

    /// The `limit` parameter of a paging call: `default` when absent, else 1 to `max`.
    ///
    /// # Errors
    /// `invalid_parameter` when given outside that range.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.u64("limit")? {
            None => Ok(default),
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidParameter,
                        format!("limit must be 1-{max}"),
                    )
                }),
        }
    }

    /// Answers with `value`'s fields after `"status":"ok"`, or with the error.
    pub fn reply<T: Serialize>(&self, result: Result<T, ApiError>) -> Reply {
        match result.and_then(|value| {
            serde_json::to_vec(&value)
                .map_err(|err| ApiError::internal("serializing an answer", err))
        }) {
            Ok(object) => Reply::ok_object(self.format.clone(), &object),
            Err(error) => Reply::error(self.format.clone(), &error),
        }
    }
}

/// How long a request body may take to arrive, unless the server says otherwise with a
/// [`BodyTimeout`] extension.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The body timeout a server puts on each request it serves.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// The answer format a request asks for in its query string: JSONP for a valid `callback`,
/// JSON otherwise (an invalid one is refused where parameters are read, never here).
pub fn format_of(uri: &Uri) -> Format {
    let Some(query) = uri.query() else {
        return Format::Json;
    };
    decode_urlencoded(query.as_bytes(), Source::Query)
        .ok()
        .and_then(|pairs| {
            let mut callbacks = pairs.iter().filter(|(name, _)| *name == "callback");
            match (callbacks.next(), callbacks.next()) {
                (Some((_, raw)), None) => Callback::parse(raw).ok(),
                _ => None,
            }
        })
        .map_or(Format::Json, Format::Jsonp)
}

fn refuse(format: &Format, error: impl Into<ApiError>) -> Reply {
    Reply::error(format.clone(), &error.into())
}

fn too_large() -> ApiError {
    ApiError::new(
        ErrorCode::BodyTooLarge,
        "request body must be at most 16384 bytes",
    )
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = Reply;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Reply> {
        let client = req.extensions().get::<ClientAddr>().copied();
        let body_timeout = req
            .extensions()
            .get::<BodyTimeout>()
            .map_or(DEFAULT_BODY_TIMEOUT, |t| t.0);
        let query = decode_urlencoded(req.uri().query().unwrap_or("").as_bytes(), Source::Query)
            .map_err(|invalid| refuse(&Format::Json, invalid))?;
        let callback = query
            .iter()
            .find(|(name, _)| *name == "callback")
            .map(|(_, raw)| Callback::parse(raw))
            .transpose()
            .map_err(|invalid| refuse(&Format::Json, invalid))?;
        // From here on, errors reach a script tag too: answer them in its format.
        let format = callback.map_or(Format::Json, Format::Jsonp);
        let body = if req.method() == Method::POST {
            Some(
                read_body(req, body_timeout)
                    .await
                    .map_err(|e| refuse(&format, e))?,
            )
        } else {
            None
        };
        let values = merge(std::iter::once(query).chain(body))
            .map_err(|invalid| refuse(&format, invalid))?;
        let format = match values.get("callback").filter(|_| format == Format::Json) {
            // A callback given only in the body (a POST from a script is unusual, but valid).
            Some(raw) if !raw.is_empty() => Format::Jsonp(
                Callback::parse(raw).map_err(|invalid| refuse(&Format::Json, invalid))?,
            ),
            _ => format,
        };
        Ok(Self {
            values,
            format,
            client,
        })
    }
}

/// Reads a POST body of at most 16 KiB within `limit` and decodes it as JSON or form data.
async fn read_body(req: Request, limit: Duration) -> Result<Pairs, ApiError> {
    let headers = req.headers();
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared_len.is_some_and(|len| len > MAX_DRAINED_BYTES) {
        return Err(too_large());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_media_type);
    let body = match tokio::time::timeout(limit, collect_or_drain(req.into_body())).await {
        Ok(Ok(Some(body))) => body,
        Ok(Ok(None)) => return Err(too_large()),
        Ok(Err(_)) => {
            return Err(ApiError::new(
                ErrorCode::InvalidBody,
                "the request body could not be read",
            ))
        }
        Err(_) => {
            return Err(ApiError::new(
                ErrorCode::RequestTimeout,
                "the request body did not arrive in time",
            ))
        }
    };
    let decoded = if is_json {
        decode_json(&body)
    } else {
        decode_urlencoded(&body, Source::Form)
    };
    decoded.map_err(ApiError::from)
}

/// The most of a refused body that is read and thrown away before the 413 is sent.
///
/// Closing a socket with unread data makes the kernel reset the connection, and a reset can
/// reach the client (or a proxy in front, which then answers 502) before the 413 does. Reading
/// a body a little too large to the end avoids that and keeps the connection usable; a body
/// larger than this is refused at once, since a client sending one is not owed the bandwidth.
const MAX_DRAINED_BYTES: usize = 1024 * 1024;

/// The body if it fits in [`MAX_BODY_BYTES`]; `None` if it does not, once it has been read to
/// its end or to [`MAX_DRAINED_BYTES`], whichever comes first.
async fn collect_or_drain(body: Body) -> Result<Option<Bytes>, axum::Error> {
    use futures::StreamExt;
    let mut chunks = body.into_data_stream();
    let mut kept = BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        seen = seen.saturating_add(chunk.len());
        if seen <= MAX_BODY_BYTES {
            kept.extend_from_slice(&chunk);
        } else if seen > MAX_DRAINED_BYTES {
            break;
        }
    }
    Ok((seen <= MAX_BODY_BYTES).then(|| kept.freeze()))
}

/// A finished answer, JSON or JSONP.
#[derive(Debug)]
pub struct Reply {
    status: StatusCode,
    format: Format,
    /// The JSON, in parts sent one after another as they are (most answers have one).
    json: Vec<Bytes>,
}

impl Reply {
    /// A success answer from a serialized JSON object: `{"status":"ok",<its fields>}`.
    pub fn ok_object(format: Format, object: &[u8]) -> Self {
        Self {
            status: StatusCode::OK,
            format,
            json: vec![with_status_ok(object)],
        }
    }

    /// A success answer from a JSON object serialized in `parts`, the first holding at least
    /// its opening brace: `{"status":"ok",<its fields>}`. Only the first part is copied, so a
    /// large part (a room's backfilled events, say) is sent as the bytes it is.
    pub fn ok_object_parts(format: Format, mut parts: Vec<Bytes>) -> Self {
        match parts.first_mut() {
            Some(first) => *first = with_status_ok(first),
            None => parts.push(with_status_ok(b"{}")),
        }
        Self {
            status: StatusCode::OK,
            format,
            json: parts,
        }
    }

    /// An error answer.
    pub fn error(format: Format, error: &ApiError) -> Self {
        #[derive(Serialize)]
        struct Body<'a> {
            status: &'static str,
            code: ErrorCode,
            detail: &'a str,
        }
        let json = serde_json::to_vec(&Body {
            status: "error",
            code: error.code,
            detail: &error.detail,
        })
        .map_or_else(
            |_| Bytes::from_static(b"{\"status\":\"error\",\"code\":\"internal\"}"),
            Bytes::from,
        );
        let status = StatusCode::from_u16(error.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self {
            status,
            format,
            json: vec![json],
        }
    }
}

/// `object` (a whole object, or the start of one up to at least its brace) with
/// `"status":"ok"` as its first field.
fn with_status_ok(object: &[u8]) -> Bytes {
    let mut json = BytesMut::with_capacity(object.len() + 16);
    json.put_slice(b"{\"status\":\"ok\"");
    match object.strip_prefix(b"{").map(<[u8]>::trim_ascii_start) {
        Some(b"}") | None => json.put_slice(b"}"),
        // Only the brace: the fields follow in the next parts.
        Some(b"") => json.put_slice(b","),
        Some(_) => {
            json.put_slice(b",");
            json.put_slice(&object[1..]);
        }
    }
    json.freeze()
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let (status, content_type, parts) = match self.format {
            Format::Json => (self.status, "application/json", self.json),
            // JSONP escapes what it wraps, so its parts are copied into one.
            Format::Jsonp(callback) => (
                StatusCode::OK,
                "application/javascript; charset=utf-8",
                vec![lingr_proto::jsonp::wrap(&callback, &self.json.concat())],
            ),
        };
        let body = match <[Bytes; 1]>::try_from(parts) {
            Ok([one]) => Body::from(one),
            Err(parts) => Body::new(Parts::new(parts)),
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// A body sent as the parts it was made of, one frame each, with its length known up front
/// (so it goes with `Content-Length`, not chunked). hyper queues the frames and writes them
/// with one `writev`, without copying them (past 64 KiB too: `vendor/hyper/LINGR-PATCH.md`).
struct Parts {
    parts: std::vec::IntoIter<Bytes>,
    remaining: u64,
}

impl Parts {
    fn new(parts: Vec<Bytes>) -> Self {
        let remaining = parts.iter().map(|part| part.len() as u64).sum();
        Self {
            parts: parts.into_iter(),
            remaining,
        }
    }
}

impl http_body::Body for Parts {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.parts.find(|part| !part.is_empty());
        if let Some(part) = &next {
            self.remaining -= part.len() as u64;
        }
        std::task::Poll::Ready(next.map(|part| Ok(http_body::Frame::data(part))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(reply: Reply) -> Vec<u8> {
        let body = axum::body::to_bytes(reply.into_response().into_body(), usize::MAX)
            .await
            .expect("body");
        body.to_vec()
    }

    #[test]
    fn ok_object_puts_status_first() {
        let reply = Reply::ok_object(Format::Json, br#"{"session":"s"}"#);
        assert_eq!(reply.json.concat(), br#"{"status":"ok","session":"s"}"#);
        let empty = Reply::ok_object(Format::Json, b"{}");
        assert_eq!(empty.json.concat(), br#"{"status":"ok"}"#);
    }

    #[tokio::test]
    async fn an_object_in_parts_is_sent_whole_copying_only_its_first_part() {
        let parts = || {
            vec![
                Bytes::from_static(b"{"),
                Bytes::from_static(br#""events":[1,2"#),
                Bytes::new(),
                Bytes::from_static(b"]}"),
            ]
        };
        let json = Reply::ok_object_parts(Format::Json, parts());
        assert_eq!(json.json.len(), 4, "parts after the first are not copied");
        assert_eq!(body_of(json).await, br#"{"status":"ok","events":[1,2]}"#);
        let callback = Callback::parse("cb").expect("valid callback");
        let script = body_of(Reply::ok_object_parts(Format::Jsonp(callback), parts())).await;
        assert_eq!(script, br#"/**/cb({"status":"ok","events":[1,2]});"#);
    }

    #[test]
    fn the_parts_body_knows_its_length_and_skips_empty_parts() {
        use http_body::Body as _;
        let body = Parts::new(vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"c"),
        ]);
        assert_eq!(body.size_hint().exact(), Some(3));
        assert!(!body.is_end_stream());
    }
}
