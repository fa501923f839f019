//! Lowering the optimised graph to the artifact: aliasing reshapes, planning
//! the arena, laying out weights, writing the schema.

use crate::error::{CompileError, Result};
use crate::eval::{scratch_bytes, tensor_info};
use crate::ir::{Graph, Node};
use crate::plan::{MemoryPlan, plan};
use kiln_format::write::{ArtifactDesc, IoDesc, NodeDesc};
use kiln_format::{Op, TensorKind};
use std::collections::HashMap;

/// Graph ready for lowering: reshapes of arena tensors become aliases.
pub struct Lowered {
    pub graph: Graph,
    /// alias → the tensor whose bytes it shares.
    pub alias: HashMap<usize, usize>,
}

/// Drops copy-only Reshape nodes whose input lives in the arena: the output
/// shares the input's bytes.
pub fn alias_reshapes(mut g: Graph) -> Lowered {
    let mut alias: HashMap<usize, usize> = HashMap::new();
    let mut kept: Vec<Node> = Vec::with_capacity(g.nodes.len());
    for n in std::mem::take(&mut g.nodes) {
        if let (Op::Reshape, [Some(i)], [Some(o)]) =
            (&n.op, n.inputs.as_slice(), n.outputs.as_slice())
            && !g.tensors[*i].is_const()
            && !g.outputs.contains(o)
        {
            let root = *alias.get(i).unwrap_or(i);
            alias.insert(*o, root);
            continue;
        }
        kept.push(n);
    }
    // Rewrite uses of aliases to keep shapes: nodes read the alias tensor
    // itself (its own shape), stored at the root's offset.
    g.nodes = kept;
    Lowered { graph: g, alias }
}

/// Builds the artifact description. `batch`: the schema's batch dim name when per-sample batched.
pub fn lower(
    l: &Lowered,
    desc: &mut ArtifactDesc,
    input_names: &[String],
    output_names: &[String],
    batch: Option<&str>,
    labels: &HashMap<String, Vec<String>>,
    lean_scratch: bool,
) -> Result<MemoryPlan> {
    let g = &l.graph;
    // Planning works on roots: an alias's uses extend its root's lifetime.
    let mut planning = g.clone();
    for n in &mut planning.nodes {
        for i in n.inputs.iter_mut().flatten() {
            if let Some(&r) = l.alias.get(i) {
                *i = r;
            }
        }
    }
    for o in &mut planning.outputs {
        if let Some(&r) = l.alias.get(o) {
            *o = r;
        }
    }
    let scratch: Vec<usize> = g
        .nodes
        .iter()
        .map(|n| {
            scratch_bytes(g, n, lean_scratch).map_err(|e| CompileError::Node {
                node: n.name.clone(),
                op: n.op.name().into(),
                detail: e.to_string(),
            })
        })
        .collect::<Result<_>>()?;
    let mut mp = plan(&planning, &scratch);
    for (&a, &r) in &l.alias {
        mp.offsets[a] = mp.offsets[r];
    }
    // Tensor table: only tensors referenced by nodes or the graph.
    let mut used = vec![false; g.tensors.len()];
    for n in &g.nodes {
        for &t in n.inputs.iter().chain(&n.outputs).flatten() {
            used[t] = true;
        }
    }
    for &t in g.inputs.iter().chain(&g.outputs) {
        used[t] = true;
    }
    let mut remap = vec![u32::MAX; g.tensors.len()];
    for (t, tensor) in g.tensors.iter().enumerate() {
        if !used[t] {
            continue;
        }
        let info = if let Some(data) = &tensor.data {
            let off = desc.push_weight(data);
            tensor_info(tensor, TensorKind::Const, off)
        } else {
            let off = mp.offsets[t].ok_or_else(|| {
                CompileError::Invalid(format!("tensor '{}' is never computed", tensor.name))
            })?;
            let mut i = tensor_info(tensor, TensorKind::Arena, off as u32);
            if let Ok(info) = &mut i {
                info.batched = batch.is_some() && (g.inputs.contains(&t) || g.outputs.contains(&t));
            }
            i
        }
        .map_err(CompileError::Invalid)?;
        remap[t] = desc.tensors.len() as u32;
        desc.tensors.push(info);
    }
    let ids = |v: &[Option<usize>]| {
        v.iter()
            .map(|o| o.map_or(u32::MAX, |t| remap[t]))
            .collect::<Vec<u32>>()
    };
    for (k, n) in g.nodes.iter().enumerate() {
        desc.nodes.push(NodeDesc {
            op: n.op.clone(),
            inputs: ids(&n.inputs),
            outputs: ids(&n.outputs),
            scratch_offset: mp.scratch[k].0 as u32,
            scratch_len: mp.scratch[k].1 as u32,
            name: stored_name(&n.name),
        });
    }
    desc.graph_inputs = g.inputs.iter().map(|&t| remap[t]).collect();
    desc.graph_outputs = g.outputs.iter().map(|&t| remap[t]).collect();
    desc.arena_size = u32::try_from(mp.arena_size)
        .map_err(|_| CompileError::Invalid("the arena would exceed 4 GiB".into()))?;
    desc.per_sample_batch = batch.is_some();
    let io = |t: usize, name: &str| -> IoDesc {
        let tensor = &g.tensors[t];
        IoDesc {
            name: name.to_string(),
            tensor: remap[t],
            dtype: tensor.dtype,
            dims: tensor
                .shape
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if i == 0 && batch.is_some() {
                        None
                    } else {
                        Some(d as u32)
                    }
                })
                .collect(),
            batch_name: batch.unwrap_or("").to_string(),
            ranges: vec![],
            labels: labels.get(name).cloned().unwrap_or_default(),
        }
    };
    desc.inputs = g
        .inputs
        .iter()
        .zip(input_names)
        .map(|(&t, n)| io(t, n))
        .collect();
    desc.outputs = g
        .outputs
        .iter()
        .zip(output_names)
        .map(|(&t, n)| io(t, n))
        .collect();
    Ok(mp)
}

/// Most bytes of a node name the artifact stores.
pub const MAX_NAME_BYTES: usize = 64;

/// A node's name as stored: converters write names of hundreds of bytes
/// (tflite2onnx joins every fused TensorFlow op's name); the first
/// [`MAX_NAME_BYTES`] (cut at a char boundary, ending in `…`) identify the
/// layer in profiles and errors without costing an MCU's flash.
fn stored_name(name: &str) -> String {
    if name.len() <= MAX_NAME_BYTES {
        return name.to_string();
    }
    let keep = MAX_NAME_BYTES - '…'.len_utf8();
    let cut = (0..=keep)
        .rev()
        .find(|&i| name.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}…", &name[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_at_a_char_boundary() {
        assert_eq!(stored_name("conv1"), "conv1");
        let exact = "a".repeat(MAX_NAME_BYTES);
        assert_eq!(stored_name(&exact), exact);
        let long = "model/activation_1/Relu;".repeat(10);
        let s = stored_name(&long);
        assert!(s.len() <= MAX_NAME_BYTES && s.ends_with('…'), "{s}");
        assert!(long.starts_with(s.trim_end_matches('…')));
        // Multi-byte characters straddling the cut are not split.
        let wide = "é".repeat(40);
        let s = stored_name(&wide);
        assert!(s.len() <= MAX_NAME_BYTES && s.chars().all(|c| c == 'é' || c == '…'));
    }
}
