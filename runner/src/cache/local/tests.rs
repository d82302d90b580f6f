use super::*;
use crate::cache::RECORD_FORMAT;
use crate::paths::WorkPath;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: LocalStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();
    let store = LocalStore::without_inline(root.join(".sluice/cache"));
    Fixture {
        _dir: dir,
        root,
        store,
    }
}

/// Writes `content` to `rel` and files it as stage `stage`'s only output.
fn produce(f: &Fixture, stage: &str, rel: &str, content: &[u8]) -> StageRecord {
    let abs = f.root.join(rel);
    fs::create_dir_all(abs.parent().unwrap()).unwrap();
    fs::write(&abs, content).unwrap();
    let hash = ContentHash::of(content);
    let record = StageRecord {
        format: RECORD_FORMAT,
        stage: stage.into(),
        key: ContentHash::of(stage.as_bytes()),
        outputs: BTreeMap::from([(
            "o".to_string(),
            OutputRecord::new(WorkPath::parse(rel, &f.root).unwrap(), hash, None),
        )]),
    };
    f.store.store(&f.root, &record, &Hasher::default()).unwrap();
    record
}

#[test]
fn storing_over_a_damaged_blob_replaces_it() {
    let f = fixture();
    let rec = produce(&f, "s", "out/a", b"fresh output");
    let blob = f.store.blob_path(&ContentHash::of(b"fresh output"));
    fs::remove_file(&blob).unwrap();
    fs::write(&blob, b"fresh").unwrap();
    let hasher = Hasher::default();
    assert!(matches!(
        f.store.verify(&rec, &hasher),
        Err(RestoreError::Corrupt(_))
    ));
    f.store.store(&f.root, &rec, &hasher).unwrap();
    assert_eq!(fs::read(&blob).unwrap(), b"fresh output");
    f.store.verify(&rec, &hasher).unwrap();
}

#[test]
fn an_output_that_changed_after_it_was_hashed_is_not_stored() {
    let f = fixture();
    let rec = produce(&f, "s", "out/a", b"as hashed");
    fs::remove_dir_all(f.root.join(".sluice")).unwrap();
    fs::write(f.root.join("out/a"), b"rewritten").unwrap();
    let err = f
        .store
        .store(&f.root, &rec, &Hasher::default())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("changed while it was being stored"),
        "{err}"
    );
    assert!(!f.store.blob_path(&ContentHash::of(b"as hashed")).exists());
    assert!(f.store.lookup(&rec.key).is_none());
}

/// Restoring skips the `mkdir` and the removal when the containment check saw the directory
/// there and nothing in the way; whatever is in the way, a file or a directory, still goes.
#[test]
fn a_restore_replaces_whatever_is_in_the_way_and_makes_missing_directories() {
    let f = inline_fixture();
    let rec = produce(&f, "s", "out/deep/a", b"restored");
    let rec = f.store.lookup(&rec.key).unwrap();
    let dest = f.root.join("out/deep/a");
    let hasher = Hasher::default();
    /// What a test puts in the output's way before restoring it.
    type Obstacle = fn(&Path);
    let ways: [(&str, Obstacle); 4] = [
        ("an edited file", |p| fs::write(p, b"edited").unwrap()),
        ("a directory", |p| {
            fs::remove_file(p).unwrap();
            fs::create_dir_all(p.join("inner")).unwrap();
            fs::write(p.join("inner/x"), b"x").unwrap();
        }),
        ("nothing", |p| atomic::remove_path(p).unwrap()),
        ("no directory either", |p| {
            fs::remove_dir_all(p.parent().unwrap().parent().unwrap()).unwrap()
        }),
    ];
    for (what, make) in ways {
        make(&dest);
        f.store.restore(&f.root, &rec, &hasher).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"restored", "over {what}");
    }
}

#[test]
fn a_restored_output_is_a_writable_file_of_its_own() {
    let f = fixture();
    let rec = produce(&f, "s", "out/a", b"content");
    let out = f.root.join("out/a");
    fs::remove_file(&out).unwrap();
    f.store.restore(&f.root, &rec, &Hasher::default()).unwrap();
    let blob = f.store.blob_path(&ContentHash::of(b"content"));
    let (o, b) = (fs::metadata(&out).unwrap(), fs::metadata(&blob).unwrap());
    assert_ne!(o.ino(), b.ino());
    assert_eq!(b.mode() & 0o222, 0, "blobs are read-only");
    assert_ne!(o.mode() & 0o200, 0, "restored outputs are not");
    fs::write(&out, b"edited").unwrap();
    assert_eq!(fs::read(&blob).unwrap(), b"content");
}

#[test]
fn a_record_is_found_by_its_key_only() {
    let f = fixture();
    let rec = produce(&f, "s", "out/a", b"content");
    assert_eq!(f.store.lookup(&rec.key), Some(rec));
    assert_eq!(f.store.lookup(&ContentHash::of(b"another key")), None);
}

#[test]
fn a_directory_output_round_trips_with_its_tree() {
    let f = fixture();
    let dir = f.root.join("out/d");
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("a.txt"), b"first").unwrap();
    fs::write(dir.join("sub/b.bin"), b"second").unwrap();
    let script = dir.join("run.sh");
    fs::write(&script, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let hasher = Hasher::default();
    let h = hasher.hash_path(&dir).unwrap().unwrap();
    assert!(h.tree.is_some());
    let record = StageRecord {
        format: RECORD_FORMAT,
        stage: "s".into(),
        key: ContentHash::of(b"s"),
        outputs: BTreeMap::from([(
            "o".to_string(),
            OutputRecord::new(
                WorkPath::parse("out/d", &f.root).unwrap(),
                h.hash,
                h.tree.clone(),
            ),
        )]),
    };
    f.store.store(&f.root, &record, &hasher).unwrap();
    fs::remove_dir_all(&dir).unwrap();
    f.store
        .restore(&f.root, &record, &Hasher::default())
        .unwrap();
    assert_eq!(fs::read(dir.join("a.txt")).unwrap(), b"first");
    assert_eq!(fs::read(dir.join("sub/b.bin")).unwrap(), b"second");
    assert_ne!(fs::metadata(&script).unwrap().mode() & 0o100, 0);
    let again = Hasher::default().hash_path(&dir).unwrap().unwrap();
    assert_eq!(again.hash, h.hash);
}

#[test]
fn restoring_from_a_damaged_blob_fails_as_corrupt_and_leaves_no_output() {
    let f = fixture();
    let rec = produce(&f, "s", "out/a", b"the real output");
    let out = f.root.join("out/a");
    fs::remove_file(&out).unwrap();
    let blob = f.store.blob_path(&ContentHash::of(b"the real output"));
    fs::remove_file(&blob).unwrap();
    fs::write(&blob, b"the real outpuT").unwrap();
    let err = f
        .store
        .restore(&f.root, &rec, &Hasher::default())
        .unwrap_err();
    assert!(matches!(err, RestoreError::Corrupt(_)), "{err}");
    assert!(!out.exists(), "a damaged blob was put in place");
}

#[test]
fn gc_verify_drops_every_record_that_names_a_damaged_blob() {
    let f = fixture();
    let a = produce(&f, "a", "out/a", b"shared");
    let b = produce(&f, "b", "out/b", b"shared");
    let c = produce(&f, "c", "out/c", b"sound");
    let keep: HashSet<ContentHash> = [a.key, b.key, c.key].into();
    let blob = f.store.blob_path(&ContentHash::of(b"shared"));
    fs::remove_file(&blob).unwrap();
    fs::write(&blob, b"SHARED").unwrap();

    let plain = f.store.gc(&keep, GcOptions::default()).unwrap();
    assert_eq!((plain.records_removed, plain.blobs_removed), (0, 0));
    let opts = GcOptions {
        dry_run: true,
        verify: true,
    };
    let dry = f.store.gc(&keep, opts).unwrap();
    assert_eq!((dry.blobs_verified, dry.blobs_corrupt), (2, 1));
    assert_eq!((dry.records_corrupt, dry.records_removed), (2, 2));
    assert!(f.store.lookup(&a.key).is_some() && blob.exists());

    let opts = GcOptions {
        dry_run: false,
        verify: true,
    };
    let done = f.store.gc(&keep, opts).unwrap();
    assert_eq!((done.records_removed, done.blobs_removed), (2, 1));
    assert!(f.store.lookup(&a.key).is_none() && f.store.lookup(&b.key).is_none());
    assert!(f.store.lookup(&c.key).is_some() && !blob.exists());
    f.store.verify(&c, &Hasher::default()).unwrap();
}

/// `fixture`, with outputs of up to `INLINE_MAX` bytes kept in their records.
fn inline_fixture() -> Fixture {
    let f = fixture();
    Fixture {
        store: LocalStore::new(f.root.join(".sluice/cache")),
        ..f
    }
}

fn blob_count(f: &Fixture) -> usize {
    let objects = f.root.join(".sluice/cache/objects");
    fs::read_dir(objects)
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| fs::read_dir(d.path()).map(|rd| rd.count()).unwrap_or(0))
        .sum()
}

#[test]
fn a_small_output_travels_in_its_record_and_comes_back_with_its_mode() {
    let f = inline_fixture();
    let small = vec![0xffu8; INLINE_MAX as usize];
    let rec = produce(&f, "s", "out/a", &small);
    let script = f.root.join("out/a");
    assert_eq!(blob_count(&f), 0, "no blob for a small output");
    let found = f.store.lookup(&rec.key).unwrap();
    let inline = found.outputs["o"].inline.as_ref().expect("kept inline");
    assert!(
        inline.base64.is_some(),
        "bytes that are not UTF-8 go as base64"
    );
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let exec = produce(&f, "t", "out/a", &small);
    fs::remove_file(&script).unwrap();
    let found = f.store.lookup(&exec.key).unwrap();
    f.store
        .restore(&f.root, &found, &Hasher::default())
        .unwrap();
    assert_eq!(fs::read(&script).unwrap(), small);
    assert_ne!(fs::metadata(&script).unwrap().mode() & 0o100, 0);
    // One byte more and it is a blob again.
    let big = produce(&f, "u", "out/b", &vec![b'x'; INLINE_MAX as usize + 1]);
    assert_eq!(blob_count(&f), 1);
    assert!(f.store.lookup(&big.key).unwrap().outputs["o"]
        .inline
        .is_none());
}

#[test]
fn damaged_inline_content_is_refused_on_restore_and_dropped_by_gc_verify() {
    let f = inline_fixture();
    let rec = produce(&f, "s", "out/a", b"0.93");
    let log = f.root.join(".sluice/cache/records.log");
    let text = fs::read_to_string(&log).unwrap();
    fs::write(&log, text.replace("\"text\":\"0.93\"", "\"text\":\"0.99\"")).unwrap();
    let store = LocalStore::new(f.root.join(".sluice/cache"));
    let found = store.lookup(&rec.key).unwrap();
    fs::remove_file(f.root.join("out/a")).unwrap();
    let err = store
        .restore(&f.root, &found, &Hasher::default())
        .unwrap_err();
    assert!(matches!(&err, RestoreError::Corrupt(why) if why.contains("does not match")));
    assert!(!f.root.join("out/a").exists(), "nothing half-restored");
    let opts = GcOptions {
        dry_run: false,
        verify: true,
    };
    let done = store.gc(&HashSet::from([rec.key]), opts).unwrap();
    assert_eq!((done.records_corrupt, done.records_kept), (1, 0));
    assert!(store.lookup(&rec.key).is_none());
}

#[test]
fn a_small_output_that_changed_after_it_was_hashed_is_not_stored() {
    let f = inline_fixture();
    let rec = produce(&f, "s", "out/a", b"as hashed");
    fs::write(f.root.join("out/a"), b"rewritten").unwrap();
    let mut other = rec.clone();
    other.key = ContentHash::of(b"another key");
    let err = f
        .store
        .store(&f.root, &other, &Hasher::default())
        .unwrap_err();
    assert!(err.to_string().contains("changed while"), "{err}");
    assert!(f.store.lookup(&other.key).is_none());
}
