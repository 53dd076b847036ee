#![no_main]
//! cargo fuzz target: scalpel::fuzz::gguf_model must never panic, hang or over-allocate.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| scalpel::fuzz::gguf_model(data));
