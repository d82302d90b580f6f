//! Dealing row indices to train, val and test: [`random`], [`stratified`] and [`grouped`], and
//! the largest-remainder [`allocate`] they share. Pure functions of the keys, the ratios and the
//! seed; no I/O, so that every rule here is tested as a unit.
//!
//! Reproducibility rests on three things: the generator in `rng`, sorted iteration (classes and
//! groups in sorted key order before any shuffling) and integer rounding rules. Rows inside each
//! split come out in their original order.

use super::config::Ratios;
use super::Part;
use crate::rng::SplitMix64;
use crate::table::Coded;
use std::cmp::Reverse;

/// Row indices per split, each list ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assignment([Vec<usize>; 3]);

impl Assignment {
    pub(crate) fn rows(&self, part: Part) -> &[usize] {
        &self.0[part as usize]
    }

    /// Each split's rows in ascending order, from the split of every row (`u8::MAX`: none).
    /// One pass puts them in order, without sorting millions of indices.
    fn of(part_of: &[u8]) -> Assignment {
        let mut sizes = [0usize; 3];
        for &part in part_of {
            if let Some(size) = sizes.get_mut(usize::from(part)) {
                *size += 1;
            }
        }
        let mut out = sizes.map(Vec::with_capacity);
        for (row, &part) in part_of.iter().enumerate() {
            if let Some(rows) = out.get_mut(usize::from(part)) {
                rows.push(row);
            }
        }
        Assignment(out)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum AssignError {
    #[error("nothing to split: the table has no rows")]
    NoRows,
    #[error("the {part} split is empty: {rows} rows × {ratio} rounds to 0")]
    EmptySplit {
        part: &'static str,
        rows: usize,
        ratio: f64,
    },
    #[error("class `{class}` of column `{column}` has {count} row(s), too few to stratify into {needed} splits")]
    SmallClass {
        column: String,
        class: String,
        count: usize,
        needed: usize,
    },
    #[error("column `{column}` has {groups} distinct group(s), too few for {needed} splits")]
    TooFewGroups {
        column: String,
        groups: usize,
        needed: usize,
    },
}

impl AssignError {
    /// How to fix it, for the renderer to show apart from the message.
    pub(crate) fn hint(&self) -> Option<String> {
        match self {
            AssignError::NoRows => None,
            AssignError::EmptySplit { .. } => Some("use more data or a larger ratio".into()),
            AssignError::SmallClass { needed, .. } => Some(format!(
                "each class needs at least {needed} rows; merge or drop rare classes, or set the val ratio to 0"
            )),
            AssignError::TooFewGroups { .. } => Some(
                "a grouped split puts each group in one split, so it needs at least one group per split"
                    .into(),
            ),
        }
    }
}

/// The splits that are to receive rows.
fn wanted(ratios: &Ratios) -> Vec<Part> {
    Part::ALL
        .into_iter()
        .filter(|&p| ratios.get(p) > 0.0)
        .collect()
}

/// Divides `n` rows among the splits in proportion to `ratios` by largest remainder: everyone
/// gets the floor of their exact share, and the rows left over go to the largest fractional
/// parts, ties to the earlier split (train, val, test). Remainders are compared as integers in
/// millionths, so float noise (`50 × 0.15 = 7.499…`) cannot decide a tie.
pub(crate) fn allocate(n: usize, ratios: &Ratios) -> [usize; 3] {
    let sum: f64 = Part::ALL.iter().map(|&p| ratios.get(p)).sum();
    let mut counts = [0usize; 3];
    let mut remainders = [0u64; 3];
    for part in Part::ALL {
        let exact = n as f64 * ratios.get(part) / sum;
        let floor = (exact + 1e-9).floor();
        counts[part as usize] = floor as usize;
        remainders[part as usize] = ((exact - floor).max(0.0) * 1e6).round() as u64;
    }
    let mut order = wanted(ratios);
    order.sort_by_key(|&p| (Reverse(remainders[p as usize]), p));
    let left = n.saturating_sub(counts.iter().sum());
    for &p in order.iter().cycle().take(left) {
        counts[p as usize] += 1;
    }
    counts
}

/// Deals `rows` (already shuffled) out in order: the first `counts[train]` to train, and so on,
/// marking each row's split in `part_of`.
fn deal<R: Copy + Into<u64>>(rows: &[R], counts: [usize; 3], part_of: &mut [u8]) {
    let mut start = 0;
    for part in Part::ALL {
        let end = start + counts[part as usize];
        for &row in &rows[start..end] {
            part_of[row.into() as usize] = part as u8;
        }
        start = end;
    }
}

fn check_not_empty(counts: [usize; 3], n: usize, ratios: &Ratios) -> Result<(), AssignError> {
    for part in wanted(ratios) {
        if counts[part as usize] == 0 {
            return Err(AssignError::EmptySplit {
                part: part.name(),
                rows: n,
                ratio: ratios.get(part),
            });
        }
    }
    Ok(())
}

/// All rows shuffled together and cut by the ratios.
pub(crate) fn random(n: usize, ratios: &Ratios, seed: u64) -> Result<Assignment, AssignError> {
    if n == 0 {
        return Err(AssignError::NoRows);
    }
    let counts = allocate(n, ratios);
    check_not_empty(counts, n, ratios)?;
    let mut rows: Vec<u64> = (0..n as u64).collect();
    SplitMix64::new(seed).shuffle(&mut rows);
    let mut part_of = vec![u8::MAX; n];
    deal(&rows, counts, &mut part_of);
    Ok(Assignment::of(&part_of))
}

/// Rows grouped by key, keys in sorted order, each key's rows ascending.
fn by_key(keys: &Coded) -> Vec<(&str, Vec<u32>)> {
    let mut counts = vec![0usize; keys.names.len()];
    for &code in &keys.codes {
        counts[code as usize] += 1;
    }
    let mut rows: Vec<Vec<u32>> = counts.iter().map(|&n| Vec::with_capacity(n)).collect();
    for (row, &code) in (0u32..).zip(&keys.codes) {
        rows[code as usize].push(row);
    }
    keys.sorted_codes()
        .into_iter()
        .map(|code| {
            let code = code as usize;
            (keys.names[code].as_str(), std::mem::take(&mut rows[code]))
        })
        .collect()
}

/// Each class of `labels` shuffled and cut by the ratios on its own, classes in sorted order
/// drawing from one generator. A class is guaranteed a row in every split with a ratio above 0:
/// when rounding leaves such a split without one, it takes a row from the class's largest split.
pub(crate) fn stratified(
    labels: &Coded,
    column: &str,
    ratios: &Ratios,
    seed: u64,
) -> Result<Assignment, AssignError> {
    if labels.is_empty() {
        return Err(AssignError::NoRows);
    }
    let wanted = wanted(ratios);
    let classes = by_key(labels);
    if let Some((class, rows)) = classes.iter().find(|(_, rows)| rows.len() < wanted.len()) {
        return Err(AssignError::SmallClass {
            column: column.to_string(),
            class: class.to_string(),
            count: rows.len(),
            needed: wanted.len(),
        });
    }
    let mut rng = SplitMix64::new(seed);
    let mut part_of = vec![u8::MAX; labels.len()];
    for (_, mut rows) in classes {
        rng.shuffle(&mut rows);
        let mut counts = allocate(rows.len(), ratios);
        for &part in &wanted {
            if counts[part as usize] == 0 {
                let largest = Part::ALL
                    .into_iter()
                    .max_by_key(|&p| (counts[p as usize], Reverse(p)))
                    .expect("three parts");
                counts[largest as usize] -= 1;
                counts[part as usize] += 1;
            }
        }
        deal(&rows, counts, &mut part_of);
    }
    Ok(Assignment::of(&part_of))
}

/// Whole groups dealt to the splits. The sorted distinct group keys are shuffled, then each group
/// in turn goes to the split furthest below its target number of rows (ties to the earlier
/// split), except that once there are only as many groups left as splits still without any,
/// they go to those splits. Row fractions therefore approach the ratios as well as group sizes
/// allow; no group is ever divided.
pub(crate) fn grouped(
    groups: &Coded,
    column: &str,
    ratios: &Ratios,
    seed: u64,
) -> Result<Assignment, AssignError> {
    let n = groups.len();
    if n == 0 {
        return Err(AssignError::NoRows);
    }
    let wanted = wanted(ratios);
    let by_group = by_key(groups);
    if by_group.len() < wanted.len() {
        return Err(AssignError::TooFewGroups {
            column: column.to_string(),
            groups: by_group.len(),
            needed: wanted.len(),
        });
    }
    let sum: f64 = Part::ALL.iter().map(|&p| ratios.get(p)).sum();
    let target = Part::ALL.map(|p| n as f64 * ratios.get(p) / sum);
    // Positions in `by_group` (sorted keys), shuffled.
    let mut keys: Vec<usize> = (0..by_group.len()).collect();
    SplitMix64::new(seed).shuffle(&mut keys);

    let mut filled = [0usize; 3];
    let mut part_of = vec![u8::MAX; n];
    for (i, key) in keys.iter().enumerate() {
        let left = keys.len() - i;
        let unserved: Vec<Part> = wanted
            .iter()
            .copied()
            .filter(|&p| filled[p as usize] == 0)
            .collect();
        let candidates = if left <= unserved.len() {
            &unserved
        } else {
            &wanted
        };
        let mut best = candidates[0];
        for &p in &candidates[1..] {
            let deficit = |p: Part| target[p as usize] - filled[p as usize] as f64;
            if deficit(p) > deficit(best) {
                best = p;
            }
        }
        let rows = &by_group[*key].1;
        filled[best as usize] += rows.len();
        for &row in rows {
            part_of[row as usize] = best as u8;
        }
    }
    Ok(Assignment::of(&part_of))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(train: f64, val: f64, test: f64) -> Ratios {
        Ratios::new(train, val, test)
    }

    #[test]
    fn allocation_uses_largest_remainders_with_ties_to_the_earlier_split() {
        assert_eq!(allocate(50, &r(0.7, 0.15, 0.15)), [35, 8, 7]);
        assert_eq!(allocate(150, &r(0.7, 0.15, 0.15)), [105, 23, 22]);
        assert_eq!(allocate(10, &r(0.8, 0.1, 0.1)), [8, 1, 1]);
        assert_eq!(allocate(7, &r(0.5, 0.0, 0.5)), [4, 0, 3]);
        assert_eq!(allocate(3, &r(0.8, 0.1, 0.1)), [3, 0, 0]);
        assert_eq!(allocate(1000, &r(0.6, 0.2, 0.2)), [600, 200, 200]);
        for n in 0..200 {
            assert_eq!(allocate(n, &r(0.3, 0.3, 0.4)).iter().sum::<usize>(), n);
        }
    }

    #[test]
    fn random_is_a_partition_fixed_by_the_seed() {
        let a = random(100, &r(0.7, 0.15, 0.15), 1).unwrap();
        assert_eq!(a, random(100, &r(0.7, 0.15, 0.15), 1).unwrap());
        assert_ne!(a, random(100, &r(0.7, 0.15, 0.15), 2).unwrap());
        let mut all: Vec<usize> = Part::ALL.iter().flat_map(|&p| a.rows(p).to_vec()).collect();
        assert_eq!(Part::ALL.map(|p| a.rows(p).len()), [70, 15, 15]);
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert!(a.rows(Part::Train).windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn random_refuses_an_empty_split() {
        let e = random(3, &r(0.8, 0.1, 0.1), 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the val split is empty: 3 rows × 0.1 rounds to 0"
        );
        assert_eq!(e.hint().as_deref(), Some("use more data or a larger ratio"));
        assert_eq!(random(0, &r(0.5, 0.0, 0.5), 0), Err(AssignError::NoRows));
    }

    fn coded(keys: &[String]) -> Coded {
        Coded::of(keys.iter().map(String::as_str))
    }

    fn labels(spec: &[(&str, usize)]) -> Vec<String> {
        spec.iter()
            .flat_map(|&(k, n)| std::iter::repeat_n(k.to_string(), n))
            .collect()
    }

    #[test]
    fn stratified_keeps_class_proportions_in_every_split() {
        let y = labels(&[("b", 50), ("a", 30), ("c", 20)]);
        let a = stratified(&coded(&y), "y", &r(0.7, 0.15, 0.15), 9).unwrap();
        let count = |part, class| a.rows(part).iter().filter(|&&i| y[i] == class).count();
        assert_eq!(
            [
                count(Part::Train, "b"),
                count(Part::Val, "b"),
                count(Part::Test, "b")
            ],
            [35, 8, 7]
        );
        assert_eq!(
            [
                count(Part::Train, "a"),
                count(Part::Val, "a"),
                count(Part::Test, "a")
            ],
            [21, 5, 4]
        );
        assert_eq!(
            [
                count(Part::Train, "c"),
                count(Part::Val, "c"),
                count(Part::Test, "c")
            ],
            [14, 3, 3]
        );
        assert_eq!(
            a,
            stratified(&coded(&y), "y", &r(0.7, 0.15, 0.15), 9).unwrap()
        );
    }

    #[test]
    fn stratified_gives_every_class_a_row_in_every_split() {
        // 3 × (0.8, 0.1, 0.1) rounds to (3, 0, 0); each split still gets the class.
        let y = labels(&[("a", 3), ("b", 30)]);
        let a = stratified(&coded(&y), "y", &r(0.8, 0.1, 0.1), 0).unwrap();
        for part in Part::ALL {
            assert_eq!(a.rows(part).iter().filter(|&&i| y[i] == "a").count(), 1);
        }
    }

    #[test]
    fn stratified_refuses_classes_smaller_than_the_split_count() {
        let y = labels(&[("a", 2), ("b", 30)]);
        let e = stratified(&coded(&y), "species", &r(0.8, 0.1, 0.1), 0).unwrap_err();
        assert_eq!(
            e,
            AssignError::SmallClass {
                column: "species".into(),
                class: "a".into(),
                count: 2,
                needed: 3
            }
        );
        // With no val split two rows are enough.
        assert!(stratified(&coded(&y), "species", &r(0.8, 0.0, 0.2), 0).is_ok());
    }

    #[test]
    fn grouped_never_divides_a_group() {
        let g: Vec<String> = (0..200).map(|i| format!("g{}", (i * 7) % 23)).collect();
        let a = grouped(&coded(&g), "g", &r(0.6, 0.2, 0.2), 5).unwrap();
        let groups_in = |part| {
            a.rows(part)
                .iter()
                .map(|&i| g[i].clone())
                .collect::<std::collections::BTreeSet<_>>()
        };
        let (tr, va, te) = (
            groups_in(Part::Train),
            groups_in(Part::Val),
            groups_in(Part::Test),
        );
        assert!(tr.is_disjoint(&va) && tr.is_disjoint(&te) && va.is_disjoint(&te));
        assert_eq!(tr.len() + va.len() + te.len(), 23);
        let sizes = Part::ALL.map(|p| a.rows(p).len());
        assert_eq!(sizes.iter().sum::<usize>(), 200);
        // Groups of 8 or 9 rows: each split lands within one group of its target.
        for (size, target) in sizes.iter().zip([120.0, 40.0, 40.0]) {
            assert!((*size as f64 - target).abs() <= 9.0, "{sizes:?}");
        }
        assert_eq!(a, grouped(&coded(&g), "g", &r(0.6, 0.2, 0.2), 5).unwrap());
        assert_ne!(a, grouped(&coded(&g), "g", &r(0.6, 0.2, 0.2), 6).unwrap());
    }

    #[test]
    fn grouped_fills_every_split_when_there_are_enough_groups() {
        // One huge group and two tiny ones: the tiny ones must still reach val and test.
        let mut g = labels(&[("big", 100)]);
        g.extend(labels(&[("x", 1), ("y", 1)]));
        for seed in 0..20 {
            let a = grouped(&coded(&g), "g", &r(0.8, 0.1, 0.1), seed).unwrap();
            assert!(
                Part::ALL.iter().all(|&p| !a.rows(p).is_empty()),
                "seed {seed}"
            );
        }
        let e = grouped(
            &coded(&labels(&[("a", 5), ("b", 5)])),
            "g",
            &r(0.8, 0.1, 0.1),
            0,
        )
        .unwrap_err();
        assert_eq!(
            e,
            AssignError::TooFewGroups {
                column: "g".into(),
                groups: 2,
                needed: 3
            }
        );
    }
}
