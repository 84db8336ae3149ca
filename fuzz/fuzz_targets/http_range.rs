#![no_main]
// libFuzzer wrapper of sockit::fuzzing::http_range (see that module for what it checks).
libfuzzer_sys::fuzz_target!(|data: &[u8]| sockit::fuzzing::http_range(data));
