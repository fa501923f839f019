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
            false,
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

    /// Runs the one-input graph on the first `n` samples (the artifact is
    /// parsed and planned once) and calls `f` with each sample's index and
    /// the observed tensors.
    pub fn run_each(
        &mut self,
        samples: &Samples,
        n: usize,
        mut f: impl FnMut(usize, &[&[f32]]),
    ) -> Result<()> {
        let &[(off, len)] = self.inputs.as_slice() else {
            return Err(CompileError::Invalid(format!(
                "calibration and validation need a one-input model (this one has {})",
                self.inputs.len()
            )));
        };
        if samples.sample_len() * 4 != len {
            return Err(CompileError::Invalid(format!(
                "a sample has {} values, the model input takes {}",
                samples.sample_len(),
                len / 4
            )));
        }
        let view = View::parse(self.artifact.as_slice())
            .map_err(|e| CompileError::Invalid(format!("internal error: {e}")))?;
        let plan = kiln_engine::Plan::new(view)
            .map_err(|e| CompileError::Invalid(format!("internal error: {e}")))?;
        let arena = self.arena.as_mut_slice();
        for i in 0..n.min(samples.count) {
            arena[off..off + len].copy_from_slice(bytemuck::cast_slice(samples.sample(i)));
            plan.run(arena)
                .map_err(|e| CompileError::Invalid(format!("running the graph failed: {e}")))?;
            let outs: Vec<&[f32]> = self
                .observed
                .iter()
                .map(|&(o, k)| &bytemuck::cast_slice::<u8, f32>(&arena[o..o + 4 * k])[..k])
                .collect();
            f(i, &outs);
        }
        Ok(())
    }
}

/// Samples for a one-input model: `count` samples of the input's element
/// count each, back to back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    pub data: Vec<f32>,
    pub count: usize,
}

impl Samples {
    pub fn new(data: Vec<f32>, count: usize) -> Samples {
        Samples { data, count }
    }

    /// Element count of one sample.
    pub fn sample_len(&self) -> usize {
        self.data.len().checked_div(self.count).unwrap_or(0)
    }

    pub fn sample(&self, i: usize) -> &[f32] {
        let n = self.sample_len();
        &self.data[i * n..(i + 1) * n]
    }

    /// The first `n` samples.
    pub fn take(&self, n: usize) -> Samples {
        let n = n.min(self.count);
        Samples::new(self.data[..n * self.sample_len()].to_vec(), n)
    }
}
