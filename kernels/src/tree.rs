//! ONNX-ML `TreeEnsembleClassifier` / `TreeEnsembleRegressor` evaluation over
//! a flat node table built by the compiler.
//!
//! The table comes from an untrusted file, so nothing here indexes with an
//! unchecked value: [`validate`] checks a table once at load time, and
//! [`tree_ensemble`] re-checks every index it follows and bounds every
//! traversal by the node count, returning [`TreeError`] instead of
//! panicking or looping.
//!
//! Node layout: 4 `i32` per node, `[feature, a, b, flags]`. Branch nodes
//! send a row to child `a` when the comparison (or the missing-value rule)
//! holds and to `b` otherwise; leaf nodes name the range `a..a + b` of
//! `leaf_targets` / `leaf_weights`.
//!
//! Acyclicity: a table whose branch nodes all point at higher-numbered
//! children (any topological order, e.g. pre-order per tree) is acyclic by
//! construction and is checked in O(nodes). Other tables are walked path by
//! path, which accepts any tree or DAG (shared children, as in LightGBM's
//! set-membership splits) up to [`MAX_UNORDERED_DEPTH`] deep.

use core::fmt;

/// How the leaf weights of the trees combine per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Sum over trees.
    Sum,
    /// Sum over trees divided by the number of trees.
    Average,
    /// Largest weight over the trees that hit the target.
    Max,
    /// Smallest weight over the trees that hit the target.
    Min,
}

/// Why a tree table was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeError {
    /// An index or field is out of range. `index` is the position of the
    /// offending entry: a node for `feature`, `true child`, `false child`,
    /// `node mode` and `leaf range`; an entry of `leaf_targets` for
    /// `leaf target`; a tree for `root` and `unordered tree`.
    BadIndex {
        /// Which field is bad.
        what: &'static str,
        /// Where it is (see above).
        index: usize,
    },
    /// A path from the root of `tree` revisits a node.
    Cycle {
        /// The tree (index into `roots`).
        tree: usize,
    },
    /// Slice lengths are inconsistent with each other or with the shapes.
    Lengths,
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TreeError::BadIndex { what, index } => {
                write!(f, "tree ensemble: bad {what} at index {index}")
            }
            TreeError::Cycle { tree } => write!(f, "tree ensemble: tree {tree} contains a cycle"),
            TreeError::Lengths => write!(f, "tree ensemble: inconsistent table lengths"),
        }
    }
}

/// Leaf mode value in `flags & 0xff`.
const LEAF: i32 = 6;
/// Flag bit: a NaN feature value goes to the true child.
const MISSING_TRUE: i32 = 0x100;
/// Deepest path [`validate`] follows in a table that is not in topological
/// order (its path stack is one bit per level, kept on the call stack).
pub const MAX_UNORDERED_DEPTH: usize = 4096;
/// Budget of node steps for the path walk of unordered tables.
const UNORDERED_WORK: usize = 1 << 28;
/// Bit pattern marking a Max/Min score no tree has set yet (a NaN payload
/// that arithmetic never produces).
const UNSET: u32 = 0x7fc0_dead;

/// `v` as an index below `len`, else `BadIndex { what, index: at }`.
#[inline]
fn idx(v: i32, len: usize, what: &'static str, at: usize) -> Result<usize, TreeError> {
    match usize::try_from(v) {
        Ok(u) if u < len => Ok(u),
        _ => Err(TreeError::BadIndex { what, index: at }),
    }
}

/// Node count, checking `nodes` and `thresholds` agree.
fn node_count(nodes: &[i32], thresholds: &[f32]) -> Result<usize, TreeError> {
    if !nodes.len().is_multiple_of(4) || nodes.len() / 4 != thresholds.len() {
        return Err(TreeError::Lengths);
    }
    Ok(thresholds.len())
}

/// The leaf range `a..a + b` of node `at`, checked against `len`.
#[inline]
fn leaf_range(a: i32, b: i32, len: usize, at: usize) -> Result<core::ops::Range<usize>, TreeError> {
    let bad = TreeError::BadIndex {
        what: "leaf range",
        index: at,
    };
    let start = usize::try_from(a).map_err(|_| bad)?;
    let count = usize::try_from(b).map_err(|_| bad)?;
    match start.checked_add(count) {
        Some(end) if end <= len => Ok(start..end),
        _ => Err(bad),
    }
}

/// Checks every index (features < `features`, children < node count, leaf ranges inside the leaf arrays, targets < base.len(), roots in range, lengths consistent) so that tree_ensemble cannot panic or loop forever; the engine calls this once at load. tree_ensemble must ALSO never panic or loop forever on any input (bound each traversal by the node count) and return Err instead.
///
/// `n_targets` is the length of the base values. Every entry of
/// `leaf_targets` is checked, used or not. Tables in topological order
/// (every child numbered above its parent) are checked in O(nodes); others
/// are walked path by path and rejected with `BadIndex { what: "unordered
/// tree", .. }` if a path is deeper than [`MAX_UNORDERED_DEPTH`] or the walk
/// is too long, and with [`TreeError::Cycle`] if a path revisits a node.
pub fn validate(
    features: usize,
    nodes: &[i32],
    thresholds: &[f32],
    leaf_targets: &[i32],
    leaf_weights: &[f32],
    roots: &[i32],
    n_targets: usize,
) -> Result<(), TreeError> {
    let n = node_count(nodes, thresholds)?;
    if leaf_targets.len() != leaf_weights.len() {
        return Err(TreeError::Lengths);
    }
    for (e, &t) in leaf_targets.iter().enumerate() {
        idx(t, n_targets, "leaf target", e)?;
    }
    let mut ordered = true;
    for (i, nd) in nodes.chunks_exact(4).enumerate() {
        let (feature, a, b, flags) = (nd[0], nd[1], nd[2], nd[3]);
        match flags & 0xff {
            0..=5 => {
                idx(feature, features, "feature", i)?;
                let t = idx(a, n, "true child", i)?;
                let f = idx(b, n, "false child", i)?;
                ordered &= t > i && f > i;
            }
            LEAF => {
                leaf_range(a, b, leaf_targets.len(), i)?;
            }
            _ => {
                return Err(TreeError::BadIndex {
                    what: "node mode",
                    index: i,
                });
            }
        }
    }
    for (t, &r) in roots.iter().enumerate() {
        idx(r, n, "root", t)?;
    }
    if !ordered {
        let mut work = UNORDERED_WORK;
        for (t, &r) in roots.iter().enumerate() {
            // In range: checked above.
            walk_paths(nodes, n, r as usize, t, &mut work)?;
        }
    }
    Ok(())
}

/// Visits every root-to-leaf path of the tree rooted at `root` (indices
/// already validated), depth first, without a node stack: the current path
/// is one bit per level (0 = true child) and backtracking re-walks it from
/// the root.
fn walk_paths(
    nodes: &[i32],
    n: usize,
    root: usize,
    tree: usize,
    work: &mut usize,
) -> Result<(), TreeError> {
    let too_big = TreeError::BadIndex {
        what: "unordered tree",
        index: tree,
    };
    let is_branch = |i: usize| nodes[4 * i + 3] & 0xff != LEAF;
    let child = |i: usize, false_side: bool| nodes[4 * i + 1 + usize::from(false_side)] as usize;
    let mut bits = [0u64; MAX_UNORDERED_DEPTH / 64];
    let bit = |bits: &[u64; MAX_UNORDERED_DEPTH / 64], d: usize| bits[d / 64] >> (d % 64) & 1 == 1;
    let mut depth = 0usize;
    let mut node = root;
    loop {
        while is_branch(node) {
            if depth >= n {
                // n + 1 nodes on one path: some node repeats.
                return Err(TreeError::Cycle { tree });
            }
            if depth >= MAX_UNORDERED_DEPTH {
                return Err(too_big);
            }
            *work = work.checked_sub(1).ok_or(too_big)?;
            bits[depth / 64] &= !(1u64 << (depth % 64));
            depth += 1;
            node = child(node, false);
        }
        // Backtrack to the deepest level that took its true child.
        loop {
            if depth == 0 {
                return Ok(());
            }
            depth -= 1;
            if !bit(&bits, depth) {
                bits[depth / 64] |= 1u64 << (depth % 64);
                break;
            }
        }
        node = root;
        for d in 0..=depth {
            *work = work.checked_sub(1).ok_or(too_big)?;
            node = child(node, bit(&bits, d));
        }
        depth += 1;
    }
}

/// Follows tree `tree` from `root` for one row; returns the leaf's range.
#[inline]
fn find_leaf(
    nodes: &[i32],
    thresholds: &[f32],
    leaf_len: usize,
    x: &[f32],
    root: i32,
    tree: usize,
) -> Result<core::ops::Range<usize>, TreeError> {
    let n = thresholds.len();
    let mut i = idx(root, n, "root", tree)?;
    // An acyclic path visits at most n nodes.
    for _ in 0..n {
        let nd = &nodes[4 * i..4 * i + 4];
        let mode = nd[3] & 0xff;
        if mode == LEAF {
            return leaf_range(nd[1], nd[2], leaf_len, i);
        }
        let v = x[idx(nd[0], x.len(), "feature", i)?];
        let th = thresholds[i];
        let hit = match mode {
            0 => v <= th,
            1 => v < th,
            2 => v >= th,
            3 => v > th,
            4 => v == th,
            5 => v != th,
            _ => {
                return Err(TreeError::BadIndex {
                    what: "node mode",
                    index: i,
                });
            }
        };
        i = if hit || (nd[3] & MISSING_TRUE != 0 && v.is_nan()) {
            idx(nd[1], n, "true child", i)?
        } else {
            idx(nd[2], n, "false child", i)?
        };
    }
    Err(TreeError::Cycle { tree })
}

/// nodes: 4 i32 per node: [feature, a, b, flags]. For a branch: a = true-child node index, b = false-child index,
///   flags & 0xff = mode (0 BRANCH_LEQ, 1 BRANCH_LT, 2 BRANCH_GTE, 3 BRANCH_GT, 4 BRANCH_EQ, 5 BRANCH_NEQ), flags & 0x100 = missing (NaN) goes to the true child.
///   For a leaf: flags & 0xff = 6 (LEAF), a = first index into leaf_targets/leaf_weights, b = count.
/// thresholds[node]; roots[t] = root node of tree t; base[target] = base_values (added after aggregation; len = n_targets).
/// x [rows, features]; y [rows, n_targets] = aggregate over trees of the leaf weights per target, + base.
/// Average divides the sum by the number of trees. Max/Min: per target, over the trees whose leaf has that target (targets no tree hits stay 0 before base).
///
/// Scores accumulate in `f32`, tree by tree, in `roots` order. Without
/// `MISSING_TRUE`, a NaN feature goes wherever the comparison sends it (the
/// false child, except for BRANCH_NEQ), as in onnxruntime. On `Err`, `y` is
/// partly written.
#[allow(
    clippy::too_many_arguments,
    reason = "the flat table is several slices"
)]
pub fn tree_ensemble(
    rows: usize,
    features: usize,
    x: &[f32],
    nodes: &[i32],
    thresholds: &[f32],
    leaf_targets: &[i32],
    leaf_weights: &[f32],
    roots: &[i32],
    base: &[f32],
    aggregate: Aggregate,
    y: &mut [f32],
) -> Result<(), TreeError> {
    node_count(nodes, thresholds)?;
    let nt = base.len();
    if leaf_targets.len() != leaf_weights.len()
        || rows.checked_mul(features) != Some(x.len())
        || rows.checked_mul(nt) != Some(y.len())
    {
        return Err(TreeError::Lengths);
    }
    let unset = f32::from_bits(UNSET);
    let n_trees = roots.len() as f32;
    for row in 0..rows {
        let xr = &x[row * features..(row + 1) * features];
        let yr = &mut y[row * nt..(row + 1) * nt];
        yr.fill(match aggregate {
            Aggregate::Sum | Aggregate::Average => 0.0,
            Aggregate::Max | Aggregate::Min => unset,
        });
        for (t, &root) in roots.iter().enumerate() {
            let range = find_leaf(nodes, thresholds, leaf_targets.len(), xr, root, t)?;
            // In range (checked by find_leaf; the lengths are equal).
            let (targets, weights) = (&leaf_targets[range.clone()], &leaf_weights[range.clone()]);
            for (e, (&target, &w)) in targets.iter().zip(weights).enumerate() {
                let s = &mut yr[idx(target, nt, "leaf target", range.start + e)?];
                match aggregate {
                    Aggregate::Sum | Aggregate::Average => *s += w,
                    Aggregate::Max => {
                        if s.to_bits() == UNSET || w > *s {
                            *s = w;
                        }
                    }
                    Aggregate::Min => {
                        if s.to_bits() == UNSET || w < *s {
                            *s = w;
                        }
                    }
                }
            }
        }
        for (s, &b) in yr.iter_mut().zip(base) {
            if s.to_bits() == UNSET {
                *s = 0.0;
            }
            if aggregate == Aggregate::Average && !roots.is_empty() {
                *s /= n_trees;
            }
            *s += b;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    const LEQ: i32 = 0;
    const LT: i32 = 1;
    const EQ: i32 = 4;

    fn branch(feature: i32, t: i32, f: i32, mode: i32) -> [i32; 4] {
        [feature, t, f, mode]
    }
    fn leaf(first: i32, count: i32) -> [i32; 4] {
        [0, first, count, LEAF]
    }

    /// Two trees over 2 features and 2 targets:
    /// tree 0: x0 <= 0.5 ? leaf{t0: 1, t1: 0.5} : leaf{t0: 2}
    /// tree 1: x1 < 0 (NaN -> true) ? leaf{t1: 3} : (x0 == 1 ? leaf{t0: -1} : leaf{t1: 10})
    struct Table {
        nodes: Vec<i32>,
        thresholds: Vec<f32>,
        leaf_targets: Vec<i32>,
        leaf_weights: Vec<f32>,
        roots: Vec<i32>,
    }

    fn two_trees() -> Table {
        let nodes = [
            branch(0, 1, 2, LEQ),
            leaf(0, 2),
            leaf(2, 1),
            branch(1, 4, 5, LT | MISSING_TRUE),
            leaf(3, 1),
            branch(0, 6, 7, EQ),
            leaf(4, 1),
            leaf(5, 1),
        ];
        Table {
            nodes: nodes.concat(),
            thresholds: vec![0.5, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
            leaf_targets: vec![0, 1, 0, 1, 0, 1],
            leaf_weights: vec![1.0, 0.5, 2.0, 3.0, -1.0, 10.0],
            roots: vec![0, 3],
        }
    }

    fn run(t: &Table, x: &[f32], agg: Aggregate) -> Result<Vec<f32>, TreeError> {
        let base = [0.25, 0.5];
        let rows = x.len() / 2;
        let mut y = vec![f32::NAN; rows * 2];
        tree_ensemble(
            rows,
            2,
            x,
            &t.nodes,
            &t.thresholds,
            &t.leaf_targets,
            &t.leaf_weights,
            &t.roots,
            &base,
            agg,
            &mut y,
        )?;
        Ok(y)
    }

    fn check(t: &Table) -> Result<(), TreeError> {
        validate(
            2,
            &t.nodes,
            &t.thresholds,
            &t.leaf_targets,
            &t.leaf_weights,
            &t.roots,
            2,
        )
    }

    #[test]
    fn two_tree_ensemble() {
        let t = two_trees();
        check(&t).unwrap();
        // row 0: x = [0, -1]: tree 0 -> {t0 1, t1 0.5}, tree 1 -> {t1 3}
        // row 1: x = [1, 5]:  tree 0 -> {t0 2},         tree 1 -> x0 == 1 -> {t0 -1}
        // row 2: x = [3, 1]:  tree 0 -> {t0 2},         tree 1 -> x0 != 1 -> {t1 10}
        let x = [0.0, -1.0, 1.0, 5.0, 3.0, 1.0];
        // base = [0.25, 0.5]
        assert_eq!(
            run(&t, &x, Aggregate::Sum).unwrap(),
            [1.25, 4.0, 1.25, 0.5, 2.25, 10.5]
        );
        assert_eq!(
            run(&t, &x, Aggregate::Average).unwrap(),
            [0.75, 2.25, 0.75, 0.5, 1.25, 5.5]
        );
        // Max / Min only over trees that hit the target; unhit targets are 0 + base.
        assert_eq!(
            run(&t, &x, Aggregate::Max).unwrap(),
            [1.25, 3.5, 2.25, 0.5, 2.25, 10.5]
        );
        assert_eq!(
            run(&t, &x, Aggregate::Min).unwrap(),
            [1.25, 1.0, -0.75, 0.5, 2.25, 10.5]
        );
    }

    #[test]
    fn nan_routing() {
        let t = two_trees();
        // Tree 0 has no missing flag: NaN <= 0.5 is false -> false child {t0 2}.
        // Tree 1 sends NaN to its true child {t1 3}.
        let y = run(&t, &[f32::NAN, f32::NAN], Aggregate::Sum).unwrap();
        assert_eq!(y, [2.25, 3.5]);
        // x1 finite and >= 0, x0 NaN: tree 1 -> x0 == 1 is false for NaN -> {t1 10}.
        let y = run(&t, &[f32::NAN, 2.0], Aggregate::Sum).unwrap();
        assert_eq!(y, [2.25, 10.5]);
        // BRANCH_NEQ without the flag: NaN != 1 is true -> true child.
        let mut t = two_trees();
        t.nodes[5 * 4 + 3] = 5;
        let y = run(&t, &[f32::NAN, 2.0], Aggregate::Sum).unwrap();
        assert_eq!(y, [2.25 - 1.0, 0.5]);
    }

    #[test]
    fn cyclic_tables_rejected() {
        // Tree 1's false branch (node 5) points back at node 3.
        let mut t = two_trees();
        t.nodes[5 * 4 + 2] = 3;
        assert_eq!(check(&t), Err(TreeError::Cycle { tree: 1 }));
        // Evaluation stops too: row x = [3, 1] walks 3 -> 5 -> 3 -> ...
        assert_eq!(
            run(&t, &[3.0, 1.0], Aggregate::Sum),
            Err(TreeError::Cycle { tree: 1 })
        );
        // ... but rows that avoid the cycle still evaluate.
        assert_eq!(run(&t, &[1.0, 1.0], Aggregate::Sum).unwrap(), [1.25, 0.5]);
        // Self loop at a root.
        let mut t = two_trees();
        t.nodes[1] = 0;
        assert_eq!(check(&t), Err(TreeError::Cycle { tree: 0 }));
        assert_eq!(
            run(&t, &[0.0, 0.0], Aggregate::Sum),
            Err(TreeError::Cycle { tree: 0 })
        );
    }

    #[test]
    fn unordered_and_shared_nodes_accepted() {
        // Same ensemble with node order reversed (children before parents).
        let t = two_trees();
        let n = t.thresholds.len();
        let map = |i: i32| (n - 1) as i32 - i;
        let mut u = Table {
            nodes: vec![0; 4 * n],
            thresholds: vec![0.0; n],
            leaf_targets: t.leaf_targets.clone(),
            leaf_weights: t.leaf_weights.clone(),
            roots: t.roots.iter().map(|&r| map(r)).collect(),
        };
        for i in 0..n {
            let j = map(i as i32) as usize;
            let mut nd = [
                t.nodes[4 * i],
                t.nodes[4 * i + 1],
                t.nodes[4 * i + 2],
                t.nodes[4 * i + 3],
            ];
            if nd[3] & 0xff != LEAF {
                nd[1] = map(nd[1]);
                nd[2] = map(nd[2]);
            }
            u.nodes[4 * j..4 * j + 4].copy_from_slice(&nd);
            u.thresholds[j] = t.thresholds[i];
        }
        check(&u).unwrap();
        let x = [0.0, -1.0, 1.0, 5.0, 3.0, f32::NAN];
        assert_eq!(
            run(&u, &x, Aggregate::Sum).unwrap(),
            run(&t, &x, Aggregate::Sum).unwrap()
        );
        // LightGBM-style set membership: both EQ nodes send "true" to one shared leaf (a DAG),
        // ordered and unordered.
        let dag = Table {
            nodes: [
                branch(0, 2, 1, EQ),
                branch(0, 2, 3, EQ),
                leaf(0, 1),
                leaf(1, 1),
            ]
            .concat(),
            thresholds: vec![1.0, 2.0, 0.0, 0.0],
            leaf_targets: vec![0, 1],
            leaf_weights: vec![1.0, 1.0],
            roots: vec![0],
        };
        check(&dag).unwrap();
        let dag_unordered = Table {
            nodes: [
                leaf(0, 1),
                branch(0, 0, 3, EQ),
                branch(0, 0, 1, EQ),
                leaf(1, 1),
            ]
            .concat(),
            thresholds: vec![0.0, 2.0, 1.0, 0.0],
            roots: vec![2],
            ..dag
        };
        check(&dag_unordered).unwrap();
        let y = run(
            &dag_unordered,
            &[1.0, 0.0, 2.0, 0.0, 3.0, 0.0],
            Aggregate::Sum,
        )
        .unwrap();
        assert_eq!(y, [1.25, 0.5, 1.25, 0.5, 0.25, 1.5]);
    }

    #[test]
    fn bad_indices_rejected() {
        let t = two_trees();
        let bad = |f: &dyn Fn(&mut Table), want: TreeError| {
            let mut u = Table { ..two_trees() };
            f(&mut u);
            assert_eq!(check(&u), Err(want));
        };
        bad(
            &|u| u.nodes[0] = 2,
            TreeError::BadIndex {
                what: "feature",
                index: 0,
            },
        );
        bad(
            &|u| u.nodes[1] = -1,
            TreeError::BadIndex {
                what: "true child",
                index: 0,
            },
        );
        bad(
            &|u| u.nodes[2] = 8,
            TreeError::BadIndex {
                what: "false child",
                index: 0,
            },
        );
        bad(
            &|u| u.nodes[3] = 7,
            TreeError::BadIndex {
                what: "node mode",
                index: 0,
            },
        );
        bad(
            &|u| u.nodes[4 + 2] = 7,
            TreeError::BadIndex {
                what: "leaf range",
                index: 1,
            },
        );
        bad(
            &|u| u.nodes[4 + 1] = i32::MAX,
            TreeError::BadIndex {
                what: "leaf range",
                index: 1,
            },
        );
        bad(
            &|u| u.leaf_targets[3] = 2,
            TreeError::BadIndex {
                what: "leaf target",
                index: 3,
            },
        );
        bad(
            &|u| u.roots[1] = 8,
            TreeError::BadIndex {
                what: "root",
                index: 1,
            },
        );
        bad(&|u| u.thresholds.push(0.0), TreeError::Lengths);
        bad(
            &|u| u.leaf_weights.pop().map(drop).unwrap_or(()),
            TreeError::Lengths,
        );
        // Wrong x / y sizes.
        let mut y = [0.0; 2];
        let r = tree_ensemble(
            1,
            2,
            &[0.0],
            &t.nodes,
            &t.thresholds,
            &t.leaf_targets,
            &t.leaf_weights,
            &t.roots,
            &[0.0, 0.0],
            Aggregate::Sum,
            &mut y,
        );
        assert_eq!(r, Err(TreeError::Lengths));
        assert_eq!(
            std::format!(
                "{}",
                TreeError::BadIndex {
                    what: "root",
                    index: 1
                }
            ),
            "tree ensemble: bad root at index 1"
        );
        assert_eq!(
            std::format!("{}", TreeError::Cycle { tree: 2 }),
            "tree ensemble: tree 2 contains a cycle"
        );
    }

    #[test]
    fn deep_unordered_chain() {
        // A chain of 5000 branches whose true child is a shared leaf and whose
        // false child is the previous node: valid but deeper than the
        // unordered walk supports. The same chain in order is fine.
        let n = 5001;
        let mut nodes = vec![0i32; 4 * n];
        nodes[..4].copy_from_slice(&leaf(0, 1));
        for i in 1..n {
            nodes[4 * i..4 * i + 4].copy_from_slice(&branch(0, 0, i as i32 - 1, LEQ));
        }
        let th = vec![0.0; n];
        let r = validate(1, &nodes, &th, &[0], &[1.0], &[(n - 1) as i32], 1);
        assert_eq!(
            r,
            Err(TreeError::BadIndex {
                what: "unordered tree",
                index: 0
            })
        );
        // Mirror it: node i -> children n - 1 (the leaf) and i + 1.
        let mut nodes = vec![0i32; 4 * n];
        for i in 0..n - 1 {
            nodes[4 * i..4 * i + 4].copy_from_slice(&branch(0, (n - 1) as i32, i as i32 + 1, LEQ));
        }
        nodes[4 * (n - 1)..].copy_from_slice(&leaf(0, 1));
        validate(1, &nodes, &th, &[0], &[1.0], &[0], 1).unwrap();
        let mut y = [0.0];
        tree_ensemble(
            1,
            1,
            &[1.0],
            &nodes,
            &th,
            &[0],
            &[1.0],
            &[0],
            &[0.0],
            Aggregate::Sum,
            &mut y,
        )
        .unwrap();
        assert_eq!(y, [1.0]);
    }

    fn small_or_any() -> impl Strategy<Value = i32> {
        prop_oneof![8 => -1i32..10, 1 => any::<i32>()]
    }

    fn flags() -> impl Strategy<Value = i32> {
        prop_oneof![8 => (0i32..7, any::<bool>()).prop_map(|(m, miss)| m | if miss { MISSING_TRUE } else { 0 }), 1 => any::<i32>()]
    }

    fn nodes_strategy() -> impl Strategy<Value = Vec<i32>> {
        prop::collection::vec(
            (small_or_any(), small_or_any(), small_or_any(), flags()),
            0..12,
        )
        .prop_map(|v| {
            v.into_iter()
                .flat_map(|(a, b, c, d)| [a, b, c, d])
                .collect()
        })
    }

    fn floats() -> impl Strategy<Value = f32> {
        prop_oneof![-2.0f32..2.0, Just(f32::NAN), Just(0.0f32), Just(1.0f32)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Garbage tables never panic or hang; a table that validates always evaluates.
        #[test]
        fn garbage_tables_never_panic(
            nodes in nodes_strategy(),
            extra_node_ints in prop::collection::vec(small_or_any(), 0..3),
            thresholds in prop::collection::vec(floats(), 0..13),
            leaf_targets in prop::collection::vec(small_or_any(), 0..8),
            leaf_weights in prop::collection::vec(floats(), 0..8),
            roots in prop::collection::vec(small_or_any(), 0..4),
            n_targets in 0usize..4,
            features in 0usize..4,
            rows in 0usize..3,
            xs in prop::collection::vec(floats(), 12),
            agg in prop_oneof![Just(Aggregate::Sum), Just(Aggregate::Average), Just(Aggregate::Max), Just(Aggregate::Min)],
            consistent in any::<bool>(),
        ) {
            let mut nodes = nodes;
            let mut thresholds = thresholds;
            let mut leaf_weights = leaf_weights;
            if consistent {
                // Line up the lengths so that the index checks are what gets exercised.
                thresholds.resize(nodes.len() / 4, 0.5);
                leaf_weights.resize(leaf_targets.len(), 1.0);
            } else {
                nodes.extend(extra_node_ints);
            }
            let v = validate(features, &nodes, &thresholds, &leaf_targets, &leaf_weights, &roots, n_targets);
            let base = vec![0.5; n_targets];
            let x = &xs[..rows * features];
            let mut y = vec![0.0; rows * n_targets];
            let r = tree_ensemble(
                rows, features, x, &nodes, &thresholds, &leaf_targets, &leaf_weights, &roots, &base, agg, &mut y,
            );
            if v.is_ok() {
                prop_assert_eq!(r, Ok(()));
                for (i, &yv) in y.iter().enumerate() {
                    // Inputs are finite or NaN and weights are finite or NaN: no
                    // infinities, and an unset Max/Min never leaks its marker.
                    prop_assert!(yv.to_bits() != UNSET, "unset marker leaked at {}", i);
                }
            }
            // Wrong output size is always an error, never a panic.
            let mut y2 = vec![0.0; rows * n_targets + 1];
            let r2 = tree_ensemble(
                rows, features, x, &nodes, &thresholds, &leaf_targets, &leaf_weights, &roots, &base, agg, &mut y2,
            );
            prop_assert_eq!(r2, Err(TreeError::Lengths));
        }

        /// Well-formed tables (children anywhere, so cycles are common), with at
        /// most one entry overwritten by an arbitrary value.
        #[test]
        fn structured_tables(
            features in 1usize..4,
            n_targets in 1usize..4,
            spec in prop::collection::vec((any::<bool>(), any::<u32>(), any::<u32>(), any::<u32>(), 0i32..6, any::<bool>()), 1..12),
            leaf_targets in prop::collection::vec(any::<u32>(), 0..8),
            roots in prop::collection::vec(any::<u32>(), 1..4),
            forward_only in any::<bool>(),
            mutation in prop::option::of((any::<usize>(), small_or_any())),
            xs in prop::collection::vec(floats(), 6),
            agg in prop_oneof![Just(Aggregate::Sum), Just(Aggregate::Average), Just(Aggregate::Max), Just(Aggregate::Min)],
        ) {
            let n = spec.len() as u32;
            let l = leaf_targets.len() as u32;
            let mut nodes = Vec::new();
            for (i, &(is_leaf, f, a, b, mode, miss)) in spec.iter().enumerate() {
                let i = i as u32;
                let child = |c: u32| if forward_only && i + 1 < n { i + 1 + c % (n - i - 1) } else { c % n } as i32;
                if is_leaf || (forward_only && i + 1 == n) {
                    let first = a % (l + 1);
                    nodes.extend([0, first as i32, (b % (l - first + 1)) as i32, LEAF]);
                } else {
                    let flags = mode | if miss { MISSING_TRUE } else { 0 };
                    nodes.extend([(f % features as u32) as i32, child(a), child(b), flags]);
                }
            }
            let mut leaf_targets: Vec<i32> = leaf_targets.iter().map(|&t| (t % n_targets as u32) as i32).collect();
            let mut roots: Vec<i32> = roots.iter().map(|&r| (r % n) as i32).collect();
            if let Some((pos, v)) = mutation {
                let total = nodes.len() + leaf_targets.len() + roots.len();
                let pos = pos % total;
                if pos < nodes.len() {
                    nodes[pos] = v;
                } else if pos < nodes.len() + leaf_targets.len() {
                    leaf_targets[pos - nodes.len()] = v;
                } else {
                    roots[pos - nodes.len() - leaf_targets.len()] = v;
                }
            }
            let thresholds = vec![0.5; spec.len()];
            let weights = vec![1.0; leaf_targets.len()];
            let v = validate(features, &nodes, &thresholds, &leaf_targets, &weights, &roots, n_targets);
            if forward_only && mutation.is_none() {
                prop_assert_eq!(v, Ok(()));
            }
            let rows = xs.len() / features;
            let base = vec![0.0; n_targets];
            let mut y = vec![0.0; rows * n_targets];
            let r = tree_ensemble(
                rows, features, &xs[..rows * features], &nodes, &thresholds, &leaf_targets, &weights, &roots, &base, agg,
                &mut y,
            );
            if v.is_ok() {
                prop_assert_eq!(r, Ok(()));
                // The exhaustive walk agrees with the O(n) ordered check.
                let mut work = UNORDERED_WORK;
                for (t, &root) in roots.iter().enumerate() {
                    prop_assert_eq!(walk_paths(&nodes, spec.len(), root as usize, t, &mut work), Ok(()));
                }
                if agg == Aggregate::Sum {
                    // Every tree contributes its leaf's weight count (all weights are 1).
                    let hits: f32 = y.iter().sum();
                    prop_assert!(hits <= (rows * roots.len() * leaf_targets.len()) as f32);
                }
            }
        }
    }
}
