//! Renders the stage graph for `sluice dag`: an indented text tree, Graphviz dot, or Mermaid.

use crate::pipeline::Pipeline;
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DagFormat {
    Text,
    Dot,
    Mermaid,
}

pub fn render_dag(p: &Pipeline, format: DagFormat) -> String {
    let mut out = String::new();
    let name = |i: usize| p.stages[i].id.0.as_str();
    match format {
        DagFormat::Text => {
            for &i in p.graph.topo_order() {
                let s = &p.stages[i];
                let mut deps: Vec<&str> = p.graph.deps(i).map(name).collect();
                deps.sort();
                let kind = s.kind.label();
                if deps.is_empty() {
                    let _ = writeln!(out, "{} [{kind}]", s.id);
                } else {
                    let _ = writeln!(out, "{} [{kind}] ← {}", s.id, deps.join(", "));
                }
            }
        }
        DagFormat::Dot => {
            let _ = writeln!(out, "digraph \"{}\" {{", p.name);
            let _ = writeln!(out, "  rankdir=LR;");
            for s in &p.stages {
                let _ = writeln!(
                    out,
                    "  \"{}\" [label=\"{}\\n{}\"];",
                    s.id,
                    s.id,
                    s.kind.label()
                );
            }
            let mut edges: Vec<(usize, usize)> = p.graph.edges().collect();
            edges.sort();
            for (a, b) in edges {
                let _ = writeln!(out, "  \"{}\" -> \"{}\";", name(a), name(b));
            }
            out.push_str("}\n");
        }
        DagFormat::Mermaid => {
            let ids = mermaid_ids(p);
            out.push_str("flowchart LR\n");
            for (i, s) in p.stages.iter().enumerate() {
                let _ = writeln!(out, "  {}[\"{}\"]", ids[i], s.id);
            }
            let mut edges: Vec<(usize, usize)> = p.graph.edges().collect();
            edges.sort();
            for (a, b) in edges {
                let _ = writeln!(out, "  {} --> {}", ids[a], ids[b]);
            }
        }
    }
    out
}

/// Mermaid node ids, one per stage: ids take letters, digits and `_`, so a matrix instance's
/// `@`, `=`, `,` and `.` (and `-`) become `_` (the label keeps the real name). Two names can
/// then meet (`a-b` and `a_b`), and one node would stand for both: in that case every id also
/// carries its stage's number (`s3_a_b`), which keeps them apart.
fn mermaid_ids(p: &Pipeline) -> Vec<String> {
    let plain: Vec<String> = p.stages.iter().map(|s| sanitized(&s.id.0)).collect();
    let distinct: std::collections::HashSet<&String> = plain.iter().collect();
    if distinct.len() == plain.len() {
        return plain.into_iter().map(|s| format!("s_{s}")).collect();
    }
    plain
        .into_iter()
        .enumerate()
        .map(|(i, s)| format!("s{i}_{s}"))
        .collect()
}

fn sanitized(name: &str) -> String {
    name.replace(|c: char| !(c.is_ascii_alphanumeric() || c == '_'), "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mermaid(yaml: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let file = root.join("sluice.yaml");
        std::fs::write(&file, yaml).unwrap();
        let p = crate::validate::load(&crate::validate::LoadOptions {
            root: &root,
            file: &file,
            display: "sluice.yaml".into(),
            overrides: &[],
            registry: &crate::StageRegistry::default(),
            sweep: None,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        render_dag(&p, DagFormat::Mermaid)
    }

    #[test]
    fn names_that_would_meet_in_mermaid_get_ids_of_their_own() {
        let out = mermaid(
            "stages:\n  a-b: {run: 'echo > ${{ outputs.o }}', outputs: [o]}\n  \
             a_b: {run: 'cat ${{ stages.a-b.outputs.o }} > ${{ outputs.o }}', outputs: [o]}\n",
        );
        let nodes: Vec<&str> = out
            .lines()
            .filter(|l| l.contains('['))
            .map(|l| l.trim().split('[').next().unwrap())
            .collect();
        assert_eq!(nodes.len(), 2, "{out}");
        assert_ne!(nodes[0], nodes[1], "{out}");
        assert!(
            out.contains(&format!("{} --> {}", nodes[0], nodes[1])),
            "{out}"
        );
        // Without a meeting, ids stay as they were.
        let plain = mermaid("stages:\n  clean: {run: 'echo > ${{ outputs.o }}', outputs: [o]}\n");
        assert!(plain.contains("s_clean[\"clean\"]"), "{plain}");
    }
}
