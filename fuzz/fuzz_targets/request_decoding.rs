//! Arbitrary bytes as a query string, form body or JSON body, then every validator.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lingr_proto::fuzz_checks::request_decoding(data);
});
