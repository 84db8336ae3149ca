#![no_main]
// libFuzzer wrapper of sockit::fuzzing::chat_websocket (see that module for what it checks).
libfuzzer_sys::fuzz_target!(|data: &[u8]| sockit::fuzzing::chat_websocket(data));
