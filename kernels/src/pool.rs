//! 2-D pooling (max, average, Lp) and global pooling over NCHW f32 tensors, with ONNX padding / ceil_mode semantics.
//!
//! Windows are clipped to the input: padding never contributes a value, and
//! a window that runs past the padded input (ceil_mode) is simply shorter.
//! The fast paths work one output row at a time, combining whole input rows
//! per filter tap so that the inner loops vectorise.

use crate::conv::out_range;

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

/// Checks attributes and slice lengths; returns `(h·w, oh·ow)`.
fn check(p: &Pool2d, x: &[f32], y: &[f32]) -> (usize, usize) {
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
    (hw, ohw)
}

/// Number of taps `t < k` with `lo <= start + t·d < hi`.
fn tap_count(start: isize, d: usize, k: usize, lo: isize, hi: isize) -> usize {
    if hi <= lo {
        return 0;
    }
    let (a, b) = out_range(start - lo, d, (hi - lo) as usize, k);
    b - a
}

/// Combines `y[t]` with `x[t · stride]` for a run of outputs of one tap.
type Combine<'a> = dyn FnMut(&mut [f32], &[f32], usize) + 'a;

/// Runs `combine(yrow_slice, xrow, first_ix, stride)` for every valid tap
/// of output row `oy` of one plane.
fn for_each_tap(p: &Pool2d, xc: &[f32], oy: usize, yrow: &mut [f32], combine: &mut Combine<'_>) {
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

/// Applies `op(acc, x)` lane-wise: `y[t] = op(y[t], x[t · stride])`.
#[inline(always)]
fn apply(y: &mut [f32], x: &[f32], stride: usize, op: impl Fn(f32, f32) -> f32) {
    if stride == 1 {
        for (a, &b) in y.iter_mut().zip(x) {
            *a = op(*a, b);
        }
    } else {
        for (a, &b) in y.iter_mut().zip(x.iter().step_by(stride)) {
            *a = op(*a, b);
        }
    }
}

/// MaxPool: padding is ignored (acts as −∞); windows that run past the
/// input (ceil_mode) are clipped. A window with no input element gives −∞.
///
/// # Panics
/// If a slice is too short or a stride or dilation is 0.
pub fn max_pool2d(p: &Pool2d, x: &[f32], y: &mut [f32]) {
    let (hw, ohw) = check(p, x, y);
    for plane in 0..p.n * p.c {
        let xc = &x[plane * hw..][..hw];
        let yc = &mut y[plane * ohw..][..ohw];
        for oy in 0..p.oh {
            let yrow = &mut yc[oy * p.ow..][..p.ow];
            yrow.fill(f32::NEG_INFINITY);
            for_each_tap(p, xc, oy, yrow, &mut |ys, xs, st| {
                apply(ys, xs, st, f32::max)
            });
        }
    }
}

/// AveragePool with ONNX semantics: without `count_include_pad` the divisor
/// is the number of input elements in the window; with it, the divisor also
/// counts padding positions, but not the ceil_mode overhang beyond the padded
/// input.
///
/// # Panics
/// If a slice is too short or a stride or dilation is 0.
pub fn avg_pool2d(p: &Pool2d, count_include_pad: bool, x: &[f32], y: &mut [f32]) {
    let (hw, ohw) = check(p, x, y);
    let [sh, sw] = p.stride;
    let [dh, dw] = p.dilation;
    let [pt, pl, pb, pr] = p.pad.map(|v| v as isize);
    // Valid region for the divisor, relative to unpadded input coordinates.
    let (ylo, yhi, xlo, xhi) = if count_include_pad {
        (-pt, p.h as isize + pb, -pl, p.w as isize + pr)
    } else {
        (0, p.h as isize, 0, p.w as isize)
    };
    for plane in 0..p.n * p.c {
        let xc = &x[plane * hw..][..hw];
        let yc = &mut y[plane * ohw..][..ohw];
        for oy in 0..p.oh {
            let yrow = &mut yc[oy * p.ow..][..p.ow];
            yrow.fill(0.0);
            for_each_tap(p, xc, oy, yrow, &mut |ys, xs, st| {
                apply(ys, xs, st, |a, b| a + b)
            });
            let rows = tap_count((oy * sh) as isize - pt, dh, p.kh, ylo, yhi);
            for (ox, v) in yrow.iter_mut().enumerate() {
                let cols = tap_count((ox * sw) as isize - pl, dw, p.kw, xlo, xhi);
                *v /= (rows * cols) as f32;
            }
        }
    }
}

/// LpPool: `(Σ |x|^pw)^(1/pw)` over the input elements of each window
/// (padding contributes nothing).
///
/// # Panics
/// If a slice is too short or a stride or dilation is 0.
pub fn lp_pool2d(p: &Pool2d, pw: u32, x: &[f32], y: &mut [f32]) {
    let (hw, ohw) = check(p, x, y);
    let pf = pw as f32;
    for plane in 0..p.n * p.c {
        let xc = &x[plane * hw..][..hw];
        let yc = &mut y[plane * ohw..][..ohw];
        for oy in 0..p.oh {
            let yrow = &mut yc[oy * p.ow..][..p.ow];
            yrow.fill(0.0);
            match pw {
                1 => for_each_tap(p, xc, oy, yrow, &mut |ys, xs, st| {
                    apply(ys, xs, st, |a, b| a + b.abs())
                }),
                2 => {
                    for_each_tap(p, xc, oy, yrow, &mut |ys, xs, st| {
                        apply(ys, xs, st, |a, b| a + b * b)
                    });
                    for v in yrow.iter_mut() {
                        *v = libm::sqrtf(*v);
                    }
                }
                _ => {
                    for_each_tap(p, xc, oy, yrow, &mut |ys, xs, st| {
                        apply(ys, xs, st, |a, b| a + libm::powf(b.abs(), pf));
                    });
                    for v in yrow.iter_mut() {
                        *v = libm::powf(*v, 1.0 / pf);
                    }
                }
            }
        }
    }
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
                *a = a.max(b);
            }
        }
        let tail = chunks
            .remainder()
            .iter()
            .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        *v = acc.iter().fold(tail, |a, &b| a.max(b));
    }
}
