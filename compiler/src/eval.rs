//! Evaluating IR nodes with the engine itself: constant folding uses exactly
//! the kernels that run on devices, so folded values match run-time values.

use crate::ir::{Graph, Node, Tensor};
use kiln_engine::{EngineError, Plan};
use kiln_format::write::{ArtifactDesc, NodeDesc};
use kiln_format::{MAX_RANK, TensorInfo, TensorKind, View};

/// A 16-byte aligned byte buffer.
#[derive(Debug, Clone)]
pub struct AlignedBytes {
    words: Vec<u128>,
    len: usize,
}

impl AlignedBytes {
    pub fn zeroed(len: usize) -> Self {
        AlignedBytes {
            words: vec![0u128; len.div_ceil(16)],
            len,
        }
    }

    pub fn from_slice(b: &[u8]) -> Self {
        let mut a = Self::zeroed(b.len());
        a.as_mut_slice().copy_from_slice(b);
        a
    }

    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }
}

/// The format's tensor record for an IR tensor (offset filled in by the caller).
pub fn tensor_info(t: &Tensor, kind: TensorKind, offset: u32) -> Result<TensorInfo, String> {
    if t.shape.len() > MAX_RANK {
        return Err(format!(
            "tensor '{}' has rank {} (kiln supports up to {MAX_RANK})",
            t.name,
            t.shape.len()
        ));
    }
    let mut dims = [0u32; MAX_RANK];
    for (d, &s) in dims.iter_mut().zip(&t.shape) {
        *d = u32::try_from(s).map_err(|_| format!("tensor '{}' has a dim above 2^32", t.name))?;
    }
    let byte_len =
        u32::try_from(t.byte_len()).map_err(|_| format!("tensor '{}' is above 4 GiB", t.name))?;
    Ok(TensorInfo {
        dtype: t.dtype,
        rank: t.shape.len() as u8,
        kind,
        batched: false,
        dims,
        offset,
        byte_len,
    })
}

fn infos(
    g: &Graph,
    ids: &[Option<usize>],
    kind: TensorKind,
) -> Result<Vec<Option<TensorInfo>>, EngineError> {
    ids.iter()
        .map(|i| {
            i.map(|i| {
                tensor_info(&g.tensors[i], kind, 0).map_err(|_| EngineError::Op("tensor too large"))
            })
            .transpose()
        })
        .collect()
}

/// Scratch bytes the node needs (`lean`: the least, see
/// [`kiln_engine::scratch_bytes`]).
pub fn scratch_bytes(g: &Graph, node: &Node, lean: bool) -> Result<usize, EngineError> {
    kiln_engine::scratch_bytes(
        &node.op,
        &infos(g, &node.inputs, TensorKind::Const)?,
        &infos(g, &node.outputs, TensorKind::Arena)?,
        lean,
    )
}

/// Runs one node whose inputs are all constants; returns each output's bytes.
pub fn eval_node(g: &Graph, node: &Node) -> Result<Vec<Vec<u8>>, EngineError> {
    let bad = |_: String| EngineError::Op("tensor too large to fold");
    let mut desc = ArtifactDesc {
        name: "fold".into(),
        ..Default::default()
    };
    let mut inputs = vec![];
    for i in &node.inputs {
        match i {
            Some(i) => {
                let t = &g.tensors[*i];
                let data = t
                    .data
                    .as_ref()
                    .ok_or(EngineError::Op("folding needs constant inputs"))?;
                let off = desc.push_weight(data);
                desc.tensors
                    .push(tensor_info(t, TensorKind::Const, off).map_err(bad)?);
                inputs.push(desc.tensors.len() as u32 - 1);
            }
            None => inputs.push(u32::MAX),
        }
    }
    let mut arena = 0usize;
    let mut outputs = vec![];
    for o in node.outputs.iter().flatten() {
        let t = &g.tensors[*o];
        desc.tensors
            .push(tensor_info(t, TensorKind::Arena, arena as u32).map_err(bad)?);
        arena += t.byte_len().next_multiple_of(16);
        outputs.push(desc.tensors.len() as u32 - 1);
    }
    let scratch = scratch_bytes(g, node, false)?;
    desc.nodes.push(NodeDesc {
        op: node.op.clone(),
        inputs,
        outputs: outputs.clone(),
        scratch_offset: arena as u32,
        scratch_len: scratch as u32,
        name: node.name.clone(),
    });
    arena += scratch.next_multiple_of(16);
    desc.arena_size = arena as u32;
    let bytes = desc
        .to_bytes()
        .map_err(|_| EngineError::Op("could not encode the folding plan"))?;
    let bytes = AlignedBytes::from_slice(&bytes);
    let view = View::parse(bytes.as_slice())?;
    let plan = Plan::new(view)?;
    let mut mem = AlignedBytes::zeroed(arena.max(16));
    plan.run(mem.as_mut_slice())?;
    Ok(outputs
        .iter()
        .map(|&o| {
            let t = view.tensor(o as usize).expect("validated");
            mem.as_slice()[t.offset as usize..(t.offset + t.byte_len) as usize].to_vec()
        })
        .collect())
}
