#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_targets::bep41_options(data));
