//! Fusions: BatchNorm into the preceding Conv and into the fully connected
//! layer before or after it, bias Add into MatMul, activations into
//! Conv/Gemm/MatMul.

use crate::fc::{Fc, fc, set_weights};
use crate::ir::{Graph, TensorId};
use kiln_format::{Binary, Op, Unary};

/// When `node` is `Add(t, x)` or `Add(x, t)`, the other operand `x`.
fn add_operand(node: &crate::ir::Node, t: TensorId) -> Option<TensorId> {
    match (&node.op, node.inputs.as_slice()) {
        (Op::Binary(Binary::Add), [Some(a), Some(b)]) if *a == t => Some(*b),
        (Op::Binary(Binary::Add), [Some(a), Some(b)]) if *b == t => Some(*a),
        _ => None,
    }
}

/// Conv(W, B) → BatchNorm(s, b, m, v)  ⇒  Conv(W·k, (B − m)·k + b), k = s / √(v + ε).
pub fn fold_batchnorm(g: &mut Graph) -> usize {
    let mut n = 0;
    let mut k = 0;
    while k < g.nodes.len() {
        let node = &g.nodes[k];
        let Op::BatchNorm { epsilon } = node.op else {
            k += 1;
            continue;
        };
        let (Some(x), Some(y)) = (node.inputs[0], node.outputs[0]) else {
            k += 1;
            continue;
        };
        let params: Option<Vec<Vec<f32>>> = node.inputs[1..5]
            .iter()
            .map(|i| i.and_then(|i| g.tensors[i].f32s()))
            .collect();
        let prod = g.nodes.iter().position(|p| p.outputs.contains(&Some(x)));
        let ok = match (prod, &params) {
            (Some(p), Some(_)) => {
                matches!(
                    g.nodes[p].op,
                    Op::Conv {
                        act: Unary::Identity,
                        ..
                    }
                ) && g.nodes[p].inputs[1].is_some_and(|w| g.tensors[w].is_const())
                    && g.nodes[p]
                        .inputs
                        .get(2)
                        .copied()
                        .flatten()
                        .is_none_or(|b| g.tensors[b].is_const())
                    && g.sole_consumer(x) == Some(k)
            }
            _ => false,
        };
        if !ok {
            k += 1;
            continue;
        }
        let (p, params) = (prod.unwrap_or(0), params.unwrap_or_default());
        let (s, b, m, v) = (&params[0], &params[1], &params[2], &params[3]);
        let w_id = g.nodes[p].inputs[1].unwrap_or(0);
        let mut w = g.tensors[w_id].f32s().unwrap_or_default();
        let m_out = g.tensors[w_id].shape[0];
        if s.len() != m_out || !w.len().is_multiple_of(m_out.max(1)) {
            k += 1;
            continue;
        }
        let per = w.len() / m_out;
        let scale: Vec<f32> = (0..m_out).map(|c| s[c] / (v[c] + epsilon).sqrt()).collect();
        for c in 0..m_out {
            for e in &mut w[c * per..(c + 1) * per] {
                *e *= scale[c];
            }
        }
        let old_b = g.nodes[p]
            .inputs
            .get(2)
            .copied()
            .flatten()
            .and_then(|b| g.tensors[b].f32s())
            .unwrap_or_else(|| vec![0.0; m_out]);
        let new_b: Vec<f32> = (0..m_out)
            .map(|c| (old_b[c] - m[c]) * scale[c] + b[c])
            .collect();
        // New constants (the old ones may be shared).
        let w_shape = g.tensors[w_id].shape.clone();
        let nw = g.const_f32(format!("{}:bn_w", g.tensors[w_id].name), w_shape, &w);
        let nb = g.const_f32(
            format!("{}:bn_b", g.tensors[w_id].name),
            vec![m_out],
            &new_b,
        );
        let bn_name = g.nodes[k].name.clone();
        let conv = &mut g.nodes[p];
        conv.inputs.resize(3, None);
        conv.inputs[1] = Some(nw);
        conv.inputs[2] = Some(nb);
        conv.outputs[0] = Some(y);
        conv.name = format!("{}+{}", conv.name, bn_name);
        g.nodes.remove(k);
        n += 1;
    }
    n
}

/// MatMul(X, W) → Add(·, b[N])  ⇒  MatMul(X, W, bias = b).
pub fn fuse_bias(g: &mut Graph) -> usize {
    let mut n = 0;
    let mut k = 0;
    while k < g.nodes.len() {
        let is_mm = matches!(
            g.nodes[k].op,
            Op::MatMul {
                act: Unary::Identity
            }
        ) && g.nodes[k].inputs.len() == 2;
        let out = g.nodes[k].outputs[0];
        if !is_mm || out.is_none() {
            k += 1;
            continue;
        }
        let t = out.unwrap_or(0);
        let Some(c) = g.sole_consumer(t) else {
            k += 1;
            continue;
        };
        let add = &g.nodes[c];
        let cols = *g.tensors[t].shape.last().unwrap_or(&0);
        let other = add_operand(add, t);
        let bias_ok = other.is_some_and(|b| {
            let bt = &g.tensors[b];
            bt.is_const()
                && bt.numel() == cols
                && bt.shape.iter().rev().skip(1).all(|&d| d == 1)
                && bt.shape.len() <= g.tensors[t].shape.len()
        });
        let same_shape = add.outputs[0].is_some_and(|o| g.tensors[o].shape == g.tensors[t].shape);
        if !bias_ok || !same_shape {
            k += 1;
            continue;
        }
        let b = other.unwrap_or(0);
        let y = g.nodes[c].outputs[0];
        let name = g.nodes[c].name.clone();
        // Bias must be rank 1 for the engine.
        let bv = g.tensors[b].f32s().unwrap_or_default();
        let b1 = g.const_f32(format!("{}:bias", g.tensors[b].name), vec![cols], &bv);
        let mm = &mut g.nodes[k];
        mm.inputs.push(Some(b1));
        mm.outputs[0] = y;
        mm.name = format!("{}+{}", mm.name, name);
        g.nodes.remove(c);
        n += 1;
    }
    n
}

fn fusable(u: &Unary) -> bool {
    matches!(
        u,
        Unary::Relu
            | Unary::Clip { .. }
            | Unary::LeakyRelu { .. }
            | Unary::Sigmoid
            | Unary::Tanh
            | Unary::HardSigmoid { .. }
            | Unary::HardSwish
            | Unary::Gelu { .. }
    )
}

/// Conv/Gemm/MatMul → activation  ⇒  one node with a fused activation.
pub fn fuse_activation(g: &mut Graph) -> usize {
    let mut n = 0;
    let mut k = 0;
    while k < g.nodes.len() {
        let has_slot = matches!(
            g.nodes[k].op,
            Op::Conv {
                act: Unary::Identity,
                ..
            } | Op::Gemm {
                act: Unary::Identity,
                ..
            } | Op::MatMul {
                act: Unary::Identity
            }
        );
        let Some(t) = g.nodes[k].outputs[0].filter(|_| has_slot) else {
            k += 1;
            continue;
        };
        let Some(c) = g.sole_consumer(t) else {
            k += 1;
            continue;
        };
        let act = match &g.nodes[c].op {
            Op::Unary(u) if fusable(u) => *u,
            _ => {
                k += 1;
                continue;
            }
        };
        let y = g.nodes[c].outputs[0];
        let name = g.nodes[c].name.clone();
        let node = &mut g.nodes[k];
        match &mut node.op {
            Op::Conv { act: a, .. } | Op::Gemm { act: a, .. } | Op::MatMul { act: a } => *a = act,
            _ => {}
        }
        node.outputs[0] = y;
        node.name = format!("{}+{}", node.name, name);
        g.nodes.remove(c);
        n += 1;
    }
    n
}

/// Conv(X, W, B?) → Add(·, c) with c of shape [1, M, 1, 1] (or [M, 1, 1])
/// ⇒ Conv(X, W, B + c). CNTK and TF exporters emit the bias as an Add.
pub fn fuse_conv_bias(g: &mut Graph) -> usize {
    let mut n = 0;
    let mut k = 0;
    while k < g.nodes.len() {
        let is_conv = matches!(
            g.nodes[k].op,
            Op::Conv {
                act: Unary::Identity,
                ..
            }
        );
        let Some(t) = g.nodes[k].outputs[0].filter(|_| is_conv) else {
            k += 1;
            continue;
        };
        let Some(c) = g.sole_consumer(t) else {
            k += 1;
            continue;
        };
        let out_shape = g.tensors[t].shape.clone();
        let m = out_shape.get(1).copied().unwrap_or(0);
        let other = add_operand(&g.nodes[c], t);
        let per_channel = other.is_some_and(|b| {
            let bt = &g.tensors[b];
            let s = &bt.shape;
            // Right-aligned broadcast: exactly the channel dim is M.
            bt.is_const()
                && bt.numel() == m
                && s.len() <= out_shape.len()
                && s.iter().rev().enumerate().all(|(i, &d)| {
                    let axis = out_shape.len() - 1 - i;
                    if axis == 1 { d == m } else { d == 1 }
                })
        });
        let same = g.nodes[c].outputs[0].is_some_and(|o| g.tensors[o].shape == out_shape);
        let old_ok = g.nodes[k]
            .inputs
            .get(2)
            .copied()
            .flatten()
            .is_none_or(|b| g.tensors[b].is_const());
        if !per_channel || !same || !old_ok {
            k += 1;
            continue;
        }
        let add_v = other.and_then(|b| g.tensors[b].f32s()).unwrap_or_default();
        let old = g.nodes[k]
            .inputs
            .get(2)
            .copied()
            .flatten()
            .and_then(|b| g.tensors[b].f32s())
            .unwrap_or_else(|| vec![0.0; m]);
        let sum: Vec<f32> = old.iter().zip(&add_v).map(|(a, b)| a + b).collect();
        let nb = g.const_f32(format!("{}:bias", g.nodes[k].name), vec![m], &sum);
        let y = g.nodes[c].outputs[0];
        let name = g.nodes[c].name.clone();
        let conv = &mut g.nodes[k];
        conv.inputs.resize(3, None);
        conv.inputs[2] = Some(nb);
        conv.outputs[0] = y;
        conv.name = format!("{}+{}", conv.name, name);
        g.nodes.remove(c);
        n += 1;
    }
    n
}

/// Node `k` as a fully connected layer whose weights only it reads (so a
/// fold may rewrite them): the layer, `[units, depth]` weights and bias.
fn own_fc(g: &Graph, k: usize) -> Option<(Fc, Vec<f32>, Vec<f32>)> {
    let f = fc(g, &g.nodes[k])?;
    if g.sole_consumer(f.w) != Some(k) {
        return None;
    }
    let bias = f.bias_values(g).unwrap_or_else(|| vec![0.0; f.units]);
    Some((f, f.weights(g), bias))
}

/// BatchNorm scale and shift per channel: `y = s·x + t`.
fn bn_affine(g: &Graph, k: usize) -> Option<(Vec<f32>, Vec<f32>)> {
    let Op::BatchNorm { epsilon } = g.nodes[k].op else {
        return None;
    };
    let p: Vec<Vec<f32>> = g.nodes[k]
        .inputs
        .get(1..5)?
        .iter()
        .map(|i| i.and_then(|i| g.tensors[i].f32s()))
        .collect::<Option<_>>()?;
    let (sc, b, m, v) = (&p[0], &p[1], &p[2], &p[3]);
    let s: Vec<f32> = (0..sc.len())
        .map(|c| sc[c] / (v[c] + epsilon).sqrt())
        .collect();
    let t = (0..sc.len()).map(|c| b[c] - m[c] * s[c]).collect();
    Some((s, t))
}

/// BatchNorm around fully connected layers:
/// - `FC → BatchNorm` (no activation between) ⇒ `FC` with rows scaled and
///   the bias mapped: `W' = s·W`, `b' = s·b + t`;
/// - `BatchNorm → [flatten] → FC` ⇒ `FC` reading the BatchNorm's input:
///   `W'[u, k] = W[u, k]·s[c(k)]`, `b' = b + W·t` (what `timm`/PyTorch
///   models with a BatchNorm after the last ReLU look like).
pub fn fold_batchnorm_fc(g: &mut Graph) -> usize {
    let mut done = 0;
    let mut k = 0;
    while k < g.nodes.len() {
        if folded_around_fc(g, k) {
            done += 1;
        } else {
            k += 1;
        }
    }
    done
}

fn folded_around_fc(g: &mut Graph, k: usize) -> bool {
    let Some((s, t)) = bn_affine(g, k) else {
        return false;
    };
    let (Some(Some(x)), Some(Some(y))) = (
        g.nodes[k].inputs.first().copied(),
        g.nodes[k].outputs.first().copied(),
    ) else {
        return false;
    };
    let c = s.len();
    // Backward: FC (identity activation) → BN on [rows, units].
    if let Some(p) = g.nodes.iter().position(|n| n.outputs.contains(&Some(x)))
        && g.sole_consumer(x) == Some(k)
        && g.tensors[x].shape.len() == 2
        && g.tensors[x].shape[1] == c
        && let Some((f, mut w, mut bias)) = own_fc(g, p)
        && f.act == Unary::Identity
        && f.units == c
    {
        let (units, depth) = (f.units, f.depth);
        for u in 0..units {
            for e in &mut w[u * depth..(u + 1) * depth] {
                *e *= s[u];
            }
            bias[u] = bias[u] * s[u] + t[u];
        }
        set_weights(g, p, &f, &w, &bias);
        let bn = g.nodes.remove(k);
        let fc = &mut g.nodes[p];
        fc.outputs[0] = Some(y);
        fc.name = format!("{}+{}", fc.name, bn.name);
        return true;
    }
    // Forward: BN → [Reshape] → FC.
    let Some(r) = g.sole_consumer(y) else {
        return false;
    };
    let (fc, fc_in) = match g.nodes[r].op {
        Op::Reshape => match g.nodes[r].outputs.first().copied().flatten() {
            Some(o) => match g.sole_consumer(o) {
                Some(f) => (f, o),
                None => return false,
            },
            None => return false,
        },
        _ => (r, y),
    };
    if g.nodes[fc].inputs.first() != Some(&Some(fc_in))
        || g.tensors[fc_in].shape.len() != 2
        || g.tensors[fc_in].shape[0] != 1
        || g.tensors[x].shape.get(1) != Some(&c)
        || g.tensors[x].shape.first() != Some(&1)
    {
        return false;
    }
    let Some((f, mut w, mut bias)) = own_fc(g, fc) else {
        return false;
    };
    let (units, depth) = (f.units, f.depth);
    if depth != g.tensors[x].numel() || depth % c != 0 {
        return false;
    }
    let inner = depth / c;
    for u in 0..units {
        let row = &mut w[u * depth..(u + 1) * depth];
        let mut add = 0.0f64;
        for (j, e) in row.iter_mut().enumerate() {
            let ch = j / inner;
            add += f64::from(*e) * f64::from(t[ch]);
            *e *= s[ch];
        }
        bias[u] += add as f32;
    }
    set_weights(g, fc, &f, &w, &bias);
    // The reader of the BN output now reads the BN input.
    for i in g.nodes[r].inputs.iter_mut() {
        if *i == Some(y) {
            *i = Some(x);
        }
    }
    let bn = g.nodes.remove(k);
    let fc = if fc > k { fc - 1 } else { fc };
    g.nodes[fc].name = format!("{}+{}", bn.name, g.nodes[fc].name);
    true
}
