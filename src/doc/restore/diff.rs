//! A shortest edit script between two sequences of numbers: common prefix
//! and suffix, then Myers' diff of the middle. Knows nothing of yrs: the
//! callers number what they compare (characters, interned encodings).

/// Past this many differences between two sequences, the minimal diff is
/// abandoned for a wholesale replacement of the part that differs. Keeps the
/// diff's memory (about d² words for its trace) bounded.
const MAX_EDIT_DISTANCE: usize = 1000;

/// Comparisons one diff may spend before giving up the same way.
const WORK_BUDGET: usize = 10_000_000;

/// One step of an edit script from sequence `a` to sequence `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// The next `n` items of `a` are the next `n` of `b`.
    Keep(usize),
    /// The next `del` items of `a` give way to the next `ins` items of `b`.
    Change { del: usize, ins: usize },
}

/// Collects steps, merging neighbours of the same kind and dropping empty
/// ones, so that every change run sits between two keeps.
#[derive(Default)]
struct Script(Vec<Step>);

impl Script {
    fn push(&mut self, step: Step) {
        match (self.0.last_mut(), step) {
            (_, Step::Keep(0)) | (_, Step::Change { del: 0, ins: 0 }) => {}
            (Some(Step::Keep(n)), Step::Keep(more)) => *n += more,
            (Some(Step::Change { del, ins }), Step::Change { del: d, ins: i }) => {
                *del += d;
                *ins += i;
            }
            _ => self.0.push(step),
        }
    }
}

/// A shortest edit script from `a` to `b` (within [`MAX_EDIT_DISTANCE`] and
/// [`WORK_BUDGET`]; beyond them, a correct but longer one).
pub(super) fn edit_script(a: &[u32], b: &[u32]) -> Vec<Step> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a_rest, b_rest) = (&a[prefix..], &b[prefix..]);
    let suffix = a_rest
        .iter()
        .rev()
        .zip(b_rest.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let a_mid = &a_rest[..a_rest.len() - suffix];
    let b_mid = &b_rest[..b_rest.len() - suffix];

    let mut script = Script::default();
    script.push(Step::Keep(prefix));
    match myers(a_mid, b_mid) {
        Some(steps) => steps.into_iter().for_each(|s| script.push(s)),
        None => script.push(Step::Change {
            del: a_mid.len(),
            ins: b_mid.len(),
        }),
    }
    script.push(Step::Keep(suffix));
    script.0
}

/// Myers' O((n + m) · d) greedy diff ("An O(ND) Difference Algorithm and Its
/// Variations", 1986). `None` past the limits.
fn myers(a: &[u32], b: &[u32]) -> Option<Vec<Step>> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    if n == 0 || m == 0 {
        return Some(vec![Step::Change {
            del: a.len(),
            ins: b.len(),
        }]);
    }
    let max_d = (n + m).min(MAX_EDIT_DISTANCE as isize);
    let offset = max_d + 1;
    // v[offset + k]: the furthest x reached on diagonal k = x - y.
    let mut v = vec![0isize; (2 * max_d + 3) as usize];
    // The diagonals -d..=d of v after each round d, to walk the path back.
    let mut trace: Vec<Vec<isize>> = Vec::new();
    let mut work = 0usize;
    for d in 0..=max_d {
        let mut k = -d;
        while k <= d {
            let i = (offset + k) as usize;
            let down = k == -d || (k != d && v[i - 1] < v[i + 1]);
            let mut x = if down { v[i + 1] } else { v[i - 1] + 1 };
            let mut y = x - k;
            let start = x;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            work += 1 + (x - start) as usize;
            v[i] = x;
            if x >= n && y >= m {
                trace.push(v[(offset - d) as usize..=(offset + d) as usize].to_vec());
                return Some(backtrack(&trace, n, m));
            }
            k += 2;
        }
        if work > WORK_BUDGET {
            return None;
        }
        trace.push(v[(offset - d) as usize..=(offset + d) as usize].to_vec());
    }
    None
}

fn backtrack(trace: &[Vec<isize>], n: isize, m: isize) -> Vec<Step> {
    let mut reversed = Vec::new();
    let (mut x, mut y) = (n, m);
    for d in (1..trace.len() as isize).rev() {
        let before = &trace[(d - 1) as usize];
        let at = |k: isize| before[(k + d - 1) as usize];
        let k = x - y;
        let down = k == -d || (k != d && at(k - 1) < at(k + 1));
        let prev_k = if down { k + 1 } else { k - 1 };
        let prev_x = at(prev_k);
        let snake_start = if down { prev_x } else { prev_x + 1 };
        reversed.push(Step::Keep((x - snake_start) as usize));
        reversed.push(if down {
            Step::Change { del: 0, ins: 1 }
        } else {
            Step::Change { del: 1, ins: 0 }
        });
        x = prev_x;
        y = prev_x - prev_k;
    }
    debug_assert_eq!(x, y);
    reversed.push(Step::Keep(x as usize));
    let mut script = Script::default();
    reversed.into_iter().rev().for_each(|s| script.push(s));
    script.0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Applies a script to `a`; must give `b`.
    fn apply_script(a: &[u32], b: &[u32], script: &[Step]) -> Vec<u32> {
        let (mut out, mut ai, mut bi) = (Vec::new(), 0, 0);
        for step in script {
            match *step {
                Step::Keep(n) => {
                    assert_eq!(a[ai..ai + n], b[bi..bi + n]);
                    out.extend_from_slice(&a[ai..ai + n]);
                    ai += n;
                    bi += n;
                }
                Step::Change { del, ins } => {
                    out.extend_from_slice(&b[bi..bi + ins]);
                    ai += del;
                    bi += ins;
                }
            }
        }
        assert_eq!(ai, a.len());
        out
    }

    fn lcs(a: &[u32], b: &[u32]) -> usize {
        let mut row = vec![0usize; b.len() + 1];
        for x in a {
            let mut diag = 0;
            for (j, y) in b.iter().enumerate() {
                let up = row[j + 1];
                row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
                diag = up;
            }
        }
        row[b.len()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// The script is valid and as short as an edit script can be.
        #[test]
        fn edit_scripts_are_shortest(
            a in prop::collection::vec(0u32..4, 0..40),
            b in prop::collection::vec(0u32..4, 0..40),
        ) {
            let script = edit_script(&a, &b);
            prop_assert_eq!(apply_script(&a, &b, &script), b.clone());
            let kept: usize = script.iter().map(|s| match s { Step::Keep(n) => *n, _ => 0 }).sum();
            prop_assert_eq!(kept, lcs(&a, &b));
            for pair in script.windows(2) {
                prop_assert!(std::mem::discriminant(&pair[0]) != std::mem::discriminant(&pair[1]));
            }
        }
    }
}
