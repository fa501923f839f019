//! Neural-network ops: Gemm, MatMul, Conv(Transpose), pooling, Softmax,
//! reductions, ArgMax, normalisations, CumSum.

use super::{axis_or, broadcast, u8_axis};
use crate::error::Result;
use crate::onnx::{Attrs, Ctx, Registry};
use kiln_format::{DType, Op, ReduceKind, Unary, Window};
use tract_onnx::pb::NodeProto;

pub(super) fn register(r: &mut Registry) {
    r.insert("", "Gemm", gemm);
    r.insert("", "MatMul", matmul);
    r.insert("", "Conv", conv);
    r.insert("", "ConvTranspose", conv_transpose);
    r.insert("", "MaxPool", pool);
    r.insert("", "AveragePool", pool);
    r.insert("", "LpPool", pool);
    r.insert("", "GlobalAveragePool", global_pool);
    r.insert("", "GlobalMaxPool", global_pool);
    r.insert("", "Softmax", softmax);
    r.insert("", "LogSoftmax", softmax);
    for name in [
        "ReduceSum",
        "ReduceMean",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceSumSquare",
    ] {
        r.insert("", name, reduce);
    }
    r.insert("", "ArgMax", argmax);
    r.insert("", "ArgMin", argmax);
    r.insert("", "LayerNormalization", layer_norm);
    r.insert("", "BatchNormalization", batch_norm);
    r.insert("", "InstanceNormalization", instance_norm);
    r.insert("", "LRN", lrn);
    r.insert("", "CumSum", cumsum);
}

fn need_f32(cx: &Ctx, node: &NodeProto, id: usize) -> Result<()> {
    if cx.dtype(id) == DType::F32 {
        Ok(())
    } else {
        Err(cx.err(
            node,
            format!("{} inputs are not supported (float32 only)", cx.dtype(id)),
        ))
    }
}

fn gemm(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let a = Attrs::new(node);
    let (x, w) = (cx.input(node, 0)?, cx.input(node, 1)?);
    let c = cx.opt_input(node, 2)?;
    need_f32(cx, node, x)?;
    need_f32(cx, node, w)?;
    let (ta, tb) = (a.int("transA", 0) != 0, a.int("transB", 0) != 0);
    let (sa, sb) = (cx.shape(x), cx.shape(w));
    if sa.len() != 2 || sb.len() != 2 {
        return Err(cx.err(node, "A and B must be matrices"));
    }
    let (m, k) = if ta { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
    let (k2, n) = if tb { (sb[1], sb[0]) } else { (sb[0], sb[1]) };
    if k != k2 {
        return Err(cx.err(node, format!("inner dims disagree: {sa:?} x {sb:?}")));
    }
    if let Some(c) = c {
        need_f32(cx, node, c)?;
        if broadcast(&[cx.shape(c), vec![m, n]]).as_deref() != Some(&[m, n][..]) {
            return Err(cx.err(node, "C does not broadcast to [M, N]"));
        }
    }
    let op = Op::Gemm {
        trans_a: ta,
        trans_b: tb,
        alpha: a.float("alpha", 1.0),
        beta: a.float("beta", 1.0),
        act: Unary::Identity,
    };
    cx.emit(
        node,
        op,
        vec![Some(x), Some(w), c],
        vec![(DType::F32, vec![m, n])],
    )?;
    Ok(())
}

pub(crate) fn matmul_shape(sa: &[usize], sb: &[usize]) -> Option<Vec<usize>> {
    if sa.is_empty() || sb.is_empty() {
        return None;
    }
    let (m, k) = if sa.len() == 1 {
        (None, sa[0])
    } else {
        (Some(sa[sa.len() - 2]), sa[sa.len() - 1])
    };
    let (k2, n) = if sb.len() == 1 {
        (sb[0], None)
    } else {
        (sb[sb.len() - 2], Some(sb[sb.len() - 1]))
    };
    if k != k2 {
        return None;
    }
    let ba = &sa[..sa.len().saturating_sub(2)];
    let bb = &sb[..sb.len().saturating_sub(2)];
    let mut out = broadcast(&[ba.to_vec(), bb.to_vec()])?;
    out.extend(m);
    out.extend(n);
    Some(out)
}

fn matmul(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let (x, w) = (cx.input(node, 0)?, cx.input(node, 1)?);
    need_f32(cx, node, x)?;
    need_f32(cx, node, w)?;
    let (sa, sb) = (cx.shape(x), cx.shape(w));
    let out = matmul_shape(&sa, &sb)
        .ok_or_else(|| cx.err(node, format!("shapes {sa:?} and {sb:?} do not multiply")))?;
    cx.emit(
        node,
        Op::MatMul {
            act: Unary::Identity,
        },
        vec![Some(x), Some(w)],
        vec![(DType::F32, out)],
    )?;
    Ok(())
}

/// Spatial attributes resolved against the input (1-D stored as 2-D).
struct Spatial {
    window: Window,
    out: Vec<usize>,
}

fn spatial(
    cx: &Ctx,
    node: &NodeProto,
    input: &[usize],
    kernel: &[usize],
    ceil: bool,
    transpose: Option<&[i64]>,
) -> Result<Spatial> {
    let a = Attrs::new(node);
    let sr = input.len().saturating_sub(2);
    if !(1..=2).contains(&sr) || kernel.len() != sr {
        return Err(cx.err(
            node,
            format!("only 1-D and 2-D spatial ops are supported (input {input:?})"),
        ));
    }
    let get = |name: &str, def: usize, n: usize| -> Vec<usize> {
        a.ints(name)
            .map(|v| v.iter().map(|&x| x.max(0) as usize).collect())
            .unwrap_or_else(|| vec![def; n])
    };
    let strides = get("strides", 1, sr);
    let dil = get("dilations", 1, sr);
    let mut pads = get("pads", 0, 2 * sr);
    if strides.len() != sr
        || dil.len() != sr
        || pads.len() != 2 * sr
        || strides.contains(&0)
        || dil.contains(&0)
    {
        return Err(cx.err(
            node,
            "strides, dilations or pads have the wrong length or a zero",
        ));
    }
    let auto = a.string("auto_pad").unwrap_or_else(|| "NOTSET".into());
    let mut out = vec![0usize; sr];
    for d in 0..sr {
        let i = input[2 + d];
        let eff = (kernel[d] - 1) * dil[d] + 1;
        if let Some(tr) = transpose {
            let opad = a
                .ints("output_padding")
                .map(|v| v.get(d).copied().unwrap_or(0) as usize)
                .unwrap_or(0);
            let full = strides[d] * (i.max(1) - 1) + opad + eff;
            let given = a.ints("output_shape").map(|v| v[v.len() - sr + d] as usize);
            let target = given.or_else(|| (auto.starts_with("SAME")).then(|| i * strides[d]));
            if let Some(t) = target {
                let total = full as i64 - t as i64;
                let total = total.max(0) as usize;
                let (b, e) = if auto == "SAME_UPPER" {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                };
                pads[d] = b;
                pads[sr + d] = e;
                out[d] = t;
            } else {
                out[d] = full
                    .checked_sub(pads[d] + pads[sr + d])
                    .ok_or_else(|| cx.err(node, "pads larger than the output"))?;
            }
            let _ = tr;
            continue;
        }
        match auto.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => {
                let o = i.div_ceil(strides[d]);
                let total = ((o - 1) * strides[d] + eff).saturating_sub(i);
                let small = total / 2;
                let (b, e) = if auto == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                pads[d] = b;
                pads[sr + d] = e;
                out[d] = o;
            }
            "VALID" => {
                pads[d] = 0;
                pads[sr + d] = 0;
                out[d] = if i >= eff {
                    (i - eff) / strides[d] + 1
                } else {
                    0
                };
            }
            _ => {
                let padded = i + pads[d] + pads[sr + d];
                if padded < eff {
                    return Err(cx.err(node, "the kernel is larger than the padded input"));
                }
                let span = padded - eff;
                let mut o = if ceil {
                    span.div_ceil(strides[d]) + 1
                } else {
                    span / strides[d] + 1
                };
                if ceil && (o - 1) * strides[d] >= i + pads[d] {
                    o -= 1;
                }
                out[d] = o;
            }
        }
        if out[d] == 0 {
            return Err(cx.err(node, "the output would be empty"));
        }
    }
    let u = |v: usize| v as u32;
    let window = if sr == 1 {
        Window {
            kernel: [1, u(kernel[0])],
            strides: [1, u(strides[0])],
            dilations: [1, u(dil[0])],
            pads: [0, u(pads[0]), 0, u(pads[1])],
        }
    } else {
        Window {
            kernel: [u(kernel[0]), u(kernel[1])],
            strides: [u(strides[0]), u(strides[1])],
            dilations: [u(dil[0]), u(dil[1])],
            pads: [u(pads[0]), u(pads[1]), u(pads[2]), u(pads[3])],
        }
    };
    Ok(Spatial { window, out })
}

fn conv(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let (x, w) = (cx.input(node, 0)?, cx.input(node, 1)?);
    let b = cx.opt_input(node, 2)?;
    need_f32(cx, node, x)?;
    need_f32(cx, node, w)?;
    let (sx, sw) = (cx.shape(x), cx.shape(w));
    let group = Attrs::new(node).int("group", 1).max(1) as usize;
    if sw.len() != sx.len() || sx.len() < 3 || sx[1] != sw[1] * group || sw[0] % group != 0 {
        return Err(cx.err(
            node,
            format!("input {sx:?} and weights {sw:?} disagree (group {group})"),
        ));
    }
    let kernel = Attrs::new(node)
        .ints("kernel_shape")
        .map(|v| v.iter().map(|&k| k as usize).collect())
        .unwrap_or_else(|| sw[2..].to_vec());
    if kernel != sw[2..] {
        return Err(cx.err(node, "kernel_shape disagrees with the weights"));
    }
    let sp = spatial(cx, node, &sx, &kernel, false, None)?;
    let mut out = vec![sx[0], sw[0]];
    out.extend(&sp.out);
    let op = Op::Conv {
        window: sp.window,
        group: group as u32,
        act: Unary::Identity,
    };
    cx.emit(node, op, vec![Some(x), Some(w), b], vec![(DType::F32, out)])?;
    Ok(())
}

fn conv_transpose(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let (x, w) = (cx.input(node, 0)?, cx.input(node, 1)?);
    let b = cx.opt_input(node, 2)?;
    need_f32(cx, node, x)?;
    let (sx, sw) = (cx.shape(x), cx.shape(w));
    let group = Attrs::new(node).int("group", 1).max(1) as usize;
    if sw.len() != sx.len() || sx.len() < 3 || sx[1] != sw[0] {
        return Err(cx.err(node, format!("input {sx:?} and weights {sw:?} disagree")));
    }
    let kernel: Vec<usize> = sw[2..].to_vec();
    let sp = spatial(cx, node, &sx, &kernel, false, Some(&[]))?;
    let mut out = vec![sx[0], sw[1] * group];
    out.extend(&sp.out);
    cx.emit(
        node,
        Op::ConvTranspose {
            window: sp.window,
            group: group as u32,
        },
        vec![Some(x), Some(w), b],
        vec![(DType::F32, out)],
    )?;
    Ok(())
}

fn pool(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    need_f32(cx, node, x)?;
    if node.output.len() > 1 && !node.output[1].is_empty() {
        return Err(cx.err(node, "the Indices output of MaxPool is not supported"));
    }
    let a = Attrs::new(node);
    let sx = cx.shape(x);
    let kernel: Vec<usize> = a
        .ints("kernel_shape")
        .ok_or_else(|| cx.err(node, "kernel_shape is required"))?
        .iter()
        .map(|&k| k.max(1) as usize)
        .collect();
    let ceil = a.int("ceil_mode", 0) != 0;
    let sp = spatial(cx, node, &sx, &kernel, ceil, None)?;
    let mut out = vec![sx[0], sx[1]];
    out.extend(&sp.out);
    let op = match node.op_type.as_str() {
        "MaxPool" => {
            if a.int("storage_order", 0) != 0 {
                return Err(cx.err(node, "storage_order = 1 is not supported"));
            }
            Op::MaxPool { window: sp.window }
        }
        "AveragePool" => Op::AveragePool {
            window: sp.window,
            count_include_pad: a.int("count_include_pad", 0) != 0,
        },
        _ => Op::LpPool {
            window: sp.window,
            p: a.int("p", 2).max(1) as u32,
        },
    };
    cx.emit(node, op, vec![Some(x)], vec![(DType::F32, out)])?;
    Ok(())
}

fn global_pool(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    need_f32(cx, node, x)?;
    let s = cx.shape(x);
    if s.len() < 3 {
        return Err(cx.err(node, "needs rank >= 3"));
    }
    let mut out = vec![1usize; s.len()];
    out[0] = s[0];
    out[1] = s[1];
    let op = if node.op_type == "GlobalMaxPool" {
        Op::GlobalMaxPool
    } else {
        Op::GlobalAveragePool
    };
    cx.emit(node, op, vec![Some(x)], vec![(DType::F32, out)])?;
    Ok(())
}

fn softmax(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    need_f32(cx, node, x)?;
    let s = cx.shape(x);
    let legacy = cx.opset < 13;
    let a = axis_or(
        cx,
        node,
        Attrs::new(node).int("axis", if legacy { 1 } else { -1 }),
        s.len(),
    )?;
    let op = Op::Softmax {
        axis: u8_axis(cx, node, a)?,
        coerce_2d: legacy,
        log: node.op_type == "LogSoftmax",
    };
    cx.emit(node, op, vec![Some(x)], vec![(DType::F32, s)])?;
    Ok(())
}

fn reduce(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    need_f32(cx, node, x)?;
    let s = cx.shape(x);
    let a = Attrs::new(node);
    let kind = match node.op_type.as_str() {
        "ReduceSum" => ReduceKind::Sum,
        "ReduceMean" => ReduceKind::Mean,
        "ReduceMax" => ReduceKind::Max,
        "ReduceMin" => ReduceKind::Min,
        "ReduceProd" => ReduceKind::Prod,
        "ReduceL1" => ReduceKind::L1,
        "ReduceL2" => ReduceKind::L2,
        "ReduceLogSum" => ReduceKind::LogSum,
        "ReduceLogSumExp" => ReduceKind::LogSumExp,
        _ => ReduceKind::SumSquare,
    };
    let axes_as_input = (node.op_type == "ReduceSum" && cx.opset >= 13) || cx.opset >= 18;
    let axes = if axes_as_input {
        match cx.opt_input(node, 1)? {
            Some(t) => Some(cx.const_ints(node, t, "axes")?),
            None => None,
        }
    } else {
        a.ints("axes")
    };
    let axes: Vec<usize> = match axes {
        Some(v) if !v.is_empty() => v
            .iter()
            .map(|&d| axis_or(cx, node, d, s.len()))
            .collect::<Result<_>>()?,
        _ if a.int("noop_with_empty_axes", 0) != 0 => {
            cx.bind(&node.output[0], x);
            return Ok(());
        }
        _ => (0..s.len()).collect(),
    };
    let keep = a.int("keepdims", 1) != 0;
    let mut mask = 0u32;
    let mut out = vec![];
    for (d, &n) in s.iter().enumerate() {
        if axes.contains(&d) {
            mask |= 1 << d;
            if keep {
                out.push(1);
            }
        } else {
            out.push(n);
        }
    }
    cx.emit(
        node,
        Op::Reduce { kind, axes: mask },
        vec![Some(x)],
        vec![(DType::F32, out)],
    )?;
    Ok(())
}

fn argmax(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    need_f32(cx, node, x)?;
    let s = cx.shape(x);
    let a = Attrs::new(node);
    let ax = axis_or(cx, node, a.int("axis", 0), s.len())?;
    let mut out = s.clone();
    if a.int("keepdims", 1) != 0 {
        out[ax] = 1;
    } else {
        out.remove(ax);
    }
    let op = Op::ArgMax {
        axis: u8_axis(cx, node, ax)?,
        select_last: a.int("select_last_index", 0) != 0,
        min: node.op_type == "ArgMin",
    };
    cx.emit(node, op, vec![Some(x)], vec![(DType::I64, out)])?;
    Ok(())
}

/// A constant broadcast to `n` elements (for per-feature parameters).
fn expand_const(cx: &mut Ctx, node: &NodeProto, id: usize, shape: &[usize]) -> Result<usize> {
    let n: usize = shape.iter().product();
    let v = cx.const_f32(node, id, "scale/bias")?;
    if v.len() == n {
        return Ok(id);
    }
    if v.len() != 1 {
        return Err(cx.err(node, "scale/bias do not match the normalised shape"));
    }
    Ok(cx.const_f32_t(shape.to_vec(), &vec![v[0]; n]))
}

fn layer_norm(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    need_f32(cx, node, x)?;
    if node.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(cx.err(node, "the Mean and InvStdDev outputs are not supported"));
    }
    let s = cx.shape(x);
    let a = Attrs::new(node);
    let ax = axis_or(cx, node, a.int("axis", -1), s.len())?;
    let norm_shape = s[ax..].to_vec();
    let scale = cx.input(node, 1)?;
    let scale = if cx.t(scale).is_const() {
        expand_const(cx, node, scale, &norm_shape)?
    } else {
        scale
    };
    let bias = match cx.opt_input(node, 2)? {
        Some(b) if cx.t(b).is_const() => Some(expand_const(cx, node, b, &norm_shape)?),
        other => other,
    };
    let op = Op::LayerNorm {
        axis: u8_axis(cx, node, ax)?,
        epsilon: a.float("epsilon", 1e-5),
    };
    cx.emit(
        node,
        op,
        vec![Some(x), Some(scale), bias],
        vec![(DType::F32, s)],
    )?;
    Ok(())
}

fn batch_norm(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let a = Attrs::new(node);
    if a.int("training_mode", 0) != 0 || node.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(cx.err(node, "training mode is not supported"));
    }
    let x = cx.input(node, 0)?;
    need_f32(cx, node, x)?;
    let ins: Vec<Option<usize>> = (0..5)
        .map(|i| cx.input(node, i).map(Some))
        .collect::<Result<_>>()?;
    let s = cx.shape(x);
    cx.emit(
        node,
        Op::BatchNorm {
            epsilon: a.float("epsilon", 1e-5),
        },
        ins,
        vec![(DType::F32, s)],
    )?;
    Ok(())
}

fn instance_norm(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    need_f32(cx, node, x)?;
    let ins: Vec<Option<usize>> = (0..3)
        .map(|i| cx.input(node, i).map(Some))
        .collect::<Result<_>>()?;
    let s = cx.shape(x);
    cx.emit(
        node,
        Op::InstanceNorm {
            epsilon: Attrs::new(node).float("epsilon", 1e-5),
        },
        ins,
        vec![(DType::F32, s)],
    )?;
    Ok(())
}

fn lrn(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    need_f32(cx, node, x)?;
    let a = Attrs::new(node);
    let op = Op::LRN {
        size: a.int("size", 1).max(1) as u32,
        alpha: a.float("alpha", 1e-4),
        beta: a.float("beta", 0.75),
        bias: a.float("bias", 1.0),
    };
    let s = cx.shape(x);
    cx.emit(node, op, vec![Some(x)], vec![(DType::F32, s)])?;
    Ok(())
}

fn cumsum(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    need_f32(cx, node, x)?;
    let t = cx.input(node, 1)?;
    let s = cx.shape(x);
    let ax = axis_or(
        cx,
        node,
        cx.const_ints(node, t, "axis")?
            .first()
            .copied()
            .unwrap_or(0),
        s.len(),
    )?;
    let a = Attrs::new(node);
    let op = Op::CumSum {
        axis: u8_axis(cx, node, ax)?,
        exclusive: a.int("exclusive", 0) != 0,
        reverse: a.int("reverse", 0) != 0,
    };
    cx.emit(node, op, vec![Some(x)], vec![(DType::F32, s)])?;
    Ok(())
}

pub(super) fn spatial_pub(
    cx: &Ctx,
    node: &NodeProto,
    input: &[usize],
    kernel: &[usize],
) -> Result<(Window, Vec<usize>)> {
    let s = spatial(cx, node, input, kernel, false, None)?;
    Ok((s.window, s.out))
}
