//! Post-training quantization of float graphs, with an accuracy gate.
//!
//! - `int8`: static quantization by the TFLite int8 spec. Weights are
//!   symmetric per output channel, biases int32 (`scale = x_scale ·
//!   w_scale`), activations asymmetric per tensor with ranges from running
//!   the float graph on calibration samples (min-max, percentile, MSE or
//!   KL over a histogram). Conv, Gemm/MatMul, Add, pooling and reshapes
//!   become the integer ops of [`kiln_format::Op`] (`QConv`,
//!   `QFullyConnected`, `QAdd`, `QAvgPool`, int8 `MaxPool`); a ReLU/Clip
//!   after them becomes their output clamp. Every other op stays float
//!   behind `Dequantize`/`Quantize` nodes, and so do layers the gate keeps
//!   in float (mixed precision). Graph inputs and outputs stay f32.
//! - `dynamic`: Gemm/MatMul weights int8 per unit, activations quantized
//!   per call and per row (`DynFullyConnected`). No calibration.
//! - `f16`: float weights stored as IEEE half (`half`), widened to f32 by a
//!   `Cast` right before their use; arithmetic stays f32.
//!
//! The gate ([`Validation`]) evaluates the float and the quantized graph on
//! held-out samples (top-1 accuracy with labels, argmax agreement with the
//! float model without, or relative error for regressors). Over budget, a
//! sensitivity pass measures each layer's effect and keeps the most
//! sensitive layers in float until the drop fits; if it cannot within the
//! allowed number of float layers, compilation fails and nothing is written.

use crate::error::{CompileError, Result};
use crate::fc::{Fc, fc};
use crate::ir::{Graph, Node, Tensor, TensorId};
use crate::run::GraphRunner;
pub use crate::run::Samples;
use kiln_format::{DType, Op, Unary};
use kiln_kernels::fixed::Multiplier;
use std::collections::{HashMap, HashSet};

/// The target precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Int8,
    Dynamic,
    F16,
    /// Int8 weights per output channel, float activations and arithmetic
    /// (what Core ML keeps of int8).
    Weights,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "int8" => Ok(Precision::Int8),
            "dynamic" => Ok(Precision::Dynamic),
            "f16" | "float16" => Ok(Precision::F16),
            "weights" => Ok(Precision::Weights),
            _ => Err(format!(
                "unknown precision '{s}' (expected int8, dynamic, weights or f16)"
            )),
        }
    }
}

/// How activation ranges are chosen from the calibration samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Calibrator {
    /// The observed minimum and maximum.
    MinMax,
    /// The given lower and upper percentiles (`99.99` keeps 0.01% outliers
    /// out on each side).
    Percentile(f32),
    /// The clipping range minimising the expected squared quantization error.
    Mse,
    /// The clipping threshold minimising the KL divergence between the
    /// histogram and its quantized version (TensorRT's entropy method).
    Kl,
}

impl std::str::FromStr for Calibrator {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad =
            || format!("unknown calibration '{s}' (expected minmax, percentile[:P], mse or kl)");
        match s {
            "minmax" | "min-max" => Ok(Calibrator::MinMax),
            "percentile" => Ok(Calibrator::Percentile(99.99)),
            "mse" => Ok(Calibrator::Mse),
            "kl" | "entropy" => Ok(Calibrator::Kl),
            _ => match s.strip_prefix("percentile:") {
                Some(p) => match p.parse::<f32>() {
                    Ok(p) if p > 50.0 && p <= 100.0 => Ok(Calibrator::Percentile(p)),
                    _ => Err(format!("percentile must be in (50, 100], got '{p}'")),
                },
                None => Err(bad()),
            },
        }
    }
}

impl std::fmt::Display for Calibrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Calibrator::MinMax => write!(f, "minmax"),
            Calibrator::Percentile(p) => write!(f, "percentile:{p}"),
            Calibrator::Mse => write!(f, "mse"),
            Calibrator::Kl => write!(f, "kl"),
        }
    }
}

/// What the gate measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Classification when labels are given or the output is a score
    /// vector of a different size than the input; else regression.
    Auto,
    Classification,
    Regression,
}

/// Held-out data and the budget of the accuracy gate.
#[derive(Debug, Clone)]
pub struct Validation {
    pub samples: Samples,
    /// Class index per sample (classification); none: agreement with the
    /// float model's argmax.
    pub labels: Option<Vec<i64>>,
    pub task: Task,
    /// Largest allowed drop in points (accuracy percentage points, or
    /// relative error in percent for regression).
    pub max_drop: f64,
    /// Most layers the gate may keep in float (default: half of them).
    pub max_float_layers: Option<usize>,
}

/// Quantization settings of a compile.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    pub precision: Precision,
    pub calibrator: Calibrator,
    pub calibration: Option<Samples>,
    pub validation: Option<Validation>,
}

/// A measured metric of one graph.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    pub kind: MetricKind,
    /// Percent: accuracy/agreement (higher is better) or relative error
    /// (lower is better).
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Accuracy,
    Agreement,
    RelativeError,
}

impl MetricKind {
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::Accuracy => "top-1 accuracy",
            MetricKind::Agreement => "argmax agreement with float",
            MetricKind::RelativeError => "relative error vs float",
        }
    }
}

/// How a layer the gate keeps out of int8 stores its weights. Either way
/// it computes in f32 on f32 activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptAs {
    /// int8 per output channel, dequantized right before use.
    Int8Weights,
    /// IEEE half, widened right before use.
    F16,
    /// The layer has no weights (Add): only its arithmetic is float.
    NoWeights,
}

impl std::fmt::Display for KeptAs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeptAs::Int8Weights => "int8 weights",
            KeptAs::F16 => "f16 weights",
            KeptAs::NoWeights => "no weights",
        })
    }
}

/// What quantization did, for the compile report and the artifact.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantReport {
    pub precision: String,
    pub calibrator: String,
    /// Layers computed in the new precision.
    pub quantized: Vec<String>,
    /// Layers the gate kept in float, and how each stores its weights.
    pub kept_float: Vec<(String, KeptAs)>,
    /// Ops that have no kernel in the new precision (stay float).
    pub unsupported: Vec<String>,
    /// (metric name, float value, quantized value, drop in points).
    pub gate: Option<(String, f64, f64, f64)>,
    /// Per layer (most sensitive first): the float output's relative error,
    /// in percent, when only that layer is int8.
    pub sensitivity: Vec<(String, f64)>,
    pub warnings: Vec<String>,
}

/// The kept layers as `name (f16 weights), …` for reports.
pub fn kept_list(q: &QuantReport) -> String {
    q.kept_float
        .iter()
        .map(|(name, how)| format!("{name} ({how})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Quantizes `g` in place (after the optimisation passes).
pub fn quantize(g: &mut Graph, opts: &QuantizeOptions) -> Result<QuantReport> {
    let mut report = QuantReport {
        precision: format!("{:?}", opts.precision).to_lowercase(),
        ..Default::default()
    };
    let quantized = match opts.precision {
        Precision::F16 => {
            let q = to_f16(g, |_| true);
            report.quantized = q;
            g.clone()
        }
        Precision::Dynamic => {
            let mut q = g.clone();
            report.quantized = to_dynamic(&mut q)?;
            q
        }
        Precision::Weights => {
            let mut q = g.clone();
            report.quantized = to_weight_int8(&mut q, |_| true);
            q
        }
        Precision::Int8 => {
            let calib = opts.calibration.as_ref().ok_or_else(|| {
                CompileError::Invalid(
                    "--quantize int8 needs calibration samples (--calibration DATA): activation ranges come from running the float model on them".into(),
                )
            })?;
            report.calibrator = opts.calibrator.to_string();
            return int8(g, calib, opts.calibrator, opts.validation.as_ref(), report);
        }
    };
    if let Some(v) = &opts.validation {
        let float_out = predict(g, &v.samples)?;
        let (mf, mq) = (
            score(&float_out, v, None)?,
            evaluate(&quantized, v, Some(&float_out))?,
        );
        let drop = drop_of(mf, mq);
        report.gate = Some((mf.kind.name().into(), mf.value, mq.value, drop));
        if drop > v.max_drop {
            return Err(CompileError::Invalid(format!(
                "quantization to {} loses {drop:.2} points of {} ({:.2}% -> {:.2}%), over the --max-drop budget of {}; the artifact was not written",
                report.precision,
                mf.kind.name(),
                mf.value,
                mq.value,
                v.max_drop
            )));
        }
    }
    *g = quantized;
    Ok(report)
}

// ---------------------------------------------------------------------
// f16 and dynamic

/// Stores float weights (constants of at least 16 values read by the nodes
/// `which` picks) as f16, each behind a Cast to f32 placed right before its
/// use so the widened copy lives only for that node. Returns the converted
/// tensors' names.
fn to_f16(g: &mut Graph, which: impl Fn(&Node) -> bool) -> Vec<String> {
    let mut done = vec![];
    // One stored f16 copy per weight, however many nodes read it.
    let mut halves: HashMap<TensorId, TensorId> = HashMap::new();
    let old = std::mem::take(&mut g.nodes);
    for mut n in old {
        let pick = which(&n);
        for i in n.inputs.iter_mut().flatten() {
            let t = &g.tensors[*i];
            if !pick || t.dtype != DType::F32 || t.numel() < 16 || !t.is_const() {
                continue;
            }
            let (name, shape) = (t.name.clone(), t.shape.clone());
            let h = match halves.get(i) {
                Some(&h) => h,
                None => {
                    let bytes: Vec<u8> = t
                        .f32s()
                        .unwrap_or_default()
                        .iter()
                        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                        .collect();
                    let h = g.add_const(format!("{name}:f16"), DType::F16, shape.clone(), bytes);
                    halves.insert(*i, h);
                    done.push(name.clone());
                    h
                }
            };
            *i = g.push_computed(
                Op::Cast {
                    to: DType::F32,
                    saturate: false,
                },
                vec![Some(h)],
                (format!("{name}:f32"), DType::F32, shape),
                format!("{name}:widen"),
            );
        }
        g.nodes.push(n);
    }
    done
}

/// Stores the weights of the Conv and fully connected nodes `which` picks as
/// int8 per output channel (the int8 layers' own rounding), widened by a
/// `Dequantize` right before their use: weight-only int8, arithmetic and
/// activations float. Returns the converted tensors' names.
fn to_weight_int8(g: &mut Graph, which: impl Fn(&Node) -> bool) -> Vec<String> {
    let mut done = vec![];
    let old = std::mem::take(&mut g.nodes);
    for mut n in old {
        // The output-channel axis of the weights (input 1): a Conv's
        // filters, or a fully connected layer's units (2-D, see `fc`).
        let axis = match (&n.op, fc(g, &n)) {
            (Op::Conv { .. }, _) => Some(0),
            (_, Some(f)) => Some(if f.units_major { 0 } else { 1 }),
            _ => None,
        };
        let t = n.inputs.get(1).copied().flatten();
        if let (Some(axis), Some(t), true) = (axis, t, which(&n)) {
            let w = &g.tensors[t];
            let w_vals = w.f32s().unwrap_or_default();
            if w.is_const() && w.dtype == DType::F32 && w.shape.len() >= 2 && w_vals.len() >= 16 {
                let (name, shape) = (w.name.clone(), w.shape.clone());
                let rows = shape[axis];
                // Rows along `axis`: for axis 1 (a [depth, units] matrix)
                // quantize its transpose and transpose back.
                let (q, scales) = if axis == 0 {
                    quantize_rows(&w_vals, rows)
                } else {
                    let k = shape[0];
                    let tr: Vec<f32> = (0..rows * k)
                        .map(|i| w_vals[(i % k) * rows + i / k])
                        .collect();
                    let (qt, sc) = quantize_rows(&tr, rows);
                    (
                        (0..rows * k)
                            .map(|i| qt[(i % rows) * k + i / rows])
                            .collect(),
                        sc,
                    )
                };
                let qt = g.add_const(format!("{name}:i8"), DType::I8, shape.clone(), i8_bytes(&q));
                let st = g.const_f32(format!("{name}:scale"), vec![rows], &scales);
                n.inputs[1] = Some(g.push_computed(
                    Op::Dequantize { axis: axis as u8 },
                    vec![Some(qt), Some(st), None],
                    (format!("{name}:f32"), DType::F32, shape),
                    format!("{name}:dequantize"),
                ));
                done.push(name);
            }
        }
        g.nodes.push(n);
    }
    done
}

/// Symmetric per-row int8 weights: (values, scale per row). Each row's
/// clipping threshold is the one of `max|w| · f`, `f` in `[0.5, 1]`, with
/// the least squared rounding-plus-clipping error (for rows without
/// outliers that is the plain maximum).
pub(crate) fn quantize_rows(w: &[f32], rows: usize) -> (Vec<i8>, Vec<f32>) {
    let len = w.len() / rows.max(1);
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(rows);
    for r in w.chunks(len.max(1)).take(rows) {
        let m = r.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        if !(m > 0.0 && m.is_finite()) {
            q.extend(r.iter().map(|_| 0i8));
            scales.push(1.0);
            continue;
        }
        let err = |s: f32| -> f64 {
            r.iter()
                .map(|&v| {
                    let d = v - (v / s).round().clamp(-127.0, 127.0) * s;
                    f64::from(d * d)
                })
                .sum()
        };
        let (mut best, mut best_err) = (m / 127.0, f64::INFINITY);
        for step in 0..=50 {
            let s = m * (1.0 - step as f32 * 0.01) / 127.0;
            let e = err(s);
            if e < best_err {
                (best, best_err) = (s, e);
            }
        }
        q.extend(
            r.iter()
                .map(|v| (v / best).round().clamp(-127.0, 127.0) as i8),
        );
        scales.push(best);
    }
    (q, scales)
}

fn i8_bytes(v: &[i8]) -> Vec<u8> {
    v.iter().map(|&x| x as u8).collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Reshape node `x → shape` (a no-op when the shape already matches).
fn reshape(
    g: &mut Graph,
    nodes: &mut Vec<Node>,
    x: TensorId,
    shape: Vec<usize>,
    name: &str,
) -> TensorId {
    if g.tensors[x].shape == shape {
        return x;
    }
    let (tname, dtype) = (g.tensors[x].name.clone(), g.tensors[x].dtype);
    let y = g.add_tensor(Tensor {
        name: format!("{tname}:{name}"),
        dtype,
        shape,
        data: None,
    });
    nodes.push(Node {
        op: Op::Reshape,
        inputs: vec![Some(x)],
        outputs: vec![Some(y)],
        name: format!("{tname}:{name}"),
    });
    y
}

/// Emits `op` reading `x` as `[rows, depth]` (plus `params`) and writing
/// `out` (any shape of `rows · units` values), with 2-D reshapes around it
/// where the shapes differ.
#[allow(clippy::too_many_arguments, reason = "the op's operands")]
fn emit_on_rows(
    g: &mut Graph,
    nodes: &mut Vec<Node>,
    name: &str,
    op: Op,
    x: TensorId,
    depth: usize,
    params: Vec<Option<TensorId>>,
    out: TensorId,
    units: usize,
) {
    let rows = g.tensors[x].numel() / depth.max(1);
    let x2 = reshape(g, nodes, x, vec![rows, depth], "rows");
    let y2 = if g.tensors[out].shape == [rows, units] {
        out
    } else {
        let (tname, dtype) = (g.tensors[out].name.clone(), g.tensors[out].dtype);
        g.add_tensor(Tensor {
            name: format!("{tname}:rows"),
            dtype,
            shape: vec![rows, units],
            data: None,
        })
    };
    let mut inputs = vec![Some(x2)];
    inputs.extend(params);
    nodes.push(Node {
        op,
        inputs,
        outputs: vec![Some(y2)],
        name: name.to_string(),
    });
    if y2 != out {
        nodes.push(Node {
            op: Op::Reshape,
            inputs: vec![Some(y2)],
            outputs: vec![Some(out)],
            name: format!("{name}:shape"),
        });
    }
}

/// `DynFullyConnected` for layer `f` reading float `x` and writing float
/// `out`: int8 weights per unit, f32 bias.
#[allow(clippy::too_many_arguments, reason = "the layer's parts")]
fn emit_dyn_fc(
    g: &mut Graph,
    nodes: &mut Vec<Node>,
    name: &str,
    f: &Fc,
    x: TensorId,
    out: TensorId,
    act: Unary,
    bias: Option<Vec<f32>>,
) {
    let (wq, ws) = quantize_rows(&f.weights(g), f.units);
    let w = g.add_const(
        format!("{name}:w_i8"),
        DType::I8,
        vec![f.units, f.depth],
        i8_bytes(&wq),
    );
    let s = g.add_const(
        format!("{name}:w_scale"),
        DType::F32,
        vec![f.units],
        f32_bytes(&ws),
    );
    let b = bias.map(|b| g.const_f32(format!("{name}:bias"), vec![f.units], &b));
    let op = Op::DynFullyConnected { act };
    emit_on_rows(
        g,
        nodes,
        name,
        op,
        x,
        f.depth,
        vec![Some(w), Some(s), b],
        out,
        f.units,
    );
}

/// Gemm/MatMul with constant weights → `DynFullyConnected`.
fn to_dynamic(g: &mut Graph) -> Result<Vec<String>> {
    let mut done = vec![];
    let old = std::mem::take(&mut g.nodes);
    let mut nodes = Vec::with_capacity(old.len());
    for n in old {
        let (Some(f), Some(Some(y))) = (fc(g, &n), n.outputs.first().copied()) else {
            nodes.push(n);
            continue;
        };
        let bias = f.bias_values(g);
        emit_dyn_fc(g, &mut nodes, &n.name, &f, f.x, y, f.act, bias);
        done.push(n.name.clone());
    }
    g.nodes = nodes;
    crate::passes::dead_nodes(g);
    Ok(done)
}

// ---------------------------------------------------------------------
// Calibration

const BINS: usize = 2048;

/// Per-tensor observed range and histogram.
#[derive(Debug, Clone)]
struct Observed {
    lo: f32,
    hi: f32,
    hist: Vec<u64>,
}

/// Runs the float graph over the calibration samples and returns the
/// chosen `[lo, hi]` range of every float activation (graph inputs
/// included), indexed by tensor.
fn calibrate(g: &Graph, samples: &Samples, method: Calibrator) -> Result<Vec<Option<(f32, f32)>>> {
    let input = single_input(g)?;
    let mut observe: Vec<TensorId> = vec![];
    let mut seen = HashSet::new();
    for n in &g.nodes {
        for &o in n.outputs.iter().flatten() {
            if g.tensors[o].dtype == DType::F32 && !g.tensors[o].is_const() && seen.insert(o) {
                observe.push(o);
            }
        }
    }
    let mut runner = GraphRunner::new(g, &observe)?;
    let mut obs: Vec<Observed> = vec![
        Observed {
            lo: f32::INFINITY,
            hi: f32::NEG_INFINITY,
            hist: vec![]
        };
        observe.len() + 1
    ];
    let fold = |o: &mut Observed, v: &[f32]| {
        for &x in v {
            if x.is_finite() {
                o.lo = o.lo.min(x);
                o.hi = o.hi.max(x);
            }
        }
    };
    // Pass 1: ranges.
    runner.run_each(samples, samples.count, |i, outs| {
        fold(&mut obs[outs.len()], samples.sample(i));
        for (o, v) in obs.iter_mut().zip(outs) {
            fold(o, v);
        }
    })?;
    // Pass 2: histograms over those ranges (only what the method needs).
    if method != Calibrator::MinMax {
        for o in &mut obs {
            o.hist = vec![0; BINS];
        }
        let add = |o: &mut Observed, v: &[f32]| {
            let w = (o.hi - o.lo) / BINS as f32;
            if w.is_nan() || w <= 0.0 {
                return;
            }
            for &x in v {
                if x.is_finite() {
                    let b = (((x - o.lo) / w) as usize).min(BINS - 1);
                    o.hist[b] += 1;
                }
            }
        };
        runner.run_each(samples, samples.count, |i, outs| {
            add(&mut obs[outs.len()], samples.sample(i));
            for (o, v) in obs.iter_mut().zip(outs) {
                add(o, v);
            }
        })?;
    }
    let mut ranges = vec![None; g.tensors.len()];
    for (k, o) in obs.iter().enumerate() {
        let t = if k == observe.len() {
            input
        } else {
            observe[k]
        };
        if o.lo > o.hi {
            continue; // never finite
        }
        ranges[t] = Some(choose_range(o, method));
    }
    Ok(ranges)
}

fn single_input(g: &Graph) -> Result<TensorId> {
    match g.inputs.as_slice() {
        [i] if g.tensors[*i].dtype == DType::F32 => Ok(*i),
        _ => Err(CompileError::Invalid(format!(
            "calibration and validation need a model with one float32 input (this one has {} inputs)",
            g.inputs.len()
        ))),
    }
}

/// The range a calibrator picks from an observation.
fn choose_range(o: &Observed, method: Calibrator) -> (f32, f32) {
    let total: u64 = o.hist.iter().sum();
    if method == Calibrator::MinMax || total == 0 || o.hi <= o.lo {
        return (o.lo, o.hi);
    }
    let w = (o.hi - o.lo) / BINS as f32;
    let edge = |b: usize| o.lo + w * b as f32;
    match method {
        Calibrator::MinMax => (o.lo, o.hi),
        Calibrator::Percentile(p) => {
            let cut = ((1.0 - f64::from(p) / 100.0) * total as f64) as u64;
            let (mut acc, mut lo_b) = (0u64, 0usize);
            for (b, &c) in o.hist.iter().enumerate() {
                if acc + c > cut {
                    lo_b = b;
                    break;
                }
                acc += c;
            }
            let (mut acc, mut hi_b) = (0u64, BINS);
            for (b, &c) in o.hist.iter().enumerate().rev() {
                if acc + c > cut {
                    hi_b = b + 1;
                    break;
                }
                acc += c;
            }
            (edge(lo_b).min(0.0).max(o.lo), edge(hi_b).max(0.0).min(o.hi))
        }
        Calibrator::Mse => {
            // Candidate ranges shrink both ends towards zero; the expected
            // squared error counts rounding inside and clipping outside.
            let (mut best, mut best_err) = ((o.lo, o.hi), f64::INFINITY);
            for step in 0..=100 {
                let f = 1.0 - step as f32 * 0.008;
                let (lo, hi) = ((o.lo * f).min(0.0), (o.hi * f).max(0.0));
                let p = QParams::from_range(lo, hi);
                let mut err = 0.0f64;
                for (b, &c) in o.hist.iter().enumerate() {
                    if c == 0 {
                        continue;
                    }
                    let v = edge(b) + 0.5 * w;
                    let d = v - p.dequant(p.quant(v));
                    err += c as f64 * f64::from(d * d);
                }
                if err < best_err {
                    (best, best_err) = ((lo, hi), err);
                }
            }
            best
        }
        Calibrator::Kl => kl_range(o),
    }
}

/// TensorRT-style entropy calibration on the histogram of |x| (the
/// observation's histogram folded at zero): the threshold `T` minimising
/// KL(P || Q), P the clipped distribution, Q its 128-level quantization.
fn kl_range(o: &Observed) -> (f32, f32) {
    const ABS_BINS: usize = 1024;
    const LEVELS: usize = 128;
    let amax = o.lo.abs().max(o.hi.abs());
    if amax <= 0.0 {
        return (o.lo, o.hi);
    }
    let w = (o.hi - o.lo) / BINS as f32;
    let aw = amax / ABS_BINS as f32;
    let mut h = vec![0f64; ABS_BINS];
    for (b, &c) in o.hist.iter().enumerate() {
        let v = (o.lo + w * (b as f32 + 0.5)).abs();
        h[((v / aw) as usize).min(ABS_BINS - 1)] += c as f64;
    }
    let (mut best_i, mut best_kl) = (ABS_BINS, f64::INFINITY);
    for i in (LEVELS..=ABS_BINS).step_by(8) {
        let mut p: Vec<f64> = h[..i].to_vec();
        p[i - 1] += h[i..].iter().sum::<f64>();
        let total: f64 = p.iter().sum();
        if total == 0.0 {
            continue;
        }
        // Q: merge i bins into LEVELS levels, spread each level's mass over
        // its non-empty bins.
        let mut q = vec![0f64; i];
        for l in 0..LEVELS {
            let (a, e) = (
                l * i / LEVELS,
                ((l + 1) * i / LEVELS).max(l * i / LEVELS + 1),
            );
            let mass: f64 = h[a..e].iter().sum();
            let nz = h[a..e].iter().filter(|&&c| c > 0.0).count();
            if nz > 0 {
                for j in a..e {
                    if h[j] > 0.0 {
                        q[j] = mass / nz as f64;
                    }
                }
            }
        }
        let qt: f64 = q.iter().sum();
        let mut kl = 0.0;
        for j in 0..i {
            if p[j] > 0.0 {
                let pj = p[j] / total;
                let qj = if q[j] > 0.0 { q[j] / qt } else { 1e-12 };
                kl += pj * (pj / qj).ln();
            }
        }
        if kl < best_kl {
            (best_i, best_kl) = (i, kl);
        }
    }
    let t = aw * best_i as f32;
    (o.lo.max(-t), o.hi.min(t))
}

// ---------------------------------------------------------------------
// Int8 rewrite

/// Asymmetric int8 parameters of one activation tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
struct QParams {
    scale: f32,
    zp: i32,
}

impl QParams {
    /// The range is widened to include zero (so zero is exact, as padding
    /// and ReLU need).
    fn from_range(lo: f32, hi: f32) -> QParams {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let scale = (hi - lo) / 255.0;
        let scale = if scale > 0.0 && scale.is_finite() {
            scale
        } else {
            1.0
        };
        let zp = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i32;
        QParams { scale, zp }
    }

    fn quant(&self, v: f32) -> i32 {
        ((v / self.scale).round() as i32)
            .saturating_add(self.zp)
            .clamp(-128, 127)
    }

    fn dequant(&self, q: i32) -> f32 {
        (q - self.zp) as f32 * self.scale
    }
}

/// How a node runs in int8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Conv,
    Fc,
    Add,
    /// Ops whose output shares the input's quantization (pooling, reshape):
    /// int8 exactly when their input already is.
    PassThrough,
}

fn int8_kind(g: &Graph, n: &Node) -> Option<Kind> {
    let float_in = |k: usize| {
        n.inputs
            .get(k)
            .copied()
            .flatten()
            .is_some_and(|t| g.tensors[t].dtype == DType::F32 && !g.tensors[t].is_const())
    };
    let out_f32 = n
        .outputs
        .first()
        .copied()
        .flatten()
        .is_some_and(|t| g.tensors[t].dtype == DType::F32);
    if !out_f32 || n.outputs.len() != 1 || !float_in(0) {
        return None;
    }
    let act_ok = |a: &Unary| matches!(a, Unary::Identity | Unary::Relu | Unary::Clip { .. });
    match &n.op {
        Op::Conv { act, .. } => {
            let x = n.inputs[0]?;
            let w = n.inputs.get(1).copied().flatten()?;
            let b_ok = n
                .inputs
                .get(2)
                .copied()
                .flatten()
                .is_none_or(|b| g.tensors[b].f32s().is_some());
            (g.tensors[x].shape.len() == 4
                && g.tensors[w].shape.len() == 4
                && g.tensors[w].f32s().is_some()
                && b_ok
                && act_ok(act))
            .then_some(Kind::Conv)
        }
        Op::Gemm { act, .. } | Op::MatMul { act } => {
            (act_ok(act) && fc(g, n).is_some()).then_some(Kind::Fc)
        }
        Op::Binary(kiln_format::Binary::Add) => {
            let shape = |k: usize| n.inputs[k].map(|t| &g.tensors[t].shape);
            let y = &g.tensors[n.outputs[0]?].shape;
            (float_in(1) && shape(0) == Some(y) && shape(1) == Some(y)).then_some(Kind::Add)
        }
        Op::Reshape | Op::MaxPool { .. } => Some(Kind::PassThrough),
        // An int8 mean keeps the input's scale, so a wide window (a global
        // pooling) loses the extra resolution averaging gives; those stay
        // float (cheap) and are quantized again with their own range.
        Op::AveragePool {
            window,
            count_include_pad,
        } => (window.kernel[0] * window.kernel[1] <= 9
            && (!count_include_pad || window.pads == [0; 4]))
            .then_some(Kind::PassThrough),
        _ => None,
    }
}

/// The nodes the gate can keep in float: every Conv, FC and Add the
/// rewrite would quantize, by index.
fn layers(g: &Graph) -> Vec<usize> {
    (0..g.nodes.len())
        .filter(|&k| {
            matches!(
                int8_kind(g, &g.nodes[k]),
                Some(Kind::Conv | Kind::Fc | Kind::Add)
            )
        })
        .collect()
}

struct Rewriter<'a> {
    src: &'a Graph,
    ranges: &'a [Option<(f32, f32)>],
    g: Graph,
    nodes: Vec<Node>,
    /// Float tensor → its int8 twin and parameters.
    twin: HashMap<TensorId, (TensorId, QParams)>,
    /// Whether the float tensor is (or will be) computed in float.
    has_float: Vec<bool>,
}

impl Rewriter<'_> {
    fn params(&self, t: TensorId) -> Result<QParams> {
        let (lo, hi) = self.ranges[t].ok_or_else(|| {
            CompileError::Invalid(format!(
                "no calibrated range for tensor '{}' (it was never finite on the calibration samples)",
                self.src.tensors[t].name
            ))
        })?;
        Ok(QParams::from_range(lo, hi))
    }

    fn scalar_consts(&mut self, name: &str, p: QParams) -> (TensorId, TensorId) {
        let s = self.g.add_const(
            format!("{name}:scale"),
            DType::F32,
            vec![],
            f32_bytes(&[p.scale]),
        );
        let z = self.g.add_const(
            format!("{name}:zp"),
            DType::I8,
            vec![],
            vec![p.zp as i8 as u8],
        );
        (s, z)
    }

    fn new_i8(&mut self, like: TensorId, shape: Option<Vec<usize>>) -> TensorId {
        let t = &self.g.tensors[like];
        let tensor = Tensor {
            name: format!("{}:i8", t.name),
            dtype: DType::I8,
            shape: shape.unwrap_or_else(|| t.shape.clone()),
            data: None,
        };
        self.g.add_tensor(tensor)
    }

    /// The int8 twin of float tensor `t`, quantizing it if needed.
    fn need_q(&mut self, t: TensorId) -> Result<(TensorId, QParams)> {
        if let Some(&tw) = self.twin.get(&t) {
            return Ok(tw);
        }
        let p = self.params(t)?;
        let name = self.src.tensors[t].name.clone();
        let (s, z) = self.scalar_consts(&name, p);
        let q = self.new_i8(t, None);
        self.nodes.push(Node {
            op: Op::Quantize { axis: 0 },
            inputs: vec![Some(t), Some(s), Some(z)],
            outputs: vec![Some(q)],
            name: format!("{name}:quantize"),
        });
        self.twin.insert(t, (q, p));
        Ok((q, p))
    }

    /// Float tensor `t`, dequantizing its twin (into `t` itself) if needed.
    fn need_f(&mut self, t: TensorId) -> Result<TensorId> {
        if self.has_float[t] {
            return Ok(t);
        }
        let (q, p) = *self.twin.get(&t).ok_or_else(|| {
            CompileError::Invalid(format!(
                "internal error: tensor '{}' is computed neither in float nor in int8",
                self.src.tensors[t].name
            ))
        })?;
        let name = self.src.tensors[t].name.clone();
        let (s, z) = self.scalar_consts(&name, p);
        self.nodes.push(Node {
            op: Op::Dequantize { axis: 0 },
            inputs: vec![Some(q), Some(s), Some(z)],
            outputs: vec![Some(t)],
            name: format!("{name}:dequantize"),
        });
        self.has_float[t] = true;
        Ok(t)
    }

    fn requant(&mut self, name: &str, xs: f32, ws: &[f32], ys: f32) -> Result<TensorId> {
        let mut rq = Vec::with_capacity(2 * ws.len());
        for &w in ws {
            let real = f64::from(xs) * f64::from(w) / f64::from(ys);
            let m = Multiplier::new(real).ok_or_else(|| {
                CompileError::Invalid(format!(
                    "{name}: requantization multiplier {real} is out of range"
                ))
            })?;
            rq.extend([m.mantissa, m.shift]);
        }
        Ok(self
            .g
            .const_i32(format!("{name}:requant"), vec![ws.len(), 2], &rq))
    }

    fn bias_i32(&mut self, name: &str, b: &[f32], xs: f32, ws: &[f32]) -> TensorId {
        let q: Vec<i32> = b
            .iter()
            .zip(ws)
            .map(|(&v, &w)| {
                let r = (f64::from(v) / (f64::from(xs) * f64::from(w))).round();
                r.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
            })
            .collect();
        self.g
            .const_i32(format!("{name}:bias_i32"), vec![b.len()], &q)
    }
}

/// Output clamp of a fused activation in the output's quantization.
fn clamp_of(act: &Unary, p: QParams) -> (i32, i32) {
    match act {
        Unary::Relu => (p.quant(0.0), 127),
        Unary::Clip { min, max } => (p.quant(*min), p.quant(*max)),
        _ => (-128, 127),
    }
}

/// The int8 graph: every layer quantizable and not in `keep_float` runs in
/// int8. Returns the graph and the names of the quantized layers.
fn rewrite(
    src: &Graph,
    ranges: &[Option<(f32, f32)>],
    keep_float: &HashSet<usize>,
    corr: &HashMap<usize, Vec<f32>>,
) -> Result<(Graph, Vec<String>)> {
    let mut has_float = vec![false; src.tensors.len()];
    for (t, tensor) in src.tensors.iter().enumerate() {
        has_float[t] = tensor.is_const();
    }
    for &i in &src.inputs {
        has_float[i] = true;
    }
    let mut g = src.clone();
    g.nodes.clear();
    let mut rw = Rewriter {
        src,
        ranges,
        g,
        nodes: vec![],
        twin: HashMap::new(),
        has_float,
    };
    let mut absorbed = HashSet::new();
    let mut done = vec![];
    for (k, n) in src.nodes.iter().enumerate() {
        if absorbed.contains(&k) {
            continue;
        }
        let kind = int8_kind(src, n).filter(|_| !keep_float.contains(&k));
        let y = n.outputs.first().copied().flatten();
        let lowered = match (kind, y) {
            (Some(Kind::PassThrough), Some(y)) => {
                let x = n.inputs[0].unwrap_or(0);
                match rw.twin.get(&x).copied() {
                    Some((xq, p)) => {
                        let yq = rw.new_i8(y, None);
                        let op = match &n.op {
                            Op::AveragePool { window, .. } => Op::QAvgPool {
                                window: *window,
                                act_min: -128,
                                act_max: 127,
                            },
                            other => other.clone(),
                        };
                        rw.nodes.push(Node {
                            op,
                            inputs: vec![Some(xq)],
                            outputs: vec![Some(yq)],
                            name: n.name.clone(),
                        });
                        rw.twin.insert(y, (yq, p));
                        true
                    }
                    None => false,
                }
            }
            (Some(kind), Some(_)) => {
                let (act, out, relu) = layer_output(src, k);
                if let Some(c) = relu {
                    absorbed.insert(c);
                }
                let c = corr.get(&k).map(Vec::as_slice);
                if kind == Kind::Fc && feeds_float(src, out, keep_float) {
                    lower_float_out_fc(&mut rw, n, act, out, c)?;
                } else {
                    lower_layer(&mut rw, n, kind, act, out, c)?;
                }
                done.push(n.name.clone());
                true
            }
            _ => false,
        };
        if !lowered {
            let mut n2 = n.clone();
            for i in n2.inputs.iter_mut().flatten() {
                *i = rw.need_f(*i)?;
            }
            for &o in n2.outputs.iter().flatten() {
                rw.has_float[o] = true;
            }
            rw.nodes.push(n2);
        }
    }
    for o in src.outputs.clone() {
        rw.need_f(o)?;
    }
    let mut g = rw.g;
    g.nodes = rw.nodes;
    crate::passes::dead_nodes(&mut g);
    Ok((g, done))
}

/// A layer's activation and the tensor holding its result: a ReLU/Clip
/// right after it (its only reader) becomes its output clamp, and is
/// returned as the node it absorbs.
fn layer_output(src: &Graph, k: usize) -> (Unary, TensorId, Option<usize>) {
    let n = &src.nodes[k];
    let y = n.outputs.first().copied().flatten().unwrap_or(0);
    match (node_act(n), src.sole_consumer(y)) {
        (Unary::Identity, Some(c)) => match (&src.nodes[c].op, src.nodes[c].outputs.first()) {
            (Op::Unary(a @ (Unary::Relu | Unary::Clip { .. })), Some(Some(o))) => (*a, *o, Some(c)),
            _ => (Unary::Identity, y, None),
        },
        (a, _) => (a, y, None),
    }
}

/// Whether only float ops read `t` (or it is a graph output).
fn feeds_float(src: &Graph, t: TensorId, keep_float: &HashSet<usize>) -> bool {
    src.outputs.contains(&t)
        || src.nodes.iter().enumerate().all(|(k, n)| {
            !n.inputs.contains(&Some(t)) || keep_float.contains(&k) || int8_kind(src, n).is_none()
        })
}

/// An FC layer whose result only float ops read (typically the
/// classifier producing the logits): int8 weights, the input quantized per
/// call and row, and an f32 output (`DynFullyConnected`). Rounding the
/// logits to 256 levels would create argmax ties; this keeps their full
/// resolution for the same weight bytes.
fn lower_float_out_fc(
    rw: &mut Rewriter<'_>,
    n: &Node,
    act: Unary,
    out: TensorId,
    corr: Option<&[f32]>,
) -> Result<()> {
    let f = fc(rw.src, n).ok_or_else(|| CompileError::Invalid("internal error: FC".into()))?;
    let x = rw.need_f(f.x)?;
    let bias = with_correction(f.bias_values(rw.src), corr, f.units);
    let mut nodes = std::mem::take(&mut rw.nodes);
    emit_dyn_fc(&mut rw.g, &mut nodes, &n.name, &f, x, out, act, bias);
    rw.nodes = nodes;
    rw.has_float[out] = true;
    Ok(())
}

/// A layer's float bias plus its bias correction (see `bias_corrections`).
fn with_correction(b: Option<Vec<f32>>, corr: Option<&[f32]>, units: usize) -> Option<Vec<f32>> {
    match (b, corr) {
        (b, Some(c)) if c.len() == units => Some(
            (0..units)
                .map(|u| b.as_ref().map_or(0.0, |b| b[u]) + c[u])
                .collect(),
        ),
        (b, _) => b,
    }
}

fn node_act(n: &Node) -> Unary {
    match &n.op {
        Op::Conv { act, .. } | Op::Gemm { act, .. } | Op::MatMul { act } => *act,
        _ => Unary::Identity,
    }
}

/// Emits the int8 version of one Conv / FC / Add writing the twin of `out`.
fn lower_layer(
    rw: &mut Rewriter<'_>,
    n: &Node,
    kind: Kind,
    act: Unary,
    out: TensorId,
    corr: Option<&[f32]>,
) -> Result<()> {
    let yp = rw.params(out)?;
    let (act_min, act_max) = clamp_of(&act, yp);
    let name = n.name.clone();
    let yq = rw.new_i8(out, None);
    match kind {
        Kind::Conv => {
            let Op::Conv { window, group, .. } = n.op else {
                unreachable!()
            };
            let (x, w) = (n.inputs[0].unwrap_or(0), n.inputs[1].unwrap_or(0));
            let (xq, xp) = rw.need_q(x)?;
            let wt = &rw.src.tensors[w];
            let m = wt.shape[0];
            let (wq, ws) = quantize_rows(&wt.f32s().unwrap_or_default(), m);
            let wid = rw.g.add_const(
                format!("{name}:w_i8"),
                DType::I8,
                wt.shape.clone(),
                i8_bytes(&wq),
            );
            let bias = n
                .inputs
                .get(2)
                .copied()
                .flatten()
                .map(|b| rw.src.tensors[b].f32s().unwrap_or_default());
            let bias =
                with_correction(bias, corr, m).map(|bv| rw.bias_i32(&name, &bv, xp.scale, &ws));
            let rq = rw.requant(&name, xp.scale, &ws, yp.scale)?;
            rw.nodes.push(Node {
                op: Op::QConv {
                    window,
                    group,
                    x_zp: xp.zp,
                    y_zp: yp.zp,
                    act_min,
                    act_max,
                },
                inputs: vec![Some(xq), Some(wid), bias, Some(rq)],
                outputs: vec![Some(yq)],
                name,
            });
        }
        Kind::Fc => {
            let f =
                fc(rw.src, n).ok_or_else(|| CompileError::Invalid("internal error: FC".into()))?;
            let (xq, xp) = rw.need_q(f.x)?;
            let (wq, ws) = quantize_rows(&f.weights(rw.src), f.units);
            let wid = rw.g.add_const(
                format!("{name}:w_i8"),
                DType::I8,
                vec![f.units, f.depth],
                i8_bytes(&wq),
            );
            let bias = with_correction(f.bias_values(rw.src), corr, f.units)
                .map(|b| rw.bias_i32(&name, &b, xp.scale, &ws));
            let rq = rw.requant(&name, xp.scale, &ws, yp.scale)?;
            let op = Op::QFullyConnected {
                x_zp: xp.zp,
                y_zp: yp.zp,
                act_min,
                act_max,
            };
            let mut nodes = std::mem::take(&mut rw.nodes);
            let params = vec![Some(wid), bias, Some(rq)];
            emit_on_rows(
                &mut rw.g, &mut nodes, &name, op, xq, f.depth, params, yq, f.units,
            );
            rw.nodes = nodes;
        }
        Kind::Add => {
            let (a, b) = (n.inputs[0].unwrap_or(0), n.inputs[1].unwrap_or(0));
            let (aq, ap) = rw.need_q(a)?;
            let (bq, bp) = rw.need_q(b)?;
            let twice = f64::from(2.0 * ap.scale.max(bp.scale));
            let shift = kiln_kernels::quant::ADD_LEFT_SHIFT;
            let pair = |r: f64| -> Result<[i32; 2]> {
                let m = Multiplier::new(r).ok_or_else(|| {
                    CompileError::Invalid(format!("{name}: Add multiplier {r} is out of range"))
                })?;
                Ok([m.mantissa, m.shift])
            };
            let op = Op::QAdd {
                a_zp: ap.zp,
                b_zp: bp.zp,
                y_zp: yp.zp,
                a_rq: pair(f64::from(ap.scale) / twice)?,
                b_rq: pair(f64::from(bp.scale) / twice)?,
                y_rq: pair(twice / (f64::from((1u32 << shift) as f32) * f64::from(yp.scale)))?,
                act_min,
                act_max,
            };
            rw.nodes.push(Node {
                op,
                inputs: vec![Some(aq), Some(bq)],
                outputs: vec![Some(yq)],
                name,
            });
        }
        Kind::PassThrough => unreachable!("handled by the caller"),
    }
    rw.twin.insert(out, (yq, yp));
    Ok(())
}

/// Static int8 quantization with the optional gate.
fn int8(
    g: &mut Graph,
    calib: &Samples,
    method: Calibrator,
    validation: Option<&Validation>,
    mut report: QuantReport,
) -> Result<QuantReport> {
    check_calibration(calib)?;
    let ranges = calibrate(g, calib, method)?;
    for (t, r) in ranges.iter().enumerate() {
        if let Some((lo, hi)) = r
            && lo == hi
            && !g.inputs.contains(&t)
        {
            report.warnings.push(format!(
                "tensor '{}' was constant ({lo}) on every calibration sample; its int8 range is degenerate",
                g.tensors[t].name
            ));
        }
    }
    let all = layers(g);
    let unsupported: Vec<String> = g
        .nodes
        .iter()
        .filter(|n| {
            int8_kind(g, n).is_none()
                && !matches!(n.op, Op::Unary(Unary::Relu | Unary::Clip { .. }))
        })
        .map(|n| crate::ir::op_label(&n.op))
        .collect();
    report.unsupported = unsupported;
    let mut keep = HashMap::new();
    let corr = bias_corrections(g, calib, &ranges)?;
    let (qg, done) = if let Some(v) = validation {
        // The float model's outputs, computed once: every candidate is
        // scored against them.
        let float_out = predict(g, &v.samples)?;
        let mf = score(&float_out, v, None)?;
        let drop_with =
            |keep: &HashMap<usize, KeptAs>| -> Result<(f64, Graph, Vec<String>, Metric)> {
                let float: HashSet<usize> = keep.keys().copied().collect();
                let (mut qg, done) = rewrite(g, &ranges, &float, &corr)?;
                let names = |how: KeptAs| -> HashSet<&str> {
                    keep.iter()
                        .filter(|&(_, &h)| h == how)
                        .map(|(&k, _)| g.nodes[k].name.as_str())
                        .collect()
                };
                let (w8, f16) = (names(KeptAs::Int8Weights), names(KeptAs::F16));
                to_weight_int8(&mut qg, |n| w8.contains(n.name.as_str()));
                to_f16(&mut qg, |n| f16.contains(n.name.as_str()));
                let mq = evaluate(&qg, v, Some(&float_out))?;
                Ok((drop_of(mf, mq), qg, done, mq))
            };
        let (mut drop, mut qg, mut done, mut mq) = drop_with(&keep)?;
        if drop > v.max_drop && mf.kind != MetricKind::RelativeError && mf.value < 1.0 {
            return Err(CompileError::Invalid(format!(
                "the float model itself scores {:.2}% {} on the validation data; check the labels and the input preprocessing",
                mf.value,
                mf.kind.name()
            )));
        }
        if drop > v.max_drop {
            // Sensitivity: the float output's relative error when only that
            // layer is int8 (a continuous measure, steadier than accuracy
            // on a few hundred samples); the worst are kept in float first.
            let only = |k: usize| -> Result<f64> {
                let keep: HashSet<usize> = all.iter().copied().filter(|&j| j != k).collect();
                let (qg, _) = rewrite(g, &ranges, &keep, &corr)?;
                Ok(relative_error(&predict(&qg, &v.samples)?, &float_out))
            };
            let mut sens = vec![];
            for &k in &all {
                sens.push((k, only(k)?));
            }
            sens.sort_by(|a, b| b.1.total_cmp(&a.1));
            report.sensitivity = sens
                .iter()
                .map(|&(k, r)| (g.nodes[k].name.clone(), r))
                .collect();
            // Layers without weights (Add) cost no size in float: they go
            // first, then the rest by sensitivity, each with f16 weights.
            sens.sort_by_key(|&(k, _)| !matches!(int8_kind(g, &g.nodes[k]), Some(Kind::Add)));
            let budget = v.max_float_layers.unwrap_or(all.len() / 2);
            let float_as = |k: usize| match float_weights(g, k) {
                0 => KeptAs::NoWeights,
                _ => KeptAs::F16,
            };
            for &(k, _) in sens.iter().take(budget) {
                keep.insert(k, float_as(k));
                (drop, qg, done, mq) = drop_with(&keep)?;
                if drop <= v.max_drop {
                    break;
                }
            }
            if drop <= v.max_drop {
                // Greedy by sensitivity overshoots: a layer kept early may
                // be unneeded once later ones are float. Largest first,
                // each kept layer goes back to int8 if the budget holds,
                // else to int8 weights with float activations (int8's
                // size: much of int8's error is in the activations).
                let mut back: Vec<usize> = keep.keys().copied().collect();
                back.sort_by_key(|&k| (std::cmp::Reverse(float_weights(g, k)), k));
                for k in back {
                    keep.remove(&k);
                    let mut tries = vec![None];
                    if float_weights(g, k) > 0 {
                        tries.push(Some(KeptAs::Int8Weights));
                    }
                    let mut held = false;
                    for how in tries {
                        if let Some(how) = how {
                            keep.insert(k, how);
                        }
                        let (d, q2, d2, m2) = drop_with(&keep)?;
                        if d <= v.max_drop {
                            (drop, qg, done, mq) = (d, q2, d2, m2);
                            held = true;
                            break;
                        }
                    }
                    if !held {
                        keep.insert(k, float_as(k));
                    }
                }
            }
            if drop > v.max_drop {
                return Err(CompileError::Invalid(format!(
                    "int8 quantization loses {drop:.2} points of {} ({:.2}% float -> {:.2}% int8) even with the {} most sensitive of {} layers kept in float (--max-drop {}); the artifact was not written. Check that the calibration data are real inputs with the model's preprocessing, try --calibration-method percentile or mse, or allow more float layers",
                    mf.kind.name(),
                    mf.value,
                    mq.value,
                    keep.len(),
                    all.len(),
                    v.max_drop
                )));
            }
        }
        report.gate = Some((mf.kind.name().into(), mf.value, mq.value, drop));
        (qg, done)
    } else {
        report
            .warnings
            .push("no --validation data: the int8 model's accuracy was not checked".into());
        rewrite(g, &ranges, &HashSet::new(), &corr)?
    };
    let mut kept: Vec<(usize, KeptAs)> = keep.into_iter().collect();
    kept.sort_unstable_by_key(|&(k, _)| k);
    report.kept_float = kept
        .iter()
        .map(|&(k, how)| (g.nodes[k].name.clone(), how))
        .collect();
    report.quantized = done;
    *g = qg;
    Ok(report)
}

/// Float weight values node `k` reads (what keeping it float costs).
fn float_weights(g: &Graph, k: usize) -> usize {
    g.nodes[k]
        .inputs
        .iter()
        .flatten()
        .map(|&i| &g.tensors[i])
        .filter(|t| t.is_const() && t.dtype == DType::F32)
        .map(Tensor::numel)
        .sum()
}

/// Samples used to measure bias corrections.
const CORRECTION_SAMPLES: usize = 128;

/// Empirical bias correction (Nagel et al., "Data-Free Quantization",
/// 2019, measured on data here): rounding weights shifts each output
/// channel's mean, and a mean shift does not average out downstream (a
/// global pooling keeps it whole). Layer by layer in graph order, with the
/// corrections of earlier layers already applied, the mean of `float -
/// int8` per output channel over the calibration samples is added to that
/// layer's bias. Behind a ReLU only positions where the float output is
/// positive count (the clamp hides the rest).
fn bias_corrections(
    g: &Graph,
    calib: &Samples,
    ranges: &[Option<(f32, f32)>],
) -> Result<HashMap<usize, Vec<f32>>> {
    let n = CORRECTION_SAMPLES.min(calib.count);
    let convs: Vec<usize> = layers(g)
        .into_iter()
        .filter(|&k| matches!(int8_kind(g, &g.nodes[k]), Some(Kind::Conv | Kind::Fc)))
        .collect();
    let outs: Vec<(usize, TensorId, bool)> = convs
        .iter()
        .map(|&k| {
            let (act, out, _) = layer_output(g, k);
            (k, out, act != Unary::Identity)
        })
        .collect();
    let observe: Vec<TensorId> = outs.iter().map(|o| o.1).collect();
    let mut float_runner = GraphRunner::new(g, &observe)?;
    let mut float: Vec<Vec<Vec<f32>>> = Vec::with_capacity(n);
    float_runner.run_each(calib, n, |_, o| {
        float.push(o.iter().map(|v| v.to_vec()).collect());
    })?;
    let mut corr: HashMap<usize, Vec<f32>> = HashMap::new();
    for (j, &(k, out, clamped)) in outs.iter().enumerate() {
        // The int8 graph so far, with this layer's result as an output.
        let mut src = g.clone();
        src.outputs.push(out);
        let (qg, _) = rewrite(&src, ranges, &HashSet::new(), &corr)?;
        let mut runner = GraphRunner::new(&qg, &[out])?;
        let shape = &g.tensors[out].shape;
        let (channels, inner) = match (&g.nodes[k].op, shape.len()) {
            (Op::Conv { .. }, 4) => (shape[1], shape[2] * shape[3]),
            _ => (*shape.last().unwrap_or(&1), 1),
        };
        let (mut sum, mut count) = (vec![0f64; channels], vec![0u64; channels]);
        runner.run_each(calib, n, |i, o| {
            for (p, (&fv, &qv)) in float[i][j].iter().zip(o[0]).enumerate() {
                if clamped && fv <= 0.0 {
                    continue;
                }
                let c = (p / inner) % channels;
                sum[c] += f64::from(fv - qv);
                count[c] += 1;
            }
        })?;
        let c: Vec<f32> = sum
            .iter()
            .zip(&count)
            .map(|(s, &n)| if n > 0 { (s / n as f64) as f32 } else { 0.0 })
            .collect();
        corr.insert(k, c);
    }
    Ok(corr)
}

/// Refuses calibration data that cannot give meaningful ranges.
fn check_calibration(c: &Samples) -> Result<()> {
    if c.count == 0 || c.data.is_empty() {
        return Err(CompileError::Invalid(
            "the calibration data holds no samples".into(),
        ));
    }
    if let Some(i) = c.data.iter().position(|v| !v.is_finite()) {
        return Err(CompileError::Invalid(format!(
            "calibration sample {} has a non-finite value ({}); clean the data first",
            i / c.sample_len().max(1),
            c.data[i]
        )));
    }
    let (lo, hi) = c
        .data
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    if lo == hi {
        return Err(CompileError::Invalid(format!(
            "the calibration data are constant (every value is {lo}): activation ranges would collapse and the int8 model would ignore its input; the artifact was not written. Pass real input samples (with the model's preprocessing)"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Evaluation

/// The output the gate scores: the first f32 output with more than one
/// value per sample (class scores), else the first f32 output.
pub(crate) fn scored_output(g: &Graph) -> Result<TensorId> {
    let f32s: Vec<TensorId> = g
        .outputs
        .iter()
        .copied()
        .filter(|&o| g.tensors[o].dtype == DType::F32)
        .collect();
    f32s.iter()
        .copied()
        .find(|&o| g.tensors[o].numel() > 1)
        .or_else(|| f32s.first().copied())
        .ok_or_else(|| CompileError::Invalid("the model has no float32 output to score".into()))
}

/// Outputs of `g` on every validation sample.
pub fn predict(g: &Graph, samples: &Samples) -> Result<Vec<Vec<f32>>> {
    single_input(g)?;
    let out = scored_output(g)?;
    let mut preds = Vec::with_capacity(samples.count);
    GraphRunner::new(g, &[out])?
        .run_each(samples, samples.count, |_, o| preds.push(o[0].to_vec()))?;
    Ok(preds)
}

/// What a drift baseline's predictions come from: the scored output (the
/// float32 one [`predict`] scores, else an 8-bit integer output, read as
/// its codes) and its values on every sample (an 8-bit input takes the
/// samples as its codes).
pub(crate) fn predict_any(g: &Graph, samples: &Samples) -> Result<(TensorId, Vec<Vec<f32>>)> {
    let out = scored_output(g).or_else(|e| {
        let ints: Vec<TensorId> = g
            .outputs
            .iter()
            .copied()
            .filter(|&o| matches!(g.tensors[o].dtype, DType::I8 | DType::U8))
            .collect();
        ints.iter()
            .copied()
            .find(|&o| g.tensors[o].numel() > 1)
            .or_else(|| ints.first().copied())
            .ok_or(e)
    })?;
    let mut preds = Vec::with_capacity(samples.count);
    GraphRunner::new(g, &[out])?
        .run_each(samples, samples.count, |_, o| preds.push(o[0].to_vec()))?;
    Ok((out, preds))
}

/// Index of the largest value (NaN never wins; 0 for an all-NaN row).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] || v[best].is_nan() {
            best = i;
        }
    }
    best
}

/// Scores `g` on the validation data; `reference` holds the float graph's
/// [`predict`]ions for agreement and relative error (none when scoring the
/// float graph itself).
pub fn evaluate(g: &Graph, v: &Validation, reference: Option<&[Vec<f32>]>) -> Result<Metric> {
    score(&predict(g, &v.samples)?, v, reference)
}

/// Scores predictions (see [`evaluate`]).
pub fn score(preds: &[Vec<f32>], v: &Validation, reference: Option<&[Vec<f32>]>) -> Result<Metric> {
    let per_sample = preds.first().map_or(0, Vec::len);
    let task = match v.task {
        Task::Auto if v.labels.is_some() => Task::Classification,
        Task::Auto if per_sample > 1 && per_sample != v.samples.sample_len() => {
            Task::Classification
        }
        Task::Auto => Task::Regression,
        t => t,
    };
    match task {
        Task::Classification => {
            let truth: Vec<i64> = match (&v.labels, reference) {
                (Some(l), _) => {
                    if l.len() != preds.len() {
                        return Err(CompileError::Invalid(format!(
                            "{} labels for {} validation samples",
                            l.len(),
                            preds.len()
                        )));
                    }
                    l.clone()
                }
                (None, Some(r)) => r.iter().map(|p| argmax(p) as i64).collect(),
                (None, None) => preds.iter().map(|p| argmax(p) as i64).collect(),
            };
            let hits = preds
                .iter()
                .zip(&truth)
                .filter(|(p, t)| argmax(p) as i64 == **t)
                .count();
            Ok(Metric {
                kind: if v.labels.is_some() {
                    MetricKind::Accuracy
                } else {
                    MetricKind::Agreement
                },
                value: 100.0 * hits as f64 / preds.len().max(1) as f64,
            })
        }
        _ => {
            let value = reference.map_or(0.0, |r| relative_error(preds, r));
            Ok(Metric {
                kind: MetricKind::RelativeError,
                value,
            })
        }
    }
}

/// Mean relative L2 error of `preds` against `refs`, in percent.
fn relative_error(preds: &[Vec<f32>], refs: &[Vec<f32>]) -> f64 {
    let mut sum = 0.0f64;
    for (p, q) in preds.iter().zip(refs) {
        let num: f64 = p.iter().zip(q).map(|(a, b)| f64::from(a - b).powi(2)).sum();
        let den: f64 = q.iter().map(|b| f64::from(*b).powi(2)).sum();
        sum += (num / den.max(1e-30)).sqrt();
    }
    100.0 * sum / preds.len().max(1) as f64
}

/// Points lost going from `f` to `q`.
pub(crate) fn drop_of(f: Metric, q: Metric) -> f64 {
    match f.kind {
        MetricKind::RelativeError => q.value - f.value,
        _ => f.value - q.value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_include_zero_and_round_trip() {
        let p = QParams::from_range(0.0, 6.0);
        assert_eq!(p.zp, -128);
        assert_eq!(p.quant(0.0), -128);
        assert_eq!(p.quant(6.0), 127);
        let p = QParams::from_range(-1.0, 3.0);
        assert!((p.dequant(p.quant(0.0))).abs() < 1e-7);
        assert!((p.dequant(p.quant(1.3)) - 1.3).abs() <= p.scale / 2.0 + 1e-6);
        // A degenerate range gives a usable (unit) scale, never NaN.
        let p = QParams::from_range(0.0, 0.0);
        assert_eq!(p.scale, 1.0);
    }

    fn observed(values: &[f32]) -> Observed {
        let (lo, hi) = values
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        let mut hist = vec![0u64; BINS];
        let w = (hi - lo) / BINS as f32;
        for &v in values {
            hist[(((v - lo) / w) as usize).min(BINS - 1)] += 1;
        }
        Observed { lo, hi, hist }
    }

    #[test]
    fn calibrators_clip_outliers_and_minmax_does_not() {
        // 10 000 values in [0, 1) plus one outlier at 100.
        let mut v: Vec<f32> = (0..10_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        v.push(100.0);
        let o = observed(&v);
        assert_eq!(choose_range(&o, Calibrator::MinMax), (0.0, 100.0));
        let (_, hi) = choose_range(&o, Calibrator::Percentile(99.9));
        assert!(hi < 2.0, "percentile keeps the outlier out: {hi}");
        let (_, hi) = choose_range(&o, Calibrator::Mse);
        assert!(hi < 100.0, "mse clips: {hi}");
        let (_, hi) = choose_range(&o, Calibrator::Kl);
        assert!(hi < 100.0, "kl clips: {hi}");
    }

    #[test]
    fn calibrator_names_parse() {
        assert_eq!("minmax".parse::<Calibrator>(), Ok(Calibrator::MinMax));
        assert_eq!(
            "percentile:99.9".parse::<Calibrator>(),
            Ok(Calibrator::Percentile(99.9))
        );
        assert!("percentile:10".parse::<Calibrator>().is_err());
        assert!("magic".parse::<Calibrator>().is_err());
        assert_eq!("f16".parse::<Precision>(), Ok(Precision::F16));
        assert_eq!("weights".parse::<Precision>(), Ok(Precision::Weights));
    }

    /// x [1, K] · W [K, N] with column `j` of W scaled by `4^j`: per-column
    /// int8 weights keep every column accurate; rows quantized along the
    /// wrong axis would not.
    #[test]
    fn weight_only_int8_quantizes_each_output_column() {
        let (k, n) = (24, 4);
        let mut g = Graph::default();
        let x = g.add_tensor(Tensor {
            name: "x".into(),
            dtype: DType::F32,
            shape: vec![1, k],
            data: None,
        });
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i * 7919 % 97) as f32 / 48.0 - 1.0) * 4f32.powi((i % n) as i32))
            .collect();
        let wt = g.const_f32("w", vec![k, n], &w);
        let y = g.add_tensor(Tensor {
            name: "y".into(),
            dtype: DType::F32,
            shape: vec![1, n],
            data: None,
        });
        g.nodes.push(Node {
            op: Op::MatMul {
                act: Unary::Identity,
            },
            inputs: vec![Some(x), Some(wt)],
            outputs: vec![Some(y)],
            name: "mm".into(),
        });
        g.inputs = vec![x];
        g.outputs = vec![y];
        let xs = Samples::new((0..3 * k).map(|i| (i % 5) as f32 - 2.0).collect(), 3);
        let before = predict(&g, &xs).expect("float");
        let mut q = g.clone();
        assert_eq!(to_weight_int8(&mut q, |n| n.name == "mm"), vec!["w"]);
        assert!(q.nodes.iter().any(|n| n.op == Op::Dequantize { axis: 1 }));
        assert!(
            q.tensors
                .iter()
                .any(|t| t.dtype == DType::I8 && t.shape == [k, n])
        );
        let after = predict(&q, &xs).expect("weight-only int8");
        for (b, a) in before.iter().zip(&after) {
            for j in 0..n {
                // Each column's error is bounded by its own scale.
                let tol = 0.02 * 4f32.powi(j as i32) * k as f32;
                assert!(
                    (b[j] - a[j]).abs() <= tol,
                    "column {j}: {} vs {}",
                    b[j],
                    a[j]
                );
            }
        }
        // Nodes not picked keep float weights.
        let mut q = g.clone();
        assert!(to_weight_int8(&mut q, |_| false).is_empty());
        assert_eq!(q, g);
    }

    #[test]
    fn constant_calibration_is_refused() {
        let e = check_calibration(&Samples::new(vec![0.0; 64], 4)).unwrap_err();
        assert!(e.to_string().contains("constant"), "{e}");
        let e = check_calibration(&Samples::new(vec![0.0, f32::NAN], 1)).unwrap_err();
        assert!(e.to_string().contains("non-finite"), "{e}");
    }
}
