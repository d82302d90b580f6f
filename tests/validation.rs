//! Every validation error: its message, its file:line:col, the did-you-mean, exit code 2, and
//! that nothing runs.

mod common;

use common::*;

/// Runs `sluice run` on an invalid pipeline; returns stderr after checking the exit code and
/// that nothing was written.
fn invalid(yaml: &str) -> String {
    let ws = Ws::new();
    ws.write("data.csv", "a\n1\n").pipeline(yaml);
    let r = ws.sluice(&["run"]);
    assert_eq!(r.code, 2, "expected exit 2\nstderr:\n{}", r.stderr);
    assert!(
        !ws.exists("out"),
        "an invalid pipeline must not run anything"
    );
    assert!(!ws.exists("sluice.lock"));
    r.stderr
}

fn has(stderr: &str, needles: &[&str]) {
    for n in needles {
        assert!(stderr.contains(n), "missing {n:?} in:\n{stderr}");
    }
}

#[test]
fn yaml_syntax_error_points_at_the_line() {
    let e = invalid("stages:\n  a:\n    run: [unclosed\n");
    has(&e, &["error: invalid YAML", "--> sluice.yaml:4:1"]);
}

#[test]
fn unknown_keys_get_a_did_you_mean_at_their_location() {
    let e = invalid("stages:\n  a:\n    run: echo\n    inptus: {x: data.csv}\n");
    has(
        &e,
        &[
            "error: unknown stage key `inptus`",
            "--> sluice.yaml:4:5",
            "4 |     inptus: {x: data.csv}",
            "  |     ^",
            "help: did you mean `inputs`?",
        ],
    );
    let e = invalid("stage:\n  a: {run: echo}\n");
    has(
        &e,
        &[
            "unknown pipeline key `stage`",
            "sluice.yaml:1:1",
            "did you mean `stages`?",
            "the pipeline has no `stages`",
        ],
    );
}

#[test]
fn wrong_types_are_named() {
    let e = invalid("stages:\n  a:\n    run: echo\n    needs: 5\n    resources: {cpus: many}\n    timeout: soon\n");
    has(
        &e,
        &[
            "`needs` must be a list of stage names",
            "sluice.yaml:4:12",
            "`cpus` must be a whole number from 1 to 1024, found the text `many`",
            "sluice.yaml:5:23",
            "`timeout` must be a duration, found `soon`",
            "sluice.yaml:6:14",
        ],
    );
}

#[test]
fn unknown_stage_kind_suggests_a_plugin() {
    let e = invalid(
        "plugins:\n  featurize: {command: [python3, f.py]}\nstages:\n  a: {uses: featurise}\n",
    );
    has(
        &e,
        &[
            "unknown stage kind `featurise`",
            "sluice.yaml:4:13",
            "did you mean `featurize`?",
        ],
    );
}

#[test]
fn references_to_unknown_stages_outputs_and_params() {
    let e = invalid(
        r#"params: {epochs: 3}
stages:
  train: {run: "echo ${{ params.epoch }} > ${{ outputs.model }}", outputs: [model]}
  evaluate:
    run: "cat ${{ stages.trian.outputs.model }}; cat ${{ stages.train.outputs.modle }}"
    outputs: [m]
"#,
    );
    has(
        &e,
        &[
            "reference to unknown param `epoch`",
            "sluice.yaml:3:16",
            "did you mean `epochs`?",
            "reference to unknown stage `trian`",
            "did you mean `train`?",
            "stage `train` has no output `modle`",
            "did you mean `model`?",
            "sluice.yaml:5:10",
        ],
    );
}

#[test]
fn needs_an_unknown_stage() {
    let e = invalid("stages:\n  a: {run: echo, needs: [b, prepare]}\n  prepair: {run: echo}\n");
    has(
        &e,
        &[
            "stage `a` needs unknown stage `b`",
            "sluice.yaml:2:26",
            "needs unknown stage `prepare`",
            "did you mean `prepair`?",
        ],
    );
}

#[test]
fn cycles_are_printed_as_a_path() {
    let e = invalid(
        r#"stages:
  split: {run: "cat ${{ stages.train.outputs.m }} > ${{ outputs.s }}", outputs: [s]}
  train: {run: "cat ${{ stages.split.outputs.s }} > ${{ outputs.m }}", outputs: [m]}
"#,
    );
    has(
        &e,
        &[
            "the stages form a cycle: split → train → split",
            "sluice.yaml:2:3",
        ],
    );
    let e = invalid("stages:\n  a: {run: echo, needs: [a]}\n");
    has(&e, &["cycle: a → a"]);
}

#[test]
fn two_stages_writing_one_path() {
    let e = invalid("stages:\n  a: {run: echo, outputs: {o: out/x}}\n  b: {run: echo, outputs: {o: out/x}}\n  c: {run: echo, outputs: {o: out/x/inner}}\n");
    has(
        &e,
        &[
            "stages `a` and `b` both write `out/x`",
            "sluice.yaml:3:31",
            "output `out/x/inner` of stage `c` lies inside output `out/x` of stage `a`",
        ],
    );
}

#[test]
fn outputs_that_escape_the_workspace() {
    let e = invalid("stages:\n  a: {run: echo, outputs: {o: ../x, p: /etc/passwd}}\n");
    has(
        &e,
        &[
            "output `o` path `../x` is outside the workspace",
            "sluice.yaml:2:31",
            "output `p` path `/etc/passwd` is outside the workspace",
        ],
    );
}

#[test]
fn outputs_that_escape_through_a_symlink() {
    let ws = Ws::new();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.path("link")).unwrap();
    ws.pipeline("stages:\n  a: {run: 'echo x > ${{ outputs.o }}', outputs: {o: link/file.txt}}\n");
    let r = ws.sluice(&["run"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    has(
        &r.stderr,
        &[
            "output `o` (`link/file.txt`) resolves outside the workspace through a symbolic link",
            "sluice.yaml:2:54",
        ],
    );
    assert!(!outside.path().join("file.txt").exists());
}

#[test]
fn a_symlink_that_appears_after_validation_is_caught_before_writing() {
    let ws = Ws::new();
    let outside = tempfile::tempdir().unwrap();
    ws.pipeline(
        r#"
stages:
  a: {run: "mkdir -p out && ln -s '{outside}' out/evil && echo > ${{ outputs.o }}", outputs: [o]}
  b: {run: "echo hacked > ${{ outputs.o }}", outputs: {o: out/evil/file.txt}, needs: [a]}
"#
        .replace("{outside}", outside.path().to_str().unwrap())
        .as_str(),
    );
    let r = ws.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let f = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "stage_finished" && e["stage"] == "b")
        .unwrap();
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("resolves outside the workspace"),
        "{f}"
    );
    assert!(!outside.path().join("file.txt").exists());
}

/// Most output directories are proven inside the workspace by their `..` chain, which compares
/// inodes; a directory renamed out of the workspace keeps its inode, so a link back to it in its
/// old place must still be refused.
#[test]
fn an_output_directory_moved_out_and_linked_back_is_caught_before_writing() {
    let ws = Ws::new();
    // Beside the workspace, on its file system, so that `mv` is a rename keeping the inode.
    let outside = tempfile::tempdir_in(ws.root().parent().unwrap()).unwrap();
    let moved = outside.path().join("moved");
    ws.pipeline(
        r#"
stages:
  a: {run: "echo a > ${{ outputs.o }}", outputs: {o: out/a.txt}}
  b: {run: "mv out '{moved}' && ln -s '{moved}' out && echo > ${{ outputs.o }}", outputs: {o: b.txt}, needs: [a]}
  c: {run: "echo hacked > ${{ outputs.o }}", outputs: {o: out/c.txt}, needs: [b]}
"#
        .replace("{moved}", moved.to_str().unwrap())
        .as_str(),
    );
    let r = ws.run(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.outcomes()["b"], "ran", "{}", r.stderr);
    assert!(
        r.failure("c").contains("resolves outside the workspace"),
        "{}",
        r.failure("c")
    );
    assert!(moved.join("a.txt").exists(), "the move happened");
    assert!(!moved.join("c.txt").exists());
}

#[test]
fn inputs_that_nothing_provides() {
    let e = invalid("stages:\n  a: {run: echo, inputs: {table: data/missing.csv}}\n");
    has(&e, &["input `table` of stage `a` (`data/missing.csv`) does not exist and no stage produces it", "sluice.yaml:2:34"]);
}

#[test]
fn uses_and_run_together_or_neither() {
    let e = invalid("stages:\n  a: {run: echo, uses: x}\n  b: {inputs: {}}\n");
    has(
        &e,
        &[
            "stage `a` has both `uses` and `run`",
            "stage `b` has neither `uses` nor `run`",
            "sluice.yaml:3:3",
        ],
    );
}

#[test]
fn reserved_env_and_expressions_in_version() {
    let e = invalid("params: {v: 1}\nstages:\n  a:\n    run: echo\n    env: {CUDA_VISIBLE_DEVICES: '0', SLUICE_STAGE: x}\n    version: ${{ params.v }}\n");
    has(
        &e,
        &[
            "`CUDA_VISIBLE_DEVICES` is set by sluice and cannot be declared",
            "sluice.yaml:5:11",
            "`SLUICE_STAGE` is set by sluice",
            "`version` cannot contain `${{ }}` expressions",
            "sluice.yaml:6:14",
        ],
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let e = invalid(
        "stages:\n  a: {run: echo, inptus: {}}\n  b: {uses: nope}\n  c: {run: echo, needs: [zz]}\n",
    );
    has(
        &e,
        &[
            "unknown stage key `inptus`",
            "unknown stage kind `nope`",
            "needs unknown stage `zz`",
            "sluice.yaml has 3 problems; nothing was run",
        ],
    );
}

#[test]
fn bad_set_overrides_are_usage_errors() {
    let ws = Ws::new();
    ws.pipeline("params: {epochs: 1}\nstages:\n  a: {run: 'echo ${{ params.epochs }} > ${{ outputs.o }}', outputs: [o]}\n");
    let r = ws.sluice(&["run", "--set", "epoch=3"]);
    assert_eq!(r.code, 2);
    has(
        &r.stderr,
        &[
            "`--set epoch=...` names an unknown param `epoch`",
            "did you mean `epochs`?",
        ],
    );
    let r = ws.sluice(&["run", "--set", "epochs"]);
    assert_eq!(r.code, 2);
    has(&r.stderr, &["`--set epochs` is not NAME=VALUE"]);
    let r = ws.sluice(&["status", "nope.yaml"]);
    assert_eq!(r.code, 2);
    has(&r.stderr, &["pipeline file `nope.yaml` not found"]);
}

#[test]
fn a_stage_reading_a_directory_it_writes_into() {
    let e =
        invalid("stages:\n  a: {run: echo, inputs: {d: data}, outputs: {o: data/derived.csv}}\n");
    has(
        &e,
        &[
            "stage `a` reads its own output through input `d` (`data`)",
            "sluice.yaml:2:30",
        ],
    );
}

/// Where an input's problem points is decided by where the input came from, not by its name: a
/// declared input named like one implied by a reference (`stages.S.outputs.N`) is still shown at
/// its own entry under `inputs:`.
#[test]
fn a_declared_input_named_like_a_reference_is_located_at_its_entry() {
    let e = invalid(
        "stages:\n  a:\n    run: echo\n    inputs:\n      stages.a.outputs.o: out/a.txt\n    outputs: {o: out/a.txt}\n",
    );
    has(
        &e,
        &[
            "stage `a` reads its own output through input `stages.a.outputs.o` (`out/a.txt`)",
            "sluice.yaml:5:27",
        ],
    );
}

#[test]
fn built_in_stages_name_a_misspelt_missing_or_conflicting_input() {
    // A typo, with the kind's inputs listed, at the input's own line.
    let e = invalid("stages:\n  c:\n    uses: clean\n    inputs: {tabel: data.csv}\n");
    has(
        &e,
        &[
            "stage `c`: `clean` has no input `tabel`",
            "did you mean `table`? Its inputs are `table` and `images`",
            "sluice.yaml:4:",
        ],
    );
    assert!(
        !e.contains("needs a `table`"),
        "no second error for the same typo: {e}"
    );
    let e = invalid("stages:\n  c:\n    uses: clean\n    inputs: {}\n");
    has(
        &e,
        &["stage `c`: `clean` needs a `table` or an `images` input"],
    );
    // Both modes at once.
    let e = invalid(
        "stages:\n  s:\n    uses: split\n    inputs: {table: data.csv, images: data.csv}\n",
    );
    has(
        &e,
        &[
            "stage `s`: `split` takes a `table` or an `images` input, not several",
            "use one `split` stage per input",
        ],
    );
    // A required input left out, with no `inputs:` at all: reported at the stage.
    let e = invalid("stages:\n  e:\n    uses: evaluate\n");
    has(
        &e,
        &[
            "stage `e`: `evaluate` needs a `model` input",
            "stage `e`: `evaluate` needs a `test` input",
            "its inputs are `model`, `test`, `preprocess` and `history`",
            "sluice.yaml:3:",
        ],
    );
}

#[test]
fn an_unquoted_expression_in_a_flow_mapping_gets_a_hint() {
    let e =
        invalid("params: {n: 3}\nstages:\n  a:\n    run: echo\n    with: {n: ${{ params.n }}}\n");
    has(
        &e,
        &[
            "invalid YAML",
            "sluice.yaml:5:",
            "an unquoted `${{ ... }}` inside `{ ... }` ends the mapping early; quote it",
        ],
    );
}

#[test]
fn an_unresolved_reference_in_with_is_one_error_not_two() {
    // `seed` stands as null once `params.sed` fails; `split` would add "must be a whole number".
    let e = invalid(
        "params: {seed: 3}\nstages:\n  s:\n    uses: split\n    inputs: {table: data.csv}\n    with: {ratios: {train: 0.5, val: 0.25, test: 0.25}, seed: \"${{ params.sed }}\", methd: random}\n",
    );
    has(
        &e,
        &[
            "reference to unknown param `sed`",
            "did you mean `seed`?",
            // Other problems in the same `with:` are still reported.
            "stage `s`: unknown option `methd`",
            "sluice.yaml has 2 problems",
        ],
    );
    assert!(!e.contains("must be a whole number"), "{e}");
}

/// Runs `sluice ARGS` on the workspace, failing the test instead of hanging when sluice does not
/// finish, and checks that it refused the pipeline (exit 2) without running anything.
fn refused(ws: &Ws, args: &[&str]) -> String {
    let r = wait_child(ws.spawn(args), LONG);
    assert_eq!(
        r.code, 2,
        "expected exit 2 from {args:?}\nstderr:\n{}",
        r.stderr
    );
    assert!(
        !ws.exists("out"),
        "an invalid pipeline must not run anything"
    );
    assert!(!ws.exists("sluice.lock"));
    r.stderr
}

/// A `clean` stage whose filter is `filter`, on line 6, column 15.
fn clean_with_filter(filter: &str) -> Ws {
    let ws = Ws::new();
    ws.write("data.csv", "a\n1\n").pipeline(&format!(
        "stages:\n  c:\n    uses: clean\n    inputs: {{table: data.csv}}\n    with:\n      filter: \"{filter}\"\n"
    ));
    ws
}

#[test]
fn deeply_nested_filters_are_refused_when_validating() {
    let deep = |n: usize| format!("{}a > 1{}", "(".repeat(n), ")".repeat(n));
    let ws = clean_with_filter(&deep(5_000));
    for cmd in ["run", "dag", "status"] {
        let e = refused(&ws, &[cmd]);
        has(
            &e,
            &[
                "stage `c`: `filter`: the filter nests parentheses and `not` more than 64 deep at position 65",
                "--> sluice.yaml:6:15",
            ],
        );
    }
    let ws = clean_with_filter(&deep(20_000));
    has(&refused(&ws, &["status"]), &["more than 64 deep"]);
    let ws = clean_with_filter(&format!("{}a > 1", "not ".repeat(100_000)));
    has(
        &refused(&ws, &["run"]),
        &[
            "the filter nests parentheses and `not` more than 64 deep at position 257",
            "--> sluice.yaml:6:15",
        ],
    );
    // Sixty-four levels are still fine, and a long flat chain is no nesting at all.
    let ws = clean_with_filter(&deep(64));
    wait_child(ws.spawn(&["dag"]), LONG).assert_ok();
    let ws = clean_with_filter(&vec!["a > 1"; 20_000].join(" and "));
    wait_child(ws.spawn(&["dag"]), LONG).assert_ok();
}

#[test]
fn huge_timeouts_are_out_of_range_not_a_crash() {
    for (t, col) in [("1e300", 14), ("99999999999999999999d", 14), ("0", 14)] {
        let ws = Ws::new();
        ws.pipeline(&format!("stages:\n  a:\n    run: echo\n    timeout: {t}\n"));
        for cmd in ["run", "dag"] {
            let e = refused(&ws, &[cmd]);
            has(
                &e,
                &[
                    &format!("`timeout` must be from 1ms to 365d, found `{t}`"),
                    &format!("--> sluice.yaml:4:{col}"),
                    "help: write e.g. `30m`, `12h` or `7d`",
                ],
            );
        }
    }
}

#[test]
fn thousands_of_errors_are_located_and_the_rest_counted() {
    let ws = Ws::new();
    let mut yaml = String::from("stages:\n");
    for i in 0..2_000 {
        yaml.push_str(&format!("  s{i}: {{run: echo, inptus: {{}}}}\n"));
    }
    ws.pipeline(&yaml);
    let e = refused(&ws, &["dag"]);
    assert_eq!(
        e.matches("error: unknown stage key `inptus`").count(),
        100,
        "{e}"
    );
    has(
        &e,
        &[
            "--> sluice.yaml:2:19",
            // The hundredth, located as exactly as the first.
            "--> sluice.yaml:101:20",
            "101 |   s99: {run: echo, inptus: {}}",
            "... and 1900 more errors (the first 100 are shown above)",
            "error: sluice.yaml has 2000 problems; nothing was run",
        ],
    );
    assert!(!e.contains("s100:"), "only the first 100 are printed: {e}");
}

#[test]
fn an_output_that_is_a_symlink_out_of_the_workspace_is_refused() {
    let ws = Ws::new();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("precious.txt");
    std::fs::write(&target, "keep me").unwrap();
    std::fs::create_dir_all(ws.path("res")).unwrap();
    std::os::unix::fs::symlink(&target, ws.path("res/o.txt")).unwrap();
    ws.pipeline("stages:\n  a: {run: 'echo x > ${{ outputs.o }}', outputs: {o: res/o.txt}}\n");
    let r = wait_child(ws.spawn(&["run"]), LONG);
    assert_eq!(r.code, 2, "{}", r.stderr);
    has(
        &r.stderr,
        &[
            &format!(
                "output `o` (`res/o.txt`) is a symbolic link to `{}`, outside the workspace",
                target.display()
            ),
            "--> sluice.yaml:2:54",
            "remove the link `res/o.txt`",
        ],
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    let link = std::fs::symlink_metadata(ws.path("res/o.txt")).unwrap();
    assert!(link.file_type().is_symlink(), "the link is left alone");
    // A link that stays inside the workspace is replaced by the output, as before.
    ws.write("inside.txt", "old");
    std::fs::remove_file(ws.path("res/o.txt")).unwrap();
    std::os::unix::fs::symlink(ws.path("inside.txt"), ws.path("res/o.txt")).unwrap();
    ws.run(&[]).assert_ok();
    assert_eq!(ws.read("res/o.txt"), "x\n");
    assert_eq!(ws.read("inside.txt"), "old");
}

#[test]
fn numbers_too_large_say_what_was_expected() {
    let e = invalid(
        "params:\n  big: 340282366920938463463374607431768211455\nstages:\n  a:\n    run: echo\n    resources: {cpus: 18446744073709551615, gpus: 18446744073709551616}\n",
    );
    has(
        &e,
        &[
            "error: the number `340282366920938463463374607431768211455` is too large: whole numbers go from -9223372036854775808 to 18446744073709551615",
            "--> sluice.yaml:2:8",
            "help: if it is meant as text, quote it: `\"340282366920938463463374607431768211455\"`",
            "error: `cpus` must be a whole number from 1 to 1024, found `18446744073709551615`",
            "--> sluice.yaml:6:23",
            "error: the number `18446744073709551616` is too large",
            "--> sluice.yaml:6:51",
            "sluice.yaml has 3 problems",
        ],
    );
    assert!(!e.contains("u128") && !e.contains("any YAML value"), "{e}");
    // `gpus` gets no second error about the null it stands as.
    assert!(!e.contains("`gpus` must be"), "{e}");
    let e = invalid("stages:\n  a:\n    run: echo\n    resources: {gpus: 2000}\n");
    has(
        &e,
        &["`gpus` must be a whole number from 0 to 1024, found `2000`"],
    );
}

#[test]
fn yaml_nesting_aliases_tags_and_size_are_bounded() {
    let nested = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let e = invalid(&format!(
        "stages:\n  a:\n    run: echo\n    with: {{x: {nested}}}\n"
    ));
    has(
        &e,
        &[
            "error: values nest deeper than 64 levels",
            "--> sluice.yaml:4:",
            "help: a pipeline needs only a few levels",
        ],
    );
    let e = invalid(&format!("stages:\n  a: {}\n", "[".repeat(1_000_000)));
    has(
        &e,
        &["values nest deeper than 64 levels", "--> sluice.yaml:2:"],
    );
    let mut laughs =
        String::from("params:\n  x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = i - 1;
        laughs.push_str(&format!(
            "  x{i}: &x{i} [*x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}]\n"
        ));
    }
    let ws = Ws::new();
    ws.pipeline(&format!("{laughs}stages:\n  a: {{run: echo}}\n"));
    has(
        &refused(&ws, &["run"]),
        &[
            "error: the file expands to more than 2000000 values",
            "aliases (`*name`)",
        ],
    );
    let e = invalid("stages:\n  a: {run: echo}\n  b: {run: echo}\n  a: {run: true}\n");
    has(
        &e,
        &[
            "error: duplicate key `a`",
            "--> sluice.yaml:4:3",
            "remove or rename one of them",
        ],
    );
    let e = invalid("stages:\n  a: {run: !shell echo}\n");
    has(
        &e,
        &["YAML tag `!shell` is not supported", "--> sluice.yaml:2:12"],
    );
    // A file beyond 16 MiB is refused before it is parsed.
    let ws = Ws::new();
    let filler = format!("# {}\n", "x".repeat(1_000));
    ws.pipeline(&format!(
        "stages:\n  a: {{run: echo}}\n{}",
        filler.repeat(17 * 1_024)
    ));
    has(
        &refused(&ws, &["dag"]),
        &["error: pipeline file `sluice.yaml` is larger than 16 MiB"],
    );
    // So is a `--set` value beyond 64 KiB; a deeply nested one is taken as text.
    let ws = Ws::new();
    ws.pipeline("params: {p: 1}\nstages:\n  a: {run: 'echo ${{ params.p }} > ${{ outputs.o }}', outputs: [o]}\n");
    let long = format!("p={}", "y".repeat(70_000));
    has(
        &refused(&ws, &["run", "--set", &long]),
        &["`--set p=...` is 70000 bytes long; a value may have at most 65536"],
    );
    let deep = format!("p={}", "[".repeat(50_000));
    wait_child(ws.spawn(&["run", "--set", &deep]), LONG).assert_ok();
    assert_eq!(ws.read("out/sluice/a/o").trim(), "[".repeat(50_000));
}
