//! Convolution and pooling on NCHW (1-D ops arrive as NCW and run as H = 1).

use super::Io;
use super::elementwise::activate;
use crate::error::{EngineError, bad};
use crate::tensor::Shape;
use kiln_format::{Unary, Window};
use kiln_kernels::conv::{self as kconv, Conv2d};
use kiln_kernels::pool::{self as kpool, Pool2d};

/// [n, c, h, w] of a rank-3 or rank-4 tensor.
pub(crate) fn nchw(s: &Shape) -> Result<[usize; 4], EngineError> {
    match s.rank {
        3 => Ok([s.dims[0], s.dims[1], 1, s.dims[2]]),
        4 => Ok([s.dims[0], s.dims[1], s.dims[2], s.dims[3]]),
        _ => Err(bad("expected an NCHW (rank 4) or NCW (rank 3) tensor")),
    }
}

fn out_dim(i: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize) -> Option<usize> {
    let eff = d.checked_mul(k.checked_sub(1)?)? + 1;
    let padded = i + p0 + p1;
    if s == 0 || padded < eff {
        None
    } else {
        Some((padded - eff) / s + 1)
    }
}

/// [`conv_params`] of a `QConvPacked`, whose weights are
/// `[M, KH, KW, 4·ceil(C/group/4)]`.
pub(crate) fn packed_conv_params(
    w: &Window,
    group: usize,
    sx: &Shape,
    sw: &Shape,
    sy: &Shape,
) -> Result<Conv2d, EngineError> {
    let [_, c, _, _] = nchw(sx)?;
    let [m, kh, kw, cpad] = nchw(sw)?;
    let cg = c.checked_div(group).unwrap_or(0);
    if group == 0 || cpad != cg.div_ceil(4) * 4 {
        return Err(bad(
            "QConvPacked weights must be [M, KH, KW, 4·ceil(C/group/4)]",
        ));
    }
    let mut dims = sw.dims;
    dims[..4].copy_from_slice(&[m, cg, kh, kw]);
    conv_params(w, group, sx, &Shape { dims, rank: 4 }, sy)
}

/// The kernel parameters for a Conv node, checked against the tensor shapes.
pub(crate) fn conv_params(
    w: &Window,
    group: usize,
    sx: &Shape,
    sw: &Shape,
    sy: &Shape,
) -> Result<Conv2d, EngineError> {
    let [n, c, h, wd] = nchw(sx)?;
    let [m, cg, kh, kw] = nchw(sw)?;
    let [yn, ym, oh, ow] = nchw(sy)?;
    let p = Conv2d {
        n,
        c,
        h,
        w: wd,
        m,
        kh,
        kw,
        oh,
        ow,
        group,
        stride: [w.strides[0] as usize, w.strides[1] as usize],
        dilation: [w.dilations[0] as usize, w.dilations[1] as usize],
        pad: [
            w.pads[0] as usize,
            w.pads[1] as usize,
            w.pads[2] as usize,
            w.pads[3] as usize,
        ],
    };
    let ok = group > 0
        && c % group == 0
        && m % group == 0
        && cg * group == c
        && yn == n
        && ym == m
        && [kh, kw] == [w.kernel[0] as usize, w.kernel[1] as usize]
        && out_dim(h, kh, p.stride[0], p.dilation[0], p.pad[0], p.pad[2]) == Some(oh)
        && out_dim(wd, kw, p.stride[1], p.dilation[1], p.pad[1], p.pad[3]) == Some(ow);
    if ok {
        Ok(p)
    } else {
        Err(bad("Conv shapes disagree with its attributes"))
    }
}

pub(crate) fn conv(
    w: &Window,
    group: usize,
    act: &Unary,
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let wt = io.input(1)?;
    let b = io.opt_input(2);
    let mut y = io.output(0)?;
    let p = conv_params(w, group, &x.shape(), &wt.shape(), &y.shape())?;
    let bias = match b {
        Some(b) if b.info.numel() == p.m => Some(b.f32()?),
        Some(_) => return Err(bad("Conv bias must have M elements")),
        None => None,
    };
    let need = kconv::conv2d_scratch_len(&p);
    let (xs, ws) = (x.f32()?, wt.f32()?);
    let out = y.f32_mut()?;
    let scratch = io.scratch_f32(need)?;
    kconv::conv2d(&p, xs, ws, bias, out, scratch);
    activate(act, out)
}

/// Hybrid convolution (see `kiln_format::Op::HybridConv`).
pub(crate) fn hybrid_conv(
    w: &Window,
    group: usize,
    [act_min, act_max]: [f32; 2],
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let wt = io.input(1)?;
    let ws = io.input(2)?.f32()?;
    let b = io.opt_input(3);
    let mut y = io.output(0)?;
    let p = conv_params(w, group, &x.shape(), &wt.shape(), &y.shape())?;
    let bias = match b {
        Some(b) if b.info.numel() == p.m => Some(b.f32()?),
        Some(_) => return Err(bad("HybridConv bias must have M elements")),
        None => None,
    };
    let &[w_scale] = ws else {
        return Err(bad("HybridConv needs one weight scale"));
    };
    if !(w_scale.is_finite() && act_min <= act_max) {
        return Err(bad(
            "HybridConv needs a finite weight scale and act_min <= act_max",
        ));
    }
    let (xs, wd) = (x.f32()?, wt.i8()?);
    let out = y.f32_mut()?;
    if xs.len() < p.n * p.c * p.h * p.w
        || wd.len() < p.m * (p.c / p.group) * p.kh * p.kw
        || out.len() < p.n * p.m * p.oh * p.ow
    {
        return Err(bad("HybridConv operand shorter than its shape"));
    }
    let need = kiln_kernels::quant::hybrid_conv2d_scratch_len(&p);
    let scratch: &mut [i8] = bytemuck::cast_slice_mut(io.scratch_f32(need.div_ceil(4))?);
    kiln_kernels::quant::hybrid_conv2d(
        &p,
        xs,
        wd,
        w_scale,
        bias,
        [act_min, act_max],
        out,
        &mut scratch[..need],
    );
    Ok(())
}

pub(crate) fn conv_transpose(w: &Window, group: usize, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let wt = io.input(1)?;
    let b = io.opt_input(2);
    let mut y = io.output(0)?;
    let [n, c, h, wd] = nchw(&x.shape())?;
    let [wc, mg, kh, kw] = nchw(&wt.shape())?;
    let [yn, m, oh, ow] = nchw(&y.shape())?;
    if group == 0
        || wc != c
        || c % group != 0
        || mg * group != m
        || yn != n
        || [kh, kw] != [w.kernel[0] as usize, w.kernel[1] as usize]
    {
        return Err(bad("ConvTranspose shapes disagree with its attributes"));
    }
    let p = Conv2d {
        n,
        c,
        h,
        w: wd,
        m,
        kh,
        kw,
        oh,
        ow,
        group,
        stride: [w.strides[0] as usize, w.strides[1] as usize],
        dilation: [w.dilations[0] as usize, w.dilations[1] as usize],
        pad: [
            w.pads[0] as usize,
            w.pads[1] as usize,
            w.pads[2] as usize,
            w.pads[3] as usize,
        ],
    };
    // Every output position must be reachable within the computed extent.
    let full_h = (h.max(1) - 1) * p.stride[0] + p.dilation[0] * (kh.max(1) - 1) + 1;
    let full_w = (wd.max(1) - 1) * p.stride[1] + p.dilation[1] * (kw.max(1) - 1) + 1;
    if p.stride[0] == 0
        || p.dilation[0] == 0
        || p.dilation[1] == 0
        || p.stride[1] == 0
        || oh + p.pad[0] > full_h + p.pad[2] + p.stride[0]
        || ow + p.pad[1] > full_w + p.pad[3] + p.stride[1]
    {
        return Err(bad(
            "ConvTranspose output shape disagrees with its attributes",
        ));
    }
    let bias = match b {
        Some(b) if b.info.numel() == m => Some(b.f32()?),
        Some(_) => return Err(bad("ConvTranspose bias must have M elements")),
        None => None,
    };
    kconv::conv_transpose2d(&p, x.f32()?, wt.f32()?, bias, y.f32_mut()?);
    Ok(())
}

fn pool_params(w: &Window, sx: &Shape, sy: &Shape) -> Result<Pool2d, EngineError> {
    let [n, c, h, wd] = nchw(sx)?;
    let [yn, yc, oh, ow] = nchw(sy)?;
    let p = Pool2d {
        n,
        c,
        h,
        w: wd,
        oh,
        ow,
        kh: w.kernel[0] as usize,
        kw: w.kernel[1] as usize,
        stride: [w.strides[0] as usize, w.strides[1] as usize],
        dilation: [w.dilations[0] as usize, w.dilations[1] as usize],
        pad: [
            w.pads[0] as usize,
            w.pads[1] as usize,
            w.pads[2] as usize,
            w.pads[3] as usize,
        ],
    };
    // floor or ceil mode: the output may have one more step than floor mode.
    let fits = |i, k, s, d, p0, p1, o: usize| match out_dim(i, k, s, d, p0, p1) {
        Some(f) => o == f || o == f + 1,
        None => false,
    };
    let ok = yn == n
        && yc == c
        && p.kh > 0
        && p.kw > 0
        && fits(h, p.kh, p.stride[0], p.dilation[0], p.pad[0], p.pad[2], oh)
        && fits(wd, p.kw, p.stride[1], p.dilation[1], p.pad[1], p.pad[3], ow);
    if ok {
        Ok(p)
    } else {
        Err(bad("pooling shapes disagree with its attributes"))
    }
}

/// TFLite int8 AVERAGE_POOL_2D (see `kiln_format::Op::QAvgPool`).
pub(crate) fn q_avg_pool(
    w: &Window,
    act_min: i32,
    act_max: i32,
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let mut y = io.output(0)?;
    let p = pool_params(w, &x.shape(), &y.shape())?;
    let (xd, out) = (x.i8()?, y.i8_mut()?);
    if xd.len() < p.n * p.c * p.h * p.w || out.len() < p.n * p.c * p.oh * p.ow {
        return Err(bad("QAvgPool operand shorter than its shape"));
    }
    kiln_kernels::quant::avg_pool_i8(&p, act_min, act_max, xd, out);
    Ok(())
}

pub(crate) fn max_pool(w: &Window, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let mut y = io.output(0)?;
    let p = pool_params(w, &x.shape(), &y.shape())?;
    if x.dtype() == kiln_format::DType::I8 {
        // Int8 (a quantized graph): input and output share quantization.
        let (xd, out) = (x.i8()?, y.i8_mut()?);
        if xd.len() < p.n * p.c * p.h * p.w || out.len() < p.n * p.c * p.oh * p.ow {
            return Err(bad("MaxPool operand shorter than its shape"));
        }
        kiln_kernels::quant::max_pool_i8(&p, -128, 127, xd, out);
        return Ok(());
    }
    if covers_whole_plane(&p) {
        kpool::global_max_pool(p.n * p.c, p.h * p.w, x.f32()?, y.f32_mut()?);
        return Ok(());
    }
    kpool::max_pool2d(&p, x.f32()?, y.f32_mut()?);
    Ok(())
}

/// Whether a pooling is one window over each whole unpadded plane (Keras'
/// pooling to 1x1): then it is the global pooling, with its faster kernel.
fn covers_whole_plane(p: &Pool2d) -> bool {
    p.oh == 1 && p.ow == 1 && [p.kh, p.kw] == [p.h, p.w] && p.pad == [0; 4] && p.dilation == [1, 1]
}

pub(crate) fn avg_pool(
    w: &Window,
    count_include_pad: bool,
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let mut y = io.output(0)?;
    let p = pool_params(w, &x.shape(), &y.shape())?;
    if covers_whole_plane(&p) {
        kpool::global_avg_pool(p.n * p.c, p.h * p.w, x.f32()?, y.f32_mut()?);
        return Ok(());
    }
    kpool::avg_pool2d(&p, count_include_pad, x.f32()?, y.f32_mut()?);
    Ok(())
}

pub(crate) fn lp_pool(w: &Window, pw: u32, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let mut y = io.output(0)?;
    let p = pool_params(w, &x.shape(), &y.shape())?;
    kpool::lp_pool2d(&p, pw, x.f32()?, y.f32_mut()?);
    Ok(())
}

pub(crate) fn global_pool(max: bool, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let mut y = io.output(0)?;
    let sx = x.shape();
    if sx.rank < 2 {
        return Err(bad("global pooling needs rank >= 2"));
    }
    let nc = sx.dims[0] * sx.dims[1];
    let hw = sx.prod(2, sx.rank);
    if y.info.numel() != nc {
        return Err(bad("global pooling output must be [N, C, 1, ...]"));
    }
    if max {
        kpool::global_max_pool(nc, hw, x.f32()?, y.f32_mut()?);
    } else {
        kpool::global_avg_pool(nc, hw, x.f32()?, y.f32_mut()?);
    }
    Ok(())
}
