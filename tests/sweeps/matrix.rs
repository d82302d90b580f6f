//! `matrix:` stages: expansion and naming, selection by base or instance name, fan-out pairing,
//! gather as a list, output clashes, and instances in status, dag, the lock file and `--json`.

use super::common::*;

const MATRIX: &str = r#"
params: {seed: 1}
stages:
  gen:
    matrix: {lr: [0.1, 0.01], model: [a, b]}
    run: echo "lr=${{ matrix.lr }} model=${{ matrix.model }} seed=${{ params.seed }}" > ${{ outputs.out }}
    outputs: {out: "out/gen-${{ matrix.lr }}-${{ matrix.model }}.txt"}
  pair:
    matrix: {lr: [0.1, 0.01], model: [a, b]}
    run: (echo paired; cat ${{ stages.gen.outputs.out }}) > ${{ outputs.o }}
    outputs: [o]
  per_lr:
    matrix: {lr: [0.1, 0.01]}
    inputs: {models: "${{ stages.gen.outputs.out[*] }}"}
    run: cat ${{ inputs.models }} > ${{ outputs.o }}
    outputs: [o]
  gather:
    run: cat ${{ stages.gen.outputs.out[*] }} > ${{ outputs.all }}
    outputs: [all]
"#;

const GEN: [&str; 4] = [
    "gen@lr=0.1,model=a",
    "gen@lr=0.1,model=b",
    "gen@lr=0.01,model=a",
    "gen@lr=0.01,model=b",
];

#[test]
fn a_matrix_expands_to_named_instances_run_all_or_one() {
    let ws = Ws::new();
    ws.pipeline(MATRIX);
    // One instance by its name: only it runs.
    let r = ws.run(&["sluice.yaml", "gen@lr=0.1,model=b"]);
    r.assert_ok();
    assert_eq!(r.started(), ["gen@lr=0.1,model=b"]);
    assert_eq!(ws.read("out/gen-0.1-b.txt"), "lr=0.1 model=b seed=1\n");
    // The base name selects every instance.
    let r = ws.run(&["sluice.yaml", "gen"]);
    r.assert_ok();
    let o = r.outcomes();
    assert_eq!(o.keys().collect::<Vec<_>>().len(), 4, "{o:?}");
    for g in GEN {
        assert!(o.contains_key(g), "{g} missing in {o:?}");
    }
    assert_eq!(o["gen@lr=0.1,model=b"], "up_to_date");
    assert_eq!(ws.read("out/gen-0.01-a.txt"), "lr=0.01 model=a seed=1\n");
    // The lock file keys instances by name.
    let lock = ws.read("sluice.lock");
    for g in GEN {
        assert!(lock.contains(&format!("{g}:")), "{g} not in\n{lock}");
    }
    // A no-op rerun of the whole pipeline runs nothing of `gen`.
    let r = ws.run(&["sluice.yaml"]);
    r.assert_ok();
    assert!(
        r.started().iter().all(|s| !s.starts_with("gen@")),
        "{:?}",
        r.started()
    );
}

#[test]
fn downstream_instances_pair_up_and_gathers_get_lists() {
    let ws = Ws::new();
    ws.pipeline(MATRIX);
    ws.run(&["sluice.yaml"]).assert_ok();
    assert_eq!(
        ws.read("out/sluice/pair@lr=0.01,model=b/o"),
        "paired\nlr=0.01 model=b seed=1\n"
    );
    // A gather is every instance, in the matrix's order.
    assert_eq!(
        ws.read("out/sluice/gather/all"),
        "lr=0.1 model=a seed=1\nlr=0.1 model=b seed=1\nlr=0.01 model=a seed=1\nlr=0.01 model=b seed=1\n"
    );
    // A stage with part of the matrix gathers the instances that agree with it.
    assert_eq!(
        ws.read("out/sluice/per_lr@lr=0.01/o"),
        "lr=0.01 model=a seed=1\nlr=0.01 model=b seed=1\n"
    );
    // Changing one instance's output reruns its pair and the gathers, nothing else.
    ws.write(
        "sluice.yaml",
        &MATRIX.replace(
            "model=${{ matrix.model }} seed",
            "model=${{ matrix.model }}  seed",
        ),
    );
    let r = ws.run(&["sluice.yaml"]);
    r.assert_ok();
    assert_eq!(r.started().len(), 4 + 4 + 2 + 1, "{:?}", r.started());
}

#[test]
fn matrix_values_key_like_params_and_new_values_run_alone() {
    let ws = Ws::new();
    ws.pipeline(MATRIX);
    ws.run(&["sluice.yaml"]).assert_ok();
    ws.pipeline(&MATRIX.replace(
        "model: [a, b]}\n    run: echo",
        "model: [a, b, c]}\n    run: echo",
    ));
    let st = ws.sluice(&["status", "sluice.yaml"]);
    assert_eq!(st.code, 0, "{}", st.stderr);
    assert!(st.stdout.contains("gen@lr=0.1,model=c"), "{}", st.stdout);
    let r = ws.run(&["sluice.yaml", "gen"]);
    r.assert_ok();
    let mut started = r.started();
    started.sort();
    assert_eq!(started, ["gen@lr=0.01,model=c", "gen@lr=0.1,model=c"]);
}

#[test]
fn dag_status_and_json_name_instances() {
    let ws = Ws::new();
    ws.pipeline(MATRIX);
    let dot = ws.sluice(&["dag", "sluice.yaml", "--format", "dot"]);
    assert_eq!(dot.code, 0, "{}", dot.stderr);
    assert!(
        dot.stdout
            .contains("\"gen@lr=0.1,model=a\" -> \"pair@lr=0.1,model=a\""),
        "{}",
        dot.stdout
    );
    let mermaid = ws.sluice(&["dag", "sluice.yaml", "--format", "mermaid"]);
    // Mermaid ids take letters, digits and `_` only; the label keeps the name.
    assert!(
        mermaid
            .stdout
            .contains("s_gen_lr_0_1_model_a[\"gen@lr=0.1,model=a\"]"),
        "{}",
        mermaid.stdout
    );
    for line in mermaid.stdout.lines().filter(|l| l.contains("-->")) {
        assert!(
            line.chars()
                .all(|c| c.is_ascii_alphanumeric() || " _->".contains(c)),
            "{line}"
        );
    }
    let st = ws.sluice(&["status", "sluice.yaml", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    let names: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["stage"].as_str().map(str::to_string))
        .collect();
    for g in GEN {
        assert!(
            names.iter().any(|n| n == g),
            "{g} not in {names:?}\n{}",
            st.stdout
        );
    }
    let schema = ws.sluice(&["schema"]);
    let s: serde_json::Value = serde_json::from_str(&schema.stdout).unwrap();
    assert!(
        s.pointer("/properties/stages/additionalProperties/properties/matrix")
            .is_some(),
        "no matrix in the schema"
    );
}

#[test]
fn two_instances_writing_one_path_is_refused_naming_both() {
    let ws = Ws::new();
    ws.pipeline(
        "stages:\n  train:\n    matrix: {lr: [0.1, 0.01]}\n    run: echo ${{ matrix.lr }} > ${{ outputs.m }}\n    outputs: {m: out/m.txt}\n",
    );
    let r = ws.sluice(&["run", "sluice.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("stages `train@lr=0.1` and `train@lr=0.01` both write `out/m.txt`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("${{ matrix.lr }}"), "{}", r.stderr);
    assert!(!ws.exists("out"), "nothing runs");
}
