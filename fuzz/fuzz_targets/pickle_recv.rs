#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mpconn::fuzzing::pickle_recv(data));
