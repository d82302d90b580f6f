//! The lock file is written byte for byte as the serde_yaml 0.9 build wrote it, so moving to
//! yaml_serde churns no user's committed lock file. `tests/fixtures/lock_golden/sluice.lock.golden`
//! was written by the last serde_yaml build (`sluice run` on the pipeline beside it). The whole
//! file is compared, nothing masked: a lock file holds no time or duration, only the pipeline's
//! name, keys, config hashes, parameters, relative paths and content hashes, all fixed by the
//! pipeline and its deterministic outputs (two runs in different directories write the same
//! bytes). The parameters include strings a YAML writer must quote (`'hello: world'`, `'1.0'`,
//! `''`, `'a # b'`) and `yes`, which YAML 1.2 leaves plain.

mod common;

use common::*;

const PIPELINE: &str = include_str!("fixtures/lock_golden/sluice.yaml");
const DATA: &str = include_str!("fixtures/lock_golden/data.txt");
const GOLDEN: &[u8] = include_bytes!("fixtures/lock_golden/sluice.lock.golden");
const PROMOTED: &str = include_str!("fixtures/lock_golden/sluice.promoted.yaml");
const PROMOTED_GOLDEN: &[u8] = include_bytes!("fixtures/lock_golden/sluice.promoted.lock.golden");

fn golden_ws() -> Ws {
    let ws = Ws::new();
    ws.write("data.txt", DATA).pipeline(PIPELINE);
    ws
}

fn lock_bytes(ws: &Ws) -> Vec<u8> {
    std::fs::read(ws.path("sluice.lock")).expect("sluice.lock written")
}

#[test]
fn lock_file_is_byte_identical_to_the_serde_yaml_golden() {
    let ws = golden_ws();
    ws.run(&[]).assert_ok();
    let written = lock_bytes(&ws);
    assert!(
        written == GOLDEN,
        "lock file differs from the golden:\n--- written\n{}\n--- golden\n{}",
        String::from_utf8_lossy(&written),
        String::from_utf8_lossy(GOLDEN)
    );
}

#[test]
fn golden_lock_file_is_read_as_up_to_date_and_left_unchanged() {
    // Outputs first, then the old build's lock file in place: the new reader must take every
    // stage of it as up to date, and rewriting it must not change a byte.
    let ws = golden_ws();
    ws.run(&[]).assert_ok();
    ws.write(
        "sluice.lock",
        std::str::from_utf8(GOLDEN).expect("golden is UTF-8"),
    );
    let again = ws.run(&[]);
    again.assert_ok();
    assert!(
        again.started().is_empty(),
        "nothing should run: {:?}",
        again.started()
    );
    assert_eq!(lock_bytes(&ws), GOLDEN);
}

#[test]
fn lock_file_with_a_promotion_matches_its_golden_and_reads_back_unchanged() {
    let ws = golden_ws();
    ws.write("sluice.promoted.yaml", PROMOTED);
    ws.run(&[]).assert_ok();
    let written = lock_bytes(&ws);
    assert!(
        written == PROMOTED_GOLDEN,
        "lock file differs from the golden:\n--- written\n{}\n--- golden\n{}",
        String::from_utf8_lossy(&written),
        String::from_utf8_lossy(PROMOTED_GOLDEN)
    );
    ws.write(
        "sluice.lock",
        std::str::from_utf8(PROMOTED_GOLDEN).expect("golden is UTF-8"),
    );
    let again = ws.run(&[]);
    again.assert_ok();
    assert!(
        again.started().is_empty(),
        "nothing should run: {:?}",
        again.started()
    );
    assert_eq!(lock_bytes(&ws), PROMOTED_GOLDEN);
}
