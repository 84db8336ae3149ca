#![no_main]
// libFuzzer wrapper of sockit::fuzzing::ip_list (see that module for what it checks).
libfuzzer_sys::fuzz_target!(|data: &[u8]| sockit::fuzzing::ip_list(data));
