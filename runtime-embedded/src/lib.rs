//! Kiln's microcontroller runtime: runs a `.kiln` artifact straight from
//! flash (`&'static [u8]`, typically `include_bytes!`; weights are read in
//! place, never copied) inside an arena the caller owns, sized by the
//! compiler ([`Model::arena_size`], the `ARENA_SIZE` of generated code).
//!
//! ```ignore
//! static MODEL: &[u8] = include_bytes!("kws.kiln"); // 16-byte aligned
//! static mut ARENA: Arena<ARENA_SIZE> = Arena::new();
//! let model = Model::new(MODEL)?;
//! let out = model.run(&mut ARENA.0, &[&features])?;
//! let scores: &[u8] = out.get(0)?;
//! ```
//!
//! Inputs are checked as every Kiln runtime checks them (count, byte size,
//! float NaN/Inf, the schema's declared ranges) before anything runs, and
//! every failure is a typed [`Error`], never a panic. [`sensor`] feeds a
//! model from an `embedded-hal` sensor through a ring buffer of windows;
//! [`telemetry`] counts what the model sees into a fixed-size drift sketch
//! and streams it to any `embedded_io::Write`. With the `signature`
//! feature, [`Model::new_trusted`] runs only artifacts a trusted release
//! key signed; with `ota`, [`ota::Slots`] keeps two model slots in flash
//! for over-the-air updates (verify, trial, confirm or fall back).
//!
//! Architecture invariant: `#![no_std]` and no `alloc`: neither this crate
//! nor what it builds on (`format`, `engine`, `kernels` without their `std`
//! features) links the `alloc` crate, so a firmware needs no
//! `#[global_allocator]`. Depends on `format`, `engine` and `protocol`
//! (without its `alloc` feature), and `embedded-hal`'s and
//! `embedded-io`'s traits, only.
#![no_std]

#[cfg(feature = "ota")]
pub mod ota;
pub mod sensor;
pub mod telemetry;

use kiln_engine::{EngineError, InputFault, Plan};
use kiln_format::View;
pub use kiln_format::{DType, TensorInfo};

/// Alignment the engine needs of the arena (and of the artifact's weights).
pub const ARENA_ALIGN: usize = kiln_format::WEIGHT_ALIGN;

/// An arena of `N` bytes with the alignment the engine needs; declare one
/// as a `static` of the model's [`Model::arena_size`].
#[derive(Debug)]
#[repr(C, align(16))]
pub struct Arena<const N: usize>(pub [u8; N]);

impl<const N: usize> Arena<N> {
    /// A zeroed arena (usable in a `static`).
    pub const fn new() -> Self {
        Self([0; N])
    }
}

impl<const N: usize> Default for Arena<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a model cannot load or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The artifact is malformed, truncated, from another format version,
    /// or asks for something this engine cannot do.
    #[error("invalid model: {0}")]
    InvalidModel(EngineError),
    /// The arena is shorter than [`Model::arena_size`].
    #[error(
        "arena has {got} bytes, the model needs {needed}: size it with the compiler's ARENA_SIZE"
    )]
    ArenaTooSmall { needed: usize, got: usize },
    /// The arena does not start on an [`ARENA_ALIGN`] boundary.
    #[error("arena is not {ARENA_ALIGN}-byte aligned: declare it as kiln_runtime_embedded::Arena")]
    ArenaMisaligned,
    /// `run` got a different number of inputs than the model has.
    #[error("the model takes {expected} inputs, got {got}")]
    InputCount { expected: usize, got: usize },
    /// An input's byte length differs from its tensor's.
    #[error("input {input}: {got} bytes, the model takes {expected}")]
    InputSize {
        input: usize,
        expected: usize,
        got: usize,
    },
    /// A float input holds NaN or an infinity.
    #[error("input {input}: element {element} is NaN or infinite")]
    NonFinite { input: usize, element: usize },
    /// A float input lies outside the range the schema declares.
    #[error("input {input}: element {element} is outside the declared range")]
    OutOfRange { input: usize, element: usize },
    /// An output index past the model's outputs.
    #[error("output {index} does not exist (the model has {count})")]
    NoSuchOutput { index: usize, count: usize },
    /// A node failed while running.
    #[error("run failed: {0}")]
    Run(EngineError),
    /// Telemetry does not fit the model or its storage, or its writer
    /// failed.
    #[error("telemetry: {0}")]
    Telemetry(kiln_protocol::SketchError),
}

impl Error {
    /// Whether the model refused this call's input (what telemetry counts
    /// as a rejected call), as opposed to a broken model or arena.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            Error::InputCount { .. }
                | Error::InputSize { .. }
                | Error::NonFinite { .. }
                | Error::OutOfRange { .. }
        )
    }
}

impl From<kiln_format::FormatError> for Error {
    fn from(e: kiln_format::FormatError) -> Self {
        Error::InvalidModel(e.into())
    }
}

/// A checked artifact, ready to run.
#[derive(Debug, Clone, Copy)]
pub struct Model<'a> {
    plan: Plan<'a>,
}

impl<'a> Model<'a> {
    /// Parses and checks `artifact` (every offset, length, index and node
    /// shape; weights stay where they are). Does not hash it: see
    /// [`Model::verify_checksum`].
    pub fn new(artifact: &'a [u8]) -> Result<Model<'a>, Error> {
        Self::new_ops::<{ kiln_engine::ALL_OPS }>(artifact)
    }

    /// [`Model::new`] for firmware that runs it with
    /// [`Model::run_ops::<OPS>`](Model::run_ops): a model with an op
    /// outside the set fails here, and only the set's decoders and checks
    /// are linked.
    pub fn new_ops<const OPS: u128>(artifact: &'a [u8]) -> Result<Model<'a>, Error> {
        let view = View::parse_ops::<OPS>(artifact)?;
        let plan = Plan::new_ops::<OPS>(view).map_err(Error::InvalidModel)?;
        Ok(Model { plan })
    }

    /// [`Model::new`] for an artifact that must be intact and signed by
    /// one of the `trusted` ed25519 public keys (checked before anything
    /// else: it hashes every byte once, no heap).
    #[cfg(feature = "signature")]
    pub fn new_trusted(artifact: &'a [u8], trusted: &[[u8; 32]]) -> Result<Model<'a>, Error> {
        View::parse(artifact)?.verify_signature(trusted)?;
        Self::new(artifact)
    }

    /// Checks the artifact's SHA-256 (once at boot, or after an update
    /// was written to flash; it reads every byte, so it costs time).
    pub fn verify_checksum(&self) -> Result<(), Error> {
        Ok(self.plan.view().verify_checksum()?)
    }

    /// Arena bytes one run needs.
    pub fn arena_size(&self) -> usize {
        self.plan.arena_size()
    }

    /// Graph inputs.
    pub fn input_count(&self) -> usize {
        self.plan.view().inputs().len()
    }

    /// Graph outputs.
    pub fn output_count(&self) -> usize {
        self.plan.view().outputs().len()
    }

    /// Dtype, shape and byte length of input `i`.
    pub fn input(&self, i: usize) -> Result<TensorInfo, Error> {
        self.plan.input(i).map_err(Error::InvalidModel)
    }

    /// Dtype, shape and byte length of output `i`.
    pub fn output(&self, i: usize) -> Result<TensorInfo, Error> {
        if i >= self.output_count() {
            return Err(Error::NoSuchOutput {
                index: i,
                count: self.output_count(),
            });
        }
        self.plan.output(i).map_err(Error::InvalidModel)
    }

    /// Name of output `i` in the artifact's schema (empty if the schema
    /// does not list it).
    pub fn output_name(&self, i: usize) -> Result<&'a str, Error> {
        let view = self.plan.view();
        let Some(id) = view.outputs().get(i) else {
            return Err(Error::NoSuchOutput {
                index: i,
                count: self.output_count(),
            });
        };
        for spec in view.meta().outputs.iter() {
            let spec = spec?;
            if spec.tensor == id {
                return Ok(spec.name);
            }
        }
        Ok("")
    }

    /// Runs the model on `inputs` (raw little-endian bytes, one slice per
    /// input, in order) inside `arena`, whose contents are overwritten. The
    /// outputs borrow the arena until dropped.
    pub fn run<'r>(&self, arena: &'r mut [u8], inputs: &[&[u8]]) -> Result<Outputs<'r, 'a>, Error> {
        self.run_ops::<{ kiln_engine::ALL_OPS }>(arena, inputs)
    }

    /// The op set of this model (bit [`kiln_format::Op::tag`] of each op),
    /// for [`Model::run_ops`]; firmware build scripts bake it in as a
    /// constant.
    pub fn op_set(&self) -> Result<u128, Error> {
        self.plan.op_set().map_err(Error::InvalidModel)
    }

    /// [`Model::run`] with only the ops in `OPS` built in (a constant, from
    /// [`Model::op_set`]): the other ops' kernels are left out of the
    /// firmware. A model with an op outside the set fails with
    /// [`Error::Run`].
    pub fn run_ops<'r, const OPS: u128>(
        &self,
        arena: &'r mut [u8],
        inputs: &[&[u8]],
    ) -> Result<Outputs<'r, 'a>, Error> {
        let needed = self.arena_size();
        if arena.len() < needed {
            return Err(Error::ArenaTooSmall {
                needed,
                got: arena.len(),
            });
        }
        if !(arena.as_ptr() as usize).is_multiple_of(ARENA_ALIGN) {
            return Err(Error::ArenaMisaligned);
        }
        let expected = self.input_count();
        if inputs.len() != expected {
            return Err(Error::InputCount {
                expected,
                got: inputs.len(),
            });
        }
        for (i, &bytes) in inputs.iter().enumerate() {
            let t = self.input(i)?;
            let (start, len) = (t.offset as usize, t.byte_len as usize);
            if bytes.len() != len {
                return Err(Error::InputSize {
                    input: i,
                    expected: len,
                    got: bytes.len(),
                });
            }
            self.check_input(i, bytes)?;
            // `Plan::new` checked every tensor lies inside the arena size.
            let slot = arena
                .get_mut(start..start + len)
                .ok_or(Error::InvalidModel(EngineError::Arena(
                    "input outside the arena",
                )))?;
            slot.copy_from_slice(bytes);
        }
        self.plan.run_ops::<OPS>(arena).map_err(Error::Run)?;
        Ok(Outputs {
            arena,
            plan: self.plan,
        })
    }

    /// NaN/Inf and declared ranges of float32 input `i`.
    fn check_input(&self, i: usize, bytes: &[u8]) -> Result<(), Error> {
        let view = self.plan.view();
        let id = view.inputs().get(i);
        // The schema names inputs by tensor id; one it does not list has no
        // declared range but is still checked for NaN/Inf.
        let mut ranges = None;
        for spec in view.meta().inputs.iter() {
            let spec = spec?;
            if Some(spec.tensor) == id {
                ranges = Some(spec.ranges);
            }
        }
        if self.input(i)?.dtype != DType::F32 {
            return Ok(());
        }
        match kiln_engine::screen_f32_input(bytes, ranges).map_err(Error::InvalidModel)? {
            None => Ok(()),
            Some((element, InputFault::NonFinite)) => Err(Error::NonFinite { input: i, element }),
            Some((element, InputFault::OutOfRange)) => Err(Error::OutOfRange { input: i, element }),
        }
    }
}

/// The outputs of one run, in the arena.
#[derive(Debug)]
pub struct Outputs<'r, 'a> {
    arena: &'r [u8],
    plan: Plan<'a>,
}

impl<'r> Outputs<'r, '_> {
    /// Dtype and shape of output `i`.
    pub fn info(&self, i: usize) -> Result<TensorInfo, Error> {
        let count = self.plan.view().outputs().len();
        if i >= count {
            return Err(Error::NoSuchOutput { index: i, count });
        }
        self.plan.output(i).map_err(Error::InvalidModel)
    }

    /// Raw little-endian bytes of output `i` (see [`Model::output`] for
    /// its dtype and shape).
    pub fn get(&self, i: usize) -> Result<&'r [u8], Error> {
        let count = self.plan.view().outputs().len();
        if i >= count {
            return Err(Error::NoSuchOutput { index: i, count });
        }
        let t = self.plan.output(i).map_err(Error::InvalidModel)?;
        let (start, len) = (t.offset as usize, t.byte_len as usize);
        self.arena
            .get(start..start + len)
            .ok_or(Error::InvalidModel(EngineError::Arena(
                "output outside the arena",
            )))
    }
}
