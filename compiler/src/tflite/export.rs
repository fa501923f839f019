//! `--target tflite`: writes the optimised IR as a LiteRT flatbuffer
//! (schema version 3, one subgraph, a `serving_default` signature naming
//! the graph's inputs and outputs), built with the `flatbuffers` crate's
//! builder from the public schema's field ids.
//!
//! Today: float32 models of fully connected layers (Gemm, MatMul with
//! constant weights), 2-D convolutions (plain and depthwise) and pools,
//! with fused ReLU, ReLU6 and tanh; ReLU, logistic, tanh, (log) softmax
//! over the last axis, reshape, add, sub, mul, div, max and min (with numpy
//! broadcasting); and a classifier's label
//! lookup (argmax, gather, cast over int32/int64). 4-D activations are NCHW
//! in the IR and NHWC in LiteRT's convolutions: each IR tensor gets either
//! TFLite form on demand (`Writer::tensor`, `Writer::nhwc_of`), a TRANSPOSE
//! apart; an IR transpose from NCHW to NHWC is the input's NHWC form
//! itself, any other one a TRANSPOSE. Int8 models from TFLite (fully
//! connected, convolution, depthwise, average pool, softmax, add,
//! transpose) export with the quantization the importer kept
//! (`Graph::quant`); hybrid convolutions (float activations, int8 filter
//! with one scale) go back as CONV_2D with an int8 filter, which LiteRT
//! runs with its dynamic-range kernel. Forward float LSTMs become UNIDIRECTIONAL_SEQUENCE_LSTM
//! (time-major, per-gate weights, zeroed variable states). Any other op
//! (tree ensembles, which LiteRT cannot express; int8 and bidirectional
//! LSTMs) fails with a message naming it, never a broken file.

use crate::error::{CompileError, Result};
use crate::ir::{Graph, TensorId};
use flatbuffers::{FlatBufferBuilder, WIPOffset};
use kiln_format::{Binary, DType, Op, Unary};
use std::collections::HashMap;

use super::code;

/// Builtin options union tags (schema `BuiltinOptions`).
mod options {
    pub const CONV_2D: u8 = 1;
    pub const DEPTHWISE_CONV_2D: u8 = 2;
    pub const POOL_2D: u8 = 5;
    pub const FULLY_CONNECTED: u8 = 8;
    pub const SOFTMAX: u8 = 9;
    pub const ADD: u8 = 11;
    pub const RESHAPE: u8 = 17;
    pub const MUL: u8 = 21;
    pub const PAD: u8 = 22;
    pub const GATHER: u8 = 23;
    pub const TRANSPOSE: u8 = 26;
    pub const REDUCER: u8 = 27;
    pub const SUB: u8 = 28;
    pub const DIV: u8 = 29;
    pub const LOG_SOFTMAX: u8 = 36;
    pub const CAST: u8 = 37;
    pub const ARG_MAX: u8 = 40;
    pub const UNIDIRECTIONAL_SEQUENCE_LSTM: u8 = 71;
}

/// Vtable slot of field `id`.
const fn field(id: u16) -> u16 {
    4 + 2 * id
}

/// Schema `TensorType`.
const FLOAT32: i8 = 0;
const INT32: i8 = 2;
const INT64: i8 = 4;
const INT8: i8 = 9;

/// The `TensorType` of a dtype the export writes.
fn tensor_type(d: DType) -> Option<i8> {
    match d {
        DType::F32 => Some(FLOAT32),
        DType::I32 => Some(INT32),
        DType::I64 => Some(INT64),
        DType::I8 => Some(INT8),
        _ => None,
    }
}

/// Schema `ActivationFunctionType` of a fused activation.
fn fused(act: &Unary, node: &str, op: &str) -> Result<i8> {
    Ok(match act {
        Unary::Identity => 0,
        Unary::Relu => 1,
        Unary::Clip { min, max } if *min == 0.0 && *max == 6.0 => 3,
        Unary::Tanh => 4,
        other => {
            return Err(CompileError::Node {
                node: node.into(),
                op: op.into(),
                detail: format!("LiteRT has no fused activation {other:?}"),
            });
        }
    })
}

/// Why `node` cannot be exported.
fn cannot(node: &crate::ir::Node, why: &str) -> CompileError {
    CompileError::Node {
        node: node.name.clone(),
        op: node.op.name().into(),
        detail: format!("cannot be exported to TFLite: {why}"),
    }
}

/// `node`'s input `k`, which must be present.
fn input_of(node: &crate::ir::Node, k: usize) -> Result<TensorId> {
    node.inputs
        .get(k)
        .copied()
        .flatten()
        .ok_or_else(|| cannot(node, &format!("input {k} is missing")))
}

/// `node`'s first output.
fn output_of(node: &crate::ir::Node) -> Result<TensorId> {
    node.outputs
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| cannot(node, "no output"))
}

/// An IR filter `[m, cg, kh, kw]` in LiteRT's layout: OHWI for CONV_2D,
/// `[1, kh, kw, m]` for DEPTHWISE_CONV_2D; with the axis of its output
/// channels there.
fn lite_filter<T: Copy>(
    wd: &[T],
    [m, cg, kh, kw]: [usize; 4],
    depthwise: bool,
) -> ([usize; 4], Vec<T>, usize) {
    if depthwise {
        let f = (0..kh * kw)
            .flat_map(|t| (0..m).map(move |o| (o, t)))
            .map(|(o, t)| wd[o * kh * kw + t])
            .collect();
        ([1, kh, kw, m], f, 3)
    } else {
        let f = (0..m)
            .flat_map(|o| (0..kh * kw).flat_map(move |t| (0..cg).map(move |i| (o, t, i))))
            .map(|(o, t, i)| wd[(o * cg + i) * kh * kw + t])
            .collect();
        ([m, kh, kw, cg], f, 0)
    }
}

/// Whether a convolution over `c` input channels in `group` groups of
/// `cg` is depthwise; other grouped convolutions have no LiteRT op.
fn depthwise(node: &crate::ir::Node, group: u32, c: usize, cg: usize) -> Result<bool> {
    let depthwise = group as usize == c && cg == 1 && group > 1;
    if group != 1 && !depthwise {
        return Err(cannot(node, "grouped convolutions other than depthwise"));
    }
    Ok(depthwise)
}

/// `node`'s constant float bias at input `k`, one per output channel
/// (`m`); zeros when it has none.
fn channel_bias(g: &Graph, node: &crate::ir::Node, k: usize, m: usize) -> Result<Vec<f32>> {
    match node.inputs.get(k).copied().flatten() {
        Some(b) => g.tensors[b]
            .f32s()
            .filter(|v| v.len() == m)
            .ok_or_else(|| cannot(node, "the bias must be constant, one per channel")),
        None => Ok(vec![0.0; m]),
    }
}

/// The op code and options of a (depthwise) convolution.
fn conv_op(
    depthwise: bool,
    padding: i8,
    window: &kiln_format::Window,
    act: i8,
) -> (i32, (u8, Vec<(u16, Scalar)>)) {
    let [sh, sw] = window.strides.map(|v| v as i32);
    let [dh, dw] = window.dilations.map(|v| v.max(1) as i32);
    let (pad, sw, sh) = (
        (0, Scalar::I8(padding)),
        (1, Scalar::I32(sw)),
        (2, Scalar::I32(sh)),
    );
    if depthwise {
        let rest = [
            (3, Scalar::I32(1)),
            (4, Scalar::I8(act)),
            (5, Scalar::I32(dw)),
            (6, Scalar::I32(dh)),
        ];
        let fields = [pad, sw, sh].into_iter().chain(rest).collect();
        (
            code::DEPTHWISE_CONV_2D,
            (options::DEPTHWISE_CONV_2D, fields),
        )
    } else {
        let rest = [
            (3, Scalar::I8(act)),
            (4, Scalar::I32(dw)),
            (5, Scalar::I32(dh)),
        ];
        let fields = [pad, sw, sh].into_iter().chain(rest).collect();
        (code::CONV_2D, (options::CONV_2D, fields))
    }
}

/// One operator before it is written.
struct OpOut {
    code: i32,
    inputs: Vec<i32>,
    outputs: Vec<i32>,
    /// `(union tag, [(field id, value)])` of a table of scalars.
    options: Option<(u8, Vec<(u16, Scalar)>)>,
    /// ReshapeOptions' `new_shape` (a vector, unlike the scalars).
    new_shape: Option<Vec<i32>>,
}

#[derive(Clone, Copy)]
enum Scalar {
    I8(i8),
    I32(i32),
    F32(f32),
    Bool(bool),
}

/// A tensor before it is written.
struct TensorOut {
    name: String,
    shape: Vec<i32>,
    ty: i8,
    /// Index into the buffers (0: none).
    buffer: u32,
    quant: Option<crate::ir::QuantParams>,
}

struct Writer<'g> {
    g: &'g Graph,
    tensors: Vec<TensorOut>,
    /// IR tensor → TFLite tensor holding it as the IR lays it out.
    index: HashMap<TensorId, i32>,
    /// IR tensor (4-D NCHW activation) → TFLite tensor holding it NHWC,
    /// LiteRT's layout for convolutions and pools. A tensor has either
    /// representation or both: the missing one is a TRANSPOSE away.
    nhwc: HashMap<TensorId, i32>,
    buffers: Vec<Vec<u8>>,
    ops: Vec<OpOut>,
    /// TFLite tensors that are variables (an LSTM's states).
    variables: std::collections::HashSet<i32>,
}

impl Writer<'_> {
    fn dims(shape: &[usize], name: &str) -> Result<Vec<i32>> {
        shape
            .iter()
            .map(|&d| {
                i32::try_from(d).map_err(|_| {
                    CompileError::Invalid(format!("tensor '{name}': dimension {d} exceeds int32"))
                })
            })
            .collect()
    }

    /// The TFLite index of IR tensor `t` (float32; constants get a buffer).
    fn tensor(&mut self, t: TensorId) -> Result<i32> {
        if let Some(&i) = self.index.get(&t) {
            return Ok(i);
        }
        if let Some(&x) = self.nhwc.get(&t) {
            // Back to the IR's NCHW.
            let y = self.new_like(t, &self.g.tensors[t].shape.clone(), "")?;
            self.transpose(x, y, &[0, 3, 1, 2]);
            self.index.insert(t, y);
            return Ok(y);
        }
        let src = &self.g.tensors[t];
        let quant = self.g.quant.get(&t).cloned();
        let Some(ty) = tensor_type(src.dtype).filter(|&ty| ty != INT8 || quant.is_some()) else {
            return Err(CompileError::Invalid(format!(
                "tensor '{}' is {}{}: the TFLite export writes float32 graphs (with int32/int64 indices) and int8 fully connected ones from TFLite",
                src.name,
                src.dtype.name(),
                if src.dtype == DType::I8 {
                    " without known quantization"
                } else {
                    ""
                }
            )));
        };
        let buffer = match &src.data {
            Some(d) => self.buffer(d.to_vec()),
            None => 0,
        };
        let i = self.push(TensorOut {
            name: src.name.clone(),
            shape: Self::dims(&src.shape, &src.name)?,
            ty,
            buffer,
            quant,
        });
        self.index.insert(t, i);
        Ok(i)
    }

    /// IR tensor `t` (4-D, NCHW) as NHWC.
    fn nhwc_of(&mut self, t: TensorId) -> Result<i32> {
        if let Some(&i) = self.nhwc.get(&t) {
            return Ok(i);
        }
        let x = self.tensor(t)?;
        let y = self.define_nhwc(t)?;
        self.transpose(x, y, &[0, 2, 3, 1]);
        Ok(y)
    }

    /// A new TFLite tensor for IR tensor `t` stored NHWC.
    fn define_nhwc(&mut self, t: TensorId) -> Result<i32> {
        let s = &self.g.tensors[t].shape;
        let [n, c, h, w] = s[..] else {
            return Err(CompileError::Invalid(format!(
                "tensor '{}' is not 4-D: it has no NHWC form",
                self.g.tensors[t].name
            )));
        };
        let y = self.new_like(t, &[n, h, w, c], "/nhwc")?;
        self.nhwc.insert(t, y);
        Ok(y)
    }

    /// A new data-less tensor with `t`'s dtype, `shape` and name + `suffix`.
    fn new_like(&mut self, t: TensorId, shape: &[usize], suffix: &str) -> Result<i32> {
        let src = &self.g.tensors[t];
        let name = format!("{}{suffix}", src.name);
        let ty = tensor_type(src.dtype).unwrap_or(FLOAT32);
        let shape = Self::dims(shape, &name)?;
        let quant = self.g.quant.get(&t).cloned();
        Ok(self.push(TensorOut {
            name,
            shape,
            ty,
            buffer: 0,
            quant,
        }))
    }

    /// A constant int32 tensor.
    fn int_const(&mut self, name: String, shape: &[usize], values: &[i32]) -> Result<i32> {
        let buffer = self.buffer(values.iter().flat_map(|v| v.to_le_bytes()).collect());
        let shape = Self::dims(shape, &name)?;
        Ok(self.push(TensorOut {
            name,
            shape,
            ty: INT32,
            buffer,
            quant: None,
        }))
    }

    /// TRANSPOSE `x` → `y` by `perm` (4-D).
    fn transpose(&mut self, x: i32, y: i32, perm: &[i32]) {
        let name = format!("{}/perm", self.tensors[y as usize].name);
        let buffer = self.buffer(perm.iter().flat_map(|v| v.to_le_bytes()).collect());
        let p = self.push(TensorOut {
            name,
            shape: vec![perm.len() as i32],
            ty: INT32,
            buffer,
            quant: None,
        });
        self.op(code::TRANSPOSE, vec![x, p], vec![y]).options = Some((options::TRANSPOSE, vec![]));
    }

    /// An NHWC input for a window op with `window` over IR input `x`
    /// (`[n, c, h, w]`), and LiteRT's padding code: SAME or VALID when the
    /// pads are what those mean, else (`zero_pad_ok`) a PAD op then VALID.
    fn windowed(
        &mut self,
        x: TensorId,
        window: &kiln_format::Window,
        zero_pad_ok: bool,
    ) -> std::result::Result<(i32, i8), String> {
        let s = self.g.tensors[x].shape.clone();
        let [_, _, h, w] = s[..] else {
            return Err("the input is not 4-D".into());
        };
        let [t, l, b, r] = window.pads.map(|p| p as usize);
        let xn = self.nhwc_of(x).map_err(|e| e.to_string())?;
        if window.pads == [0; 4] {
            return Ok((xn, 1));
        }
        let same = |len: usize, k: u32, stride: u32, dil: u32| {
            let (k, stride, dil) = (k as usize, stride.max(1) as usize, dil.max(1) as usize);
            let out = len.div_ceil(stride);
            let total = ((out - 1) * stride + (k - 1) * dil + 1).saturating_sub(len);
            (total / 2, total - total / 2)
        };
        let (ph, pw) = (
            same(h, window.kernel[0], window.strides[0], window.dilations[0]),
            same(w, window.kernel[1], window.strides[1], window.dilations[1]),
        );
        if (t, b) == ph && (l, r) == pw {
            return Ok((xn, 0));
        }
        if !zero_pad_ok {
            return Err("its padding is neither SAME nor VALID".into());
        }
        let pads = [0, 0, t as i32, b as i32, l as i32, r as i32, 0, 0];
        let name = format!("{}/padded", self.g.tensors[x].name);
        let pads_t = self
            .int_const(format!("{name}/pads"), &[4, 2], &pads)
            .map_err(|e| e.to_string())?;
        let c = s[1];
        let shape =
            Self::dims(&[s[0], h + t + b, w + l + r, c], &name).map_err(|e| e.to_string())?;
        // Int8 pads with the zero point, which is what the IR's padding
        // contributes (nothing).
        let ty = tensor_type(self.g.tensors[x].dtype).unwrap_or(FLOAT32);
        let quant = self.g.quant.get(&x).cloned();
        let y = self.push(TensorOut {
            name,
            shape,
            ty,
            buffer: 0,
            quant,
        });
        self.op(code::PAD, vec![xn, pads_t], vec![y]).options = Some((options::PAD, vec![]));
        Ok((y, 1))
    }

    /// Conv `n` as CONV_2D or DEPTHWISE_CONV_2D, NHWC in and out.
    fn conv(
        &mut self,
        n: usize,
        window: &kiln_format::Window,
        group: u32,
        act: Unary,
    ) -> Result<()> {
        let g = self.g;
        let node = &g.nodes[n];
        let (x, wt, out) = (input_of(node, 0)?, input_of(node, 1)?, output_of(node)?);
        let w = &g.tensors[wt];
        let (Some(wd), &[m, cg, kh, kw], &[_, c, _, _]) =
            (w.f32s(), &w.shape[..], &g.tensors[x].shape[..])
        else {
            return Err(cannot(node, "only 2-D convolutions with constant weights"));
        };
        let depthwise = depthwise(node, group, c, cg)?;
        let bias = channel_bias(g, node, 2, m)?;
        let act = fused(&act, &node.name, node.op.name())?;
        let (xn, padding) = self
            .windowed(x, window, true)
            .map_err(|e| cannot(node, &e))?;
        let (shape, filter, _) = lite_filter(&wd, [m, cg, kh, kw], depthwise);
        let filter_t = self.constant(format!("{}/filter", w.name), &shape, &filter)?;
        let bias_t = self.constant(format!("{}/bias", node.name), &[m], &bias)?;
        let y = self.define_nhwc(out)?;
        let (code, options) = conv_op(depthwise, padding, window, act);
        self.op(code, vec![xn, filter_t, bias_t], vec![y]).options = Some(options);
        Ok(())
    }

    /// LiteRT's fused activation for an int8 clamp `[lo, hi]` of output
    /// `out` (`CalculateActivationRangeQuantized`: none, ReLU, ReLU6).
    fn clamp_act(&self, out: TensorId, lo: i32, hi: i32) -> std::result::Result<i8, String> {
        let q = self
            .g
            .quant
            .get(&out)
            .ok_or("the output's quantization is unknown")?;
        let (Some(&ys), Some(&zp)) = (q.scales.first(), q.zero_points.first()) else {
            return Err("the output's quantization is empty".into());
        };
        let zp = zp as i32;
        let relu_min = zp.max(-128);
        let six = (zp as f32 + (6.0 / ys).round()).min(127.0) as i32;
        match (lo, hi) {
            (-128, 127) => Ok(0),
            (lo, 127) if lo == relu_min => Ok(1),
            (lo, hi) if lo == relu_min && hi == six => Ok(3),
            _ => Err(format!(
                "its clamp [{lo}, {hi}] is no LiteRT fused activation"
            )),
        }
    }

    /// Int8 QConv `n` as CONV_2D or DEPTHWISE_CONV_2D, NHWC in and out,
    /// with the filter's per-channel scales and the int32 bias as imported.
    fn qconv(&mut self, n: usize, window: &kiln_format::Window, group: u32, act: i8) -> Result<()> {
        let g = self.g;
        let node = &g.nodes[n];
        let (x, wt, out) = (input_of(node, 0)?, input_of(node, 1)?, output_of(node)?);
        let bias =
            input_of(node, 2).map_err(|_| cannot(node, "an int8 convolution needs its bias"))?;
        let w = &g.tensors[wt];
        let (Some(wd), &[m, cg, kh, kw], &[_, c, _, _], Some(wq)) = (
            &w.data,
            &w.shape[..],
            &g.tensors[x].shape[..],
            g.quant.get(&wt),
        ) else {
            return Err(cannot(
                node,
                "only 2-D convolutions with quantized constant weights",
            ));
        };
        let depthwise = depthwise(node, group, c, cg)?;
        let (xn, padding) = self
            .windowed(x, window, true)
            .map_err(|e| cannot(node, &e))?;
        let (scales, zero_points) = (wq.scales.clone(), wq.zero_points.clone());
        let filter_t = self.int8_filter(
            &w.name,
            wd,
            [m, cg, kh, kw],
            depthwise,
            (scales, zero_points),
        )?;
        let bias_t = self.tensor(bias)?;
        let y = self.define_nhwc(out)?;
        let (code, options) = conv_op(depthwise, padding, window, act);
        self.op(code, vec![xn, filter_t, bias_t], vec![y]).options = Some(options);
        Ok(())
    }

    /// An IR int8 filter `[m, cg, kh, kw]` (bytes `wd`) as LiteRT's filter
    /// tensor, with its scales and zero points on LiteRT's channel axis.
    fn int8_filter(
        &mut self,
        name: &str,
        wd: &[u8],
        dims: [usize; 4],
        depthwise: bool,
        (scales, zero_points): (Vec<f32>, Vec<i64>),
    ) -> Result<i32> {
        let (shape, filter, axis) = lite_filter(wd, dims, depthwise);
        let buffer = self.buffer(filter);
        let name = format!("{name}/filter");
        let shape = Self::dims(&shape, &name)?;
        Ok(self.push(TensorOut {
            name,
            shape,
            ty: INT8,
            buffer,
            quant: Some(crate::ir::QuantParams {
                scales,
                zero_points,
                axis,
            }),
        }))
    }

    /// A hybrid (dynamic-range) convolution `n`: float input and output,
    /// int8 filter with its one scale, float bias; LiteRT quantizes the
    /// input per call as Kiln's kernel does.
    fn hybrid_conv(
        &mut self,
        n: usize,
        window: &kiln_format::Window,
        group: u32,
        act: i8,
    ) -> Result<()> {
        let g = self.g;
        let node = &g.nodes[n];
        let (x, wt, st, out) = (
            input_of(node, 0)?,
            input_of(node, 1)?,
            input_of(node, 2)?,
            output_of(node)?,
        );
        let w = &g.tensors[wt];
        let (Some(wd), &[m, cg, kh, kw], &[_, c, _, _], Some(&[scale])) = (
            &w.data,
            &w.shape[..],
            &g.tensors[x].shape[..],
            g.tensors[st].f32s().as_deref(),
        ) else {
            return Err(cannot(
                node,
                "only 2-D convolutions with constant int8 weights and one scale",
            ));
        };
        let depthwise = depthwise(node, group, c, cg)?;
        let bias = channel_bias(g, node, 3, m)?;
        let (xn, padding) = self
            .windowed(x, window, true)
            .map_err(|e| cannot(node, &e))?;
        let filter_t = self.int8_filter(
            &w.name,
            wd,
            [m, cg, kh, kw],
            depthwise,
            (vec![scale], vec![0]),
        )?;
        let bias_t = self.constant(format!("{}/bias", node.name), &[m], &bias)?;
        let y = self.define_nhwc(out)?;
        let (code, options) = conv_op(depthwise, padding, window, act);
        self.op(code, vec![xn, filter_t, bias_t], vec![y]).options = Some(options);
        Ok(())
    }

    /// MaxPool or AveragePool `n`, NHWC in and out.
    fn pool(
        &mut self,
        n: usize,
        window: &kiln_format::Window,
        max: bool,
        include_pad: bool,
        act: i8,
    ) -> Result<()> {
        let g = self.g;
        let node = &g.nodes[n];
        let (x, out) = (input_of(node, 0)?, output_of(node)?);
        if window.dilations.iter().any(|&d| d > 1) || (include_pad && window.pads != [0; 4]) {
            return Err(cannot(node, "dilated pools and pools counting padding"));
        }
        let (xn, padding) = self
            .windowed(x, window, false)
            .map_err(|e| cannot(node, &e))?;
        let y = self.define_nhwc(out)?;
        let [sh, sw] = window.strides.map(|v| v as i32);
        let [kh, kw] = window.kernel.map(|v| v as i32);
        let code = if max {
            code::MAX_POOL_2D
        } else {
            code::AVERAGE_POOL_2D
        };
        self.op(code, vec![xn], vec![y]).options = Some((
            options::POOL_2D,
            vec![
                (0, Scalar::I8(padding)),
                (1, Scalar::I32(sw)),
                (2, Scalar::I32(sh)),
                (3, Scalar::I32(kw)),
                (4, Scalar::I32(kh)),
                (5, Scalar::I8(act)),
            ],
        ));
        Ok(())
    }

    fn buffer(&mut self, data: Vec<u8>) -> u32 {
        self.buffers.push(data);
        (self.buffers.len() - 1) as u32
    }

    fn push(&mut self, t: TensorOut) -> i32 {
        self.tensors.push(t);
        (self.tensors.len() - 1) as i32
    }

    /// A new constant float32 tensor.
    fn constant(&mut self, name: String, shape: &[usize], values: &[f32]) -> Result<i32> {
        let buffer = self.buffer(values.iter().flat_map(|v| v.to_le_bytes()).collect());
        let shape = Self::dims(shape, &name)?;
        Ok(self.push(TensorOut {
            name,
            shape,
            ty: FLOAT32,
            buffer,
            quant: None,
        }))
    }

    /// Writes op `code` whose own output has `shape`; when the IR's output
    /// `out` has another shape (the same elements: a kept dimension, a
    /// folded reshape), a RESHAPE follows.
    fn op_into(
        &mut self,
        code: i32,
        inputs: Vec<i32>,
        out: TensorId,
        shape: &[usize],
        options: Option<(u8, Vec<(u16, Scalar)>)>,
    ) -> Result<()> {
        let target = self.g.tensors[out].shape.clone();
        if target == shape {
            let y = self.tensor(out)?;
            self.op(code, inputs, vec![y]).options = options;
            return Ok(());
        }
        let name = format!("{}/unshaped", self.g.tensors[out].name);
        let ty = tensor_type(self.g.tensors[out].dtype).unwrap_or(FLOAT32);
        let dims = Self::dims(shape, &name)?;
        let mid = self.push(TensorOut {
            name,
            shape: dims,
            ty,
            buffer: 0,
            quant: None,
        });
        self.op(code, inputs, vec![mid]).options = options;
        self.reshape(mid, out)
    }

    /// RESHAPE of TFLite tensor `x` into IR tensor `out`'s shape.
    fn reshape(&mut self, x: i32, out: TensorId) -> Result<()> {
        let name = self.g.tensors[out].name.clone();
        let shape = Self::dims(&self.g.tensors[out].shape, &name)?;
        let bytes: Vec<u8> = shape.iter().flat_map(|d| d.to_le_bytes()).collect();
        let buffer = self.buffer(bytes);
        let shape_t = self.push(TensorOut {
            name: format!("{name}/shape"),
            shape: vec![shape.len() as i32],
            ty: INT32,
            buffer,
            quant: None,
        });
        let y = self.tensor(out)?;
        let op = self.op(code::RESHAPE, vec![x, shape_t], vec![y]);
        op.new_shape = Some(shape);
        Ok(())
    }

    fn op(&mut self, code: i32, inputs: Vec<i32>, outputs: Vec<i32>) -> &mut OpOut {
        self.ops.push(OpOut {
            code,
            inputs,
            outputs,
            options: None,
            new_shape: None,
        });
        let last = self.ops.len() - 1;
        &mut self.ops[last]
    }

    /// Gemm or MatMul `n` as FULLY_CONNECTED: a 2-D input times constant
    /// 2-D weights (`trans_b`: stored `[units, depth]`), optional constant
    /// bias, fused activation; `plain`: no scaling and A not transposed.
    fn fully_connected(&mut self, n: usize, trans_b: bool, plain: bool, act: Unary) -> Result<()> {
        let g = self.g;
        let node = &g.nodes[n];
        let name = node.name.clone();
        let unsupported = |why: &str| cannot(node, why);
        let input = |k: usize| input_of(node, k);
        let out = output_of(node)?;
        let (x, w) = (input(0)?, input(1)?);
        let xs = &self.g.tensors[x].shape;
        let wt = &self.g.tensors[w];
        let (Some(wd), [a, b], 2, true) = (wt.f32s(), &wt.shape[..], xs.len(), plain) else {
            return Err(unsupported(
                "only 2-D inputs times constant 2-D weights (alpha = beta = 1, A not transposed) map to FULLY_CONNECTED",
            ));
        };
        // FULLY_CONNECTED wants weights [units, depth].
        let (units, depth) = if trans_b { (*a, *b) } else { (*b, *a) };
        let weights: Vec<f32> = if trans_b {
            wd
        } else {
            (0..units)
                .flat_map(|u| (0..depth).map(move |d| (u, d)))
                .map(|(u, d)| wd[d * units + u])
                .collect()
        };
        let mut inputs = vec![self.tensor(x)?];
        inputs.push(self.constant(format!("{}/weights", wt.name), &[units, depth], &weights)?);
        if let Some(bias) = node.inputs.get(2).copied().flatten() {
            let bt = &self.g.tensors[bias];
            let Some(bv) = bt.f32s().filter(|v| v.len() == units) else {
                return Err(unsupported(
                    "the bias must be a constant of one value per unit",
                ));
            };
            inputs.push(self.constant(format!("{}/bias", bt.name), &[units], &bv)?);
        }
        let act = fused(&act, &name, node.op.name())?;
        let y = self.tensor(out)?;
        self.op(code::FULLY_CONNECTED, inputs, vec![y]).options =
            Some((options::FULLY_CONNECTED, vec![(0, Scalar::I8(act))]));
        Ok(())
    }

    /// A forward, sequence-major float LSTM `n` (the IR's ONNX-style
    /// `Lstm`, or `LstmCellClip`) as `UNIDIRECTIONAL_SEQUENCE_LSTM`
    /// (time-major): per-gate weights and one bias per gate (ONNX's input
    /// and recurrent biases summed), zero-initialised variable states, the
    /// output reshaped to the IR's `[steps, 1, batch, hidden]`.
    fn lstm(
        &mut self,
        n: usize,
        hidden: u32,
        acts: &[kiln_format::RnnAct; 3],
        cell_clip: f32,
    ) -> Result<()> {
        use kiln_format::RnnAct;
        let g = self.g;
        let node = &g.nodes[n];
        let unsupported = |why: &str| cannot(node, why);
        let act = match acts {
            [RnnAct::Sigmoid, RnnAct::Tanh, RnnAct::Tanh] => 4,
            [RnnAct::Sigmoid, RnnAct::Relu, RnnAct::Relu] => 1,
            _ => {
                return Err(unsupported(
                    "LiteRT's LSTM has sigmoid gates and one tanh or ReLU activation",
                ));
            }
        };
        if node.inputs.iter().skip(4).any(Option::is_some) {
            return Err(unsupported(
                "sequence lengths, initial states and peepholes are not exported yet",
            ));
        }
        // Only Y: LiteRT's LSTM has no final-state outputs.
        let read = |t: TensorId| {
            g.outputs.contains(&t) || g.nodes.iter().any(|m| m.inputs.contains(&Some(t)))
        };
        if node.outputs.iter().skip(1).flatten().any(|&t| read(t)) {
            return Err(unsupported(
                "the final hidden or cell state is used: LiteRT's LSTM gives the sequence only",
            ));
        }
        let (x, out) = (input_of(node, 0)?, output_of(node)?);
        let h = hidden as usize;
        let &[steps, batch, features] = g.tensors[x].shape.as_slice() else {
            return Err(unsupported("the input must be [steps, batch, features]"));
        };
        let weights = |k: usize, cols: usize| -> Result<Vec<f32>> {
            let t = &g.tensors[input_of(node, k)?];
            t.f32s()
                .filter(|v| v.len() == 4 * h * cols)
                .ok_or_else(|| unsupported("weights must be float32 constants of one direction"))
        };
        let (w, r) = (weights(1, features)?, weights(2, h)?);
        let b = match node.inputs.get(3).copied().flatten() {
            Some(t) => g.tensors[t]
                .f32s()
                .filter(|v| v.len() == 8 * h)
                .ok_or_else(|| {
                    unsupported("the bias must be a float32 constant of 8 × hidden values")
                })?,
            None => vec![0.0; 8 * h],
        };
        let name = node.name.clone();
        // TFLite gate order i, f, c, o; ONNX stores i, o, f, c.
        const ONNX: [usize; 4] = [0, 2, 3, 1];
        let mut inputs = vec![self.tensor(x)?];
        for (m, cols, what) in [(&w, features, "input"), (&r, h, "recurrent")] {
            for (gate, &k) in ["i", "f", "c", "o"].iter().zip(&ONNX) {
                let rows = &m[k * h * cols..(k + 1) * h * cols];
                inputs.push(self.constant(format!("{name}/{what}_to_{gate}"), &[h, cols], rows)?);
            }
        }
        inputs.extend([-1, -1, -1]);
        for (gate, &k) in ["i", "f", "c", "o"].iter().zip(&ONNX) {
            let sum: Vec<f32> = (0..h)
                .map(|j| b[k * h + j] + b[4 * h + k * h + j])
                .collect();
            inputs.push(self.constant(format!("{name}/{gate}_bias"), &[h], &sum)?);
        }
        inputs.extend([-1, -1]);
        for state in ["output_state", "cell_state"] {
            let t = self.push(TensorOut {
                name: format!("{name}/{state}"),
                shape: Self::dims(&[batch, h], &name)?,
                ty: FLOAT32,
                buffer: 0,
                quant: None,
            });
            self.variables.insert(t);
            inputs.push(t);
        }
        inputs.extend([-1, -1, -1, -1]);
        let y = self.new_like(out, &[steps, batch, h], "/sequence")?;
        self.op(code::UNIDIRECTIONAL_SEQUENCE_LSTM, inputs, vec![y])
            .options = Some((
            options::UNIDIRECTIONAL_SEQUENCE_LSTM,
            vec![
                (0, Scalar::I8(act)),
                (1, Scalar::F32(cell_clip)),
                (2, Scalar::F32(0.0)),
                (3, Scalar::Bool(true)),
            ],
        ));
        self.reshape(y, out)
    }

    fn node(&mut self, n: usize) -> Result<()> {
        let g = self.g;
        let node = &g.nodes[n];
        let name = node.name.clone();
        let unsupported = |why: &str| cannot(node, why);
        let input = |k: usize| input_of(node, k);
        let out = output_of(node)?;
        match &node.op {
            Op::Gemm {
                trans_a,
                trans_b,
                alpha,
                beta,
                act,
            } => {
                let plain = !*trans_a && *alpha == 1.0 && *beta == 1.0;
                self.fully_connected(n, *trans_b, plain, *act)?;
            }
            Op::MatMul { act } => self.fully_connected(n, false, true, *act)?,
            Op::Conv { window, group, act } => self.conv(n, window, *group, *act)?,
            Op::MaxPool { window } => self.pool(n, window, true, false, 0)?,
            Op::AveragePool {
                window,
                count_include_pad,
            } => self.pool(n, window, false, *count_include_pad, 0)?,
            Op::QAvgPool {
                window,
                act_min,
                act_max,
            } => {
                let act = self
                    .clamp_act(out, *act_min, *act_max)
                    .map_err(|e| unsupported(&e))?;
                self.pool(n, window, false, false, act)?;
            }
            Op::QConv {
                window,
                group,
                act_min,
                act_max,
                ..
            } => {
                let act = self
                    .clamp_act(out, *act_min, *act_max)
                    .map_err(|e| unsupported(&e))?;
                self.qconv(n, window, *group, act)?;
            }
            Op::HybridConv {
                window,
                group,
                act_min,
                act_max,
            } => {
                let act = match (*act_min, *act_max) {
                    (lo, hi) if lo == f32::NEG_INFINITY && hi == f32::INFINITY => 0,
                    (lo, hi) if lo == 0.0 && hi == f32::INFINITY => 1,
                    (lo, hi) if lo == 0.0 && hi == 6.0 => 3,
                    (lo, hi) => {
                        return Err(unsupported(&format!(
                            "its clamp [{lo}, {hi}] is no LiteRT fused activation"
                        )));
                    }
                };
                self.hybrid_conv(n, window, *group, act)?;
            }
            Op::QSoftmax { .. } => {
                let (x, y) = (self.tensor(input(0)?)?, self.tensor(out)?);
                self.op(code::SOFTMAX, vec![x], vec![y]).options =
                    Some((options::SOFTMAX, vec![(0, Scalar::F32(1.0))]));
            }
            Op::QAdd {
                act_min, act_max, ..
            } => {
                let act = self
                    .clamp_act(out, *act_min, *act_max)
                    .map_err(|e| unsupported(&e))?;
                let (a, c) = (input(0)?, input(1)?);
                let (inputs, y) = if self.nhwc.contains_key(&a) || self.nhwc.contains_key(&c) {
                    (
                        vec![self.nhwc_of(a)?, self.nhwc_of(c)?],
                        self.define_nhwc(out)?,
                    )
                } else {
                    (vec![self.tensor(a)?, self.tensor(c)?], self.tensor(out)?)
                };
                self.op(code::ADD, inputs, vec![y]).options =
                    Some((options::ADD, vec![(0, Scalar::I8(act))]));
            }
            Op::GlobalAveragePool => {
                let x = self.nhwc_of(input(0)?)?;
                let axes = self.int_const(format!("{name}/axes"), &[2], &[1, 2])?;
                let y = self.define_nhwc(out)?;
                self.op(code::MEAN, vec![x, axes], vec![y]).options =
                    Some((options::REDUCER, vec![(0, Scalar::I8(1))]));
            }
            Op::Transpose { perm }
                if g.tensors[input(0)?].shape.len() == 4
                    && perm[..4] == [0, 3, 1, 2]
                    && !self.nhwc.contains_key(&input(0)?) =>
            {
                // NHWC → NCHW of a tensor LiteRT holds as NHWC anyway (a
                // TFLite model's input): the same TFLite tensor.
                let x = self.tensor(input(0)?)?;
                self.nhwc.insert(out, x);
            }
            Op::Transpose { perm }
                if g.tensors[input(0)?].shape.len() == 4 && perm[..4] == [0, 2, 3, 1] =>
            {
                // NCHW → NHWC: the input's NHWC form (which a convolution
                // before it produced already).
                let y = self.nhwc_of(input(0)?)?;
                self.index.insert(out, y);
            }
            Op::Transpose { perm } => {
                let rank = g.tensors[input(0)?].shape.len();
                if !(1..=6).contains(&rank) {
                    return Err(unsupported("LiteRT transposes tensors of rank 1 to 6"));
                }
                let perm: Vec<i32> = perm[..rank].iter().map(|&p| i32::from(p)).collect();
                let (x, y) = (self.tensor(input(0)?)?, self.tensor(out)?);
                self.transpose(x, y, &perm);
            }
            Op::QFullyConnected {
                act_min, act_max, ..
            } => {
                let (x, w) = (input(0)?, input(1)?);
                let act = self
                    .clamp_act(out, *act_min, *act_max)
                    .map_err(|e| unsupported(&e))?;
                let mut inputs = vec![self.tensor(x)?, self.tensor(w)?];
                if let Some(b) = node.inputs.get(2).copied().flatten() {
                    inputs.push(self.tensor(b)?);
                }
                let y = self.tensor(out)?;
                self.op(code::FULLY_CONNECTED, inputs, vec![y]).options =
                    Some((options::FULLY_CONNECTED, vec![(0, Scalar::I8(act))]));
            }
            Op::Unary(u) => {
                let code = match u {
                    Unary::Relu => code::RELU,
                    Unary::Sigmoid => code::LOGISTIC,
                    Unary::Tanh => code::TANH,
                    other => return Err(unsupported(&format!("no TFLite op for {other:?}"))),
                };
                let x = input(0)?;
                // Elementwise: in whichever layout the input already has.
                let (xi, y) = if self.nhwc.contains_key(&x) {
                    (self.nhwc_of(x)?, self.define_nhwc(out)?)
                } else {
                    (self.tensor(x)?, self.tensor(out)?)
                };
                self.op(code, vec![xi], vec![y]);
            }
            Op::Softmax { axis, log, .. } => {
                let rank = self.g.tensors[input(0)?].shape.len();
                if usize::from(*axis) + 1 != rank {
                    return Err(unsupported("TFLite's SOFTMAX runs over the last axis only"));
                }
                let (x, y) = (self.tensor(input(0)?)?, self.tensor(out)?);
                let op = if *log {
                    self.op(code::LOG_SOFTMAX, vec![x], vec![y])
                } else {
                    self.op(code::SOFTMAX, vec![x], vec![y])
                };
                op.options = Some(if *log {
                    (options::LOG_SOFTMAX, vec![])
                } else {
                    (options::SOFTMAX, vec![(0, Scalar::F32(1.0))])
                });
            }
            Op::Reshape => {
                let x = self.tensor(input(0)?)?;
                self.reshape(x, out)?;
            }
            Op::ArgMax {
                axis,
                select_last: false,
                min: false,
            } => {
                let x = input(0)?;
                let mut shape = self.g.tensors[x].shape.clone();
                let axis = usize::from(*axis);
                if axis >= shape.len() || self.g.tensors[out].dtype != DType::I64 {
                    return Err(unsupported("an int64 ArgMax over an axis of its input"));
                }
                shape.remove(axis);
                let buffer = self.buffer((axis as i32).to_le_bytes().to_vec());
                let axis_t = self.push(TensorOut {
                    name: format!("{name}/axis"),
                    shape: vec![1],
                    ty: INT32,
                    buffer,
                    quant: None,
                });
                let inputs = vec![self.tensor(x)?, axis_t];
                let options = Some((options::ARG_MAX, vec![(0, Scalar::I8(INT64))]));
                self.op_into(code::ARG_MAX, inputs, out, &shape, options)?;
            }
            Op::Gather { axis } => {
                let (params, indices) = (input(0)?, input(1)?);
                let (ps, is) = (
                    &self.g.tensors[params].shape,
                    &self.g.tensors[indices].shape,
                );
                let axis = usize::from(*axis);
                if axis >= ps.len() {
                    return Err(unsupported("the gather axis is past the data's rank"));
                }
                // TFLite's GATHER takes no negative indices: constant ones
                // are checked here, computed ones (an ArgMax) are not negative.
                if let Some(data) = &self.g.tensors[indices].data {
                    let negative = match self.g.tensors[indices].dtype {
                        DType::I64 => data
                            .chunks_exact(8)
                            .any(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) < 0),
                        _ => data
                            .chunks_exact(4)
                            .any(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) < 0),
                    };
                    if negative {
                        return Err(unsupported("TFLite's GATHER takes no negative indices"));
                    }
                }
                let shape: Vec<usize> = ps[..axis]
                    .iter()
                    .chain(is)
                    .chain(&ps[axis + 1..])
                    .copied()
                    .collect();
                let inputs = vec![self.tensor(params)?, self.tensor(indices)?];
                let options = Some((options::GATHER, vec![(0, Scalar::I32(axis as i32))]));
                self.op_into(code::GATHER, inputs, out, &shape, options)?;
            }
            Op::Cast { to, .. } => {
                let x = input(0)?;
                let (Some(from), Some(to)) =
                    (tensor_type(self.g.tensors[x].dtype), tensor_type(*to))
                else {
                    return Err(unsupported("only casts among float32, int32 and int64"));
                };
                let shape = self.g.tensors[x].shape.clone();
                let inputs = vec![self.tensor(x)?];
                let options = Some((
                    options::CAST,
                    vec![(0, Scalar::I8(from)), (1, Scalar::I8(to))],
                ));
                self.op_into(code::CAST, inputs, out, &shape, options)?;
            }
            Op::Binary(b) => {
                let (code, tag) = match b {
                    Binary::Add => (code::ADD, Some(options::ADD)),
                    Binary::Sub => (code::SUB, Some(options::SUB)),
                    Binary::Mul => (code::MUL, Some(options::MUL)),
                    Binary::Div => (code::DIV, Some(options::DIV)),
                    Binary::Max => (code::MAXIMUM, None),
                    Binary::Min => (code::MINIMUM, None),
                    other => return Err(unsupported(&format!("no TFLite op for {other:?}"))),
                };
                let (a, c) = (input(0)?, input(1)?);
                let same = self.g.tensors[a].shape == self.g.tensors[c].shape;
                let nhwc = self.nhwc.contains_key(&a) || self.nhwc.contains_key(&c);
                let (inputs, y) = if nhwc && same {
                    // Elementwise in the layout the operands already have.
                    (
                        vec![self.nhwc_of(a)?, self.nhwc_of(c)?],
                        self.define_nhwc(out)?,
                    )
                } else {
                    // LiteRT broadcasts these ops as numpy (and the IR) do,
                    // in the IR's layout.
                    (vec![self.tensor(a)?, self.tensor(c)?], self.tensor(out)?)
                };
                // The fused activation, where the op has one: none.
                let options = tag.map(|t| (t, vec![(0, Scalar::I8(0))]));
                self.op(code, inputs, vec![y]).options = options;
            }
            Op::Lstm {
                hidden,
                direction: kiln_format::RnnDirection::Forward,
                batch_first: false,
                acts,
                clip: None,
                input_forget: false,
            } => self.lstm(n, *hidden, acts, 0.0)?,
            Op::LstmCellClip {
                hidden,
                acts,
                cell_clip,
            } => self.lstm(n, *hidden, acts, *cell_clip)?,
            Op::TreeEnsemble { .. } => {
                return Err(unsupported(
                    "LiteRT has no tree ensemble op (keep the .kiln artifact, or serve it with kiln serve)",
                ));
            }
            other => {
                return Err(unsupported(&format!(
                    "{} is not exported yet",
                    other.name()
                )));
            }
        }
        Ok(())
    }
}

/// The flatbuffer of `g`, whose graph inputs and outputs are named
/// `input_names` and `output_names` in the `serving_default` signature.
pub fn export(
    g: &Graph,
    input_names: &[String],
    output_names: &[String],
    description: &str,
) -> Result<Vec<u8>> {
    // Buffer 0 is the empty buffer of every tensor without data.
    let mut w = Writer {
        g,
        tensors: vec![],
        index: HashMap::new(),
        nhwc: HashMap::new(),
        buffers: vec![vec![]],
        ops: vec![],
        variables: Default::default(),
    };
    let inputs: Vec<i32> = g
        .inputs
        .iter()
        .map(|&t| w.tensor(t))
        .collect::<Result<_>>()?;
    for n in 0..g.nodes.len() {
        w.node(n)?;
    }
    let outputs: Vec<i32> = g
        .outputs
        .iter()
        .map(|&t| w.tensor(t))
        .collect::<Result<_>>()?;
    Ok(write(
        &w,
        &inputs,
        &outputs,
        input_names,
        output_names,
        description,
    ))
}

fn write(
    w: &Writer<'_>,
    inputs: &[i32],
    outputs: &[i32],
    input_names: &[String],
    output_names: &[String],
    description: &str,
) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    // Operator codes, one per distinct builtin.
    let mut codes: Vec<i32> = w.ops.iter().map(|o| o.code).collect();
    codes.sort_unstable();
    codes.dedup();
    let code_tables: Vec<_> = codes
        .iter()
        .map(|&c| {
            let t = b.start_table();
            b.push_slot::<i8>(field(0), c.min(127) as i8, 0);
            b.push_slot::<i32>(field(2), 1, 1);
            b.push_slot::<i32>(field(3), c, 0);
            b.end_table(t)
        })
        .collect();
    let operator_codes = b.create_vector(&code_tables);

    let tensor_tables: Vec<_> = w
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let shape = b.create_vector(&t.shape);
            let name = b.create_string(&t.name);
            // QuantizationParameters: scale, zero_point, quantized_dimension.
            let quant = t.quant.as_ref().map(|q| {
                let scales = b.create_vector(&q.scales);
                let zero_points = b.create_vector(&q.zero_points);
                // An axis past the rank (person_detect's biases declare 3)
                // means axis 0, as the importer reads it.
                let axis = if q.axis < t.shape.len() { q.axis } else { 0 };
                let qt = b.start_table();
                b.push_slot_always(field(2), scales);
                b.push_slot_always(field(3), zero_points);
                b.push_slot::<i32>(field(6), axis as i32, 0);
                b.end_table(qt)
            });
            let tt = b.start_table();
            b.push_slot_always(field(0), shape);
            b.push_slot::<i8>(field(1), t.ty, 0);
            b.push_slot::<u32>(field(2), t.buffer, 0);
            b.push_slot_always(field(3), name);
            if let Some(q) = quant {
                b.push_slot_always(field(4), q);
            }
            b.push_slot::<bool>(field(5), w.variables.contains(&(i as i32)), false);
            b.end_table(tt)
        })
        .collect();
    let tensors = b.create_vector(&tensor_tables);

    let op_tables: Vec<_> = w
        .ops
        .iter()
        .map(|o| {
            let ins = b.create_vector(&o.inputs);
            let outs = b.create_vector(&o.outputs);
            let new_shape = o.new_shape.as_ref().map(|s| b.create_vector(s));
            let opts = o.options.as_ref().map(|(_, fields)| {
                let t = b.start_table();
                for &(id, v) in fields {
                    match v {
                        Scalar::I8(x) => b.push_slot_always::<i8>(field(id), x),
                        Scalar::I32(x) => b.push_slot_always::<i32>(field(id), x),
                        Scalar::F32(x) => b.push_slot_always::<f32>(field(id), x),
                        Scalar::Bool(x) => b.push_slot_always::<bool>(field(id), x),
                    }
                }
                b.end_table(t)
            });
            let reshape_opts = new_shape.map(|s| {
                let t = b.start_table();
                b.push_slot_always(field(0), s);
                b.end_table(t)
            });
            let opcode = codes.binary_search(&o.code).unwrap_or(0) as u32;
            let t = b.start_table();
            b.push_slot::<u32>(field(0), opcode, 0);
            b.push_slot_always(field(1), ins);
            b.push_slot_always(field(2), outs);
            if let (Some((tag, _)), Some(opts)) = (&o.options, opts) {
                b.push_slot::<u8>(field(3), *tag, 0);
                b.push_slot_always(field(4), opts);
            } else if let Some(opts) = reshape_opts {
                b.push_slot::<u8>(field(3), options::RESHAPE, 0);
                b.push_slot_always(field(4), opts);
            }
            b.end_table(t)
        })
        .collect();
    let operators = b.create_vector(&op_tables);
    let sub_inputs = b.create_vector(inputs);
    let sub_outputs = b.create_vector(outputs);
    let sub_name = b.create_string("main");
    let t = b.start_table();
    b.push_slot_always(field(0), tensors);
    b.push_slot_always(field(1), sub_inputs);
    b.push_slot_always(field(2), sub_outputs);
    b.push_slot_always(field(3), operators);
    b.push_slot_always(field(4), sub_name);
    let subgraph = b.end_table(t);
    let subgraphs = b.create_vector(&[subgraph]);

    let buffer_tables: Vec<_> = w
        .buffers
        .iter()
        .map(|data| {
            let v = (!data.is_empty()).then(|| b.create_vector(data));
            let t = b.start_table();
            if let Some(v) = v {
                b.push_slot_always(field(0), v);
            }
            b.end_table(t)
        })
        .collect();
    let buffers = b.create_vector(&buffer_tables);

    let sig_inputs = tensor_maps(&mut b, input_names, inputs);
    let sig_outputs = tensor_maps(&mut b, output_names, outputs);
    let key = b.create_string("serving_default");
    let t = b.start_table();
    b.push_slot_always(field(0), sig_inputs);
    b.push_slot_always(field(1), sig_outputs);
    b.push_slot_always(field(2), key);
    b.push_slot::<u32>(field(4), 0, 0);
    let signature = b.end_table(t);
    let signatures = b.create_vector(&[signature]);

    let description = b.create_string(description);
    let t = b.start_table();
    b.push_slot::<u32>(field(0), 3, 0);
    b.push_slot_always(field(1), operator_codes);
    b.push_slot_always(field(2), subgraphs);
    b.push_slot_always(field(3), description);
    b.push_slot_always(field(4), buffers);
    b.push_slot_always(field(7), signatures);
    let model = b.end_table(t);
    b.finish(model, Some("TFL3"));
    b.finished_data().to_vec()
}

/// A signature's `[TensorMap]`: each name with its tensor index.
fn tensor_maps<'b>(
    b: &mut FlatBufferBuilder<'b>,
    names: &[String],
    ids: &[i32],
) -> WIPOffset<
    flatbuffers::Vector<'b, flatbuffers::ForwardsUOffset<flatbuffers::TableFinishedWIPOffset>>,
> {
    let tables: Vec<_> = names
        .iter()
        .zip(ids)
        .map(|(n, &i)| {
            let name = b.create_string(n);
            let t = b.start_table();
            b.push_slot_always(field(0), name);
            b.push_slot::<u32>(field(1), i as u32, 0);
            b.end_table(t)
        })
        .collect();
    b.create_vector(&tables)
}
