//! 2-D pooling (max, average, Lp) and global pooling over NCHW f32 tensors, with ONNX padding / ceil_mode semantics.
//!
//! Windows are clipped to the input: padding never contributes a value, and
//! a window that runs past the padded input (ceil_mode) is simply shorter.
//! The fast paths work one output row at a time, combining whole input rows
//! per filter tap so that the inner loops vectorise.

use crate::conv::out_range;
use crate::gemm::Engine;

/// Shape and attributes of a 2-D pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2d {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Window height.
    pub kh: usize,
    /// Window width.
    pub kw: usize,
    /// Strides (height, width), each >= 1.
    pub stride: [usize; 2],
    /// Dilations (height, width), each >= 1.
    pub dilation: [usize; 2],
    /// Padding: top, left, bottom, right.
    pub pad: [usize; 4],
}

/// Lanes of the independent accumulators in the reductions.
const LANES: usize = 8;

/// Checks attributes and slice lengths.
fn check(p: &Pool2d, x: &[f32], y: &[f32]) {
    assert!(
        p.stride.iter().chain(&p.dilation).all(|&v| v >= 1),
        "pool: strides and dilations must be >= 1"
    );
    let planes = p.n.checked_mul(p.c).expect("pool: size overflows usize");
    let hw = p.h.checked_mul(p.w).expect("pool: size overflows usize");
    let ohw = p.oh.checked_mul(p.ow).expect("pool: size overflows usize");
    assert!(
        planes.checked_mul(hw).is_some_and(|l| x.len() >= l),
        "pool: x too short"
    );
    assert!(
        planes.checked_mul(ohw).is_some_and(|l| y.len() >= l),
        "pool: y too short"
    );
}

/// Number of taps `t < k` with `lo <= start + t·d < hi`.
fn tap_count(start: isize, d: usize, k: usize, lo: isize, hi: isize) -> usize {
    if hi <= lo {
        return 0;
    }
    let (a, b) = out_range(start - lo, d, (hi - lo) as usize, k);
    b - a
}

/// Runs `combine(yrow_slice, xrow_from_first_input, stride)` for every
/// valid tap of output row `oy` of one plane.
#[inline(always)]
fn for_each_tap(
    p: &Pool2d,
    xc: &[f32],
    oy: usize,
    yrow: &mut [f32],
    mut combine: impl FnMut(&mut [f32], &[f32], usize),
) {
    let [sh, sw] = p.stride;
    let [dh, dw] = p.dilation;
    let (pt, pl) = (p.pad[0] as isize, p.pad[1] as isize);
    for r in 0..p.kh {
        let iy = (oy * sh + r * dh) as isize - pt;
        if iy < 0 || iy >= p.h as isize {
            continue;
        }
        let xrow = &xc[iy as usize * p.w..][..p.w];
        for s in 0..p.kw {
            let off = (s * dw) as isize - pl;
            let (x0, x1) = out_range(off, sw, p.w, p.ow);
            if x0 < x1 {
                let ix0 = (x0 as isize * sw as isize + off) as usize;
                combine(&mut yrow[x0..x1], &xrow[ix0..], sw);
            }
        }
    }
}

/// Applies `op(acc, x)` lane-wise: `y[t] = op(y[t], x[t · stride])`; `x`
/// holds at least `(y.len() - 1) · stride + 1` values.
#[inline(always)]
fn apply(y: &mut [f32], x: &[f32], stride: usize, op: impl Fn(f32, f32) -> f32) {
    match stride {
        1 => {
            for (a, &b) in y.iter_mut().zip(x) {
                *a = op(*a, b);
            }
        }
        // Constant stride: vectorised as interleaved loads.
        2 => {
            for (a, b) in y.iter_mut().zip(x.chunks_exact(2)) {
                *a = op(*a, b[0]);
            }
            if x.len() < 2 * y.len()
                && let Some(a) = y.last_mut()
            {
                *a = op(*a, x[x.len() - 1]);
            }
        }
        _ => {
            for (a, &b) in y.iter_mut().zip(x.iter().step_by(stride)) {
                *a = op(*a, b);
            }
        }
    }
}

/// `max(a, b)` for an accumulator `a` that is never NaN: NaN inputs are
/// skipped (like `f32::max`), and it compiles to a single `maxps`.
#[inline(always)]
fn max_keep(a: f32, b: f32) -> f32 {
    if b > a { b } else { a }
}

/// What a pooling computes per window.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Max,
    /// Average; the divisor counts padding when `true`.
    Avg(bool),
    /// Lp norm with this exponent.
    Lp(u32),
}

/// All pools: reduce every window row by row with `op` from `init`, then
/// finish each output row (divide, take the root).
#[inline(always)]
fn pool(&(p, kind): &(Pool2d, Kind), x: &[f32], y: &mut [f32]) {
    match kind {
        Kind::Max => reduce(&p, x, y, f32::NEG_INFINITY, max_keep, |_, _| {}),
        Kind::Avg(include_pad) => {
            let [sh, sw] = p.stride;
            let [dh, dw] = p.dilation;
            let [pt, pl, pb, pr] = p.pad.map(|v| v as isize);
            // Region the divisor counts, in unpadded input coordinates.
            let (ylo, yhi, xlo, xhi) = if include_pad {
                (-pt, p.h as isize + pb, -pl, p.w as isize + pr)
            } else {
                (0, p.h as isize, 0, p.w as isize)
            };
            // Columns whose whole window is inside that region.
            let ca = out_range(-pl - xlo, sw, (xhi - xlo).max(0) as usize, p.ow).0;
            let last = (p.kw.saturating_sub(1) * dw) as isize;
            let cb = out_range(last - pl - xlo, sw, (xhi - xlo).max(0) as usize, p.ow)
                .1
                .max(ca);
            reduce(
                &p,
                x,
                y,
                0.0,
                |a, b| a + b,
                |oy, yrow| {
                    let rows = tap_count((oy * sh) as isize - pt, dh, p.kh, ylo, yhi);
                    let full = (rows * p.kw) as f32;
                    for v in &mut yrow[ca..cb] {
                        *v /= full;
                    }
                    for ox in (0..ca).chain(cb..p.ow) {
                        let cols = tap_count((ox * sw) as isize - pl, dw, p.kw, xlo, xhi);
                        yrow[ox] /= (rows * cols) as f32;
                    }
                },
            );
        }
        // One instance for every p (LpPool is rare; three vectorised
        // copies were 4 KB of the WebAssembly package): p = 1 and 2 exactly
        // as |x| and x², larger p through powf.
        Kind::Lp(pw) => {
            let pf = pw as f32;
            reduce(
                &p,
                x,
                y,
                0.0,
                |a, b| {
                    a + match pw {
                        1 => b.abs(),
                        2 => b * b,
                        _ => libm::powf(b.abs(), pf),
                    }
                },
                |_, yrow| {
                    for v in yrow {
                        *v = match pw {
                            1 => *v,
                            2 => libm::sqrtf(*v),
                            _ => libm::powf(*v, 1.0 / pf),
                        };
                    }
                },
            );
        }
    }
}

/// Reduces every window with `op` (from `init`), then calls
/// `finish(oy, yrow)` on each output row.
#[inline(always)]
fn reduce(
    p: &Pool2d,
    x: &[f32],
    y: &mut [f32],
    init: f32,
    op: impl Fn(f32, f32) -> f32 + Copy,
    mut finish: impl FnMut(usize, &mut [f32]),
) {
    let (hw, ohw) = (p.h * p.w, p.oh * p.ow);
    if ohw == 0 {
        return;
    }
    for plane in 0..p.n * p.c {
        let xc = &x[plane * hw..][..hw];
        let yc = &mut y[plane * ohw..][..ohw];
        for (oy, yrow) in yc.chunks_exact_mut(p.ow).enumerate() {
            yrow.fill(init);
            for_each_tap(p, xc, oy, yrow, |ys, xs, st| apply(ys, xs, st, op));
            finish(oy, yrow);
        }
    }
}

/// MaxPool: padding is ignored (acts as −∞); windows that run past the
/// input (ceil_mode) are clipped. A window with no input element gives −∞.
///
/// # Panics
/// If a slice is too short or a stride or dilation is 0.
pub fn max_pool2d(p: &Pool2d, x: &[f32], y: &mut [f32]) {
    check(p, x, y);
    Engine::detect().vectorized(pool, &(*p, Kind::Max), x, y);
}

/// AveragePool with ONNX semantics: without `count_include_pad` the divisor
/// is the number of input elements in the window; with it, the divisor also
/// counts padding positions, but not the ceil_mode overhang beyond the padded
/// input.
///
/// # Panics
/// If a slice is too short or a stride or dilation is 0.
pub fn avg_pool2d(p: &Pool2d, count_include_pad: bool, x: &[f32], y: &mut [f32]) {
    check(p, x, y);
    Engine::detect().vectorized(pool, &(*p, Kind::Avg(count_include_pad)), x, y);
}

/// LpPool: `(Σ |x|^pw)^(1/pw)` over the input elements of each window
/// (padding contributes nothing).
///
/// # Panics
/// If a slice is too short or a stride or dilation is 0.
pub fn lp_pool2d(p: &Pool2d, pw: u32, x: &[f32], y: &mut [f32]) {
    check(p, x, y);
    Engine::detect().vectorized(pool, &(*p, Kind::Lp(pw)), x, y);
}

/// GlobalAveragePool over `n_c` planes of `hw` elements.
///
/// # Panics
/// If `x` is shorter than `n_c·hw` or `y` than `n_c`.
pub fn global_avg_pool(n_c: usize, hw: usize, x: &[f32], y: &mut [f32]) {
    assert!(
        n_c.checked_mul(hw).is_some_and(|l| x.len() >= l) && y.len() >= n_c,
        "global_avg_pool: slice too short"
    );
    if hw == 0 {
        y[..n_c].fill(f32::NAN);
        return;
    }
    for (v, plane) in y[..n_c].iter_mut().zip(x.chunks_exact(hw)) {
        let mut acc = [0.0f32; LANES];
        let mut chunks = plane.chunks_exact(LANES);
        for ch in &mut chunks {
            for (a, &b) in acc.iter_mut().zip(ch) {
                *a += b;
            }
        }
        let tail: f32 = chunks.remainder().iter().sum();
        *v = (acc.iter().sum::<f32>() + tail) / hw as f32;
    }
}

/// GlobalMaxPool over `n_c` planes of `hw` elements (−∞ for empty planes).
///
/// # Panics
/// If `x` is shorter than `n_c·hw` or `y` than `n_c`.
pub fn global_max_pool(n_c: usize, hw: usize, x: &[f32], y: &mut [f32]) {
    assert!(
        n_c.checked_mul(hw).is_some_and(|l| x.len() >= l) && y.len() >= n_c,
        "global_max_pool: slice too short"
    );
    if hw == 0 {
        y[..n_c].fill(f32::NEG_INFINITY);
        return;
    }
    for (v, plane) in y[..n_c].iter_mut().zip(x.chunks_exact(hw)) {
        let mut acc = [f32::NEG_INFINITY; LANES];
        let mut chunks = plane.chunks_exact(LANES);
        for ch in &mut chunks {
            for (a, &b) in acc.iter_mut().zip(ch) {
                *a = max_keep(*a, b);
            }
        }
        let tail = chunks
            .remainder()
            .iter()
            .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        *v = acc.iter().fold(tail, |a, &b| a.max(b));
    }
}

#[cfg(test)]
mod tests {
    //! The AVX2-compiled pools against the portable build (which
    //! `tests/pool.rs` checks against a naive implementation).
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    proptest! {
        #[test]
        fn avx2_build_matches_portable(
            (h, w, kh, kw) in (1usize..=9, 1usize..=40, 1usize..=3, 1usize..=3),
            (sh, sw, dh, dw) in (1usize..=3, 1usize..=3, 1usize..=2, 1usize..=2),
            pad in [0usize..=1, 0usize..=1, 0usize..=2, 0usize..=2],
            kind in prop_oneof![
                Just(Kind::Max),
                any::<bool>().prop_map(Kind::Avg),
                (1u32..=3).prop_map(Kind::Lp),
            ],
        ) {
            let span = |len: usize, p0: usize, p1: usize, k: usize, d: usize, s: usize| {
                (len + p0 + p1).checked_sub(d * (k - 1) + 1).map(|v| v.div_ceil(s) + 1)
            };
            let (Some(oh), Some(ow)) = (
                span(h, pad[0], pad[2], kh, dh, sh),
                span(w, pad[1], pad[3], kw, dw, sw),
            ) else {
                return Ok(());
            };
            let p = Pool2d { n: 1, c: 2, h, w, oh, ow, kh, kw, stride: [sh, sw], dilation: [dh, dw], pad };
            let x: Vec<f32> = (0..2 * h * w).map(|i| ((i * 37) % 19) as f32 - 9.0).collect();
            let mut want = std::vec![f32::NAN; 2 * oh * ow];
            Engine::portable().vectorized(pool, &(p, kind), &x, &mut want);
            #[cfg(target_arch = "x86_64")]
            for eng in Engine::simd() {
                let mut got = std::vec![f32::NAN; 2 * oh * ow];
                eng.vectorized(pool, &(p, kind), &x, &mut got);
                for (g, w) in got.iter().zip(&want) {
                    prop_assert!(
                        g == w || (g - w).abs() <= 1e-5 * w.abs().max(1.0) || (g.is_nan() && w.is_nan()),
                        "{:?} {:?}: {:?} vs {:?}", p, kind, got, want
                    );
                }
            }
        }
    }
}
