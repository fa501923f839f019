//! Parameter and MAC counts.

use crate::ir::Graph;
use kiln_format::{DType, Op};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GraphStats {
    pub params: usize,
    pub macs: u64,
}

/// Parameters = elements of float and 8-bit integer constants read by
/// nodes (int32 biases of quantized layers are not counted); MACs per op
/// family.
pub fn graph_stats(g: &Graph) -> GraphStats {
    let mut s = GraphStats::default();
    let mut seen = vec![false; g.tensors.len()];
    for n in &g.nodes {
        for &i in n.inputs.iter().flatten() {
            let t = &g.tensors[i];
            let weight = t.dtype.is_float() || matches!(t.dtype, DType::I8 | DType::U8);
            if t.is_const() && weight && !seen[i] {
                seen[i] = true;
                s.params += t.numel();
            }
        }
        let shape = |k: usize| {
            n.inputs
                .get(k)
                .copied()
                .flatten()
                .map(|t| g.tensors[t].shape.clone())
                .unwrap_or_default()
        };
        let out = n
            .outputs
            .first()
            .copied()
            .flatten()
            .map(|t| g.tensors[t].shape.clone())
            .unwrap_or_default();
        let numel = |v: &[usize]| v.iter().product::<usize>() as u64;
        s.macs += match &n.op {
            // Each output element reads C/group × kh × kw weights.
            Op::Conv { .. } | Op::QConv { .. } | Op::ConvInteger { .. } => {
                numel(&out) * numel(shape(1).get(1..).unwrap_or(&[]))
            }
            Op::QLinearConv { .. } => numel(&out) * numel(shape(3).get(1..).unwrap_or(&[])),
            Op::QMatMul { .. } => {
                let a = shape(0);
                numel(&out) * *a.last().unwrap_or(&1) as u64
            }
            Op::ConvTranspose { .. } => numel(&shape(0)) * numel(&shape(1)[1..]),
            Op::Gemm { trans_a, .. } => {
                let a = shape(0);
                let k = if *trans_a { a[0] } else { a[1] };
                numel(&out) * k as u64
            }
            Op::QFullyConnected { .. } => numel(&out) * *shape(0).last().unwrap_or(&1) as u64,
            Op::MatMul { .. } => {
                let a = shape(0);
                numel(&out) * *a.last().unwrap_or(&1) as u64
            }
            Op::Lstm { hidden, .. } | Op::Gru { hidden, .. } | Op::LstmCellClip { hidden, .. } => {
                let x = shape(0);
                let gates = if matches!(n.op, Op::Lstm { .. } | Op::LstmCellClip { .. }) {
                    4
                } else {
                    3
                };
                let dirs = shape(1).first().copied().unwrap_or(1) as u64;
                let h = *hidden as u64;
                numel(&x[..2]) * dirs * gates * h * (x[2] as u64 + h)
            }
            Op::QLstm { .. } => {
                // Four gates, each an input and a recurrent matrix product.
                let (x, w) = (shape(0), shape(1));
                let cell = w.get(1).copied().unwrap_or(0) as u64;
                numel(x.get(..2).unwrap_or(&[]))
                    * 4
                    * cell
                    * (*x.last().unwrap_or(&0) as u64 + cell)
            }
            _ => 0,
        };
    }
    s
}
