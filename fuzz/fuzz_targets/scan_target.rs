#![no_main]
// libFuzzer wrapper of sockit::fuzzing::scan_target (see that module for what it checks).
libfuzzer_sys::fuzz_target!(|data: &[u8]| sockit::fuzzing::scan_target(data));
