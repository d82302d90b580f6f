//! YAML → validated pipeline, every built-in kind's `check` included, as `sluice run` loads a
//! pipeline file. Seeds: `cargo fuzz run pipeline_load fuzz/corpus/pipeline_load pipelines`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The workspace the input is written into: one per process, canonical as `sluice` makes it.
fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sluice-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary workspace");
        std::fs::canonicalize(dir).expect("a canonical workspace")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = sluice_stages::fuzzing::pipeline(data, root());
});
