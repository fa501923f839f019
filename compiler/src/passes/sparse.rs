//! Sparse storage for weights that magnitude pruning left mostly zero.

use crate::ir::Graph;
use kiln_format::{DType, Op};
use std::collections::HashMap;

/// What one more tensor and node cost in the artifact (records, alignment),
/// so a conversion must save more than this to be worth it.
const OVERHEAD_BYTES: usize = 128;

/// Stores each weight (input 1 of a node, rank 2 or more) as a bitmap of
/// its nonzero elements plus those elements, behind a `Densify` placed
/// right before each use, when that is at least 10% and
/// [`OVERHEAD_BYTES`] smaller than the dense bytes. The dense copy lives
/// in the arena only while its reader runs. Returns the tensors converted.
pub fn sparse_weights(g: &mut Graph) -> usize {
    let mut stored: HashMap<usize, Option<(usize, usize)>> = HashMap::new();
    let old = std::mem::take(&mut g.nodes);
    for mut n in old {
        if let Some(w) = n.inputs.get(1).copied().flatten() {
            let sparse = *stored.entry(w).or_insert_with(|| encode(g, w));
            if let Some((mask, values)) = sparse {
                let t = &g.tensors[w];
                let out = (format!("{}:dense", t.name), t.dtype, t.shape.clone());
                n.inputs[1] = Some(g.push_computed(
                    Op::Densify,
                    vec![Some(mask), Some(values)],
                    out,
                    format!("{}:densify", n.name),
                ));
            }
        }
        g.nodes.push(n);
    }
    stored.values().filter(|s| s.is_some()).count()
}

/// (mask, values) constants for tensor `w` when sparse storage pays.
fn encode(g: &mut Graph, w: usize) -> Option<(usize, usize)> {
    let t = &g.tensors[w];
    let es = t.dtype.size();
    if !t.is_const() || t.shape.len() < 2 || es == 0 || t.dtype == DType::Bool {
        return None;
    }
    let bytes = t.data.as_ref()?.clone();
    let n = t.numel();
    let mut mask = vec![0u8; n.div_ceil(8)];
    let mut values = Vec::new();
    for (i, e) in bytes.chunks_exact(es).enumerate() {
        if e.iter().any(|&b| b != 0) {
            mask[i / 8] |= 1 << (i % 8);
            values.extend_from_slice(e);
        }
    }
    let (dense, sparse) = (bytes.len(), mask.len() + values.len() + OVERHEAD_BYTES);
    if sparse * 10 > dense * 9 {
        return None;
    }
    let (name, dtype) = (t.name.clone(), t.dtype);
    let count = values.len() / es;
    let m = g.add_const(format!("{name}:mask"), DType::U8, vec![mask.len()], mask);
    let v = g.add_const(format!("{name}:values"), dtype, vec![count], values);
    Some((m, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Node, Tensor};

    fn graph_reading(w: Vec<f32>, shape: Vec<usize>) -> Graph {
        let mut g = Graph::default();
        let x = g.add_tensor(Tensor {
            name: "x".into(),
            dtype: DType::F32,
            shape: vec![1, shape[0]],
            data: None,
        });
        let wt = g.const_f32("w", shape.clone(), &w);
        let y = g.add_tensor(Tensor {
            name: "y".into(),
            dtype: DType::F32,
            shape: vec![1, shape[1]],
            data: None,
        });
        g.nodes.push(Node {
            op: Op::MatMul {
                act: kiln_format::Unary::Identity,
            },
            inputs: vec![Some(x), Some(wt)],
            outputs: vec![Some(y)],
            name: "mm".into(),
        });
        g.inputs = vec![x];
        g.outputs = vec![y];
        g
    }

    #[test]
    fn mostly_zero_weights_are_stored_sparse_and_expand_exactly() {
        // 3 of 4 weights zero: 4 KiB dense, 128 B mask + 1 KiB values.
        let w: Vec<f32> = (0..1024)
            .map(|i| {
                if i % 4 == 1 {
                    i as f32 * 0.01 - 3.0
                } else {
                    0.0
                }
            })
            .collect();
        let g = graph_reading(w, vec![32, 32]);
        let mut s = g.clone();
        assert_eq!(sparse_weights(&mut s), 1);
        assert_eq!(s.nodes[0].op, Op::Densify);
        let mask = s.nodes[0].inputs[0].expect("mask");
        assert_eq!(s.tensors[mask].numel(), 128);
        let x = crate::run::Samples::new((0..64).map(|i| (i % 7) as f32 - 3.0).collect(), 2);
        let (a, b) = (
            crate::quantize::predict(&g, &x).expect("dense"),
            crate::quantize::predict(&s, &x).expect("sparse"),
        );
        // The same weights, the same arithmetic: identical outputs.
        assert_eq!(a, b);
    }

    /// A mask that disagrees with the stored values (a corrupted or
    /// hand-made artifact) is an engine error, never a panic or garbage.
    #[test]
    fn inconsistent_sparse_weights_are_refused() {
        for (mask, values) in [
            (vec![0xffu8, 0xff], 3usize), // 16 bits set, 3 values
            (vec![0x0f], 4),              // mask covers 8 of 16 elements
        ] {
            let mut g = graph_reading(vec![0.0; 64], vec![8, 8]);
            let m = g.add_const("mask", DType::U8, vec![mask.len()], mask);
            let v = g.const_f32("values", vec![values], &vec![1.0; values]);
            let w = g.push_computed(
                Op::Densify,
                vec![Some(m), Some(v)],
                ("w:dense".into(), DType::F32, vec![2, 8]),
                "densify".into(),
            );
            let mm = g.nodes.remove(0);
            g.nodes.push(Node {
                inputs: vec![mm.inputs[0], Some(w)],
                outputs: mm.outputs.clone(),
                ..mm
            });
            g.tensors[g.inputs[0]].shape = vec![1, 2];
            let x = crate::run::Samples::new(vec![1.0, 2.0], 1);
            let e = crate::quantize::predict(&g, &x).expect_err("refused");
            assert!(e.to_string().contains("Densify: "), "{e}");
        }
    }

    #[test]
    fn dense_weights_stay_dense() {
        // Half zero: a 1/8 mask plus half the values saves 37.5% of 256 B,
        // less than the overhead of one more tensor and node.
        let w: Vec<f32> = (0..64).map(|i| (i % 2) as f32).collect();
        let mut g = graph_reading(w, vec![8, 8]);
        assert_eq!(sparse_weights(&mut g), 0);
        // One zero in 8: mask 128 B + 3.5 KiB of values saves 6% of 4 KiB.
        let w: Vec<f32> = (0..1024).map(|i| (i % 8).min(1) as f32).collect();
        let mut g = graph_reading(w, vec![32, 32]);
        assert_eq!(sparse_weights(&mut g), 0);
        assert!(g.nodes.iter().all(|n| n.op != Op::Densify));
    }
}
