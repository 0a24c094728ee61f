//! The API's error codes: each is the `code` of an error answer and fixes its HTTP status.

use serde::{Deserialize, Serialize};

/// An error code of the HTTP API, serialized in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: a required parameter is absent.
    MissingParameter,
    /// 400: a parameter is malformed (a counter that is not a number, say).
    InvalidParameter,
    /// 400: the body is not valid JSON or form data.
    InvalidBody,
    /// 400: the room id breaks `^[A-Za-z0-9_-]{1,64}$`.
    InvalidRoom,
    /// 400: the nickname breaks its limits.
    InvalidNickname,
    /// 400: the message breaks its limits.
    InvalidMessage,
    /// 400: the JSONP callback breaks its pattern (answered as JSON, never as script).
    InvalidCallback,
    /// 401: the session is unknown, destroyed or expired.
    InvalidSession,
    /// 401: the ticket is forged, belongs to another session, or its occupant has left.
    InvalidTicket,
    /// 403: an anonymous observer's ticket was used to speak.
    ObserverOnly,
    /// 404: no such room.
    RoomNotFound,
    /// 404: no such endpoint.
    NotFound,
    /// 405: the endpoint takes GET or POST only.
    MethodNotAllowed,
    /// 410: the observe counter is older than the stream's first event.
    CounterExpired,
    /// 408: the request body did not arrive within the body timeout.
    RequestTimeout,
    /// 409: an `idempotent_id` already names a different call (other parameters, another
    /// room, or an enter that has since ended).
    IdempotencyConflict,
    /// 413: the request body is over 16 KiB.
    BodyTooLarge,
    /// 429: more than 10 calls a second (burst 20) from one session, or more sessions created
    /// from one address than `--session-rate` allows.
    RateLimited,
    /// 429: a fifth held observe from one session, or more from one address than a replica
    /// allows.
    TooManyObserves,
    /// 429: a session tried to be in more rooms than allowed at once.
    TooManyRooms,
    /// 503: the replica holds as many observes as it is configured to.
    Overloaded,
    /// 503: the replica is shutting down; retry on another.
    Draining,
    /// 503: a backing service (NATS, the database) did not answer.
    Unavailable,
    /// 500: a fault of ours; the detail says nothing more.
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is answered with (outside JSONP).
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            MissingParameter | InvalidParameter | InvalidBody | InvalidRoom | InvalidNickname
            | InvalidMessage | InvalidCallback => 400,
            InvalidSession | InvalidTicket => 401,
            ObserverOnly => 403,
            RoomNotFound | NotFound => 404,
            MethodNotAllowed => 405,
            RequestTimeout => 408,
            IdempotencyConflict => 409,
            CounterExpired => 410,
            BodyTooLarge => 413,
            RateLimited | TooManyObserves | TooManyRooms => 429,
            Internal => 500,
            Overloaded | Draining | Unavailable => 503,
        }
    }

    /// The snake_case code as sent in `code`.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MissingParameter => "missing_parameter",
            InvalidParameter => "invalid_parameter",
            InvalidBody => "invalid_body",
            InvalidRoom => "invalid_room",
            InvalidNickname => "invalid_nickname",
            InvalidMessage => "invalid_message",
            InvalidCallback => "invalid_callback",
            InvalidSession => "invalid_session",
            InvalidTicket => "invalid_ticket",
            ObserverOnly => "observer_only",
            RoomNotFound => "room_not_found",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            RequestTimeout => "request_timeout",
            IdempotencyConflict => "idempotency_conflict",
            CounterExpired => "counter_expired",
            BodyTooLarge => "body_too_large",
            RateLimited => "rate_limited",
            TooManyObserves => "too_many_observes",
            TooManyRooms => "too_many_rooms",
            Overloaded => "overloaded",
            Draining => "draining",
            Unavailable => "unavailable",
            Internal => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_name_matches_as_str() {
        for code in [
            ErrorCode::TooManyObserves,
            ErrorCode::CounterExpired,
            ErrorCode::InvalidBody,
        ] {
            let json = serde_json::to_string(&code).expect("serializes");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
