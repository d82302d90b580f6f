//! The cache's integrity, through the real binary: outputs and cache objects never share an
//! inode, a damaged object (or a small output's content damaged in its record) is detected,
//! rerun and repaired, `gc --verify` drops what fails its hash, and temporaries left by killed
//! runs are cleared by the next run and by `gc`.

mod common;

use common::*;
use sluice_runner::hash::ContentHash;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

const PIPELINE: &str = r#"
name: cache
stages:
  a:
    run: cat ${{ inputs.src }} > ${{ outputs.o }}; echo hello >> ${{ outputs.o }}
    inputs: {src: data.txt}
    outputs: {o: out/a.txt}
  d:
    run: mkdir -p ${{ outputs.d }}/sub && cp ${{ inputs.src }} ${{ outputs.d }}/sub/x && echo y > ${{ outputs.d }}/y
    inputs: {src: data.txt}
    outputs: {d: out/d}
"#;

/// The input: over the size (4 KiB) up to which an output is kept in its cache record, so
/// that `a`'s output and `d`'s file get blobs of their own.
fn data() -> String {
    "abc\n".repeat(1100)
}

/// What stage `a` writes.
fn a_output() -> Vec<u8> {
    format!("{}hello\n", data()).into_bytes()
}

fn workspace() -> Ws {
    let ws = Ws::new();
    ws.write("data.txt", &data()).pipeline(PIPELINE);
    ws
}

/// Where the cache keeps the object for `content`.
fn object(ws: &Ws, content: &[u8]) -> PathBuf {
    let hex = ContentHash::of(content).hex();
    ws.path(&format!(
        ".sluice/cache/objects/{}/{}",
        &hex[..2],
        &hex[2..]
    ))
}

/// Writes into `path` in place, as a process holding it open would (root ignores the mode; the
/// `chmod` makes the test independent of who runs it).
fn write_in_place(path: &PathBuf, bytes: &[u8], truncate: bool) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(truncate)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

fn warnings(r: &Run) -> Vec<String> {
    r.events()
        .into_iter()
        .filter(|e| e["event"] == "warning")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The pid of a process that has exited: what a killed run's temporaries name.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    child.id()
}

#[test]
fn a_damaged_object_is_detected_rerun_and_repaired() {
    // Truncated, and overwritten with the same number of bytes (size unchanged).
    let same_size = a_output().to_ascii_uppercase();
    let damages: [(&[u8], bool); 2] = [(b"abc", true), (&same_size, false)];
    for (bytes, truncate) in damages {
        let ws = workspace();
        ws.run(&[]).assert_ok();
        let obj = object(&ws, &a_output());
        assert_eq!(std::fs::read(&obj).unwrap(), a_output());
        write_in_place(&obj, bytes, truncate);
        std::fs::remove_file(ws.path("out/a.txt")).unwrap();

        let r = ws.run(&["a"]);
        r.assert_ok();
        assert_eq!(
            r.started(),
            ["a"],
            "the damaged object must not be restored"
        );
        let warned = warnings(&r);
        assert!(
            warned.iter().any(|w| w.contains("corrupt cache entry")),
            "{warned:?}"
        );
        assert_eq!(ws.read("out/a.txt").as_bytes(), a_output());
        assert_eq!(
            std::fs::read(&obj).unwrap(),
            a_output(),
            "the fresh output replaces the damaged object"
        );

        std::fs::remove_file(ws.path("out/a.txt")).unwrap();
        let again = ws.run(&["a"]);
        again.assert_ok();
        assert_eq!(again.outcomes()["a"], "restored");
        assert!(warnings(&again).is_empty(), "{:?}", warnings(&again));
        assert_eq!(ws.read("out/a.txt").as_bytes(), a_output());
    }
}

#[test]
fn status_does_not_promise_a_restore_from_a_damaged_object() {
    let ws = workspace();
    ws.run(&[]).assert_ok();
    std::fs::remove_file(ws.path("out/a.txt")).unwrap();
    let before = ws.sluice(&["status", "a"]);
    assert!(before.stdout.contains("will restore"), "{}", before.stdout);
    let same_size = a_output().to_ascii_uppercase();
    write_in_place(&object(&ws, &a_output()), &same_size, false);
    let after = ws.sluice(&["status", "a"]);
    assert!(!after.stdout.contains("will restore"), "{}", after.stdout);
    assert!(
        after.stdout.contains("cache entry is corrupt"),
        "{}",
        after.stdout
    );
}

#[test]
fn gc_verify_drops_a_damaged_object_and_the_entry_naming_it() {
    let ws = workspace();
    ws.run(&[]).assert_ok();
    let obj = object(&ws, &a_output());
    let objects_before = count_files(&ws.path(".sluice/cache/objects"));
    let plain = ws.sluice(&["gc"]);
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    assert!(
        plain
            .stdout
            .starts_with("removed 0 cache entries and 0 blobs"),
        "{}",
        plain.stdout
    );
    // Same size, so only reading the content can tell.
    write_in_place(&obj, &a_output().to_ascii_uppercase(), false);

    let dry = ws.sluice(&["gc", "--verify", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.contains("would remove 1 cache entry and 1 blob"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("1 corrupt"), "{}", dry.stdout);
    assert!(obj.exists(), "a dry run removes nothing");

    let gc = ws.sluice(&["gc", "--verify"]);
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    assert!(
        gc.stdout.contains("removed 1 cache entry and 1 blob"),
        "{}",
        gc.stdout
    );
    assert!(
        gc.stdout.contains(&format!(
            "verified {objects_before} blobs: 1 corrupt; 1 entry named a corrupt or missing blob"
        )),
        "{}",
        gc.stdout
    );
    assert!(!obj.exists());
    assert_eq!(
        count_files(&ws.path(".sluice/cache/objects")),
        objects_before - 1
    );

    // The other stage's entry survived; `a` runs again once its output is gone.
    std::fs::remove_dir_all(ws.path("out")).unwrap();
    let r = ws.run(&[]);
    r.assert_ok();
    assert_eq!(r.started(), ["a"]);
    assert_eq!(r.outcomes()["d"], "restored");
    assert_eq!(std::fs::read(&obj).unwrap(), a_output());
    let clean = ws.sluice(&["gc", "--verify"]);
    assert!(clean.stdout.contains(": 0 corrupt"), "{}", clean.stdout);
}

fn count_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            n += count_files(&e.path());
        } else {
            n += 1;
        }
    }
    n
}

#[test]
fn outputs_never_share_an_inode_with_the_cache() {
    let ws = workspace();
    ws.run(&[]).assert_ok();
    let obj = object(&ws, &a_output());
    let x = object(&ws, data().as_bytes());
    let ino = |p: &PathBuf| std::fs::metadata(p).unwrap().ino();
    assert_ne!(ino(&ws.path("out/a.txt")), ino(&obj), "stored by copy");
    assert_ne!(ino(&ws.path("out/d/sub/x")), ino(&x), "stored by copy");

    std::fs::remove_dir_all(ws.path("out")).unwrap();
    let r = ws.run(&[]);
    r.assert_ok();
    assert_eq!(r.outcomes()["a"], "restored");
    assert_eq!(r.outcomes()["d"], "restored");
    assert_ne!(ino(&ws.path("out/a.txt")), ino(&obj), "restored by copy");
    assert_ne!(ino(&ws.path("out/d/sub/x")), ino(&x), "restored by copy");

    // A process writing into the restored outputs in place reaches only the workspace.
    write_in_place(&ws.path("out/a.txt"), b"changed in place\n", true);
    write_in_place(&ws.path("out/d/sub/x"), b"changed too\n", true);
    assert_eq!(std::fs::read(&obj).unwrap(), a_output());
    assert_eq!(std::fs::read(&x).unwrap(), data().as_bytes());
    let r = ws.run(&[]);
    r.assert_ok();
    assert!(r.started().is_empty(), "{:?}", r.started());
    assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));
    assert_eq!(ws.read("out/a.txt").as_bytes(), a_output());
    assert_eq!(ws.read("out/d/sub/x"), data());
}

#[test]
fn temporaries_of_a_killed_restore_are_removed_by_the_next_run() {
    let ws = workspace();
    ws.run(&[]).assert_ok();
    let dead = dead_pid();
    // What a run killed while restoring `out/d` and saving the memo leaves, and its scratch space.
    let restore = ws.path(&format!("out/.d.sluice-tmp-{dead}-0"));
    std::fs::create_dir_all(restore.join("sub")).unwrap();
    std::fs::write(restore.join("sub/x"), "abc\n").unwrap();
    let file = ws.path(&format!("out/.a.txt.sluice-tmp-{dead}-1"));
    std::fs::write(&file, "abc").unwrap();
    let memo = ws.path(&format!(".sluice/.hashes.bin.sluice-tmp-{dead}-2"));
    std::fs::write(&memo, "{").unwrap();
    let scratch = ws.path(&format!(".sluice/tmp/20260101T000000.000Z-{dead}/d"));
    std::fs::create_dir_all(&scratch).unwrap();
    // A temporary of a process that is still running (this test) must stay.
    let live = ws.path(&format!("out/.a.txt.sluice-tmp-{}-0", std::process::id()));
    std::fs::write(&live, "abc").unwrap();

    let r = ws.run(&[]);
    r.assert_ok();
    assert!(r.started().is_empty(), "{:?}", r.started());
    for gone in [&restore, &file, &memo, scratch.parent().unwrap()] {
        assert!(!gone.exists(), "{} survived the next run", gone.display());
    }
    assert!(live.exists());
    assert!(!ws.path(".sluice/tmp").exists() || count_files(&ws.path(".sluice/tmp")) == 0);
}

#[test]
fn gc_removes_temporaries_of_killed_runs() {
    let ws = workspace();
    ws.run(&[]).assert_ok();
    let dead = dead_pid();
    let restore = ws.path(&format!("out/.d.sluice-tmp-{dead}-0"));
    std::fs::create_dir_all(&restore).unwrap();
    let hex = ContentHash::of(&a_output()).hex();
    let blob = ws.path(&format!(
        ".sluice/cache/objects/{}/.{}.sluice-tmp-{dead}-4",
        &hex[..2],
        &hex[2..]
    ));
    std::fs::write(&blob, "abc").unwrap();

    let dry = ws.sluice(&["gc", "--dry-run"]);
    assert!(
        dry.stdout
            .contains("would remove 2 temporary files left by killed runs"),
        "{}",
        dry.stdout
    );
    assert!(restore.exists() && blob.exists());
    let gc = ws.sluice(&["gc"]);
    assert!(
        gc.stdout
            .contains("removed 2 temporary files left by killed runs"),
        "{}",
        gc.stdout
    );
    assert!(!restore.exists() && !blob.exists());
    assert!(
        gc.stdout.starts_with("removed 0 cache entries and 0 blobs"),
        "a temporary is not counted as a blob: {}",
        gc.stdout
    );
}

#[test]
fn small_outputs_travel_in_their_records_and_are_checked_when_restored() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
name: small
stages:
  a:
    run: echo 0.93 > ${{ outputs.o }}
    outputs: {o: out/metric.txt}
  b:
    run: printf '#!/bin/sh\necho hi\n' > ${{ outputs.o }} && chmod +x ${{ outputs.o }}
    outputs: {o: out/tool.sh}
"#,
    );
    ws.run(&[]).assert_ok();
    // One line per stage in the record log; no blob, no file per record.
    let objects = ws.path(".sluice/cache/objects");
    assert!(!objects.exists() || count_files(&objects) == 0);
    assert!(!ws.path(".sluice/cache/stages").exists());
    let log = ws.path(".sluice/cache/records.log");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains(r#""text":"0.93\n""#), "{text}");

    std::fs::remove_dir_all(ws.path("out")).unwrap();
    let r = ws.run(&[]);
    r.assert_ok();
    assert_eq!(r.outcomes()["a"], "restored");
    assert_eq!(r.outcomes()["b"], "restored");
    assert_eq!(ws.read("out/metric.txt"), "0.93\n");
    let mode = std::fs::metadata(ws.path("out/tool.sh")).unwrap().mode();
    assert_ne!(mode & 0o100, 0, "the executable bit comes back");

    // Content edited in the record is refused like a damaged blob: the stage runs again.
    std::fs::write(
        &log,
        text.replace(r#""text":"0.93\n""#, r#""text":"0.94\n""#),
    )
    .unwrap();
    std::fs::remove_file(ws.path("out/metric.txt")).unwrap();
    let status = ws.sluice(&["status", "a"]);
    assert!(
        status.stdout.contains("cache entry is corrupt"),
        "{}",
        status.stdout
    );
    let r = ws.run(&["a"]);
    r.assert_ok();
    assert_eq!(r.started(), ["a"]);
    assert!(
        warnings(&r)
            .iter()
            .any(|w| w.contains("corrupt cache entry")),
        "{:?}",
        warnings(&r)
    );
    assert_eq!(ws.read("out/metric.txt"), "0.93\n");
    std::fs::remove_file(ws.path("out/metric.txt")).unwrap();
    let again = ws.run(&["a"]);
    again.assert_ok();
    assert_eq!(again.outcomes()["a"], "restored");
    assert_eq!(ws.read("out/metric.txt"), "0.93\n");
}
