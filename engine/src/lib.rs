//! The Kiln executor (internal crate: Rust users want `kiln-runtime-native`).
//!
//! [`Plan`] wraps a validated [`kiln_format::View`] and runs it inside an
//! arena the caller owns: inputs are written into their arena slots, every
//! node runs in order, outputs are read from theirs. Nothing is allocated,
//! so the same code runs natively, in wasm and on a microcontroller.
//!
//! Architecture invariant: `#![no_std]`, no `alloc`; depends on `format` and
//! `kernels` only. Every op checks its shapes against the tensor table
//! before touching data, so a malformed artifact yields an [`EngineError`],
//! never a panic.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

mod arena;
mod error;
mod ops;

pub use ops::scratch_bytes;
mod tensor;

pub use error::EngineError;
pub use kiln_kernels::math::first_non_finite_f32;
pub use tensor::{Tensor, TensorMut};

use kiln_format::{Ids, Node, TensorInfo, TensorKind, View};

/// Maximum inputs or outputs of one node.
pub const MAX_IO: usize = 32;

/// Why [`screen_f32_input`] refuses a float32 input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFault {
    /// NaN or an infinity.
    NonFinite,
    /// Outside the schema's declared range for its feature.
    OutOfRange,
}

/// The check every `no_std` runtime makes of a float32 input before it
/// runs (`bytes` little-endian, any alignment): the first element that is
/// NaN/Inf, or outside `ranges` (one per feature of the last axis, cycled;
/// empty or `None`: undeclared), with why.
pub fn screen_f32_input(
    bytes: &[u8],
    ranges: Option<kiln_format::Table<'_, kiln_format::Range>>,
) -> Result<Option<(usize, InputFault)>, EngineError> {
    let ranges = ranges.filter(|r| !r.is_empty());
    for (element, c) in bytes.chunks_exact(4).enumerate() {
        let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        if !x.is_finite() {
            return Ok(Some((element, InputFault::NonFinite)));
        }
        if let Some(ranges) = ranges {
            let r = ranges.get(element % ranges.len())?;
            if x < r.min || x > r.max {
                return Ok(Some((element, InputFault::OutOfRange)));
            }
        }
    }
    Ok(None)
}

/// The op set with every op ([`Plan::run_ops`]).
pub const ALL_OPS: u128 = u128::MAX;

/// An artifact ready to run.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    view: View<'a>,
}

impl<'a> Plan<'a> {
    /// Checks what the executor relies on beyond [`View::parse`]: node
    /// arity and that no node writes over one of its own inputs.
    pub fn new(view: View<'a>) -> Result<Plan<'a>, EngineError> {
        Self::new_ops::<ALL_OPS>(view)
    }

    /// [`Plan::new`] for a runtime with only the ops in `OPS` built in (see
    /// [`Plan::run_ops`]): a node outside the set is rejected here, and the
    /// checks and decoders of the other ops are left out of the binary.
    pub fn new_ops<const OPS: u128>(view: View<'a>) -> Result<Plan<'a>, EngineError> {
        for i in 0..view.node_count() {
            let node = view.node_in::<OPS>(i)?;
            if node.inputs.len() > MAX_IO || node.outputs.len() > MAX_IO {
                return Err(EngineError::node(
                    i,
                    error::op_name::<OPS>(&node.op),
                    "more than 32 inputs or outputs",
                ));
            }
            if kiln_format::in_op_set(OPS, kiln_format::TREE_ENSEMBLE_TAG)
                && matches!(node.op, kiln_format::Op::TreeEnsemble { .. })
            {
                let mut ids = [0u32; 7];
                if node.inputs.len() != 7 {
                    return Err(EngineError::node(
                        i,
                        error::op_name::<OPS>(&node.op),
                        "needs 7 inputs",
                    ));
                }
                for (d, s) in ids.iter_mut().zip(node.inputs.iter()) {
                    *d = s;
                }
                ops::validate_tree(&view, &ids)
                    .map_err(|e| e.at_node(i, error::op_name::<OPS>(&node.op)))?;
            }
            for o in node.outputs.iter().filter(|&o| o != Ids::ABSENT) {
                let ot = view.tensor(o as usize)?;
                let or = ot.offset as usize..(ot.offset + ot.byte_len) as usize;
                for inp in node.inputs.iter().filter(|&x| x != Ids::ABSENT) {
                    let it = view.tensor(inp as usize)?;
                    if it.kind == TensorKind::Arena && it.byte_len > 0 && ot.byte_len > 0 {
                        let ir = it.offset as usize..(it.offset + it.byte_len) as usize;
                        if ir.start < or.end && or.start < ir.end {
                            return Err(EngineError::node(
                                i,
                                error::op_name::<OPS>(&node.op),
                                "an output overlaps an input in the arena",
                            ));
                        }
                    }
                }
            }
        }
        Ok(Plan { view })
    }

    /// A plan for a view that [`Plan::new`] already accepted (the same
    /// bytes, e.g. re-parsed from a loaded model), skipping its checks. The
    /// ops still check every shape and index as they run, so a view that
    /// would have been rejected fails with an error, never a panic; it only
    /// loses the load-time diagnosis.
    pub fn trusted(view: View<'a>) -> Plan<'a> {
        Plan { view }
    }

    pub fn view(&self) -> &View<'a> {
        &self.view
    }

    /// Arena bytes one run needs.
    pub fn arena_size(&self) -> usize {
        self.view.arena_size()
    }

    /// Tensor info of graph input `i`.
    pub fn input(&self, i: usize) -> Result<TensorInfo, EngineError> {
        let id = self
            .view
            .inputs()
            .get(i)
            .ok_or(EngineError::Arena("graph input index out of range"))?;
        Ok(self.view.tensor(id as usize)?)
    }

    /// Tensor info of graph output `i`.
    pub fn output(&self, i: usize) -> Result<TensorInfo, EngineError> {
        let id = self
            .view
            .outputs()
            .get(i)
            .ok_or(EngineError::Arena("graph output index out of range"))?;
        Ok(self.view.tensor(id as usize)?)
    }

    /// Runs every node. The caller has written the inputs into their arena
    /// slots ([`Plan::input`] gives offset and length); outputs are read back
    /// the same way. `arena` must be 16-byte aligned and at least
    /// [`Plan::arena_size`] bytes.
    pub fn run(&self, arena: &mut [u8]) -> Result<(), EngineError> {
        self.run_observed(arena, |_| {})
    }

    /// [`Plan::run`] with only the ops in `OPS` (bit [`kiln_format::Op::tag`]
    /// of each; [`Plan::op_set`] gives a model's) built in: with a constant
    /// set the others' kernels are left out of the binary, which is what
    /// makes firmware small. A node outside the set is an error.
    pub fn run_ops<const OPS: u128>(&self, arena: &mut [u8]) -> Result<(), EngineError> {
        self.run_with::<OPS>(arena, |_| {})
    }

    /// The op set of this plan's nodes, for [`Plan::run_ops`].
    pub fn op_set(&self) -> Result<u128, EngineError> {
        Ok(self.view.op_set()?)
    }

    /// [`Plan::run`], calling `after_node(i)` once node `i` has run (for
    /// per-node profiling by a `std` host; the engine itself keeps no time).
    pub fn run_observed(
        &self,
        arena: &mut [u8],
        after_node: impl FnMut(usize),
    ) -> Result<(), EngineError> {
        self.run_with::<ALL_OPS>(arena, after_node)
    }

    fn run_with<const OPS: u128>(
        &self,
        arena: &mut [u8],
        mut after_node: impl FnMut(usize),
    ) -> Result<(), EngineError> {
        self.check_arena(arena)?;
        for i in 0..self.view.node_count() {
            let node = self.view.node_in::<OPS>(i)?;
            ops::run_node::<OPS>(&self.view, &[], &node, arena, &[])
                .map_err(|e| e.at_node(i, error::op_name::<OPS>(&node.op)))?;
            after_node(i);
        }
        Ok(())
    }

    /// [`Plan::run_observed`] on the graph the caller decoded once:
    /// `nodes[i]` is `view.node(i)` and `tensors[i]` is `view.tensor(i)`
    /// (all of them, or none: an empty slice decodes them as it goes). This
    /// saves decoding every node and tensor record on every run, a large
    /// share of the time of small models. Wrong entries cannot cause a
    /// panic (every op checks its tensors); counts that disagree with the
    /// graph are an error.
    pub fn run_decoded(
        &self,
        arena: &mut [u8],
        nodes: &[Node<'a>],
        tensors: &[TensorInfo],
        after_node: impl FnMut(usize),
    ) -> Result<(), EngineError> {
        self.run_prepacked(arena, nodes, tensors, &[], after_node)
    }

    /// Floats of node `i`'s constant weights this build runs faster
    /// repacked (see [`Plan::prepack`]); 0 for most nodes, and for every
    /// node on most instruction sets.
    pub fn prepack_len(&self, i: usize) -> usize {
        let tensor = |id: u32| self.view.tensor(id as usize).ok();
        self.view
            .node(i)
            .map_or(0, |node| ops::prepack_len(tensor, &node))
    }

    /// Repacks node `i`'s constant weights into `out`
    /// ([`Plan::prepack_len`] floats), for [`Plan::run_prepacked`]: on the
    /// SIMD128 build, the weights of a one-row Gemm interleaved by 8 rows
    /// (every run then reads them as one stream instead of eight), and a
    /// batch-1 LSTM's `Wᵀ` and `R` as its kernel would pack them per run.
    /// A host does this once per model and keeps the buffers.
    pub fn prepack(&self, i: usize, out: &mut [f32]) -> Result<(), EngineError> {
        let tensor = |id: u32| self.view.tensor(id as usize).ok();
        let node = self.view.node(i)?;
        let dst = out
            .get_mut(..ops::prepack_len(tensor, &node))
            .ok_or(EngineError::Arena("prepack buffer is too small"))?;
        ops::prepack(&self.view, tensor, &node, dst).map_err(|e| e.at_node(i, node.op.name()))
    }

    /// [`Plan::run_decoded`] with `packed[i]`, node `i`'s weights as
    /// [`Plan::prepack`] wrote them (missing or empty: as stored).
    pub fn run_prepacked(
        &self,
        arena: &mut [u8],
        nodes: &[Node<'a>],
        tensors: &[TensorInfo],
        packed: &[&[f32]],
        mut after_node: impl FnMut(usize),
    ) -> Result<(), EngineError> {
        self.check_arena(arena)?;
        if nodes.len() != self.view.node_count()
            || !(tensors.is_empty() || tensors.len() == self.view.tensor_count())
        {
            return Err(EngineError::Arena(
                "decoded graph disagrees with the artifact",
            ));
        }
        for (i, node) in nodes.iter().enumerate() {
            let p = packed.get(i).copied().unwrap_or(&[]);
            ops::run_node::<ALL_OPS>(&self.view, tensors, node, arena, p)
                .map_err(|e| e.at_node(i, node.op.name()))?;
            after_node(i);
        }
        Ok(())
    }

    fn check_arena(&self, arena: &[u8]) -> Result<(), EngineError> {
        if arena.len() < self.arena_size() {
            return Err(EngineError::Arena("arena is smaller than the plan needs"));
        }
        if !(arena.as_ptr() as usize).is_multiple_of(kiln_format::WEIGHT_ALIGN) {
            return Err(EngineError::Arena("arena is not 16-byte aligned"));
        }
        Ok(())
    }
}
