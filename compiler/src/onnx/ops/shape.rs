//! Shape computations (folded at compile time) and data movement.

use super::{axis_or, broadcast, u8_axis};
use crate::error::Result;
use crate::onnx::{Attrs, Ctx, Registry, tensor_from_proto};
use kiln_format::{DType, OP_RANK, Op, PadMode};
use tract_onnx::pb::NodeProto;

pub(super) fn register(r: &mut Registry) {
    r.insert("", "Constant", constant);
    r.insert("", "Shape", shape);
    r.insert("", "Size", size);
    r.insert("", "ConstantOfShape", constant_of_shape);
    r.insert("", "Range", range);
    r.insert("", "Reshape", reshape);
    r.insert("", "Flatten", flatten);
    r.insert("", "Squeeze", squeeze);
    r.insert("", "Unsqueeze", unsqueeze);
    r.insert("", "Transpose", transpose);
    r.insert("", "Concat", concat);
    r.insert("", "Slice", slice);
    r.insert("", "Split", split);
    r.insert("", "Gather", gather);
    r.insert("", "GatherElements", gather_elements);
    r.insert("", "ScatterElements", scatter_elements);
    r.insert("", "Pad", pad);
    r.insert("", "Expand", expand);
    r.insert("", "Tile", tile);
    r.insert("", "DepthToSpace", depth_to_space);
    r.insert("", "SpaceToDepth", space_to_depth);
    r.insert("", "Trilu", trilu);
    r.insert("", "OneHot", one_hot);
}

fn constant(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let a = Attrs::new(node);
    let id = if let Some(t) = a.tensor("value") {
        let (dt, s, b) = tensor_from_proto(t)?;
        cx.const_bytes(dt, s, b)
    } else if a.has("value_float") {
        cx.const_f32_t(vec![], &[a.float("value_float", 0.0)])
    } else if let Some(v) = a.floats("value_floats") {
        cx.const_f32_t(vec![v.len()], &v)
    } else if a.has("value_int") {
        cx.const_i64_t(vec![], &[a.int("value_int", 0)])
    } else if let Some(v) = a.ints("value_ints") {
        cx.const_i64_t(vec![v.len()], &v)
    } else {
        return Err(cx.err(
            node,
            "only tensor, float(s) and int(s) constants are supported",
        ));
    };
    cx.bind(&node.output[0], id);
    Ok(())
}

fn shape(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let s: Vec<i64> = cx.shape(x).iter().map(|&d| d as i64).collect();
    let a = Attrs::new(node);
    let r = s.len() as i64;
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clampi(a.int("start", 0));
    let end = clampi(a.int("end", r));
    let v = if start < end {
        s[start..end].to_vec()
    } else {
        vec![]
    };
    let id = cx.const_i64_t(vec![v.len()], &v);
    cx.bind(&node.output[0], id);
    Ok(())
}

fn size(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let n = cx.shape(x).iter().product::<usize>() as i64;
    let id = cx.const_i64_t(vec![], &[n]);
    cx.bind(&node.output[0], id);
    Ok(())
}

fn dims_from(cx: &Ctx, node: &NodeProto, id: usize, what: &str) -> Result<Vec<usize>> {
    cx.const_ints(node, id, what)?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| cx.err(node, format!("{what} has a negative dim"))))
        .collect()
}

fn constant_of_shape(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let s = cx.input(node, 0)?;
    let shape = dims_from(cx, node, s, "shape")?;
    let (dt, value) = match Attrs::new(node).tensor("value") {
        Some(t) => {
            let (dt, _, b) = tensor_from_proto(t)?;
            (dt, b)
        }
        None => (DType::F32, 0f32.to_le_bytes().to_vec()),
    };
    let n: usize = shape.iter().product();
    let bytes = value.iter().copied().cycle().take(n * dt.size()).collect();
    let id = cx.const_bytes(dt, shape, bytes);
    cx.bind(&node.output[0], id);
    Ok(())
}

fn range(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let (s, l, d) = (cx.input(node, 0)?, cx.input(node, 1)?, cx.input(node, 2)?);
    let dt = cx.dtype(s);
    let id = if dt == DType::F32 {
        let (a, b, c) = (
            cx.const_f32(node, s, "start")?[0],
            cx.const_f32(node, l, "limit")?[0],
            cx.const_f32(node, d, "delta")?[0],
        );
        let n = ((b - a) / c).ceil().max(0.0) as usize;
        let v: Vec<f32> = (0..n).map(|i| a + i as f32 * c).collect();
        cx.const_f32_t(vec![n], &v)
    } else {
        let (a, b, c) = (
            cx.const_ints(node, s, "start")?[0],
            cx.const_ints(node, l, "limit")?[0],
            cx.const_ints(node, d, "delta")?[0],
        );
        if c == 0 {
            return Err(cx.err(node, "delta is zero"));
        }
        let n = ((b - a) as f64 / c as f64).ceil().max(0.0) as usize;
        let v: Vec<i64> = (0..n as i64).map(|i| a + i * c).collect();
        let bytes: Vec<u8> = match dt {
            DType::I32 => v.iter().flat_map(|x| (*x as i32).to_le_bytes()).collect(),
            _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        cx.const_bytes(dt, vec![n], bytes)
    };
    cx.bind(&node.output[0], id);
    Ok(())
}

/// Emits a Reshape (a copy, aliased away by the planner) to `shape`.
pub(crate) fn emit_reshape(
    cx: &mut Ctx,
    node: &NodeProto,
    x: usize,
    shape: Vec<usize>,
) -> Result<()> {
    let n: usize = cx.shape(x).iter().product();
    if shape.iter().product::<usize>() != n {
        return Err(cx.err(
            node,
            format!("cannot reshape {:?} to {shape:?}", cx.shape(x)),
        ));
    }
    let dt = cx.dtype(x);
    cx.emit(node, Op::Reshape, vec![Some(x)], vec![(dt, shape)])?;
    Ok(())
}

fn reshape(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let target = if cx.opset < 5 {
        Attrs::new(node).ints("shape").unwrap_or_default()
    } else {
        let s = cx.input(node, 1)?;
        cx.const_ints(node, s, "the target shape")?
    };
    let allowzero = Attrs::new(node).int("allowzero", 0) != 0;
    let sx = cx.shape(x);
    let n: usize = sx.iter().product();
    let mut out = vec![0usize; target.len()];
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 => {
                if infer.replace(i).is_some() {
                    return Err(cx.err(node, "more than one -1 in the target shape"));
                }
                out[i] = 1;
            }
            0 if !allowzero => {
                out[i] = *sx
                    .get(i)
                    .ok_or_else(|| cx.err(node, "0 in the target shape past the input rank"))?
            }
            t if t >= 0 => out[i] = t as usize,
            _ => return Err(cx.err(node, "negative dim in the target shape")),
        }
    }
    if let Some(i) = infer {
        let known: usize = out.iter().product();
        if known == 0 || !n.is_multiple_of(known) {
            return Err(cx.err(node, format!("cannot reshape {sx:?} to {target:?}")));
        }
        out[i] = n / known;
    }
    emit_reshape(cx, node, x, out)
}

fn flatten(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let s = cx.shape(x);
    // Flatten's axis may equal the rank (all dims in the outer part).
    let r = s.len() as i64;
    let raw = Attrs::new(node).int("axis", 1);
    let a = if raw < 0 { raw + r } else { raw };
    if !(0..=r).contains(&a) {
        return Err(cx.err(node, format!("axis {raw} is out of range for rank {r}")));
    }
    let a = a as usize;
    let outer: usize = s[..a].iter().product();
    let inner: usize = s[a..].iter().product();
    emit_reshape(cx, node, x, vec![outer, inner])
}

fn axes_arg(cx: &Ctx, node: &NodeProto, opset_input: i64) -> Result<Option<Vec<i64>>> {
    if cx.opset >= opset_input {
        match cx.opt_input(node, 1)? {
            Some(a) => Ok(Some(cx.const_ints(node, a, "axes")?)),
            None => Ok(None),
        }
    } else {
        Ok(Attrs::new(node).ints("axes"))
    }
}

fn squeeze(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let s = cx.shape(x);
    let axes = axes_arg(cx, node, 13)?;
    let out: Vec<usize> = match axes {
        Some(ax) => {
            let ax: Vec<usize> = ax
                .iter()
                .map(|&a| axis_or(cx, node, a, s.len()))
                .collect::<Result<_>>()?;
            if ax.iter().any(|&a| s[a] != 1) {
                return Err(cx.err(node, "cannot squeeze a dim that is not 1"));
            }
            s.iter()
                .enumerate()
                .filter(|(i, _)| !ax.contains(i))
                .map(|(_, &d)| d)
                .collect()
        }
        None => s.iter().copied().filter(|&d| d != 1).collect(),
    };
    emit_reshape(cx, node, x, out)
}

fn unsqueeze(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let s = cx.shape(x);
    let axes = axes_arg(cx, node, 13)?.ok_or_else(|| cx.err(node, "axes are required"))?;
    let rank = s.len() + axes.len();
    let mut ax: Vec<usize> = axes
        .iter()
        .map(|&a| axis_or(cx, node, a, rank))
        .collect::<Result<_>>()?;
    ax.sort_unstable();
    let mut out = Vec::with_capacity(rank);
    let mut it = s.iter();
    for i in 0..rank {
        if ax.contains(&i) {
            out.push(1);
        } else {
            out.push(*it.next().ok_or_else(|| cx.err(node, "duplicate axes"))?);
        }
    }
    emit_reshape(cx, node, x, out)
}

fn transpose(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let s = cx.shape(x);
    let r = s.len();
    let perm: Vec<usize> = match Attrs::new(node).ints("perm") {
        Some(p) => p
            .iter()
            .map(|&a| axis_or(cx, node, a, r))
            .collect::<Result<_>>()?,
        None => (0..r).rev().collect(),
    };
    if perm.len() != r || r > OP_RANK {
        return Err(cx.err(node, "perm does not match the input rank"));
    }
    let mut p = [0u8; OP_RANK];
    for (i, &v) in perm.iter().enumerate() {
        p[i] = v as u8;
    }
    let out: Vec<usize> = perm.iter().map(|&i| s[i]).collect();
    let dt = cx.dtype(x);
    // Transposes that only move 1-sized dims are reshapes.
    let moved: Vec<usize> = perm.iter().copied().filter(|&i| s[i] != 1).collect();
    if moved.windows(2).all(|w| w[0] < w[1]) {
        return emit_reshape(cx, node, x, out);
    }
    cx.emit(
        node,
        Op::Transpose { perm: p },
        vec![Some(x)],
        vec![(dt, out)],
    )?;
    Ok(())
}

fn concat(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let ids: Vec<usize> = (0..node.input.len())
        .map(|i| cx.input(node, i))
        .collect::<Result<_>>()?;
    let first = cx.shape(ids[0]);
    let a = axis_or(cx, node, Attrs::new(node).int("axis", 0), first.len())?;
    let mut out = first.clone();
    out[a] = 0;
    let dt = cx.dtype(ids[0]);
    let mut keep = vec![];
    for &i in &ids {
        let s = cx.shape(i);
        if s.len() != first.len()
            || cx.dtype(i) != dt
            || (0..s.len()).any(|d| d != a && s[d] != first[d])
        {
            return Err(cx.err(node, "inputs disagree in rank, dtype or non-axis dims"));
        }
        out[a] += s[a];
        if s[a] > 0 {
            keep.push(Some(i));
        }
    }
    if keep.len() > kiln_engine::MAX_IO {
        return Err(cx.err(node, "more than 32 inputs"));
    }
    let ax = u8_axis(cx, node, a)?;
    cx.emit(node, Op::Concat { axis: ax }, keep, vec![(dt, out)])?;
    Ok(())
}

fn slice(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let s = cx.shape(x);
    let r = s.len();
    let (starts, ends, axes, steps) = if cx.opset < 10 {
        let a = Attrs::new(node);
        (
            a.ints("starts").unwrap_or_default(),
            a.ints("ends").unwrap_or_default(),
            a.ints("axes"),
            None,
        )
    } else {
        let st = cx.input(node, 1)?;
        let en = cx.input(node, 2)?;
        let axes = match cx.opt_input(node, 3)? {
            Some(a) => Some(cx.const_ints(node, a, "axes")?),
            None => None,
        };
        let steps = match cx.opt_input(node, 4)? {
            Some(a) => Some(cx.const_ints(node, a, "steps")?),
            None => None,
        };
        (
            cx.const_ints(node, st, "starts")?,
            cx.const_ints(node, en, "ends")?,
            axes,
            steps,
        )
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    if starts.len() != ends.len() || axes.len() != starts.len() || r > OP_RANK {
        return Err(cx.err(node, "starts, ends and axes disagree"));
    }
    let mut start = [0i64; OP_RANK];
    let mut step = [1i64; OP_RANK];
    let mut out = s.clone();
    for (k, &ax) in axes.iter().enumerate() {
        let d = axis_or(cx, node, ax, r)?;
        let n = s[d] as i64;
        let st = steps.as_ref().map_or(1, |v| v[k]);
        if st == 0 {
            return Err(cx.err(node, "step is zero"));
        }
        let norm = |v: i64| if v < 0 { v + n } else { v };
        let (b, e) = if st > 0 {
            (norm(starts[k]).clamp(0, n), norm(ends[k]).clamp(0, n))
        } else {
            (
                norm(starts[k]).clamp(-1, n - 1),
                norm(ends[k]).clamp(-1, n - 1),
            )
        };
        let len = if st > 0 {
            (e - b + st - 1).div_euclid(st)
        } else {
            (b - e + (-st) - 1).div_euclid(-st)
        }
        .max(0);
        start[d] = b;
        step[d] = st;
        out[d] = len as usize;
    }
    let dt = cx.dtype(x);
    if out == s && step.iter().all(|&v| v == 1) {
        cx.bind(&node.output[0], x);
        return Ok(());
    }
    cx.emit(
        node,
        Op::Slice { start, step },
        vec![Some(x)],
        vec![(dt, out)],
    )?;
    Ok(())
}

fn split(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let s = cx.shape(x);
    let a = axis_or(cx, node, Attrs::new(node).int("axis", 0), s.len())?;
    let n_out = node.output.len();
    let sizes: Vec<usize> = {
        let given = if cx.opset >= 13 {
            match cx.opt_input(node, 1)? {
                Some(t) => Some(cx.const_ints(node, t, "split")?),
                None => None,
            }
        } else {
            Attrs::new(node).ints("split")
        };
        match given {
            Some(v) => v.into_iter().map(|d| d.max(0) as usize).collect(),
            None => {
                let parts = Attrs::new(node).int("num_outputs", n_out as i64).max(1) as usize;
                let chunk = s[a].div_ceil(parts);
                (0..parts)
                    .map(|i| chunk.min(s[a].saturating_sub(i * chunk)))
                    .collect()
            }
        }
    };
    if sizes.iter().sum::<usize>() != s[a] || sizes.len() != n_out {
        return Err(cx.err(node, "split sizes do not add up to the axis"));
    }
    let dt = cx.dtype(x);
    let outs = sizes
        .iter()
        .map(|&k| {
            let mut o = s.clone();
            o[a] = k;
            (dt, o)
        })
        .collect();
    let ax = u8_axis(cx, node, a)?;
    cx.emit(node, Op::Split { axis: ax }, vec![Some(x)], outs)?;
    Ok(())
}

fn gather(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let i = cx.input(node, 1)?;
    let s = cx.shape(x);
    let a = axis_or(cx, node, Attrs::new(node).int("axis", 0), s.len())?;
    let si = cx.shape(i);
    let mut out = s[..a].to_vec();
    out.extend_from_slice(&si);
    out.extend_from_slice(&s[a + 1..]);
    let dt = cx.dtype(x);
    let ax = u8_axis(cx, node, a)?;
    cx.emit(
        node,
        Op::Gather { axis: ax },
        vec![Some(x), Some(i)],
        vec![(dt, out)],
    )?;
    Ok(())
}

fn gather_elements(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let i = cx.input(node, 1)?;
    let a = axis_or(cx, node, Attrs::new(node).int("axis", 0), cx.shape(x).len())?;
    let (dt, si) = (cx.dtype(x), cx.shape(i));
    let ax = u8_axis(cx, node, a)?;
    cx.emit(
        node,
        Op::GatherElements { axis: ax },
        vec![Some(x), Some(i)],
        vec![(dt, si)],
    )?;
    Ok(())
}

fn scatter_elements(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let i = cx.input(node, 1)?;
    let u = cx.input(node, 2)?;
    if Attrs::new(node)
        .string("reduction")
        .is_some_and(|r| r != "none")
    {
        return Err(cx.err(node, "reductions are not supported"));
    }
    let a = axis_or(cx, node, Attrs::new(node).int("axis", 0), cx.shape(x).len())?;
    let (dt, s) = (cx.dtype(x), cx.shape(x));
    let ax = u8_axis(cx, node, a)?;
    cx.emit(
        node,
        Op::ScatterElements { axis: ax },
        vec![Some(x), Some(i), Some(u)],
        vec![(dt, s)],
    )?;
    Ok(())
}

fn pad(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let s = cx.shape(x);
    let r = s.len();
    let a = Attrs::new(node);
    let mode = match a.string("mode").as_deref().unwrap_or("constant") {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        m => return Err(cx.err(node, format!("pad mode '{m}' is not supported"))),
    };
    let (pads_raw, value) = if cx.opset < 11 {
        (
            a.ints("pads")
                .or_else(|| a.ints("paddings"))
                .unwrap_or_default(),
            a.float("value", 0.0) as f64,
        )
    } else {
        let p = cx.input(node, 1)?;
        let pads = cx.const_ints(node, p, "pads")?;
        let value = match cx.opt_input(node, 2)? {
            Some(v) => cx
                .const_f32(node, v, "constant_value")?
                .first()
                .copied()
                .unwrap_or(0.0) as f64,
            None => 0.0,
        };
        (pads, value)
    };
    let axes: Vec<usize> = match cx.opt_input(node, 3)? {
        Some(t) if cx.opset >= 18 => cx
            .const_ints(node, t, "axes")?
            .iter()
            .map(|&v| axis_or(cx, node, v, r))
            .collect::<Result<_>>()?,
        _ => (0..r).collect(),
    };
    if pads_raw.len() != 2 * axes.len() || r > OP_RANK {
        return Err(cx.err(node, "pads length must be twice the number of axes"));
    }
    let mut pads = [0i64; 2 * OP_RANK];
    let mut out = s.clone();
    for (k, &d) in axes.iter().enumerate() {
        pads[d] = pads_raw[k];
        pads[OP_RANK + d] = pads_raw[axes.len() + k];
        let n = s[d] as i64 + pads[d] + pads[OP_RANK + d];
        if n < 0 {
            return Err(cx.err(node, "negative output dim"));
        }
        out[d] = n as usize;
    }
    let dt = cx.dtype(x);
    cx.emit(
        node,
        Op::Pad { mode, pads, value },
        vec![Some(x)],
        vec![(dt, out)],
    )?;
    Ok(())
}

fn expand(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let t = cx.input(node, 1)?;
    let target = dims_from(cx, node, t, "shape")?;
    let out = broadcast(&[cx.shape(x), target])
        .ok_or_else(|| cx.err(node, "shape does not broadcast"))?;
    let dt = cx.dtype(x);
    if out == cx.shape(x) {
        cx.bind(&node.output[0], x);
        return Ok(());
    }
    cx.emit(node, Op::Expand, vec![Some(x)], vec![(dt, out)])?;
    Ok(())
}

fn tile(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let t = cx.input(node, 1)?;
    let reps = dims_from(cx, node, t, "repeats")?;
    let s = cx.shape(x);
    if reps.len() != s.len() {
        return Err(cx.err(node, "repeats must have one entry per dim"));
    }
    let out = s.iter().zip(&reps).map(|(a, b)| a * b).collect();
    let dt = cx.dtype(x);
    cx.emit(node, Op::Tile, vec![Some(x)], vec![(dt, out)])?;
    Ok(())
}

fn depth_to_space(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let s = cx.shape(x);
    let a = Attrs::new(node);
    let b = a.int("blocksize", 0).max(0) as usize;
    if s.len() != 4 || b == 0 || !s[1].is_multiple_of(b * b) {
        return Err(cx.err(node, "needs NCHW with C divisible by blocksize²"));
    }
    let crd = a.string("mode").as_deref() == Some("CRD");
    let out = vec![s[0], s[1] / (b * b), s[2] * b, s[3] * b];
    let dt = cx.dtype(x);
    cx.emit(
        node,
        Op::DepthToSpace {
            block: b as u32,
            crd,
        },
        vec![Some(x)],
        vec![(dt, out)],
    )?;
    Ok(())
}

fn space_to_depth(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let s = cx.shape(x);
    let b = Attrs::new(node).int("blocksize", 0).max(0) as usize;
    if s.len() != 4 || b == 0 || !s[2].is_multiple_of(b) || !s[3].is_multiple_of(b) {
        return Err(cx.err(node, "needs NCHW with H, W divisible by blocksize"));
    }
    let out = vec![s[0], s[1] * b * b, s[2] / b, s[3] / b];
    let dt = cx.dtype(x);
    cx.emit(
        node,
        Op::SpaceToDepth { block: b as u32 },
        vec![Some(x)],
        vec![(dt, out)],
    )?;
    Ok(())
}

fn trilu(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let x = cx.input(node, 0)?;
    let k = match cx.opt_input(node, 1)? {
        Some(t) => cx.const_ints(node, t, "k")?.first().copied().unwrap_or(0),
        None => 0,
    };
    let upper = Attrs::new(node).int("upper", 1) != 0;
    let (dt, s) = (cx.dtype(x), cx.shape(x));
    cx.emit(node, Op::Trilu { upper, k }, vec![Some(x)], vec![(dt, s)])?;
    Ok(())
}

fn one_hot(cx: &mut Ctx, node: &NodeProto) -> Result<()> {
    let i = cx.input(node, 0)?;
    let d = cx.input(node, 1)?;
    let v = cx.input(node, 2)?;
    let depth = cx
        .const_f32(node, d, "depth")?
        .first()
        .copied()
        .unwrap_or(0.0);
    if depth < 1.0 {
        return Err(cx.err(node, "depth must be positive"));
    }
    let si = cx.shape(i);
    let a = axis_or(cx, node, Attrs::new(node).int("axis", -1), si.len() + 1)?;
    let mut out = si.clone();
    out.insert(a, depth as usize);
    let dt = cx.dtype(v);
    // Float indices are truncated like onnxruntime does.
    let i = if cx.dtype(i).is_float() {
        let s = cx.shape(i);
        cx.emit_tmp(
            node,
            Op::Cast {
                to: DType::I64,
                saturate: false,
            },
            vec![Some(i)],
            DType::I64,
            s,
        )?
    } else {
        i
    };
    let ax = u8_axis(cx, node, a)?;
    cx.emit(
        node,
        Op::OneHot { axis: ax },
        vec![Some(i), Some(d), Some(v)],
        vec![(dt, out)],
    )?;
    Ok(())
}
