#![no_main]
//! cargo fuzz target: scalpel::fuzz::tokenizer_json must never panic, hang or over-allocate.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| scalpel::fuzz::tokenizer_json(data));
