//! The image mode of the built-in `clean`, `split` and `normalize` stages, run through the real
//! binary on a tiny hand-made ImageFolder with one corrupt and one duplicate file: what `clean`
//! drops and reports, stratified split counts, `[N, C, H, W]` arrays whose fitted statistics are
//! the train split's own, labels, determinism, a folder without classes, and the digits pipeline.

mod common;
use common::*;

use sluice_stages::preprocess::ImagePreprocess;
use std::path::Path;

fn put(ws: &Ws, rel: &str, bytes: &[u8]) {
    let p = ws.path(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// Classes `cat` and `dog`, 8 distinct 6×6 images each, plus `cat/x_corrupt.png` (not a PNG),
/// `dog/x_dup.png` (the bytes of `dog/00.png`) and `dog/x_tiny.png` (1×1).
fn folder(ws: &Ws) {
    for (c, class) in ["cat", "dog"].into_iter().enumerate() {
        for i in 0..8u32 {
            let bytes = png(6, 6, |x, y| {
                [
                    (x * 40 + i * 3) as u8,
                    (y * 40 + c as u32 * 90) as u8,
                    (i * 30) as u8,
                ]
            });
            put(ws, &format!("data/pets/{class}/{i:02}.png"), &bytes);
        }
    }
    put(
        ws,
        "data/pets/cat/x_corrupt.png",
        b"\x89PNG\r\n\x1a\nnot really",
    );
    let first = std::fs::read(ws.path("data/pets/dog/00.png")).unwrap();
    put(ws, "data/pets/dog/x_dup.png", &first);
    put(ws, "data/pets/dog/x_tiny.png", &png(1, 1, |_, _| [1, 2, 3]));
}

const PETS: &str = r#"
stages:
  c:
    uses: clean
    inputs: {images: data/pets}
    with: {min_size: [2, 2]}
  s:
    uses: split
    inputs: {images: "${{ stages.c.outputs.table }}"}
    with: {ratios: {train: 0.5, val: 0.25, test: 0.25}, seed: 7}
  n:
    uses: normalize
    inputs:
      train: ${{ stages.s.outputs.train }}
      val: ${{ stages.s.outputs.val }}
      test: ${{ stages.s.outputs.test }}
    with: {size: [4, 4]}
"#;

fn pets_ws() -> Ws {
    let ws = Ws::new();
    folder(&ws);
    ws.pipeline(PETS);
    ws.run(&[]).assert_ok();
    ws
}

/// `class/file` of every file under `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for class in std::fs::read_dir(dir).unwrap() {
        let class = class.unwrap();
        for file in std::fs::read_dir(class.path()).unwrap() {
            out.push(format!(
                "{}/{}",
                class.file_name().to_string_lossy(),
                file.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    out.sort();
    out
}

/// A `.npy` file's shape and data, read by a separate reader from the stage's writer.
fn npy(ws: &Ws, rel: &str) -> (String, Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(ws.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "{rel}: not .npy 1.0");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + len) % 64, 0, "{rel}: data not aligned");
    let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    let descr = header.split("'descr': '").nth(1).unwrap()[..3].to_string();
    let shape = header.split("'shape': (").nth(1).unwrap();
    let shape = shape[..shape.find(')').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    (descr, shape, bytes[10 + len..].to_vec())
}

fn f32s(data: &[u8]) -> Vec<f32> {
    data.chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn i64s(data: &[u8]) -> Vec<i64> {
    data.chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn clean_drops_the_corrupt_the_duplicate_and_the_too_small_file_and_says_why() {
    let ws = pets_ws();
    let report = ws.json("out/sluice/c/report.json");
    let dropped: Vec<(&str, &str)> = report["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["file"].as_str().unwrap(), d["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        dropped,
        [
            ("cat/x_corrupt.png", "unreadable"),
            ("dog/x_dup.png", "duplicate"),
            ("dog/x_tiny.png", "too_small"),
        ]
    );
    assert_eq!(report["dropped"][1]["detail"], "same bytes as `dog/00.png`");
    assert_eq!(
        (report["images_in"].as_u64(), report["images_out"].as_u64()),
        (Some(19), Some(16))
    );
    let kept = listing(&ws.path("out/sluice/c/table"));
    assert_eq!(kept.len(), 16);
    assert!(kept.iter().all(|f| !f.contains("x_")), "{kept:?}");
}

#[test]
fn split_keeps_every_class_in_proportion_and_normalize_fits_on_train_only() {
    let ws = pets_ws();
    let summary = ws.json("out/sluice/s/summary.json");
    assert_eq!(summary["method"], "stratified");
    for (part, n) in [("train", 4), ("val", 2), ("test", 2)] {
        assert_eq!(summary["splits"][part]["classes"]["cat"], n);
        assert_eq!(summary["splits"][part]["classes"]["dog"], n);
        let files = listing(&ws.path(&format!("out/sluice/s/{part}")));
        assert_eq!(files.iter().filter(|f| f.starts_with("cat/")).count(), n);
        assert_eq!(files.len(), 2 * n);
    }

    let artifact = ImagePreprocess::from_json(&ws.read("out/sluice/n/preprocess.json")).unwrap();
    assert_eq!(artifact.classes, ["cat", "dog"]);
    assert_eq!(artifact.size, [4, 4]);
    assert!(artifact.fitted);
    for (part, n) in [("train", 8), ("val", 4), ("test", 4)] {
        let (descr, shape, _) = npy(&ws, &format!("out/sluice/n/{part}/features.npy"));
        assert_eq!((descr.as_str(), shape), ("<f4", vec![n, 3, 4, 4]));
        let (descr, shape, data) = npy(&ws, &format!("out/sluice/n/{part}/labels.npy"));
        assert_eq!((descr.as_str(), shape), ("<i8", vec![n]));
        // Sorted by class, then file: the cats first.
        let expected: Vec<i64> = (0..n as i64).map(|i| i / (n as i64 / 2)).collect();
        assert_eq!(i64s(&data), expected);
    }

    // Normalized by statistics fitted on train, the train split has mean 0 and std 1 per channel.
    let (_, _, data) = npy(&ws, "out/sluice/n/train/features.npy");
    let x = f32s(&data);
    for c in 0..3 {
        let values: Vec<f64> = x
            .chunks(48)
            .flat_map(|img| img[c * 16..(c + 1) * 16].iter().map(|&v| f64::from(v)))
            .collect();
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 1e-5, "channel {c}: mean {mean}");
        assert!((std - 1.0).abs() < 1e-4, "channel {c}: std {std}");
    }

    // The artifact turns the first train image's file into exactly its row of features.npy.
    let first = listing(&ws.path("out/sluice/s/train"))[0].clone();
    let bytes = std::fs::read(ws.path(&format!("out/sluice/s/train/{first}"))).unwrap();
    assert_eq!(artifact.apply(&bytes).unwrap(), x[..48]);
}

#[test]
fn the_same_folder_and_seed_give_the_same_bytes() {
    let (a, b) = (pets_ws(), pets_ws());
    for rel in [
        "out/sluice/s/summary.json",
        "out/sluice/n/preprocess.json",
        "out/sluice/n/train/features.npy",
        "out/sluice/n/test/labels.npy",
    ] {
        assert_eq!(
            std::fs::read(a.path(rel)).unwrap(),
            std::fs::read(b.path(rel)).unwrap(),
            "{rel}"
        );
    }
    assert_eq!(
        listing(&a.path("out/sluice/s/val")),
        listing(&b.path("out/sluice/s/val"))
    );
}

#[test]
fn a_folder_without_class_subfolders_is_an_error() {
    let ws = Ws::new();
    put(&ws, "data/flat/1.png", &png(2, 2, |_, _| [0, 0, 0]));
    ws.pipeline("stages:\n  c:\n    uses: clean\n    inputs: {images: data/flat}\n");
    let r = ws.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let message = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "stage_finished" && e["stage"] == "c")
        .and_then(|e| common::failure_text(&e))
        .unwrap();
    assert!(
        message.starts_with("`data/flat` has no class subfolders"),
        "{message}"
    );
    assert!(!ws.exists("out/sluice/c/table"));
}

#[test]
fn the_digits_pipeline_runs_end_to_end() {
    let ws = Ws::new();
    let yaml = std::fs::read_to_string(repo().join("pipelines/digits.yaml")).unwrap();
    ws.write("pipelines/digits.yaml", &yaml);
    let digits = repo().join("examples/data/digits");
    for class in std::fs::read_dir(&digits).unwrap() {
        let class = class.unwrap();
        for file in std::fs::read_dir(class.path()).unwrap() {
            let file = file.unwrap();
            let rel = format!(
                "examples/data/digits/{}/{}",
                class.file_name().to_string_lossy(),
                file.file_name().to_string_lossy()
            );
            put(&ws, &rel, &std::fs::read(file.path()).unwrap());
        }
    }
    // Up to normalize: tests/train.rs trains the CNN.
    ws.run(&["pipelines/digits.yaml", "normalize"]).assert_ok();
    let report = ws.json("out/digits/clean.json");
    assert_eq!(report["images_out"], 1797);
    let artifact = ImagePreprocess::from_json(&ws.read("out/digits/preprocess.json")).unwrap();
    assert_eq!(artifact.classes.len(), 10);
    let mut total = 0;
    for part in ["train", "val", "test"] {
        let (_, shape, _) = npy(&ws, &format!("out/digits/normalized/{part}/features.npy"));
        assert_eq!(shape[1..], [1, 32, 32]);
        total += shape[0];
    }
    assert_eq!(total, 1797);
    // Each test row's listed file is a digit of its label's class folder, with its features.
    let files: Vec<String> =
        serde_json::from_value(ws.json("out/digits/normalized/test/files.json")).unwrap();
    let (_, _, labels) = npy(&ws, "out/digits/normalized/test/labels.npy");
    let (_, _, data) = npy(&ws, "out/digits/normalized/test/features.npy");
    let features = f32s(&data);
    assert_eq!(files.len(), i64s(&labels).len());
    for (row, (file, label)) in files.iter().zip(i64s(&labels)).enumerate() {
        let class = &artifact.classes[label as usize];
        assert!(
            file.starts_with(&format!("out/digits/test/{class}/")),
            "{file}"
        );
        let bytes = std::fs::read(ws.path(file)).unwrap();
        assert_eq!(
            artifact.apply(&bytes).unwrap(),
            features[row * 1024..(row + 1) * 1024],
            "{file}"
        );
    }
    let again = ws.run(&["pipelines/digits.yaml", "normalize"]);
    again.assert_ok();
    assert_eq!(again.outcomes()["normalize"], "up_to_date");
}

/// The message of `stage`'s `stage_finished` event.
fn failure(r: &Run, stage: &str) -> String {
    r.events()
        .into_iter()
        .find(|e| e["event"] == "stage_finished" && e["stage"] == stage)
        .and_then(|e| common::failure_text(&e))
        .unwrap_or_else(|| panic!("no failure message for `{stage}`: {}", r.stderr))
}

/// Two classes of `n` distinct 4×4 PNGs each under `dir`.
fn small_folder(ws: &Ws, dir: &str, classes: &[&str], n: u32) {
    for (c, class) in classes.iter().enumerate() {
        for i in 0..n {
            let bytes = png(4, 4, |x, y| {
                [(x * 50 + i) as u8, (y * 50) as u8, (c * 100) as u8]
            });
            put(ws, &format!("{dir}/{class}/{i}.png"), &bytes);
        }
    }
}

#[test]
fn normalize_names_an_image_it_cannot_decode() {
    // Without a clean stage in front, a broken file reaches normalize: it must say which.
    let ws = Ws::new();
    small_folder(&ws, "data/tr", &["cat", "dog"], 3);
    put(
        &ws,
        "data/tr/dog/9_broken.png",
        b"\x89PNG\r\n\x1a\ntruncated",
    );
    ws.pipeline("stages:\n  n:\n    uses: normalize\n    inputs: {train: data/tr}\n    with: {size: [2, 2]}\n");
    let r = ws.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let message = failure(&r, "n");
    assert!(message.contains("data/tr/dog/9_broken.png"), "{message}");
    assert!(
        message.contains("clean"),
        "the hint names the clean stage: {message}"
    );
    assert!(!ws.exists("out/sluice/n/train"), "nothing half-written");
    assert!(!ws.exists("out/sluice/n/preprocess.json"));
}

#[test]
fn a_class_only_in_val_is_an_error() {
    // A model cannot learn a class it never sees; its label would have no index.
    let ws = Ws::new();
    small_folder(&ws, "data/tr", &["cat", "dog"], 3);
    small_folder(&ws, "data/va", &["bird", "cat"], 2);
    ws.pipeline("stages:\n  n:\n    uses: normalize\n    inputs: {train: data/tr, val: data/va}\n    with: {size: [2, 2]}\n");
    let r = ws.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let message = failure(&r, "n");
    assert!(message.contains("data/va/bird"), "{message}");
    assert!(message.contains("data/tr"), "{message}");
    assert!(!ws.exists("out/sluice/n/val"));
}

#[test]
fn jpeg_files_are_decoded_like_png() {
    // A solid colour survives JPEG within a step or two; fixed mean 0 / std 1 leaves the
    // pixels' [0, 1] values in the arrays.
    let ws = Ws::new();
    let colours = [("red", [200u8, 30, 40]), ("blue", [20u8, 60, 220])];
    for (class, rgb) in colours {
        for i in 0..2u8 {
            let img = image::RgbImage::from_pixel(8, 8, image::Rgb([rgb[0], rgb[1] + i, rgb[2]]));
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)
                .encode_image(&img)
                .unwrap();
            put(&ws, &format!("data/j/{class}/{i}.jpg"), &bytes);
        }
    }
    ws.pipeline("stages:\n  n:\n    uses: normalize\n    inputs: {train: data/j}\n    with: {size: [4, 4], mean: [0, 0, 0], std: [1, 1, 1]}\n");
    ws.run(&[]).assert_ok();
    let (descr, shape, data) = npy(&ws, "out/sluice/n/train/features.npy");
    assert_eq!((descr.as_str(), shape.clone()), ("<f4", vec![4, 3, 4, 4]));
    let (_, _, labels) = npy(&ws, "out/sluice/n/train/labels.npy");
    let values = f32s(&data);
    for (row, label) in i64s(&labels).into_iter().enumerate() {
        // Classes are sorted: blue = 0, red = 1.
        let rgb = colours[1 - label as usize].1;
        for (c, &want) in rgb.iter().enumerate() {
            for px in 0..16 {
                let got = values[row * 48 + c * 16 + px] * 255.0;
                assert!(
                    (got - want as f32).abs() <= 4.0,
                    "row {row} channel {c}: {got} vs {want}"
                );
            }
        }
    }
}

const TRACED: &str = r#"
stages:
  s:
    uses: split
    inputs: {images: data/odd}
    with: {ratios: {train: 0.5, val: 0.25, test: 0.25}, seed: 3}
  n:
    uses: normalize
    inputs:
      train: ${{ stages.s.outputs.train }}
      val: ${{ stages.s.outputs.val }}
      test: ${{ stages.s.outputs.test }}
    with: {size: [4, 4]}
  t:
    uses: train
    inputs: {train: "${{ stages.n.outputs.train }}", preprocess: "${{ stages.n.outputs.preprocess }}"}
    with: {model: {type: cnn, channels: [4], hidden: 8}, epochs: 1, batch_size: 8, device: cpu}
  e:
    uses: evaluate
    inputs: {model: "${{ stages.t.outputs.model }}", test: "${{ stages.n.outputs.test }}", preprocess: "${{ stages.n.outputs.preprocess }}"}
    with: {device: cpu}
"#;

/// The records of an RFC 4180 CSV text: quoted fields may hold commas, doubled quotes and
/// newlines.
fn csv_records(text: &str) -> Vec<Vec<String>> {
    let (mut records, mut record, mut field) = (Vec::new(), Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => record.push(std::mem::take(&mut field)),
            ('\n', false) => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            _ => field.push(c),
        }
    }
    records
}

#[test]
fn each_image_prediction_names_its_source_file() {
    // Every name holds a comma, quotes and a newline, so each `source_file` cell must be quoted.
    let ws = Ws::new();
    for (c, class) in ["cat", "dog"].into_iter().enumerate() {
        for i in 0..8u32 {
            let bytes = png(6, 6, |x, y| {
                [(x * 40 + i * 3) as u8, (y * 40 + c as u32 * 90) as u8, 9]
            });
            put(&ws, &format!("data/odd/{class}/{i}, \"no\"\n.png"), &bytes);
        }
    }
    ws.pipeline(TRACED);
    ws.run(&[]).assert_ok();

    // Every part lists its own images, which together are the split's input once each.
    let mut listed = Vec::new();
    for part in ["train", "val", "test"] {
        let files: Vec<String> =
            serde_json::from_value(ws.json(&format!("out/sluice/n/{part}/files.json"))).unwrap();
        let (_, shape, _) = npy(&ws, &format!("out/sluice/n/{part}/features.npy"));
        assert_eq!(files.len(), shape[0], "{part}");
        for f in &files {
            let prefix = format!("out/sluice/s/{part}/");
            listed.push(
                f.strip_prefix(&prefix)
                    .unwrap_or_else(|| panic!("{f}"))
                    .to_string(),
            );
        }
    }
    listed.sort();
    assert_eq!(listed, listing(&ws.path("data/odd")));

    let artifact = ImagePreprocess::from_json(&ws.read("out/sluice/n/preprocess.json")).unwrap();
    let (_, _, data) = npy(&ws, "out/sluice/n/test/features.npy");
    let features = f32s(&data);
    let records = csv_records(&ws.read("out/sluice/e/predictions.csv"));
    assert_eq!(
        records[0][..4],
        ["source_file", "row", "label", "predicted"],
        "{:?}",
        records[0]
    );
    assert_eq!(records.len() - 1, features.len() / 48);
    for r in &records[1..] {
        let (file, row) = (Path::new(&r[0]), r[1].parse::<usize>().unwrap());
        // The file is in its true label's class folder, and is the raw file's copy.
        let class = file.parent().unwrap().file_name().unwrap();
        assert_eq!(class.to_str().unwrap(), r[2], "{r:?}");
        let bytes = std::fs::read(ws.path(&r[0])).unwrap_or_else(|e| panic!("{r:?}: {e}"));
        let raw = Path::new("data/odd")
            .join(class)
            .join(file.file_name().unwrap());
        assert_eq!(
            bytes,
            std::fs::read(ws.path(raw.to_str().unwrap())).unwrap()
        );
        // Its features are the ones evaluate scored for this row.
        assert_eq!(
            artifact.apply(&bytes).unwrap(),
            features[row * 48..(row + 1) * 48],
            "{r:?}"
        );
    }
}
