//! Running an IR graph inside the compiler, with the engine's own kernels:
//! calibration observes intermediate tensors, the accuracy gate and pruning
//! evaluate candidate graphs. The graph is lowered once (every observed
//! tensor becomes a graph output so the planner keeps it) and run sample by
//! sample.

use crate::error::{CompileError, Result};
use crate::eval::AlignedBytes;
use crate::ir::{Graph, TensorId};
use kiln_format::write::ArtifactDesc;
use kiln_format::{DType, View};
use std::collections::HashMap;

/// A lowered graph ready to run repeatedly.
#[derive(Debug)]
pub struct GraphRunner {
    artifact: AlignedBytes,
    arena: AlignedBytes,
    /// Per graph input: (arena offset, byte length, element type).
    inputs: Vec<(usize, usize, DType)>,
    /// Per observed tensor: (arena offset, element count, element type).
    observed: Vec<(usize, usize, DType)>,
    /// Integer observed tensors, widened to f32 for the callback.
    widened: Vec<Vec<f32>>,
}

/// Element types a runner takes as input and reads back as f32: float32,
/// and the 8-bit integers (their stored codes, exactly).
fn readable(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::I8 | DType::U8)
}

/// The first of `values` that an input of `dtype` cannot take as one of
/// its codes (not a whole number, or outside the type's range), with that
/// range; `None` for float32 inputs, which take anything.
pub(crate) fn not_a_code(dtype: DType, values: &[f32]) -> Option<(f32, f32, f32)> {
    let (lo, hi) = match dtype {
        DType::F32 => return None,
        DType::I8 => (-128.0, 127.0),
        DType::U8 => (0.0, 255.0),
        _ => (f32::NEG_INFINITY, f32::INFINITY),
    };
    values
        .iter()
        .find(|x| x.fract() != 0.0 || !(lo..=hi).contains(*x))
        .map(|&bad| (bad, lo, hi))
}

impl GraphRunner {
    /// Lowers `g` so that the tensors in `observe` can be read after each
    /// run. Observed tensors must be computed (not constants) and f32 or
    /// 8-bit integers (read back as their codes).
    pub fn new(g: &Graph, observe: &[TensorId]) -> Result<GraphRunner> {
        let mut g2 = g.clone();
        for &t in observe {
            let tensor = &g.tensors[t];
            if tensor.is_const() || !readable(tensor.dtype) {
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
        let at = |t: u32| -> Result<(usize, usize, DType)> {
            let info = view
                .tensor(t as usize)
                .map_err(|e| CompileError::Invalid(format!("internal error: {e}")))?;
            Ok((info.offset as usize, info.byte_len as usize, info.dtype))
        };
        let inputs = view.inputs().iter().map(at).collect::<Result<Vec<_>>>()?;
        let observed: Vec<_> = view
            .outputs()
            .iter()
            .map(|t| at(t).map(|(o, b, d)| (o, b / d.size(), d)))
            .collect::<Result<Vec<_>>>()?;
        let widened = observed
            .iter()
            .map(|&(_, k, d)| {
                if d == DType::F32 {
                    vec![]
                } else {
                    vec![0.0; k]
                }
            })
            .collect();
        let arena = AlignedBytes::zeroed(view.arena_size().max(16));
        Ok(GraphRunner {
            artifact,
            arena,
            inputs,
            observed,
            widened,
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
        let &[(off, len, dtype)] = self.inputs.as_slice() else {
            return Err(CompileError::Invalid(format!(
                "calibration and validation need a one-input model (this one has {})",
                self.inputs.len()
            )));
        };
        if !readable(dtype) || samples.sample_len() * dtype.size() != len {
            return Err(CompileError::Invalid(format!(
                "a sample has {} values, the model input takes {} of {dtype:?}",
                samples.sample_len(),
                len / dtype.size().max(1)
            )));
        }
        // An 8-bit input takes its codes (no silent rounding or wrapping).
        if let Some((bad, lo, hi)) = not_a_code(
            dtype,
            &samples.data[..n.min(samples.count) * samples.sample_len()],
        ) {
            return Err(CompileError::Invalid(format!(
                "the model's input is {dtype:?}: samples must hold its codes (whole numbers in {lo}..={hi}), not {bad}"
            )));
        }
        let view = View::parse(self.artifact.as_slice())
            .map_err(|e| CompileError::Invalid(format!("internal error: {e}")))?;
        let plan = kiln_engine::Plan::new(view)
            .map_err(|e| CompileError::Invalid(format!("internal error: {e}")))?;
        let arena = self.arena.as_mut_slice();
        for i in 0..n.min(samples.count) {
            let sample = samples.sample(i);
            match dtype {
                DType::F32 => arena[off..off + len].copy_from_slice(bytemuck::cast_slice(sample)),
                // Checked above: whole numbers in range, so `as` is exact.
                DType::I8 => {
                    for (b, &x) in arena[off..off + len].iter_mut().zip(sample) {
                        *b = (x as i8) as u8;
                    }
                }
                _ => {
                    for (b, &x) in arena[off..off + len].iter_mut().zip(sample) {
                        *b = x as u8;
                    }
                }
            }
            plan.run(arena)
                .map_err(|e| CompileError::Invalid(format!("running the graph failed: {e}")))?;
            for (w, &(o, k, d)) in self.widened.iter_mut().zip(&self.observed) {
                match d {
                    DType::I8 => {
                        for (x, &b) in w.iter_mut().zip(&arena[o..o + k]) {
                            *x = f32::from(b as i8);
                        }
                    }
                    DType::U8 => {
                        for (x, &b) in w.iter_mut().zip(&arena[o..o + k]) {
                            *x = f32::from(b);
                        }
                    }
                    _ => {}
                }
            }
            let outs: Vec<&[f32]> = self
                .observed
                .iter()
                .zip(&self.widened)
                .map(|(&(o, k, d), w)| {
                    if d == DType::F32 {
                        &bytemuck::cast_slice::<u8, f32>(&arena[o..o + 4 * k])[..k]
                    } else {
                        w.as_slice()
                    }
                })
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
