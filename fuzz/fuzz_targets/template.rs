//! The `${{ }}` template parser every string of a pipeline goes through.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = sluice_stages::fuzzing::template(text);
});
