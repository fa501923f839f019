//! Reductions and normalisations: Softmax, Reduce*, ArgMax/ArgMin, LayerNorm,
//! BatchNorm, InstanceNorm, LRN, CumSum.

use super::{Io, same_len};
use crate::error::{EngineError, bad};
use kiln_format::{MAX_RANK, ReduceKind};
use kiln_kernels::norm as knorm;

pub(crate) fn softmax(
    axis: usize,
    coerce_2d: bool,
    log: bool,
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let mut y = io.output(0)?;
    let s = x.shape();
    if axis >= s.rank.max(1) {
        return Err(bad("Softmax axis out of range"));
    }
    same_len(x.info.numel(), y.info.numel())?;
    let outer = s.prod(0, axis);
    let (len, inner) = if coerce_2d {
        (s.prod(axis, s.rank), 1)
    } else {
        (s.dims[axis], s.prod(axis + 1, s.rank))
    };
    knorm::softmax(outer, len, inner, log, x.f32()?, y.f32_mut()?);
    Ok(())
}

pub(crate) fn reduce(kind: ReduceKind, axes: u32, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let mut y = io.output(0)?;
    let s = x.shape();
    let xs = x.f32()?;
    let out = y.f32_mut()?;
    // Output strides over the input's dims: 0 on reduced axes.
    let mut ost = [0usize; MAX_RANK];
    let mut acc = 1usize;
    let mut count = 1usize;
    for d in (0..s.rank).rev() {
        if axes & (1 << d) != 0 {
            count *= s.dims[d];
        } else {
            ost[d] = acc;
            acc *= s.dims[d];
        }
    }
    same_len(out.len(), acc)?;
    let init = match kind {
        ReduceKind::Max => f32::NEG_INFINITY,
        ReduceKind::Min => f32::INFINITY,
        ReduceKind::Prod => 1.0,
        _ => 0.0,
    };
    out.fill(init);
    let mut idx = [0usize; MAX_RANK];
    let mut o = 0usize;
    for &v in xs {
        let a = &mut out[o];
        *a = match kind {
            ReduceKind::Sum | ReduceKind::Mean => *a + v,
            ReduceKind::Max => {
                if v.is_nan() || *a >= v {
                    if v.is_nan() { v } else { *a }
                } else {
                    v
                }
            }
            ReduceKind::Min => {
                if v.is_nan() || *a <= v {
                    if v.is_nan() { v } else { *a }
                } else {
                    v
                }
            }
            ReduceKind::Prod => *a * v,
            ReduceKind::L1 => *a + v.abs(),
            ReduceKind::L2 | ReduceKind::SumSquare => *a + v * v,
            ReduceKind::LogSum => *a + v,
            ReduceKind::LogSumExp => *a + libm::expf(v),
        };
        let mut d = s.rank;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            o += ost[d];
            if idx[d] < s.dims[d] {
                break;
            }
            o -= ost[d] * s.dims[d];
            idx[d] = 0;
        }
    }
    match kind {
        ReduceKind::Mean => {
            let c = count as f32;
            out.iter_mut().for_each(|v| *v /= c);
        }
        ReduceKind::L2 => out.iter_mut().for_each(|v| *v = libm::sqrtf(*v)),
        ReduceKind::LogSum | ReduceKind::LogSumExp => {
            out.iter_mut().for_each(|v| *v = libm::logf(*v))
        }
        _ => {}
    }
    Ok(())
}

pub(crate) fn argmax(
    axis: usize,
    select_last: bool,
    min: bool,
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let mut y = io.output(0)?;
    let s = x.shape();
    if axis >= s.rank {
        return Err(bad("ArgMax axis out of range"));
    }
    let (outer, n, inner) = (s.prod(0, axis), s.dims[axis], s.prod(axis + 1, s.rank));
    let out = y.i64_mut()?;
    same_len(out.len(), outer * inner)?;
    let xs = x.f32()?;
    for o in 0..outer {
        for i in 0..inner {
            let mut best = 0usize;
            for j in 1..n {
                let (v, b) = (xs[(o * n + j) * inner + i], xs[(o * n + best) * inner + i]);
                let better = if min {
                    v < b || (select_last && v == b)
                } else {
                    v > b || (select_last && v == b)
                };
                if better {
                    best = j;
                }
            }
            out[o * inner + i] = best as i64;
        }
    }
    Ok(())
}

pub(crate) fn layer_norm(axis: usize, eps: f32, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let scale = io.input(1)?;
    let bias = io.opt_input(2);
    let mut y = io.output(0)?;
    let s = x.shape();
    if axis >= s.rank {
        return Err(bad("LayerNormalization axis out of range"));
    }
    let cols = s.prod(axis, s.rank);
    let rows = s.prod(0, axis);
    if scale.info.numel() != cols || bias.is_some_and(|b| b.info.numel() != cols) {
        return Err(bad(
            "LayerNormalization scale/bias must cover the normalised dims",
        ));
    }
    same_len(y.info.numel(), rows * cols)?;
    let b = match bias {
        Some(b) => Some(b.f32()?),
        None => None,
    };
    knorm::layer_norm(rows, cols, eps, x.f32()?, scale.f32()?, b, y.f32_mut()?);
    Ok(())
}

fn nc_hw(io: &Io<'_>) -> Result<(usize, usize, usize), EngineError> {
    let s = io.input(0)?.shape();
    if s.rank < 2 {
        return Err(bad("normalisation needs rank >= 2"));
    }
    Ok((s.dims[0], s.dims[1], s.prod(2, s.rank)))
}

pub(crate) fn batch_norm(eps: f32, io: &mut Io<'_>) -> Result<(), EngineError> {
    let (n, c, hw) = nc_hw(io)?;
    let x = io.input(0)?;
    let p: [&[f32]; 4] = [
        io.input(1)?.f32()?,
        io.input(2)?.f32()?,
        io.input(3)?.f32()?,
        io.input(4)?.f32()?,
    ];
    if p.iter().any(|v| v.len() != c) {
        return Err(bad("BatchNormalization parameters must have C elements"));
    }
    let mut y = io.output(0)?;
    same_len(y.info.numel(), n * c * hw)?;
    knorm::batch_norm(
        n,
        c,
        hw,
        eps,
        x.f32()?,
        p[0],
        p[1],
        p[2],
        p[3],
        y.f32_mut()?,
    );
    Ok(())
}

pub(crate) fn instance_norm(eps: f32, io: &mut Io<'_>) -> Result<(), EngineError> {
    let (n, c, hw) = nc_hw(io)?;
    let x = io.input(0)?;
    let (sc, b) = (io.input(1)?.f32()?, io.input(2)?.f32()?);
    if sc.len() != c || b.len() != c {
        return Err(bad("InstanceNormalization parameters must have C elements"));
    }
    let mut y = io.output(0)?;
    same_len(y.info.numel(), n * c * hw)?;
    knorm::instance_norm(n, c, hw, eps, x.f32()?, sc, b, y.f32_mut()?);
    Ok(())
}

pub(crate) fn lrn(
    size: usize,
    alpha: f32,
    beta: f32,
    bias: f32,
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    let (n, c, hw) = nc_hw(io)?;
    let x = io.input(0)?;
    let mut y = io.output(0)?;
    same_len(y.info.numel(), n * c * hw)?;
    knorm::lrn(n, c, hw, size, alpha, beta, bias, x.f32()?, y.f32_mut()?);
    Ok(())
}

pub(crate) fn cumsum(
    axis: usize,
    exclusive: bool,
    reverse: bool,
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let mut y = io.output(0)?;
    let s = x.shape();
    if axis >= s.rank {
        return Err(bad("CumSum axis out of range"));
    }
    let (outer, n, inner) = (s.prod(0, axis), s.dims[axis], s.prod(axis + 1, s.rank));
    let xs = x.f32()?;
    let out = y.f32_mut()?;
    same_len(out.len(), xs.len())?;
    for o in 0..outer {
        for i in 0..inner {
            let mut acc = 0.0f32;
            for t in 0..n {
                let j = if reverse { n - 1 - t } else { t };
                let p = (o * n + j) * inner + i;
                if exclusive {
                    out[p] = acc;
                    acc += xs[p];
                } else {
                    acc += xs[p];
                    out[p] = acc;
                }
            }
        }
    }
    Ok(())
}
