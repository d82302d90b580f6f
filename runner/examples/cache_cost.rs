//! What storing and restoring one large output costs through `LocalStore`, which copies (by
//! reflink where the file system can share extents, else `copy_file_range`), against the hard
//! links sluice used before (replayed here with the same system calls): medians of rounds.
//!
//! ```text
//! cargo run --release -p sluice-runner --example cache_cost -- DIR [MIB] [ROUNDS]
//! ```
//!
//! `DIR` should be on the file system under test; the example writes `MIB` MiB (1024 by
//! default) of pseudo-random bytes there and removes nothing else. The blob is verified once,
//! untimed, after it is two seconds old, so each timed restore costs what a later run's does: a
//! `stat` for verification when the blob is unchanged, then the copy or link. The output is
//! deleted before each timed restore, as when a restore brings back a missing output. With hard
//! links that deletion changes the blob's change time too (it is the same inode), so the timed
//! hard-link restore includes the full hash that verification then needs, as it did in sluice.

use sluice_runner::cache::{CacheStore, LocalStore, OutputRecord, StageRecord, RECORD_FORMAT};
use sluice_runner::hash::Hasher;
use sluice_runner::paths::WorkPath;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(args.get(1).expect("usage: cache_cost DIR [MIB] [ROUNDS]"));
    let mib: usize = args.get(2).map_or(1024, |s| s.parse().expect("MIB"));
    let rounds: usize = args.get(3).map_or(3, |s| s.parse().expect("ROUNDS"));
    fs::create_dir_all(dir.join("out")).unwrap();
    let root = fs::canonicalize(&dir).unwrap();
    let out = root.join("out/big.bin");
    write_random(&out, mib);
    let hasher = Hasher::default();
    let hash = hasher.hash_path(&out).unwrap().unwrap().hash;
    let path = WorkPath::parse("out/big.bin", &root).unwrap();
    let record = StageRecord {
        format: RECORD_FORMAT,
        stage: "big".into(),
        key: hash,
        outputs: BTreeMap::from([("o".to_string(), OutputRecord::new(path, hash, None))]),
    };
    let hex = hash.hex();
    let mut times: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for round in 0..rounds {
        let cache = root.join(format!("cache-{round}"));
        let store = LocalStore::new(cache.clone());
        let blob = cache.join("objects").join(&hex[..2]).join(&hex[2..]);

        // A run hashes its outputs just before it stores them.
        hasher.hash_path(&out).unwrap();
        let t = Instant::now();
        store.store(&root, &record, &hasher).unwrap();
        times.entry("copy: store").or_default().push(t.elapsed());
        settle(&hasher, &blob);
        fs::remove_file(&out).unwrap();
        let t = Instant::now();
        store.restore(&root, &record, &hasher).unwrap();
        times.entry("copy: restore").or_default().push(t.elapsed());

        fs::remove_dir_all(&cache).unwrap();
        // For scale: one sequential in-kernel copy of the same file (`std::fs::copy`).
        let plain = root.join("out/plain.copy");
        let t = Instant::now();
        fs::copy(&out, &plain).unwrap();
        times.entry("std::fs::copy").or_default().push(t.elapsed());
        fs::remove_file(&plain).unwrap();

        let t = Instant::now();
        link_store(&out, &blob);
        times
            .entry("hard link: store")
            .or_default()
            .push(t.elapsed());
        settle(&hasher, &blob);
        fs::remove_file(&out).unwrap();
        let t = Instant::now();
        link_restore(&hasher, &blob, &out);
        times
            .entry("hard link: restore")
            .or_default()
            .push(t.elapsed());
        // The output and the blob are one file now; give the output its own inode back.
        fs::remove_dir_all(&cache).unwrap();
        let fresh = root.join("out/big.copy");
        fs::copy(&out, &fresh).unwrap();
        fs::set_permissions(&fresh, fs::Permissions::from_mode(0o644)).unwrap();
        fs::rename(&fresh, &out).unwrap();
    }
    println!("{mib} MiB, {rounds} rounds, {}", root.display());
    for (what, mut ts) in times {
        ts.sort();
        let all: Vec<String> = ts.iter().map(|t| format!("{:.1}", ms(*t))).collect();
        println!(
            "{what:<20} median {:>8.1} ms   (all: {})",
            ms(ts[ts.len() / 2]),
            all.join(", ")
        );
    }
}

fn ms(t: Duration) -> f64 {
    t.as_secs_f64() * 1000.0
}

/// Waits until the blob is two seconds old and verifies it once, so that later checks cost a
/// `stat` as in a later run.
fn settle(hasher: &Hasher, blob: &Path) {
    std::thread::sleep(Duration::from_millis(2100));
    let meta = fs::metadata(blob).unwrap();
    hasher.hash_file_settled(blob, &meta).unwrap();
}

/// sluice's former `put_blob`: a hard link, made read-only, renamed into place.
fn link_store(src: &Path, blob: &Path) {
    fs::create_dir_all(blob.parent().unwrap()).unwrap();
    let tmp = blob.with_extension("tmp");
    fs::hard_link(src, &tmp).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o444)).unwrap();
    fs::rename(&tmp, blob).unwrap();
}

/// sluice's former restore of a missing output: verify the blob through the memo, hard-link it
/// next to the output, rename it into place.
fn link_restore(hasher: &Hasher, blob: &Path, out: &Path) {
    let meta = fs::metadata(blob).unwrap();
    hasher.hash_file_settled(blob, &meta).unwrap();
    let tmp = out.with_extension("tmp");
    fs::hard_link(blob, &tmp).unwrap();
    fs::rename(&tmp, out).unwrap();
}

/// `mib` MiB from a xorshift generator: incompressible, cheap to make.
fn write_random(path: &Path, mib: usize) {
    let mut f = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
    f.flush().unwrap();
}
