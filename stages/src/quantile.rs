//! Exact quantiles of large numeric columns, without sorting them and without copying them.
//!
//! `clean`'s IQR fences and median fill and `normalize`'s robust scaling need a few order
//! statistics of columns of millions of values. Sorting a copy costs a copy of the column in fresh
//! memory (page faults are a large share of the data stages' time) and n log n comparisons.
//! Instead, three passes over the values as they lie: their range; a histogram of 2^16 buckets,
//! equally wide over that range; then only the values in the buckets that hold the wanted ranks
//! are copied and selected among. Bucketing by `(x - min) * scale` never reorders values (IEEE
//! rounding is monotone), so the rank of every value is the rank it has in the sorted column and
//! the results are bit for bit those of sorting (the tests check against a sort). A column whose
//! values crowd into one bucket (a huge outlier, infinities) degrades to copying that bucket,
//! which is the old cost, never a wrong answer.

use arrow::buffer::BooleanBuffer;

const BUCKETS: usize = 1 << 16;

/// One piece of a column: its values and which of them count (`None`: all do). NaN never
/// counts.
#[derive(Clone, Copy)]
pub(crate) struct Part<'a> {
    pub(crate) values: &'a [f64],
    pub(crate) mask: Option<&'a BooleanBuffer>,
}

impl<'a> Part<'a> {
    pub(crate) fn new(values: &'a [f64], mask: Option<&'a BooleanBuffer>) -> Part<'a> {
        Part { values, mask }
    }
}

/// Calls `f` with every value that counts, pieces in order, each in row order: sums taken
/// through it add in the order of the column. The mask is read a 64-bit word at a time, so that
/// the usual word (every row counts) costs no test per value.
#[inline]
pub(crate) fn each(parts: &[Part<'_>], mut f: impl FnMut(f64)) {
    let mut value = |x: f64| {
        if !x.is_nan() {
            f(x)
        }
    };
    for part in parts {
        let Some(mask) = part.mask else {
            part.values.iter().for_each(|&x| value(x));
            continue;
        };
        let chunks = mask.inner().bit_chunks(mask.offset(), mask.len());
        let words = chunks
            .iter()
            .chain(std::iter::once(chunks.remainder_bits()));
        for (block, word) in part.values.chunks(64).zip(words) {
            if word == u64::MAX {
                block.iter().for_each(|&x| value(x));
            } else {
                let mut word = word;
                while word != 0 {
                    value(block[word.trailing_zeros() as usize]);
                    word &= word - 1;
                }
            }
        }
    }
}

/// The values that count and the mean of them, summed in column order; `None` without any.
pub(crate) fn count_and_mean(parts: &[Part<'_>]) -> Option<(usize, f64)> {
    let (mut n, mut sum) = (0usize, 0.0f64);
    each(parts, |x| {
        n += 1;
        sum += x;
    });
    (n > 0).then(|| (n, sum / n as f64))
}

/// The `ps` quantiles (each in `[0, 1]`) of the values of `parts` that count, each interpolated
/// linearly between the two nearest ranks (NumPy's default, `method="linear"`), values ordered
/// by `f64::total_cmp`. `None` when no value counts.
pub(crate) fn quantiles(parts: &[Part<'_>], ps: &[f64]) -> Option<Vec<f64>> {
    let (mut n, mut min, mut max) = (0usize, f64::INFINITY, f64::NEG_INFINITY);
    each(parts, |x| {
        n += 1;
        min = min.min(x);
        max = max.max(x);
    });
    if n == 0 {
        return None;
    }
    // Equal values that are not zero have one representation, so every rank holds `min`
    // (zeros may be +0 and -0, which `total_cmp` orders).
    if min == max && min != 0.0 {
        return Some(vec![min; ps.len()]);
    }
    // An infinite range (or one too narrow to divide) puts values in the first and last
    // buckets only: still in order, just more of them to copy.
    let scale = BUCKETS as f64 / (max - min);
    let scale = if scale.is_finite() { scale } else { 0.0 };
    let bucket = |x: f64| (((x - min) * scale) as usize).min(BUCKETS - 1);

    let mut counts = vec![0usize; BUCKETS];
    each(parts, |x| counts[bucket(x)] += 1);

    // The ranks wanted: the two around each quantile's position.
    let positions: Vec<f64> = ps.iter().map(|&p| p * (n - 1) as f64).collect();
    let mut ranks: Vec<usize> = positions
        .iter()
        .flat_map(|&pos| [pos.floor() as usize, pos.ceil() as usize])
        .collect();
    ranks.sort_unstable();
    ranks.dedup();
    // Each wanted rank's bucket and the rank of that bucket's first value.
    let mut found: Vec<(usize, usize, usize)> = Vec::with_capacity(ranks.len());
    let (mut first, mut b) = (0usize, 0usize);
    for &rank in &ranks {
        while first + counts[b] <= rank {
            first += counts[b];
            b += 1;
        }
        found.push((rank, b, first));
    }
    // The values of those buckets, copied.
    let mut slot = vec![u8::MAX; BUCKETS];
    let mut held: Vec<Vec<f64>> = Vec::new();
    for &(_, b, _) in &found {
        if slot[b] == u8::MAX {
            slot[b] = held.len() as u8;
            held.push(Vec::with_capacity(counts[b]));
        }
    }
    each(parts, |x| {
        let s = slot[bucket(x)];
        if s != u8::MAX {
            held[usize::from(s)].push(x);
        }
    });
    let mut value = |rank: usize| -> f64 {
        let &(_, b, first) = found
            .iter()
            .find(|f| f.0 == rank)
            .expect("every rank found");
        let values = &mut held[usize::from(slot[b])];
        *values
            .select_nth_unstable_by(rank - first, f64::total_cmp)
            .1
    };
    Some(
        positions
            .iter()
            .map(|&pos| {
                let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
                let (low, high) = (value(lo), value(hi));
                low + (high - low) * (pos - lo as f64)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// The `q` quantile of sorted, non-empty values, as [`quantiles`] computes it.
    fn sorted_quantile(sorted: &[f64], q: f64) -> f64 {
        let pos = q * (sorted.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
    }

    const PS: [f64; 9] = [0.0, 0.1, 0.25, 0.333, 0.5, 0.6, 0.75, 0.9, 1.0];

    /// The quantiles by sorting a copy of the values that count.
    fn by_sorting(parts: &[Part<'_>], ps: &[f64]) -> Option<Vec<f64>> {
        let mut all = Vec::new();
        each(parts, |x| all.push(x));
        all.sort_by(f64::total_cmp);
        (!all.is_empty()).then(|| ps.iter().map(|&p| sorted_quantile(&all, p)).collect())
    }

    fn bits(v: Option<Vec<f64>>) -> Option<Vec<u64>> {
        v.map(|v| v.into_iter().map(f64::to_bits).collect())
    }

    fn check(parts: &[Part<'_>], what: &str) {
        assert_eq!(
            bits(quantiles(parts, &PS)),
            bits(by_sorting(parts, &PS)),
            "{what}"
        );
    }

    fn random(n: usize, seed: u64, f: impl Fn(u64) -> f64) -> Vec<f64> {
        let mut rng = SplitMix64::new(seed);
        (0..n).map(|_| f(rng.next_u64())).collect()
    }

    #[test]
    fn quantiles_are_those_of_the_sorted_values() {
        // Decimals in a narrow range (as a CSV gives them), with many ties.
        let narrow = random(100_000, 1, |r| 50.0 + (r % 100_000) as f64 / 1e3);
        check(&[Part::new(&narrow, None)], "narrow");
        let ties = random(10_001, 2, |r| (r % 7) as f64);
        check(&[Part::new(&ties, None)], "ties");
        // A huge outlier crowds every other value into the first bucket.
        let mut outlier = narrow.clone();
        outlier.push(1e300);
        outlier.push(-1e300);
        check(&[Part::new(&outlier, None)], "outlier");
        // Infinities, NaN (which never counts) and both zeros.
        let mut odd = random(5_000, 3, |r| (r % 2_000) as f64 - 1_000.0);
        odd.extend([f64::INFINITY, f64::NEG_INFINITY, f64::NAN, -0.0, 0.0, -0.0]);
        check(&[Part::new(&odd, None)], "infinities");
        let zeros = [0.0, -0.0, 0.0, -0.0, -0.0];
        check(&[Part::new(&zeros, None)], "zeros");
        let constant = [2.5; 9];
        check(&[Part::new(&constant, None)], "constant");
        let tiny = [5e-324, 1e-323, 0.0, 5e-324];
        check(&[Part::new(&tiny, None)], "subnormal range");
        check(&[Part::new(&[7.0], None)], "one value");
    }

    #[test]
    fn masks_and_pieces_count_only_the_values_they_say() {
        let values = random(30_000, 4, |r| (r % 1_000_000) as f64 * 0.37 - 5e4);
        let mask = BooleanBuffer::collect_bool(values.len(), |i| i % 3 != 0);
        let (a, b) = values.split_at(12_345);
        let (ma, mb) = (mask.slice(0, a.len()), mask.slice(a.len(), b.len()));
        check(
            &[Part::new(a, Some(&ma)), Part::new(b, Some(&mb))],
            "masked pieces",
        );
        check(&[Part::new(&[], None), Part::new(b, None)], "empty piece");
        let none = BooleanBuffer::new_unset(3);
        assert_eq!(
            quantiles(&[Part::new(&[1.0, 2.0, 3.0], Some(&none))], &PS),
            None
        );
        assert_eq!(quantiles(&[Part::new(&[f64::NAN], None)], &PS), None);
        assert_eq!(
            count_and_mean(&[Part::new(&[1.0, f64::NAN, 4.0], None)]),
            Some((2, 2.5))
        );
    }
}
