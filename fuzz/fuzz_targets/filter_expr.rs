//! `clean`'s `filter:` expressions: parsed, and evaluated on a small table when they parse.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = sluice_stages::fuzzing::filter_expr(text);
});
