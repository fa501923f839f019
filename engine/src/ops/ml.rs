//! ONNX-ML ops: tree ensembles, Normalizer, classifier post-processing.

use super::{Io, same_len};
use crate::error::{EngineError, bad};
use crate::tensor::{Shape, Tensor};
use kiln_format::{Norm, PostTransform, TensorKind, TreeAggregate, View};
use kiln_kernels::norm::{self as knorm, Post};
use kiln_kernels::tree::{self as ktree, Aggregate};

fn post(p: PostTransform) -> Post {
    match p {
        PostTransform::None => Post::None,
        PostTransform::Softmax => Post::Softmax,
        PostTransform::Logistic => Post::Logistic,
        PostTransform::SoftmaxZero => Post::SoftmaxZero,
        PostTransform::Probit => Post::Probit,
    }
}

fn rows_cols(s: &crate::tensor::Shape) -> (usize, usize) {
    match s.rank {
        0 => (1, 1),
        1 => (1, s.dims[0]),
        r => (s.prod(0, r - 1), s.dims[r - 1]),
    }
}

pub(crate) fn normalizer(norm: Norm, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let mut y = io.output(0)?;
    same_len(x.info.numel(), y.info.numel())?;
    let (rows, cols) = rows_cols(&x.shape());
    let n = match norm {
        Norm::Max => knorm::Norm::Max,
        Norm::L1 => knorm::Norm::L1,
        Norm::L2 => knorm::Norm::L2,
    };
    knorm::normalize_rows(rows, cols, n, x.f32()?, y.f32_mut()?);
    Ok(())
}

pub(crate) fn tree_ensemble(
    aggregate: TreeAggregate,
    pt: PostTransform,
    binary_single: bool,
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let (rows, features) = rows_cols(&x.shape());
    let nodes = io.input(1)?.i32()?;
    let thresholds = io.input(2)?.f32()?;
    let leaf_targets = io.input(3)?.i32()?;
    let leaf_weights = io.input(4)?.f32()?;
    let roots = io.input(5)?.i32()?;
    let base = io.input(6)?.f32()?;
    let mut y = io.output(0)?;
    let targets = base.len();
    let cols = if binary_single { 2 } else { targets };
    if binary_single && targets != 1 {
        return Err(bad("binary tree classifier must score one target"));
    }
    same_len(y.info.numel(), rows * cols)?;
    let agg = match aggregate {
        TreeAggregate::Sum => Aggregate::Sum,
        TreeAggregate::Average => Aggregate::Average,
        TreeAggregate::Max => Aggregate::Max,
        TreeAggregate::Min => Aggregate::Min,
    };
    let out = y.f32_mut()?;
    let tree_err = |_e: ktree::TreeError| bad("tree ensemble tables are inconsistent");
    // Tables in the weights were validated by `Plan::new` (`validate_tree`);
    // computed ones are checked here. Either way the traversal re-checks
    // every index it follows, so nothing can panic or loop.
    if !(1..=6).all(|k| io.input(k).is_ok_and(|t| t.info.kind == TensorKind::Const)) {
        ktree::validate(
            features,
            nodes,
            thresholds,
            leaf_targets,
            leaf_weights,
            roots,
            targets,
        )
        .map_err(tree_err)?;
    }
    if !binary_single {
        ktree::tree_ensemble(
            rows,
            features,
            x.f32()?,
            nodes,
            thresholds,
            leaf_targets,
            leaf_weights,
            roots,
            base,
            agg,
            out,
        )
        .map_err(tree_err)?;
        knorm::post_transform(rows, cols, post(pt), out);
        return Ok(());
    }
    // One score per row, expanded to two classes the way onnxruntime does.
    let all_positive = leaf_weights.iter().all(|&w| w >= 0.0);
    let xs = x.f32()?;
    for r in 0..rows {
        let mut s = [0f32];
        ktree::tree_ensemble(
            1,
            features,
            &xs[r * features..(r + 1) * features],
            nodes,
            thresholds,
            leaf_targets,
            leaf_weights,
            roots,
            base,
            agg,
            &mut s,
        )
        .map_err(tree_err)?;
        let v = s[0];
        let pair = if all_positive && pt == PostTransform::None {
            [1.0 - v, v]
        } else if pt == PostTransform::Logistic {
            [
                kiln_kernels::math::sigmoid(-v),
                kiln_kernels::math::sigmoid(v),
            ]
        } else {
            let mut p = [-v, v];
            knorm::post_transform(1, 2, post(pt), &mut p);
            p
        };
        out[2 * r..2 * r + 2].copy_from_slice(&pair);
    }
    Ok(())
}

pub(crate) fn argmax_label(io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let labels = io.input(1)?.i64()?;
    let mut y = io.output(0)?;
    let (rows, cols) = rows_cols(&x.shape());
    if labels.len() != cols || cols == 0 {
        return Err(bad("one label per score column is needed"));
    }
    let xs = x.f32()?;
    let out = y.i64_mut()?;
    same_len(out.len(), rows)?;
    for (r, o) in out.iter_mut().enumerate() {
        let row = &xs[r * cols..(r + 1) * cols];
        let mut best = 0;
        for (j, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = j;
            }
        }
        *o = labels[best];
    }
    Ok(())
}

pub(crate) fn post_transform(pt: PostTransform, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let mut y = io.output(0)?;
    same_len(x.info.numel(), y.info.numel())?;
    let (rows, cols) = rows_cols(&x.shape());
    let out = y.f32_mut()?;
    out.copy_from_slice(x.f32()?);
    knorm::post_transform(rows, cols, post(pt), out);
    Ok(())
}

/// Load-time check of a `TreeEnsemble` node whose tables are constants:
/// every index in range, leaves and roots consistent, no cycles (see
/// `kiln_kernels::tree::validate`). Run once by `Plan::new`.
pub(crate) fn validate_tree(view: &View<'_>, inputs: &[u32; 7]) -> Result<(), EngineError> {
    let info = |k: usize| view.tensor(inputs[k] as usize);
    let x = info(0)?;
    let mut t = [None; 6];
    for (k, slot) in t.iter_mut().enumerate() {
        let i = info(k + 1)?;
        if i.kind != TensorKind::Const {
            // Computed tables: checked at run time instead.
            return Ok(());
        }
        *slot = Some(Tensor {
            info: i,
            data: view.const_bytes(&i),
        });
    }
    let [
        Some(nodes),
        Some(th),
        Some(lt),
        Some(lw),
        Some(roots),
        Some(base),
    ] = t
    else {
        return Err(bad("tree ensemble tables are missing"));
    };
    let (_, features) = rows_cols(&Shape::of(&x));
    ktree::validate(
        features,
        nodes.i32()?,
        th.f32()?,
        lt.i32()?,
        lw.f32()?,
        roots.i32()?,
        base.f32()?.len(),
    )
    .map_err(|_| bad("tree ensemble tables are inconsistent"))
}
