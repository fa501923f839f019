use crate::ir::Graph;
use kiln_format::Op;

/// Whether running the graph once per sample (dim 0 of every input and
/// output) gives the same result as running the whole batch: true when no
/// op mixes values across dim 0 and every input/output has a leading 1.
pub fn per_sample_batch_ok(g: &Graph) -> bool {
    let leading_one = |t: usize| g.tensors[t].shape.first() == Some(&1);
    if !g.inputs.iter().all(|&t| leading_one(t)) || !g.outputs.iter().all(|&t| leading_one(t)) {
        return false;
    }
    g.nodes.iter().all(|n| {
        let rank0 = n
            .inputs
            .first()
            .copied()
            .flatten()
            .map_or(0, |t| g.tensors[t].shape.len());
        match &n.op {
            // Ops with an axis: dim 0 must not be it.
            Op::Softmax { axis, .. }
            | Op::Concat { axis }
            | Op::Split { axis }
            | Op::CumSum { axis, .. } => *axis != 0,
            Op::ArgMax { axis, .. } => *axis != 0,
            Op::Reduce { axes, .. } => axes & 1 == 0,
            Op::Transpose { perm } => perm[0] == 0,
            Op::LayerNorm { axis, .. } => *axis != 0,
            // Gather on axis 0 of a batched tensor picks samples.
            Op::Gather { axis } | Op::GatherElements { axis } | Op::ScatterElements { axis } => {
                *axis != 0 || rank0 <= 1
            }
            // Recurrent ops are sequence-major: dim 0 is time.
            Op::Lstm { .. } | Op::Gru { .. } | Op::LstmCellClip { .. } => false,
            Op::QLstm { time_major, .. } => !time_major,
            Op::Gemm { trans_a, .. } => !trans_a,
            _ => true,
        }
    })
}
