//! How long decoding a re-observe's parameters takes: the query string a held observe sends
//! again after every delivery, decoded and merged as a request's parameters are, then looked
//! up as the observe handler does. A benchmark, not a test: it prints figures.
//!
//!     cargo run --release -p lingr-proto --example decode_params

use std::hint::black_box;
use std::time::Instant;

use lingr_proto::params::{decode_urlencoded, merge, Source};

/// A re-observe's query as the web client sends it (session token, signed ticket, counter,
/// timeout).
const QUERY: &[u8] = b"session=s_3f9a0c1d2e4b5a6978877665544332211&ticket=bench0.o_debc470150f022f959a7e9bb5b3ac7b8.0a1b2c3d4e5f6a7b8c9d0e1f.p.dGhpcyBpcyBhIHNpZ25hdHVyZSBvZiB0aGlydHkgdHdvIGJ5dGVz&counter=26&timeout=60";

const DECODES: u32 = 1_000_000;

fn main() {
    let mut found = 0usize;
    for round in 1..=5 {
        let started = Instant::now();
        for _ in 0..DECODES {
            let Ok(pairs) = decode_urlencoded(black_box(QUERY), Source::Query) else {
                continue;
            };
            let Ok(params) = merge([pairs]) else {
                continue;
            };
            for name in ["session", "ticket", "counter", "timeout"] {
                found += params.get(name).map_or(0, |value| value.len());
            }
        }
        let each = started.elapsed().as_secs_f64() * 1e9 / f64::from(DECODES);
        println!(
            "round {round}: {each:.0} ns per decode of {} bytes",
            QUERY.len()
        );
    }
    // Keeps the lookups from being optimised away.
    println!("({found} bytes looked up)");
    println!("reproduce: cargo run --release -p lingr-proto --example decode_params");
}
