//! `transpose-as-reshape`: a transpose that moves only axes of length 1
//! leaves every element at the same row-major position (NHWC ↔ NCHW of a
//! one-channel map, or of a 1×1 one), so it is a Reshape, which lowering
//! turns into an alias of its input: no copy and no transpose kernel at run
//! time. TFLite imports are full of them (the layout change around a
//! network's first and last layers).

use crate::ir::Graph;
use kiln_format::Op;

/// Rewrites every such transpose; returns how many.
pub fn transpose_as_reshape(g: &mut Graph) -> usize {
    let mut rewritten = 0;
    for node in &mut g.nodes {
        let Op::Transpose { perm } = node.op else {
            continue;
        };
        let Some(Some(x)) = node.inputs.first() else {
            continue;
        };
        let shape = &g.tensors[*x].shape;
        let Some(perm) = perm.get(..shape.len()) else {
            continue;
        };
        // The axes that are not of length 1, in output order, must keep
        // their input order.
        let mut last = None;
        let in_order = perm.iter().all(|&a| match shape.get(a as usize) {
            None => false,
            Some(1) => true,
            Some(_) => {
                let ok = last.is_none_or(|l| l < a);
                last = Some(a);
                ok
            }
        });
        if in_order {
            node.op = Op::Reshape;
            node.inputs.truncate(1);
            rewritten += 1;
        }
    }
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Node, Tensor};
    use kiln_format::DType;

    fn graph(shape: &[usize], perm: &[u8]) -> Graph {
        let mut g = Graph::default();
        let x = g.add_tensor(Tensor {
            name: "x".into(),
            dtype: DType::F32,
            shape: shape.to_vec(),
            data: None,
        });
        let out: Vec<usize> = perm.iter().map(|&a| shape[a as usize]).collect();
        let y = g.add_tensor(Tensor {
            name: "y".into(),
            dtype: DType::F32,
            shape: out,
            data: None,
        });
        let mut p = [0u8; kiln_format::OP_RANK];
        p[..perm.len()].copy_from_slice(perm);
        g.nodes.push(Node {
            op: Op::Transpose { perm: p },
            inputs: vec![Some(x)],
            outputs: vec![Some(y)],
            name: "t".into(),
        });
        g.inputs.push(x);
        g.outputs.push(y);
        g
    }

    #[test]
    fn only_data_preserving_transposes_become_reshapes() {
        for (shape, perm, reshape) in [
            // NHWC -> NCHW of one channel; of a 1×1 map; of a 1-row map.
            (&[1usize, 49, 10, 1][..], &[0u8, 3, 1, 2][..], true),
            (&[1, 1, 1, 64], &[0, 3, 1, 2], true),
            (&[2, 1, 5], &[1, 0, 2], true),
            // Real moves: channels and width swap places.
            (&[1, 4, 4, 3], &[0, 3, 1, 2], false),
            (&[3, 5], &[1, 0], false),
            (&[2, 3, 4], &[0, 2, 1], false),
        ] {
            let mut g = graph(shape, perm);
            assert_eq!(
                transpose_as_reshape(&mut g),
                usize::from(reshape),
                "{shape:?} {perm:?}"
            );
            assert_eq!(
                matches!(g.nodes[0].op, Op::Reshape),
                reshape,
                "{shape:?} {perm:?}"
            );
        }
    }
}
