#![forbid(unsafe_code)]
//! Shared helpers for the Kiln fuzz targets (`fuzz_targets/*.rs`).
//!
//! The targets stay thin: they only call the public library APIs of
//! `kiln-format`, `kiln-engine`, `kiln-runtime-native` and (for
//! `tflite_import`) `kiln-compiler`. Errors are the
//! expected outcome for almost every input; a panic, an abort, an
//! out-of-memory or a hang is a bug.

use kiln_engine::Plan;
use kiln_format::View;
use sha2::{Digest, Sha256};

/// Work bounds for the executing targets, so that one input stays cheap.
pub const MAX_ARENA: usize = 1 << 20;
pub const MAX_TENSOR_BYTES: u32 = 1 << 20;
pub const MAX_NODES: usize = 256;
/// Bound on the bytes of zero-filled inputs `runtime_load` builds.
pub const MAX_INPUT_BYTES: usize = 1 << 24;

/// 16-byte aligned owned copy of some bytes (`View::parse` requires the
/// artifact to start on a 16-byte boundary, as it reads weights in place).
#[derive(Debug, Clone)]
pub struct Aligned {
    words: Vec<u128>,
    len: usize,
}

impl Aligned {
    pub fn zeroed(len: usize) -> Self {
        Aligned {
            words: vec![0; len.div_ceil(16).max(1)],
            len,
        }
    }

    pub fn from_slice(b: &[u8]) -> Self {
        let mut a = Self::zeroed(b.len());
        a.as_mut().copy_from_slice(b);
        a
    }

    pub fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }

    pub fn as_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }
}

/// Reads every part of a parsed view that a consumer could read: the
/// checksum, every tensor record and its constant bytes, every node, the
/// graph input/output id lists and the whole metadata section. Errors are
/// ignored; only panics matter.
pub fn walk_view(view: &View<'_>) {
    let _ = view.verify_checksum();
    let _ = (view.header(), view.weights().len(), view.bytes().len());
    let _ = (view.arena_size(), view.per_sample_batch(), view.len());
    let _ = view.is_empty();

    for i in 0..view.tensor_count() {
        if let Ok(t) = view.tensor(i) {
            let _ = t.shape();
            let _ = t.numel();
            let _ = t.encode();
            let c = view.const_bytes(&t);
            std::hint::black_box(c.first());
        }
    }
    // Out-of-range ids must be errors, not panics.
    let _ = view.tensor(view.tensor_count());
    let _ = view.tensor(usize::MAX);
    let _ = view.node(view.node_count());
    let _ = view.node(usize::MAX);

    for i in 0..view.node_count() {
        if let Ok(n) = view.node(i) {
            let _ = n.op.name();
            std::hint::black_box(format!("{:?}", n.op));
            for id in n.inputs.iter().chain(n.outputs.iter()) {
                let _ = view.tensor(id as usize);
            }
            let _ = (n.scratch_offset, n.scratch_len, n.name.len());
        }
    }
    for id in view.inputs().iter().chain(view.outputs().iter()) {
        let _ = view.tensor(id as usize);
    }

    let meta = view.meta();
    let _ = (meta.name, meta.version, meta.description, meta.provenance);
    for table in [meta.inputs, meta.outputs] {
        let _ = table.get(table.len());
        for spec in table.iter() {
            let Ok(spec) = spec else { continue };
            let _ = view.tensor(spec.tensor as usize);
            for d in spec.dims.iter() {
                let _ = d;
            }
            for r in spec.ranges.iter() {
                let _ = r;
            }
            for l in spec.labels.iter() {
                let _ = l;
            }
        }
    }
    for p in meta.preprocessing.iter() {
        let _ = p;
    }
    for p in meta.properties.iter() {
        let _ = p;
    }
}

/// Plans a view and reads the plan's input/output records.
pub fn plan_view<'a>(view: View<'a>) -> Option<Plan<'a>> {
    let plan = Plan::new(view).ok()?;
    let _ = plan.arena_size();
    for i in 0..=view.inputs().len() {
        let _ = plan.input(i);
    }
    for i in 0..=view.outputs().len() {
        let _ = plan.output(i);
    }
    Some(plan)
}

/// Whether a plan is cheap enough to execute in the fuzzer.
pub fn within_run_bounds(view: &View<'_>) -> bool {
    if view.arena_size() > MAX_ARENA || view.node_count() > MAX_NODES {
        return false;
    }
    (0..view.tensor_count()).all(|i| match view.tensor(i) {
        Ok(t) => t.byte_len <= MAX_TENSOR_BYTES,
        Err(_) => false,
    })
}

/// When `data` has a readable header, a copy with the header checksum
/// recomputed, so that mutated artifacts get past `verify_checksum` (which
/// `Model::load` enforces) and reach the planner and executor.
pub fn with_fixed_checksum(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 128 || data[..8] != kiln_format::MAGIC {
        return None;
    }
    let content_len = u64::from_le_bytes(data[16..24].try_into().ok()?);
    if content_len < 128 || content_len > data.len() as u64 {
        return None;
    }
    let mut h = Sha256::new();
    h.update(&data[..48]);
    h.update(&data[128..content_len as usize]);
    let digest: [u8; 32] = h.finalize().into();
    if data[64..96] == digest {
        return None;
    }
    let mut out = data.to_vec();
    out[64..96].copy_from_slice(&digest);
    Some(out)
}

/// Zero-filled inputs of `model`'s schema shapes at batch 1, or `None` when
/// one would exceed [`MAX_INPUT_BYTES`].
pub fn zero_inputs(
    model: &kiln_runtime_native::Model,
) -> Option<Vec<kiln_runtime_native::TensorValue>> {
    let mut inputs = Vec::new();
    for spec in model.inputs() {
        let shape = spec.shape(1);
        let bytes = shape
            .iter()
            .try_fold(spec.dtype.size(), |n, &d| n.checked_mul(d))
            .filter(|&n| n <= MAX_INPUT_BYTES)?;
        inputs.push(kiln_runtime_native::TensorValue {
            dtype: spec.dtype,
            shape,
            data: vec![0; bytes],
        });
    }
    Some(inputs)
}
