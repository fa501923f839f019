//! Quantization ops needed by the corpus: QuantizeLinear, DequantizeLinear, QLinearConv.

use super::axis_or;
use crate::error::Result;
use crate::onnx::{Attrs, Ctx, Registry};
use kiln_format::{DType, Op};
use tract_onnx::pb::NodeProto;

pub(super) fn register(r: &mut Registry) {
    r.insert("", "QuantizeLinear", quantize);
    r.insert("", "DequantizeLinear", dequantize);
    r.insert("", "QLinearConv", qlinear_conv);
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
    let (sx, sw) = (cx.shape(x), cx.shape(w));
    let a = Attrs::new(node);
    let group = a.int("group", 1).max(1) as usize;
    if sx.len() < 3 || sw.len() != sx.len() || sx[1] != sw[1] * group {
        return Err(cx.err(node, "input and weights disagree"));
    }
    // Reuse the Conv attribute logic through a float Conv import of the same node.
    let kernel: Vec<usize> = sw[2..].to_vec();
    let sp = super::nn_spatial(cx, node, &sx, &kernel)?;
    let mut out = vec![sx[0], sw[0]];
    out.extend(&sp.1);
    let dt = cx.dtype(yz);
    cx.emit(
        node,
        Op::QLinearConv {
            window: sp.0,
            group: group as u32,
        },
        ins,
        vec![(dt, out)],
    )?;
    Ok(())
}
