//! `StageGraph`: the sealed, acyclic petgraph DAG of a validated pipeline, and the walks the
//! scheduler and the CLI need over it (topological order, upstream and downstream closures).

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, Reversed};
use petgraph::Direction;
use std::collections::BTreeSet;

/// An edge `a → b` means `b` needs `a`. Node `i` is stage index `i`.
#[derive(Debug, Clone)]
pub struct StageGraph {
    g: DiGraph<usize, ()>,
    topo: Vec<usize>,
}

impl StageGraph {
    /// Builds the graph, or returns one cycle as a list of stage indices (first repeated last).
    pub fn build(n: usize, edges: &BTreeSet<(usize, usize)>) -> Result<StageGraph, Vec<usize>> {
        let mut g = DiGraph::with_capacity(n, edges.len());
        for i in 0..n {
            g.add_node(i);
        }
        for &(a, b) in edges {
            g.add_edge(NodeIndex::new(a), NodeIndex::new(b), ());
        }
        match written_order(&g) {
            Some(topo) => Ok(StageGraph { g, topo }),
            None => Err(find_cycle(&g)),
        }
    }

    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// Every stage, dependencies first.
    pub fn topo_order(&self) -> &[usize] {
        &self.topo
    }

    /// Direct dependencies of `i`.
    pub fn deps(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.g
            .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
            .map(|n| n.index())
    }

    /// Direct dependents of `i`.
    pub fn dependents(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.g
            .neighbors_directed(NodeIndex::new(i), Direction::Outgoing)
            .map(|n| n.index())
    }

    /// `targets` and everything they need.
    pub fn upstream_closure(&self, targets: &BTreeSet<usize>) -> BTreeSet<usize> {
        let rev = Reversed(&self.g);
        let mut out = BTreeSet::new();
        for &t in targets {
            let mut dfs = Dfs::new(rev, NodeIndex::new(t));
            while let Some(n) = dfs.next(rev) {
                out.insert(n.index());
            }
        }
        out
    }

    /// `sources` and everything that depends on them.
    pub fn downstream_closure(&self, sources: &BTreeSet<usize>) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        for &s in sources {
            let mut dfs = Dfs::new(&self.g, NodeIndex::new(s));
            while let Some(n) = dfs.next(&self.g) {
                out.insert(n.index());
            }
        }
        out
    }

    pub fn edges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.g
            .raw_edges()
            .iter()
            .map(|e| (e.source().index(), e.target().index()))
    }
}

/// A concrete cycle inside the first strongly connected component that has one.
/// A topological order that keeps stages in the order they are written wherever the edges
/// allow (Kahn's algorithm, the lowest ready index first): `status` lists stages as the file
/// does, and a sweep starts its trials from the first. `None` when there is a cycle.
fn written_order(g: &DiGraph<usize, ()>) -> Option<Vec<usize>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let n = g.node_count();
    let mut indegree: Vec<usize> = (0..n)
        .map(|i| {
            g.neighbors_directed(NodeIndex::new(i), Direction::Incoming)
                .count()
        })
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for d in g.neighbors_directed(NodeIndex::new(i), Direction::Outgoing) {
            let k = d.index();
            indegree[k] -= 1;
            if indegree[k] == 0 {
                ready.push(Reverse(k));
            }
        }
    }
    (order.len() == n).then_some(order)
}

fn find_cycle(g: &DiGraph<usize, ()>) -> Vec<usize> {
    for scc in tarjan_scc(g) {
        let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
        let start = *members.iter().next().expect("scc is never empty");
        let self_loop = g.contains_edge(start, start);
        if members.len() == 1 && !self_loop {
            continue;
        }
        // Walk inside the component until a node repeats; the repeated stretch is a cycle.
        let mut path = vec![start];
        let mut seen = vec![start];
        let mut cur = start;
        loop {
            let next = g
                .neighbors_directed(cur, Direction::Outgoing)
                .filter(|n| members.contains(n))
                .min()
                .expect("every node of a cycle has a successor in it");
            if let Some(pos) = seen.iter().position(|&s| s == next) {
                let mut cycle: Vec<usize> = path[pos..].iter().map(|n| n.index()).collect();
                cycle.push(next.index());
                return cycle;
            }
            seen.push(next);
            path.push(next);
            cur = next;
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(e: &[(usize, usize)]) -> BTreeSet<(usize, usize)> {
        e.iter().copied().collect()
    }

    #[test]
    fn order_follows_the_file_where_edges_allow() {
        // 3 needs 4; the rest are independent.
        let g = StageGraph::build(5, &edges(&[(4, 3)])).unwrap();
        assert_eq!(g.topo_order(), [0, 1, 2, 4, 3]);
        assert!(StageGraph::build(2, &edges(&[(0, 1), (1, 0)])).is_err());
    }

    #[test]
    fn closures_on_a_diamond() {
        let g = StageGraph::build(4, &edges(&[(0, 1), (0, 2), (1, 3), (2, 3)])).unwrap();
        assert_eq!(g.topo_order()[0], 0);
        assert_eq!(g.topo_order()[3], 3);
        let up = g.upstream_closure(&[1].into_iter().collect());
        assert_eq!(up, [0, 1].into_iter().collect());
        let down = g.downstream_closure(&[1].into_iter().collect());
        assert_eq!(down, [1, 3].into_iter().collect());
    }

    #[test]
    fn reports_a_cycle_path() {
        let err = StageGraph::build(3, &edges(&[(0, 1), (1, 2), (2, 1)])).unwrap_err();
        assert_eq!(err, vec![1, 2, 1]);
        let err = StageGraph::build(1, &edges(&[(0, 0)])).unwrap_err();
        assert_eq!(err, vec![0, 0]);
    }
}
