//! Replays every input kept under `fuzz/regressions/<target>/` (seeds, and any input a fuzzer
//! found that once broke an invariant) through the checks the fuzz targets run.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let data = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        check(&data);
        replayed += 1;
    }
    replayed
}

#[test]
fn request_decoding_regressions_still_hold() {
    let replayed = replay(
        "request_decoding",
        lingr_proto::fuzz_checks::request_decoding,
    );
    assert!(replayed > 0, "the seeds are missing");
}

#[test]
fn ticket_verification_regressions_still_hold() {
    let replayed = replay(
        "ticket_verification",
        lingr_proto::fuzz_checks::ticket_verification,
    );
    assert!(replayed > 0, "the seeds are missing");
}
