//! Lingr's integration tests: one binary, black-box over HTTP against a real nats-server per
//! test, SQLite and PostgreSQL. See `support` for the harness.

mod browser;
mod contract;
mod crashes;
mod guarantees;
mod history;
mod hostile_input;
mod idempotency;
mod lifecycle;
mod limits;
mod nats_setup;
mod outages;
mod presence;
mod processes;
mod races;
mod slow_clients;
mod support;
mod telemetry;
