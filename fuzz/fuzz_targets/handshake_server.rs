#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mpconn::fuzzing::handshake_server(data));
