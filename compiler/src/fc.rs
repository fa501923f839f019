//! Fully connected layers in the IR: a Gemm (A not transposed, constant
//! B and C) or a MatMul with a constant 2-D right operand, seen as
//! `y = act(x·Wᵀ + b)` with `W` of shape `[units, depth]`. The passes,
//! quantization and pruning all read (and rewrite) layers through this.

use crate::ir::{Graph, Node, TensorId};
use kiln_format::{DType, Op, Unary};

/// A fully connected layer's operands (no data copied).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fc {
    pub x: TensorId,
    /// The constant right operand as stored.
    pub w: TensorId,
    /// Constant bias (`units` values), if any.
    pub bias: Option<TensorId>,
    pub units: usize,
    pub depth: usize,
    /// `w` is stored `[units, depth]` (Gemm with `trans_b`), else `[depth, units]`.
    pub units_major: bool,
    pub alpha: f32,
    pub beta: f32,
    pub act: Unary,
}

/// Node `n` as a fully connected layer, if it is one.
pub fn fc(g: &Graph, n: &Node) -> Option<Fc> {
    let (units_major, alpha, beta, act) = match n.op {
        Op::Gemm {
            trans_a: false,
            trans_b,
            alpha,
            beta,
            act,
        } => (trans_b, alpha, beta, act),
        Op::MatMul { act } => (false, 1.0, 1.0, act),
        _ => return None,
    };
    let x = n.inputs.first().copied().flatten()?;
    let w = n.inputs.get(1).copied().flatten()?;
    let wt = &g.tensors[w];
    if wt.shape.len() != 2 || !wt.is_const() || wt.dtype != DType::F32 {
        return None;
    }
    let (units, depth) = if units_major {
        (wt.shape[0], wt.shape[1])
    } else {
        (wt.shape[1], wt.shape[0])
    };
    let xs = &g.tensors[x].shape;
    let x_ok = match n.op {
        Op::Gemm { .. } => xs.len() == 2,
        _ => xs.last() == Some(&depth),
    };
    let bias = n.inputs.get(2).copied().flatten();
    let bias_ok = bias.is_none_or(|b| {
        let bt = &g.tensors[b];
        bt.is_const() && bt.dtype == DType::F32 && bt.numel() == units
    });
    (x_ok && bias_ok).then_some(Fc {
        x,
        w,
        bias,
        units,
        depth,
        units_major,
        alpha,
        beta,
        act,
    })
}

impl Fc {
    /// `alpha · W` as `[units, depth]`, row-major.
    pub fn weights(&self, g: &Graph) -> Vec<f32> {
        let v = g.tensors[self.w].f32s().unwrap_or_default();
        let (units, depth) = (self.units, self.depth);
        (0..units * depth)
            .map(|i| {
                let (u, d) = (i / depth, i % depth);
                self.alpha
                    * if self.units_major {
                        v[i]
                    } else {
                        v[d * units + u]
                    }
            })
            .collect()
    }

    /// `beta · C`, if there is a bias.
    pub fn bias_values(&self, g: &Graph) -> Option<Vec<f32>> {
        let b = g.tensors[self.bias?].f32s()?;
        Some(b.iter().map(|v| v * self.beta).collect())
    }
}

/// Replaces node `k`'s weights (`[units, depth]`, alpha already applied)
/// and bias with new constants in the node's own layout; a Gemm's alpha and
/// beta become 1.
pub fn set_weights(g: &mut Graph, k: usize, f: &Fc, w: &[f32], bias: &[f32]) {
    let name = g.tensors[f.w].name.clone();
    let (units, depth) = (f.units, f.depth);
    let stored: Vec<f32> = if f.units_major {
        w.to_vec()
    } else {
        (0..units * depth)
            .map(|i| w[(i % units) * depth + i / units])
            .collect()
    };
    let shape = g.tensors[f.w].shape.clone();
    let nw = g.const_f32(format!("{name}:w"), shape, &stored);
    let nb = g.const_f32(format!("{name}:bias"), vec![units], bias);
    let n = &mut g.nodes[k];
    if let Op::Gemm { alpha, beta, .. } = &mut n.op {
        (*alpha, *beta) = (1.0, 1.0);
    }
    n.inputs.resize(3, None);
    n.inputs[1] = Some(nw);
    n.inputs[2] = Some(nb);
}
