//! QuantizeLinear, DequantizeLinear, the integer-exact QLinearConv and the
//! TFLite int8 kernels (fixed-point requantization).

use super::conv::nchw;
use super::{Io, same_len};
use crate::error::{EngineError, bad};
use crate::tensor::Tensor;
use kiln_format::{DType, Window};
use kiln_kernels::math::round_half_even;

/// (outer, channels, inner) for per-axis parameters; per-tensor when the scale has one element.
fn axis_split(
    x: &Tensor<'_>,
    scale_len: usize,
    axis: usize,
) -> Result<(usize, usize, usize), EngineError> {
    let s = x.shape();
    if scale_len == 1 {
        return Ok((1, 1, s.numel()));
    }
    if axis >= s.rank || s.dims[axis] != scale_len {
        return Err(bad(
            "per-axis quantization parameters disagree with the axis",
        ));
    }
    Ok((s.prod(0, axis), s.dims[axis], s.prod(axis + 1, s.rank)))
}

fn zero_point(zp: Option<Tensor<'_>>, c: usize, n: usize) -> Result<i64, EngineError> {
    match zp {
        Some(z) if z.info.numel() == n => z.int_at(c),
        Some(z) if z.info.numel() == 1 => z.int_at(0),
        Some(_) => Err(bad("zero point size disagrees with the scale")),
        None => Ok(0),
    }
}

pub(crate) fn dequantize(axis: usize, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let scale = io.input(1)?.f32()?;
    let zp = io.opt_input(2);
    let mut y = io.output(0)?;
    let (outer, ch, inner) = axis_split(&x, scale.len(), axis)?;
    let out = y.f32_mut()?;
    same_len(out.len(), outer * ch * inner)?;
    if scale.len() == 1 && x.dtype() == DType::I8 {
        let z = zero_point(zp, 0, 1)? as i32;
        let xd = x.i8()?;
        same_len(xd.len(), out.len())?;
        kiln_kernels::quant::dequantize_i8(xd, scale[0], z, out);
        return Ok(());
    }
    for o in 0..outer {
        for c in 0..ch {
            let (s, z) = (scale[c], zero_point(zp, c, scale.len())?);
            for i in 0..inner {
                let p = (o * ch + c) * inner + i;
                out[p] = (x.int_at(p)? - z) as f32 * s;
            }
        }
    }
    Ok(())
}

fn range_of(dt: DType) -> Result<(i64, i64), EngineError> {
    Ok(match dt {
        DType::I8 => (-128, 127),
        DType::U8 => (0, 255),
        DType::I16 => (-32768, 32767),
        DType::U16 => (0, 65535),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        _ => return Err(bad("quantized dtype must be an integer type")),
    })
}

fn write_q(dt: DType, out: &mut [u8], p: usize, v: i64) {
    let s = dt.size();
    match s {
        1 => out[p] = v as u8,
        2 => out[2 * p..2 * p + 2].copy_from_slice(&(v as i16).to_le_bytes()),
        _ => out[4 * p..4 * p + 4].copy_from_slice(&(v as i32).to_le_bytes()),
    }
}

pub(crate) fn quantize(axis: usize, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let scale = io.input(1)?.f32()?;
    let zp = io.opt_input(2);
    let y = io.output(0)?;
    let dt = y.info.dtype;
    let (lo, hi) = range_of(dt)?;
    let (outer, ch, inner) = axis_split(&x, scale.len(), axis)?;
    same_len(y.info.numel(), outer * ch * inner)?;
    let xs = x.f32()?;
    if scale.len() == 1 && dt == DType::I8 {
        let z = zero_point(zp, 0, 1)?;
        let out: &mut [i8] = bytemuck::cast_slice_mut(y.data);
        same_len(out.len(), xs.len())?;
        if (-128..=127).contains(&z) {
            kiln_kernels::quant::quantize_i8(xs, scale[0], z as i32, out);
            return Ok(());
        }
    }
    for o in 0..outer {
        for c in 0..ch {
            let (s, z) = (scale[c], zero_point(zp, c, scale.len())?);
            for i in 0..inner {
                let p = (o * ch + c) * inner + i;
                let q = round_half_even(xs[p] / s);
                let v = if q.is_nan() {
                    z
                } else {
                    (q as i64).saturating_add(z).clamp(lo, hi)
                };
                write_q(dt, y.data, p, v);
            }
        }
    }
    Ok(())
}

pub(crate) fn qlinear_conv(w: &Window, group: usize, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let xs = io.input(1)?.scalar_f32(0)?;
    let xz = io.input(2)?.int_at(0)?;
    let wt = io.input(3)?;
    let ws = io.input(4)?.f32()?;
    let wz = io.input(5)?;
    let ys = io.input(6)?.scalar_f32(0)?;
    let yz = io.input(7)?.int_at(0)?;
    let bias = io.opt_input(8);
    let y = io.output(0)?;
    let p = super::conv::conv_params(w, group, &x.shape(), &wt.shape(), &y.shape())?;
    let [_, _, h, wd] = nchw(&x.shape())?;
    if (ws.len() != 1 && ws.len() != p.m) || (wz.info.numel() != 1 && wz.info.numel() != p.m) {
        return Err(bad(
            "QLinearConv weight scale/zero point must be per tensor or per output channel",
        ));
    }
    if bias.is_some_and(|b| b.info.numel() != p.m || b.dtype() != DType::I32) {
        return Err(bad("QLinearConv bias must be int32 with M elements"));
    }
    let (lo, hi) = range_of(y.info.dtype)?;
    let q = QConv {
        p: &p,
        h,
        wd,
        xz,
        xs,
        ys,
        yz,
        lo,
        hi,
        raw: false,
    };
    let (xd, wd8) = (x.data, wt.data);
    if xd.len() < x.info.numel() || wd8.len() < wt.info.numel() {
        return Err(bad("QLinearConv operand shorter than its shape"));
    }
    let signed = |t: &Tensor<'_>| match t.dtype() {
        DType::I8 => Ok(true),
        DType::U8 => Ok(false),
        _ => Err(bad("QLinearConv operands must be int8 or uint8")),
    };
    let (out_dt, out) = (y.info.dtype, y.data);
    let (x_signed, w_signed) = (signed(&x)?, signed(&wt)?);
    q.run([xd, wd8], [x_signed, w_signed], ws, wz, bias, out_dt, out)
}

/// The shape and quantization of one QLinearConv or ConvInteger.
///
/// int8 and uint8 operands run through one loop (one copy of it in the
/// WebAssembly package rather than four): every byte is read as the int8
/// `b ^ flip` (`flip` 0x80 for uint8, which is `b - 128`) and a uint8
/// zero point lowered by 128 to match, so `x - zp` is unchanged.
struct QConv<'p> {
    p: &'p kiln_kernels::conv::Conv2d,
    h: usize,
    wd: usize,
    xz: i64,
    xs: f32,
    ys: f32,
    yz: i64,
    lo: i64,
    hi: i64,
    /// ConvInteger: store the int32 accumulators as they are.
    raw: bool,
}

impl QConv<'_> {
    #[allow(clippy::too_many_arguments, reason = "the op's operands")]
    fn run(
        &self,
        [x, wt]: [&[u8]; 2],
        [x_signed, w_signed]: [bool; 2],
        ws: &[f32],
        wz: Tensor<'_>,
        bias: Option<Tensor<'_>>,
        out_dt: DType,
        out: &mut [u8],
    ) -> Result<(), EngineError> {
        let (p, h, wd) = (self.p, self.h, self.wd);
        let (cg, mg) = (p.c / p.group, p.m / p.group);
        // Accumulate one strip of an output row at a time over the filter
        // taps, each tap a contiguous (for stride 1) run of input columns;
        // taps over padding add (xz - xz)·w = 0 and are skipped. Int32
        // accumulation, as the ONNX operator specifies.
        const STRIP: usize = 64;
        let flip = |signed: bool| if signed { (0u8, 0) } else { (0x80u8, 128) };
        let ((xf, x_shift), (wf, w_shift)) = (flip(x_signed), flip(w_signed));
        let xz = self.xz as i32 - x_shift;
        let (ph, pw) = (p.pad[0] as isize, p.pad[1] as isize);
        for n in 0..p.n {
            for m in 0..p.m {
                let g = m / mg;
                let wzm = wz.int_at(if wz.info.numel() == 1 { 0 } else { m })? as i32 - w_shift;
                let mult = self.xs * ws[if ws.len() == 1 { 0 } else { m }] / self.ys;
                let b = match bias {
                    Some(b) => b.int_at(m)? as i32,
                    None => 0,
                };
                let wm = &wt[m * cg * p.kh * p.kw..(m + 1) * cg * p.kh * p.kw];
                for oy in 0..p.oh {
                    for ox0 in (0..p.ow).step_by(STRIP) {
                        let len = STRIP.min(p.ow - ox0);
                        let mut acc = [b; STRIP];
                        for ci in 0..cg {
                            let xc = &x[(n * p.c + g * cg + ci) * h * wd..][..h * wd];
                            for ky in 0..p.kh {
                                let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize - ph;
                                if iy < 0 || iy >= h as isize {
                                    continue;
                                }
                                let xrow = &xc[iy as usize * wd..][..wd];
                                for kx in 0..p.kw {
                                    let wv =
                                        i32::from((wm[(ci * p.kh + ky) * p.kw + kx] ^ wf) as i8)
                                            - wzm;
                                    let off = (kx * p.dilation[1]) as isize - pw;
                                    let (a, e) =
                                        kiln_kernels::conv::out_range(off, p.stride[1], wd, p.ow);
                                    let (a, e) = (a.max(ox0), e.min(ox0 + len));
                                    for ox in a..e {
                                        let ix = (ox * p.stride[1]) as isize + off;
                                        let xv = i32::from((xrow[ix as usize] ^ xf) as i8) - xz;
                                        acc[ox - ox0] =
                                            acc[ox - ox0].wrapping_add(wv.wrapping_mul(xv));
                                    }
                                }
                            }
                        }
                        if self.raw {
                            for (t, &v) in acc[..len].iter().enumerate() {
                                let at = ((n * p.m + m) * p.oh + oy) * p.ow + ox0 + t;
                                write_q(DType::I32, out, at, i64::from(v));
                            }
                            continue;
                        }
                        for (t, &v) in acc[..len].iter().enumerate() {
                            // A non-finite multiplier (e.g. y_scale = 0)
                            // saturates like the float cast does.
                            let q =
                                (round_half_even(v as f32 * mult) as i64).saturating_add(self.yz);
                            write_q(
                                out_dt,
                                out,
                                ((n * p.m + m) * p.oh + oy) * p.ow + ox0 + t,
                                q.clamp(self.lo, self.hi),
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The `[mantissa, shift]` pairs of an int8 op's requantization input:
/// one for all `channels`, or one per channel.
fn requant_pairs<'a>(t: &Tensor<'a>, channels: usize) -> Result<&'a [[i32; 2]], EngineError> {
    const WHAT: &str = "int8 requantization must be int32 [1 or output channels, 2]";
    let rq: &[[i32; 2]] = bytemuck::try_cast_slice(t.i32()?).map_err(|_| bad(WHAT))?;
    if rq.len() != 1 && rq.len() != channels {
        return Err(bad(WHAT));
    }
    Ok(rq)
}

/// TFLite int8 FULLY_CONNECTED (see `kiln_format::Op::QFullyConnected`),
/// or with weights the compiler `packed` (`Op::QFullyConnectedPacked`:
/// input 2 is then the required folded bias).
pub(crate) fn q_fully_connected(
    [x_zp, y_zp, act_min, act_max]: [i32; 4],
    packed: bool,
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    use kiln_kernels::quant as kq;
    let x = io.input(0)?;
    let w = io.input(1)?;
    let bias = io.opt_input(2);
    let rq = io.input(3)?;
    let mut y = io.output(0)?;
    let (xs, ws, ys) = (x.shape(), w.shape(), y.shape());
    if xs.rank != 2 || ys.rank != 2 || ys.dims[0] != xs.dims[0] {
        return Err(bad("QFullyConnected shapes disagree"));
    }
    let p = kq::QFullyConnected {
        rows: xs.dims[0],
        depth: xs.dims[1],
        units: ys.dims[1],
        x_zp,
        y_zp,
        act_min,
        act_max,
    };
    // Weight bytes the op reads.
    let w_len = if packed {
        kq::fully_connected_i8_packable(&p).ok_or(bad(
            "QFullyConnectedPacked needs an int8 input zero point and a non-empty layer",
        ))?
    } else if ws.rank == 2 && ws.dims[0] == p.units && ws.dims[1] == p.depth {
        p.units * p.depth
    } else {
        return Err(bad("QFullyConnected weights must be [units, depth]"));
    };
    let rq = requant_pairs(&rq, p.units)?;
    let bias = match bias {
        Some(b) if b.info.numel() == p.units => Some(b.i32()?),
        Some(_) => {
            return Err(bad(
                "QFullyConnected bias must be int32 with one value per unit",
            ));
        }
        None if packed => return Err(bad("QFullyConnectedPacked needs its folded bias")),
        None => None,
    };
    let (xd, wd) = (x.i8()?, w.i8()?);
    let out = y.i8_mut()?;
    if xd.len() < p.rows * p.depth || wd.len() < w_len || out.len() < p.rows * p.units {
        return Err(bad("QFullyConnected operand shorter than its shape"));
    }
    match bias {
        Some(fold) if packed => {
            let scratch = io.scratch_f32(kq::fully_connected_i8_packed_scratch_len(&p))?;
            kq::fully_connected_i8_packed(&p, xd, wd, fold, rq, out, scratch);
        }
        _ => {
            // As for convolutions: no scratch (`lean`) takes the compact
            // loop.
            let scratch = io.scratch_f32_at_least(0)?;
            kq::fully_connected_i8_fast(&p, xd, wd, bias, rq, out, scratch);
        }
    }
    Ok(())
}

/// Dynamic-range quantized fully connected layer (see
/// `kiln_format::Op::DynFullyConnected`).
pub(crate) fn dyn_fully_connected(
    act: &kiln_format::Unary,
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    use kiln_kernels::quant::DynFullyConnected;
    let x = io.input(0)?;
    let w = io.input(1)?;
    let ws = io.input(2)?.f32()?;
    let bias = io.opt_input(3);
    let mut y = io.output(0)?;
    let (sx, sw, sy) = (x.shape(), w.shape(), y.shape());
    if sx.rank != 2 || sw.rank != 2 || sy.rank != 2 {
        return Err(bad("DynFullyConnected operands must be 2-D"));
    }
    let p = DynFullyConnected {
        rows: sx.dims[0],
        depth: sx.dims[1],
        units: sw.dims[0],
    };
    if sw.dims[1] != p.depth || sy.dims[0] != p.rows || sy.dims[1] != p.units || ws.len() != p.units
    {
        return Err(bad("DynFullyConnected shapes disagree"));
    }
    let bias = match bias {
        Some(b) if b.info.numel() == p.units => Some(b.f32()?),
        Some(_) => return Err(bad("DynFullyConnected bias must have one value per unit")),
        None => None,
    };
    let (xd, wd) = (x.f32()?, w.i8()?);
    let out = y.f32_mut()?;
    if xd.len() < p.rows * p.depth || wd.len() < p.units * p.depth || out.len() < p.rows * p.units {
        return Err(bad("DynFullyConnected operand shorter than its shape"));
    }
    let scratch: &mut [i32] = bytemuck::cast_slice_mut(io.scratch_f32(p.depth)?);
    kiln_kernels::quant::dyn_fully_connected(&p, xd, wd, ws, bias, scratch, out);
    super::elementwise::activate(act, out)
}

/// TFLite int8 SOFTMAX over the last axis (see `kiln_format::Op::QSoftmax`).
pub(crate) fn q_softmax(y_scale: f32, y_zp: i32, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let table = io.input(1)?.f32()?;
    let mut y = io.output(0)?;
    let shape = x.shape();
    let row = if shape.rank == 0 {
        1
    } else {
        shape.dims[shape.rank - 1]
    };
    let (xd, out) = (x.i8()?, y.i8_mut()?);
    if table.len() != 256 || row == 0 || xd.len() % row != 0 || out.len() != xd.len() {
        return Err(bad(
            "QSoftmax needs a 256-entry table and matching int8 operands",
        ));
    }
    if !(y_scale.is_finite() && y_scale > 0.0) {
        return Err(bad("QSoftmax output scale must be positive"));
    }
    kiln_kernels::quant::softmax_i8(xd, row, table, y_scale, y_zp, out);
    Ok(())
}

/// TFLite int8 CONV_2D / DEPTHWISE_CONV_2D (see `kiln_format::Op::QConv`),
/// or with weights the compiler `packed` (`Op::QConvPacked`: input 2 is
/// then the required folded bias).
pub(crate) fn q_conv(
    w: &Window,
    group: usize,
    q: kiln_kernels::quant::QOut,
    packed: bool,
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    use kiln_kernels::quant as kq;
    let x = io.input(0)?;
    let wt = io.input(1)?;
    let bias = io.opt_input(2);
    let rq = io.input(3)?;
    let mut y = io.output(0)?;
    let (sx, sw, sy) = (x.shape(), wt.shape(), y.shape());
    let p = if packed {
        super::conv::packed_conv_params(w, group, &sx, &sw, &sy)?
    } else {
        super::conv::conv_params(w, group, &sx, &sw, &sy)?
    };
    // Weight bytes the op reads.
    let w_len = if packed {
        kq::conv2d_i8_packable(&p, q.x_zp).ok_or(bad(
            "QConvPacked must not be depthwise and needs an int8 input zero point",
        ))?
    } else {
        p.m * (p.c / p.group.max(1)) * p.kh * p.kw
    };
    let rq = requant_pairs(&rq, p.m)?;
    let bias = match bias {
        Some(b) if b.info.numel() == p.m => Some(b.i32()?),
        Some(_) => return Err(bad("QConv bias must be int32 with M elements")),
        None if packed => return Err(bad("QConvPacked needs its folded bias")),
        None => None,
    };
    let (xd, wd) = (x.i8()?, wt.i8()?);
    let out = y.i8_mut()?;
    if xd.len() < p.n * p.c * p.h * p.w || wd.len() < w_len || out.len() < p.n * p.m * p.oh * p.ow {
        return Err(bad("QConv operand shorter than its shape"));
    }
    match bias {
        Some(fold) if packed => {
            let scratch = io.scratch_f32(kq::conv2d_i8_packed_scratch_len(&p))?;
            kq::conv2d_i8_packed(&p, &q, xd, wd, fold, rq, out, scratch);
        }
        _ => {
            // The kernel picks its path by the scratch it gets: the
            // compiler sized it for the fast paths, or (`lean`, for
            // microcontrollers) gave none.
            let scratch = io.scratch_f32_at_least(0)?;
            kq::conv2d_i8_fast(&p, &q, xd, wd, bias, rq, out, scratch);
        }
    }
    Ok(())
}

/// TFLite int8 ADD of same-shaped tensors (see `kiln_format::Op::QAdd`).
pub(crate) fn q_add(q: &kiln_kernels::quant::QAdd, io: &mut Io<'_>) -> Result<(), EngineError> {
    let (a, b) = (io.input(0)?, io.input(1)?);
    let mut y = io.output(0)?;
    if a.info.numel() != b.info.numel() || a.info.numel() != y.info.numel() {
        return Err(bad("QAdd operands must have the same number of elements"));
    }
    let (ad, bd, out) = (a.i8()?, b.i8()?, y.i8_mut()?);
    if bd.len() < ad.len() || out.len() < ad.len() {
        return Err(bad("QAdd operand shorter than its shape"));
    }
    kiln_kernels::quant::add_i8(q, ad, bd, out);
    Ok(())
}

/// ONNX ConvInteger: QLinearConv's int32 accumulation, stored as is.
pub(crate) fn conv_integer(w: &Window, group: usize, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let wt = io.input(1)?;
    let xz = io
        .opt_input(2)
        .map(|z| z.int_at(0))
        .transpose()?
        .unwrap_or(0);
    let wz = io.opt_input(3);
    let y = io.output(0)?;
    if y.info.dtype != DType::I32 {
        return Err(bad("ConvInteger output must be int32"));
    }
    let p = super::conv::conv_params(w, group, &x.shape(), &wt.shape(), &y.shape())?;
    let [_, _, h, wd] = nchw(&x.shape())?;
    let q = QConv {
        p: &p,
        h,
        wd,
        xz,
        xs: 1.0,
        ys: 1.0,
        yz: 0,
        lo: i64::from(i32::MIN),
        hi: i64::from(i32::MAX),
        raw: true,
    };
    let (xd, wd8) = (x.data, wt.data);
    if xd.len() < x.info.numel() || wd8.len() < wt.info.numel() {
        return Err(bad("ConvInteger operand shorter than its shape"));
    }
    let ws = [1.0f32];
    // A missing weight zero point is 0: a one-element zero tensor.
    let zero = [0u8; 1];
    let wz = wz.unwrap_or(Tensor {
        info: kiln_format::TensorInfo {
            dtype: wt.info.dtype,
            rank: 0,
            kind: kiln_format::TensorKind::Const,
            batched: false,
            dims: [0; kiln_format::MAX_RANK],
            offset: 0,
            byte_len: 1,
        },
        data: &zero,
    });
    if wz.info.numel() != 1 && wz.info.numel() != p.m {
        return Err(bad(
            "ConvInteger weight zero point must be per tensor or per output channel",
        ));
    }
    let signed = |t: &Tensor<'_>| match t.dtype() {
        DType::I8 => Ok(true),
        DType::U8 => Ok(false),
        _ => Err(bad("ConvInteger operands must be int8 or uint8")),
    };
    let out = y.data;
    let (x_signed, w_signed) = (signed(&x)?, signed(&wt)?);
    q.run(
        [xd, wd8],
        [x_signed, w_signed],
        &ws,
        wz,
        None,
        DType::I32,
        out,
    )
}

/// ONNX DynamicQuantizeLinear (uint8), in the reference's float32 steps:
/// the range always includes 0, `scale = (max - min) / 255` (1/255 for an
/// all-zero input), `zp = round_half_even(clip(0 - min / scale, 0, 255))`,
/// `y = clip(round_half_even(x / scale) + zp, 0, 255)`. NaN inputs are
/// rejected before this runs (input validation); a NaN here gives zp 0.
pub(crate) fn dynamic_quantize(io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?.f32()?;
    let (y, mut ys, yz) = (io.output(0)?, io.output(1)?, io.output(2)?);
    let (lo, hi) = x
        .iter()
        .fold((0.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
    let scale = if hi == lo { 1.0 } else { hi - lo } / 255.0;
    let zp = round_half_even((0.0 - lo / scale).clamp(0.0, 255.0));
    let out = y.data;
    if out.len() != x.len() || ys.info.numel() != 1 || yz.info.numel() != 1 {
        return Err(bad("DynamicQuantizeLinear outputs disagree with the input"));
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (round_half_even(v / scale) + zp).clamp(0.0, 255.0) as u8;
    }
    ys.f32_mut()?[0] = scale;
    yz.data[0] = zp as u8;
    Ok(())
}

/// ONNX MatMulInteger (`linear = false`) and QLinearMatMul (`linear = true`):
/// int32 products of zero-point-shifted operands; QLinearMatMul then scales
/// by `a_scale · b_scale / y_scale` (f32, as the reference computes it),
/// applied in f64, rounds half to even, adds `y_zp` and saturates.
pub(crate) fn q_matmul(linear: bool, io: &mut Io<'_>) -> Result<(), EngineError> {
    let (ai, bi) = if linear { (0, 3) } else { (0, 1) };
    let (a, b) = (io.input(ai)?, io.input(bi)?);
    let (az, bz) = if linear {
        (io.opt_input(2), io.opt_input(5))
    } else {
        (io.opt_input(2), io.opt_input(3))
    };
    let mult = if linear {
        let (sa, sb, sy) = (
            io.input(1)?.f32()?,
            io.input(4)?.f32()?,
            io.input(6)?.f32()?,
        );
        if sa.len() != 1 || sb.len() != 1 || sy.len() != 1 {
            return Err(bad("QLinearMatMul scales must be per tensor"));
        }
        Some(f64::from(sa[0] * sb[0] / sy[0]))
    } else {
        None
    };
    let yzp = if linear { io.input(7)?.int_at(0)? } else { 0 };
    let y = io.output(0)?;
    let (sa, sb, sy) = (a.shape(), b.shape(), y.shape());
    if sa.rank < 2 || sb.rank < 2 || sy.rank != sa.rank.max(sb.rank) {
        return Err(bad("integer MatMul operands must be at least 2-D"));
    }
    let (m, k, n) = (
        sa.dims[sa.rank - 2],
        sa.dims[sa.rank - 1],
        sb.dims[sb.rank - 1],
    );
    if sb.dims[sb.rank - 2] != k || sy.dims[sy.rank - 2] != m || sy.dims[sy.rank - 1] != n {
        return Err(bad("integer MatMul shapes disagree"));
    }
    let batches = sy.numel() / (m * n).max(1);
    let (a_batches, b_batches) = (sa.numel() / (m * k).max(1), sb.numel() / (k * n).max(1));
    if (a_batches != batches && a_batches != 1) || (b_batches != batches && b_batches != 1) {
        return Err(bad("integer MatMul batch dims must match or be absent"));
    }
    let val = |t: &Tensor<'_>, i: usize| -> i32 {
        match t.dtype() {
            DType::I8 => i32::from(t.data[i] as i8),
            _ => i32::from(t.data[i]),
        }
    };
    for t in [&a, &b] {
        if !matches!(t.dtype(), DType::I8 | DType::U8) || t.data.len() < t.info.numel() {
            return Err(bad("integer MatMul operands must be int8 or uint8"));
        }
    }
    // Zero points: per tensor, or per row of A / per column of B.
    let zval = |z: Option<Tensor<'_>>, len: usize, i: usize| -> Result<i32, EngineError> {
        match z {
            None => Ok(0),
            Some(z) if z.info.numel() == 1 => Ok(z.int_at(0)? as i32),
            Some(z) if z.info.numel() == len => Ok(z.int_at(i)? as i32),
            Some(_) => Err(bad("integer MatMul zero point has the wrong size")),
        }
    };
    let (lo, hi) = range_of(y.info.dtype)?;
    let out_dt = y.info.dtype;
    if !linear && out_dt != DType::I32 {
        return Err(bad("MatMulInteger output must be int32"));
    }
    let out = y.data;
    for bt in 0..batches {
        let (ao, bo) = ((bt % a_batches) * m * k, (bt % b_batches) * k * n);
        for i in 0..m {
            let za = zval(az, m, i)?;
            for j in 0..n {
                let zb = zval(bz, n, j)?;
                let mut acc = 0i32;
                for p in 0..k {
                    let x = val(&a, ao + i * k + p) - za;
                    let w = val(&b, bo + p * n + j) - zb;
                    acc = acc.wrapping_add(x.wrapping_mul(w));
                }
                let v = match mult {
                    Some(mu) => {
                        // rint rounds half to even (the default mode).
                        let q = libm::rint(f64::from(acc) * mu);
                        (q as i64).saturating_add(yzp).clamp(lo, hi)
                    }
                    None => i64::from(acc),
                };
                write_q(out_dt, out, (bt * m + i) * n + j, v);
            }
        }
    }
    Ok(())
}

/// Int8 table lookup (see `kiln_format::Op::QLookup`).
pub(crate) fn q_lookup(io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?.i8()?;
    let table: &[i8; 256] = io
        .input(1)?
        .i8()?
        .try_into()
        .map_err(|_| bad("QLookup needs an int8 table of 256 entries"))?;
    let mut y = io.output(0)?;
    let out = y.i8_mut()?;
    if out.len() != x.len() {
        return Err(bad("QLookup output must match its input's size"));
    }
    kiln_kernels::quant::lookup_i8(x, table, out);
    Ok(())
}
