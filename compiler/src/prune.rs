//! Pruning of float graphs, guided by data and the accuracy gate.
//!
//! - `channels:auto` / `channels:F` (structured): whole output channels of
//!   a Conv or units of a fully connected layer are removed, with the
//!   matching input channels of the layer that reads them (through ReLU,
//!   BatchNorm, pooling and a flatten), so the model really is smaller and
//!   faster. A removed channel's mean activation on the calibration data is
//!   folded into the next layer's bias (its constant part is kept; only its
//!   variation is lost). Channels go in order of least information per MAC
//!   saved: the standard deviation of the activation times the norm of the
//!   next layer's weights reading it, divided by the MACs it costs. `auto`
//!   removes as many as the gate allows (needs validation data); `F`
//!   removes that fraction of the prunable MACs.
//! - `magnitude:F` (unstructured): the fraction `F` of smallest-magnitude
//!   weights of each Conv / fully connected layer becomes zero. Weights
//!   left mostly zero are stored sparse (`passes::sparse_weights`, at the
//!   end of compilation); kernels stay dense, so the MACs do not shrink,
//!   which the report says.

use crate::error::{CompileError, Result};
use crate::fc::fc;
use crate::ir::{Graph, TensorId};
use crate::quantize::{Samples, Validation, drop_of, evaluate, predict, score};
use crate::run::GraphRunner;
use crate::stats::graph_stats;
use kiln_format::{DType, Op};
use std::collections::{HashMap, HashSet};

/// The pruning method.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Prune {
    /// Zero this fraction of each layer's weights, smallest first.
    Magnitude(f32),
    /// Remove channels: `None` as many as the gate allows, `Some(f)` this
    /// fraction of the prunable MACs.
    Channels(Option<f32>),
}

impl std::str::FromStr for Prune {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let frac = |v: &str| match v.parse::<f32>() {
            Ok(f) if f > 0.0 && f < 1.0 => Ok(f),
            _ => Err(format!("pruning fraction must be in (0, 1), got '{v}'")),
        };
        match s.split_once(':') {
            Some(("magnitude", f)) => Ok(Prune::Magnitude(frac(f)?)),
            Some(("channels", "auto")) => Ok(Prune::Channels(None)),
            Some(("channels", f)) => Ok(Prune::Channels(Some(frac(f)?))),
            _ => Err(format!(
                "unknown pruning '{s}' (expected magnitude:F or channels:auto|F)"
            )),
        }
    }
}

/// Pruning settings of a compile.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    pub method: Prune,
    /// Samples for activation statistics (calibration data, else the
    /// validation samples).
    pub data: Option<Samples>,
    pub validation: Option<Validation>,
}

/// What pruning did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PruneReport {
    pub method: String,
    pub params_before: usize,
    pub params_after: usize,
    pub macs_before: u64,
    pub macs_after: u64,
    /// Zero-valued weights after pruning (magnitude pruning).
    pub zeros: usize,
    /// Per layer: (name, channels removed, channels before).
    pub layers: Vec<(String, usize, usize)>,
    /// (metric name, float value, pruned value, drop in points).
    pub gate: Option<(String, f64, f64, f64)>,
    /// `channels:auto` search: (MACs, drop in points) of each step tried.
    pub steps: Vec<(u64, f64)>,
}

/// Prunes `g` in place (after the optimisation passes, before quantization).
pub fn prune(g: &mut Graph, opts: &PruneOptions) -> Result<PruneReport> {
    let before = graph_stats(g);
    let mut report = PruneReport {
        params_before: before.params,
        macs_before: before.macs,
        ..Default::default()
    };
    // The unpruned model's outputs and score, computed once.
    let float = match &opts.validation {
        Some(v) => {
            let out = predict(g, &v.samples)?;
            let m = score(&out, v, None)?;
            Some((v, out, m))
        }
        None => None,
    };
    // The pruned graph, with its score when the search already measured it.
    let (pruned, measured) = match opts.method {
        Prune::Magnitude(f) => {
            report.method = format!("magnitude:{f}");
            let mut p = g.clone();
            report.zeros = magnitude(&mut p, f);
            (p, None)
        }
        Prune::Channels(frac) => {
            report.method = match frac {
                Some(f) => format!("channels:{f}"),
                None => "channels:auto".into(),
            };
            let data = opts
                .data
                .as_ref()
                .or(opts.validation.as_ref().map(|v| &v.samples))
                .ok_or_else(|| {
                    CompileError::Invalid(
                        "channel pruning needs data (--calibration or --validation) to measure activations".into(),
                    )
                })?;
            let cands = candidates(g, data)?;
            if cands.is_empty() {
                return Err(CompileError::Invalid(
                    "no prunable channels: channel pruning needs a Conv or fully connected layer whose output feeds exactly one Conv or fully connected layer".into(),
                ));
            }
            let total: u64 = cands.iter().map(|c| c.macs).sum();
            match frac {
                Some(f) => (
                    apply(g, &cands, (f64::from(f) * total as f64) as u64)?,
                    None,
                ),
                None => {
                    let (v, float_out, mf) = float.as_ref().ok_or_else(|| {
                        CompileError::Invalid(
                            "--prune channels:auto needs --validation data: it removes channels while the accuracy drop stays within --max-drop".into(),
                        )
                    })?;
                    // Larger and larger prefixes of the candidate order, in
                    // steps of 5% of the prunable MACs; keep the last one the
                    // gate accepts.
                    let mut best = None;
                    for step in 1..20 {
                        let p = apply(g, &cands, total * step / 20)?;
                        let mq = evaluate(&p, v, Some(float_out))?;
                        let drop = drop_of(*mf, mq);
                        report.steps.push((graph_stats(&p).macs, drop));
                        if drop > v.max_drop {
                            break;
                        }
                        best = Some((p, Some(mq)));
                    }
                    best.ok_or_else(|| {
                        CompileError::Invalid(format!(
                            "removing even 5% of the prunable MACs loses more than --max-drop {} points; nothing was pruned and the artifact was not written",
                            v.max_drop
                        ))
                    })?
                }
            }
        }
    };
    if let Some((v, float_out, mf)) = &float {
        let (mf, mq) = match measured {
            Some(mq) => (*mf, mq),
            None => (*mf, evaluate(&pruned, v, Some(float_out))?),
        };
        let drop = drop_of(mf, mq);
        report.gate = Some((mf.kind.name().into(), mf.value, mq.value, drop));
        if drop > v.max_drop {
            return Err(CompileError::Invalid(format!(
                "pruning ({}) loses {drop:.2} points of {} ({:.2}% -> {:.2}%), over the --max-drop budget of {}; the artifact was not written",
                report.method,
                mf.kind.name(),
                mf.value,
                mq.value,
                v.max_drop
            )));
        }
    }
    report.layers = channel_counts(g, &pruned);
    *g = pruned;
    crate::passes::dead_nodes(g);
    let after = graph_stats(g);
    report.params_after = after.params;
    report.macs_after = after.macs;
    Ok(report)
}

/// Zeroes the smallest `frac` of each Conv/FC weight tensor; returns the
/// number of zero weights.
fn magnitude(g: &mut Graph, frac: f32) -> usize {
    let mut zeros = 0;
    let mut done = HashSet::new();
    for k in 0..g.nodes.len() {
        let w = match &g.nodes[k].op {
            Op::Conv { .. } | Op::Gemm { .. } | Op::MatMul { .. } => {
                g.nodes[k].inputs.get(1).copied().flatten()
            }
            _ => None,
        };
        let Some(w) = w else { continue };
        let Some(mut v) = g.tensors[w].f32s() else {
            continue;
        };
        if !done.insert(w) {
            continue;
        }
        let mut mags: Vec<f32> = v.iter().map(|x| x.abs()).collect();
        let cut = ((v.len() as f32 * frac) as usize).min(v.len());
        if cut == 0 {
            continue;
        }
        mags.select_nth_unstable_by(cut - 1, f32::total_cmp);
        let thr = mags[cut - 1];
        let mut left = cut;
        for x in &mut v {
            if x.abs() <= thr && left > 0 {
                *x = 0.0;
                left -= 1;
            }
        }
        zeros += v.iter().filter(|x| **x == 0.0).count();
        let t = &g.tensors[w];
        let nw = g.const_f32(format!("{}:pruned", t.name), t.shape.clone(), &v);
        g.nodes[k].inputs[1] = Some(nw);
    }
    zeros
}

/// A prunable producer: its output channels feed one sink layer through
/// channel-wise ops.
#[derive(Debug, Clone)]
struct Chain {
    /// The producing Conv / FC node.
    producer: usize,
    /// Channel-wise nodes between producer and sink, in order.
    between: Vec<usize>,
    /// The Conv / FC node reading the channels.
    sink: usize,
    /// Channels of the producer.
    channels: usize,
    /// Positions per channel at the sink's input (a flatten spreads a
    /// channel over `inner` consecutive inputs of an FC).
    inner: usize,
}

/// One removable channel.
#[derive(Debug, Clone)]
struct Candidate {
    chain: usize,
    channel: usize,
    /// Information lost per MAC saved (lower goes first).
    score: f64,
    /// MACs saved by removing it.
    macs: u64,
}

/// Whether node `k` is a fully connected layer pruning can edit in place
/// (a 2-D input, no alpha/beta scaling).
fn is_fc(g: &Graph, k: usize) -> bool {
    fc(g, &g.nodes[k])
        .is_some_and(|f| f.alpha == 1.0 && f.beta == 1.0 && g.tensors[f.x].shape.len() == 2)
}

fn is_conv(g: &Graph, k: usize) -> bool {
    let n = &g.nodes[k];
    matches!(n.op, Op::Conv { group: 1, .. })
        && n.inputs
            .get(1)
            .copied()
            .flatten()
            .is_some_and(|w| g.tensors[w].is_const())
        && n.inputs
            .first()
            .copied()
            .flatten()
            .is_some_and(|x| g.tensors[x].shape.len() == 4)
}

/// Every prunable producer → sink chain.
fn chains(g: &Graph) -> Vec<Chain> {
    let mut out = vec![];
    for p in 0..g.nodes.len() {
        let (conv, fc) = (is_conv(g, p), is_fc(g, p));
        if !(conv || fc) {
            continue;
        }
        let Some(Some(y)) = g.nodes[p].outputs.first().copied() else {
            continue;
        };
        let channels = g.tensors[y].shape[1];
        let mut between = vec![];
        let mut t = y;
        let sink = loop {
            let Some(k) = g.sole_consumer(t) else {
                break None;
            };
            let n = &g.nodes[k];
            if n.inputs.first() != Some(&Some(t)) {
                break None;
            }
            if (conv && is_conv(g, k)) || (is_fc(g, k) && g.tensors[t].shape.len() == 2) {
                break Some(k);
            }
            let next = n.outputs.first().copied().flatten();
            let ok = match &n.op {
                Op::Unary(_) => true,
                Op::BatchNorm { .. } => n.inputs[1..]
                    .iter()
                    .all(|i| i.is_some_and(|i| g.tensors[i].is_const())),
                Op::MaxPool { .. }
                | Op::AveragePool { .. }
                | Op::GlobalAveragePool
                | Op::GlobalMaxPool => conv,
                // A flatten of [1, C, H, W] to [1, C·H·W].
                Op::Reshape => next.is_some_and(|o| {
                    let (si, so) = (&g.tensors[t].shape, &g.tensors[o].shape);
                    si.len() >= 2 && si[0] == 1 && si[1] == channels && so.len() == 2 && so[0] == 1
                }),
                _ => false,
            };
            if !ok {
                break None;
            }
            between.push(k);
            match next {
                Some(o) => t = o,
                None => break None,
            }
        };
        let Some(sink) = sink else { continue };
        let weights_ok = [p, sink].iter().all(|&k| {
            g.nodes[k].inputs[1..]
                .iter()
                .flatten()
                .all(|&w| g.sole_consumer(w) == Some(k))
        });
        if weights_ok && channels > 1 {
            let inner = if is_fc(g, sink) {
                let x = g.nodes[sink].inputs[0].unwrap_or(0);
                g.tensors[x].shape[1] / channels
            } else {
                1
            };
            out.push(Chain {
                producer: p,
                between,
                sink,
                channels,
                inner,
            });
        }
    }
    out
}

/// The sink's weights as `[outputs][channel][position]` accessors.
struct SinkWeights {
    w: Vec<f32>,
    shape: Vec<usize>,
    /// FC weights stored `[K, N]` (MatMul, Gemm without trans_b).
    kn: bool,
}

impl SinkWeights {
    fn of(g: &Graph, sink: usize) -> SinkWeights {
        let n = &g.nodes[sink];
        let w = n.inputs[1].unwrap_or(0);
        let kn = fc(g, n).is_some_and(|f| !f.units_major);
        SinkWeights {
            w: g.tensors[w].f32s().unwrap_or_default(),
            shape: g.tensors[w].shape.clone(),
            kn,
        }
    }

    /// Output features of the sink.
    fn outputs(&self, conv: bool) -> usize {
        if conv || !self.kn {
            self.shape[0]
        } else {
            self.shape[1]
        }
    }

    /// Every weight reading input channel `c` (spread over `inner` inputs
    /// for an FC), with its output index: (output, weight, position).
    fn reading(&self, conv: bool, c: usize, inner: usize) -> Vec<(usize, f32, usize)> {
        let mut v = vec![];
        if conv {
            let (m, ci, kk) = (self.shape[0], self.shape[1], self.shape[2] * self.shape[3]);
            for o in 0..m {
                for j in 0..kk {
                    v.push((o, self.w[(o * ci + c) * kk + j], 0));
                }
            }
        } else if self.kn {
            let n = self.shape[1];
            for s in 0..inner {
                let k = c * inner + s;
                for o in 0..n {
                    v.push((o, self.w[k * n + o], s));
                }
            }
        } else {
            let (n, kdim) = (self.shape[0], self.shape[1]);
            for o in 0..n {
                for s in 0..inner {
                    v.push((o, self.w[o * kdim + c * inner + s], s));
                }
            }
        }
        v
    }
}

/// Per-channel sink input statistics, and the raw sink inputs of the
/// first samples (Conv sinks only, for the refit).
type SinkStats = (Vec<(Vec<f64>, Vec<f64>)>, Vec<Vec<Vec<f32>>>);

/// Mean (per channel and position) and standard deviation (per channel)
/// of every chain's sink input over the samples, in one pass that also
/// records the first [`REFIT_SAMPLES`] Conv sink inputs.
fn sink_stats(g: &Graph, chains: &[Chain], data: &Samples) -> Result<SinkStats> {
    let observe: Vec<TensorId> = chains
        .iter()
        .map(|c| g.nodes[c.sink].inputs[0].unwrap_or(0))
        .collect();
    let mut runner = GraphRunner::new(g, &observe)?;
    let mut sums: Vec<(Vec<f64>, Vec<f64>)> = observe
        .iter()
        .map(|&t| {
            (
                vec![0.0; g.tensors[t].numel()],
                vec![0.0; g.tensors[t].numel()],
            )
        })
        .collect();
    let n = data.count.min(256);
    let mut inputs = vec![vec![]; chains.len()];
    runner.run_each(data, n, |i, outs| {
        for (k, (s, v)) in sums.iter_mut().zip(outs).enumerate() {
            for (j, &x) in v.iter().enumerate() {
                s.0[j] += f64::from(x);
                s.1[j] += f64::from(x) * f64::from(x);
            }
            if i < REFIT_SAMPLES && is_conv(g, chains[k].sink) {
                inputs[k].push(v.to_vec());
            }
        }
    })?;
    let stats = sums
        .into_iter()
        .zip(chains)
        .map(|((s, sq), ch)| {
            let per = s.len() / ch.channels.max(1);
            let mean: Vec<f64> = s.iter().map(|v| v / n as f64).collect();
            let std: Vec<f64> = (0..ch.channels)
                .map(|c| {
                    let var: f64 = (0..per)
                        .map(|j| {
                            let p = c * per + j;
                            (sq[p] / n as f64 - mean[p] * mean[p]).max(0.0)
                        })
                        .sum::<f64>()
                        / per.max(1) as f64;
                    var.sqrt()
                })
                .collect();
            (mean, std)
        })
        .collect();
    Ok((stats, inputs))
}

/// MACs one channel of a chain costs (in the producer and the sink).
fn channel_macs(g: &Graph, ch: &Chain) -> u64 {
    let n = &g.nodes[ch.producer];
    let y = &g.tensors[n.outputs[0].unwrap_or(0)].shape;
    let w = &g.tensors[n.inputs[1].unwrap_or(0)].shape;
    let prod = if is_conv(g, ch.producer) {
        (y[2] * y[3] * w[1] * w[2] * w[3]) as u64
    } else {
        let x = &g.tensors[n.inputs[0].unwrap_or(0)].shape;
        (x[0] * x[1]) as u64
    };
    let s = &g.nodes[ch.sink];
    let sy = &g.tensors[s.outputs[0].unwrap_or(0)].shape;
    let sink = if is_conv(g, ch.sink) {
        let sw = &g.tensors[s.inputs[1].unwrap_or(0)].shape;
        (sy[0] * sy[1] * sy[2] * sy[3] * sw[2] * sw[3]) as u64
    } else {
        (sy.iter().product::<usize>() * ch.inner) as u64
    };
    prod + sink
}

struct Plan {
    chains: Vec<Chain>,
    stats: Vec<(Vec<f64>, Vec<f64>)>,
    cands: Vec<Candidate>,
    /// Per chain with a Conv sink: its input on the first samples (for the
    /// least-squares refit).
    inputs: Vec<Vec<Vec<f32>>>,
}

/// Samples whose sink inputs the refit uses.
const REFIT_SAMPLES: usize = 48;

fn candidates(g: &Graph, data: &Samples) -> Result<Plan> {
    let chains = chains(g);
    let (stats, inputs) = sink_stats(g, &chains, data)?;
    let mut cands = vec![];
    for (i, ch) in chains.iter().enumerate() {
        let sw = SinkWeights::of(g, ch.sink);
        let conv_sink = is_conv(g, ch.sink);
        let macs = channel_macs(g, ch);
        for c in 0..ch.channels {
            let norm: f64 = sw
                .reading(conv_sink, c, ch.inner)
                .iter()
                .map(|(_, w, _)| f64::from(*w) * f64::from(*w))
                .sum::<f64>()
                .sqrt();
            cands.push(Candidate {
                chain: i,
                channel: c,
                score: stats[i].1[c] * norm / macs.max(1) as f64,
                macs,
            });
        }
    }
    cands.sort_by(|a, b| a.score.total_cmp(&b.score));
    Ok(Plan {
        chains,
        stats,
        cands,
        inputs,
    })
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.cands.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &Candidate> {
        self.cands.iter()
    }
}

/// The graph with the lowest-score channels removed until `budget` MACs
/// are saved (each layer keeps at least a quarter of its channels).
fn apply(g: &Graph, plan: &Plan, budget: u64) -> Result<Graph> {
    let mut remove: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut saved = 0u64;
    for c in plan.iter() {
        if saved >= budget {
            break;
        }
        let ch = &plan.chains[c.chain];
        let r = remove.entry(c.chain).or_default();
        if (ch.channels - r.len() - 1) * 4 < ch.channels {
            continue;
        }
        r.push(c.channel);
        saved += c.macs;
    }
    let mut out = g.clone();
    // Chains are disjoint in their producers; a producer can be another
    // chain's sink, so edit by node index on the shared graph.
    let mut chains: Vec<(usize, Vec<usize>)> = remove.into_iter().collect();
    chains.sort_unstable();
    for (i, mut r) in chains {
        r.sort_unstable();
        remove_channels(&mut out, &plan.chains[i], &plan.stats[i].0, &r)?;
        if !plan.inputs[i].is_empty() {
            refit_conv_sink(&mut out, g, &plan.chains[i], &plan.inputs[i], &r)?;
        }
    }
    Ok(out)
}

/// Keeps the indices along `axis` of a row-major tensor not in `drop`.
fn keep_along(
    v: &[f32],
    shape: &[usize],
    axis: usize,
    drop: &HashSet<usize>,
) -> (Vec<f32>, Vec<usize>) {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let n = shape[axis];
    let mut out = Vec::with_capacity(v.len());
    for o in 0..outer {
        for c in (0..n).filter(|c| !drop.contains(c)) {
            out.extend_from_slice(&v[(o * n + c) * inner..(o * n + c + 1) * inner]);
        }
    }
    let mut s = shape.to_vec();
    s[axis] = n - drop.len();
    (out, s)
}

fn replace_const(g: &mut Graph, k: usize, input: usize, v: &[f32], shape: Vec<usize>) {
    let name = g.nodes[k].inputs[input]
        .map(|t| g.tensors[t].name.clone())
        .unwrap_or_else(|| format!("{}:bias", g.nodes[k].name));
    let id = g.const_f32(format!("{name}:pruned"), shape, v);
    if g.nodes[k].inputs.len() <= input {
        g.nodes[k].inputs.resize(input + 1, None);
    }
    g.nodes[k].inputs[input] = Some(id);
}

fn remove_channels(g: &mut Graph, ch: &Chain, mean: &[f64], drop: &[usize]) -> Result<()> {
    let set: HashSet<usize> = drop.iter().copied().collect();
    let p = ch.producer;
    // Producer: weights and bias.
    let wt = g.nodes[p].inputs[1].unwrap_or(0);
    let (w, ws) = (
        g.tensors[wt].f32s().unwrap_or_default(),
        g.tensors[wt].shape.clone(),
    );
    let axis = match g.nodes[p].op {
        Op::Conv { .. } => 0,
        Op::Gemm { trans_b: true, .. } => 0,
        _ => 1,
    };
    let (nw, nshape) = keep_along(&w, &ws, axis, &set);
    replace_const(g, p, 1, &nw, nshape);
    if let Some(Some(b)) = g.nodes[p].inputs.get(2).copied() {
        let bv = g.tensors[b].f32s().unwrap_or_default();
        if bv.len() == ch.channels {
            let (nb, s) = keep_along(&bv, &[bv.len()], 0, &set);
            replace_const(g, p, 2, &nb, s);
        }
    }
    let kept = ch.channels - drop.len();
    // Shapes along the chain (a flattened [1, C·P] keeps P per channel),
    // and per-channel parameters.
    let shrink = |g: &mut Graph, t: TensorId| {
        let s = &mut g.tensors[t].shape;
        if s.len() == 2 {
            let per = s[1] / ch.channels.max(1);
            s[1] = kept * per;
        } else if s.len() > 2 {
            s[1] = kept;
        }
    };
    shrink(g, g.nodes[p].outputs[0].unwrap_or(0));
    for &k in &ch.between {
        if let Op::BatchNorm { .. } = g.nodes[k].op {
            for i in 1..5 {
                if let Some(Some(c)) = g.nodes[k].inputs.get(i).copied() {
                    let v = g.tensors[c].f32s().unwrap_or_default();
                    let (nv, s) = keep_along(&v, &[v.len()], 0, &set);
                    replace_const(g, k, i, &nv, s);
                }
            }
        }
        shrink(g, g.nodes[k].outputs[0].unwrap_or(0));
    }
    // Sink: drop the input channels, fold their mean into the bias.
    let s = ch.sink;
    let conv_sink = is_conv(g, s);
    let sw = SinkWeights::of(g, s);
    let outs = sw.outputs(conv_sink);
    let per = mean.len() / ch.channels.max(1);
    let mut bias = g.nodes[s]
        .inputs
        .get(2)
        .copied()
        .flatten()
        .and_then(|b| g.tensors[b].f32s())
        .unwrap_or_else(|| vec![0.0; outs]);
    for &c in drop {
        for (o, w, pos) in sw.reading(conv_sink, c, ch.inner) {
            let m = if conv_sink {
                // Per-channel mean over positions (exact for unpadded convs).
                mean[c * per..(c + 1) * per].iter().sum::<f64>() / per.max(1) as f64
            } else {
                mean[c * ch.inner + pos]
            };
            bias[o] += (f64::from(w) * m) as f32;
        }
    }
    let (nw, nshape) = if conv_sink {
        keep_along(&sw.w, &sw.shape, 1, &set)
    } else {
        // FC: drop every input position of the removed channels.
        let kset: HashSet<usize> = drop
            .iter()
            .flat_map(|&c| (c * ch.inner..(c + 1) * ch.inner).collect::<Vec<_>>())
            .collect();
        keep_along(&sw.w, &sw.shape, if sw.kn { 0 } else { 1 }, &kset)
    };
    replace_const(g, s, 1, &nw, nshape);
    let bias_shape = vec![outs];
    replace_const(g, s, 2, &bias, bias_shape);
    if g.tensors[g.nodes[s].inputs[1].unwrap_or(0)].dtype != DType::F32 {
        return Err(CompileError::Invalid(
            "internal error: pruned weights".into(),
        ));
    }
    Ok(())
}

/// Least-squares reconstruction of a Conv sink after its input channels
/// `drop` were removed (He et al., "Channel Pruning for Accelerating Very
/// Deep Neural Networks", 2017, the reconstruction step): the kept
/// channels' weights and the bias are refitted so the sink's
/// pre-activation output on the recorded inputs matches the unpruned one,
/// `(XᵀX + λI) W' = XᵀY` over sampled output positions, with a constant
/// feature for the bias. `orig` is the unpruned graph.
fn refit_conv_sink(
    g: &mut Graph,
    orig: &Graph,
    ch: &Chain,
    inputs: &[Vec<f32>],
    drop: &[usize],
) -> Result<()> {
    let s = ch.sink;
    let n = &orig.nodes[s];
    let Op::Conv { window, .. } = n.op else {
        return Ok(());
    };
    let (x, w) = (n.inputs[0].unwrap_or(0), n.inputs[1].unwrap_or(0));
    let (xs, ws, ys) = (
        orig.tensors[x].shape.clone(),
        orig.tensors[w].shape.clone(),
        orig.tensors[n.outputs[0].unwrap_or(0)].shape.clone(),
    );
    let (c, h, wd) = (xs[1], xs[2], xs[3]);
    let (m, kh, kw) = (ws[0], ws[2], ws[3]);
    let (oh, ow) = (ys[2], ys[3]);
    let w0 = orig.tensors[w].f32s().unwrap_or_default();
    let b0 = n
        .inputs
        .get(2)
        .copied()
        .flatten()
        .and_then(|b| orig.tensors[b].f32s())
        .unwrap_or_else(|| vec![0.0; m]);
    let kept: Vec<usize> = (0..c).filter(|i| !drop.contains(i)).collect();
    let taps = kh * kw;
    let f = kept.len() * taps + 1;
    let mut xtx = vec![0f64; f * f];
    let mut xty = vec![0f64; f * m];
    let mut full = vec![0f32; c * taps];
    let mut feat = vec![0f64; f];
    // Every 2nd output position in each direction keeps the cost down.
    for x_in in inputs {
        for oy in (0..oh).step_by(2) {
            for ox in (0..ow).step_by(2) {
                for ci in 0..c {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * window.strides[0] as usize
                                + ky * window.dilations[0] as usize)
                                as isize
                                - window.pads[0] as isize;
                            let ix = (ox * window.strides[1] as usize
                                + kx * window.dilations[1] as usize)
                                as isize
                                - window.pads[1] as isize;
                            full[ci * taps + ky * kw + kx] =
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    x_in[(ci * h + iy as usize) * wd + ix as usize]
                                } else {
                                    0.0
                                };
                        }
                    }
                }
                for (j, &ci) in kept.iter().enumerate() {
                    for t in 0..taps {
                        feat[j * taps + t] = f64::from(full[ci * taps + t]);
                    }
                }
                feat[f - 1] = 1.0;
                for a in 0..f {
                    let fa = feat[a];
                    if fa == 0.0 {
                        continue;
                    }
                    for b in a..f {
                        xtx[a * f + b] += fa * feat[b];
                    }
                }
                for o in 0..m {
                    let y: f64 = f64::from(b0[o])
                        + w0[o * c * taps..(o + 1) * c * taps]
                            .iter()
                            .zip(&full)
                            .map(|(a, b)| f64::from(*a) * f64::from(*b))
                            .sum::<f64>();
                    for a in 0..f {
                        xty[a * m + o] += feat[a] * y;
                    }
                }
            }
        }
    }
    for a in 0..f {
        for b in 0..a {
            xtx[a * f + b] = xtx[b * f + a];
        }
    }
    // Ridge: a small multiple of the mean diagonal keeps it well posed.
    let mean_diag = (0..f).map(|a| xtx[a * f + a]).sum::<f64>() / f as f64;
    for a in 0..f - 1 {
        xtx[a * f + a] += 1e-4 * mean_diag.max(1e-12);
    }
    let Some(sol) = cholesky_solve(&xtx, &xty, f, m) else {
        return Ok(()); // keep the mean-compensated weights
    };
    let mut nw = vec![0f32; m * kept.len() * taps];
    let mut nb = vec![0f32; m];
    for o in 0..m {
        for j in 0..kept.len() * taps {
            nw[o * kept.len() * taps + j] = sol[j * m + o] as f32;
        }
        nb[o] = sol[(f - 1) * m + o] as f32;
    }
    replace_const(g, s, 1, &nw, vec![m, kept.len(), kh, kw]);
    replace_const(g, s, 2, &nb, vec![m]);
    Ok(())
}

/// Solves `A X = B` for symmetric positive definite `A` (`f × f`) and `B`
/// (`f × m`), both row-major; `None` if `A` is not positive definite.
fn cholesky_solve(a: &[f64], b: &[f64], f: usize, m: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; f * f];
    for i in 0..f {
        for j in 0..=i {
            let mut sum = a[i * f + j];
            for k in 0..j {
                sum -= l[i * f + k] * l[j * f + k];
            }
            if i == j {
                if sum <= 0.0 || !sum.is_finite() {
                    return None;
                }
                l[i * f + i] = sum.sqrt();
            } else {
                l[i * f + j] = sum / l[j * f + j];
            }
        }
    }
    let mut x = b.to_vec();
    for col in 0..m {
        for i in 0..f {
            let mut s = x[i * m + col];
            for k in 0..i {
                s -= l[i * f + k] * x[k * m + col];
            }
            x[i * m + col] = s / l[i * f + i];
        }
        for i in (0..f).rev() {
            let mut s = x[i * m + col];
            for k in i + 1..f {
                s -= l[k * f + i] * x[k * m + col];
            }
            x[i * m + col] = s / l[i * f + i];
        }
    }
    Some(x)
}

/// Per pruned layer: (name, channels removed, channels before).
fn channel_counts(before: &Graph, after: &Graph) -> Vec<(String, usize, usize)> {
    let mut v = vec![];
    for (a, b) in before.nodes.iter().zip(&after.nodes) {
        let (Some(Some(ya)), Some(Some(yb))) = (a.outputs.first(), b.outputs.first()) else {
            continue;
        };
        if !matches!(a.op, Op::Conv { .. } | Op::Gemm { .. } | Op::MatMul { .. }) {
            continue;
        }
        let (ca, cb) = (
            before.tensors[*ya].shape.get(1).copied().unwrap_or(0),
            after.tensors[*yb].shape.get(1).copied().unwrap_or(0),
        );
        if cb < ca {
            v.push((a.name.clone(), ca - cb, ca));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_specs_parse() {
        assert_eq!("magnitude:0.5".parse::<Prune>(), Ok(Prune::Magnitude(0.5)));
        assert_eq!("channels:auto".parse::<Prune>(), Ok(Prune::Channels(None)));
        assert_eq!(
            "channels:0.3".parse::<Prune>(),
            Ok(Prune::Channels(Some(0.3)))
        );
        assert!("channels:1.5".parse::<Prune>().is_err());
        assert!("random:0.5".parse::<Prune>().is_err());
    }

    #[test]
    fn cholesky_solves_a_small_system() {
        // A = [[4, 2], [2, 3]], B = A · [[1, -1], [2, 0.5]].
        let a = [4.0, 2.0, 2.0, 3.0];
        let x = [1.0, -1.0, 2.0, 0.5];
        let b = [
            4.0 * 1.0 + 2.0 * 2.0,
            -4.0 + 2.0 * 0.5,
            2.0 * 1.0 + 3.0 * 2.0,
            -2.0 + 3.0 * 0.5,
        ];
        let got = cholesky_solve(&a, &b, 2, 2).unwrap();
        for (g, w) in got.iter().zip(x) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        assert!(cholesky_solve(&[0.0], &[1.0], 1, 1).is_none());
    }

    #[test]
    fn keep_along_drops_the_right_slices() {
        // [2, 3, 2]: drop index 1 of axis 1.
        let v: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let (out, s) = keep_along(&v, &[2, 3, 2], 1, &HashSet::from([1]));
        assert_eq!(s, vec![2, 2, 2]);
        assert_eq!(out, vec![0.0, 1.0, 4.0, 5.0, 6.0, 7.0, 10.0, 11.0]);
    }
}
