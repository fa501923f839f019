//! Operator descriptions as stored in the artifact.
//!
//! Shapes are not repeated here: every tensor's shape is in the tensor table,
//! so attributes hold only what shapes cannot say. Variant tags are part of
//! the format: append new variants at the end of an enum, never reorder.

use crate::DType;
use serde::{Deserialize, Serialize};

/// Maximum rank handled by shape-generic ops (transpose, slice, pad, reduce).
pub const OP_RANK: usize = 8;

/// One element-wise function of one input. Also used as a fused activation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Unary {
    Identity,
    Relu,
    LeakyRelu { alpha: f32 },
    Clip { min: f32, max: f32 },
    Sigmoid,
    HardSigmoid { alpha: f32, beta: f32 },
    HardSwish,
    Tanh,
    Erf,
    Gelu { tanh_approx: bool },
    Exp,
    Log,
    Neg,
    Abs,
    Sqrt,
    Reciprocal,
    Floor,
    Ceil,
    Round,
    Sign,
    Sin,
    Cos,
    Softplus,
    Softsign,
    Elu { alpha: f32 },
    Selu { alpha: f32, gamma: f32 },
    Not,
    IsNaN,
    IsInf { pos: bool, neg: bool },
    Celu { alpha: f32 },
    ThresholdedRelu { alpha: f32 },
    Mish,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    Shrink { bias: f32, lambd: f32 },
}

/// One element-wise function of two broadcast inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    /// Integer `fmod = 0`: sign of the divisor; floats: C `fmod`.
    Mod {
        fmod: bool,
    },
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
    Xor,
    BitShiftLeft,
    BitShiftRight,
    BitAnd,
    BitOr,
    BitXor,
    PRelu,
}

/// Spatial attributes of Conv / ConvTranspose / pooling, for 1 or 2 spatial
/// dims (a 1-D op is stored as 2-D with height 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub kernel: [u32; 2],
    pub strides: [u32; 2],
    pub dilations: [u32; 2],
    /// top, left, bottom, right
    pub pads: [u32; 4],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Norm {
    Max,
    L1,
    L2,
}

/// Post transform of the ONNX-ML tree and linear classifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PostTransform {
    None,
    Softmax,
    Logistic,
    SoftmaxZero,
    Probit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RnnDirection {
    Forward,
    Reverse,
    Bidirectional,
}

/// Activation functions allowed inside recurrent cells.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum RnnAct {
    Sigmoid,
    Tanh,
    Relu,
    HardSigmoid { alpha: f32, beta: f32 },
    Affine { alpha: f32, beta: f32 },
    LeakyRelu { alpha: f32 },
    ScaledTanh { alpha: f32, beta: f32 },
    Elu { alpha: f32 },
    Softsign,
    Softplus,
    ThresholdedRelu { alpha: f32 },
}

/// One operator with its attributes. Inputs and outputs are in the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// `y = f(x)`.
    Unary(Unary),
    /// `y = a op b` with numpy broadcasting.
    Binary(Binary),
    /// Copies bytes unchanged: Reshape, Flatten, Squeeze, Unsqueeze, Identity.
    Reshape,
    /// `Y = act(alpha * A' * B' + beta * C)`; inputs A, B, optional C (broadcast to [M, N]).
    Gemm {
        trans_a: bool,
        trans_b: bool,
        alpha: f32,
        beta: f32,
        act: Unary,
    },
    /// numpy matmul with batch broadcasting; optional fused bias (input 2, broadcast over the last dim) and activation.
    MatMul {
        act: Unary,
    },
    /// NCHW convolution; inputs X, W [M, C/group, kh, kw], optional B [M].
    Conv {
        window: Window,
        group: u32,
        act: Unary,
    },
    /// NCHW transposed convolution; inputs X, W [C, M/group, kh, kw], optional B.
    ConvTranspose {
        window: Window,
        group: u32,
    },
    MaxPool {
        window: Window,
    },
    AveragePool {
        window: Window,
        count_include_pad: bool,
    },
    LpPool {
        window: Window,
        p: u32,
    },
    GlobalAveragePool,
    GlobalMaxPool,
    /// Softmax over `axis` (when `coerce_2d`, over all dims from `axis` on: opset < 13).
    Softmax {
        axis: u8,
        coerce_2d: bool,
        log: bool,
    },
    Transpose {
        perm: [u8; OP_RANK],
    },
    Concat {
        axis: u8,
    },
    /// Output element `i` along each dim reads input `start[d] + i * step[d]`.
    Slice {
        start: [i64; OP_RANK],
        step: [i64; OP_RANK],
    },
    /// Cuts the input along `axis` into the outputs, in order.
    Split {
        axis: u8,
    },
    /// Gather along `axis`; indices may be negative.
    Gather {
        axis: u8,
    },
    GatherElements {
        axis: u8,
    },
    /// Constant / reflect / edge padding; `pads` = begins then ends per dim (may be negative).
    Pad {
        mode: PadMode,
        pads: [i64; 2 * OP_RANK],
        value: f64,
    },
    Cast {
        to: DType,
        saturate: bool,
    },
    /// Reduce over the axes set in `axes` (bit mask). The output shape says whether dims were kept.
    Reduce {
        kind: ReduceKind,
        axes: u32,
    },
    ArgMax {
        axis: u8,
        select_last: bool,
        min: bool,
    },
    /// Normalises over the dims from `axis` on; inputs X, scale, optional bias.
    LayerNorm {
        axis: u8,
        epsilon: f32,
    },
    /// Inference batch norm on NCHW; inputs X, scale, bias, mean, var.
    BatchNorm {
        epsilon: f32,
    },
    InstanceNorm {
        epsilon: f32,
    },
    /// `y = cond ? a : b` broadcast.
    Where,
    /// Broadcast copy to the output shape.
    Expand,
    Tile,
    /// Inputs indices, depth (constant, in the shape), values [off, on]; axis in the output.
    OneHot {
        axis: u8,
    },
    /// ONNX LSTM; inputs X, W, R, B?, seq_lens?, h0?, c0?, P?; outputs Y?, Y_h?, Y_c?.
    Lstm {
        hidden: u32,
        direction: RnnDirection,
        batch_first: bool,
        acts: [RnnAct; 3],
        clip: Option<f32>,
        input_forget: bool,
    },
    /// ONNX GRU; inputs X, W, R, B?, seq_lens?, h0?; outputs Y?, Y_h?.
    Gru {
        hidden: u32,
        direction: RnnDirection,
        batch_first: bool,
        acts: [RnnAct; 2],
        linear_before_reset: bool,
        clip: Option<f32>,
    },
    /// ONNX-ML Normalizer on the last axis.
    Normalizer {
        norm: Norm,
    },
    /// ONNX-ML tree ensemble, compiled to a flat node table.
    /// Inputs: X [N, F], nodes (i32 [n, 4]: feature, true child, false child, mode),
    /// thresholds (f32 [n]), leaf targets (i32 [L, 2]: node, target), leaf weights (f32 [L]),
    /// roots (i32 [T]), base values (f32 [targets]).
    /// Outputs: scores [N, targets] after `post`.
    TreeEnsemble {
        aggregate: TreeAggregate,
        post: PostTransform,
        binary_single_score: bool,
    },
    /// Element `i` of `values` at index `argmax` per row; labels lookup for classifiers.
    /// Inputs scores [N, C], labels (i64 [C]); output i64 [N].
    ArgMaxLabel,
    /// Post transforms of ONNX-ML classifiers on [N, C] scores.
    PostTransform {
        post: PostTransform,
    },
    /// DequantizeLinear: y = (x - zp) * scale, per tensor or per `axis`.
    Dequantize {
        axis: u8,
    },
    /// QuantizeLinear with round half to even and saturation.
    Quantize {
        axis: u8,
    },
    /// Integer-exact QLinearConv: x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias?.
    QLinearConv {
        window: Window,
        group: u32,
    },
    /// Cumulative sum along `axis`.
    CumSum {
        axis: u8,
        exclusive: bool,
        reverse: bool,
    },
    DepthToSpace {
        block: u32,
        crd: bool,
    },
    SpaceToDepth {
        block: u32,
    },
    /// Elementwise sum/max/min/mean of any number of broadcast inputs.
    Variadic {
        kind: Binary,
        mean: bool,
    },
    Trilu {
        upper: bool,
        k: i64,
    },
    LRN {
        size: u32,
        alpha: f32,
        beta: f32,
        bias: f32,
    },
    ScatterElements {
        axis: u8,
    },
    /// TFLite int8 `FULLY_CONNECTED`: x i8 `[rows, depth]`, w i8
    /// `[units, depth]` (symmetric), bias i32 `[units]` (optional),
    /// requantization i32 `[1 or units, 2]` (Q31 mantissa, shift of
    /// `real = mantissa · 2^(shift - 31)`); output i8 `[rows, units]`
    /// clamped to `[act_min, act_max]` (the fused activation).
    QFullyConnected {
        x_zp: i32,
        y_zp: i32,
        act_min: i32,
        act_max: i32,
    },
    /// TFLite int8 `SOFTMAX` over the last axis: x i8, table f32 `[256]`
    /// (`e^(-input_scale·beta·d)` for `d = max - x`); output i8 with
    /// `y_scale`, `y_zp` (see `kiln_kernels::quant::softmax_i8`).
    QSoftmax {
        y_scale: f32,
        y_zp: i32,
    },
    /// TFLite int8 `CONV_2D` / `DEPTHWISE_CONV_2D` (NCHW): x i8, w i8
    /// `[M, C/group, KH, KW]` (symmetric), bias i32 `[M]` (optional),
    /// requantization i32 `[1 or M, 2]` as in `QFullyConnected`; output i8.
    QConv {
        window: Window,
        group: u32,
        x_zp: i32,
        y_zp: i32,
        act_min: i32,
        act_max: i32,
    },
    /// TFLite int8 `AVERAGE_POOL_2D` (NCHW, input and output share their
    /// quantization): rounded mean of the in-bounds window, clamped.
    QAvgPool {
        window: Window,
        act_min: i32,
        act_max: i32,
    },
    /// TFLite int8 `ADD` of two same-shaped tensors: each input minus its
    /// zero point, shifted left 20 and rescaled (`a_rq`, `b_rq`: mantissa,
    /// shift), summed, requantized by `y_rq`, plus `y_zp`, clamped.
    QAdd {
        a_zp: i32,
        b_zp: i32,
        y_zp: i32,
        a_rq: [i32; 2],
        b_rq: [i32; 2],
        y_rq: [i32; 2],
        act_min: i32,
        act_max: i32,
    },
    /// ONNX DynamicQuantizeLinear: x f32 → y u8, y_scale f32 `[]`, y_zp u8 `[]`.
    DynamicQuantize,
    /// ONNX MatMulInteger (`linear = false`: a, b, a_zp?, b_zp? → i32) or
    /// QLinearMatMul (`linear = true`: a, a_scale, a_zp, b, b_scale, b_zp,
    /// y_scale, y_zp → (u)int8). Operands `[..., M, K]` and `[..., K, N]`
    /// (B may be 2-D and shared by every batch).
    QMatMul {
        linear: bool,
    },
    /// ONNX ConvInteger: x, w, x_zp?, w_zp? → i32 (the accumulation of
    /// QLinearConv without its requantization).
    ConvInteger {
        window: Window,
        group: u32,
    },
    /// Dynamic-range quantized fully connected layer: x f32 `[rows, depth]`,
    /// w i8 `[units, depth]` (symmetric per unit), w_scale f32 `[units]`,
    /// bias f32 `[units]` (optional); output f32 `[rows, units]` after `act`.
    /// Each input row is quantized to int8 over its own range per call (see
    /// `kiln_kernels::quant::dyn_fully_connected`).
    DynFullyConnected {
        act: Unary,
    },
    /// `QConv` with its weights packed ahead of time by the compiler (not
    /// depthwise; input zero point in int8): x i8 NCHW, w i8
    /// `[M, KH, KW, 4·ceil(C/group/4)]` (OHWI, input channels zero-padded to
    /// a multiple of 4), bias i32 `[M]` holding `bias - (128 + x_zp)·Σ w`,
    /// requantization as `QConv`; output i8 (see
    /// `kiln_kernels::quant::conv2d_i8_packed`). Same bytes as `QConv`.
    QConvPacked {
        window: Window,
        group: u32,
        x_zp: i32,
        y_zp: i32,
        act_min: i32,
        act_max: i32,
    },
    /// `QFullyConnected` with its weights packed ahead of time by the
    /// compiler (input zero point in int8): x i8 `[rows, depth]`, w i8
    /// `[ceil(units/16), ceil(depth/4), 16, 4]` (blocks of 16 units, tails
    /// zero), bias i32 `[units]` holding `bias - (128 + x_zp)·Σ w`,
    /// requantization as `QFullyConnected`; output i8 `[rows, units]` (see
    /// `kiln_kernels::quant::fully_connected_i8_packed`). Same bytes.
    QFullyConnectedPacked {
        x_zp: i32,
        y_zp: i32,
        act_min: i32,
        act_max: i32,
    },
    /// TFLite int8x8_16 `UNIDIRECTIONAL_SEQUENCE_LSTM` (no peephole,
    /// projection or layer norm; the state starts at real zero on every run:
    /// the cell at 0, the hidden state at `state_zp`):
    /// x i8 `[batch, steps, input]` (`[steps, batch, input]` if
    /// `time_major`), w i8 `[4, cell, input]` and r i8 `[4, cell, cell]` in
    /// gate order input, forget, cell, output, bias i32 `[8, cell]` (input-
    /// then recurrent-side effective biases, zero points folded in),
    /// requantization i32 `[9, 2]` (input-side gates, recurrent-side gates,
    /// hidden); output i8 laid out as x with `cell` features (see
    /// `kiln_kernels::qlstm`).
    QLstm {
        time_major: bool,
        cifg: bool,
        cell_log2: i8,
        cell_clip: i16,
        hidden_zp: i32,
        state_zp: i32,
    },
    /// TFLite float `UNIDIRECTIONAL_SEQUENCE_LSTM` with a `cell_clip`: a
    /// forward, sequence-major `Lstm` (inputs X, W, R, B in ONNX gate
    /// order; output Y) whose cell state is clipped to `±cell_clip` after
    /// every update (ONNX's `clip` bounds the gate inputs instead).
    LstmCellClip {
        hidden: u32,
        acts: [RnnAct; 3],
        cell_clip: f32,
    },
    /// An int8 elementwise function as a table: x i8, table i8 `[256]`
    /// indexed by the input's byte (`x as u8`); output i8 of x's shape.
    /// The compiler fills the table as LiteRT's `LUTPopulate` does (int8
    /// `LOGISTIC`).
    QLookup,
    /// TFLite hybrid (dynamic-range) `CONV_2D` (NCHW): x f32, w i8
    /// `[M, C/group, KH, KW]` with one scale, w_scale f32 `[1]`, bias f32
    /// `[M]` (optional); each batch entry of x is quantized symmetrically
    /// per call, convolved in int32 and scaled back, then clamped to
    /// `[act_min, act_max]` (see `kiln_kernels::quant::hybrid_conv2d`).
    HybridConv {
        window: Window,
        group: u32,
        act_min: f32,
        act_max: f32,
    },
    /// A constant stored sparse, expanded right before its use: mask u8
    /// `[ceil(n / 8)]` (bit `i % 8` of byte `i / 8` set when element `i`
    /// is stored), values `[count of set bits]`; output of the values'
    /// dtype with `n` elements, zero where the mask is clear. The compiler
    /// writes it for weights that magnitude pruning left mostly zero.
    Densify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeAggregate {
    Sum,
    Average,
    Max,
    Min,
}

impl Op {
    /// The variant's position in [`Op`], which is also its tag in the
    /// artifact (`decode.rs`): `1 << op.tag()` is its bit in the engine's
    /// op sets ([`crate::View::op_set`]).
    pub fn tag(&self) -> u8 {
        match self {
            Op::Unary(_) => 0,
            Op::Binary(_) => 1,
            Op::Reshape => 2,
            Op::Gemm { .. } => 3,
            Op::MatMul { .. } => 4,
            Op::Conv { .. } => 5,
            Op::ConvTranspose { .. } => 6,
            Op::MaxPool { .. } => 7,
            Op::AveragePool { .. } => 8,
            Op::LpPool { .. } => 9,
            Op::GlobalAveragePool => 10,
            Op::GlobalMaxPool => 11,
            Op::Softmax { .. } => 12,
            Op::Transpose { .. } => 13,
            Op::Concat { .. } => 14,
            Op::Slice { .. } => 15,
            Op::Split { .. } => 16,
            Op::Gather { .. } => 17,
            Op::GatherElements { .. } => 18,
            Op::Pad { .. } => 19,
            Op::Cast { .. } => 20,
            Op::Reduce { .. } => 21,
            Op::ArgMax { .. } => 22,
            Op::LayerNorm { .. } => 23,
            Op::BatchNorm { .. } => 24,
            Op::InstanceNorm { .. } => 25,
            Op::Where => 26,
            Op::Expand => 27,
            Op::Tile => 28,
            Op::OneHot { .. } => 29,
            Op::Lstm { .. } => 30,
            Op::Gru { .. } => 31,
            Op::Normalizer { .. } => 32,
            Op::TreeEnsemble { .. } => TREE_ENSEMBLE_TAG as u8,
            Op::ArgMaxLabel => 34,
            Op::PostTransform { .. } => 35,
            Op::Dequantize { .. } => 36,
            Op::Quantize { .. } => 37,
            Op::QLinearConv { .. } => 38,
            Op::CumSum { .. } => 39,
            Op::DepthToSpace { .. } => 40,
            Op::SpaceToDepth { .. } => 41,
            Op::Variadic { .. } => 42,
            Op::Trilu { .. } => 43,
            Op::LRN { .. } => 44,
            Op::ScatterElements { .. } => 45,
            Op::QFullyConnected { .. } => 46,
            Op::QSoftmax { .. } => 47,
            Op::QConv { .. } => 48,
            Op::QAvgPool { .. } => 49,
            Op::QAdd { .. } => 50,
            Op::DynamicQuantize => 51,
            Op::QMatMul { .. } => 52,
            Op::ConvInteger { .. } => 53,
            Op::DynFullyConnected { .. } => 54,
            Op::QConvPacked { .. } => 55,
            Op::QFullyConnectedPacked { .. } => 56,
            Op::QLstm { .. } => 57,
            Op::LstmCellClip { .. } => 58,
            Op::QLookup => 59,
            Op::HybridConv { .. } => 60,
            Op::Densify => 61,
        }
    }

    /// Short name for histograms and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Unary(_) => "Unary",
            Op::Binary(_) => "Binary",
            Op::Reshape => "Reshape",
            Op::Gemm { .. } => "Gemm",
            Op::MatMul { .. } => "MatMul",
            Op::Conv { .. } => "Conv",
            Op::ConvTranspose { .. } => "ConvTranspose",
            Op::MaxPool { .. } => "MaxPool",
            Op::AveragePool { .. } => "AveragePool",
            Op::LpPool { .. } => "LpPool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::GlobalMaxPool => "GlobalMaxPool",
            Op::Softmax { log: false, .. } => "Softmax",
            Op::Softmax { log: true, .. } => "LogSoftmax",
            Op::Transpose { .. } => "Transpose",
            Op::Concat { .. } => "Concat",
            Op::Slice { .. } => "Slice",
            Op::Split { .. } => "Split",
            Op::Gather { .. } => "Gather",
            Op::GatherElements { .. } => "GatherElements",
            Op::Pad { .. } => "Pad",
            Op::Cast { .. } => "Cast",
            Op::Densify => "Densify",
            Op::Reduce { .. } => "Reduce",
            Op::ArgMax { .. } => "ArgMax",
            Op::LayerNorm { .. } => "LayerNorm",
            Op::BatchNorm { .. } => "BatchNorm",
            Op::InstanceNorm { .. } => "InstanceNorm",
            Op::Where => "Where",
            Op::Expand => "Expand",
            Op::Tile => "Tile",
            Op::OneHot { .. } => "OneHot",
            Op::Lstm { .. } => "LSTM",
            Op::Gru { .. } => "GRU",
            Op::Normalizer { .. } => "Normalizer",
            Op::TreeEnsemble { .. } => "TreeEnsemble",
            Op::ArgMaxLabel => "ArgMaxLabel",
            Op::PostTransform { .. } => "PostTransform",
            Op::Dequantize { .. } => "Dequantize",
            Op::Quantize { .. } => "Quantize",
            Op::QLinearConv { .. } => "QLinearConv",
            Op::CumSum { .. } => "CumSum",
            Op::DepthToSpace { .. } => "DepthToSpace",
            Op::SpaceToDepth { .. } => "SpaceToDepth",
            Op::Variadic { .. } => "Variadic",
            Op::Trilu { .. } => "Trilu",
            Op::LRN { .. } => "LRN",
            Op::ScatterElements { .. } => "ScatterElements",
            Op::QFullyConnected { .. } => "QFullyConnected",
            Op::QSoftmax { .. } => "QSoftmax",
            Op::QConv { .. } => "QConv",
            Op::QAvgPool { .. } => "QAvgPool",
            Op::QAdd { .. } => "QAdd",
            Op::DynamicQuantize => "DynamicQuantizeLinear",
            Op::QMatMul { linear: false } => "MatMulInteger",
            Op::QMatMul { linear: true } => "QLinearMatMul",
            Op::ConvInteger { .. } => "ConvInteger",
            Op::DynFullyConnected { .. } => "DynFullyConnected",
            Op::QConvPacked { .. } => "QConvPacked",
            Op::QFullyConnectedPacked { .. } => "QFullyConnectedPacked",
            Op::QLstm { .. } => "QLstm",
            Op::LstmCellClip { .. } => "LstmCellClip",
            Op::QLookup => "QLookup",
            Op::HybridConv { .. } => "HybridConv",
        }
    }
}

// Decoding (see `decode.rs`): tags are variant positions, fields in
// declaration order. Append here when appending a variant above.

use crate::decode::{Decode, Reader};

/// Unit-only enums: the variant at the decoded position of `all`.
fn pick<T: Copy, const N: usize>(r: &mut Reader<'_>, all: [T; N]) -> T {
    all[r.tag(N as u32) as usize]
}

impl Decode<'_> for Unary {
    fn decode(r: &mut Reader<'_>) -> Self {
        use Unary::*;
        match r.tag(42) {
            0 => Identity,
            1 => Relu,
            2 => LeakyRelu { alpha: r.f32() },
            3 => Clip {
                min: r.f32(),
                max: r.f32(),
            },
            4 => Sigmoid,
            5 => HardSigmoid {
                alpha: r.f32(),
                beta: r.f32(),
            },
            6 => HardSwish,
            7 => Tanh,
            8 => Erf,
            9 => Gelu {
                tanh_approx: r.bool(),
            },
            10 => Exp,
            11 => Log,
            12 => Neg,
            13 => Abs,
            14 => Sqrt,
            15 => Reciprocal,
            16 => Floor,
            17 => Ceil,
            18 => Round,
            19 => Sign,
            20 => Sin,
            21 => Cos,
            22 => Softplus,
            23 => Softsign,
            24 => Elu { alpha: r.f32() },
            25 => Selu {
                alpha: r.f32(),
                gamma: r.f32(),
            },
            26 => Not,
            27 => IsNaN,
            28 => IsInf {
                pos: r.bool(),
                neg: r.bool(),
            },
            29 => Celu { alpha: r.f32() },
            30 => ThresholdedRelu { alpha: r.f32() },
            31 => Mish,
            32 => Tan,
            33 => Asin,
            34 => Acos,
            35 => Atan,
            36 => Sinh,
            37 => Cosh,
            38 => Asinh,
            39 => Acosh,
            40 => Atanh,
            _ => Shrink {
                bias: r.f32(),
                lambd: r.f32(),
            },
        }
    }
}

impl Decode<'_> for Binary {
    fn decode(r: &mut Reader<'_>) -> Self {
        use Binary::*;
        match r.tag(22) {
            0 => Add,
            1 => Sub,
            2 => Mul,
            3 => Div,
            4 => Pow,
            5 => Max,
            6 => Min,
            7 => Mod { fmod: r.bool() },
            8 => Equal,
            9 => Less,
            10 => LessOrEqual,
            11 => Greater,
            12 => GreaterOrEqual,
            13 => And,
            14 => Or,
            15 => Xor,
            16 => BitShiftLeft,
            17 => BitShiftRight,
            18 => BitAnd,
            19 => BitOr,
            20 => BitXor,
            _ => PRelu,
        }
    }
}

impl Decode<'_> for Window {
    fn decode(r: &mut Reader<'_>) -> Self {
        Window {
            kernel: r.each(Reader::u32),
            strides: r.each(Reader::u32),
            dilations: r.each(Reader::u32),
            pads: r.each(Reader::u32),
        }
    }
}

impl Decode<'_> for ReduceKind {
    fn decode(r: &mut Reader<'_>) -> Self {
        use ReduceKind::*;
        pick(
            r,
            [
                Sum, Mean, Max, Min, Prod, L1, L2, LogSum, LogSumExp, SumSquare,
            ],
        )
    }
}

impl Decode<'_> for PadMode {
    fn decode(r: &mut Reader<'_>) -> Self {
        use PadMode::*;
        pick(r, [Constant, Reflect, Edge, Wrap])
    }
}

impl Decode<'_> for Norm {
    fn decode(r: &mut Reader<'_>) -> Self {
        pick(r, [Norm::Max, Norm::L1, Norm::L2])
    }
}

impl Decode<'_> for PostTransform {
    fn decode(r: &mut Reader<'_>) -> Self {
        use PostTransform::*;
        pick(r, [None, Softmax, Logistic, SoftmaxZero, Probit])
    }
}

impl Decode<'_> for RnnDirection {
    fn decode(r: &mut Reader<'_>) -> Self {
        use RnnDirection::*;
        pick(r, [Forward, Reverse, Bidirectional])
    }
}

impl Decode<'_> for TreeAggregate {
    fn decode(r: &mut Reader<'_>) -> Self {
        use TreeAggregate::*;
        pick(r, [Sum, Average, Max, Min])
    }
}

impl Default for RnnAct {
    /// Only fills arrays while decoding.
    fn default() -> Self {
        RnnAct::Sigmoid
    }
}

impl Decode<'_> for RnnAct {
    fn decode(r: &mut Reader<'_>) -> Self {
        use RnnAct::*;
        match r.tag(11) {
            0 => Sigmoid,
            1 => Tanh,
            2 => Relu,
            3 => HardSigmoid {
                alpha: r.f32(),
                beta: r.f32(),
            },
            4 => Affine {
                alpha: r.f32(),
                beta: r.f32(),
            },
            5 => LeakyRelu { alpha: r.f32() },
            6 => ScaledTanh {
                alpha: r.f32(),
                beta: r.f32(),
            },
            7 => Elu { alpha: r.f32() },
            8 => Softsign,
            9 => Softplus,
            _ => ThresholdedRelu { alpha: r.f32() },
        }
    }
}

impl Decode<'_> for Op {
    fn decode(r: &mut Reader<'_>) -> Self {
        Op::decode_in::<{ u128::MAX }>(r)
    }
}

/// [`Op::tag`] of `TreeEnsemble` (whose load-time checks a runtime built
/// without it leaves out).
pub const TREE_ENSEMBLE_TAG: u32 = 33;

/// Whether op set `ops` (bit [`Op::tag`] of each op) holds `tag`.
pub const fn in_op_set(ops: u128, tag: u32) -> bool {
    tag < 128 && (ops >> tag) & 1 == 1
}

impl Op {
    /// Decodes an op of the set `OPS` (a constant: the arms of the other
    /// ops are compiled out, so a firmware links only its model's
    /// decoders); any other op is a decode error.
    pub(crate) fn decode_in<const OPS: u128>(r: &mut Reader<'_>) -> Op {
        let q4 = |r: &mut Reader<'_>| [r.i32(), r.i32(), r.i32(), r.i32()];
        match r.tag(62) {
            0 if in_op_set(OPS, 0) => Op::Unary(r.get()),
            1 if in_op_set(OPS, 1) => Op::Binary(r.get()),
            2 if in_op_set(OPS, 2) => Op::Reshape,
            3 if in_op_set(OPS, 3) => Op::Gemm {
                trans_a: r.bool(),
                trans_b: r.bool(),
                alpha: r.f32(),
                beta: r.f32(),
                act: r.get(),
            },
            4 if in_op_set(OPS, 4) => Op::MatMul { act: r.get() },
            5 if in_op_set(OPS, 5) => Op::Conv {
                window: r.get(),
                group: r.u32(),
                act: r.get(),
            },
            6 if in_op_set(OPS, 6) => Op::ConvTranspose {
                window: r.get(),
                group: r.u32(),
            },
            7 if in_op_set(OPS, 7) => Op::MaxPool { window: r.get() },
            8 if in_op_set(OPS, 8) => Op::AveragePool {
                window: r.get(),
                count_include_pad: r.bool(),
            },
            9 if in_op_set(OPS, 9) => Op::LpPool {
                window: r.get(),
                p: r.u32(),
            },
            10 if in_op_set(OPS, 10) => Op::GlobalAveragePool,
            11 if in_op_set(OPS, 11) => Op::GlobalMaxPool,
            12 if in_op_set(OPS, 12) => Op::Softmax {
                axis: r.byte(),
                coerce_2d: r.bool(),
                log: r.bool(),
            },
            13 if in_op_set(OPS, 13) => Op::Transpose {
                perm: r.each(Reader::byte),
            },
            14 if in_op_set(OPS, 14) => Op::Concat { axis: r.byte() },
            15 if in_op_set(OPS, 15) => Op::Slice {
                start: r.each(Reader::i64),
                step: r.each(Reader::i64),
            },
            16 if in_op_set(OPS, 16) => Op::Split { axis: r.byte() },
            17 if in_op_set(OPS, 17) => Op::Gather { axis: r.byte() },
            18 if in_op_set(OPS, 18) => Op::GatherElements { axis: r.byte() },
            19 if in_op_set(OPS, 19) => Op::Pad {
                mode: r.get(),
                pads: r.each(Reader::i64),
                value: r.f64(),
            },
            20 if in_op_set(OPS, 20) => Op::Cast {
                to: r.get(),
                saturate: r.bool(),
            },
            21 if in_op_set(OPS, 21) => Op::Reduce {
                kind: r.get(),
                axes: r.u32(),
            },
            22 if in_op_set(OPS, 22) => Op::ArgMax {
                axis: r.byte(),
                select_last: r.bool(),
                min: r.bool(),
            },
            23 if in_op_set(OPS, 23) => Op::LayerNorm {
                axis: r.byte(),
                epsilon: r.f32(),
            },
            24 if in_op_set(OPS, 24) => Op::BatchNorm { epsilon: r.f32() },
            25 if in_op_set(OPS, 25) => Op::InstanceNorm { epsilon: r.f32() },
            26 if in_op_set(OPS, 26) => Op::Where,
            27 if in_op_set(OPS, 27) => Op::Expand,
            28 if in_op_set(OPS, 28) => Op::Tile,
            29 if in_op_set(OPS, 29) => Op::OneHot { axis: r.byte() },
            30 if in_op_set(OPS, 30) => Op::Lstm {
                hidden: r.u32(),
                direction: r.get(),
                batch_first: r.bool(),
                acts: r.each(Reader::get),
                clip: r.option(Reader::f32),
                input_forget: r.bool(),
            },
            31 if in_op_set(OPS, 31) => Op::Gru {
                hidden: r.u32(),
                direction: r.get(),
                batch_first: r.bool(),
                acts: r.each(Reader::get),
                linear_before_reset: r.bool(),
                clip: r.option(Reader::f32),
            },
            32 if in_op_set(OPS, 32) => Op::Normalizer { norm: r.get() },
            33 if in_op_set(OPS, 33) => Op::TreeEnsemble {
                aggregate: r.get(),
                post: r.get(),
                binary_single_score: r.bool(),
            },
            34 if in_op_set(OPS, 34) => Op::ArgMaxLabel,
            35 if in_op_set(OPS, 35) => Op::PostTransform { post: r.get() },
            36 if in_op_set(OPS, 36) => Op::Dequantize { axis: r.byte() },
            37 if in_op_set(OPS, 37) => Op::Quantize { axis: r.byte() },
            38 if in_op_set(OPS, 38) => Op::QLinearConv {
                window: r.get(),
                group: r.u32(),
            },
            39 if in_op_set(OPS, 39) => Op::CumSum {
                axis: r.byte(),
                exclusive: r.bool(),
                reverse: r.bool(),
            },
            40 if in_op_set(OPS, 40) => Op::DepthToSpace {
                block: r.u32(),
                crd: r.bool(),
            },
            41 if in_op_set(OPS, 41) => Op::SpaceToDepth { block: r.u32() },
            42 if in_op_set(OPS, 42) => Op::Variadic {
                kind: r.get(),
                mean: r.bool(),
            },
            43 if in_op_set(OPS, 43) => Op::Trilu {
                upper: r.bool(),
                k: r.i64(),
            },
            44 if in_op_set(OPS, 44) => Op::LRN {
                size: r.u32(),
                alpha: r.f32(),
                beta: r.f32(),
                bias: r.f32(),
            },
            45 if in_op_set(OPS, 45) => Op::ScatterElements { axis: r.byte() },
            46 if in_op_set(OPS, 46) => {
                let [x_zp, y_zp, act_min, act_max] = q4(r);
                Op::QFullyConnected {
                    x_zp,
                    y_zp,
                    act_min,
                    act_max,
                }
            }
            47 if in_op_set(OPS, 47) => Op::QSoftmax {
                y_scale: r.f32(),
                y_zp: r.i32(),
            },
            48 if in_op_set(OPS, 48) => {
                let (window, group) = (r.get(), r.u32());
                let [x_zp, y_zp, act_min, act_max] = q4(r);
                Op::QConv {
                    window,
                    group,
                    x_zp,
                    y_zp,
                    act_min,
                    act_max,
                }
            }
            49 if in_op_set(OPS, 49) => {
                let window = r.get();
                Op::QAvgPool {
                    window,
                    act_min: r.i32(),
                    act_max: r.i32(),
                }
            }
            50 if in_op_set(OPS, 50) => {
                let [a_zp, b_zp, y_zp] = [r.i32(), r.i32(), r.i32()];
                let [a_rq, b_rq, y_rq] =
                    [[r.i32(), r.i32()], [r.i32(), r.i32()], [r.i32(), r.i32()]];
                Op::QAdd {
                    a_zp,
                    b_zp,
                    y_zp,
                    a_rq,
                    b_rq,
                    y_rq,
                    act_min: r.i32(),
                    act_max: r.i32(),
                }
            }
            51 if in_op_set(OPS, 51) => Op::DynamicQuantize,
            52 if in_op_set(OPS, 52) => Op::QMatMul { linear: r.bool() },
            53 if in_op_set(OPS, 53) => Op::ConvInteger {
                window: r.get(),
                group: r.u32(),
            },
            54 if in_op_set(OPS, 54) => Op::DynFullyConnected { act: r.get() },
            55 if in_op_set(OPS, 55) => {
                let (window, group) = (r.get(), r.u32());
                let [x_zp, y_zp, act_min, act_max] = q4(r);
                Op::QConvPacked {
                    window,
                    group,
                    x_zp,
                    y_zp,
                    act_min,
                    act_max,
                }
            }
            56 if in_op_set(OPS, 56) => {
                let [x_zp, y_zp, act_min, act_max] = q4(r);
                Op::QFullyConnectedPacked {
                    x_zp,
                    y_zp,
                    act_min,
                    act_max,
                }
            }
            57 if in_op_set(OPS, 57) => Op::QLstm {
                time_major: r.bool(),
                cifg: r.bool(),
                cell_log2: r.byte() as i8,
                cell_clip: r.i16(),
                hidden_zp: r.i32(),
                state_zp: r.i32(),
            },
            58 if in_op_set(OPS, 58) => Op::LstmCellClip {
                hidden: r.u32(),
                acts: r.each(Reader::get),
                cell_clip: r.f32(),
            },
            59 if in_op_set(OPS, 59) => Op::QLookup,
            60 if in_op_set(OPS, 60) => Op::HybridConv {
                window: r.get(),
                group: r.u32(),
                act_min: r.f32(),
                act_max: r.f32(),
            },
            61 if in_op_set(OPS, 61) => Op::Densify,
            _ => {
                r.fail("an op outside the op set this runtime was built with");
                Op::Reshape
            }
        }
    }
}
