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
            out.push_str("flowchart LR\n");
            for s in &p.stages {
                let _ = writeln!(out, "  {}[\"{}\"]", mermaid_id(&s.id.0), s.id);
            }
            let mut edges: Vec<(usize, usize)> = p.graph.edges().collect();
            edges.sort();
            for (a, b) in edges {
                let _ = writeln!(out, "  {} --> {}", mermaid_id(name(a)), mermaid_id(name(b)));
            }
        }
    }
    out
}

/// A Mermaid node id for stage `s`: ids take letters, digits and `_`, so a matrix instance's `@`,
/// `=`, `,` and `.` (and `-`) are written as `_<hex code>_` and `_` itself as `__` (the label
/// keeps the real name). Every name gets its own id: `a-b` and `a_b` must not become one node.
fn mermaid_id(s: &str) -> String {
    let mut id = String::with_capacity(s.len() + 2);
    id.push_str("s_");
    for c in s.chars() {
        match c {
            c if c.is_ascii_alphanumeric() => id.push(c),
            '_' => id.push_str("__"),
            c => {
                let _ = write!(id, "_{:x}_", c as u32);
            }
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::mermaid_id;

    #[test]
    fn mermaid_ids_are_plain_and_distinct_for_distinct_names() {
        let names = [
            "a",
            "a_b",
            "a-b",
            "a__b",
            "a_2d_b",
            "a_5f_b",
            "train@lr=0.1",
            "train@lr=0_1",
            "train@lr=0-1",
            "x@a=1,b=2",
            "x@a=1_b=2",
            "x@a=1.b=2",
        ];
        let ids: Vec<String> = names.iter().map(|n| mermaid_id(n)).collect();
        for id in &ids {
            assert!(
                id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{id}"
            );
        }
        let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{ids:?}");
        assert_eq!(mermaid_id("clean"), "s_clean");
    }
}
