//! ONNX-ML (ai.onnx.ml) ops: tree ensembles, linear models, Scaler,
//! Normalizer, ArrayFeatureExtractor. Classifiers produce a label tensor and
//! a score tensor; string labels become indices with the names in the schema.

use crate::error::Result;
use crate::onnx::{Attrs, Ctx, Registry};
use kiln_format::{Binary, DType, Norm, Op, PostTransform, TreeAggregate, Unary};
use std::collections::HashMap;
use tract_onnx::pb::NodeProto;

const ML: &str = "ai.onnx.ml";

pub(super) fn register(r: &mut Registry) {
    r.insert(ML, "TreeEnsembleClassifier", tree_ensemble);
    r.insert(ML, "TreeEnsembleRegressor", tree_ensemble);
    r.insert(ML, "LinearClassifier", linear_classifier);
    r.insert(ML, "LinearRegressor", linear_regressor);
    r.insert(ML, "Scaler", scaler);
    r.insert(ML, "Normalizer", normalizer);
    r.insert(ML, "ArrayFeatureExtractor", array_feature_extractor);
    r.insert(ML, "ZipMap", zipmap);
}

fn post(cx: &Ctx, node: &NodeProto) -> Result<PostTransform> {
    Ok(
        match Attrs::new(node)
            .string("post_transform")
            .as_deref()
            .unwrap_or("NONE")
        {
            "NONE" => PostTransform::None,
            "SOFTMAX" => PostTransform::Softmax,
            "LOGISTIC" => PostTransform::Logistic,
            "SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
            "PROBIT" => PostTransform::Probit,
            p => return Err(cx.err(node, format!("post_transform {p} is not supported"))),
        },
    )
}

/// (rows, features) of a tabular input; 1-D inputs are one row.
fn rows_features(cx: &Ctx, node: &NodeProto, x: usize) -> Result<(usize, usize)> {
    match cx.shape(x).as_slice() {
        [f] => Ok((1, *f)),
        [n, f] => Ok((*n, *f)),
        s => Err(cx.err(node, format!("expected a [N, F] input, got {s:?}"))),
    }
}

/// Labels tensor (i64) for a classifier, and its names for the schema.
fn class_labels(cx: &mut Ctx, node: &NodeProto) -> Result<(Vec<i64>, Vec<String>)> {
    let a = Attrs::new(node);
    if let Some(l) = a
        .ints("classlabels_int64s")
        .or_else(|| a.ints("classlabels_ints"))
        .filter(|v| !v.is_empty())
    {
        let names = l.iter().map(i64::to_string).collect();
        return Ok((l, names));
    }
    if let Some(s) = a.strings("classlabels_strings").filter(|v| !v.is_empty()) {
        let n = s.len() as i64;
        cx.warnings.push(format!(
            "node '{}': string class labels are returned as indices; the names are in the schema",
            crate::onnx::node_name(node)
        ));
        return Ok(((0..n).collect(), s));
    }
    Err(cx.err(
        node,
        "classlabels_int64s or classlabels_strings is required",
    ))
}

/// Emits label = labels[argmax(scores)] bound to output 0 and binds scores to output 1.
fn emit_label_and_scores(
    cx: &mut Ctx,
    node: &NodeProto,
    scores: usize,
    labels: &[i64],
    rows: usize,
) -> Result<()> {
    let l = cx.const_i64_t(vec![labels.len()], labels);
    let lab = cx.emit_raw(
        node,
        Op::ArgMaxLabel,
        vec![Some(scores), Some(l)],
        vec![(DType::I64, vec![rows])],
        vec![node.output[0].clone()],
    )?[0];
    cx.bind(&node.output[0], lab);
    if let Some(o) = node.output.get(1) {
        cx.bind(o, scores);
        cx.g.tensors[scores].name = o.clone();
    }
    Ok(())
}

fn tree_ensemble(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let a = Attrs::new(node);
    let classifier = node.op_type == "TreeEnsembleClassifier";
    let x = cx.input(node, 0)?;
    let (rows, features) = rows_features(cx, node, x)?;
    let x = if cx.dtype(x) == DType::F32 {
        x
    } else {
        let s = cx.shape(x);
        cx.emit_tmp(
            node,
            Op::Cast {
                to: DType::F32,
                saturate: false,
            },
            vec![Some(x)],
            DType::F32,
            s,
        )?
    };
    let ints = |n: &str| a.ints(n).unwrap_or_default();
    let tree_ids = ints("nodes_treeids");
    let node_ids = ints("nodes_nodeids");
    let feat = ints("nodes_featureids");
    let values: Vec<f32> = match a.floats("nodes_values").filter(|v| !v.is_empty()) {
        Some(v) => v,
        None => match a.tensor("nodes_values_as_tensor") {
            Some(t) => {
                let (_, _, b) = crate::onnx::tensor_from_proto(t)?;
                b.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                    .collect()
            }
            None => vec![],
        },
    };
    let modes = a.strings("nodes_modes").unwrap_or_default();
    let tru = ints("nodes_truenodeids");
    let fal = ints("nodes_falsenodeids");
    let missing = ints("nodes_missing_value_tracks_true");
    let n = tree_ids.len();
    if [
        node_ids.len(),
        feat.len(),
        values.len(),
        modes.len(),
        tru.len(),
        fal.len(),
    ]
    .iter()
    .any(|&l| l != n)
        || n == 0
    {
        return Err(cx.err(node, "node attribute arrays have different lengths"));
    }
    let prefix = if classifier { "class" } else { "target" };
    let l_tree = ints(&format!("{prefix}_treeids"));
    let l_node = ints(&format!("{prefix}_nodeids"));
    let l_id = ints(&format!("{prefix}_ids"));
    let l_w = a.floats(&format!("{prefix}_weights")).unwrap_or_default();
    if [l_node.len(), l_id.len(), l_w.len()]
        .iter()
        .any(|&l| l != l_tree.len())
    {
        return Err(cx.err(node, "leaf attribute arrays have different lengths"));
    }
    let index: HashMap<(i64, i64), usize> = tree_ids
        .iter()
        .zip(&node_ids)
        .enumerate()
        .map(|(i, (&t, &nn))| ((t, nn), i))
        .collect();
    // Leaves grouped by node.
    let mut per_node: Vec<Vec<(i32, f32)>> = vec![vec![]; n];
    for k in 0..l_tree.len() {
        let i = *index
            .get(&(l_tree[k], l_node[k]))
            .ok_or_else(|| cx.err(node, "a leaf refers to an unknown node"))?;
        per_node[i].push((l_id[k] as i32, l_w[k]));
    }
    let (labels, names, n_targets, binary) = if classifier {
        let (labels, names) = class_labels(cx, node)?;
        let used: std::collections::BTreeSet<i64> = l_id.iter().copied().collect();
        let binary = labels.len() == 2 && used.len() == 1;
        let targets = if binary { 1 } else { labels.len() };
        (labels, names, targets, binary)
    } else {
        (vec![], vec![], a.int("n_targets", 1).max(1) as usize, false)
    };
    if binary {
        // Single-score binary trees: the score is for the used class id.
        for v in &mut per_node {
            for e in v.iter_mut() {
                e.0 = 0;
            }
        }
    }
    let mut table = Vec::with_capacity(n * 4);
    let mut thresholds = Vec::with_capacity(n);
    let mut leaf_t = vec![];
    let mut leaf_w = vec![];
    let mut child = vec![false; n];
    for i in 0..n {
        let mode = match modes[i].as_str() {
            "BRANCH_LEQ" => 0,
            "BRANCH_LT" => 1,
            "BRANCH_GTE" => 2,
            "BRANCH_GT" => 3,
            "BRANCH_EQ" => 4,
            "BRANCH_NEQ" => 5,
            "LEAF" => 6,
            m => return Err(cx.err(node, format!("node mode {m} is not supported"))),
        };
        let miss = if missing.get(i).copied().unwrap_or(0) != 0 {
            0x100
        } else {
            0
        };
        if mode == 6 {
            table.extend([0, leaf_t.len() as i32, per_node[i].len() as i32, 6]);
            for &(t, w) in &per_node[i] {
                leaf_t.push(t);
                leaf_w.push(w);
            }
        } else {
            let t = *index
                .get(&(tree_ids[i], tru[i]))
                .ok_or_else(|| cx.err(node, "a branch refers to an unknown node"))?;
            let f = *index
                .get(&(tree_ids[i], fal[i]))
                .ok_or_else(|| cx.err(node, "a branch refers to an unknown node"))?;
            child[t] = true;
            child[f] = true;
            if feat[i] < 0 || feat[i] as usize >= features {
                return Err(cx.err(
                    node,
                    format!(
                        "feature id {} is outside the {features} input features",
                        feat[i]
                    ),
                ));
            }
            table.extend([feat[i] as i32, t as i32, f as i32, mode | miss]);
        }
        thresholds.push(values[i]);
    }
    let mut roots = vec![];
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..n {
        if !child[i] && seen.insert(tree_ids[i]) {
            roots.push(i as i32);
        }
    }
    let base = a
        .floats("base_values")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec![0.0; n_targets]);
    if base.len() != n_targets {
        return Err(cx.err(
            node,
            "base_values length disagrees with the number of targets",
        ));
    }
    let aggregate = match a.string("aggregate_function").as_deref().unwrap_or("SUM") {
        "SUM" => TreeAggregate::Sum,
        "AVERAGE" => TreeAggregate::Average,
        "MAX" => TreeAggregate::Max,
        "MIN" => TreeAggregate::Min,
        f => return Err(cx.err(node, format!("aggregate_function {f} is not supported"))),
    };
    let pt = post(cx, node)?;
    let t_nodes = cx.const_i32_t(vec![n, 4], &table);
    let t_thr = cx.const_f32_t(vec![n], &thresholds);
    let t_lt = cx.const_i32_t(vec![leaf_t.len()], &leaf_t);
    let t_lw = cx.const_f32_t(vec![leaf_w.len()], &leaf_w);
    let t_roots = cx.const_i32_t(vec![roots.len()], &roots);
    let t_base = cx.const_f32_t(vec![n_targets], &base);
    let cols = if binary { 2 } else { n_targets };
    let op = Op::TreeEnsemble {
        aggregate,
        post: pt,
        binary_single_score: binary,
    };
    let ins = vec![
        Some(x),
        Some(t_nodes),
        Some(t_thr),
        Some(t_lt),
        Some(t_lw),
        Some(t_roots),
        Some(t_base),
    ];
    if classifier {
        let scores = cx.emit_tmp(node, op, ins, DType::F32, vec![rows, cols])?;
        let _ = names;
        emit_label_and_scores(cx, node, scores, &labels, rows)
    } else {
        cx.emit(node, op, ins, vec![(DType::F32, vec![rows, cols])])?;
        Ok(())
    }
}

/// Emits scores = X·Wᵀ + b for a linear model.
fn linear_scores(
    cx: &mut Ctx,
    node: &NodeProto,
    x: usize,
    targets: usize,
) -> Result<(usize, usize)> {
    let a = Attrs::new(node);
    let (rows, features) = rows_features(cx, node, x)?;
    let mut coef = a.floats("coefficients").unwrap_or_default();
    if coef.len() < targets * features {
        return Err(cx.err(
            node,
            format!(
                "{} coefficients for {targets} targets x {features} features",
                coef.len()
            ),
        ));
    }
    if coef.len() > targets * features {
        // onnxruntime reads the first targets x features values; so do we, loudly.
        let msg = format!(
            "node '{}': {} coefficients for {targets} targets x {features} features; using the first {}",
            crate::onnx::node_name(node),
            coef.len(),
            targets * features
        );
        cx.warnings.push(msg);
        coef.truncate(targets * features);
    }
    let inter = a
        .floats("intercepts")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec![0.0; targets]);
    if inter.len() != targets {
        return Err(cx.err(node, "intercepts length disagrees with the targets"));
    }
    let x2 = if cx.shape(x).len() == 1 {
        cx.emit_tmp(
            node,
            Op::Reshape,
            vec![Some(x)],
            DType::F32,
            vec![1, features],
        )?
    } else {
        x
    };
    let w = cx.const_f32_t(vec![targets, features], &coef);
    let b = cx.const_f32_t(vec![targets], &inter);
    let op = Op::Gemm {
        trans_a: false,
        trans_b: true,
        alpha: 1.0,
        beta: 1.0,
        act: Unary::Identity,
    };
    let s = cx.emit_tmp(
        node,
        op,
        vec![Some(x2), Some(w), Some(b)],
        DType::F32,
        vec![rows, targets],
    )?;
    Ok((s, rows))
}

fn linear_classifier(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    if cx.dtype(x) != DType::F32 {
        return Err(cx.err(node, "only float32 inputs are supported"));
    }
    let (labels, _names) = class_labels(cx, node)?;
    // Like onnxruntime: one score per intercept (per label when there are none).
    let targets = Attrs::new(node)
        .floats("intercepts")
        .filter(|v| !v.is_empty())
        .map_or(labels.len(), |v| v.len());
    if targets != labels.len() {
        return Err(cx.err(
            node,
            "binary linear classifiers with one coefficient row are not supported",
        ));
    }
    let (scores, rows) = linear_scores(cx, node, x, targets)?;
    let pt = post(cx, node)?;
    let scores = if pt == PostTransform::None {
        scores
    } else {
        cx.emit_tmp(
            node,
            Op::PostTransform { post: pt },
            vec![Some(scores)],
            DType::F32,
            vec![rows, targets],
        )?
    };
    emit_label_and_scores(cx, node, scores, &labels, rows)
}

fn linear_regressor(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let targets = Attrs::new(node).int("targets", 1).max(1) as usize;
    let (scores, rows) = linear_scores(cx, node, x, targets)?;
    let pt = post(cx, node)?;
    if pt == PostTransform::None {
        cx.bind(&node.output[0], scores);
    } else {
        cx.emit(
            node,
            Op::PostTransform { post: pt },
            vec![Some(scores)],
            vec![(DType::F32, vec![rows, targets])],
        )?;
    }
    Ok(())
}

fn scaler(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let a = Attrs::new(node);
    let s = cx.shape(x);
    let f = *s.last().unwrap_or(&1);
    let fit = |v: Vec<f32>| if v.len() == 1 { vec![v[0]; f] } else { v };
    let offset = fit(a.floats("offset").unwrap_or_else(|| vec![0.0]));
    let scale = fit(a.floats("scale").unwrap_or_else(|| vec![1.0]));
    if offset.len() != f || scale.len() != f {
        return Err(cx.err(node, "offset/scale length disagrees with the features"));
    }
    let x = if cx.dtype(x) == DType::F32 {
        x
    } else {
        cx.emit_tmp(
            node,
            Op::Cast {
                to: DType::F32,
                saturate: false,
            },
            vec![Some(x)],
            DType::F32,
            s.clone(),
        )?
    };
    let input_name = cx.t(x).name.clone();
    cx.preprocessing.push((
        "Scaler".into(),
        format!("offset={offset:?} scale={scale:?}"),
        input_name,
    ));
    let o = cx.const_f32_t(vec![f], &offset);
    let k = cx.const_f32_t(vec![f], &scale);
    let t = cx.emit_tmp(
        node,
        Op::Binary(Binary::Sub),
        vec![Some(x), Some(o)],
        DType::F32,
        s.clone(),
    )?;
    cx.emit(
        node,
        Op::Binary(Binary::Mul),
        vec![Some(t), Some(k)],
        vec![(DType::F32, s)],
    )?;
    Ok(())
}

fn normalizer(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let norm = match Attrs::new(node).string("norm").as_deref().unwrap_or("MAX") {
        "MAX" => Norm::Max,
        "L1" => Norm::L1,
        "L2" => Norm::L2,
        n => return Err(cx.err(node, format!("norm {n} is not supported"))),
    };
    if cx.dtype(x) != DType::F32 {
        return Err(cx.err(node, "only float32 inputs are supported"));
    }
    let input_name = cx.t(x).name.clone();
    cx.preprocessing
        .push(("Normalizer".into(), format!("norm={norm:?}"), input_name));
    let s = cx.shape(x);
    cx.emit(
        node,
        Op::Normalizer { norm },
        vec![Some(x)],
        vec![(DType::F32, s)],
    )?;
    Ok(())
}

fn array_feature_extractor(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let i = cx.input(node, 1)?;
    let s = cx.shape(x);
    let ni: usize = cx.shape(i).iter().product();
    let (xin, out) = if s.len() == 1 {
        let r = cx.emit_tmp(node, Op::Reshape, vec![Some(x)], cx.dtype(x), vec![1, s[0]])?;
        (r, vec![1, ni])
    } else {
        let mut o = s[..s.len() - 1].to_vec();
        o.push(ni);
        (x, o)
    };
    let rank = cx.shape(xin).len();
    let flat = cx.emit_tmp(node, Op::Reshape, vec![Some(i)], cx.dtype(i), vec![ni])?;
    let dt = cx.dtype(x);
    cx.emit(
        node,
        Op::Gather {
            axis: (rank - 1) as u8,
        },
        vec![Some(xin), Some(flat)],
        vec![(dt, out)],
    )?;
    Ok(())
}

fn zipmap(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    // A sequence of maps is not a tensor: leave the output unbound so the
    // graph output is dropped with a warning; the scores stay available.
    cx.warnings.push(format!(
        "node '{}': ZipMap output is not a tensor; use the scores input '{}' instead",
        crate::onnx::node_name(node),
        node.input.first().cloned().unwrap_or_default()
    ));
    Ok(())
}
