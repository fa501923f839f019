//! Data movement, generic over the element size: Reshape, Transpose, Concat,
//! Slice, Split, Gather(Elements), ScatterElements, Pad, Expand, Tile,
//! Depth/SpaceToDepth, Trilu, OneHot, Densify.

use super::{Io, same_len};
use crate::error::{EngineError, bad};
use crate::tensor::Shape;
use kiln_format::{DType, MAX_RANK, OP_RANK, PadMode};

pub(crate) fn reshape(io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let y = io.output(0)?;
    same_len(x.data.len(), y.data.len())?;
    y.data.copy_from_slice(x.data);
    Ok(())
}

/// `Densify`: element `i` of the output is the next stored value when bit
/// `i` of the mask is set, else zero. The mask must cover the output
/// exactly and hold one bit per stored value.
pub(crate) fn densify(io: &mut Io<'_>) -> Result<(), EngineError> {
    let mask = io.input(0)?;
    let values = io.input(1)?;
    let y = io.output(0)?;
    if mask.info.dtype != DType::U8 || y.info.dtype != values.info.dtype {
        return Err(bad(
            "Densify: the mask must be uint8 and the values of the output's dtype",
        ));
    }
    let es = values.info.dtype.size();
    let n = y.data.len() / es.max(1);
    if mask.data.len() != n.div_ceil(8) {
        return Err(bad("Densify: mask length does not match the output"));
    }
    let set: usize = mask.data.iter().map(|b| b.count_ones() as usize).sum();
    if set * es != values.data.len() {
        return Err(bad("Densify: stored values do not match the mask"));
    }
    y.data.fill(0);
    let mut src = values.data.chunks_exact(es);
    for (i, dst) in y.data.chunks_exact_mut(es).enumerate() {
        if mask.data[i / 8] >> (i % 8) & 1 == 1
            && let Some(v) = src.next()
        {
            dst.copy_from_slice(v);
        }
    }
    Ok(())
}

/// Copies `out.numel()` elements of size `es`: output index (i0..ir) reads
/// source element `base + Σ i_d · strides[d]`. Checks bounds first.
fn strided_copy(
    es: usize,
    src: &[u8],
    base: i64,
    out: &Shape,
    strides: &[i64],
    dst: &mut [u8],
) -> Result<(), EngineError> {
    let total = out.numel();
    same_len(dst.len(), total * es)?;
    if total == 0 {
        return Ok(());
    }
    let n_src = (src.len() / es) as i64;
    let (mut lo, mut hi) = (base, base);
    for d in 0..out.rank {
        let span = (out.dims[d] as i64 - 1) * strides[d];
        if span > 0 {
            hi += span;
        } else {
            lo += span;
        }
    }
    if lo < 0 || hi >= n_src {
        return Err(bad("a strided read falls outside its input"));
    }
    // Dims of size 1 move nothing, and a dim whose stride spans the next
    // one continues it: dropping and merging them leaves the longest rows
    // (an NHWC→NCHW transpose of [1, 30, 1, 40] becomes 40 rows of 30
    // instead of 1,200 rows of one element).
    let (mut dims, mut st, mut r) = ([0usize; MAX_RANK], [0i64; MAX_RANK], 0usize);
    for d in 0..out.rank {
        if out.dims[d] == 1 {
            continue;
        }
        if r > 0 && st[r - 1] == strides[d] * out.dims[d] as i64 {
            dims[r - 1] *= out.dims[d];
            st[r - 1] = strides[d];
        } else {
            (dims[r], st[r]) = (out.dims[d], strides[d]);
            r += 1;
        }
    }
    let out = &Shape { dims, rank: r };
    let strides = &st[..];
    if r == 0 {
        let b = base as usize * es;
        dst.copy_from_slice(&src[b..b + es]);
        return Ok(());
    }
    let inner = out.dims[r - 1];
    let inner_stride = strides[r - 1];
    let mut idx = [0usize; MAX_RANK];
    let mut off = base;
    let mut o = 0usize;
    while o < total {
        if inner_stride == 1 {
            let b = off as usize * es;
            dst[o * es..(o + inner) * es].copy_from_slice(&src[b..b + inner * es]);
        } else {
            let row = &mut dst[o * es..(o + inner) * es];
            kiln_kernels::copy::strided_row(es, src, off, inner_stride, row);
        }
        o += inner;
        let mut d = r - 1;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            off += strides[d];
            if idx[d] < out.dims[d] {
                break;
            }
            off -= strides[d] * out.dims[d] as i64;
            idx[d] = 0;
        }
    }
    Ok(())
}

/// Row-major element strides of a shape.
fn strides_of(s: &Shape) -> [i64; MAX_RANK] {
    let mut st = [0i64; MAX_RANK];
    let mut acc = 1i64;
    for d in (0..s.rank).rev() {
        st[d] = acc;
        acc *= s.dims[d] as i64;
    }
    st
}

pub(crate) fn transpose(perm: &[u8; OP_RANK], io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let y = io.output(0)?;
    let (sx, sy) = (x.shape(), y.shape());
    if sx.rank != sy.rank || x.dtype() != y.info.dtype {
        return Err(bad("Transpose shapes disagree"));
    }
    let st = strides_of(&sx);
    let mut strides = [0i64; MAX_RANK];
    for d in 0..sy.rank {
        let p = perm[d] as usize;
        if p >= sx.rank || sx.dims[p] != sy.dims[d] {
            return Err(bad("Transpose permutation disagrees with the shapes"));
        }
        strides[d] = st[p];
    }
    strided_copy(x.dtype().size(), x.data, 0, &sy, &strides, y.data)
}

pub(crate) fn slice(
    start: &[i64; OP_RANK],
    step: &[i64; OP_RANK],
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let y = io.output(0)?;
    let (sx, sy) = (x.shape(), y.shape());
    if sx.rank != sy.rank || x.dtype() != y.info.dtype {
        return Err(bad("Slice shapes disagree"));
    }
    let st = strides_of(&sx);
    let mut base = 0i64;
    let mut strides = [0i64; MAX_RANK];
    for d in 0..sx.rank {
        if sy.dims[d] > 0 && (start[d] < 0 || start[d] >= sx.dims[d] as i64) {
            return Err(bad("Slice start outside the input"));
        }
        base += start[d].max(0) * st[d];
        strides[d] = step[d] * st[d];
    }
    if sy.numel() == 0 {
        return Ok(());
    }
    strided_copy(x.dtype().size(), x.data, base, &sy, &strides, y.data)
}

pub(crate) fn concat(axis: usize, io: &mut Io<'_>) -> Result<(), EngineError> {
    let y = io.output(0)?;
    let sy = y.shape();
    if axis >= sy.rank.max(1) {
        return Err(bad("Concat axis out of range"));
    }
    let es = y.info.dtype.size();
    let outer = sy.prod(0, axis);
    let row = sy.prod(axis, sy.rank) * es;
    let mut col = 0usize;
    for k in 0..io.n_in() {
        let x = io.input(k)?;
        let sx = x.shape();
        if x.dtype() != y.info.dtype || sx.rank != sy.rank || sx.prod(0, axis) != outer {
            return Err(bad("Concat input disagrees with the output"));
        }
        let chunk = sx.prod(axis, sx.rank) * es;
        if col + chunk > row {
            return Err(bad("Concat inputs exceed the output"));
        }
        for o in 0..outer {
            y.data[o * row + col..o * row + col + chunk]
                .copy_from_slice(&x.data[o * chunk..(o + 1) * chunk]);
        }
        col += chunk;
    }
    same_len(col, row)
}

pub(crate) fn split(axis: usize, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let sx = x.shape();
    if axis >= sx.rank {
        return Err(bad("Split axis out of range"));
    }
    let es = x.dtype().size();
    let outer = sx.prod(0, axis);
    let row = sx.prod(axis, sx.rank) * es;
    let mut col = 0usize;
    for k in 0..io.n_out() {
        let Some(y) = io.opt_output(k) else { continue };
        let sy = y.shape();
        if y.info.dtype != x.dtype() || sy.prod(0, axis) != outer {
            return Err(bad("Split output disagrees with the input"));
        }
        let chunk = sy.prod(axis, sy.rank) * es;
        if col + chunk > row {
            return Err(bad("Split outputs exceed the input"));
        }
        for o in 0..outer {
            y.data[o * chunk..(o + 1) * chunk]
                .copy_from_slice(&x.data[o * row + col..o * row + col + chunk]);
        }
        col += chunk;
    }
    Ok(())
}

pub(crate) fn gather(axis: usize, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let idx = io.input(1)?;
    let y = io.output(0)?;
    let sx = x.shape();
    if axis >= sx.rank {
        return Err(bad("Gather axis out of range"));
    }
    let es = x.dtype().size();
    let outer = sx.prod(0, axis);
    let n = sx.dims[axis];
    let inner = sx.prod(axis + 1, sx.rank) * es;
    let ni = idx.info.numel();
    same_len(y.data.len(), outer * ni * inner)?;
    for o in 0..outer {
        for j in 0..ni {
            let mut i = idx.int_at(j)?;
            if i < 0 {
                i += n as i64;
            }
            if i < 0 || i >= n as i64 {
                return Err(bad("Gather index out of range"));
            }
            let src = (o * n + i as usize) * inner;
            let dst = (o * ni + j) * inner;
            y.data[dst..dst + inner].copy_from_slice(&x.data[src..src + inner]);
        }
    }
    Ok(())
}

/// Flat offset of `pos` (an output/indices position) with dim `axis` replaced by `i`.
fn elements_offset(
    pos: usize,
    idx_shape: &Shape,
    data_strides: &[i64; MAX_RANK],
    axis: usize,
    i: usize,
) -> usize {
    let mut rem = pos;
    let mut off = 0usize;
    for d in (0..idx_shape.rank).rev() {
        let c = rem % idx_shape.dims[d];
        rem /= idx_shape.dims[d];
        off += if d == axis { i } else { c } * data_strides[d] as usize;
    }
    off
}

pub(crate) fn gather_elements(axis: usize, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let idx = io.input(1)?;
    let y = io.output(0)?;
    let (sx, si) = (x.shape(), idx.shape());
    if axis >= sx.rank
        || si.rank != sx.rank
        || (0..sx.rank).any(|d| d != axis && si.dims[d] > sx.dims[d])
    {
        return Err(bad("GatherElements shapes disagree"));
    }
    let es = x.dtype().size();
    same_len(y.data.len(), si.numel() * es)?;
    let st = strides_of(&sx);
    let n = sx.dims[axis] as i64;
    for p in 0..si.numel() {
        let mut i = idx.int_at(p)?;
        if i < 0 {
            i += n;
        }
        if i < 0 || i >= n {
            return Err(bad("GatherElements index out of range"));
        }
        let s = elements_offset(p, &si, &st, axis, i as usize) * es;
        y.data[p * es..(p + 1) * es].copy_from_slice(&x.data[s..s + es]);
    }
    Ok(())
}

pub(crate) fn scatter_elements(axis: usize, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let idx = io.input(1)?;
    let upd = io.input(2)?;
    let y = io.output(0)?;
    let (sx, si) = (x.shape(), idx.shape());
    if axis >= sx.rank
        || si.rank != sx.rank
        || upd.info.numel() != si.numel()
        || upd.dtype() != x.dtype()
    {
        return Err(bad("ScatterElements shapes disagree"));
    }
    if (0..sx.rank).any(|d| d != axis && si.dims[d] > sx.dims[d]) {
        return Err(bad("ScatterElements indices larger than data"));
    }
    let es = x.dtype().size();
    same_len(y.data.len(), x.data.len())?;
    y.data.copy_from_slice(x.data);
    let st = strides_of(&sx);
    let n = sx.dims[axis] as i64;
    for p in 0..si.numel() {
        let mut i = idx.int_at(p)?;
        if i < 0 {
            i += n;
        }
        if i < 0 || i >= n {
            return Err(bad("ScatterElements index out of range"));
        }
        let d = elements_offset(p, &si, &st, axis, i as usize) * es;
        y.data[d..d + es].copy_from_slice(&upd.data[p * es..(p + 1) * es]);
    }
    Ok(())
}

pub(crate) fn pad(
    mode: PadMode,
    pads: &[i64; 2 * OP_RANK],
    value: f64,
    io: &mut Io<'_>,
) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let y = io.output(0)?;
    let (sx, sy) = (x.shape(), y.shape());
    if sx.rank != sy.rank || x.dtype() != y.info.dtype {
        return Err(bad("Pad shapes disagree"));
    }
    for d in 0..sx.rank {
        if sx.dims[d] as i64 + pads[d] + pads[OP_RANK + d] != sy.dims[d] as i64 {
            return Err(bad("Pad amounts disagree with the shapes"));
        }
        if mode != PadMode::Constant && sx.dims[d] == 0 && sy.dims[d] > 0 {
            return Err(bad("cannot reflect or repeat an empty dimension"));
        }
    }
    let es = x.dtype().size();
    let mut fill = [0u8; 8];
    match x.dtype() {
        kiln_format::DType::F32 => fill[..4].copy_from_slice(&(value as f32).to_le_bytes()),
        kiln_format::DType::F64 => fill.copy_from_slice(&value.to_le_bytes()),
        kiln_format::DType::F16 => {
            fill[..2].copy_from_slice(&half::f16::from_f64(value).to_le_bytes())
        }
        _ => fill.copy_from_slice(&(value as i64).to_le_bytes()),
    }
    let st = strides_of(&sx);
    let total = sy.numel();
    let mut idx = [0usize; MAX_RANK];
    for o in 0..total {
        let mut src = 0i64;
        let mut inside = true;
        for d in 0..sy.rank {
            let n = sx.dims[d] as i64;
            let mut c = idx[d] as i64 - pads[d];
            if c < 0 || c >= n {
                match mode {
                    PadMode::Constant => inside = false,
                    PadMode::Edge => c = c.clamp(0, n - 1),
                    PadMode::Wrap => c = c.rem_euclid(n),
                    PadMode::Reflect => {
                        if n == 1 {
                            c = 0;
                        } else {
                            let period = 2 * (n - 1);
                            c = c.rem_euclid(period);
                            if c >= n {
                                c = period - c;
                            }
                        }
                    }
                }
            }
            src += c * st[d];
        }
        let dst = &mut y.data[o * es..(o + 1) * es];
        if inside {
            let s = src as usize * es;
            dst.copy_from_slice(&x.data[s..s + es]);
        } else {
            dst.copy_from_slice(&fill[..es]);
        }
        let mut d = sy.rank;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            if idx[d] < sy.dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(())
}

pub(crate) fn expand(io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let mut y = io.output(0)?;
    super::elementwise::broadcast_copy(&x, &mut y)
}

pub(crate) fn tile(io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let y = io.output(0)?;
    let (sx, sy) = (x.shape(), y.shape());
    if sx.rank != sy.rank || (0..sx.rank).any(|d| sx.dims[d] == 0 || sy.dims[d] % sx.dims[d] != 0) {
        return Err(bad("Tile shapes disagree"));
    }
    let es = x.dtype().size();
    let st = strides_of(&sx);
    let mut idx = [0usize; MAX_RANK];
    for o in 0..sy.numel() {
        let src: usize = (0..sx.rank)
            .map(|d| (idx[d] % sx.dims[d]) * st[d] as usize)
            .sum();
        y.data[o * es..(o + 1) * es].copy_from_slice(&x.data[src * es..(src + 1) * es]);
        let mut d = sy.rank;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            if idx[d] < sy.dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(())
}

fn shape6(dims: [usize; 6]) -> Shape {
    let mut s = Shape {
        dims: [0; MAX_RANK],
        rank: 6,
    };
    s.dims[..6].copy_from_slice(&dims);
    s
}

pub(crate) fn depth_to_space(b: usize, crd: bool, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let y = io.output(0)?;
    let sx = x.shape();
    if sx.rank != 4 || b == 0 || sx.dims[1] % (b * b) != 0 {
        return Err(bad(
            "DepthToSpace needs NCHW with C divisible by blocksize²",
        ));
    }
    let [n, c, h, w] = [sx.dims[0], sx.dims[1], sx.dims[2], sx.dims[3]];
    let c2 = c / (b * b);
    // Input viewed as 6-D, then transposed into [n, c2, h, b, w, b].
    let (view, perm) = if crd {
        ([n, c2, b, b, h, w], [0, 1, 4, 2, 5, 3])
    } else {
        ([n, b, b, c2, h, w], [0, 3, 4, 1, 5, 2])
    };
    let st = strides_of(&shape6(view));
    let out = shape6(core::array::from_fn(|d| view[perm[d]]));
    let strides: [i64; MAX_RANK] = core::array::from_fn(|d| if d < 6 { st[perm[d]] } else { 0 });
    strided_copy(x.dtype().size(), x.data, 0, &out, &strides, y.data)
}

pub(crate) fn space_to_depth(b: usize, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let y = io.output(0)?;
    let sx = x.shape();
    if sx.rank != 4 || b == 0 || sx.dims[2] % b != 0 || sx.dims[3] % b != 0 {
        return Err(bad(
            "SpaceToDepth needs NCHW with H and W divisible by blocksize",
        ));
    }
    let [n, c, h, w] = [sx.dims[0], sx.dims[1], sx.dims[2], sx.dims[3]];
    let view = [n, c, h / b, b, w / b, b];
    let perm = [0, 3, 5, 1, 2, 4];
    let st = strides_of(&shape6(view));
    let out = shape6(core::array::from_fn(|d| view[perm[d]]));
    let strides: [i64; MAX_RANK] = core::array::from_fn(|d| if d < 6 { st[perm[d]] } else { 0 });
    strided_copy(x.dtype().size(), x.data, 0, &out, &strides, y.data)
}

pub(crate) fn trilu(upper: bool, k: i64, io: &mut Io<'_>) -> Result<(), EngineError> {
    let x = io.input(0)?;
    let y = io.output(0)?;
    let s = x.shape();
    if s.rank < 2 {
        return Err(bad("Trilu needs rank >= 2"));
    }
    same_len(x.data.len(), y.data.len())?;
    let es = x.dtype().size();
    let (rows, cols) = (s.dims[s.rank - 2], s.dims[s.rank - 1]);
    for (e, (o, i)) in y
        .data
        .chunks_exact_mut(es)
        .zip(x.data.chunks_exact(es))
        .enumerate()
    {
        let r = ((e / cols) % rows.max(1)) as i64;
        let c = (e % cols) as i64;
        let keep = if upper { c - r >= k } else { c - r <= k };
        if keep {
            o.copy_from_slice(i);
        } else {
            o.fill(0);
        }
    }
    Ok(())
}

pub(crate) fn one_hot(axis: usize, io: &mut Io<'_>) -> Result<(), EngineError> {
    let idx = io.input(0)?;
    let vals = io.input(2)?;
    let y = io.output(0)?;
    let sy = y.shape();
    if axis >= sy.rank || vals.info.numel() != 2 || vals.dtype() != y.info.dtype {
        return Err(bad("OneHot shapes disagree"));
    }
    let es = vals.dtype().size();
    let depth = sy.dims[axis];
    let outer = sy.prod(0, axis);
    let inner = sy.prod(axis + 1, sy.rank);
    same_len(idx.info.numel(), outer * inner)?;
    let (off, on) = (&vals.data[..es], &vals.data[es..2 * es]);
    for o in 0..outer {
        for i in 0..inner {
            let mut v = idx.int_at(o * inner + i)?;
            if v < 0 {
                v += depth as i64;
            }
            for d in 0..depth {
                let p = ((o * depth + d) * inner + i) * es;
                y.data[p..p + es].copy_from_slice(if v == d as i64 { on } else { off });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    /// Element-by-element reference of `strided_copy` (1-byte elements).
    fn naive(src: &[u8], base: i64, out: &Shape, strides: &[i64]) -> Vec<u8> {
        (0..out.numel())
            .map(|mut o| {
                let mut off = base;
                for d in (0..out.rank).rev() {
                    off += (o % out.dims[d]) as i64 * strides[d];
                    o /= out.dims[d];
                }
                src[off as usize]
            })
            .collect()
    }

    /// Dropping unit dims and merging contiguous ones changes no byte:
    /// every permutation of a shape with unit dims, and reversed and
    /// stepped reads, against the element-by-element reference.
    #[test]
    fn compacted_copies_match_the_reference() {
        let src: Vec<u8> = (0..=255).cycle().take(30).collect(); // 2·3·1·5·1
        let dims = [2usize, 3, 1, 5, 1];
        let mut st = [0i64; 5];
        let mut acc = 1;
        for d in (0..5).rev() {
            st[d] = acc;
            acc *= dims[d] as i64;
        }
        // All 120 permutations: the 5-digit base-5 numbers with distinct digits.
        let perms: Vec<[usize; 5]> = (0..3125usize)
            .map(|n| [n % 5, n / 5 % 5, n / 25 % 5, n / 125 % 5, n / 625])
            .filter(|p| (0..5).all(|i| p.contains(&i)))
            .collect();
        assert_eq!(perms.len(), 120);
        for p in &perms {
            let mut out = Shape {
                dims: [0; MAX_RANK],
                rank: 5,
            };
            let mut strides = [0i64; 5];
            for (k, &i) in p.iter().enumerate() {
                out.dims[k] = dims[i];
                strides[k] = st[i];
            }
            let mut got = std::vec![0u8; out.numel()];
            strided_copy(1, &src, 0, &out, &strides, &mut got).unwrap();
            assert_eq!(got, naive(&src, 0, &out, &strides), "perm {p:?}");
        }
        // A reversed, stepped read: rows backwards, every other column.
        let out = Shape {
            dims: {
                let mut d = [0; MAX_RANK];
                d[..3].copy_from_slice(&[3, 1, 3]);
                d
            },
            rank: 3,
        };
        let strides = [-5i64, 7, 2];
        let mut got = std::vec![0u8; 9];
        strided_copy(1, &src, 14, &out, &strides, &mut got).unwrap();
        assert_eq!(got, naive(&src, 14, &out, &strides));
    }
}
