//! Arbitrary text as a room ticket: only a ticket's one signed spelling may verify.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lingr_proto::fuzz_checks::ticket_verification(data);
});
