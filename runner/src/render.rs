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

fn mermaid_id(s: &str) -> String {
    // Mermaid ids take letters, digits and `_`; a matrix instance's `@`, `=`, `,` and `.` (and
    // `-`) become `_` (the label keeps the real name).
    format!(
        "s_{}",
        s.replace(|c: char| !(c.is_ascii_alphanumeric() || c == '_'), "_")
    )
}
