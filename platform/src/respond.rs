//! Request parameters and API answers, the same for every endpoint of every role.
//!
//! [`Params`] reads parameters from the query string and, for POST, from a JSON or form body of
//! at most 16 KiB. A valid `callback` turns the answer into JSONP: `/**/CB(JSON);`, served as
//! `application/javascript` with status 200 even for errors, since a script tag cannot read a
//! status. An invalid callback is refused as plain JSON and never echoed.

use std::borrow::Cow;
use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use lingr_proto::values::Invalid;
use lingr_proto::{Callback, ErrorCode};
use serde::Serialize;

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
    values: HashMap<String, String>,
    /// JSON, or JSONP when a valid callback was given.
    pub format: Format,
    /// The W3C `traceparent` the request came with, if any.
    pub traceparent: Option<String>,
}

impl Params {
    /// Parameters from pairs, answered as JSON (for tests and internal callers).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            format: Format::Json,
            traceparent: None,
        }
    }

    /// A parameter, if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A required parameter.
    ///
    /// # Errors
    /// `missing_parameter` when absent or empty.
    pub fn required(&self, name: &'static str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::missing(name))
    }

    /// An optional unsigned integer parameter.
    ///
    /// # Errors
    /// `invalid_parameter` when given but not a non-negative integer.
    pub fn u64(&self, name: &'static str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|raw| {
                raw.trim().parse::<u64>().map_err(|_| {
                    ApiError::new(
                        ErrorCode::InvalidParameter,
                        format!("'{name}' must be a non-negative integer"),
                    )
                })
            })
            .transpose()
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

fn invalid_body(detail: &'static str) -> Reply {
    Reply::error(Format::Json, &ApiError::new(ErrorCode::InvalidBody, detail))
}

fn too_large() -> Reply {
    Reply::error(
        Format::Json,
        &ApiError::new(
            ErrorCode::BodyTooLarge,
            "request body must be at most 16384 bytes",
        ),
    )
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = Reply;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Reply> {
        let traceparent = req
            .headers()
            .get(crate::telemetry::TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut values: HashMap<String, String> = match req.uri().query() {
            Some(query) => serde_urlencoded::from_str(query)
                .map_err(|_| invalid_body("the query string is not valid URL encoding"))?,
            None => HashMap::new(),
        };
        if req.method() == Method::POST {
            let declared_len = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            if declared_len.is_some_and(|len| len > MAX_BODY_BYTES) {
                return Err(too_large());
            }
            let is_json = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().starts_with("application/json"));
            let body = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
                .await
                .map_err(|_| too_large())?;
            if is_json {
                values.extend(json_params(&body)?);
            } else if !body.is_empty() {
                let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body)
                    .map_err(|_| invalid_body("the body is not valid form data"))?;
                values.extend(form);
            }
        }
        let format = match values.get("callback").filter(|v| !v.is_empty()) {
            Some(raw) => Format::Jsonp(
                Callback::parse(raw)
                    .map_err(|invalid| Reply::error(Format::Json, &ApiError::from(invalid)))?,
            ),
            None => Format::Json,
        };
        Ok(Self {
            values,
            format,
            traceparent,
        })
    }
}

/// Flattens a JSON object body into string parameters.
fn json_params(body: &[u8]) -> Result<HashMap<String, String>, Reply> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(HashMap::new());
    }
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|_| invalid_body("the body is not a JSON object"))?;
    let mut params = HashMap::with_capacity(object.len());
    for (name, value) in object {
        let text = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                return Err(invalid_body(
                    "JSON body values must be strings, numbers or booleans",
                ))
            }
        };
        params.insert(name, text);
    }
    Ok(params)
}

/// A finished answer, JSON or JSONP.
#[derive(Debug)]
pub struct Reply {
    status: StatusCode,
    format: Format,
    json: Bytes,
}

impl Reply {
    /// A success answer from a serialized JSON object: `{"status":"ok",<its fields>}`.
    pub fn ok_object(format: Format, object: &[u8]) -> Self {
        let mut json = BytesMut::with_capacity(object.len() + 16);
        json.put_slice(b"{\"status\":\"ok\"");
        match object.strip_prefix(b"{").map(<[u8]>::trim_ascii_start) {
            Some(b"}") | None => json.put_slice(b"}"),
            Some(_) => {
                json.put_slice(b",");
                json.put_slice(&object[1..]);
            }
        }
        Self {
            status: StatusCode::OK,
            format,
            json: json.freeze(),
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
            json,
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let (status, content_type, body) = match self.format {
            Format::Json => (self.status, "application/json", self.json),
            Format::Jsonp(callback) => {
                let mut body =
                    BytesMut::with_capacity(self.json.len() + callback.as_str().len() + 8);
                body.put_slice(b"/**/");
                body.put_slice(callback.as_str().as_bytes());
                body.put_slice(b"(");
                body.put_slice(&self.json);
                body.put_slice(b");");
                (
                    StatusCode::OK,
                    "application/javascript; charset=utf-8",
                    body.freeze(),
                )
            }
        };
        let mut response = Response::new(Body::from(body));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_object_puts_status_first() {
        let reply = Reply::ok_object(Format::Json, br#"{"session":"s"}"#);
        assert_eq!(&reply.json[..], br#"{"status":"ok","session":"s"}"#);
        let empty = Reply::ok_object(Format::Json, b"{}");
        assert_eq!(&empty.json[..], br#"{"status":"ok"}"#);
    }

    #[test]
    fn json_bodies_flatten_scalars_and_refuse_nesting() {
        let params = json_params(br#"{"a":"x","n":5,"b":true,"z":null}"#).expect("valid");
        assert_eq!(params.get("a").map(String::as_str), Some("x"));
        assert_eq!(params.get("n").map(String::as_str), Some("5"));
        assert!(!params.contains_key("z"));
        assert!(json_params(br#"{"a":[1]}"#).is_err());
        assert!(json_params(b"[1]").is_err());
    }
}
