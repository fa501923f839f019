//! TFLite import: a `.tflite` flatbuffer (schema v3, subgraph 0) into the IR.
//!
//! Field ids follow TensorFlow Lite's public `schema.fbs`; the reader is
//! [`fb`] (bounds-checked, no `unsafe`). TFLite activations are NHWC while
//! Kiln's spatial kernels are NCHW: 4-D activations are kept NCHW inside the
//! graph (one Transpose at a 4-D graph input, converted back only where an
//! op needs the TFLite layout: reshapes, fully connected layers, outputs),
//! and weights are permuted at compile time. Shapes come from the tensor
//! table (TFLite stores them statically).
//!
//! This importer handles float models (float32 weights, or float16/int8
//! weights behind DEQUANTIZE, which are folded to float32). Integer
//! (int8-activation) models are refused with a clear error until the
//! integer kernels land.

pub mod export;
pub mod fb;

use crate::error::{CompileError, Result};
use crate::eval;
use crate::ir::{Graph, Node, Tensor, TensorId};
use crate::onnx::{ImportOptions, Imported};
use fb::Table;
use kiln_format::{DType, Op, PadMode, ReduceKind, Unary, Window};
use std::collections::HashMap;
use std::sync::Arc;

/// Whether `bytes` look like a TFLite flatbuffer (file identifier `TFL3`).
pub fn is_tflite(bytes: &[u8]) -> bool {
    bytes.get(4..8) == Some(b"TFL3")
}

fn parse_err(e: fb::FbError) -> CompileError {
    CompileError::Invalid(format!("could not parse the TFLite model: {e}"))
}

/// TFLite `TensorType` → Kiln dtype.
fn dtype_of(t: u8) -> Option<DType> {
    Some(match t {
        0 => DType::F32,
        1 => DType::F16,
        2 => DType::I32,
        3 => DType::U8,
        4 => DType::I64,
        6 => DType::Bool,
        7 => DType::I16,
        9 => DType::I8,
        _ => return None,
    })
}

/// Builtin operator codes the importer reads and the exporter writes
/// (schema.fbs `BuiltinOperator`).
pub(crate) mod code {
    pub const ADD: i32 = 0;
    pub const AVERAGE_POOL_2D: i32 = 1;
    pub const CONCATENATION: i32 = 2;
    pub const CONV_2D: i32 = 3;
    pub const DEPTHWISE_CONV_2D: i32 = 4;
    pub const DEQUANTIZE: i32 = 6;
    pub const FULLY_CONNECTED: i32 = 9;
    pub const LOGISTIC: i32 = 14;
    pub const MAX_POOL_2D: i32 = 17;
    pub const MUL: i32 = 18;
    pub const RELU: i32 = 19;
    pub const RELU6: i32 = 21;
    pub const RESHAPE: i32 = 22;
    pub const SOFTMAX: i32 = 25;
    pub const TANH: i32 = 28;
    pub const PAD: i32 = 34;
    pub const GATHER: i32 = 36;
    pub const TRANSPOSE: i32 = 39;
    pub const MEAN: i32 = 40;
    pub const SUB: i32 = 41;
    pub const DIV: i32 = 42;
    pub const SQUEEZE: i32 = 43;
    pub const UNIDIRECTIONAL_SEQUENCE_LSTM: i32 = 44;
    pub const LOG_SOFTMAX: i32 = 50;
    pub const CAST: i32 = 53;
    pub const MAXIMUM: i32 = 55;
    pub const ARG_MAX: i32 = 56;
    pub const MINIMUM: i32 = 57;
    pub const EXPAND_DIMS: i32 = 70;
}

/// Name of a builtin code, for error messages.
fn code_name(c: i32) -> String {
    let known = [
        (0, "ADD"),
        (1, "AVERAGE_POOL_2D"),
        (2, "CONCATENATION"),
        (3, "CONV_2D"),
        (4, "DEPTHWISE_CONV_2D"),
        (6, "DEQUANTIZE"),
        (9, "FULLY_CONNECTED"),
        (14, "LOGISTIC"),
        (16, "LSTM"),
        (17, "MAX_POOL_2D"),
        (18, "MUL"),
        (19, "RELU"),
        (21, "RELU6"),
        (22, "RESHAPE"),
        (25, "SOFTMAX"),
        (27, "SVDF"),
        (28, "TANH"),
        (32, "CUSTOM"),
        (34, "PAD"),
        (36, "GATHER"),
        (39, "TRANSPOSE"),
        (40, "MEAN"),
        (41, "SUB"),
        (43, "SQUEEZE"),
        (44, "UNIDIRECTIONAL_SEQUENCE_LSTM"),
        (45, "STRIDED_SLICE"),
        (50, "LOG_SOFTMAX"),
        (53, "CAST"),
        (56, "ARG_MAX"),
        (70, "EXPAND_DIMS"),
        (114, "QUANTIZE"),
    ];
    known
        .iter()
        .find(|(k, _)| *k == c)
        .map_or_else(|| format!("builtin {c}"), |(_, n)| (*n).to_string())
}

/// One tensor of the subgraph.
#[derive(Debug, Clone)]
struct TfTensor {
    name: String,
    shape: Vec<usize>,
    /// -1 entries of `shape_signature` (dynamic dims).
    dynamic0: bool,
    ty: u8,
    data: Option<Vec<u8>>,
    scale: Vec<f32>,
    zero_point: Vec<i64>,
    qdim: usize,
}

/// Fused activation (schema `ActivationFunctionType`).
fn fused(code: i8) -> std::result::Result<Unary, String> {
    Ok(match code {
        0 => Unary::Identity,
        1 => Unary::Relu,
        2 => Unary::Clip {
            min: -1.0,
            max: 1.0,
        },
        3 => Unary::Clip { min: 0.0, max: 6.0 },
        4 => Unary::Tanh,
        other => return Err(format!("fused activation {other} is not supported")),
    })
}

/// Largest element count of one tensor the importer accepts (2^32: far
/// beyond any edge model, far below overflow in shape arithmetic).
const MAX_TENSOR_ELEMENTS: usize = 1 << 32;

/// NHWC ↔ NCHW permutations.
const TO_NCHW: [usize; 4] = [0, 3, 1, 2];
const TO_NHWC: [usize; 4] = [0, 2, 3, 1];

/// `v` in the order of `perm`; an error when their ranks differ (a
/// malformed model: say a rank-0 output where a 4-D map is expected).
fn permute<T: Copy>(v: &[T], perm: &[usize]) -> Result<Vec<T>> {
    if v.len() != perm.len() {
        return Err(CompileError::Invalid(format!(
            "a tensor has rank {} where rank {} is expected",
            v.len(),
            perm.len()
        )));
    }
    Ok(perm.iter().map(|&p| v[p]).collect())
}

/// Permutes the axes of a constant (row-major bytes of `elem` bytes each).
fn permute_const(bytes: &[u8], elem: usize, shape: &[usize], perm: &[usize]) -> Result<Vec<u8>> {
    let rank = shape.len();
    let out_shape = permute(shape, perm)?;
    let n: usize = shape.iter().product();
    if n.checked_mul(elem) != Some(bytes.len()) {
        return Err(CompileError::Invalid(format!(
            "a constant of shape {shape:?} holds {} bytes",
            bytes.len()
        )));
    }
    let mut in_strides = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        in_strides[d] = in_strides[d + 1] * shape[d + 1];
    }
    let mut out = vec![0u8; n * elem];
    let mut idx = vec![0usize; rank];
    for o in 0..n {
        let src: usize = (0..rank).map(|d| idx[d] * in_strides[perm[d]]).sum();
        out[o * elem..(o + 1) * elem].copy_from_slice(&bytes[src * elem..(src + 1) * elem]);
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}

/// SAME/VALID padding of one spatial dim: (begin, end).
fn tf_pads(same: bool, input: usize, k: usize, s: usize, d: usize) -> (usize, usize) {
    if !same {
        return (0, 0);
    }
    let out = input.div_ceil(s.max(1));
    let eff = (k.saturating_sub(1)) * d + 1;
    let total = ((out.saturating_sub(1)) * s + eff).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// Import state.
struct Cx {
    g: Graph,
    tensors: Vec<TfTensor>,
    /// IR value of a TFLite tensor and whether it is stored NCHW.
    vals: HashMap<usize, (TensorId, bool)>,
    /// Converted forms: (tensor, want NCHW) → id.
    forms: HashMap<(usize, bool), TensorId>,
    warnings: Vec<String>,
    node: String,
    op: String,
}

impl Cx {
    fn err(&self, detail: impl Into<String>) -> CompileError {
        CompileError::Node {
            node: self.node.clone(),
            op: self.op.clone(),
            detail: detail.into(),
        }
    }

    fn tensor(&self, i: i32) -> Result<&TfTensor> {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.tensors.get(i))
            .ok_or_else(|| self.err(format!("tensor index {i} out of range")))
    }

    /// Emits a node (folded when all inputs are constant).
    fn emit(
        &mut self,
        op: Op,
        inputs: Vec<Option<TensorId>>,
        dtype: DType,
        shape: Vec<usize>,
    ) -> Result<TensorId> {
        let id = self.g.add_tensor(Tensor {
            name: format!("{}#{}", self.node, self.g.tensors.len()),
            dtype,
            shape,
            data: None,
        });
        let node = Node {
            op,
            inputs,
            outputs: vec![Some(id)],
            name: self.node.clone(),
        };
        if node
            .inputs
            .iter()
            .flatten()
            .all(|&i| self.g.tensors[i].is_const())
        {
            let outs = eval::eval_node(&self.g, &node).map_err(|source| CompileError::Fold {
                node: self.node.clone(),
                source,
            })?;
            if let Some(b) = outs.into_iter().next() {
                self.g.tensors[id].data = Some(Arc::new(b));
            }
        } else {
            self.g.nodes.push(node);
        }
        Ok(id)
    }

    /// The IR value of tensor `i`, materialising constants (float16/int8
    /// constants stay as they are; DEQUANTIZE folds them).
    fn stored(&mut self, i: i32) -> Result<(TensorId, bool)> {
        let t = self.tensor(i)?.clone();
        let key = i as usize;
        if let Some(&v) = self.vals.get(&key) {
            return Ok(v);
        }
        let Some(data) = t.data.clone() else {
            return Err(self.err(format!("tensor '{}' is used before it is produced", t.name)));
        };
        let dt = dtype_of(t.ty).ok_or_else(|| {
            self.err(format!(
                "tensor '{}' has an unsupported type {}",
                t.name, t.ty
            ))
        })?;
        if data.len() != t.shape.iter().product::<usize>() * dt.size() {
            return Err(self.err(format!(
                "constant '{}' holds {} bytes, its shape {:?} needs {}",
                t.name,
                data.len(),
                t.shape,
                t.shape.iter().product::<usize>() * dt.size()
            )));
        }
        let id = self.g.add_const(t.name.clone(), dt, t.shape.clone(), data);
        keep_quant(self, id, &t);
        self.vals.insert(key, (id, false));
        Ok((id, false))
    }

    /// Tensor `i` in the TFLite layout (`nchw = false`) or, for rank 4,
    /// NCHW (`nchw = true`).
    fn get(&mut self, i: i32, nchw: bool) -> Result<TensorId> {
        let (id, is_nchw) = self.stored(i)?;
        let rank = self.g.tensors[id].shape.len();
        if is_nchw == nchw || rank != 4 {
            return Ok(id);
        }
        if let Some(&f) = self.forms.get(&(i as usize, nchw)) {
            return Ok(f);
        }
        let perm = if nchw { TO_NCHW } else { TO_NHWC };
        let t = self.g.tensors[id].clone();
        let shape = permute(&t.shape, &perm)?;
        let mut p = [0u8; kiln_format::OP_RANK];
        for (d, &v) in perm.iter().enumerate() {
            p[d] = v as u8;
        }
        let f = self.emit(Op::Transpose { perm: p }, vec![Some(id)], t.dtype, shape)?;
        if let Some(q) = self.g.quant.get(&id).cloned() {
            self.g.quant.insert(f, q);
        }
        self.forms.insert((i as usize, nchw), f);
        Ok(f)
    }

    /// Records `id` as the value of output tensor `o` (stored NCHW or not),
    /// checking the shape against the tensor table.
    fn set(&mut self, o: i32, id: TensorId, nchw: bool) -> Result<()> {
        let t = self.tensor(o)?.clone();
        let want = if nchw && t.shape.len() == 4 {
            permute(&t.shape, &TO_NCHW)?
        } else {
            t.shape.clone()
        };
        if self.g.tensors[id].shape != want {
            return Err(self.err(format!(
                "computed shape {:?} for '{}' but the model says {:?}",
                self.g.tensors[id].shape, t.name, t.shape
            )));
        }
        if !t.scale.is_empty() {
            // Per tensor (activations): the same in either layout.
            let q = crate::ir::QuantParams {
                scales: t.scale.clone(),
                zero_points: t.zero_point.clone(),
                axis: 0,
            };
            self.g.quant.insert(id, q);
        }
        self.vals
            .insert(o as usize, (id, nchw && t.shape.len() == 4));
        Ok(())
    }

    fn f32_const(&self, id: TensorId, what: &str) -> Result<Vec<f32>> {
        self.g.tensors[id]
            .f32s()
            .ok_or_else(|| self.err(format!("{what} must be a float32 constant")))
    }

    fn int_const(&self, id: TensorId, what: &str) -> Result<Vec<i64>> {
        self.g.tensors[id]
            .ints()
            .ok_or_else(|| self.err(format!("{what} must be an integer constant")))
    }

    fn activation(&mut self, x: TensorId, act: Unary) -> Result<TensorId> {
        if act == Unary::Identity {
            return Ok(x);
        }
        let t = self.g.tensors[x].clone();
        self.emit(Op::Unary(act), vec![Some(x)], t.dtype, t.shape)
    }
}

/// The operands and options of one operator.
struct OpDesc<'a> {
    code: i32,
    inputs: Vec<i32>,
    outputs: Vec<i32>,
    /// Tensors that only carry quantization (the int8 LSTM's gate and
    /// hidden scales).
    intermediates: Vec<i32>,
    options: Option<Table<'a>>,
}

/// Imports a `.tflite` model (subgraph 0).
pub fn import(bytes: &[u8], opts: &ImportOptions) -> Result<Imported> {
    if !is_tflite(bytes) {
        return Err(CompileError::Invalid(
            "not a TFLite flatbuffer (no TFL3 identifier at byte 4)".into(),
        ));
    }
    let model = Table::root(bytes).map_err(parse_err)?;
    let codes: Vec<(i32, Option<String>)> = model
        .tables(1)
        .map_err(parse_err)?
        .iter()
        .map(|c| {
            let old = c.i8(0, 0)? as i32;
            let new = c.i32(3, 0)?;
            Ok((old.max(new), c.str(1)?))
        })
        .collect::<fb::Result<_>>()
        .map_err(parse_err)?;
    let buffers: Vec<Vec<u8>> = model
        .tables(4)
        .map_err(parse_err)?
        .iter()
        .map(|b| {
            let inline = b.bytes(0)?;
            let (off, size) = (b.u64(1, 0)?, b.u64(2, 0)?);
            if inline.is_empty() && off > 1 {
                let (off, size) = (off as usize, size as usize);
                return off
                    .checked_add(size)
                    .and_then(|end| bytes.get(off..end))
                    .map(<[u8]>::to_vec)
                    .ok_or(fb::FbError {
                        what: "buffer outside the file",
                        at: off,
                    });
            }
            Ok(inline.to_vec())
        })
        .collect::<fb::Result<_>>()
        .map_err(parse_err)?;
    let subgraphs = model.tables(2).map_err(parse_err)?;
    let sg = subgraphs
        .first()
        .ok_or_else(|| CompileError::Invalid("the TFLite model has no subgraph".into()))?;
    // Other subgraphs are only reachable through control-flow ops (WHILE,
    // IF, CALL), which are refused as unsupported below.
    let mut tensors = vec![];
    let mut quirks = vec![];
    for t in sg.tables(0).map_err(parse_err)? {
        let shape = t.i32s(0).map_err(parse_err)?;
        let sig = t.i32s(7).map_err(parse_err)?;
        let buffer = t.u32(2, 0).map_err(parse_err)? as usize;
        let data = buffers.get(buffer).filter(|b| !b.is_empty()).cloned();
        let q = t.table(4).map_err(parse_err)?;
        let (scale, zero_point, qdim) = match q {
            Some(q) => (
                q.f32s(2).map_err(parse_err)?,
                q.i64s(3).map_err(parse_err)?,
                q.i32(6, 0).map_err(parse_err)?.max(0) as usize,
            ),
            None => (vec![], vec![], 0),
        };
        let name = t.str(3).map_err(parse_err)?.unwrap_or_default();
        let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        // Element counts must stay far from overflow in every later
        // product (a malformed model can declare any i32 dims).
        if dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .is_none_or(|n| n > MAX_TENSOR_ELEMENTS)
        {
            return Err(CompileError::Invalid(format!(
                "tensor {name:?} has shape {dims:?}: more than {MAX_TENSOR_ELEMENTS} elements"
            )));
        }
        // Known quirk (person_detect): per-channel bias scales declared on
        // dimension 3 of a 1-D tensor. LiteRT refuses the model; the scales
        // match dimension 0, which is what they mean.
        let qdim = if scale.len() > 1 && qdim >= dims.len() && dims.first() == Some(&scale.len()) {
            quirks.push((name.clone(), qdim));
            0
        } else {
            qdim
        };
        tensors.push(TfTensor {
            name,
            shape: dims,
            dynamic0: sig.first() == Some(&-1),
            ty: t.u8(1, 0).map_err(parse_err)?,
            data,
            scale,
            zero_point,
            qdim,
        });
    }
    let mut ops = vec![];
    for o in sg.tables(3).map_err(parse_err)? {
        let idx = o.u32(0, 0).map_err(parse_err)? as usize;
        let (code, custom) = codes.get(idx).cloned().ok_or_else(|| {
            CompileError::Invalid(format!("operator code index {idx} out of range"))
        })?;
        if code == 32 {
            return Err(CompileError::UnsupportedOp {
                op: format!("CUSTOM({})", custom.unwrap_or_default()),
                domain: "tflite:".into(),
                opset: 3,
                node: format!("#{}", ops.len()),
            });
        }
        ops.push(OpDesc {
            code,
            inputs: o.i32s(1).map_err(parse_err)?,
            outputs: o.i32s(2).map_err(parse_err)?,
            intermediates: o.i32s(8).map_err(parse_err)?,
            options: o.table(4).map_err(parse_err)?,
        });
    }
    let inputs = sg.i32s(1).map_err(parse_err)?;
    let outputs = sg.i32s(2).map_err(parse_err)?;

    let mut cx = Cx {
        g: Graph::default(),
        tensors,
        vals: HashMap::new(),
        forms: HashMap::new(),
        warnings: match quirks.as_slice() {
            [] => vec![],
            [(first, qdim), ..] => vec![format!(
                "{} per-channel tensor(s) declare quantized_dimension {qdim} beyond their rank (first: '{first}'); their scales are read along dimension 0 (LiteRT refuses such a model)",
                quirks.len()
            )],
        },
        node: String::new(),
        op: String::new(),
    };
    let mut input_names = vec![];
    // Per-tensor quantization of int8 graph inputs and outputs, recorded in
    // the artifact's properties (`kiln.io_quant.NAME` = "SCALE ZERO_POINT")
    // so firmware can quantize what it feeds and read what it gets.
    let mut properties = vec![];
    let io_quant = |t: &TfTensor| {
        (dtype_of(t.ty) == Some(DType::I8) && t.scale.len() == 1 && t.zero_point.len() == 1).then(
            || {
                (
                    format!("kiln.io_quant.{}", t.name),
                    format!("{} {}", t.scale[0], t.zero_point[0]),
                )
            },
        )
    };
    for &i in inputs.iter().chain(&outputs) {
        properties.extend(io_quant(cx.tensor(i)?));
    }
    let mut batch_name = None;
    for &i in &inputs {
        let t = cx.tensor(i)?.clone();
        let dt = dtype_of(t.ty).ok_or_else(|| CompileError::Input {
            input: t.name.clone(),
            detail: format!("TFLite type {} is not supported", t.ty),
        })?;
        let int8_input = dt == DType::I8 && t.scale.len() == 1 && t.zero_point.len() == 1;
        if dt != DType::F32 && !int8_input {
            return Err(CompileError::Input {
                input: t.name.clone(),
                detail: format!(
                    "{dt} model input: only float32 and per-tensor int8 TFLite inputs are supported"
                ),
            });
        }
        let shape = opts
            .input_shapes
            .get(&t.name)
            .cloned()
            .unwrap_or(t.shape.clone());
        if t.dynamic0 {
            batch_name.get_or_insert_with(|| "batch".to_string());
        }
        let id = cx.g.add_tensor(Tensor {
            name: t.name.clone(),
            dtype: dt,
            shape,
            data: None,
        });
        keep_quant(&mut cx, id, &t);
        cx.g.inputs.push(id);
        cx.vals.insert(i as usize, (id, false));
        input_names.push(t.name.clone());
    }
    for (k, op) in ops.iter().enumerate() {
        cx.op = code_name(op.code);
        cx.node = op
            .outputs
            .first()
            .and_then(|&o| cx.tensors.get(o.max(0) as usize))
            .map_or_else(|| format!("op#{k}"), |t| t.name.clone());
        import_op(&mut cx, op)?;
    }
    let mut output_names = vec![];
    for &o in &outputs {
        let name = cx.tensor(o)?.name.clone();
        let mut id = cx.get(o, false)?;
        let needs_copy =
            cx.g.tensors[id].is_const() || cx.g.outputs.contains(&id) || cx.g.inputs.contains(&id);
        if needs_copy {
            let t = cx.g.tensors[id].clone();
            let out = cx.g.add_tensor(Tensor {
                name: name.clone(),
                dtype: t.dtype,
                shape: t.shape,
                data: None,
            });
            cx.g.nodes.push(Node {
                op: Op::Reshape,
                inputs: vec![Some(id)],
                outputs: vec![Some(out)],
                name: format!("{name}:copy"),
            });
            id = out;
        }
        cx.g.tensors[id].name = name.clone();
        cx.g.outputs.push(id);
        output_names.push(name);
    }
    let description = model.str(3).map_err(parse_err)?.unwrap_or_default();
    Ok(Imported {
        graph: cx.g,
        input_names,
        output_names,
        batch_name,
        producer: format!(
            "TFLite schema v{} {description}",
            model.u32(0, 0).unwrap_or(0)
        )
        .trim()
        .to_string(),
        properties,
        warnings: cx.warnings,
        preprocessing: vec![],
        opset: 3,
        labels: HashMap::new(),
        batch_unsafe: None,
    })
}

/// The `[n, 2]` int32 constant of `[mantissa, shift]` pairs a quantized op
/// reads its requantization from.
fn requant_const(cx: &mut Cx, rq: &[i32]) -> TensorId {
    let bytes: Vec<u8> = rq.iter().flat_map(|v| v.to_le_bytes()).collect();
    let name = format!("{}:requant", cx.node);
    cx.g.add_const(name, DType::I32, vec![rq.len() / 2, 2], bytes)
}

/// Per-tensor `(scale, zero point)` of an int8 tensor.
/// Records TFLite tensor `t`'s quantization for IR tensor `id`.
fn keep_quant(cx: &mut Cx, id: TensorId, t: &TfTensor) {
    if !t.scale.is_empty() {
        let q = crate::ir::QuantParams {
            scales: t.scale.clone(),
            zero_points: t.zero_point.clone(),
            axis: t.qdim,
        };
        cx.g.quant.insert(id, q);
    }
}

fn per_tensor(cx: &Cx, t: &TfTensor) -> Result<(f32, i32)> {
    match (t.scale.as_slice(), t.zero_point.as_slice()) {
        ([s], [z]) if s.is_finite() && *s > 0.0 && (-128..=127).contains(z) => Ok((*s, *z as i32)),
        _ => Err(cx.err(format!(
            "int8 tensor '{}' needs one positive scale and an int8 zero point (has {:?}, {:?})",
            t.name, t.scale, t.zero_point
        ))),
    }
}

/// The fused activation as an int8 clamp (TFLite's
/// `CalculateActivationRangeQuantized`: bounds quantized with
/// round-half-away-from-zero in float).
fn act_range(cx: &Cx, act: i8, scale: f32, zp: i32) -> Result<(i32, i32)> {
    let q = |v: f32| zp.saturating_add((v / scale).round() as i32);
    let (lo, hi) = match act {
        0 => (-128, 127),
        1 => (q(0.0), 127),
        2 => (q(-1.0), q(1.0)),
        3 => (q(0.0), q(6.0)),
        other => {
            return Err(cx.err(format!(
                "fused activation {other} on an int8 op is not supported"
            )));
        }
    };
    Ok((lo.max(-128), hi.min(127)))
}

/// Int8 FULLY_CONNECTED: the multipliers are computed here exactly as
/// LiteRT's `Prepare` does (per tensor: the scale product in float, then the
/// division in double; per channel: all in double), so the run-time
/// integer arithmetic reproduces its bytes.
fn q_fully_connected(
    cx: &mut Cx,
    xi: i32,
    wi: i32,
    bi: Option<i32>,
    o: i32,
    act: i8,
) -> Result<()> {
    use kiln_kernels::fixed::Multiplier;
    let (xt, wt, yt) = (
        cx.tensor(xi)?.clone(),
        cx.tensor(wi)?.clone(),
        cx.tensor(o)?.clone(),
    );
    if dtype_of(xt.ty) != Some(DType::I8) || dtype_of(wt.ty) != Some(DType::I8) {
        return Err(cx.err("int8 FULLY_CONNECTED needs int8 input and weights (hybrid models are not supported yet)"));
    }
    let (xs, xz) = per_tensor(cx, &xt)?;
    let (ys, yz) = per_tensor(cx, &yt)?;
    if wt.shape.len() != 2 || wt.data.is_none() {
        return Err(cx.err("FULLY_CONNECTED weights must be a constant [units, depth]"));
    }
    let (units, depth) = (wt.shape[0], wt.shape[1]);
    if wt.zero_point.iter().any(|&z| z != 0) {
        return Err(cx.err("int8 weights must be symmetric (zero point 0)"));
    }
    let ws = &wt.scale;
    if ws.len() != 1 && ws.len() != units {
        return Err(cx.err(format!("{} weight scales for {units} units", ws.len())));
    }
    let mut rq = Vec::with_capacity(ws.len() * 2);
    for &w in ws {
        let real = if ws.len() == 1 {
            f64::from(xs * w) / f64::from(ys)
        } else {
            f64::from(xs) * f64::from(w) / f64::from(ys)
        };
        let m = Multiplier::new(real)
            .ok_or_else(|| cx.err(format!("requantization multiplier {real} is out of range")))?;
        rq.extend([m.mantissa, m.shift]);
    }
    let (act_min, act_max) = act_range(cx, act, ys, yz)?;
    let x = cx.get(xi, false)?;
    let xn = cx.g.tensors[x].numel();
    if depth == 0 || !xn.is_multiple_of(depth) {
        return Err(cx.err(format!(
            "input of {xn} values is not a multiple of the weights' {depth} columns"
        )));
    }
    let rows = xn / depth;
    let x2 = if cx.g.tensors[x].shape == [rows, depth] {
        x
    } else {
        cx.emit(Op::Reshape, vec![Some(x)], DType::I8, vec![rows, depth])?
    };
    keep_quant(cx, x2, &xt);
    let (w, _) = cx.stored(wi)?;
    keep_quant(cx, w, &wt);
    let bias = match bi {
        Some(b) => {
            let bt = cx.tensor(b)?.clone();
            if dtype_of(bt.ty) != Some(DType::I32) || bt.shape.iter().product::<usize>() != units {
                return Err(
                    cx.err("int8 FULLY_CONNECTED bias must be int32 with one value per unit")
                );
            }
            let id = cx.stored(b)?.0;
            keep_quant(cx, id, &bt);
            Some(id)
        }
        None => None,
    };
    let rq_id = requant_const(cx, &rq);
    let y = cx.emit(
        Op::QFullyConnected {
            x_zp: xz,
            y_zp: yz,
            act_min,
            act_max,
        },
        vec![Some(x2), Some(w), bias, Some(rq_id)],
        DType::I8,
        vec![rows, units],
    )?;
    keep_quant(cx, y, &yt);
    let y = if yt.shape == [rows, units] {
        y
    } else {
        cx.emit(Op::Reshape, vec![Some(y)], DType::I8, yt.shape.clone())?
    };
    keep_quant(cx, y, &yt);
    cx.set(o, y, false)
}

/// Zero points, clamp and per-channel requantization of an int8
/// convolution, computed as LiteRT's `PopulateConvolutionQuantizationParams`
/// (all in double).
fn q_conv_params(
    cx: &Cx,
    xt: &TfTensor,
    ft: &TfTensor,
    yt: &TfTensor,
    act: i8,
) -> Result<(kiln_kernels::quant::QOut, Vec<i32>)> {
    use kiln_kernels::fixed::Multiplier;
    if dtype_of(xt.ty) != Some(DType::I8) {
        return Err(cx.err("int8 convolution needs an int8 input"));
    }
    let (xs, xz) = per_tensor(cx, xt)?;
    let (ys, yz) = per_tensor(cx, yt)?;
    if ft.zero_point.iter().any(|&z| z != 0) || ft.scale.is_empty() {
        return Err(cx.err("int8 filters must be symmetric (zero point 0) with scales"));
    }
    let mut rq = Vec::with_capacity(ft.scale.len() * 2);
    for &w in &ft.scale {
        let real = f64::from(xs) * f64::from(w) / f64::from(ys);
        let m = Multiplier::new(real)
            .ok_or_else(|| cx.err(format!("requantization multiplier {real} is out of range")))?;
        rq.extend([m.mantissa, m.shift]);
    }
    let (act_min, act_max) = act_range(cx, act, ys, yz)?;
    Ok((
        kiln_kernels::quant::QOut {
            x_zp: xz,
            y_zp: yz,
            act_min,
            act_max,
        },
        rq,
    ))
}

/// LiteRT's int8 table of an elementwise function (`LUTPopulate`): each
/// input dequantized, transformed and requantized in f32, rounding half
/// away from zero.
fn lut_i8(in_scale: f32, in_zp: i32, out_scale: f32, out_zp: i32, f: fn(f32) -> f32) -> [i8; 256] {
    let inverse = 1.0 / out_scale;
    let mut table = [0i8; 256];
    for v in -128i32..=127 {
        let y = f(in_scale * (v - in_zp) as f32);
        let q = ((y * inverse).round() + out_zp as f32) as i32;
        table[usize::from(v as i8 as u8)] = q.clamp(-128, 127) as i8;
    }
    table
}

/// Input slots of `UNIDIRECTIONAL_SEQUENCE_LSTM` (TFLite `lstm::full`).
mod lstm_in {
    pub const INPUT: usize = 0;
    /// input-to-{input, forget, cell, output} weights.
    pub const W: [usize; 4] = [1, 2, 3, 4];
    /// recurrent-to-{input, forget, cell, output} weights.
    pub const R: [usize; 4] = [5, 6, 7, 8];
    pub const PEEPHOLE: [usize; 3] = [9, 10, 11];
    /// {input, forget, cell, output} gate biases.
    pub const BIAS: [usize; 4] = [12, 13, 14, 15];
    pub const PROJECTION: [usize; 2] = [16, 17];
    pub const OUTPUT_STATE: usize = 18;
    pub const CELL_STATE: usize = 19;
    pub const LAYER_NORM: [usize; 4] = [20, 21, 22, 23];
}

/// `UNIDIRECTIONAL_SEQUENCE_LSTM`: float32 becomes the ONNX-style `Lstm`
/// (gates reordered), int8x8_16 becomes `QLstm` with LiteRT's effective
/// scales and zero-point-folded biases computed here as its `Prepare`
/// does. Peephole, projection and layer-norm variants are refused, and so
/// is a non-zero initial state (Kiln runs the sequence from zero state on
/// every call, as LiteRT's first invoke does).
fn sequence_lstm(cx: &mut Cx, op: &OpDesc<'_>, o: i32) -> Result<()> {
    let slot = |k: usize| op.inputs.get(k).copied().filter(|&i| i >= 0);
    let unsupported = lstm_in::PEEPHOLE
        .iter()
        .chain(&lstm_in::PROJECTION)
        .chain(&lstm_in::LAYER_NORM)
        .any(|&k| slot(k).is_some());
    if unsupported {
        return Err(cx.err(
            "peephole, projection and layer-norm LSTMs are not supported yet (plain and CIFG LSTMs are)",
        ));
    }
    let need = |cx: &Cx, k: usize| slot(k).ok_or_else(|| cx.err(format!("missing input {k}")));
    let cifg = slot(lstm_in::W[0]).is_none();
    if cifg != slot(lstm_in::R[0]).is_none() || cifg != slot(lstm_in::BIAS[0]).is_none() {
        return Err(
            cx.err("the input gate's weights and bias must all be present or all absent (CIFG)")
        );
    }
    let opts = op.options;
    let act = opt_i8(opts, 0)?;
    let (cell_clip, proj_clip) = match opts {
        Some(t) => (
            t.f32(1, 0.0).map_err(parse_err)?,
            t.f32(2, 0.0).map_err(parse_err)?,
        ),
        None => (0.0, 0.0),
    };
    let time_major = match opts {
        Some(t) => t.bool(3).map_err(parse_err)?,
        None => false,
    };
    if !(cell_clip >= 0.0 && proj_clip >= 0.0) {
        return Err(cx.err("cell_clip and proj_clip must be non-negative"));
    }
    let xi = need(cx, lstm_in::INPUT)?;
    let xt = cx.tensor(xi)?.clone();
    let &[d0, d1, n_input] = xt.shape.as_slice() else {
        return Err(cx.err(format!("the input must be 3-D, not {:?}", xt.shape)));
    };
    let (steps, batch) = if time_major { (d0, d1) } else { (d1, d0) };
    let w_out = cx.tensor(need(cx, lstm_in::W[3])?)?.clone();
    let n_cell = *w_out.shape.first().unwrap_or(&0);
    if n_cell == 0 || n_input == 0 {
        return Err(cx.err("the LSTM has no cells or no input features"));
    }
    // Constant operands in gate order (input, forget, cell, output); the
    // input gate's are None under CIFG.
    let consts =
        |slots: [usize; 4], shape: &[usize], what: &str| -> Result<Vec<Option<TfTensor>>> {
            slots
                .iter()
                .map(|&k| match slot(k) {
                    None => Ok(None),
                    Some(i) => {
                        let t = cx.tensor(i)?.clone();
                        let n: usize = shape.iter().product();
                        let ok = t.shape.iter().product::<usize>() == n
                            && t.data.as_ref().is_some_and(|d| {
                                dtype_of(t.ty).is_some_and(|dt| d.len() == n * dt.size())
                            });
                        if !ok {
                            return Err(cx.err(format!(
                                "{what} '{}' must be a constant of shape {shape:?}",
                                t.name
                            )));
                        }
                        Ok(Some(t))
                    }
                })
                .collect()
        };
    let w = consts(lstm_in::W, &[n_cell, n_input], "input weights")?;
    let r = consts(lstm_in::R, &[n_cell, n_cell], "recurrent weights")?;
    let b = consts(lstm_in::BIAS, &[n_cell], "gate bias")?;
    for k in [lstm_in::OUTPUT_STATE, lstm_in::CELL_STATE] {
        let t = cx.tensor(need(cx, k)?)?.clone();
        if t.shape.iter().product::<usize>() != batch * n_cell {
            return Err(cx.err(format!(
                "state '{}' must hold batch × cells = {} values",
                t.name,
                batch * n_cell
            )));
        }
        // LiteRT resets variable tensors to zero, int8 ones to their zero
        // point (real zero); a buffer holding anything else is refused.
        let zero = match (dtype_of(t.ty), t.zero_point.as_slice()) {
            (Some(DType::I8), [z]) => *z as i8 as u8,
            _ => 0,
        };
        if t.data
            .as_ref()
            .is_some_and(|d| d.iter().any(|&v| v != zero))
        {
            return Err(cx.err(format!(
                "a non-zero initial state ('{}') is not supported: Kiln starts every run from zero state",
                t.name
            )));
        }
    }
    let out_t = cx.tensor(o)?.clone();
    if out_t.shape
        != xt.shape[..2]
            .iter()
            .copied()
            .chain([n_cell])
            .collect::<Vec<_>>()
    {
        return Err(cx.err(format!(
            "output shape {:?} does not match the input {:?} with {n_cell} cells",
            out_t.shape, xt.shape
        )));
    }
    let parts = LstmParts {
        x: xi,
        y: o,
        batch,
        steps,
        n_input,
        n_cell,
        time_major,
        act,
        cifg,
        cell_clip,
        proj_clip,
        w,
        r,
        b,
    };
    match dtype_of(xt.ty) {
        Some(DType::F32) => float_lstm(cx, &parts),
        Some(DType::I8) => int8_lstm(cx, op, &parts),
        other => Err(cx.err(format!("{other:?} LSTM input is not supported"))),
    }
}

/// The operands of one `UNIDIRECTIONAL_SEQUENCE_LSTM`, checked.
struct LstmParts {
    /// Input and output tensor indices.
    x: i32,
    y: i32,
    batch: usize,
    steps: usize,
    n_input: usize,
    n_cell: usize,
    time_major: bool,
    /// Fused activation (cell gate and output).
    act: i8,
    cifg: bool,
    cell_clip: f32,
    proj_clip: f32,
    /// Input-side and recurrent weights and gate biases, in gate order
    /// input, forget, cell, output (the input gate's absent under CIFG).
    w: Vec<Option<TfTensor>>,
    r: Vec<Option<TfTensor>>,
    b: Vec<Option<TfTensor>>,
}

/// Float32 LSTM as `Op::Lstm` (ONNX gate order i, o, f, c; sequence-major).
fn float_lstm(cx: &mut Cx, l: &LstmParts) -> Result<()> {
    let LstmParts {
        x: xi,
        y: o,
        batch,
        steps,
        n_input,
        n_cell,
        time_major,
        act,
        cifg,
        cell_clip,
        proj_clip,
        ref w,
        ref r,
        ref b,
    } = *l;
    use kiln_format::{RnnAct, RnnDirection};
    if cifg || proj_clip > 0.0 {
        return Err(cx.err("float CIFG LSTMs and projection clipping are not supported yet"));
    }
    let g = match act {
        0 => RnnAct::Affine {
            alpha: 1.0,
            beta: 0.0,
        },
        1 => RnnAct::Relu,
        4 => RnnAct::Tanh,
        other => return Err(cx.err(format!("LSTM activation {other} is not supported"))),
    };
    let f32s = |t: &Option<TfTensor>| -> Vec<u8> {
        t.as_ref().and_then(|t| t.data.clone()).unwrap_or_default()
    };
    if [w, r, b].iter().any(|v| {
        v.iter().any(|t| {
            t.as_ref()
                .is_some_and(|t| dtype_of(t.ty) != Some(DType::F32))
        })
    }) {
        return Err(cx.err(
            "a float LSTM's weights and biases must be float32 (hybrid LSTMs are not supported)",
        ));
    }
    // TFLite order i, f, c, o → ONNX i, o, f, c.
    const ONNX: [usize; 4] = [0, 3, 1, 2];
    let cat =
        |v: &[Option<TfTensor>]| -> Vec<u8> { ONNX.iter().flat_map(|&k| f32s(&v[k])).collect() };
    let mut bias = cat(b);
    bias.resize(8 * n_cell * 4, 0);
    let name = cx.node.clone();
    let wid = cx.g.add_const(
        format!("{name}:W"),
        DType::F32,
        vec![1, 4 * n_cell, n_input],
        cat(w),
    );
    let rid = cx.g.add_const(
        format!("{name}:R"),
        DType::F32,
        vec![1, 4 * n_cell, n_cell],
        cat(r),
    );
    let bid =
        cx.g.add_const(format!("{name}:B"), DType::F32, vec![1, 8 * n_cell], bias);
    let x = cx.get(xi, false)?;
    let seq_major = |cx: &mut Cx, v: TensorId, feat: usize| -> Result<TensorId> {
        if time_major {
            Ok(v)
        } else if batch == 1 {
            cx.emit(Op::Reshape, vec![Some(v)], DType::F32, vec![steps, 1, feat])
        } else {
            let mut p = [0u8; kiln_format::OP_RANK];
            p[..3].copy_from_slice(&[1, 0, 2]);
            cx.emit(
                Op::Transpose { perm: p },
                vec![Some(v)],
                DType::F32,
                vec![steps, batch, feat],
            )
        }
    };
    let xs = seq_major(cx, x, n_input)?;
    let lstm = if cell_clip > 0.0 {
        Op::LstmCellClip {
            hidden: n_cell as u32,
            acts: [RnnAct::Sigmoid, g, g],
            cell_clip,
        }
    } else {
        Op::Lstm {
            hidden: n_cell as u32,
            direction: RnnDirection::Forward,
            batch_first: false,
            acts: [RnnAct::Sigmoid, g, g],
            clip: None,
            input_forget: false,
        }
    };
    let y = cx.emit(
        lstm,
        vec![Some(xs), Some(wid), Some(rid), Some(bid)],
        DType::F32,
        vec![steps, 1, batch, n_cell],
    )?;
    let y3 = cx.emit(
        Op::Reshape,
        vec![Some(y)],
        DType::F32,
        vec![steps, batch, n_cell],
    )?;
    let y = if time_major || batch == 1 {
        let shape = cx.tensor(o)?.shape.clone();
        cx.emit(Op::Reshape, vec![Some(y3)], DType::F32, shape)?
    } else {
        let mut p = [0u8; kiln_format::OP_RANK];
        p[..3].copy_from_slice(&[1, 0, 2]);
        cx.emit(
            Op::Transpose { perm: p },
            vec![Some(y3)],
            DType::F32,
            vec![batch, steps, n_cell],
        )?
    };
    cx.set(o, y, false)
}

/// Int8x8_16 LSTM as `Op::QLstm`, its constants computed as LiteRT's
/// `PopulateQuantizedLstmParams8x8_16` and
/// `PopulatePrecomputedZPTimesWeightsWithBias` compute them (float scale
/// products, `QuantizeMultiplier`, `-zp · Σ row` folded into the biases).
fn int8_lstm(cx: &mut Cx, op: &OpDesc<'_>, l: &LstmParts) -> Result<()> {
    let LstmParts {
        x: xi,
        y: o,
        n_input,
        n_cell,
        time_major,
        cifg,
        cell_clip,
        ref w,
        ref r,
        ref b,
        ..
    } = *l;
    use kiln_kernels::fixed::Multiplier;
    let slot = |k: usize| op.inputs.get(k).copied().filter(|&i| i >= 0);
    let xt = cx.tensor(xi)?.clone();
    let (x_scale, x_zp) = per_tensor(cx, &xt)?;
    let h_t = cx
        .tensor(slot(lstm_in::OUTPUT_STATE).unwrap_or(-1))?
        .clone();
    let c_t = cx.tensor(slot(lstm_in::CELL_STATE).unwrap_or(-1))?.clone();
    let (h_scale, h_zp) = per_tensor(cx, &h_t)?;
    if dtype_of(c_t.ty) != Some(DType::I16) || c_t.scale.len() != 1 {
        return Err(cx.err("an int8 LSTM's cell state must be int16 with one scale"));
    }
    let cell_scale = c_t.scale[0];
    // TFLite's CheckedLog2, in float.
    let log2 = cell_scale.ln() * (1.0 / 2f32.ln());
    let cell_log2 = log2.round();
    if !((log2 - cell_log2).abs() < 1e-3 && (-15.0..=-9.0).contains(&cell_log2)) {
        return Err(cx.err(format!(
            "the int16 cell state's scale {cell_scale} must be a power of two from 2^-15 to 2^-9"
        )));
    }
    let hidden = match op.intermediates.as_slice() {
        [_, _, _, _, h] => cx.tensor(*h)?.clone(),
        other => {
            return Err(cx.err(format!(
                "an int8 LSTM needs 5 intermediate tensors (gate and hidden scales), has {}",
                other.len()
            )));
        }
    };
    let (hidden_scale, hidden_zp) = per_tensor(cx, &hidden)?;
    let weights_ok = w.iter().chain(r).flatten().all(|t| {
        dtype_of(t.ty) == Some(DType::I8)
            && t.scale.len() == 1
            && t.zero_point.iter().all(|&z| z == 0)
    });
    let bias_ok = b
        .iter()
        .flatten()
        .all(|t| dtype_of(t.ty) == Some(DType::I32));
    if !weights_ok || !bias_ok {
        return Err(cx.err("an int8 LSTM needs symmetric per-tensor int8 weights and int32 biases"));
    }
    let gate_scale = 2f32.powi(-12);
    let mult = |cx: &Cx, real: f32| -> Result<[i32; 2]> {
        let m = Multiplier::new(f64::from(real))
            .ok_or_else(|| cx.err(format!("LSTM multiplier {real} is out of range")))?;
        Ok([m.mantissa, m.shift])
    };
    let mut rq = vec![];
    for (side, scale) in [(w, x_scale), (r, h_scale)] {
        for t in side {
            let real = t.as_ref().map_or(0.0, |t| t.scale[0] * scale / gate_scale);
            rq.extend(mult(cx, real)?);
        }
    }
    let hidden_real = (2f64.powi(-15) / f64::from(hidden_scale) * 2f64.powi(-15)) as f32;
    rq.extend(mult(cx, hidden_real)?);
    let i8s = |t: &Option<TfTensor>, n: usize| -> Vec<u8> {
        t.as_ref()
            .and_then(|t| t.data.clone())
            .unwrap_or_else(|| vec![0; n])
    };
    let row_sums = |t: &Option<TfTensor>, cols: usize| -> Vec<i32> {
        let d = i8s(t, n_cell * cols);
        d.chunks(cols)
            .map(|row| row.iter().map(|&v| i32::from(v as i8)).sum())
            .collect()
    };
    let mut bias = Vec::with_capacity(8 * n_cell);
    for k in 0..4 {
        let given: Vec<i32> = b[k].as_ref().and_then(|t| t.data.as_ref()).map_or_else(
            || vec![0; n_cell],
            |d| {
                d.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            },
        );
        let sums = row_sums(&w[k], n_input);
        bias.extend(
            given
                .iter()
                .zip(&sums)
                .map(|(&g, &s)| g.wrapping_add(s.wrapping_mul(-x_zp))),
        );
    }
    for t in r {
        bias.extend(row_sums(t, n_cell).iter().map(|&s| s.wrapping_mul(-h_zp)));
    }
    let cell_clip_q = if cell_clip > 0.0 {
        (cell_clip / cell_scale).clamp(-32768.0, 32767.0) as i16
    } else {
        0
    };
    let name = cx.node.clone();
    let wbytes: Vec<u8> = w.iter().flat_map(|t| i8s(t, n_cell * n_input)).collect();
    let rbytes: Vec<u8> = r.iter().flat_map(|t| i8s(t, n_cell * n_cell)).collect();
    let wid = cx.g.add_const(
        format!("{name}:W"),
        DType::I8,
        vec![4, n_cell, n_input],
        wbytes,
    );
    let rid = cx.g.add_const(
        format!("{name}:R"),
        DType::I8,
        vec![4, n_cell, n_cell],
        rbytes,
    );
    let bid = cx.g.add_const(
        format!("{name}:bias"),
        DType::I32,
        vec![8, n_cell],
        bias.iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    let rq_id = requant_const(cx, &rq);
    let x = cx.get(xi, false)?;
    let shape = cx.tensor(o)?.shape.clone();
    let y = cx.emit(
        Op::QLstm {
            time_major,
            cifg,
            cell_log2: cell_log2 as i8,
            cell_clip: cell_clip_q,
            hidden_zp,
            state_zp: h_zp,
        },
        vec![Some(x), Some(wid), Some(rid), Some(bid), Some(rq_id)],
        DType::I8,
        shape,
    )?;
    cx.set(o, y, false)
}

fn opt_i32(t: Option<Table<'_>>, id: usize, default: i32) -> Result<i32> {
    match t {
        Some(t) => t.i32(id, default).map_err(parse_err),
        None => Ok(default),
    }
}

fn opt_i8(t: Option<Table<'_>>, id: usize) -> Result<i8> {
    match t {
        Some(t) => t.i8(id, 0).map_err(parse_err),
        None => Ok(0),
    }
}

fn import_op(cx: &mut Cx, op: &OpDesc<'_>) -> Result<()> {
    let o = *op
        .outputs
        .first()
        .ok_or_else(|| cx.err("operator without outputs"))?;
    let (node, opname) = (cx.node.clone(), cx.op.clone());
    let input = |k: usize| -> Result<i32> {
        op.inputs
            .get(k)
            .copied()
            .filter(|&i| i >= 0)
            .ok_or_else(|| CompileError::Node {
                node: node.clone(),
                op: opname.clone(),
                detail: format!("missing input {k}"),
            })
    };
    let out_t = cx.tensor(o)?.clone();
    let out_dt = dtype_of(out_t.ty).unwrap_or(DType::F32);
    let int8_ok = matches!(
        op.code,
        code::FULLY_CONNECTED
            | code::SOFTMAX
            | code::ADD
            | code::AVERAGE_POOL_2D
            | code::CONV_2D
            | code::DEPTHWISE_CONV_2D
            | code::RESHAPE
            | code::SQUEEZE
            | code::EXPAND_DIMS
            | code::UNIDIRECTIONAL_SEQUENCE_LSTM
            | code::LOGISTIC
            | code::TRANSPOSE
    );
    if out_dt != DType::F32 && op.code != code::DEQUANTIZE && !out_t.scale.is_empty() && !int8_ok {
        return Err(cx.err(format!(
            "{out_dt} (quantized) {} is not supported yet: the int8 kernels cover FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, ADD, AVERAGE_POOL_2D and SOFTMAX so far",
            cx.op
        )));
    }
    let act_of = |cx: &Cx, id: usize| -> Result<Unary> {
        fused(opt_i8(op.options, id)?).map_err(|e| cx.err(e))
    };
    match op.code {
        code::UNIDIRECTIONAL_SEQUENCE_LSTM => sequence_lstm(cx, op, o),
        code::CONV_2D | code::DEPTHWISE_CONV_2D => {
            let depthwise = op.code == code::DEPTHWISE_CONV_2D;
            let x = cx.get(input(0)?, true)?;
            let (wid, _) = cx.stored(input(1)?)?;
            let bias = match op.inputs.get(2).copied().filter(|&b| b >= 0) {
                Some(b) => Some(cx.get(b, false)?),
                None => None,
            };
            let wt = cx.g.tensors[wid].clone();
            let (Some(wdata), true) = (wt.data.clone(), wt.shape.len() == 4) else {
                return Err(cx.err("the filter must be a constant [O, KH, KW, I] tensor"));
            };
            let int8 = out_dt == DType::I8;
            let hybrid = !int8 && wt.dtype == DType::I8;
            if wt.dtype != DType::F32 && !(int8 && wt.dtype == DType::I8) && !hybrid {
                return Err(cx.err(format!("{} filters are not supported", wt.dtype)));
            }
            let xs = cx.g.tensors[x].shape.clone();
            let &[_, c, h, w] = &xs[..] else {
                return Err(cx.err(format!("the input must be 4-D, not {xs:?}")));
            };
            let [_, kh, kw, _] = [wt.shape[0], wt.shape[1], wt.shape[2], wt.shape[3]];
            let (wshape, wbytes, group) = if depthwise {
                // [1, KH, KW, C·mult] → [C·mult, 1, KH, KW], one group per input channel.
                let perm = [3, 0, 1, 2];
                (
                    permute(&wt.shape, &perm)?,
                    permute_const(&wdata, wt.dtype.size(), &wt.shape, &perm)?,
                    c,
                )
            } else {
                // [O, KH, KW, I] → [O, I, KH, KW].
                let perm = [0, 3, 1, 2];
                (
                    permute(&wt.shape, &perm)?,
                    permute_const(&wdata, wt.dtype.size(), &wt.shape, &perm)?,
                    1,
                )
            };
            let wnew =
                cx.g.add_const(format!("{}:nchw", wt.name), wt.dtype, wshape, wbytes);
            if let Some(mut q) = cx.g.quant.get(&wid).cloned() {
                // Output channels are axis 0 of the IR's filter either way.
                q.axis = 0;
                cx.g.quant.insert(wnew, q);
            }
            let opts = op.options;
            let same = opt_i8(opts, 0)? == 0;
            let (sw, sh) = (opt_i32(opts, 1, 1)?, opt_i32(opts, 2, 1)?);
            let (act_id, dw_id, dh_id) = if depthwise { (4, 5, 6) } else { (3, 4, 5) };
            let act = act_of(cx, act_id)?;
            let (dw, dh) = (opt_i32(opts, dw_id, 1)?, opt_i32(opts, dh_id, 1)?);
            let pos = |v: i32| -> Result<usize> {
                usize::try_from(v)
                    .ok()
                    .filter(|&v| v >= 1)
                    .ok_or_else(|| cx.err("strides and dilations must be >= 1"))
            };
            let (sh, sw, dh, dw) = (pos(sh)?, pos(sw)?, pos(dh)?, pos(dw)?);
            let (pt, pb) = tf_pads(same, h, kh, sh, dh);
            let (pl, pr) = tf_pads(same, w, kw, sw, dw);
            let window = Window {
                kernel: [kh as u32, kw as u32],
                strides: [sh as u32, sw as u32],
                dilations: [dh as u32, dw as u32],
                pads: [pt as u32, pl as u32, pb as u32, pr as u32],
            };
            let oshape = permute(&out_t.shape, &TO_NCHW)?;
            if hybrid {
                // Float activations, int8 filter: LiteRT's dynamic-range
                // kernel (per-tensor filter scale, not depthwise).
                let ft = cx.tensor(input(1)?)?.clone();
                let (&[scale], false) = (ft.scale.as_slice(), depthwise) else {
                    return Err(cx.err(
                        "hybrid (int8-filter, float) convolutions need one filter scale and are not supported depthwise",
                    ));
                };
                if ft.zero_point.iter().any(|&z| z != 0) || !(scale.is_finite() && scale > 0.0) {
                    return Err(cx.err("a hybrid filter must be symmetric with a positive scale"));
                }
                let (act_min, act_max) = match opt_i8(opts, act_id)? {
                    0 => (f32::NEG_INFINITY, f32::INFINITY),
                    1 => (0.0, f32::INFINITY),
                    2 => (-1.0, 1.0),
                    3 => (0.0, 6.0),
                    other => {
                        return Err(cx.err(format!(
                            "fused activation {other} on a hybrid convolution is not supported"
                        )));
                    }
                };
                let sid = cx.g.add_const(
                    format!("{}:scale", wt.name),
                    DType::F32,
                    vec![1],
                    scale.to_le_bytes().to_vec(),
                );
                let y = cx.emit(
                    Op::HybridConv {
                        window,
                        group: group as u32,
                        act_min,
                        act_max,
                    },
                    vec![Some(x), Some(wnew), Some(sid), bias],
                    DType::F32,
                    oshape,
                )?;
                return cx.set(o, y, true);
            }
            if int8 {
                let (xt, ft) = (cx.tensor(input(0)?)?.clone(), cx.tensor(input(1)?)?.clone());
                let q = q_conv_params(cx, &xt, &ft, &out_t, opt_i8(opts, act_id)?)?;
                let (qout, rq) = q;
                if bias.is_some_and(|b| {
                    cx.g.tensors[b].dtype != DType::I32 || cx.g.tensors[b].numel() != oshape[1]
                }) {
                    return Err(cx.err(
                        "int8 convolution bias must be int32 with one value per output channel",
                    ));
                }
                let rq_id = requant_const(cx, &rq);
                let y = cx.emit(
                    Op::QConv {
                        window,
                        group: group as u32,
                        x_zp: qout.x_zp,
                        y_zp: qout.y_zp,
                        act_min: qout.act_min,
                        act_max: qout.act_max,
                    },
                    vec![Some(x), Some(wnew), bias, Some(rq_id)],
                    DType::I8,
                    oshape,
                )?;
                return cx.set(o, y, true);
            }
            let y = cx.emit(
                Op::Conv {
                    window,
                    group: group as u32,
                    act,
                },
                vec![Some(x), Some(wnew), bias],
                DType::F32,
                oshape,
            )?;
            cx.set(o, y, true)
        }
        code::AVERAGE_POOL_2D | code::MAX_POOL_2D => {
            let x = cx.get(input(0)?, true)?;
            let xs = cx.g.tensors[x].shape.clone();
            let opts = op.options;
            let same = opt_i8(opts, 0)? == 0;
            let (sw, sh) = (opt_i32(opts, 1, 1)?, opt_i32(opts, 2, 1)?);
            let (kw, kh) = (opt_i32(opts, 3, 1)?, opt_i32(opts, 4, 1)?);
            let act = act_of(cx, 5)?;
            let u = |v: i32| usize::try_from(v).ok().filter(|&v| v >= 1);
            let (Some(sh), Some(sw), Some(kh), Some(kw)) = (u(sh), u(sw), u(kh), u(kw)) else {
                return Err(cx.err("pool sizes and strides must be >= 1"));
            };
            let &[_, _, xh, xw] = &xs[..] else {
                return Err(cx.err(format!("the input must be 4-D, not {xs:?}")));
            };
            let (pt, pb) = tf_pads(same, xh, kh, sh, 1);
            let (pl, pr) = tf_pads(same, xw, kw, sw, 1);
            let window = Window {
                kernel: [kh as u32, kw as u32],
                strides: [sh as u32, sw as u32],
                dilations: [1, 1],
                pads: [pt as u32, pl as u32, pb as u32, pr as u32],
            };
            if out_dt == DType::I8 {
                if op.code != code::AVERAGE_POOL_2D {
                    return Err(cx.err("int8 MAX_POOL_2D is not supported yet"));
                }
                let xt = cx.tensor(input(0)?)?.clone();
                let (xs_, xz) = per_tensor(cx, &xt)?;
                let (ys, yz) = per_tensor(cx, &out_t)?;
                if xs_ != ys || xz != yz {
                    return Err(
                        cx.err("int8 AVERAGE_POOL_2D must keep its input's scale and zero point")
                    );
                }
                if pt >= kh || pb >= kh || pl >= kw || pr >= kw {
                    return Err(cx.err("a pooling window would cover only padding"));
                }
                let (act_min, act_max) = act_range(cx, opt_i8(opts, 5)?, ys, yz)?;
                let y = cx.emit(
                    Op::QAvgPool {
                        window,
                        act_min,
                        act_max,
                    },
                    vec![Some(x)],
                    DType::I8,
                    permute(&out_t.shape, &TO_NCHW)?,
                )?;
                return cx.set(o, y, true);
            }
            let pool = if op.code == code::MAX_POOL_2D {
                Op::MaxPool { window }
            } else {
                // TFLite divides by the number of real (unpadded) inputs.
                Op::AveragePool {
                    window,
                    count_include_pad: false,
                }
            };
            let y = cx.emit(
                pool,
                vec![Some(x)],
                DType::F32,
                permute(&out_t.shape, &TO_NCHW)?,
            )?;
            let y = cx.activation(y, act)?;
            cx.set(o, y, true)
        }
        code::FULLY_CONNECTED if out_dt == DType::I8 => {
            let act = opt_i8(op.options, 0)?;
            q_fully_connected(
                cx,
                input(0)?,
                input(1)?,
                op.inputs.get(2).copied().filter(|&b| b >= 0),
                o,
                act,
            )
        }
        code::FULLY_CONNECTED => {
            let x = cx.get(input(0)?, false)?;
            let (w, _) = cx.stored(input(1)?)?;
            let ws = cx.g.tensors[w].shape.clone();
            if ws.len() != 2 {
                return Err(cx.err("FULLY_CONNECTED weights must be [O, I]"));
            }
            let bias = match op.inputs.get(2).copied().filter(|&b| b >= 0) {
                Some(b) => Some(cx.get(b, false)?),
                None => None,
            };
            let act = act_of(cx, 0)?;
            let xt = cx.g.tensors[x].clone();
            let rows = xt.numel() / ws[1].max(1);
            if rows * ws[1] != xt.numel() {
                return Err(cx.err(format!(
                    "input of {} values is not a multiple of the weights' {} columns",
                    xt.numel(),
                    ws[1]
                )));
            }
            let x2 = if xt.shape.len() == 2 {
                x
            } else {
                cx.emit(Op::Reshape, vec![Some(x)], DType::F32, vec![rows, ws[1]])?
            };
            let y = cx.emit(
                Op::Gemm {
                    trans_a: false,
                    trans_b: true,
                    alpha: 1.0,
                    beta: 1.0,
                    act,
                },
                vec![Some(x2), Some(w), bias],
                DType::F32,
                vec![rows, ws[0]],
            )?;
            let y = if out_t.shape == [rows, ws[0]] {
                y
            } else {
                cx.emit(Op::Reshape, vec![Some(y)], DType::F32, out_t.shape.clone())?
            };
            cx.set(o, y, false)
        }
        code::ADD if out_dt == DType::I8 => {
            let (ai, bi) = (input(0)?, input(1)?);
            let (at, bt) = (cx.tensor(ai)?.clone(), cx.tensor(bi)?.clone());
            if at.shape != bt.shape || at.shape != out_t.shape {
                return Err(
                    cx.err("int8 ADD needs inputs of the output's shape (no broadcasting yet)")
                );
            }
            if dtype_of(at.ty) != Some(DType::I8) || dtype_of(bt.ty) != Some(DType::I8) {
                return Err(cx.err("int8 ADD needs int8 inputs"));
            }
            let ((sa, za), (sb, zb)) = (per_tensor(cx, &at)?, per_tensor(cx, &bt)?);
            let (sy, zy) = per_tensor(cx, &out_t)?;
            // LiteRT's Prepare, with its float/double mix: the doubled max
            // scale in f32, input ratios in f64, 2^20 · output scale in f32.
            let twice = f64::from(2.0 * sa.max(sb));
            let shift = kiln_kernels::quant::ADD_LEFT_SHIFT;
            let ry = twice / f64::from((1u32 << shift) as f32 * sy);
            let pair = |cx: &Cx, r: f64| -> Result<[i32; 2]> {
                let m = kiln_kernels::fixed::Multiplier::new(r)
                    .ok_or_else(|| cx.err(format!("ADD multiplier {r} is out of range")))?;
                Ok([m.mantissa, m.shift])
            };
            let (a_rq, b_rq, y_rq) = (
                pair(cx, f64::from(sa) / twice)?,
                pair(cx, f64::from(sb) / twice)?,
                pair(cx, ry)?,
            );
            let (act_min, act_max) = act_range(cx, opt_i8(op.options, 0)?, sy, zy)?;
            let nchw = at.shape.len() == 4;
            let a = cx.get(ai, nchw)?;
            let b = cx.get(bi, nchw)?;
            let shape = cx.g.tensors[a].shape.clone();
            let y = cx.emit(
                Op::QAdd {
                    a_zp: za,
                    b_zp: zb,
                    y_zp: zy,
                    a_rq,
                    b_rq,
                    y_rq,
                    act_min,
                    act_max,
                },
                vec![Some(a), Some(b)],
                DType::I8,
                shape,
            )?;
            cx.set(o, y, nchw)
        }
        code::ADD | code::MUL | code::SUB => {
            let (a, b) = (input(0)?, input(1)?);
            let ra = cx.tensor(a)?.shape.len();
            let rb = cx.tensor(b)?.shape.len();
            // Compute NCHW when both operands are 4-D (no layout change),
            // else in the TFLite layout.
            let nchw = ra == 4 && rb == 4 && out_t.shape.len() == 4;
            let (xa, xb) = (cx.get(a, nchw)?, cx.get(b, nchw)?);
            let kind = match op.code {
                code::ADD => kiln_format::Binary::Add,
                code::MUL => kiln_format::Binary::Mul,
                _ => kiln_format::Binary::Sub,
            };
            let shape = if nchw {
                permute(&out_t.shape, &TO_NCHW)?
            } else {
                out_t.shape.clone()
            };
            let act = act_of(cx, 0)?;
            let y = cx.emit(
                Op::Binary(kind),
                vec![Some(xa), Some(xb)],
                DType::F32,
                shape,
            )?;
            let y = cx.activation(y, act)?;
            cx.set(o, y, nchw)
        }
        code::RESHAPE | code::SQUEEZE | code::EXPAND_DIMS => {
            let x = cx.get(input(0)?, false)?;
            if cx.g.tensors[x].numel() != out_t.shape.iter().product::<usize>() {
                return Err(cx.err("reshape changes the number of elements"));
            }
            let dt = cx.g.tensors[x].dtype;
            let y = cx.emit(Op::Reshape, vec![Some(x)], dt, out_t.shape.clone())?;
            cx.set(o, y, false)
        }
        code::SOFTMAX if out_dt == DType::I8 => {
            let beta = match op.options {
                Some(t) => t.f32(0, 1.0).map_err(parse_err)?,
                None => 1.0,
            };
            let xt = cx.tensor(input(0)?)?.clone();
            if dtype_of(xt.ty) != Some(DType::I8) {
                return Err(cx.err("int8 SOFTMAX needs an int8 input"));
            }
            let (xs, _) = per_tensor(cx, &xt)?;
            let (ys, yz) = per_tensor(cx, &out_t)?;
            // LiteRT's table, in f32 as it computes it: e^(scale · v) at
            // index 255 - v, i.e. e^(-xs·beta·d) at distance d = max - x.
            let scale = -xs * beta;
            let table: Vec<f32> = (0..256).map(|d| (scale * d as f32).exp()).collect();
            let tid =
                cx.g.const_f32(format!("{}:exp_table", cx.node), vec![256], &table);
            let x = cx.get(input(0)?, false)?;
            let y = cx.emit(
                Op::QSoftmax {
                    y_scale: ys,
                    y_zp: yz,
                },
                vec![Some(x), Some(tid)],
                DType::I8,
                out_t.shape.clone(),
            )?;
            cx.set(o, y, false)
        }
        code::ARG_MAX => {
            // TFLite drops the axis from the output; the IR's ArgMax
            // writes one index per position of the other axes either way.
            let (x, nchw) = cx.stored(input(0)?)?;
            if nchw {
                return Err(cx.err("ARG_MAX over a 4-D activation is not supported yet"));
            }
            let (axis_id, _) = cx.stored(input(1)?)?;
            let rank = cx.g.tensors[x].shape.len() as i64;
            let axis = match cx.int_const(axis_id, "ARG_MAX axis")?[..] {
                [a] if (-rank..rank).contains(&a) => a.rem_euclid(rank) as u8,
                _ => return Err(cx.err("ARG_MAX needs one axis inside the input's rank")),
            };
            if out_dt != DType::I64 {
                return Err(cx.err("ARG_MAX with an int32 output is not supported yet (int64 is)"));
            }
            let y = cx.emit(
                Op::ArgMax {
                    axis,
                    select_last: false,
                    min: false,
                },
                vec![Some(x)],
                DType::I64,
                out_t.shape.clone(),
            )?;
            cx.set(o, y, false)
        }
        code::GATHER | code::CAST => {
            let x = cx.get(input(0)?, false)?;
            let (op_ir, inputs) = if op.code == code::GATHER {
                let axis = opt_i32(op.options, 0, 0)?;
                let rank = cx.g.tensors[x].shape.len() as i32;
                if !(0..rank).contains(&axis) || opt_i32(op.options, 1, 0)? != 0 {
                    return Err(cx.err("GATHER needs a non-negative axis and no batch dims"));
                }
                let indices = cx.get(input(1)?, false)?;
                (
                    Op::Gather { axis: axis as u8 },
                    vec![Some(x), Some(indices)],
                )
            } else {
                let op_ir = Op::Cast {
                    to: out_dt,
                    saturate: false,
                };
                (op_ir, vec![Some(x)])
            };
            let y = cx.emit(op_ir, inputs, out_dt, out_t.shape.clone())?;
            cx.set(o, y, false)
        }
        code::SOFTMAX | code::LOG_SOFTMAX => {
            let log = op.code == code::LOG_SOFTMAX;
            let x = cx.get(input(0)?, false)?;
            let beta = match op.options {
                Some(t) if !log => t.f32(0, 1.0).map_err(parse_err)?,
                _ => 1.0,
            };
            let rank = cx.g.tensors[x].shape.len();
            let x = if beta == 1.0 {
                x
            } else {
                let b = cx.g.const_f32(format!("{}:beta", cx.node), vec![], &[beta]);
                let s = cx.g.tensors[x].shape.clone();
                cx.emit(
                    Op::Binary(kiln_format::Binary::Mul),
                    vec![Some(x), Some(b)],
                    DType::F32,
                    s,
                )?
            };
            let y = cx.emit(
                Op::Softmax {
                    axis: rank.saturating_sub(1) as u8,
                    coerce_2d: false,
                    log,
                },
                vec![Some(x)],
                DType::F32,
                out_t.shape.clone(),
            )?;
            cx.set(o, y, false)
        }
        code::LOGISTIC if out_dt == DType::I8 => {
            let xt = cx.tensor(input(0)?)?.clone();
            let (xs, xz) = per_tensor(cx, &xt)?;
            let (ys, yz) = per_tensor(cx, &out_t)?;
            let table = lut_i8(xs, xz, ys, yz, |v| 1.0 / (1.0 + (-v).exp()));
            let (x, nchw) = cx.stored(input(0)?)?;
            let tid = cx.g.add_const(
                format!("{}:table", cx.node),
                DType::I8,
                vec![256],
                table.iter().map(|&v| v as u8).collect(),
            );
            let shape = cx.g.tensors[x].shape.clone();
            let y = cx.emit(Op::QLookup, vec![Some(x), Some(tid)], DType::I8, shape)?;
            cx.set(o, y, nchw)
        }
        code::LOGISTIC | code::TANH | code::RELU | code::RELU6 => {
            let (x, nchw) = cx.stored(input(0)?)?;
            let u = match op.code {
                code::LOGISTIC => Unary::Sigmoid,
                code::TANH => Unary::Tanh,
                code::RELU => Unary::Relu,
                _ => Unary::Clip { min: 0.0, max: 6.0 },
            };
            let y = cx.activation(x, u)?;
            let y = if y == x {
                let s = cx.g.tensors[x].shape.clone();
                cx.emit(Op::Reshape, vec![Some(x)], DType::F32, s)?
            } else {
                y
            };
            cx.set(o, y, nchw)
        }
        code::MEAN => {
            let (x, nchw) = cx.stored(input(0)?)?;
            let (axes_id, _) = cx.stored(input(1)?)?;
            let rank = cx.g.tensors[x].shape.len();
            let axes = cx.int_const(axes_id, "MEAN axes")?;
            let mut mask = 0u32;
            for a in axes {
                let a = if a < 0 { a + rank as i64 } else { a };
                let a = usize::try_from(a)
                    .ok()
                    .filter(|&a| a < rank)
                    .ok_or_else(|| cx.err("MEAN axis out of range"))?;
                let a = if nchw { TO_NHWC[a] } else { a };
                mask |= 1 << a;
            }
            let keep = match op.options {
                Some(t) => t.bool(0).map_err(parse_err)?,
                None => false,
            };
            let xs = cx.g.tensors[x].shape.clone();
            let shape: Vec<usize> = xs
                .iter()
                .enumerate()
                .filter_map(|(d, &n)| {
                    if mask & (1 << d) == 0 {
                        Some(n)
                    } else if keep {
                        Some(1)
                    } else {
                        None
                    }
                })
                .collect();
            let y = cx.emit(
                Op::Reduce {
                    kind: ReduceKind::Mean,
                    axes: mask,
                },
                vec![Some(x)],
                DType::F32,
                shape,
            )?;
            cx.set(o, y, nchw && keep)
        }
        code::PAD => {
            let x = cx.get(input(0)?, false)?;
            let (pid, _) = cx.stored(input(1)?)?;
            let p = cx.int_const(pid, "PAD paddings")?;
            let rank = cx.g.tensors[x].shape.len();
            if p.len() != 2 * rank || rank > kiln_format::OP_RANK {
                return Err(cx.err("PAD paddings must be [rank, 2]"));
            }
            let mut pads = [0i64; 2 * kiln_format::OP_RANK];
            for d in 0..rank {
                pads[d] = p[2 * d];
                pads[rank + d] = p[2 * d + 1];
            }
            let y = cx.emit(
                Op::Pad {
                    mode: PadMode::Constant,
                    pads,
                    value: 0.0,
                },
                vec![Some(x)],
                DType::F32,
                out_t.shape.clone(),
            )?;
            cx.set(o, y, false)
        }
        code::CONCATENATION => {
            let axis = opt_i32(op.options, 0, 0)?;
            let act = act_of(cx, 1)?;
            let rank = out_t.shape.len() as i32;
            let axis = if axis < 0 { axis + rank } else { axis };
            if !(0..rank).contains(&axis) {
                return Err(cx.err("CONCATENATION axis out of range"));
            }
            let mut ins = vec![];
            for &i in &op.inputs {
                ins.push(Some(cx.get(i, false)?));
            }
            let y = cx.emit(
                Op::Concat { axis: axis as u8 },
                ins,
                DType::F32,
                out_t.shape.clone(),
            )?;
            let y = cx.activation(y, act)?;
            cx.set(o, y, false)
        }
        code::TRANSPOSE => {
            let x = cx.get(input(0)?, false)?;
            let (pid, _) = cx.stored(input(1)?)?;
            let p = cx.int_const(pid, "TRANSPOSE perm")?;
            if p.len() > kiln_format::OP_RANK || p.len() != cx.g.tensors[x].shape.len() {
                return Err(cx.err("TRANSPOSE perm does not match the input rank"));
            }
            let mut perm = [0u8; kiln_format::OP_RANK];
            for (d, &v) in p.iter().enumerate() {
                perm[d] = u8::try_from(v).map_err(|_| cx.err("bad perm"))?;
            }
            let dt = cx.g.tensors[x].dtype;
            let y = cx.emit(
                Op::Transpose { perm },
                vec![Some(x)],
                dt,
                out_t.shape.clone(),
            )?;
            cx.set(o, y, false)
        }
        code::DEQUANTIZE => {
            let i = input(0)?;
            let t = cx.tensor(i)?.clone();
            let (x, _) = cx.stored(i)?;
            if !cx.g.tensors[x].is_const() {
                return Err(cx.err(
                    "DEQUANTIZE of a computed tensor (an integer model) is not supported yet",
                ));
            }
            let src = cx.g.tensors[x].clone();
            let data = src.data.clone().unwrap_or_default();
            let vals: Vec<f32> = match src.dtype {
                DType::F16 => data
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                DType::I8 | DType::U8 => {
                    let n = src.numel();
                    let (scale, zp) = (&t.scale, &t.zero_point);
                    if scale.is_empty() {
                        return Err(cx.err("DEQUANTIZE input has no scale"));
                    }
                    let dims = &src.shape;
                    let inner: usize = dims.get(t.qdim + 1..).map_or(1, |d| d.iter().product());
                    let ch = dims.get(t.qdim).copied().unwrap_or(1);
                    (0..n)
                        .map(|k| {
                            let c = if scale.len() == 1 {
                                0
                            } else {
                                (k / inner) % ch
                            };
                            let q = if src.dtype == DType::I8 {
                                data[k] as i8 as f32
                            } else {
                                data[k] as f32
                            };
                            let s = scale.get(c).copied().unwrap_or(scale[0]);
                            let z = zp.get(c).or(zp.first()).copied().unwrap_or(0) as f32;
                            (q - z) * s
                        })
                        .collect()
                }
                DType::F32 => cx.f32_const(x, "DEQUANTIZE input")?,
                other => return Err(cx.err(format!("DEQUANTIZE from {other} is not supported"))),
            };
            let id =
                cx.g.const_f32(format!("{}:f32", src.name), src.shape, &vals);
            cx.set(o, id, false)
        }
        other => Err(CompileError::UnsupportedOp {
            op: code_name(other),
            domain: "tflite:".into(),
            opset: 3,
            node: cx.node.clone(),
        }),
    }
}
