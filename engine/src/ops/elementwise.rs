//! Unary, binary (numpy broadcasting), variadic, Where and Cast.

use super::{Io, same_len};
use crate::error::{EngineError, bad};
use crate::tensor::Shape;
use kiln_format::{Binary, DType, MAX_RANK, Unary};
use kiln_kernels::math::{self, map_inplace};

/// Applies a fused activation in place (Identity is free).
pub(crate) fn activate(act: &Unary, y: &mut [f32]) -> Result<(), EngineError> {
    if *act == Unary::Identity {
        return Ok(());
    }
    apply_unary_f32(act, y)
}

fn apply_unary_f32(u: &Unary, y: &mut [f32]) -> Result<(), EngineError> {
    use libm::*;
    match *u {
        Unary::Identity => {}
        Unary::Relu => math::relu_inplace(y),
        Unary::LeakyRelu { alpha } => math::leaky_relu_inplace(y, alpha),
        Unary::Clip { min, max } => math::clip_inplace(y, min, max),
        Unary::Sigmoid => map_inplace(y, math::sigmoid),
        Unary::HardSigmoid { alpha, beta } => {
            map_inplace(y, |x| (alpha * x + beta).clamp(0.0, 1.0))
        }
        Unary::HardSwish => map_inplace(y, |x| x * (x / 6.0 + 0.5).clamp(0.0, 1.0)),
        Unary::Tanh => map_inplace(y, tanhf),
        Unary::Erf => map_inplace(y, erff),
        Unary::Gelu { tanh_approx } => map_inplace(y, |x| math::gelu(x, tanh_approx)),
        Unary::Exp => map_inplace(y, expf),
        Unary::Log => map_inplace(y, logf),
        Unary::Neg => map_inplace(y, |x| -x),
        Unary::Abs => map_inplace(y, fabsf),
        Unary::Sqrt => map_inplace(y, sqrtf),
        Unary::Reciprocal => map_inplace(y, |x| 1.0 / x),
        Unary::Floor => map_inplace(y, floorf),
        Unary::Ceil => map_inplace(y, ceilf),
        Unary::Round => map_inplace(y, math::round_half_even),
        Unary::Sign => map_inplace(y, |x| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        }),
        Unary::Sin => map_inplace(y, sinf),
        Unary::Cos => map_inplace(y, cosf),
        Unary::Tan => map_inplace(y, tanf),
        Unary::Asin => map_inplace(y, asinf),
        Unary::Acos => map_inplace(y, acosf),
        Unary::Atan => map_inplace(y, atanf),
        Unary::Sinh => map_inplace(y, sinhf),
        Unary::Cosh => map_inplace(y, coshf),
        Unary::Asinh => map_inplace(y, asinhf),
        Unary::Acosh => map_inplace(y, acoshf),
        Unary::Atanh => map_inplace(y, atanhf),
        Unary::Softplus => map_inplace(y, math::softplus),
        Unary::Softsign => map_inplace(y, |x| x / (1.0 + fabsf(x))),
        Unary::Elu { alpha } => {
            map_inplace(y, |x| if x >= 0.0 { x } else { alpha * (expf(x) - 1.0) })
        }
        Unary::Selu { alpha, gamma } => map_inplace(y, |x| {
            if x > 0.0 {
                gamma * x
            } else {
                gamma * (alpha * expf(x) - alpha)
            }
        }),
        Unary::Celu { alpha } => map_inplace(y, |x| {
            x.max(0.0) + (alpha * (expf(x / alpha) - 1.0)).min(0.0)
        }),
        Unary::ThresholdedRelu { alpha } => map_inplace(y, |x| if x > alpha { x } else { 0.0 }),
        Unary::Mish => map_inplace(y, |x| x * tanhf(math::softplus(x))),
        Unary::Shrink { bias, lambd } => map_inplace(y, |x| {
            if x < -lambd {
                x + bias
            } else if x > lambd {
                x - bias
            } else {
                0.0
            }
        }),
        Unary::Not | Unary::IsNaN | Unary::IsInf { .. } => {
            return Err(bad("boolean unary applied to floats"));
        }
    }
    Ok(())
}

pub(crate) fn unary(u: &Unary, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let mut y = io.output(0)?;
    same_len(x.info.numel(), y.info.numel())?;
    match (u, x.dtype(), y.info.dtype) {
        (Unary::Not, DType::Bool, DType::Bool) => {
            for (o, &v) in y.data.iter_mut().zip(x.data) {
                *o = (v == 0) as u8;
            }
        }
        (Unary::IsNaN, DType::F32, DType::Bool) => {
            for (o, v) in y.data.iter_mut().zip(x.f32()?) {
                *o = v.is_nan() as u8;
            }
        }
        (Unary::IsInf { pos, neg }, DType::F32, DType::Bool) => {
            for (o, v) in y.data.iter_mut().zip(x.f32()?) {
                *o = ((*pos && *v == f32::INFINITY) || (*neg && *v == f32::NEG_INFINITY)) as u8;
            }
        }
        (_, DType::F32, DType::F32) => {
            let out = y.f32_mut()?;
            out.copy_from_slice(x.f32()?);
            apply_unary_f32(u, out)?;
        }
        (Unary::Identity, a, b) if a == b => y.data.copy_from_slice(x.data),
        (Unary::Neg | Unary::Abs | Unary::Sign | Unary::Relu, DType::I64, DType::I64) => {
            for (o, &v) in y.i64_mut()?.iter_mut().zip(x.i64()?) {
                *o = match u {
                    Unary::Neg => v.wrapping_neg(),
                    Unary::Abs => v.wrapping_abs(),
                    Unary::Sign => v.signum(),
                    _ => v.max(0),
                };
            }
        }
        (Unary::Neg | Unary::Abs | Unary::Sign | Unary::Relu, DType::I32, DType::I32) => {
            for (o, &v) in y.i32_mut()?.iter_mut().zip(x.i32()?) {
                *o = match u {
                    Unary::Neg => v.wrapping_neg(),
                    Unary::Abs => v.wrapping_abs(),
                    Unary::Sign => v.signum(),
                    _ => v.max(0),
                };
            }
        }
        _ => return Err(bad("unsupported dtype for this unary op")),
    }
    Ok(())
}

/// Input strides (in elements) aligned to the output's dims, 0 where broadcast.
fn broadcast_strides(out: &Shape, inp: &Shape) -> Result<[usize; MAX_RANK], EngineError> {
    let mut strides = [0usize; MAX_RANK];
    if inp.rank > out.rank {
        return Err(bad("input rank above output rank in a broadcast"));
    }
    let off = out.rank - inp.rank;
    let mut s = 1usize;
    for d in (0..inp.rank).rev() {
        let n = inp.dims[d];
        let o = out.dims[d + off];
        if n == o {
            strides[d + off] = if n == 1 { 0 } else { s };
        } else if n != 1 {
            return Err(bad("shapes do not broadcast to the output"));
        }
        s *= n;
    }
    Ok(strides)
}

/// Calls `f(out_index, [in_index; N], len, [in_stride; N])` for every run of
/// `len` output elements along the innermost dim (strides are 0 or 1 for
/// broadcast or contiguous operands).
#[inline(always)]
fn for_each_broadcast_row<const N: usize>(
    out: &Shape,
    ins: [&Shape; N],
    mut f: impl FnMut(usize, [usize; N], usize, [usize; N]),
) -> Result<(), EngineError> {
    let mut strides = [[0usize; MAX_RANK]; N];
    for (s, i) in strides.iter_mut().zip(ins) {
        *s = broadcast_strides(out, i)?;
    }
    if out.numel() == 0 {
        return Ok(());
    }
    if out.rank == 0 {
        f(0, [0; N], 1, [0; N]);
        return Ok(());
    }
    let r = out.rank;
    let inner = out.dims[r - 1];
    let inner_stride: [usize; N] = core::array::from_fn(|k| strides[k][r - 1]);
    let rows = out.numel() / inner;
    let mut idx = [0usize; MAX_RANK];
    let mut base = [0usize; N];
    for row in 0..rows {
        f(row * inner, base, inner, inner_stride);
        // Advance the odometer over dims 0..r-1.
        let mut d = r - 1;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            for k in 0..N {
                base[k] += strides[k][d];
            }
            if idx[d] < out.dims[d] {
                break;
            }
            for k in 0..N {
                base[k] -= strides[k][d] * out.dims[d];
            }
            idx[d] = 0;
        }
    }
    Ok(())
}

/// Calls `f(out_index, [in_index; N])` for every output element, walking the
/// innermost dim in a tight loop.
fn for_each_broadcast<const N: usize>(
    out: &Shape,
    ins: [&Shape; N],
    mut f: impl FnMut(usize, [usize; N]),
) -> Result<(), EngineError> {
    for_each_broadcast_row(out, ins, |o, base, len, stride| {
        for j in 0..len {
            f(o + j, core::array::from_fn(|k| base[k] + j * stride[k]));
        }
    })
}

/// `out = f(a, c)` with broadcasting, monomorphised per op so the common
/// cases (same shapes, a scalar operand, rows against a broadcast row or
/// constant) compile to vector loops.
#[inline(always)]
fn binary_f32_with(
    (sy, sa, sc): (&Shape, &Shape, &Shape),
    (xa, xc): (&[f32], &[f32]),
    out: &mut [f32],
    f: impl Fn(f32, f32) -> f32 + Copy,
) -> Result<(), EngineError> {
    if sa == sy && sc == sy {
        for ((o, &p), &q) in out.iter_mut().zip(xa).zip(xc) {
            *o = f(p, q);
        }
        return Ok(());
    }
    if sa == sy && sc.numel() == 1 {
        let q = xc[0];
        for (o, &p) in out.iter_mut().zip(xa) {
            *o = f(p, q);
        }
        return Ok(());
    }
    if sc == sy && sa.numel() == 1 {
        let p = xa[0];
        for (o, &q) in out.iter_mut().zip(xc) {
            *o = f(p, q);
        }
        return Ok(());
    }
    for_each_broadcast_row(sy, [sa, sc], |o, [i, j], n, [di, dj]| {
        let out = &mut out[o..o + n];
        match (di, dj) {
            (1, 1) => {
                for ((o, &p), &q) in out.iter_mut().zip(&xa[i..i + n]).zip(&xc[j..j + n]) {
                    *o = f(p, q);
                }
            }
            (1, 0) => {
                let q = xc[j];
                for (o, &p) in out.iter_mut().zip(&xa[i..i + n]) {
                    *o = f(p, q);
                }
            }
            (0, 1) => {
                let p = xa[i];
                for (o, &q) in out.iter_mut().zip(&xc[j..j + n]) {
                    *o = f(p, q);
                }
            }
            _ => {
                for (t, o) in out.iter_mut().enumerate() {
                    *o = f(xa[i + t * di], xc[j + t * dj]);
                }
            }
        }
    })
}

#[inline(always)]
fn binary_f32(b: Binary, x: f32, y: f32) -> f32 {
    match b {
        Binary::Add => x + y,
        Binary::Sub => x - y,
        Binary::Mul => x * y,
        Binary::Div => x / y,
        Binary::Pow => libm::powf(x, y),
        Binary::Max => {
            if x.is_nan() || y.is_nan() {
                f32::NAN
            } else {
                x.max(y)
            }
        }
        Binary::Min => {
            if x.is_nan() || y.is_nan() {
                f32::NAN
            } else {
                x.min(y)
            }
        }
        Binary::Mod { .. } => libm::fmodf(x, y),
        Binary::PRelu => {
            if x < 0.0 {
                x * y
            } else {
                x
            }
        }
        _ => f32::NAN,
    }
}

fn binary_int(b: Binary, x: i64, y: i64) -> Result<i64, EngineError> {
    Ok(match b {
        Binary::Add => x.wrapping_add(y),
        Binary::Sub => x.wrapping_sub(y),
        Binary::Mul => x.wrapping_mul(y),
        Binary::Div => {
            if y == 0 {
                return Err(bad("integer division by zero"));
            }
            x.wrapping_div(y)
        }
        Binary::Max => x.max(y),
        Binary::Min => x.min(y),
        Binary::Mod { fmod } => {
            if y == 0 {
                return Err(bad("integer modulo by zero"));
            }
            let r = x.wrapping_rem(y);
            if !fmod && r != 0 && ((r < 0) != (y < 0)) {
                r + y
            } else {
                r
            }
        }
        Binary::Pow => {
            if y < 0 {
                0
            } else {
                x.wrapping_pow(y.min(u32::MAX as i64) as u32)
            }
        }
        Binary::BitShiftLeft => ((x as u64).checked_shl(y as u32).unwrap_or(0)) as i64,
        Binary::BitShiftRight => ((x as u64).checked_shr(y as u32).unwrap_or(0)) as i64,
        Binary::BitAnd => x & y,
        Binary::BitOr => x | y,
        Binary::BitXor => x ^ y,
        _ => return Err(bad("op not defined on integers")),
    })
}

fn compare<T: PartialOrd + PartialEq>(b: Binary, x: T, y: T) -> Option<bool> {
    Some(match b {
        Binary::Equal => x == y,
        Binary::Less => x < y,
        Binary::LessOrEqual => x <= y,
        Binary::Greater => x > y,
        Binary::GreaterOrEqual => x >= y,
        _ => return None,
    })
}

/// Reads element `i` of an integer buffer of dtype `dt` as i64.
fn read_int(dt: DType, d: &[u8], i: usize) -> i64 {
    let s = dt.size();
    let b = &d[i * s..i * s + s];
    match dt {
        DType::I64 => i64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
        DType::U64 => u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as i64,
        DType::I32 => i32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as i64,
        DType::U32 => u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as i64,
        DType::I16 => i16::from_le_bytes(b.try_into().unwrap_or([0; 2])) as i64,
        DType::U16 => u16::from_le_bytes(b.try_into().unwrap_or([0; 2])) as i64,
        DType::I8 => b[0] as i8 as i64,
        _ => b[0] as i64,
    }
}

fn write_int(dt: DType, d: &mut [u8], i: usize, v: i64) {
    let s = dt.size();
    let b = &mut d[i * s..i * s + s];
    match s {
        8 => b.copy_from_slice(&v.to_le_bytes()),
        4 => b.copy_from_slice(&(v as i32).to_le_bytes()),
        2 => b.copy_from_slice(&(v as i16).to_le_bytes()),
        _ => b[0] = v as u8,
    }
}

fn is_int(dt: DType) -> bool {
    matches!(
        dt,
        DType::I64
            | DType::I32
            | DType::I16
            | DType::I8
            | DType::U8
            | DType::U16
            | DType::U32
            | DType::U64
    )
}

pub(crate) fn binary(b: Binary, io: &mut Io<'_>) -> Result<(), EngineError> {
    let a = io.input(0)?;
    let c = io.input(1)?;
    let mut y = io.output(0)?;
    let (sa, sc, sy) = (a.shape(), c.shape(), y.shape());
    if a.dtype() != c.dtype() && b != Binary::Pow && b != Binary::PRelu {
        return Err(bad("binary op inputs have different dtypes"));
    }
    match (a.dtype(), y.info.dtype) {
        (DType::F32, DType::F32) => {
            let (xa, xc) = (a.f32()?, c.f32()?);
            let out = y.f32_mut()?;
            same_len(out.len(), sy.numel())?;
            if c.dtype() != DType::F32 {
                return Err(bad("mixed-dtype Pow is not supported"));
            }
            let (sh, x) = ((&sy, &sa, &sc), (xa, xc));
            // Same shapes: the kernels' vector loop.
            let arith = match b {
                Binary::Add => Some(math::Arith::Add),
                Binary::Sub => Some(math::Arith::Sub),
                Binary::Mul => Some(math::Arith::Mul),
                Binary::Div => Some(math::Arith::Div),
                _ => None,
            };
            if let Some(op) = arith
                && sa == sy
                && sc == sy
                && xa.len() >= out.len()
                && xc.len() >= out.len()
            {
                math::arith(op, xa, xc, out);
                return Ok(());
            }
            match b {
                Binary::Add => binary_f32_with(sh, x, out, |p, q| p + q),
                Binary::Sub => binary_f32_with(sh, x, out, |p, q| p - q),
                Binary::Mul => binary_f32_with(sh, x, out, |p, q| p * q),
                Binary::Div => binary_f32_with(sh, x, out, |p, q| p / q),
                _ => binary_f32_with(sh, x, out, |p, q| binary_f32(b, p, q)),
            }
        }
        (DType::F32, DType::Bool) => {
            let (xa, xc) = (a.f32()?, c.f32()?);
            let out = &mut *y.data;
            let mut err = false;
            for_each_broadcast(&sy, [&sa, &sc], |o, [i, j]| {
                match compare(b, xa[i], xc[j]) {
                    Some(v) => out[o] = v as u8,
                    None => err = true,
                }
            })?;
            if err {
                Err(bad("op does not produce booleans"))
            } else {
                Ok(())
            }
        }
        (DType::Bool, DType::Bool) => {
            let (xa, xc) = (a.data, c.data);
            let out = &mut *y.data;
            let mut err = false;
            for_each_broadcast(&sy, [&sa, &sc], |o, [i, j]| {
                let (p, q) = (xa[i] != 0, xc[j] != 0);
                out[o] = match b {
                    Binary::And => p & q,
                    Binary::Or => p | q,
                    Binary::Xor => p ^ q,
                    Binary::Equal => p == q,
                    _ => {
                        err = true;
                        false
                    }
                } as u8;
            })?;
            if err {
                Err(bad("op not defined on booleans"))
            } else {
                Ok(())
            }
        }
        (dt, DType::Bool) if is_int(dt) => {
            let (xa, xc) = (a.data, c.data);
            let out = &mut *y.data;
            let mut err = false;
            for_each_broadcast(&sy, [&sa, &sc], |o, [i, j]| {
                match compare(b, read_int(dt, xa, i), read_int(dt, xc, j)) {
                    Some(v) => out[o] = v as u8,
                    None => err = true,
                }
            })?;
            if err {
                Err(bad("op does not produce booleans"))
            } else {
                Ok(())
            }
        }
        (dt, yt) if is_int(dt) && dt == yt => {
            let (xa, xc) = (a.data, c.data);
            let out = &mut *y.data;
            let mut err = None;
            for_each_broadcast(&sy, [&sa, &sc], |o, [i, j]| {
                match binary_int(b, read_int(dt, xa, i), read_int(dt, xc, j)) {
                    Ok(v) => write_int(dt, out, o, v),
                    Err(e) => err = Some(e),
                }
            })?;
            err.map_or(Ok(()), Err)
        }
        _ => Err(bad("unsupported dtype combination for a binary op")),
    }
}

pub(crate) fn variadic(kind: Binary, mean: bool, io: &mut Io<'_>) -> Result<(), EngineError> {
    let mut y = io.output(0)?;
    let sy = y.shape();
    let n = io.n_in();
    let out = y.f32_mut()?;
    for k in 0..n {
        let x = io.input(k)?;
        let sx = x.shape();
        let xs = x.f32()?;
        if k == 0 {
            for_each_broadcast(&sy, [&sx], |o, [i]| out[o] = xs[i])?;
        } else {
            for_each_broadcast(&sy, [&sx], |o, [i]| {
                out[o] = binary_f32(kind, out[o], xs[i])
            })?;
        }
    }
    if mean && n > 0 {
        let inv = n as f32;
        map_inplace(out, |v| v / inv);
    }
    Ok(())
}

pub(crate) fn where_(io: &mut Io<'_>) -> Result<(), EngineError> {
    let c = io.input(0)?;
    let a = io.input(1)?;
    let b = io.input(2)?;
    let y = io.output(0)?;
    if c.dtype() != DType::Bool || a.dtype() != b.dtype() || a.dtype() != y.info.dtype {
        return Err(bad("Where needs a bool condition and equal value dtypes"));
    }
    let s = a.dtype().size();
    let sy = y.shape();
    let out = &mut *y.data;
    for_each_broadcast(&sy, [&c.shape(), &a.shape(), &b.shape()], |o, [i, j, k]| {
        let src = if c.data[i] != 0 {
            &a.data[j * s..j * s + s]
        } else {
            &b.data[k * s..k * s + s]
        };
        out[o * s..o * s + s].copy_from_slice(src);
    })
}

/// Copies `x` broadcast to the output shape (Expand); shared with movement.
pub(crate) fn broadcast_copy(
    x: &crate::Tensor<'_>,
    y: &mut crate::TensorMut<'_>,
) -> Result<(), EngineError> {
    let s = x.dtype().size();
    if x.dtype() != y.info.dtype {
        return Err(bad("dtype mismatch"));
    }
    let sy = y.shape();
    let out = &mut *y.data;
    for_each_broadcast(&sy, [&x.shape()], |o, [i]| {
        out[o * s..o * s + s].copy_from_slice(&x.data[i * s..i * s + s])
    })
}

fn read_f64(dt: DType, d: &[u8], i: usize) -> f64 {
    match dt {
        DType::F32 => f32::from_le_bytes(d[i * 4..i * 4 + 4].try_into().unwrap_or([0; 4])) as f64,
        DType::F64 => f64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8])),
        DType::F16 => {
            half::f16::from_le_bytes(d[i * 2..i * 2 + 2].try_into().unwrap_or([0; 2])).to_f64()
        }
        DType::U64 => u64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8])) as f64,
        dt => read_int(dt, d, i) as f64,
    }
}

pub(crate) fn cast(to: DType, _saturate: bool, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let y = io.output(0)?;
    same_len(x.info.numel(), y.info.numel())?;
    if y.info.dtype != to {
        return Err(bad("Cast output dtype disagrees with the op"));
    }
    let from = x.dtype();
    let n = x.info.numel();
    if from == to {
        y.data.copy_from_slice(x.data);
        return Ok(());
    }
    let out = &mut *y.data;
    for i in 0..n {
        match to {
            DType::F32 => {
                let v = if is_int(from) && from != DType::U64 {
                    read_int(from, x.data, i) as f32
                } else {
                    read_f64(from, x.data, i) as f32
                };
                out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
            }
            DType::F64 => {
                out[i * 8..i * 8 + 8].copy_from_slice(&read_f64(from, x.data, i).to_le_bytes())
            }
            DType::F16 => out[i * 2..i * 2 + 2]
                .copy_from_slice(&half::f16::from_f64(read_f64(from, x.data, i)).to_le_bytes()),
            DType::Bool => out[i] = (read_f64(from, x.data, i) != 0.0) as u8,
            DType::U64 if from.is_float() => {
                let v = read_f64(from, x.data, i);
                out[i * 8..i * 8 + 8].copy_from_slice(&(v as u64).to_le_bytes());
            }
            DType::U64 => out[i * 8..i * 8 + 8]
                .copy_from_slice(&(read_int(from, x.data, i) as u64).to_le_bytes()),
            int => {
                let v = if from.is_float() {
                    let f = read_f64(from, x.data, i);
                    if f.is_nan() { 0 } else { f as i64 }
                } else {
                    read_int(from, x.data, i)
                };
                write_int(int, out, i, v);
            }
        }
    }
    Ok(())
}
