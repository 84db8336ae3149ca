#![no_main]
// libFuzzer wrapper of sockit::fuzzing::host_name (see that module for what it checks).
libfuzzer_sys::fuzz_target!(|data: &[u8]| sockit::fuzzing::host_name(data));
