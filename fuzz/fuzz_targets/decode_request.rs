//! libFuzzer target: every request-decoding function of the HTTP facade on
//! arbitrary bytes. Run with `scripts/fuzz [seconds]`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    subscriber_http::fuzzing::decode_request(data);
});
