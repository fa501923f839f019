//! Running an IR graph inside the compiler, with the engine's own kernels:
//! calibration observes intermediate tensors, the accuracy gate and pruning
//! evaluate candidate graphs. The graph is lowered once (every observed
//! tensor becomes a graph output so the planner keeps it) and run sample by
//! sample.

use crate::error::{CompileError, Result};
use crate::eval::AlignedBytes;
use crate::ir::{Graph, TensorId};
use kiln_format::View;
use kiln_format::write::ArtifactDesc;
use std::collections::HashMap;

/// A lowered graph ready to run repeatedly.
#[derive(Debug)]
pub struct GraphRunner {
    artifact: AlignedBytes,
    arena: AlignedBytes,
    /// Per graph input: (arena offset, byte length).
    inputs: Vec<(usize, usize)>,
    /// Per observed tensor: (arena offset, element count).
    observed: Vec<(usize, usize)>,
}

impl GraphRunner {
    /// Lowers `g` so that the f32 tensors in `observe` can be read after
    /// each run. Observed tensors must be f32 and computed (not constants).
    pub fn new(g: &Graph, observe: &[TensorId]) -> Result<GraphRunner> {
        let mut g2 = g.clone();
        for &t in observe {
            let tensor = &g.tensors[t];
            if tensor.is_const() || tensor.dtype != kiln_format::DType::F32 {
                return Err(CompileError::Invalid(format!(
                    "internal error: cannot observe tensor '{}' ({:?}, constant: {})",
                    tensor.name,
                    tensor.dtype,
                    tensor.is_const()
                )));
            }
        }
        g2.outputs = observe.to_vec();
        let lowered = crate::lower::alias_reshapes(g2);
        let mut desc = ArtifactDesc {
            name: "calibration".into(),
            ..Default::default()
        };
        let in_names: Vec<String> = (0..g.inputs.len()).map(|i| format!("in{i}")).collect();
        let out_names: Vec<String> = (0..observe.len()).map(|i| format!("t{i}")).collect();
        crate::lower::lower(
            &lowered,
            &mut desc,
            &in_names,
            &out_names,
            None,
            &HashMap::new(),
        )?;
        let bytes = desc.to_bytes()?;
        let artifact = AlignedBytes::from_slice(&bytes);
        let view = View::parse(artifact.as_slice())
            .map_err(|e| CompileError::Invalid(format!("internal error: {e}")))?;
        kiln_engine::Plan::new(view)
            .map_err(|e| CompileError::Invalid(format!("internal error: {e}")))?;
        let at = |t: u32| -> Result<(usize, usize)> {
            let info = view
                .tensor(t as usize)
                .map_err(|e| CompileError::Invalid(format!("internal error: {e}")))?;
            Ok((info.offset as usize, info.byte_len as usize))
        };
        let inputs = view.inputs().iter().map(at).collect::<Result<Vec<_>>>()?;
        let observed = view
            .outputs()
            .iter()
            .map(|t| at(t).map(|(o, b)| (o, b / 4)))
            .collect::<Result<Vec<_>>>()?;
        let arena = AlignedBytes::zeroed(view.arena_size().max(16));
        Ok(GraphRunner {
            artifact,
            arena,
            inputs,
            observed,
        })
    }

    /// Element counts of the graph inputs (as lowered).
    pub fn input_lens(&self) -> Vec<usize> {
        self.inputs.iter().map(|&(_, b)| b / 4).collect()
    }

    /// Runs once on f32 inputs (one slice per graph input, each exactly the
    /// input's element count) and calls `f` with the observed tensors.
    pub fn run<R>(&mut self, inputs: &[&[f32]], f: impl FnOnce(&[&[f32]]) -> R) -> Result<R> {
        if inputs.len() != self.inputs.len() {
            return Err(CompileError::Invalid(format!(
                "the model has {} inputs, {} given",
                self.inputs.len(),
                inputs.len()
            )));
        }
        let arena = self.arena.as_mut_slice();
        for (&(off, len), x) in self.inputs.iter().zip(inputs) {
            if x.len() * 4 != len {
                return Err(CompileError::Invalid(format!(
                    "a sample has {} values, the model input takes {}",
                    x.len(),
                    len / 4
                )));
            }
            arena[off..off + len].copy_from_slice(bytemuck::cast_slice(x));
        }
        let view = View::parse(self.artifact.as_slice())
            .map_err(|e| CompileError::Invalid(format!("internal error: {e}")))?;
        let plan = kiln_engine::Plan::new(view)
            .map_err(|e| CompileError::Invalid(format!("internal error: {e}")))?;
        plan.run(arena)
            .map_err(|e| CompileError::Invalid(format!("running the graph failed: {e}")))?;
        let outs: Vec<&[f32]> = self
            .observed
            .iter()
            .map(|&(off, n)| &bytemuck::cast_slice::<u8, f32>(&arena[off..off + 4 * n])[..n])
            .collect();
        Ok(f(&outs))
    }
}
