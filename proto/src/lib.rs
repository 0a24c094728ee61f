//! The Lingr wire contract, shared by every role and by clients' tests.
//!
//! - [`values`]: validated newtypes for what users send (room ids, nicknames, messages, JSONP
//!   callbacks, idempotency ids) and the ids the service mints (sessions, occupants).
//! - [`event`]: the room events that travel through JetStream and reach clients.
//! - [`text`]: which characters nicknames and messages may hold.
//! - [`params`]: decoding a call's parameters from a query string, form or JSON body.
//! - [`jsonp`]: the JSONP script body, escaped for every engine and HTML parser.
//! - [`api`]: the JSON answers of the HTTP API.
//! - [`error`]: the API's error codes and the HTTP status each maps to.
//! - [`records`]: the session and occupant records kept in NATS key-value buckets.
//! - [`subjects`]: NATS stream, subject and bucket names.
//! - [`ticket`]: signed room tickets that any role can check without a network call.
//!
//! Nothing here does I/O.

pub mod api;
pub mod error;
pub mod event;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod jsonp;
pub mod params;
pub mod records;
pub mod subjects;
pub mod text;
pub mod ticket;
pub mod values;

pub use error::ErrorCode;
pub use event::{Event, EventType, ExitReason};
pub use values::{Callback, IdempotentId, MessageText, Nickname, OccupantId, RoomId, SessionToken};
