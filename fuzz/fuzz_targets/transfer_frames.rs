#![no_main]
// libFuzzer wrapper of sockit::fuzzing::transfer_frames (see that module for what it checks).
libfuzzer_sys::fuzz_target!(|data: &[u8]| sockit::fuzzing::transfer_frames(data));
