//! Quantization ops: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear,
//! QLinearConv, ConvInteger, QLinearMatMul and MatMulInteger.

use super::axis_or;
use crate::error::Result;
use crate::onnx::{Attrs, Ctx, Registry};
use kiln_format::{DType, Op};
use tract_onnx::pb::NodeProto;

pub(super) fn register(r: &mut Registry) {
    r.insert("", "QuantizeLinear", quantize);
    r.insert("", "DequantizeLinear", dequantize);
    r.insert("", "QLinearConv", qlinear_conv);
    r.insert("", "ConvInteger", conv_integer);
    r.insert("", "DynamicQuantizeLinear", dynamic_quantize);
    r.insert("", "MatMulInteger", |cx, node| q_matmul(cx, node, false));
    r.insert("", "QLinearMatMul", |cx, node| q_matmul(cx, node, true));
}

/// Window, group and output shape of an integer convolution of `x` by `w`
/// (the Conv attribute logic).
fn conv_geometry(
    cx: &Ctx,
    node: &NodeProto,
    x: usize,
    w: usize,
) -> Result<(kiln_format::Window, u32, Vec<usize>)> {
    let (sx, sw) = (cx.shape(x), cx.shape(w));
    let group = Attrs::new(node).int("group", 1).max(1) as usize;
    if sx.len() < 3 || sw.len() != sx.len() || sx[1] != sw[1] * group {
        return Err(cx.err(node, "input and weights disagree"));
    }
    let kernel: Vec<usize> = sw[2..].to_vec();
    let (window, spatial) = super::nn_spatial(cx, node, &sx, &kernel)?;
    let mut out = vec![sx[0], sw[0]];
    out.extend(&spatial);
    Ok((window, group as u32, out))
}

fn is_8bit(dt: DType) -> bool {
    matches!(dt, DType::U8 | DType::I8)
}

fn dynamic_quantize(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    if cx.dtype(x) != DType::F32 {
        return Err(cx.err(node, "DynamicQuantizeLinear takes float32"));
    }
    let shape = cx.shape(x);
    cx.emit(
        node,
        Op::DynamicQuantize,
        vec![Some(x)],
        vec![
            (DType::U8, shape),
            (DType::F32, vec![]),
            (DType::U8, vec![]),
        ],
    )?;
    Ok(())
}

/// Output shape of `[..., M, K] x [..., K, N]` (batch dims equal, or one
/// side 2-D).
fn matmul_shape(cx: &Ctx, node: &NodeProto, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let ok = a.len() >= 2
        && b.len() >= 2
        && a[a.len() - 1] == b[b.len() - 2]
        && (a.len() == 2 || b.len() == 2 || a[..a.len() - 2] == b[..b.len() - 2]);
    if !ok {
        return Err(cx.err(node, format!("operands {a:?} and {b:?} do not multiply")));
    }
    let mut out = if a.len() >= b.len() {
        a[..a.len() - 2].to_vec()
    } else {
        b[..b.len() - 2].to_vec()
    };
    out.extend([a[a.len() - 2], b[b.len() - 1]]);
    Ok(out)
}

fn q_matmul(cx: &mut Ctx, node: &NodeProto, linear: bool) -> Result<()> {
    let n = if linear { 8 } else { 4 };
    let ins: Vec<Option<usize>> = (0..n)
        .map(|i| cx.opt_input(node, i))
        .collect::<Result<_>>()?;
    let (a, b) = if linear {
        (ins[0], ins[3])
    } else {
        (ins[0], ins[1])
    };
    let (Some(a), Some(b)) = (a, b) else {
        return Err(cx.err(node, "both operands are required"));
    };
    if linear && ins.iter().any(Option::is_none) {
        return Err(cx.err(node, "QLinearMatMul needs all eight inputs"));
    }
    if !is_8bit(cx.dtype(a)) || !is_8bit(cx.dtype(b)) {
        return Err(cx.err(node, "operands must be int8 or uint8"));
    }
    if linear
        && [1, 4, 6]
            .iter()
            .any(|&i| ins[i].is_some_and(|s| cx.dtype(s) != DType::F32))
    {
        return Err(cx.err(node, "only float32 scales are supported"));
    }
    let shape = matmul_shape(cx, node, &cx.shape(a), &cx.shape(b))?;
    let dt = if linear {
        cx.dtype(ins[7].unwrap_or(a))
    } else {
        DType::I32
    };
    cx.emit(node, Op::QMatMul { linear }, ins, vec![(dt, shape)])?;
    Ok(())
}

fn conv_integer(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let ins: Vec<Option<usize>> = (0..4)
        .map(|i| cx.opt_input(node, i))
        .collect::<Result<_>>()?;
    let (Some(x), Some(w)) = (ins[0], ins[1]) else {
        return Err(cx.err(node, "x and w are required"));
    };
    if !is_8bit(cx.dtype(x)) || !is_8bit(cx.dtype(w)) {
        return Err(cx.err(node, "operands must be int8 or uint8"));
    }
    let (window, group, out) = conv_geometry(cx, node, x, w)?;
    cx.emit(
        node,
        Op::ConvInteger { window, group },
        ins,
        vec![(DType::I32, out)],
    )?;
    Ok(())
}

fn per_axis(cx: &Ctx, node: &NodeProto, x: usize, scale: usize) -> Result<u8> {
    let n: usize = cx.shape(scale).iter().product();
    if n <= 1 {
        return Ok(0);
    }
    let a = axis_or(cx, node, Attrs::new(node).int("axis", 1), cx.shape(x).len())?;
    Ok(a as u8)
}

fn quantize(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let s = cx.input(node, 1)?;
    let z = cx.opt_input(node, 2)?;
    let to = match z {
        Some(z) => cx.dtype(z),
        None => match Attrs::new(node).int("output_dtype", 0) {
            0 => DType::U8,
            v => crate::onnx::dtype_of(v as i32)
                .ok_or_else(|| cx.err(node, "unsupported output_dtype"))?,
        },
    };
    if !matches!(to, DType::U8 | DType::I8 | DType::U16 | DType::I16)
        || cx.dtype(x) != DType::F32
        || cx.dtype(s) != DType::F32
    {
        return Err(cx.err(
            node,
            "only float32 to (u)int8/(u)int16 quantization is supported",
        ));
    }
    if Attrs::new(node).int("block_size", 0) != 0 {
        return Err(cx.err(node, "blocked quantization is not supported"));
    }
    let axis = per_axis(cx, node, x, s)?;
    let shape = cx.shape(x);
    cx.emit(
        node,
        Op::Quantize { axis },
        vec![Some(x), Some(s), z],
        vec![(to, shape)],
    )?;
    Ok(())
}

fn dequantize(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let s = cx.input(node, 1)?;
    let z = cx.opt_input(node, 2)?;
    if !matches!(
        cx.dtype(x),
        DType::U8 | DType::I8 | DType::I32 | DType::U16 | DType::I16
    ) || cx.dtype(s) != DType::F32
    {
        return Err(cx.err(
            node,
            "only (u)int8/(u)int16/int32 to float32 dequantization is supported",
        ));
    }
    if Attrs::new(node).int("block_size", 0) != 0 {
        return Err(cx.err(node, "blocked quantization is not supported"));
    }
    let axis = per_axis(cx, node, x, s)?;
    let shape = cx.shape(x);
    cx.emit(
        node,
        Op::Dequantize { axis },
        vec![Some(x), Some(s), z],
        vec![(DType::F32, shape)],
    )?;
    Ok(())
}

fn qlinear_conv(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let ins: Vec<Option<usize>> = (0..9)
        .map(|i| cx.opt_input(node, i))
        .collect::<Result<_>>()?;
    if ins[..8].iter().any(Option::is_none) {
        return Err(cx.err(node, "inputs 0..7 are required"));
    }
    let (x, w, yz) = (
        ins[0].unwrap_or(0),
        ins[3].unwrap_or(0),
        ins[7].unwrap_or(0),
    );
    let (window, group, out) = conv_geometry(cx, node, x, w)?;
    let dt = cx.dtype(yz);
    cx.emit(
        node,
        Op::QLinearConv { window, group },
        ins,
        vec![(dt, out)],
    )?;
    Ok(())
}
