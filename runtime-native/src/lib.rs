//! Kiln's native runtime: the Rust facade for running models.
//!
//! [`Model::load`] takes artifact bytes (or, with the `onnx` feature, an
//! ONNX model that is compiled in memory), checks them once and keeps the
//! schema. A [`Model`] is `Send + Sync`; each thread makes a cheap
//! [`Session`] holding its own arena and the graph decoded once (so a run
//! decodes no node or tensor record). [`Session::run`] validates every input
//! against the schema (dtype, shape, batch, NaN/Inf, declared ranges) and
//! returns a typed [`RunError`] naming the input and the violation.
//! [`Session::run_into`] does not allocate.
//!
//! [`Session::record_telemetry`] counts runs into a drift sketch of the
//! artifact's baseline (`kiln_protocol`) for the host to send; with the
//! `upload` feature, [`upload::Uploader`] sends them to a collector.
//!
//! [`Model::load_trusted`] runs only artifacts signed by a trusted release
//! key; with the `ota` feature, [`ota::OtaClient`] keeps a device on the
//! version its update channel names (signed manifests, resumable
//! downloads, an atomic switch with the previous version kept).
//!
//! With the `coreml` feature, [`coreml::CoreMlModel`] runs a Core ML
//! package through the system instead (Apple platforms).
//!
//! Architecture invariant: depends on `format`, `engine` and `protocol`; the
//! compiler comes in solely through the optional `onnx` feature, which the
//! CLI enables and device builds leave off, and Core ML's binding solely
//! through the optional `coreml` feature.

#[cfg(feature = "coreml")]
pub mod coreml;
mod error;
#[cfg(feature = "ota")]
pub mod ota;
mod telemetry;
mod tensor;
#[cfg(feature = "upload")]
pub mod upload;

pub use error::{ErrorCategory, InputProblem, RunError};
pub use kiln_format::DType;
pub use telemetry::{BASELINE_PROPERTY, DEFAULT_SAMPLE_EVERY, TelemetryError};
pub use tensor::TensorValue;

use kiln_engine::Plan;
use kiln_format::{Dim, Node, TensorInfo, View};
use std::path::Path;

/// 16-byte aligned owned bytes (the artifact and arenas live in these).
#[derive(Debug, Clone)]
struct Aligned {
    words: Vec<u128>,
    len: usize,
}

impl Aligned {
    fn zeroed(len: usize) -> Self {
        Aligned {
            words: vec![0; len.div_ceil(16).max(1)],
            len,
        }
    }
    fn from_slice(b: &[u8]) -> Self {
        let mut a = Self::zeroed(b.len());
        a.as_mut().copy_from_slice(b);
        a
    }
    fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
    fn as_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }
}

/// Schema of one input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct IoSchema {
    pub name: String,
    pub dtype: DType,
    /// `None` is the batch dimension.
    pub dims: Vec<Option<usize>>,
    pub batch_name: Option<String>,
    /// Per-feature (last axis) valid ranges, inclusive; empty when undeclared.
    pub ranges: Vec<(f32, f32)>,
    pub labels: Vec<String>,
}

impl IoSchema {
    /// The shape for a given batch size.
    pub fn shape(&self, batch: usize) -> Vec<usize> {
        self.dims.iter().map(|d| d.unwrap_or(batch)).collect()
    }

    /// The shape as a string, e.g. `[N, 1, 28, 28]`.
    pub fn shape_string(&self) -> String {
        let mut s = String::from("[");
        for (i, d) in self.dims.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            match d {
                Some(v) => s.push_str(&v.to_string()),
                None => s.push_str(self.batch_name.as_deref().unwrap_or("N")),
            }
        }
        s.push(']');
        s
    }
}

/// A loaded, validated model. Cheap to share between threads.
#[derive(Debug)]
pub struct Model {
    bytes: Aligned,
    inputs: Vec<IoSchema>,
    outputs: Vec<IoSchema>,
    input_info: Vec<TensorInfo>,
    output_info: Vec<TensorInfo>,
    arena_size: usize,
    per_sample_batch: bool,
    name: String,
    version: String,
    /// Each node's constant weights repacked for this build
    /// (`Plan::prepack`; empty for most nodes, and for all natively), made
    /// once here for every session.
    prepacked: Vec<Vec<f32>>,
}

fn schema(spec: &kiln_format::IoSpec<'_>) -> Result<IoSchema, RunError> {
    let mut dims = vec![];
    let mut batch_name = None;
    for d in spec.dims.iter() {
        match d? {
            Dim::Fixed(n) => dims.push(Some(n as usize)),
            Dim::Batch(name) => {
                dims.push(None);
                batch_name = Some(name.to_string());
            }
        }
    }
    Ok(IoSchema {
        name: spec.name.to_string(),
        dtype: spec.dtype,
        dims,
        batch_name,
        ranges: spec
            .ranges
            .iter()
            .map(|r| r.map(|r| (r.min, r.max)))
            .collect::<Result<_, _>>()?,
        labels: spec
            .labels
            .iter()
            .map(|l| l.map(str::to_string))
            .collect::<Result<_, _>>()?,
    })
}

impl Model {
    /// Loads artifact bytes: parses, verifies the checksum and plans.
    /// With the `onnx` feature, ONNX bytes are compiled in memory.
    pub fn load(bytes: &[u8]) -> Result<Model, RunError> {
        if !bytes.starts_with(&kiln_format::MAGIC) {
            #[cfg(feature = "onnx")]
            if looks_like_onnx(bytes) {
                return Self::load_onnx(bytes, "model.onnx", &kiln_compiler::Options::default());
            }
        }
        let aligned = Aligned::from_slice(bytes);
        Self::from_aligned(aligned)
    }

    /// Loads an artifact only if it is signed by one of the `trusted`
    /// ed25519 public keys (`kiln sign`): unsigned, untrusted or tampered
    /// artifacts are refused with [`kiln_format::FormatError::Unsigned`],
    /// `UntrustedKey` or `BadSignature`.
    #[cfg(feature = "signature")]
    pub fn load_trusted(bytes: &[u8], trusted: &[[u8; 32]]) -> Result<Model, RunError> {
        let aligned = Aligned::from_slice(bytes);
        View::parse(aligned.as_ref())?.verify_signature(trusted)?;
        Self::from_aligned(aligned)
    }

    /// Compiles ONNX (or TFLite) bytes in memory and loads the result.
    #[cfg(feature = "onnx")]
    pub fn load_onnx(
        bytes: &[u8],
        source_name: &str,
        opts: &kiln_compiler::Options,
    ) -> Result<Model, RunError> {
        let compiled = kiln_compiler::compile_model(bytes, source_name, opts)
            .map_err(|e| RunError::Compile(e.to_string()))?;
        Self::from_aligned(Aligned::from_slice(&compiled.bytes))
    }

    /// Loads a file: `.kiln` artifacts, or ONNX with the `onnx` feature.
    pub fn load_path(path: impl AsRef<Path>) -> Result<Model, RunError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| RunError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        #[cfg(feature = "onnx")]
        if !bytes.starts_with(&kiln_format::MAGIC) && looks_like_onnx(&bytes) {
            let name = path
                .file_name()
                .and_then(|s| s.to_str())
                .unwrap_or("model.onnx");
            return Self::load_onnx(&bytes, name, &kiln_compiler::Options::default());
        }
        Self::load(&bytes)
    }

    fn from_aligned(bytes: Aligned) -> Result<Model, RunError> {
        let view = View::parse(bytes.as_ref())?;
        view.verify_checksum()?;
        let plan = Plan::new(view)?;
        let prepacked = (0..view.node_count())
            .map(|i| {
                let mut w = vec![0.0f32; plan.prepack_len(i)];
                if !w.is_empty() {
                    plan.prepack(i, &mut w)?;
                }
                Ok(w)
            })
            .collect::<Result<_, RunError>>()?;
        let meta = view.meta();
        let inputs: Vec<IoSchema> = meta
            .inputs
            .iter()
            .map(|s| schema(&s?))
            .collect::<Result<_, _>>()?;
        let outputs: Vec<IoSchema> = meta
            .outputs
            .iter()
            .map(|s| schema(&s?))
            .collect::<Result<_, _>>()?;
        let input_info = view
            .inputs()
            .iter()
            .map(|i| view.tensor(i as usize))
            .collect::<Result<_, _>>()?;
        let output_info = view
            .outputs()
            .iter()
            .map(|i| view.tensor(i as usize))
            .collect::<Result<_, _>>()?;
        let model = Model {
            inputs,
            outputs,
            input_info,
            output_info,
            arena_size: view.arena_size(),
            per_sample_batch: view.per_sample_batch(),
            name: meta.name.to_string(),
            version: meta.version.to_string(),
            prepacked,
            bytes: Aligned::zeroed(0),
        };
        Ok(Model { bytes, ..model })
    }

    pub fn inputs(&self) -> &[IoSchema] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[IoSchema] {
        &self.outputs
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// Arena bytes one session allocates.
    pub fn arena_size(&self) -> usize {
        self.arena_size
    }

    /// The artifact bytes.
    pub fn artifact_bytes(&self) -> &[u8] {
        self.bytes.as_ref()
    }

    /// The validated view of the artifact.
    pub fn view(&self) -> View<'_> {
        View::parse(self.bytes.as_ref()).expect("validated at load")
    }

    /// A new session (one per thread).
    pub fn session(&self) -> Session<'_> {
        self.session_in(self.arena())
    }

    /// A fresh arena sized for this model, for [`Model::session_in`].
    pub fn arena(&self) -> Arena {
        Arena(Aligned::zeroed(self.arena_size))
    }

    /// A session that runs in `arena`, which [`Session::into_arena`] gives
    /// back: hosts that cannot keep a borrowing [`Session`] (a wasm-bindgen
    /// object) reuse one arena across runs this way. An arena too small for
    /// this model is replaced by a fresh one.
    pub fn session_in(&self, arena: Arena) -> Session<'_> {
        let arena = if arena.0.len >= self.arena_size {
            arena.0
        } else {
            Aligned::zeroed(self.arena_size)
        };
        let view = self.view();
        // Decoded once per session; `from_aligned` decoded every node
        // already (`Plan::new`), so none fails here.
        let nodes = (0..view.node_count())
            .map_while(|i| view.node(i).ok())
            .collect();
        let mut tensors: Vec<TensorInfo> = (0..view.tensor_count())
            .map_while(|i| view.tensor(i).ok())
            .collect();
        if tensors.len() != view.tensor_count() {
            // A record that does not decode is reported when a node uses it.
            tensors.clear();
        }
        Session {
            model: self,
            // `from_aligned` ran `Plan::new` on these bytes.
            plan: Plan::trusted(view),
            nodes,
            tensors,
            packed: self.prepacked.iter().map(Vec::as_slice).collect(),
            arena,
            allow_non_finite: false,
            telemetry: None,
        }
    }
}

/// The working memory of one run (16-byte aligned), reusable across
/// sessions of the same model.
#[derive(Debug, Clone)]
pub struct Arena(Aligned);

impl Arena {
    pub fn len(&self) -> usize {
        self.0.len
    }

    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }
}

#[cfg(feature = "onnx")]
fn looks_like_onnx(b: &[u8]) -> bool {
    // An ONNX ModelProto starts with field 1 (ir_version, varint): tag 0x08;
    // a TFLite flatbuffer has the identifier TFL3 at byte 4 (both compile).
    b.first() == Some(&0x08) || kiln_compiler::tflite::is_tflite(b)
}

/// Median wall time of one node, from [`Session::profile`].
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTime {
    /// Position in the compiled graph.
    pub index: usize,
    /// Kiln op name.
    pub op: &'static str,
    /// Node name (from the source model, possibly fused names).
    pub name: String,
    /// Median microseconds over the profiled runs (summed over the samples
    /// of a per-sample batch).
    pub micros: f64,
}

/// Per-thread execution state: the arena.
#[derive(Debug)]
pub struct Session<'m> {
    model: &'m Model,
    plan: Plan<'m>,
    nodes: Vec<Node<'m>>,
    tensors: Vec<TensorInfo>,
    /// `model.prepacked` as one slice per node, for `Plan::run_prepacked`.
    packed: Vec<&'m [f32]>,
    arena: Aligned,
    allow_non_finite: bool,
    telemetry: Option<Box<telemetry::Recorder>>,
}

impl<'m> Session<'m> {
    /// Records telemetry from now on: one [`Session::run`] in `every`
    /// counts its first input's rows into a sketch of the artifact's drift
    /// baseline, and its latency; every rejected call counts as rejected.
    /// The sketch has a fixed size and is the host's to take
    /// ([`Session::take_sketch`]). `every = 1` counts every call (about
    /// 10 ns per feature and row); [`DEFAULT_SAMPLE_EVERY`] keeps the cost
    /// within 2% of a call on the small tabular models.
    pub fn record_telemetry(&mut self, every: u32) -> Result<(), TelemetryError> {
        self.telemetry = Some(Box::new(telemetry::Recorder::new(self.model, every)?));
        Ok(())
    }

    /// Keeps, per window, a uniform random sample of `k` of the raw input
    /// rows the recorded calls saw (off by default; `k = 0` turns it off
    /// again), for the host to take with [`Session::take_samples`] and
    /// send beside the sketch. Raw rows are the data itself: send them only
    /// where that is allowed (no differential privacy covers them).
    pub fn record_samples(&mut self, k: usize) -> Result<(), TelemetryError> {
        match &mut self.telemetry {
            Some(t) => {
                t.keep_samples(k);
                Ok(())
            }
            None => Err(TelemetryError::NotRecording),
        }
    }

    /// The rows sampled in the window so far (a new sample starts); empty
    /// unless [`Session::record_samples`] asked for them.
    pub fn take_samples(&mut self) -> Vec<Vec<f32>> {
        self.telemetry
            .as_mut()
            .map(|t| t.take_samples())
            .unwrap_or_default()
    }

    /// The telemetry window recorded so far (a new one starts), or `None`
    /// when the session does not record.
    pub fn take_sketch(&mut self) -> Option<kiln_protocol::Sketch> {
        self.telemetry.as_mut().map(|t| t.take())
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Ends the session, returning its arena for [`Model::session_in`].
    pub fn into_arena(self) -> Arena {
        Arena(self.arena)
    }

    /// Accept NaN and infinite inputs (rejected by default). Models that
    /// treat NaN as "missing" (tree ensembles) need this.
    pub fn allow_non_finite(&mut self, allow: bool) -> &mut Self {
        self.allow_non_finite = allow;
        self
    }

    /// Validates `inputs` (in schema order) and returns the batch size.
    pub fn check_inputs(&self, inputs: &[&TensorValue]) -> Result<usize, RunError> {
        let m = self.model;
        if inputs.len() != m.inputs.len() {
            return Err(RunError::InputCount {
                expected: m.inputs.len(),
                got: inputs.len(),
            });
        }
        let mut batch: Option<usize> = None;
        for (spec, v) in m.inputs.iter().zip(inputs) {
            let fail = |problem| RunError::Input {
                input: spec.name.clone(),
                problem,
            };
            if v.dtype != spec.dtype {
                return Err(fail(InputProblem::DType {
                    expected: spec.dtype,
                    got: v.dtype,
                }));
            }
            if v.shape.len() != spec.dims.len() {
                return Err(fail(InputProblem::Shape {
                    expected: spec.shape_string(),
                    got: v.shape.clone(),
                }));
            }
            for (d, (want, &got)) in spec.dims.iter().zip(&v.shape).enumerate() {
                match want {
                    Some(w) if *w != got => {
                        return Err(fail(InputProblem::Shape {
                            expected: spec.shape_string(),
                            got: v.shape.clone(),
                        }));
                    }
                    None => {
                        if got == 0 {
                            return Err(fail(InputProblem::EmptyBatch));
                        }
                        match batch {
                            Some(b) if b != got => {
                                return Err(fail(InputProblem::BatchMismatch {
                                    expected: b,
                                    got,
                                    axis: d,
                                }));
                            }
                            _ => batch = Some(got),
                        }
                    }
                    _ => {}
                }
            }
            if v.data.len() != v.shape.iter().product::<usize>() * v.dtype.size() {
                return Err(fail(InputProblem::DataLength));
            }
            if let Some(index) = v.first_non_finite().filter(|_| !self.allow_non_finite) {
                return Err(fail(InputProblem::NonFinite { index }));
            }
            if !spec.ranges.is_empty() && v.dtype == DType::F32 {
                let f = spec.ranges.len();
                for (i, x) in v.f32_values().enumerate() {
                    let (lo, hi) = spec.ranges[i % f];
                    if x < lo || x > hi {
                        return Err(fail(InputProblem::OutOfRange {
                            index: i,
                            value: x,
                            min: lo,
                            max: hi,
                        }));
                    }
                }
            }
        }
        Ok(batch.unwrap_or(1))
    }

    /// Runs the model on `inputs` given in schema order; returns the outputs in schema order.
    pub fn run(&mut self, inputs: &[&TensorValue]) -> Result<Vec<TensorValue>, RunError> {
        let sampled = self.telemetry.as_mut().is_some_and(|t| t.sample());
        let start = sampled.then(std::time::Instant::now);
        let batch = match self.check_inputs(inputs) {
            Ok(b) => b,
            Err(e) => {
                if let Some(t) = &mut self.telemetry {
                    t.reject();
                }
                return Err(e);
            }
        };
        let mut outs: Vec<TensorValue> = self
            .model
            .outputs
            .iter()
            .map(|o| {
                let shape = o.shape(batch);
                let n: usize = shape.iter().product();
                TensorValue {
                    dtype: o.dtype,
                    shape,
                    data: vec![0; n * o.dtype.size()],
                }
            })
            .collect();
        let ins: Vec<&[u8]> = inputs.iter().map(|v| v.data.as_slice()).collect();
        let mut out_bufs: Vec<&mut [u8]> = outs.iter_mut().map(|o| o.data.as_mut_slice()).collect();
        self.run_into(batch, &ins, &mut out_bufs)?;
        if let (Some(t), Some(start), Some(x)) = (&mut self.telemetry, start, inputs.first()) {
            t.record(x, &outs, start.elapsed().as_micros() as u64);
        }
        Ok(outs)
    }

    /// Runs on already validated raw input bytes, writing raw output bytes.
    /// Does not allocate. `batch` is the size of dim 0 for batched models.
    pub fn run_into(
        &mut self,
        batch: usize,
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
    ) -> Result<(), RunError> {
        self.run_into_observed(batch, inputs, outputs, |_| {})
    }

    /// Per-node wall time of `runs` calls of [`Session::run`] on `inputs`
    /// (validated first): the median per node, in graph order. For finding
    /// where time goes (`kiln run --profile`); timing adds a clock read per
    /// node.
    pub fn profile(
        &mut self,
        inputs: &[&TensorValue],
        runs: usize,
    ) -> Result<Vec<NodeTime>, RunError> {
        let batch = self.check_inputs(inputs)?;
        let m = self.model;
        let view = m.view();
        let ins: Vec<&[u8]> = inputs.iter().map(|t| t.data.as_slice()).collect();
        let mut outs: Vec<Vec<u8>> = m
            .output_info
            .iter()
            .map(|t| {
                let samples = if m.per_sample_batch { batch } else { 1 };
                vec![0; t.byte_len as usize * samples]
            })
            .collect();
        let n = view.node_count();
        let mut samples = vec![Vec::with_capacity(runs); n];
        for _ in 0..runs.max(1) {
            let mut outs: Vec<&mut [u8]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
            let mut times = vec![0f64; n];
            let mut last = std::time::Instant::now();
            self.run_into_observed(batch, &ins, &mut outs, |i| {
                let now = std::time::Instant::now();
                times[i] += (now - last).as_secs_f64() * 1e6;
                last = now;
            })?;
            for (s, t) in samples.iter_mut().zip(times) {
                s.push(t);
            }
        }
        let mut result = Vec::with_capacity(n);
        for (i, mut s) in samples.into_iter().enumerate() {
            s.sort_by(f64::total_cmp);
            let node = view.node(i)?;
            result.push(NodeTime {
                index: i,
                op: node.op.name(),
                name: node.name.to_string(),
                micros: s[s.len() / 2],
            });
        }
        Ok(result)
    }

    fn run_into_observed(
        &mut self,
        batch: usize,
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        mut after_node: impl FnMut(usize),
    ) -> Result<(), RunError> {
        let m = self.model;
        let samples = if m.per_sample_batch { batch } else { 1 };
        if inputs.len() != m.input_info.len() || outputs.len() != m.output_info.len() {
            return Err(RunError::InputCount {
                expected: m.input_info.len(),
                got: inputs.len(),
            });
        }
        for (k, t) in m.input_info.iter().enumerate() {
            if inputs[k].len() != t.byte_len as usize * samples {
                return Err(RunError::Input {
                    input: m.inputs[k].name.clone(),
                    problem: InputProblem::DataLength,
                });
            }
        }
        for (k, t) in m.output_info.iter().enumerate() {
            if outputs[k].len() != t.byte_len as usize * samples {
                return Err(RunError::OutputBuffer {
                    output: m.outputs[k].name.clone(),
                });
            }
        }
        for s in 0..samples {
            let arena = self.arena.as_mut();
            for (k, t) in m.input_info.iter().enumerate() {
                let n = t.byte_len as usize;
                arena[t.offset as usize..t.offset as usize + n]
                    .copy_from_slice(&inputs[k][s * n..(s + 1) * n]);
            }
            self.plan.run_prepacked(
                arena,
                &self.nodes,
                &self.tensors,
                &self.packed,
                &mut after_node,
            )?;
            let arena = self.arena.as_ref();
            for (k, t) in m.output_info.iter().enumerate() {
                let n = t.byte_len as usize;
                outputs[k][s * n..(s + 1) * n]
                    .copy_from_slice(&arena[t.offset as usize..t.offset as usize + n]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod schema_tests {
    use super::IoSchema;
    use kiln_format::DType;

    #[test]
    fn shape_strings_name_the_batch_dimension() {
        let s = |dims: Vec<Option<usize>>, batch: Option<&str>| IoSchema {
            name: "x".into(),
            dtype: DType::F32,
            dims,
            batch_name: batch.map(String::from),
            ranges: vec![],
            labels: vec![],
        };
        assert_eq!(
            s(vec![None, Some(1), Some(28)], None).shape_string(),
            "[N, 1, 28]"
        );
        assert_eq!(
            s(vec![None, Some(4)], Some("batch")).shape_string(),
            "[batch, 4]"
        );
        assert_eq!(s(vec![Some(3)], None).shape_string(), "[3]");
        assert_eq!(s(vec![], None).shape_string(), "[]");
    }
}
