//! `--target coreml`: writes the optimised IR as a Core ML ML Program
//! package (`.mlpackage`) for iOS 16 / macOS 13 and later (specification
//! version 7, opset `CoreML6`).
//!
//! Why an ML Program and not the older NeuralNetwork spec: coremltools can
//! only *validate* ML Programs off Apple platforms (its `milproto` loader
//! rebuilds every op through the MIL builder, which type-checks inputs,
//! shapes and dtypes); a NeuralNetwork spec gets no more than a protobuf
//! parse on Linux. ML Programs are also what Apple's tools write today.
//!
//! MIL is NCHW like the IR, so the lowering is one op (or two) per IR node:
//! fully connected layers become `linear`, convolutions `conv` (groups for
//! depthwise), pools `max_pool`/`avg_pool`, global pools `reduce_*`,
//! activations their MIL op, softmax `softmax` (log-softmax through
//! `reduce_log_sum_exp`), and reshape, transpose, concat and elementwise
//! binaries theirs. A classifier's label lookup (argmax, gather from a
//! constant class list, casts) becomes MIL's `classify`, so the package is
//! a Core ML classifier (`predictedFeatureName`, a probability dictionary).
//! Weights are stored float32, float16 (`constexpr_cast`) or 8-bit linear
//! per output channel (`constexpr_affine_dequantize`, symmetric int8):
//! Core ML computes in float either way. An int8 model (from TFLite) keeps
//! its int8 weights and scales; its activations become their real values
//! (`scale · (q − zero_point)`, I/O included), int32 biases are scaled to
//! real values, and each int8 clamp (fused activation, saturation) becomes
//! a `clip` at its real bounds. Names that are not MIL
//! identifiers are sanitised; the source name is kept in each feature's
//! description. Any other op fails with a message naming it.
//!
//! The package: `Manifest.json`, `Data/com.apple.CoreML/model.mlmodel`
//! (this module's protobuf, [`proto`]) and
//! `Data/com.apple.CoreML/weights/weight.bin` (every constant of ten or
//! more values, in Core ML's blob storage layout: a 64-byte file header,
//! then per blob a 64-byte record and the data, each 64-byte aligned).

pub mod proto;

use crate::error::{CompileError, Result};
use crate::ir::{Graph, Node, TensorId};
use kiln_format::{Binary, DType, Op, Unary};
use prost::Message;
use proto::{Argument, Binding, Operation, Value, ValueType, dtype};
use std::collections::{BTreeMap, HashMap, HashSet};

/// How `--target coreml` stores the weights of linear layers and
/// convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightStorage {
    F32,
    /// IEEE half (`constexpr_cast` to float32 at load).
    F16,
    /// Symmetric int8 per output channel (`constexpr_affine_dequantize`).
    Int8,
}

impl WeightStorage {
    fn describe(self) -> &'static str {
        match self {
            WeightStorage::F32 => "float32",
            WeightStorage::F16 => "float16",
            WeightStorage::Int8 => "int8 linear, symmetric per output channel",
        }
    }
}

/// What goes into the package besides the graph.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub short_description: String,
    pub version: String,
    /// `kiln.*` provenance entries of the metadata's user-defined map.
    pub provenance: BTreeMap<String, String>,
}

/// The files of an `.mlpackage`.
#[derive(Debug, Clone)]
pub struct Package {
    /// `Data/com.apple.CoreML/model.mlmodel`.
    pub spec: Vec<u8>,
    /// `Data/com.apple.CoreML/weights/weight.bin`.
    pub weights: Vec<u8>,
    /// Bytes of the linear and convolution weights as stored.
    pub weight_bytes: usize,
}

/// `Manifest.json`'s identifiers: fixed, so one model always gives the
/// same package.
const SPEC_ID: &str = "6b696c6e-0000-4000-8000-6d6f64656c00";
const WEIGHTS_ID: &str = "6b696c6e-0000-4000-8000-776569676874";

impl Package {
    /// `(path inside the package, bytes)` of every file.
    pub fn files(&self) -> Vec<(&'static str, Vec<u8>)> {
        let manifest = format!(
            r#"{{
    "fileFormatVersion": "1.0.0",
    "itemInfoEntries": {{
        "{SPEC_ID}": {{
            "author": "com.apple.CoreML",
            "description": "CoreML Model Specification",
            "name": "model.mlmodel",
            "path": "com.apple.CoreML/model.mlmodel"
        }},
        "{WEIGHTS_ID}": {{
            "author": "com.apple.CoreML",
            "description": "CoreML Model Weights",
            "name": "weights",
            "path": "com.apple.CoreML/weights"
        }}
    }},
    "rootModelIdentifier": "{SPEC_ID}"
}}
"#
        );
        vec![
            ("Manifest.json", manifest.into_bytes()),
            ("Data/com.apple.CoreML/model.mlmodel", self.spec.clone()),
            (
                "Data/com.apple.CoreML/weights/weight.bin",
                self.weights.clone(),
            ),
        ]
    }

    /// Writes the package as directory `dir` (replacing an earlier
    /// package there).
    pub fn write_to(&self, dir: &std::path::Path) -> std::io::Result<()> {
        if dir.join("Manifest.json").is_file() {
            std::fs::remove_dir_all(dir)?;
        }
        for (rel, bytes) in self.files() {
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, bytes)?;
        }
        Ok(())
    }
}

/// Core ML's weight blob file.
struct Blobs {
    bytes: Vec<u8>,
    count: u32,
}

/// Blob storage dtype codes.
const BLOB_F16: u32 = 1;
const BLOB_F32: u32 = 2;
const BLOB_I8: u32 = 4;

impl Blobs {
    fn new() -> Self {
        Blobs {
            bytes: vec![0; 64],
            count: 0,
        }
    }

    /// Appends one blob; returns the offset of its record.
    fn push(&mut self, code: u32, data: &[u8]) -> u64 {
        let record = self.bytes.len();
        let start = record + 64;
        self.bytes.resize(start, 0);
        self.bytes[record..record + 4].copy_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
        self.bytes[record + 4..record + 8].copy_from_slice(&code.to_le_bytes());
        self.bytes[record + 8..record + 16].copy_from_slice(&(data.len() as u64).to_le_bytes());
        self.bytes[record + 16..record + 24].copy_from_slice(&(start as u64).to_le_bytes());
        self.bytes.extend_from_slice(data);
        self.bytes.resize(self.bytes.len().div_ceil(64) * 64, 0);
        self.count += 1;
        record as u64
    }

    fn finish(mut self) -> Vec<u8> {
        self.bytes[0..4].copy_from_slice(&self.count.to_le_bytes());
        self.bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
        self.bytes
    }
}

/// Constant data in one of the forms MIL stores.
enum Data {
    F32(Vec<f32>),
    F16(Vec<u8>),
    I8(Vec<u8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(bool),
    Str(String),
}

impl Data {
    fn dtype(&self) -> i32 {
        match self {
            Data::F32(_) => dtype::FLOAT32,
            Data::F16(_) => dtype::FLOAT16,
            Data::I8(_) => dtype::INT8,
            Data::I32(_) => dtype::INT32,
            Data::I64(_) => dtype::INT64,
            Data::Bool(_) => 1,
            Data::Str(_) => dtype::STRING,
        }
    }
}

fn tensor_type(dt: i32, shape: &[usize]) -> ValueType {
    ValueType {
        tensor_type: Some(proto::TensorType {
            data_type: dt,
            rank: shape.len() as i64,
            dimensions: shape
                .iter()
                .map(|&d| proto::Dimension {
                    constant: Some(proto::ConstantDimension { size: d as u64 }),
                })
                .collect(),
        }),
        ..Default::default()
    }
}

/// An immediate value of `data` with type `(dtype, shape)`.
fn immediate(data: Data, shape: &[usize]) -> Value {
    let dt = data.dtype();
    let mut t = proto::TensorValue::default();
    match data {
        Data::F32(v) => t.floats = Some(proto::RepeatedFloats { values: v }),
        Data::F16(b) | Data::I8(b) => t.bytes = Some(proto::RepeatedBytes { values: b }),
        Data::I32(v) => t.ints = Some(proto::RepeatedInts { values: v }),
        Data::I64(v) => t.long_ints = Some(proto::RepeatedLongInts { values: v }),
        Data::Bool(b) => t.bools = Some(proto::RepeatedBools { values: vec![b] }),
        Data::Str(s) => t.strings = Some(proto::RepeatedStrings { values: vec![s] }),
    }
    Value {
        r#type: Some(tensor_type(dt, shape)),
        immediate_value: Some(proto::ImmediateValue {
            tensor: Some(t),
            list: None,
        }),
        blob_file_value: None,
    }
}

fn string_value(s: &str) -> Value {
    immediate(Data::Str(s.into()), &[])
}

/// A MIL identifier for `name`: letters, digits and `_`, not starting
/// with a digit.
fn ident(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// Why `node` cannot be exported.
fn cannot(node: &Node, why: &str) -> CompileError {
    CompileError::Node {
        node: node.name.clone(),
        op: node.op.name().into(),
        detail: format!("cannot be exported to Core ML: {why}"),
    }
}

/// A classifier head found in the graph: `label = classes[argmax(probs)]`.
struct Classifier {
    /// The graph output holding the label.
    label: TensorId,
    /// The score vector the argmax reads.
    probs: TensorId,
    classes: Vec<i64>,
    /// The head's nodes (argmax, gather, casts, reshapes), not lowered.
    nodes: HashSet<usize>,
}

/// Finds `label = Cast*(Gather(classes, Cast*(ArgMax(probs))))` ending in
/// graph output `label`, with `probs` of `classes.len()` values.
fn classifier(g: &Graph, label: TensorId) -> Option<Classifier> {
    let producer = |t: TensorId| {
        g.nodes
            .iter()
            .position(|n| n.outputs.first().copied().flatten() == Some(t))
    };
    let first_input = |n: usize| g.nodes[n].inputs.first().copied().flatten();
    let mut nodes = HashSet::new();
    // Walk back over casts and reshapes.
    let skip = |mut t: TensorId, nodes: &mut HashSet<usize>| loop {
        let n = producer(t)?;
        match g.nodes[n].op {
            Op::Cast { .. } | Op::Reshape => {
                nodes.insert(n);
                t = first_input(n)?;
            }
            _ => return Some(n),
        }
    };
    let gather = skip(label, &mut nodes)?;
    let Op::Gather { axis } = g.nodes[gather].op else {
        return None;
    };
    nodes.insert(gather);
    let classes_t = first_input(gather)?;
    let ct = &g.tensors[classes_t];
    // One list of classes along the gather axis (`[K]`, or `[1, K]` from
    // skl2onnx's ArrayFeatureExtractor).
    let numel: usize = ct.shape.iter().product();
    if ct.shape.get(usize::from(axis)) != Some(&numel)
        || matches!(ct.dtype, DType::F32 | DType::F64 | DType::F16)
    {
        return None;
    }
    let classes = ct.ints()?;
    let argmax = skip(
        g.nodes[gather].inputs.get(1).copied().flatten()?,
        &mut nodes,
    )?;
    let Op::ArgMax {
        axis,
        select_last: false,
        min: false,
    } = g.nodes[argmax].op
    else {
        return None;
    };
    nodes.insert(argmax);
    let probs = first_input(argmax)?;
    let ps = &g.tensors[probs].shape;
    let numel: usize = ps.iter().product();
    if g.tensors[probs].dtype != DType::F32
        || numel != classes.len()
        || usize::from(axis) + 1 != ps.len()
    {
        return None;
    }
    Some(Classifier {
        label,
        probs,
        classes,
        nodes,
    })
}

struct Writer<'g> {
    g: &'g Graph,
    ops: Vec<Operation>,
    /// MIL variable of each IR tensor lowered so far.
    vars: HashMap<TensorId, String>,
    taken: HashSet<String>,
    blobs: Blobs,
    storage: WeightStorage,
    weight_bytes: usize,
}

impl<'g> Writer<'g> {
    /// A fresh variable name from `hint`.
    fn fresh(&mut self, hint: &str) -> String {
        let base = ident(hint);
        let mut name = base.clone();
        let mut k = 1;
        while !self.taken.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
    }

    fn push_op(
        &mut self,
        ty: &str,
        inputs: Vec<(&str, Vec<String>)>,
        outputs: Vec<(String, ValueType)>,
        attributes: Vec<(&str, Value)>,
    ) {
        let mut attrs: BTreeMap<String, Value> = attributes
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        if let Some((first, _)) = outputs.first() {
            attrs.insert("name".into(), string_value(first));
        }
        self.ops.push(Operation {
            r#type: ty.into(),
            inputs: inputs
                .into_iter()
                .map(|(k, names)| {
                    let arguments = names
                        .into_iter()
                        .map(|n| Binding {
                            name: Some(n),
                            value: None,
                        })
                        .collect();
                    (k.to_string(), Argument { arguments })
                })
                .collect(),
            outputs: outputs
                .into_iter()
                .map(|(name, t)| proto::NamedValueType {
                    name,
                    r#type: Some(t),
                })
                .collect(),
            attributes: attrs,
        });
    }

    /// The `val` of a constant: in the blob file from ten values on (the
    /// limit coremltools also uses), else immediate.
    fn stored(&mut self, data: Data, shape: &[usize]) -> Value {
        let numel: usize = shape.iter().product();
        let blob = match &data {
            Data::F32(v) if numel >= 10 => Some((BLOB_F32, bytemuck::cast_slice(v).to_vec())),
            Data::F16(b) if numel >= 10 => Some((BLOB_F16, b.clone())),
            Data::I8(b) if numel >= 10 => Some((BLOB_I8, b.clone())),
            _ => None,
        };
        match blob {
            Some((code, bytes)) => {
                let dt = data.dtype();
                let offset = self.blobs.push(code, &bytes);
                Value {
                    r#type: Some(tensor_type(dt, shape)),
                    immediate_value: None,
                    blob_file_value: Some(proto::BlobFileValue {
                        file_name: "@model_path/weights/weight.bin".into(),
                        offset,
                    }),
                }
            }
            None => immediate(data, shape),
        }
    }

    /// A `const` op of `data`; returns its variable.
    fn constant(&mut self, hint: &str, data: Data, shape: &[usize]) -> String {
        let name = self.fresh(hint);
        let t = tensor_type(data.dtype(), shape);
        let val = self.stored(data, shape);
        self.push_op("const", vec![], vec![(name.clone(), t)], vec![("val", val)]);
        name
    }

    fn int(&mut self, hint: &str, v: i32) -> String {
        self.constant(hint, Data::I32(vec![v]), &[])
    }

    fn ints(&mut self, hint: &str, v: &[i32]) -> String {
        self.constant(hint, Data::I32(v.to_vec()), &[v.len()])
    }

    fn float(&mut self, hint: &str, v: f32) -> String {
        self.constant(hint, Data::F32(vec![v]), &[])
    }

    fn string(&mut self, hint: &str, s: &str) -> String {
        self.constant(hint, Data::Str(s.into()), &[])
    }

    fn boolean(&mut self, hint: &str, b: bool) -> String {
        self.constant(hint, Data::Bool(b), &[])
    }

    /// A layer's float weights of `shape` (output channels first), stored
    /// as `self.storage` says; returns a float32 variable.
    fn weight(&mut self, hint: &str, shape: &[usize], w: &[f32]) -> String {
        match self.storage {
            WeightStorage::F32 => {
                self.weight_bytes += w.len() * 4;
                self.constant(hint, Data::F32(w.to_vec()), shape)
            }
            WeightStorage::F16 => {
                self.weight_bytes += w.len() * 2;
                let bytes: Vec<u8> = w
                    .iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                    .collect();
                self.widened(hint, bytes, shape)
            }
            // Kiln's weight-only int8 leaves weights under 16 values float.
            WeightStorage::Int8 if w.len() < 16 => {
                self.weight_bytes += w.len() * 4;
                self.constant(hint, Data::F32(w.to_vec()), shape)
            }
            WeightStorage::Int8 => {
                let rows = shape.first().copied().unwrap_or(1);
                let (q, scales) = crate::quantize::quantize_rows(w, rows);
                let bytes = q.iter().map(|&v| v as u8).collect();
                self.int8_weight(hint, shape, bytes, scales)
            }
        }
    }

    /// Symmetric int8 weights `q` of `shape` with a scale per output
    /// channel (axis 0; or one), widened by `constexpr_affine_dequantize`.
    fn int8_weight(&mut self, hint: &str, shape: &[usize], q: Vec<u8>, scales: Vec<f32>) -> String {
        self.weight_bytes += q.len() + 4 * scales.len();
        let name = self.fresh(hint);
        let data = self.stored(Data::I8(q), shape);
        let n = scales.len();
        let scale = if n == 1 {
            immediate(Data::F32(scales), &[])
        } else {
            immediate(Data::F32(scales), &[n])
        };
        self.push_op(
            "constexpr_affine_dequantize",
            vec![],
            vec![(name.clone(), tensor_type(dtype::FLOAT32, shape))],
            vec![
                ("quantized_data", data),
                ("zero_point", immediate(Data::I8(vec![0]), &[])),
                ("scale", scale),
                ("axis", immediate(Data::I32(vec![0]), &[])),
            ],
        );
        name
    }

    /// The one scale and zero point of int8 tensor `t` (its real value is
    /// `scale · (q − zero_point)`).
    fn real(&self, t: TensorId) -> Option<(f32, i64)> {
        let q = self.g.quant.get(&t)?;
        match (&q.scales[..], &q.zero_points[..]) {
            ([s], [z]) => Some((*s, *z)),
            ([s], []) => Some((*s, 0)),
            _ => None,
        }
    }

    /// `x` clamped into `(out, ty)` at the real values of int8 output
    /// `out_t`'s `[lo, hi]` (a fused activation and int8's saturation).
    fn clamp_real(
        &mut self,
        node: &Node,
        out_t: TensorId,
        (lo, hi): (i32, i32),
        x: String,
        (out, ty): (String, ValueType),
    ) -> Result<()> {
        let (s, z) = self
            .real(out_t)
            .ok_or_else(|| cannot(node, "the output's int8 quantization is unknown"))?;
        let act = Unary::Clip {
            min: s * (lo as f32 - z as f32),
            max: s * (hi as f32 - z as f32),
        };
        self.activation(node, &act, x, out, ty)
    }

    /// An int8 convolution (`window` set) or fully connected layer from an
    /// int8 model, in float: its int8 weights widened per channel, its
    /// int32 bias scaled to real values, the clamp at real values.
    fn int8_layer(
        &mut self,
        node: &Node,
        conv: Option<(&kiln_format::Window, u32)>,
        clamp: (i32, i32),
    ) -> Result<()> {
        let g = self.g;
        let (x, w) = (
            node.inputs.first().copied().flatten(),
            node.inputs.get(1).copied().flatten(),
        );
        let (Some(x), Some(w)) = (x, w) else {
            return Err(cannot(node, "input or weights missing"));
        };
        let wt = &g.tensors[w];
        let (Some(data), Some(wq), Some((sx, _))) = (&wt.data, g.quant.get(&w), self.real(x))
        else {
            return Err(cannot(
                node,
                "int8 weights and input without known quantization",
            ));
        };
        let m = wt.shape.first().copied().unwrap_or(0);
        if wq.zero_points.iter().any(|&z| z != 0) || !(wq.scales.len() == 1 || wq.scales.len() == m)
        {
            return Err(cannot(
                node,
                "weights must be symmetric, per tensor or per output channel",
            ));
        }
        let sw: Vec<f32> = (0..m)
            .map(|c| wq.scales[if wq.scales.len() == 1 { 0 } else { c }])
            .collect();
        let bias: Vec<f32> = match node.inputs.get(2).copied().flatten() {
            Some(b) => {
                let v = g.tensors[b]
                    .ints()
                    .filter(|v| v.len() == m)
                    .ok_or_else(|| {
                        cannot(node, "the bias must be an int32 constant, one per channel")
                    })?;
                v.iter()
                    .zip(&sw)
                    .map(|(&b, &s)| b as f32 * sx * s)
                    .collect()
            }
            None => vec![0.0; m],
        };
        let shape = wt.shape.clone();
        let hint = wt.name.clone();
        let xv = self.var(x, node)?;
        let wv = self.int8_weight(
            &format!("{hint}_weight"),
            &shape,
            data.to_vec(),
            wq.scales.clone(),
        );
        let bv = self.constant(&format!("{hint}_bias"), Data::F32(bias), &[m]);
        let (out_t, out, ty) = self.define(node)?;
        let pre = self.fresh(&format!("{out}_pre"));
        match conv {
            Some((window, group)) => {
                let inputs = self.conv_inputs(window, group, [xv, wv, bv]);
                self.push_op("conv", inputs, vec![(pre.clone(), ty.clone())], vec![]);
            }
            None => self.push_op(
                "linear",
                vec![("x", vec![xv]), ("weight", vec![wv]), ("bias", vec![bv])],
                vec![(pre.clone(), ty.clone())],
                vec![],
            ),
        }
        self.clamp_real(node, out_t, clamp, pre, (out, ty))
    }

    /// A layer's bias: float16 under [`WeightStorage::F16`] from 16 values
    /// on (the rule of Kiln's own `--quantize f16`), else float32.
    fn bias(&mut self, hint: &str, b: Vec<f32>) -> String {
        let n = b.len();
        if self.storage != WeightStorage::F16 || n < 16 {
            return self.constant(hint, Data::F32(b), &[n]);
        }
        let bytes: Vec<u8> = b
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        self.widened(hint, bytes, &[n])
    }

    /// A `constexpr_cast` of float16 `bytes` of `shape` to float32.
    fn widened(&mut self, hint: &str, bytes: Vec<u8>, shape: &[usize]) -> String {
        let name = self.fresh(hint);
        let source = self.stored(Data::F16(bytes), shape);
        self.push_op(
            "constexpr_cast",
            vec![],
            vec![(name.clone(), tensor_type(dtype::FLOAT32, shape))],
            vec![
                ("source_val", source),
                ("output_dtype", string_value("fp32")),
            ],
        );
        name
    }

    /// The MIL type of IR tensor `t`.
    fn type_of(&self, t: TensorId, node: &Node) -> Result<ValueType> {
        let tt = &self.g.tensors[t];
        let dt = match tt.dtype {
            DType::F32 => dtype::FLOAT32,
            DType::I32 => dtype::INT32,
            // An int8 model's tensors hold their real values here.
            DType::I8 if self.real(t).is_some() => dtype::FLOAT32,
            other => {
                return Err(cannot(
                    node,
                    &format!(
                        "tensor '{}' is {other:?}; Core ML computes in float32 and int32 here",
                        tt.name
                    ),
                ));
            }
        };
        Ok(tensor_type(dt, &tt.shape))
    }

    /// The variable of IR tensor `t`: lowered already, or a constant now.
    fn var(&mut self, t: TensorId, node: &Node) -> Result<String> {
        if let Some(v) = self.vars.get(&t) {
            return Ok(v.clone());
        }
        let tt = &self.g.tensors[t];
        let shape = tt.shape.clone();
        let hint = tt.name.clone();
        let data = match (tt.dtype, tt.f32s(), tt.ints()) {
            (DType::F32, Some(v), _) => Data::F32(v),
            (DType::I32 | DType::I64, _, Some(v)) => {
                let Ok(v) = v.iter().map(|&x| i32::try_from(x)).collect() else {
                    return Err(cannot(
                        node,
                        &format!("constant '{hint}' does not fit int32"),
                    ));
                };
                Data::I32(v)
            }
            _ => {
                return Err(cannot(
                    node,
                    &format!(
                        "input '{hint}' is neither computed before this node nor a float32 or integer constant"
                    ),
                ));
            }
        };
        let v = self.constant(&hint, data, &shape);
        self.vars.insert(t, v.clone());
        Ok(v)
    }

    /// Output variable of `node` (its first output), named after it.
    fn define(&mut self, node: &Node) -> Result<(TensorId, String, ValueType)> {
        let out = node
            .outputs
            .first()
            .copied()
            .flatten()
            .ok_or_else(|| cannot(node, "no output"))?;
        let t = self.type_of(out, node)?;
        let name = self.fresh(&self.g.tensors[out].name.clone());
        self.vars.insert(out, name.clone());
        Ok((out, name, t))
    }

    fn input(&mut self, node: &Node, k: usize) -> Result<String> {
        let t = node
            .inputs
            .get(k)
            .copied()
            .flatten()
            .ok_or_else(|| cannot(node, &format!("input {k} is missing")))?;
        self.var(t, node)
    }

    /// `act` applied to `x` into `(out, ty)`; `None`: `x` is the result.
    fn activation(
        &mut self,
        node: &Node,
        act: &Unary,
        x: String,
        out: String,
        ty: ValueType,
    ) -> Result<()> {
        let op = match act {
            Unary::Identity => "identity",
            Unary::Relu => "relu",
            Unary::Sigmoid => "sigmoid",
            Unary::Tanh => "tanh",
            Unary::Exp => "exp",
            Unary::Log => "log",
            Unary::Abs => "abs",
            Unary::Sqrt => "sqrt",
            Unary::Floor => "floor",
            Unary::Ceil => "ceil",
            Unary::Erf => "erf",
            Unary::Sin => "sin",
            Unary::Cos => "cos",
            Unary::Softsign => "softsign",
            Unary::Softplus => "softplus",
            Unary::Clip { min, max } => {
                let (a, b) = (self.float("alpha", *min), self.float("beta", *max));
                self.push_op(
                    "clip",
                    vec![("x", vec![x]), ("alpha", vec![a]), ("beta", vec![b])],
                    vec![(out, ty)],
                    vec![],
                );
                return Ok(());
            }
            Unary::LeakyRelu { alpha } => {
                let a = self.float("alpha", *alpha);
                self.push_op(
                    "leaky_relu",
                    vec![("x", vec![x]), ("alpha", vec![a])],
                    vec![(out, ty)],
                    vec![],
                );
                return Ok(());
            }
            Unary::Neg => {
                let m = self.float("minus_one", -1.0);
                self.push_op(
                    "mul",
                    vec![("x", vec![x]), ("y", vec![m])],
                    vec![(out, ty)],
                    vec![],
                );
                return Ok(());
            }
            other => return Err(cannot(node, &format!("no Core ML op for {other:?}"))),
        };
        self.push_op(op, vec![("x", vec![x])], vec![(out, ty)], vec![]);
        Ok(())
    }

    /// Runs `emit` into a fresh variable when `act` follows, then the
    /// activation into the node's output.
    fn with_act(
        &mut self,
        node: &Node,
        act: &Unary,
        emit: impl FnOnce(&mut Self, String, ValueType),
    ) -> Result<()> {
        let (_, out, ty) = self.define(node)?;
        if *act == Unary::Identity {
            emit(self, out, ty);
            return Ok(());
        }
        let pre = self.fresh(&format!("{out}_pre"));
        emit(self, pre.clone(), ty.clone());
        self.activation(node, act, pre, out, ty)
    }

    /// A fully connected layer: `x · W (+ b)` with constant 2-D `W`
    /// (`trans_b`: stored `[units, depth]`), scaled by `alpha`, bias by
    /// `beta`.
    fn linear(
        &mut self,
        node: &Node,
        trans_b: bool,
        (alpha, beta): (f32, f32),
        act: &Unary,
    ) -> Result<()> {
        let w = node.inputs.get(1).copied().flatten();
        let wt = w.map(|w| &self.g.tensors[w]);
        let x = node.inputs.first().copied().flatten();
        let xr = x.map_or(0, |x| self.g.tensors[x].shape.len());
        let (Some(wd), Some([a, b]), 1..=3) = (
            wt.and_then(|t| t.f32s()),
            wt.map(|t| &t.shape[..])
                .and_then(|s| <&[usize; 2]>::try_from(s).ok()),
            xr,
        ) else {
            return Err(cannot(
                node,
                "only inputs of rank 1 to 3 times constant 2-D weights map to linear",
            ));
        };
        let (units, depth) = if trans_b { (*a, *b) } else { (*b, *a) };
        let weights: Vec<f32> = (0..units)
            .flat_map(|u| (0..depth).map(move |d| (u, d)))
            .map(|(u, d)| {
                alpha
                    * if trans_b {
                        wd[u * depth + d]
                    } else {
                        wd[d * units + u]
                    }
            })
            .collect();
        let bias = match node.inputs.get(2).copied().flatten() {
            Some(bt) => {
                let bv = self.g.tensors[bt]
                    .f32s()
                    .filter(|v| v.len() == units)
                    .ok_or_else(|| {
                        cannot(node, "the bias must be a constant of one value per unit")
                    })?;
                bv.iter().map(|v| beta * v).collect()
            }
            None => vec![0.0; units],
        };
        let xv = self.input(node, 0)?;
        let hint = self.g.tensors[w.unwrap_or_default()].name.clone();
        let wv = self.weight(&format!("{hint}_weight"), &[units, depth], &weights);
        let bv = self.bias(&format!("{hint}_bias"), bias);
        self.with_act(node, act, |s, out, ty| {
            s.push_op(
                "linear",
                vec![("x", vec![xv]), ("weight", vec![wv]), ("bias", vec![bv])],
                vec![(out, ty)],
                vec![],
            );
        })
    }

    fn conv(
        &mut self,
        node: &Node,
        window: &kiln_format::Window,
        group: u32,
        act: &Unary,
    ) -> Result<()> {
        let x = node.inputs.first().copied().flatten();
        let w = node.inputs.get(1).copied().flatten();
        let (Some(x), Some(w)) = (x, w) else {
            return Err(cannot(node, "input or weights missing"));
        };
        let wt = &self.g.tensors[w];
        let (Some(wd), 4, 4) = (wt.f32s(), wt.shape.len(), self.g.tensors[x].shape.len()) else {
            return Err(cannot(
                node,
                "only 2-D convolutions with constant float weights",
            ));
        };
        let wshape = wt.shape.clone();
        let m = wshape[0];
        let bias = match node.inputs.get(2).copied().flatten() {
            Some(bt) => self.g.tensors[bt]
                .f32s()
                .filter(|v| v.len() == m)
                .ok_or_else(|| {
                    cannot(
                        node,
                        "the bias must be a constant of one value per output channel",
                    )
                })?,
            None => vec![0.0; m],
        };
        let hint = wt.name.clone();
        let xv = self.var(x, node)?;
        let wv = self.weight(&format!("{hint}_weight"), &wshape, &wd);
        let bv = self.bias(&format!("{hint}_bias"), bias);
        let inputs = self.conv_inputs(window, group, [xv, wv, bv]);
        self.with_act(node, act, |s, out, ty| {
            s.push_op("conv", inputs, vec![(out, ty)], vec![]);
        })
    }

    /// A `conv` op's inputs: `x`, `weight`, `bias` and `window`'s
    /// parameters as constants (explicit padding).
    fn conv_inputs(
        &mut self,
        window: &kiln_format::Window,
        group: u32,
        [x, weight, bias]: [String; 3],
    ) -> Vec<(&'static str, Vec<String>)> {
        let strides = self.ints("strides", &window.strides.map(|v| v as i32));
        let dilations = self.ints("dilations", &window.dilations.map(|v| v as i32));
        let pad = self.pads(window);
        let pad_type = self.string("pad_type", "custom");
        let groups = self.int("groups", group as i32);
        vec![
            ("x", vec![x]),
            ("weight", vec![weight]),
            ("bias", vec![bias]),
            ("strides", vec![strides]),
            ("pad_type", vec![pad_type]),
            ("pad", vec![pad]),
            ("dilations", vec![dilations]),
            ("groups", vec![groups]),
        ]
    }

    /// MIL's `pad` of a window: `[top, bottom, left, right]`.
    fn pads(&mut self, w: &kiln_format::Window) -> String {
        let [t, l, b, r] = w.pads.map(|v| v as i32);
        self.ints("pad", &[t, b, l, r])
    }

    fn pool(
        &mut self,
        node: &Node,
        window: &kiln_format::Window,
        max: bool,
        include_pad: bool,
    ) -> Result<()> {
        if window.dilations != [1, 1]
            || node
                .inputs
                .first()
                .copied()
                .flatten()
                .map(|x| self.g.tensors[x].shape.len())
                != Some(4)
        {
            return Err(cannot(node, "only undilated 2-D pools"));
        }
        let xv = self.input(node, 0)?;
        let kernel = self.ints("kernel_sizes", &window.kernel.map(|v| v as i32));
        let strides = self.ints("strides", &window.strides.map(|v| v as i32));
        let pad = self.pads(window);
        let pad_type = self.string("pad_type", "custom");
        let ceil = self.boolean("ceil_mode", false);
        let mut inputs = vec![
            ("x", vec![xv]),
            ("kernel_sizes", vec![kernel]),
            ("strides", vec![strides]),
            ("pad_type", vec![pad_type]),
            ("pad", vec![pad]),
            ("ceil_mode", vec![ceil]),
        ];
        if !max {
            let exclude = self.boolean("exclude_padding_from_average", !include_pad);
            inputs.push(("exclude_padding_from_average", vec![exclude]));
        }
        let (_, out, ty) = self.define(node)?;
        let op = if max { "max_pool" } else { "avg_pool" };
        self.push_op(op, inputs, vec![(out, ty)], vec![]);
        Ok(())
    }

    fn node(&mut self, n: usize) -> Result<()> {
        let g = self.g;
        let node = &g.nodes[n];
        match &node.op {
            Op::Gemm {
                trans_a: false,
                trans_b,
                alpha,
                beta,
                act,
            } => self.linear(node, *trans_b, (*alpha, *beta), act),
            Op::MatMul { act }
                if node
                    .inputs
                    .get(1)
                    .copied()
                    .flatten()
                    .is_some_and(|w| g.tensors[w].is_const()) =>
            {
                self.linear(node, false, (1.0, 1.0), act)
            }
            Op::MatMul { act } => {
                let (a, b) = (self.input(node, 0)?, self.input(node, 1)?);
                if node.inputs.get(2).copied().flatten().is_some() {
                    return Err(cannot(node, "a MatMul of two computed tensors with a bias"));
                }
                let (tx, ty_) = (
                    self.boolean("transpose_x", false),
                    self.boolean("transpose_y", false),
                );
                self.with_act(node, act, |s, out, ty| {
                    s.push_op(
                        "matmul",
                        vec![
                            ("x", vec![a]),
                            ("y", vec![b]),
                            ("transpose_x", vec![tx]),
                            ("transpose_y", vec![ty_]),
                        ],
                        vec![(out, ty)],
                        vec![],
                    );
                })
            }
            Op::Conv { window, group, act } => self.conv(node, window, *group, act),
            Op::MaxPool { window } => self.pool(node, window, true, false),
            Op::AveragePool {
                window,
                count_include_pad,
            } => self.pool(node, window, false, *count_include_pad),
            Op::GlobalAveragePool | Op::GlobalMaxPool => {
                let x = self.input(node, 0)?;
                let rank = node.inputs[0].map_or(0, |t| g.tensors[t].shape.len());
                let axes: Vec<i32> = (2..rank as i32).collect();
                let axes = self.ints("axes", &axes);
                let keep = self.boolean("keep_dims", true);
                let (_, out, ty) = self.define(node)?;
                let op = if node.op == Op::GlobalAveragePool {
                    "reduce_mean"
                } else {
                    "reduce_max"
                };
                self.push_op(
                    op,
                    vec![
                        ("x", vec![x]),
                        ("axes", vec![axes]),
                        ("keep_dims", vec![keep]),
                    ],
                    vec![(out, ty)],
                    vec![],
                );
                Ok(())
            }
            Op::Unary(u) => {
                let x = self.input(node, 0)?;
                let (_, out, ty) = self.define(node)?;
                self.activation(node, u, x, out, ty)
            }
            Op::Softmax {
                axis,
                log,
                coerce_2d,
            } => {
                let rank = node.inputs[0].map_or(0, |t| g.tensors[t].shape.len());
                if *coerce_2d && usize::from(*axis) + 1 != rank {
                    return Err(cannot(
                        node,
                        "a softmax over all axes from one on (opset < 13) that is not over the last axis",
                    ));
                }
                let x = self.input(node, 0)?;
                let (_, out, ty) = self.define(node)?;
                if *log {
                    // log_softmax(x) = x - log(sum(exp(x))) over the axis.
                    let axes = self.ints("axes", &[i32::from(*axis)]);
                    let keep = self.boolean("keep_dims", true);
                    let lse = self.fresh(&format!("{out}_lse"));
                    let mut shape = g.tensors[node.inputs[0].unwrap_or_default()].shape.clone();
                    if let Some(d) = shape.get_mut(usize::from(*axis)) {
                        *d = 1;
                    }
                    self.push_op(
                        "reduce_log_sum_exp",
                        vec![
                            ("x", vec![x.clone()]),
                            ("axes", vec![axes]),
                            ("keep_dims", vec![keep]),
                        ],
                        vec![(lse.clone(), tensor_type(dtype::FLOAT32, &shape))],
                        vec![],
                    );
                    self.push_op(
                        "sub",
                        vec![("x", vec![x]), ("y", vec![lse])],
                        vec![(out, ty)],
                        vec![],
                    );
                } else {
                    let axis = self.int("axis", i32::from(*axis));
                    self.push_op(
                        "softmax",
                        vec![("x", vec![x]), ("axis", vec![axis])],
                        vec![(out, ty)],
                        vec![],
                    );
                }
                Ok(())
            }
            Op::Reshape => {
                let x = self.input(node, 0)?;
                let out_t = node.outputs.first().copied().flatten().unwrap_or_default();
                let shape: Vec<i32> = g.tensors[out_t].shape.iter().map(|&d| d as i32).collect();
                let shape = self.ints("shape", &shape);
                let (_, out, ty) = self.define(node)?;
                self.push_op(
                    "reshape",
                    vec![("x", vec![x]), ("shape", vec![shape])],
                    vec![(out, ty)],
                    vec![],
                );
                Ok(())
            }
            Op::Transpose { perm } => {
                let rank = node.inputs[0].map_or(0, |t| g.tensors[t].shape.len());
                let x = self.input(node, 0)?;
                let perm: Vec<i32> = perm[..rank.min(perm.len())]
                    .iter()
                    .map(|&p| i32::from(p))
                    .collect();
                let perm = self.ints("perm", &perm);
                let (_, out, ty) = self.define(node)?;
                self.push_op(
                    "transpose",
                    vec![("x", vec![x]), ("perm", vec![perm])],
                    vec![(out, ty)],
                    vec![],
                );
                Ok(())
            }
            Op::Concat { axis } => {
                let values = (0..node.inputs.len())
                    .map(|k| self.input(node, k))
                    .collect::<Result<Vec<_>>>()?;
                let axis = self.int("axis", i32::from(*axis));
                let interleave = self.boolean("interleave", false);
                let (_, out, ty) = self.define(node)?;
                self.push_op(
                    "concat",
                    vec![
                        ("values", values),
                        ("axis", vec![axis]),
                        ("interleave", vec![interleave]),
                    ],
                    vec![(out, ty)],
                    vec![],
                );
                Ok(())
            }
            Op::Binary(b) => {
                let op = match b {
                    Binary::Add => "add",
                    Binary::Sub => "sub",
                    Binary::Mul => "mul",
                    Binary::Div => "real_div",
                    Binary::Pow => "pow",
                    Binary::Max => "maximum",
                    Binary::Min => "minimum",
                    other => return Err(cannot(node, &format!("no Core ML op for {other:?}"))),
                };
                let (x, y) = (self.input(node, 0)?, self.input(node, 1)?);
                let (_, out, ty) = self.define(node)?;
                self.push_op(
                    op,
                    vec![("x", vec![x]), ("y", vec![y])],
                    vec![(out, ty)],
                    vec![],
                );
                Ok(())
            }
            Op::QConv {
                window,
                group,
                act_min,
                act_max,
                ..
            } => self.int8_layer(node, Some((window, *group)), (*act_min, *act_max)),
            Op::QFullyConnected {
                act_min, act_max, ..
            } => self.int8_layer(node, None, (*act_min, *act_max)),
            Op::QAvgPool {
                window,
                act_min,
                act_max,
            } => {
                let out_t = node.outputs.first().copied().flatten().unwrap_or_default();
                let plain = Node {
                    op: Op::AveragePool {
                        window: *window,
                        count_include_pad: false,
                    },
                    ..node.clone()
                };
                self.pool(&plain, window, false, false)?;
                // Then the clamp into the node's own output.
                let pooled = self.vars.remove(&out_t).unwrap_or_default();
                let (_, out, ty) = self.define(node)?;
                self.clamp_real(node, out_t, (*act_min, *act_max), pooled, (out, ty))
            }
            Op::QAdd {
                act_min, act_max, ..
            } => {
                let (x, y) = (self.input(node, 0)?, self.input(node, 1)?);
                let (out_t, out, ty) = self.define(node)?;
                let pre = self.fresh(&format!("{out}_pre"));
                self.push_op(
                    "add",
                    vec![("x", vec![x]), ("y", vec![y])],
                    vec![(pre.clone(), ty.clone())],
                    vec![],
                );
                self.clamp_real(node, out_t, (*act_min, *act_max), pre, (out, ty))
            }
            Op::QSoftmax { .. } => {
                // The table is e^(-input_scale·beta·d): beta from its second
                // entry.
                let x_t = node.inputs.first().copied().flatten().unwrap_or_default();
                let table = node
                    .inputs
                    .get(1)
                    .copied()
                    .flatten()
                    .and_then(|t| g.tensors[t].f32s());
                let (Some((sx, _)), Some(table)) = (self.real(x_t), table) else {
                    return Err(cannot(
                        node,
                        "the softmax's input quantization or table is unknown",
                    ));
                };
                let beta = table.get(1).map_or(1.0, |&e| -e.ln() / sx);
                let x = self.input(node, 0)?;
                let (_, out, ty) = self.define(node)?;
                let scaled = if (beta - 1.0).abs() < 1e-3 {
                    x
                } else {
                    let b = self.float("beta", beta);
                    let v = self.fresh(&format!("{out}_scaled"));
                    self.push_op(
                        "mul",
                        vec![("x", vec![x]), ("y", vec![b])],
                        vec![(v.clone(), ty.clone())],
                        vec![],
                    );
                    v
                };
                let rank = g.tensors[x_t].shape.len() as i32;
                let axis = self.int("axis", rank - 1);
                self.push_op(
                    "softmax",
                    vec![("x", vec![scaled]), ("axis", vec![axis])],
                    vec![(out, ty)],
                    vec![],
                );
                Ok(())
            }
            Op::TreeEnsemble { .. } => Err(cannot(
                node,
                "an ML Program has no tree ensemble op (keep the .kiln artifact, or serve it with kiln serve)",
            )),
            other if other.name().starts_with('Q') => Err(cannot(
                node,
                &format!("{} has no float lowering for Core ML yet", other.name()),
            )),
            other => Err(cannot(
                node,
                &format!("{} is not exported yet", other.name()),
            )),
        }
    }
}

/// An I/O feature of `(dtype, shape)`.
fn feature(name: &str, source: &str, ty: proto::FeatureType) -> proto::FeatureDescription {
    proto::FeatureDescription {
        name: name.into(),
        short_description: source.into(),
        r#type: Some(ty),
    }
}

fn array_feature(dt: DType, shape: &[usize]) -> proto::FeatureType {
    proto::FeatureType {
        multi_array_type: Some(proto::ArrayFeatureType {
            shape: shape.iter().map(|&d| d as i64).collect(),
            data_type: if dt == DType::I32 {
                proto::ARRAY_INT32
            } else {
                proto::ARRAY_FLOAT32
            },
        }),
        ..Default::default()
    }
}

/// The package of `g`, whose graph inputs and outputs are named
/// `input_names` and `output_names` in the source.
pub fn export(
    g: &Graph,
    input_names: &[String],
    output_names: &[String],
    storage: WeightStorage,
    meta: &Meta,
) -> Result<Package> {
    let mut w = Writer {
        g,
        ops: vec![],
        vars: HashMap::new(),
        taken: HashSet::new(),
        blobs: Blobs::new(),
        storage,
        weight_bytes: 0,
    };
    let source_name = |names: &[String], k: usize, t: TensorId| {
        names
            .get(k)
            .cloned()
            .unwrap_or_else(|| g.tensors[t].name.clone())
    };
    let mut fn_inputs = vec![];
    let mut described_inputs = vec![];
    // An int8 model's I/O: its real values, `scale · (q − zero_point)`.
    let real_io = |t: TensorId| match (g.tensors[t].dtype, g.quant.get(&t)) {
        (DType::I8, Some(q)) if q.scales.len() == 1 => Some(format!(
            "int8 in the source (scale {}, zero point {}); here its real value scale · (q − zero point)",
            q.scales[0],
            q.zero_points.first().copied().unwrap_or(0)
        )),
        _ => None,
    };
    for (k, &t) in g.inputs.iter().enumerate() {
        let tt = &g.tensors[t];
        let int8 = real_io(t);
        if tt.dtype != DType::F32 && int8.is_none() {
            return Err(CompileError::Input {
                input: tt.name.clone(),
                detail: format!(
                    "is {:?}; Core ML computes in float: export the float model (with --quantize weights for 8-bit weights)",
                    tt.dtype
                ),
            });
        }
        let source = source_name(input_names, k, t);
        let name = w.fresh(&source);
        w.vars.insert(t, name.clone());
        fn_inputs.push(proto::NamedValueType {
            name: name.clone(),
            r#type: Some(tensor_type(dtype::FLOAT32, &tt.shape)),
        });
        described_inputs.push(feature(
            &name,
            &format!(
                "{source}: float32 {:?}{}",
                tt.shape,
                int8.map(|d| format!(", {d}")).unwrap_or_default()
            ),
            array_feature(DType::F32, &tt.shape),
        ));
    }
    let heads: Vec<Classifier> = g.outputs.iter().filter_map(|&o| classifier(g, o)).collect();
    if heads.len() > 1 {
        return Err(CompileError::Invalid(
            "the model has more than one classifier output; a Core ML model has one predicted feature".into(),
        ));
    }
    // The classifier's outputs keep their source names: taken before the
    // layers name their variables.
    let head_names: Vec<(String, String)> = heads
        .iter()
        .map(|h| {
            let k = g.outputs.iter().position(|&o| o == h.label).unwrap_or(0);
            let source = source_name(output_names, k, h.label);
            let probs = g
                .outputs
                .iter()
                .position(|&o| o == h.probs)
                .map(|k| source_name(output_names, k, h.probs));
            let dict = probs.unwrap_or(format!("{source}_probs"));
            (w.fresh(&source), w.fresh(&dict))
        })
        .collect();
    let skipped: HashSet<usize> = heads.iter().flat_map(|h| h.nodes.iter().copied()).collect();
    for n in 0..g.nodes.len() {
        if !skipped.contains(&n) {
            w.node(n)?;
        }
    }
    let mut block_outputs = vec![];
    let mut described_outputs = vec![];
    let mut description = proto::ModelDescription::default();
    for (k, &t) in g.outputs.iter().enumerate() {
        let source = source_name(output_names, k, t);
        if let Some(h) = heads.iter().find(|h| h.label == t) {
            // `classify` names its outputs: the label, then the
            // probability dictionary (the source's probability output's
            // name where it has one).
            let (label, dict) = head_names[0].clone();
            let probs_source = g
                .outputs
                .iter()
                .position(|&o| o == h.probs)
                .map(|k| source_name(output_names, k, h.probs));
            let p = w.vars.get(&h.probs).cloned().ok_or_else(|| {
                CompileError::Invalid("the classifier's scores are not computed".into())
            })?;
            let classes = proto::ListValue {
                values: h
                    .classes
                    .iter()
                    .map(|&c| immediate(Data::I64(vec![c]), &[]))
                    .collect(),
            };
            let scalar_i64 = tensor_type(dtype::INT64, &[]);
            let list_type = ValueType {
                list_type: Some(Box::new(proto::ListType {
                    r#type: Some(scalar_i64.clone()),
                    length: Some(proto::Dimension {
                        constant: Some(proto::ConstantDimension {
                            size: h.classes.len() as u64,
                        }),
                    }),
                })),
                ..Default::default()
            };
            let dict_type = ValueType {
                dictionary_type: Some(Box::new(proto::DictionaryType {
                    key_type: Some(scalar_i64.clone()),
                    value_type: Some(tensor_type(dtype::FLOAT64, &[])),
                })),
                ..Default::default()
            };
            let mut op = Operation {
                r#type: "classify".into(),
                ..Default::default()
            };
            op.inputs.insert(
                "probabilities".into(),
                Argument {
                    arguments: vec![Binding {
                        name: Some(p),
                        value: None,
                    }],
                },
            );
            op.inputs.insert(
                "classes".into(),
                Argument {
                    arguments: vec![Binding {
                        name: None,
                        value: Some(Value {
                            r#type: Some(list_type),
                            immediate_value: Some(proto::ImmediateValue {
                                tensor: None,
                                list: Some(classes),
                            }),
                            blob_file_value: None,
                        }),
                    }],
                },
            );
            op.outputs = vec![
                proto::NamedValueType {
                    name: label.clone(),
                    r#type: Some(scalar_i64),
                },
                proto::NamedValueType {
                    name: dict.clone(),
                    r#type: Some(dict_type),
                },
            ];
            op.attributes.insert("name".into(), string_value(&label));
            w.ops.push(op);
            block_outputs.push(label.clone());
            block_outputs.push(dict.clone());
            described_outputs.push(feature(
                &label,
                &format!("{source}: the predicted class"),
                proto::FeatureType {
                    int64_type: Some(proto::Empty {}),
                    ..Default::default()
                },
            ));
            described_outputs.push(feature(
                &dict,
                &format!(
                    "{}: probability of each class",
                    probs_source.as_deref().unwrap_or("scores")
                ),
                proto::FeatureType {
                    dictionary_type: Some(proto::DictionaryFeatureType {
                        int64_key_type: Some(proto::Empty {}),
                    }),
                    ..Default::default()
                },
            ));
            description.predicted_feature_name = label;
            description.predicted_probabilities_name = dict;
            continue;
        }
        if heads.iter().any(|h| h.probs == t) {
            // The classifier's dictionary stands for it.
            continue;
        }
        let Some(v) = w.vars.get(&t).cloned() else {
            return Err(CompileError::Invalid(format!(
                "output '{source}' is not computed by an exported op"
            )));
        };
        let tt = &g.tensors[t];
        let int8 = real_io(t);
        if tt.dtype != DType::F32 && int8.is_none() {
            return Err(CompileError::Invalid(format!(
                "output '{source}' is {:?}; the Core ML export writes float32 outputs and classifier labels",
                tt.dtype
            )));
        }
        block_outputs.push(v.clone());
        described_outputs.push(feature(
            &v,
            &format!(
                "{source}: float32 {:?}{}",
                tt.shape,
                int8.map(|d| format!(", {d}")).unwrap_or_default()
            ),
            array_feature(DType::F32, &tt.shape),
        ));
    }
    let mut user_defined = meta.provenance.clone();
    let int8_source = g
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::QConv { .. } | Op::QFullyConnected { .. }));
    let weights = if int8_source {
        "int8 linear, the source's scales (activations computed in float)"
    } else {
        storage.describe()
    };
    user_defined.insert("kiln.weights".into(), weights.into());
    description.input = described_inputs;
    description.output = described_outputs;
    description.metadata = Some(proto::Metadata {
        short_description: meta.short_description.clone(),
        version_string: meta.version.clone(),
        author: "Kiln".into(),
        license: String::new(),
        user_defined,
    });
    let block = proto::Block {
        outputs: block_outputs,
        operations: std::mem::take(&mut w.ops),
    };
    let function = proto::Function {
        inputs: fn_inputs,
        opset: "CoreML6".into(),
        block_specializations: [("CoreML6".to_string(), block)].into(),
    };
    let model = proto::Model {
        specification_version: 7,
        description: Some(description),
        ml_program: Some(proto::Program {
            version: 1,
            functions: [("main".to_string(), function)].into(),
        }),
    };
    Ok(Package {
        spec: model.encode_to_vec(),
        weight_bytes: w.weight_bytes,
        weights: w.blobs.finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_mil_names() {
        assert_eq!(ident("input.1"), "input_1");
        assert_eq!(ident("33"), "_33");
        assert_eq!(ident(""), "_");
        assert_eq!(ident("dense/BiasAdd:0"), "dense_BiasAdd_0");
    }

    #[test]
    fn blob_records_are_aligned_and_counted() {
        let mut b = Blobs::new();
        let first = b.push(BLOB_F32, &[0u8; 12]);
        let second = b.push(BLOB_I8, &[7u8; 65]);
        let bytes = b.finish();
        assert_eq!((first, second), (64, 192));
        assert_eq!(&bytes[0..8], &[2, 0, 0, 0, 2, 0, 0, 0]);
        let rec = &bytes[192..256];
        assert_eq!(&rec[0..4], &0xDEAD_BEEFu32.to_le_bytes());
        assert_eq!(u32::from_le_bytes(rec[4..8].try_into().unwrap()), BLOB_I8);
        assert_eq!(u64::from_le_bytes(rec[8..16].try_into().unwrap()), 65);
        assert_eq!(u64::from_le_bytes(rec[16..24].try_into().unwrap()), 256);
        assert_eq!(bytes[256..321], [7u8; 65]);
        assert_eq!(bytes.len() % 64, 0);
    }
}
