//! Integer kernels of the TFLite int8 spec: int8 activations (asymmetric,
//! zero point), int8 weights (symmetric, per output channel or per tensor),
//! int32 bias, int32 accumulation and fixed-point requantization
//! ([`crate::fixed`]), saturated to the fused activation's range. No
//! floating point at run time, so every target computes the same bytes.

use crate::conv::Conv2d;
use crate::fixed::Multiplier;
use crate::pool::Pool2d;

/// `v` clamped to `[lo, hi]` and to the int8 range. Never panics, even for
/// `lo > hi` (a malformed artifact; the engine refuses those first).
#[inline(always)]
fn sat_i8(v: i32, lo: i32, hi: i32) -> i8 {
    v.max(lo).min(hi).clamp(-128, 127) as i8
}

/// Zero points and output clamp shared by the int8 convolution kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QOut {
    /// Zero point of the input.
    pub x_zp: i32,
    /// Zero point of the output.
    pub y_zp: i32,
    /// Clamp of the output (the fused activation in the quantized domain).
    pub act_min: i32,
    /// See `act_min`.
    pub act_max: i32,
}

impl QOut {
    /// Requantizes accumulator `acc` of output channel `c` and saturates.
    #[inline]
    pub(crate) fn store(&self, acc: i32, requant: &[[i32; 2]], c: usize) -> i8 {
        let [mantissa, shift] = requant[if requant.len() == 1 { 0 } else { c }];
        let v = Multiplier { mantissa, shift }
            .apply(acc)
            .saturating_add(self.y_zp);
        sat_i8(v, self.act_min, self.act_max)
    }
}

/// Int8 2-D convolution (TFLite `CONV_2D` / `DEPTHWISE_CONV_2D` semantics,
/// NCHW here, filters `[m, c/group, kh, kw]`): padding contributes nothing
/// (as if it held the input zero point), `acc = Σ (x - x_zp)·w + bias`,
/// requantized per output channel (or per tensor) and clamped.
///
/// # Panics
/// If a slice is shorter than its shape, `group` does not divide `c` and
/// `m`, or `requant` has neither 1 nor `m` entries.
pub fn conv2d_i8(
    p: &Conv2d,
    q: &QOut,
    x: &[i8],
    w: &[i8],
    bias: Option<&[i32]>,
    requant: &[[i32; 2]],
    y: &mut [i8],
) {
    assert!(
        requant.len() == 1 || requant.len() == p.m,
        "one multiplier or one per channel"
    );
    let bias = bias.map(|b| &b[..p.m]);
    conv2d_i32(p, q, x, w, |i, oc, acc| {
        let acc = acc.wrapping_add(bias.map_or(0, |bs| bs[oc]));
        y[i] = q.store(acc, requant, oc);
    });
}

/// The int32 accumulations `Σ (x - x_zp) · w` of a convolution (taps over
/// padding skipped), handed to `out(flat output index, channel, acc)`.
fn conv2d_i32(p: &Conv2d, q: &QOut, x: &[i8], w: &[i8], mut out: impl FnMut(usize, usize, i32)) {
    assert!(p.group > 0 && p.c.is_multiple_of(p.group) && p.m.is_multiple_of(p.group));
    let (cg, mg) = (p.c / p.group, p.m / p.group);
    let (x, w) = (&x[..p.n * p.c * p.h * p.w], &w[..p.m * cg * p.kh * p.kw]);
    let [sh, sw] = p.stride;
    let [dh, dw] = p.dilation;
    for b in 0..p.n {
        for oc in 0..p.m {
            let g = oc / mg;
            let wk = &w[oc * cg * p.kh * p.kw..][..cg * p.kh * p.kw];
            for oy in 0..p.oh {
                for ox in 0..p.ow {
                    let mut acc = 0i32;
                    for ci in 0..cg {
                        let xc = &x[(b * p.c + g * cg + ci) * p.h * p.w..][..p.h * p.w];
                        for r in 0..p.kh {
                            let iy = (oy * sh + r * dh).wrapping_sub(p.pad[0]);
                            if iy >= p.h {
                                continue;
                            }
                            for s in 0..p.kw {
                                let ix = (ox * sw + s * dw).wrapping_sub(p.pad[1]);
                                if ix >= p.w {
                                    continue;
                                }
                                let xv = i32::from(xc[iy * p.w + ix]) - q.x_zp;
                                let wv = i32::from(wk[(ci * p.kh + r) * p.kw + s]);
                                acc = acc.wrapping_add(xv * wv);
                            }
                        }
                    }
                    out(((b * p.m + oc) * p.oh + oy) * p.ow + ox, oc, acc);
                }
            }
        }
    }
}

/// Scratch bytes (`i8`s) [`hybrid_conv2d`] needs: one quantized batch entry.
pub fn hybrid_conv2d_scratch_len(p: &Conv2d) -> usize {
    p.c * p.h * p.w
}

/// TFLite's hybrid (dynamic-range) convolution with a per-tensor int8
/// filter, as LiteRT's `EvalHybrid` + `HybridConv` compute it: each batch
/// entry of `x` is quantized symmetrically (`s = max|x| / 127`, each value
/// `round(x · 127 / max|x|)` half away from zero, clamped to ±127; an
/// all-zero entry gets `s = 1`), convolved in int32 with `w` (padding adds
/// 0), and `y = clamp(acc · (s · w_scale) + bias, lo, hi)` in f32.
///
/// # Panics
/// If a slice is shorter than its shape or `scratch` shorter than
/// [`hybrid_conv2d_scratch_len`].
#[allow(
    clippy::too_many_arguments,
    reason = "mirrors the operator's inputs and output"
)]
pub fn hybrid_conv2d(
    p: &Conv2d,
    x: &[f32],
    w: &[i8],
    w_scale: f32,
    bias: Option<&[f32]>,
    [lo, hi]: [f32; 2],
    y: &mut [f32],
    scratch: &mut [i8],
) {
    let per = p.c * p.h * p.w;
    let plane = p.m * p.oh * p.ow;
    let xq = &mut scratch[..per];
    let q = QOut {
        x_zp: 0,
        y_zp: 0,
        act_min: 0,
        act_max: 0,
    };
    for b in 0..p.n {
        let xb = &x[b * per..(b + 1) * per];
        let range = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = if range == 0.0 {
            xq.fill(0);
            1.0
        } else {
            let inv = 127.0 / range;
            for (o, &v) in xq.iter_mut().zip(xb) {
                *o = libm::roundf(v * inv).clamp(-127.0, 127.0) as i8;
            }
            range / 127.0
        };
        let scale = s * w_scale;
        let one = Conv2d { n: 1, ..*p };
        let yb = &mut y[b * plane..(b + 1) * plane];
        conv2d_i32(&one, &q, xq, w, |i, oc, acc| {
            let v = acc as f32 * scale + bias.map_or(0.0, |bs| bs[oc]);
            yb[i] = v.clamp(lo, hi);
        });
    }
}

/// Shape and quantization of a TFLite int8 `FULLY_CONNECTED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QFullyConnected {
    /// Rows of `x` (batch).
    pub rows: usize,
    /// Inputs per row.
    pub depth: usize,
    /// Outputs per row.
    pub units: usize,
    /// Zero point of `x`.
    pub x_zp: i32,
    /// Zero point of `y`.
    pub y_zp: i32,
    /// Clamp of the output (the fused activation in the quantized domain).
    pub act_min: i32,
    /// See `act_min`.
    pub act_max: i32,
}

impl QFullyConnected {
    /// Its zero points and clamp, as the convolutions carry them.
    fn out(&self) -> QOut {
        QOut {
            x_zp: self.x_zp,
            y_zp: self.y_zp,
            act_min: self.act_min,
            act_max: self.act_max,
        }
    }
}

/// `y[r, u] = clamp(requant_u(Σ_d (x[r, d] - x_zp) · w[u, d] + bias[u]) + y_zp)`.
///
/// `requant` holds `[mantissa, shift]` of a [`Multiplier`] per unit, or a
/// single one for all.
///
/// # Panics
/// If a slice is shorter than its shape, `requant` is empty or has neither
/// 1 nor `units` entries, or `bias` is shorter than `units`.
pub fn fully_connected_i8(
    p: &QFullyConnected,
    x: &[i8],
    w: &[i8],
    bias: Option<&[i32]>,
    requant: &[[i32; 2]],
    y: &mut [i8],
) {
    assert!(
        requant.len() == 1 || requant.len() == p.units,
        "one multiplier or one per unit"
    );
    let (x, w, y) = (
        &x[..p.rows * p.depth],
        &w[..p.units * p.depth],
        &mut y[..p.rows * p.units],
    );
    let bias = bias.map(|b| &b[..p.units]);
    for (xr, yr) in x
        .chunks_exact(p.depth.max(1))
        .zip(y.chunks_exact_mut(p.units.max(1)))
    {
        for (u, out) in yr.iter_mut().enumerate() {
            let wr = &w[u * p.depth..(u + 1) * p.depth];
            // Int32 accumulation, as TFLite does.
            let mut acc = 0i32;
            for (&xv, &wv) in xr.iter().zip(wr) {
                acc = acc.wrapping_add((i32::from(xv) - p.x_zp) * i32::from(wv));
            }
            if let Some(b) = bias {
                acc = acc.wrapping_add(b[u]);
            }
            *out = p.out().store(acc, requant, u);
        }
    }
}

/// Quantization of a TFLite int8 `ADD` (both inputs rescaled to a common
/// scale with 20 bits of headroom, summed, requantized).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QAdd {
    /// Zero points of the inputs.
    pub a_zp: i32,
    /// See `a_zp`.
    pub b_zp: i32,
    /// Zero point of the output.
    pub y_zp: i32,
    /// `[mantissa, shift]` of each input's multiplier and of the output's.
    pub a_rq: [i32; 2],
    /// See `a_rq`.
    pub b_rq: [i32; 2],
    /// See `a_rq`.
    pub y_rq: [i32; 2],
    /// Clamp of the output.
    pub act_min: i32,
    /// See `act_min`.
    pub act_max: i32,
}

/// Left shift applied to int8 `ADD` inputs before rescaling (TFLite's).
pub const ADD_LEFT_SHIFT: u32 = 20;

/// Int8 elementwise `ADD` of same-shaped `a` and `b` into `y`.
///
/// Each input's rescaled value depends on its byte alone, so both are read
/// from 256-entry tables built per call (TFLite's arithmetic entry by
/// entry): one 64-bit product per element instead of three, about half the
/// time on a 16k-element residual add.
///
/// # Panics
/// If `b` or `y` is shorter than `a`.
pub fn add_i8(q: &QAdd, a: &[i8], b: &[i8], y: &mut [i8]) {
    struct Add<'a>(&'a QAdd, &'a [i8], &'a [i8], &'a mut [i8]);
    impl crate::gemm::Kernel for Add<'_> {
        #[inline(always)]
        fn run(self) {
            let Add(q, a, b, y) = self;
            let m = |[mantissa, shift]: [i32; 2]| Multiplier { mantissa, shift };
            let (ma, mb, my) = (m(q.a_rq), m(q.b_rq), m(q.y_rq));
            let (lo, hi) = (q.act_min.max(-128), q.act_max.min(127));
            let (b, y) = (&b[..a.len()], &mut y[..a.len()]);
            let (mut ta, mut tb) = ([0i32; 256], [0i32; 256]);
            for (v, (sa, sb)) in ta.iter_mut().zip(tb.iter_mut()).enumerate() {
                *sa = add_input(ma, v as u8 as i8, q.a_zp);
                *sb = add_input(mb, v as u8 as i8, q.b_zp);
            }
            // Importer-made multipliers are below 1: the table sum cannot
            // overflow and `my.apply` cannot saturate, so the loop can skip
            // both checks (and vectorise) and still give `apply`'s result.
            let small = |t: &[i32; 256]| t.iter().all(|v| v.unsigned_abs() < 1 << 30);
            if small(&ta) && small(&tb) && my.shift <= 0 {
                add_tables(&ta, &tb, my, [q.y_zp, lo, hi], a, b, y);
            } else {
                for ((&av, &bv), o) in a.iter().zip(b).zip(y.iter_mut()) {
                    let s = ta[usize::from(av as u8)].saturating_add(tb[usize::from(bv as u8)]);
                    *o = sat_i8(my.apply(s).saturating_add(q.y_zp), lo, hi);
                }
            }
        }
    }
    crate::gemm::Engine::detect().run(Add(q, a, b, y));
}

/// The table-driven ADD loop for tables whose entries are below 2^30 and
/// an output multiplier below 1 (`my.shift <= 0`): then `my.apply` of the
/// sum is this exact 64-bit product and shift. The slices come in as
/// arguments so that LLVM knows `y` aliases neither input and vectorises.
#[inline(always)]
fn add_tables(
    ta: &[i32; 256],
    tb: &[i32; 256],
    my: Multiplier,
    [zp, lo, hi]: [i32; 3],
    a: &[i8],
    b: &[i8],
    y: &mut [i8],
) {
    let total = 31 - my.shift.max(-32);
    let (mm, round) = (i64::from(my.mantissa), 1i64 << (total - 1));
    for ((&av, &bv), o) in a.iter().zip(b).zip(y.iter_mut()) {
        let s = ta[usize::from(av as u8)] + tb[usize::from(bv as u8)];
        let v = ((i64::from(s) * mm).wrapping_add(round) >> total) as i32;
        *o = v.saturating_add(zp).max(lo).min(hi).clamp(-128, 127) as i8;
    }
}

/// One int8 `ADD` input rescaled to the common scale (TFLite's
/// `MultiplyByQuantizedMultiplierSmallerThanOneExp((v - zp) << 20, ..)`).
#[inline(always)]
fn add_input(m: Multiplier, v: i8, zp: i32) -> i32 {
    // |v - zp| <= 255 for an int8 zero point, so the shift by 20 stays
    // inside i32 (a malformed one wraps, as before, and never panics).
    m.apply(i32::from(v).wrapping_sub(zp) << ADD_LEFT_SHIFT)
}

/// Largest integer below which every f32 partial sum is exact (2^24).
const F32_EXACT: i64 = 1 << 24;

/// Whether `Σ |x - x_zp| · |w|` over any `k`-long row of `w` (`rows` rows)
/// stays below 2^24, so that an f32 product of the int8 operands computes
/// the int32 accumulator exactly, in any order of additions.
fn f32_exact(w: &[i8], k: usize, x_zp: i32) -> bool {
    let xmax = i64::from((x_zp + 128).max(127 - x_zp).max(0));
    w.chunks(k.max(1)).all(|row| {
        let s: i64 = row.iter().map(|&v| i64::from(v).abs()).sum();
        s * xmax < F32_EXACT
    })
}

/// Whether `p` is a depthwise convolution (one filter per channel).
fn is_depthwise(p: &Conv2d) -> bool {
    p.group == p.c && p.m == p.c
}

/// A depthwise convolution whose channels come in fours as the grouped
/// one VNNI runs: groups of four channels, each filter's one weight placed
/// in its channel's byte of the word (the other three 0), so one VPDPBUSD
/// per 16 positions and tap computes one channel over the channel words
/// the ordinary path lays out.
fn depthwise_as_grouped(p: &Conv2d) -> Option<Conv2d> {
    (is_depthwise(p) && p.c.is_multiple_of(4) && p.c > 0).then_some(Conv2d {
        group: p.c / 4,
        ..*p
    })
}

/// Scratch elements (4 bytes each) [`conv2d_i8_fast`] needs (for a
/// depthwise convolution, room for either of its paths).
pub fn conv2d_i8_scratch_len(p: &Conv2d) -> usize {
    if is_depthwise(p) {
        let grouped = depthwise_as_grouped(p)
            .and_then(|g| crate::qconv::Geo::new(&g).map(|geo| geo.scratch_words(&g, false)));
        return crate::qconv::depthwise_scratch_words(p).max(grouped.unwrap_or(0));
    }
    crate::qconv::Geo::new(p).map_or(0, |g| g.scratch_words(p, false))
}

/// The least scratch (elements) [`conv2d_i8_fast`] takes for `p`: for a
/// depthwise convolution, the lean path's strip of `kh` input rows (a
/// fraction of [`conv2d_i8_scratch_len`], for microcontroller arenas, at
/// the cost of copying each input row `kh / stride` times); otherwise
/// [`conv2d_i8_scratch_len`].
pub fn conv2d_i8_min_scratch_len(p: &Conv2d) -> usize {
    if is_depthwise(p) {
        crate::qconv::depthwise_strip_words(p)
    } else {
        conv2d_i8_scratch_len(p)
    }
}

/// [`conv2d_i8`] by direct integer convolution ([`crate::qconv`]: AVX-512
/// VNNI where the CPU has it, vectorised portable loops elsewhere). Exact
/// integer sums, so the output bytes are the reference's on every path.
/// Shapes the direct path cannot lay out, and input zero points outside
/// int8, run the reference.
///
/// The path follows the scratch it gets: with [`conv2d_i8_scratch_len`]
/// or more every fast path is open; with less (down to
/// [`conv2d_i8_min_scratch_len`]) depthwise layers copy strips of rows;
/// with less than that (a compile for a microcontroller gives none) the
/// scratch-free reference runs. With the `compact` feature (firmware) the
/// scratch-free [`crate::compact`] kernel always runs and the other paths
/// are left out.
///
/// # Panics
/// As [`conv2d_i8`].
#[allow(clippy::too_many_arguments, reason = "the op's operands")]
pub fn conv2d_i8_fast(
    p: &Conv2d,
    q: &QOut,
    x: &[i8],
    w: &[i8],
    bias: Option<&[i32]>,
    requant: &[[i32; 2]],
    y: &mut [i8],
    scratch: &mut [f32],
) {
    if cfg!(feature = "compact") {
        return crate::compact::conv2d_i8(p, q, x, w, bias, requant, y);
    }
    if scratch.len() < conv2d_i8_min_scratch_len(p) {
        // An artifact compiled for a microcontroller: the reference, whose
        // bytes the compact kernel shares (and which this build links
        // anyway), not a second copy of scratch-free code.
        return conv2d_i8(p, q, x, w, bias, requant, y);
    }
    conv2d_i8_direct(
        crate::qconv::Isa::detect(),
        p,
        q,
        x,
        w,
        bias,
        requant,
        y,
        scratch,
    );
}

/// [`conv2d_i8_fast`] on a given instruction set (tests run each).
#[allow(clippy::too_many_arguments, reason = "the op's operands")]
fn conv2d_i8_direct(
    isa: crate::qconv::Isa,
    p: &Conv2d,
    q: &QOut,
    x: &[i8],
    w: &[i8],
    bias: Option<&[i32]>,
    requant: &[[i32; 2]],
    y: &mut [i8],
    scratch: &mut [f32],
) {
    let grouped = p.group > 0 && p.c.is_multiple_of(p.group) && p.m.is_multiple_of(p.group);
    let geo = crate::qconv::Geo::new(p);
    let Some(geo) = geo.filter(|_| grouped && (requant.len() == 1 || requant.len() == p.m)) else {
        return conv2d_i8(p, q, x, w, bias, requant, y);
    };
    let cg = p.c / p.group;
    let (x, w) = (&x[..p.n * p.c * p.h * p.w], &w[..p.m * cg * p.kh * p.kw]);
    let y = &mut y[..p.n * p.m * p.oh * p.ow];
    let bias = bias.map(|b| &b[..p.m]);
    // Depthwise layers with rows at least 4 wide run as grouped VNNI
    // convolutions; narrower maps (a streaming model's [T, 1] ones) keep
    // the channels-last kernel, where each group's setup would dominate.
    let on_vnni = !matches!(isa, crate::qconv::Isa::Portable(_));
    let as_grouped =
        depthwise_as_grouped(p).filter(|_| on_vnni && p.ow >= 4 && (-128..=127).contains(&q.x_zp));
    // The grouped path only where the caller sized scratch for it (a
    // microcontroller artifact sizes it for the depthwise kernel's strip).
    let as_grouped = as_grouped
        .and_then(|g| Some((g, crate::qconv::Geo::new(&g)?)))
        .filter(|(g, geo)| scratch.len() >= geo.scratch_words(g, false));
    if let Some((g, geo)) = as_grouped {
        let scratch = &mut scratch[..geo.scratch_words(&g, false)];
        let weights = crate::qconv::Weights::Diagonal(w, bias);
        crate::qconv::conv2d(
            isa,
            &g,
            &geo,
            q,
            x,
            weights,
            requant,
            y,
            bytemuck::cast_slice_mut(scratch),
        );
    } else if is_depthwise(p) {
        if !(-128..=127).contains(&q.x_zp) || p.kh * p.kw > crate::qconv::MAX_DW_TAPS {
            // `x - zp` must fit the kernel's `i16` copy of the input; the
            // kernel keeps one offset per tap on the stack.
            return conv2d_i8(p, q, x, w, bias, requant, y);
        }
        // All of it: the kernel copies the whole input when it fits, else
        // one strip of rows at a time.
        let full = crate::qconv::depthwise_scratch_words(p);
        let len = full.min(scratch.len());
        let scratch = &mut scratch[..len];
        crate::qconv::depthwise(
            isa,
            p,
            q,
            x,
            w,
            bias,
            requant,
            y,
            bytemuck::cast_slice_mut(scratch),
        );
    } else if (-128..=127).contains(&q.x_zp) {
        let scratch = &mut scratch[..geo.scratch_words(p, false)];
        let weights = crate::qconv::Weights::Raw(w, bias);
        crate::qconv::conv2d(
            isa,
            p,
            &geo,
            q,
            x,
            weights,
            requant,
            y,
            bytemuck::cast_slice_mut(scratch),
        );
    } else {
        conv2d_i8(p, q, x, w, bias, requant, y);
    }
}

/// The byte length of `p`'s weights packed ahead of time for input zero
/// point `x_zp` ([`conv2d_i8_pack`]), or `None` when the packed path does
/// not apply: depthwise convolutions, shapes the direct path cannot lay
/// out, zero points outside int8.
pub fn conv2d_i8_packable(p: &Conv2d, x_zp: i32) -> Option<usize> {
    let grouped = p.group > 0 && p.c.is_multiple_of(p.group) && p.m.is_multiple_of(p.group);
    if !grouped || is_depthwise(p) || !(-128..=127).contains(&x_zp) {
        return None;
    }
    crate::qconv::Geo::new(p).map(|g| g.packed_len(p))
}

/// Packs a convolution's weights (`[m, c/group, kh, kw]`) ahead of time:
/// `packed` gets `m` rows of `[kh, kw, 4·ceil(c/group/4)]` bytes (OHWI,
/// input channels zero-padded to a multiple of 4), `fold` gets
/// `bias - (128 + x_zp)·Σ w` per output channel. [`conv2d_i8_packed`]
/// then has no per-call weight work.
///
/// # Panics
/// If [`conv2d_i8_packable`] is `None`, or a slice is shorter than its shape.
pub fn conv2d_i8_pack(
    p: &Conv2d,
    x_zp: i32,
    w: &[i8],
    bias: Option<&[i32]>,
    packed: &mut [i8],
    fold: &mut [i32],
) {
    assert!(
        conv2d_i8_packable(p, x_zp).is_some(),
        "not a packable int8 convolution"
    );
    let geo = crate::qconv::Geo::new(p).expect("checked above");
    crate::qconv::pack_conv_weights(p, &geo, x_zp, w, bias, packed, fold);
}

/// Scratch elements (4 bytes each) [`conv2d_i8_packed`] needs.
pub fn conv2d_i8_packed_scratch_len(p: &Conv2d) -> usize {
    crate::qconv::Geo::new(p).map_or(0, |g| g.scratch_words(p, true))
}

/// [`conv2d_i8`] on weights packed by [`conv2d_i8_pack`] (with its folded
/// bias): the same bytes as the reference on the original weights.
///
/// # Panics
/// If [`conv2d_i8_packable`] is `None` for `p` and `q.x_zp`, a slice is
/// shorter than its shape, or `requant` has neither 1 nor `m` entries.
#[allow(clippy::too_many_arguments, reason = "the op's operands")]
pub fn conv2d_i8_packed(
    p: &Conv2d,
    q: &QOut,
    x: &[i8],
    packed: &[i8],
    fold: &[i32],
    requant: &[[i32; 2]],
    y: &mut [i8],
    scratch: &mut [f32],
) {
    conv2d_i8_packed_on(
        crate::qconv::Isa::detect(),
        p,
        q,
        x,
        packed,
        fold,
        requant,
        y,
        scratch,
    );
}

#[allow(clippy::too_many_arguments, reason = "the op's operands")]
fn conv2d_i8_packed_on(
    isa: crate::qconv::Isa,
    p: &Conv2d,
    q: &QOut,
    x: &[i8],
    packed: &[i8],
    fold: &[i32],
    requant: &[[i32; 2]],
    y: &mut [i8],
    scratch: &mut [f32],
) {
    let len = conv2d_i8_packable(p, q.x_zp).expect("not a packable int8 convolution");
    assert!(
        requant.len() == 1 || requant.len() == p.m,
        "one multiplier or one per channel"
    );
    let geo = crate::qconv::Geo::new(p).expect("checked above");
    let (x, packed, fold) = (&x[..p.n * p.c * p.h * p.w], &packed[..len], &fold[..p.m]);
    let y = &mut y[..p.n * p.m * p.oh * p.ow];
    let scratch = &mut scratch[..geo.scratch_words(p, true)];
    let weights = crate::qconv::Weights::Packed(packed, fold);
    crate::qconv::conv2d(
        isa,
        p,
        &geo,
        q,
        x,
        weights,
        requant,
        y,
        bytemuck::cast_slice_mut(scratch),
    );
}

/// [`fully_connected_i8`] as `Σ x·w - x_zp·Σ w` (exact in i32), in plain
/// loops that vectorise ([`crate::gemm::Engine::run`]).
struct FcDots<'a> {
    p: &'a QFullyConnected,
    x: &'a [i8],
    w: &'a [i8],
    bias: Option<&'a [i32]>,
    requant: &'a [[i32; 2]],
    y: &'a mut [i8],
}

impl crate::gemm::Kernel for FcDots<'_> {
    #[inline(always)]
    fn run(self) {
        let p = self.p;
        let q = p.out();
        let x = &self.x[..p.rows * p.depth];
        for (xr, yr) in x
            .chunks_exact(p.depth.max(1))
            .zip(self.y.chunks_exact_mut(p.units.max(1)))
        {
            for (u, (out, wr)) in yr
                .iter_mut()
                .zip(self.w.chunks_exact(p.depth.max(1)))
                .enumerate()
            {
                let (mut xw, mut ws) = (0i32, 0i32);
                for (&a, &b) in xr.iter().zip(wr) {
                    xw = xw.wrapping_add(i32::from(a) * i32::from(b));
                    ws = ws.wrapping_add(i32::from(b));
                }
                let acc = xw.wrapping_sub(p.x_zp.wrapping_mul(ws));
                let acc = acc.wrapping_add(self.bias.map_or(0, |b| b[u]));
                *out = q.store(acc, self.requant, u);
            }
        }
    }
}

/// Scratch elements (4 bytes each) [`fully_connected_i8_fast`] needs:
/// one input row as bytes (rounded up to 64) for the integer products, and
/// for more than [`FC_DOT_ROWS`] rows the f32 GEMM's operands.
pub fn fully_connected_i8_scratch_len(p: &QFullyConnected) -> usize {
    let row = p.depth.div_ceil(64) * 16;
    if p.rows <= FC_DOT_ROWS {
        return row;
    }
    (p.rows * p.depth + p.units * p.depth + p.rows * p.units).max(row)
}

/// Up to this many rows, int8 FC runs as integer dot products.
pub const FC_DOT_ROWS: usize = 4;

/// [`fully_connected_i8`] through the f32 GEMM, exact under the same
/// bound as [`conv2d_i8_fast`] (else the reference runs). With less
/// scratch than [`fully_connected_i8_scratch_len`] the reference runs;
/// with the `compact` feature, always [`crate::compact`]'s loop.
///
/// # Panics
/// As [`fully_connected_i8`].
pub fn fully_connected_i8_fast(
    p: &QFullyConnected,
    x: &[i8],
    w: &[i8],
    bias: Option<&[i32]>,
    requant: &[[i32; 2]],
    y: &mut [i8],
    scratch: &mut [f32],
) {
    if cfg!(feature = "compact") {
        return crate::compact::fully_connected_i8(p, x, w, bias, requant, y);
    }
    if scratch.len() < fully_connected_i8_scratch_len(p) {
        // As in `conv2d_i8_fast`.
        return fully_connected_i8(p, x, w, bias, requant, y);
    }
    #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
    let vnni = crate::simd_vnni::Vnni::detect();
    #[cfg(not(all(target_arch = "x86_64", any(feature = "std", test))))]
    let vnni = None;
    fully_connected_i8_on(vnni, p, x, w, bias, requant, y, scratch);
}

/// An int8 matrix × vector unit: AVX-512 VNNI on x86, none elsewhere.
#[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
pub(crate) type Gemv = crate::simd_vnni::Vnni;
#[cfg(not(all(target_arch = "x86_64", any(feature = "std", test))))]
pub(crate) type Gemv = core::convert::Infallible;

/// [`fully_connected_i8_fast`] with or without `vnni` (tests run both).
#[allow(clippy::too_many_arguments, reason = "the op's operands")]
fn fully_connected_i8_on(
    vnni: Option<Gemv>,
    p: &QFullyConnected,
    x: &[i8],
    w: &[i8],
    bias: Option<&[i32]>,
    requant: &[[i32; 2]],
    y: &mut [i8],
    scratch: &mut [f32],
) {
    let w = &w[..p.units * p.depth];
    #[cfg(not(all(target_arch = "x86_64", any(feature = "std", test))))]
    let _ = vnni;
    #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
    if let Some(v) = vnni
        && (-128..=127).contains(&p.x_zp)
        && p.depth > 0
    {
        let words = p.depth.div_ceil(64) * 16;
        let row: &mut [u8] = bytemuck::cast_slice_mut(&mut scratch[..words]);
        return fully_connected_vnni(v, p, x, w, bias, requant, y, row);
    }
    if p.rows <= FC_DOT_ROWS {
        // A GEMV: integer dot products compiled for the engine's vector
        // unit beat converting the weights to f32 on every call.
        return crate::gemm::Engine::detect().run(FcDots {
            p,
            x,
            w,
            bias,
            requant,
            y,
        });
    }
    if !f32_exact(w, p.depth, p.x_zp) {
        return fully_connected_i8(p, x, w, bias, requant, y);
    }
    let (xf, rest) = scratch.split_at_mut(p.rows * p.depth);
    let (wf, rest) = rest.split_at_mut(p.units * p.depth);
    let yf = &mut rest[..p.rows * p.units];
    for (d, &v) in xf.iter_mut().zip(&x[..p.rows * p.depth]) {
        *d = (i32::from(v) - p.x_zp) as f32;
    }
    for (d, &v) in wf.iter_mut().zip(w) {
        *d = f32::from(v);
    }
    crate::gemm::gemm(p.rows, p.units, p.depth, 1.0, xf, false, wf, true, 0.0, yf);
    let q = p.out();
    for (yr, fr) in y[..p.rows * p.units]
        .chunks_exact_mut(p.units.max(1))
        .zip(yf.chunks_exact(p.units.max(1)))
    {
        for (u, (o, &f)) in yr.iter_mut().zip(fr).enumerate() {
            let bv = bias.map_or(0, |b| b[u]);
            *o = q.store((f as i32).wrapping_add(bv), requant, u);
        }
    }
}

/// The byte length of `p`'s weights packed ahead of time
/// ([`fully_connected_i8_pack`]), or `None` when the packed path does not
/// apply (input zero point outside int8, or an empty layer).
pub fn fully_connected_i8_packable(p: &QFullyConnected) -> Option<usize> {
    let ok = (-128..=127).contains(&p.x_zp) && p.depth > 0 && p.units > 0;
    ok.then(|| crate::qfc::packed_len(p.units, p.depth))
}

/// Packs fully connected weights (`[units, depth]`) ahead of time: blocks
/// of 16 units, each `[ceil(depth/4)][16][4]` bytes (tails zero), and
/// `fold = bias - (128 + x_zp)·Σ w` per unit. [`fully_connected_i8_packed`]
/// then has no per-call weight work.
///
/// # Panics
/// If [`fully_connected_i8_packable`] is `None`, or a slice is shorter
/// than its shape.
pub fn fully_connected_i8_pack(
    p: &QFullyConnected,
    w: &[i8],
    bias: Option<&[i32]>,
    packed: &mut [i8],
    fold: &mut [i32],
) {
    assert!(
        fully_connected_i8_packable(p).is_some(),
        "not a packable int8 layer"
    );
    crate::qfc::pack(
        p,
        &w[..p.units * p.depth],
        bias,
        packed,
        &mut fold[..p.units],
    );
}

/// Scratch elements (4 bytes each) [`fully_connected_i8_packed`] needs.
pub fn fully_connected_i8_packed_scratch_len(p: &QFullyConnected) -> usize {
    p.depth.div_ceil(4)
}

/// [`fully_connected_i8`] on weights packed by [`fully_connected_i8_pack`]
/// (with its folded bias): the same bytes.
///
/// # Panics
/// If [`fully_connected_i8_packable`] is `None`, a slice is shorter than
/// its shape, or `requant` has neither 1 nor `units` entries.
pub fn fully_connected_i8_packed(
    p: &QFullyConnected,
    x: &[i8],
    packed: &[i8],
    fold: &[i32],
    requant: &[[i32; 2]],
    y: &mut [i8],
    scratch: &mut [f32],
) {
    #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
    let vnni = crate::simd_vnni::Vnni::detect();
    #[cfg(not(all(target_arch = "x86_64", any(feature = "std", test))))]
    let vnni = None;
    fully_connected_i8_packed_on(vnni, p, x, packed, fold, requant, y, scratch);
}

#[allow(clippy::too_many_arguments, reason = "the op's operands")]
fn fully_connected_i8_packed_on(
    vnni: Option<Gemv>,
    p: &QFullyConnected,
    x: &[i8],
    packed: &[i8],
    fold: &[i32],
    requant: &[[i32; 2]],
    y: &mut [i8],
    scratch: &mut [f32],
) {
    let len = fully_connected_i8_packable(p).expect("not a packable int8 layer");
    assert!(
        requant.len() == 1 || requant.len() == p.units,
        "one multiplier or one per unit"
    );
    let xw: &mut [u32] = bytemuck::cast_slice_mut(&mut scratch[..p.depth.div_ceil(4)]);
    let (x, y) = (&x[..p.rows * p.depth], &mut y[..p.rows * p.units]);
    crate::qfc::run(vnni, p, x, &packed[..len], &fold[..p.units], requant, y, xw);
}

/// [`fully_connected_i8`] by VPDPBUSD: each input row as unsigned bytes
/// (`x + 128`, in `row`, zero-padded), `Σ (x - zp)·w = Σ (x + 128)·w -
/// (128 + zp)·Σ w`, both sums exact in wrapping `i32`.
#[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
#[allow(clippy::too_many_arguments, reason = "the op's operands")]
fn fully_connected_vnni(
    v: crate::simd_vnni::Vnni,
    p: &QFullyConnected,
    x: &[i8],
    w: &[i8],
    bias: Option<&[i32]>,
    requant: &[[i32; 2]],
    y: &mut [i8],
    row: &mut [u8],
) {
    const UNITS: usize = 64;
    let q = p.out();
    let (mut dot, mut sum) = ([0i32; UNITS], [0i32; UNITS]);
    let fold = 128 + p.x_zp;
    for (xr, yr) in x[..p.rows * p.depth]
        .chunks_exact(p.depth.max(1))
        .zip(y.chunks_exact_mut(p.units.max(1)))
    {
        for (d, &s) in row.iter_mut().zip(xr) {
            *d = (s as u8) ^ 0x80;
        }
        row[p.depth..].fill(0);
        for u0 in (0..p.units).step_by(UNITS) {
            let n = (p.units - u0).min(UNITS);
            v.gemv(row, &w[u0 * p.depth..], p.depth, n, &mut dot, &mut sum);
            for (j, out) in yr[u0..u0 + n].iter_mut().enumerate() {
                let u = u0 + j;
                let acc = dot[j]
                    .wrapping_sub(fold.wrapping_mul(sum[j]))
                    .wrapping_add(bias.map_or(0, |b| b[u]));
                *out = q.store(acc, requant, u);
            }
        }
    }
}

/// Int8 average pooling (TFLite `AVERAGE_POOL_2D`; input and output share
/// scale and zero point): the sum of the window's in-bounds values divided
/// by their count, rounded half away from zero, clamped to
/// `[act_min, act_max]`. A window with no in-bounds value gives `act_min`
/// clamped zero (LiteRT refuses such shapes; the compiler never emits
/// them).
///
/// # Panics
/// If a slice is shorter than its shape.
pub fn avg_pool_i8(p: &Pool2d, act_min: i32, act_max: i32, x: &[i8], y: &mut [i8]) {
    let global = p.kh == p.h
        && p.kw == p.w
        && p.oh == 1
        && p.ow == 1
        && p.pad == [0; 4]
        && p.dilation == [1, 1];
    if global && p.h * p.w > 0 {
        // One window per channel: a plain (vectorised) sum per plane.
        let (lo, hi) = (act_min.max(-128), act_max.min(127));
        let count = (p.h * p.w) as i32;
        for (xc, o) in x[..p.n * p.c * p.h * p.w]
            .chunks_exact(p.h * p.w)
            .zip(y.iter_mut())
        {
            let sum: i32 = xc.iter().map(|&v| i32::from(v)).sum();
            let v = if sum > 0 {
                (sum + count / 2) / count
            } else {
                (sum - count / 2) / count
            };
            *o = sat_i8(v, lo, hi);
        }
        return;
    }
    let step = |(sum, count): (i32, i32), v: i32| (sum + v, count + 1);
    let finish = |(sum, count): (i32, i32)| match count {
        0 => 0,
        _ if sum > 0 => (sum + count / 2) / count,
        _ => (sum - count / 2) / count,
    };
    pool_i8(p, act_min, act_max, x, y, (0, 0), step, finish);
}

/// The int8 pooling skeleton: each window's in-bounds values are folded
/// with `step` from `init`, `finish` gives the result, which is clamped to
/// `[act_min, act_max]` (and int8).
#[allow(clippy::too_many_arguments, reason = "the pooling's parts")]
fn pool_i8<A: Copy>(
    p: &Pool2d,
    act_min: i32,
    act_max: i32,
    x: &[i8],
    y: &mut [i8],
    init: A,
    step: impl Fn(A, i32) -> A,
    finish: impl Fn(A) -> i32,
) {
    let x = &x[..p.n * p.c * p.h * p.w];
    let y = &mut y[..p.n * p.c * p.oh * p.ow];
    let (lo, hi) = (act_min.max(-128), act_max.min(127));
    for (xc, yc) in x
        .chunks_exact((p.h * p.w).max(1))
        .zip(y.chunks_exact_mut((p.oh * p.ow).max(1)))
    {
        for oy in 0..p.oh {
            for ox in 0..p.ow {
                let mut acc = init;
                for r in 0..p.kh {
                    let iy = (oy * p.stride[0] + r * p.dilation[0]).wrapping_sub(p.pad[0]);
                    if iy >= p.h {
                        continue;
                    }
                    for s in 0..p.kw {
                        let ix = (ox * p.stride[1] + s * p.dilation[1]).wrapping_sub(p.pad[1]);
                        if ix < p.w {
                            acc = step(acc, i32::from(xc[iy * p.w + ix]));
                        }
                    }
                }
                yc[oy * p.ow + ox] = sat_i8(finish(acc), lo, hi);
            }
        }
    }
}

/// `y[k] = table[x[k] as u8]`: an int8 elementwise function precomputed
/// for all 256 inputs.
///
/// # Panics
/// If `y` is shorter than `x`.
pub fn lookup_i8(x: &[i8], table: &[i8; 256], y: &mut [i8]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = table[usize::from(v as u8)];
    }
}

/// Int8 softmax over rows of `row` values, as LiteRT computes it on x86:
/// `table[d] = e^(-input_scale·beta·d)` for the distance `d = max - x`
/// (computed once by the compiler, in f32, and stored: every runtime
/// reads the same 256 values), the row sum accumulated in f32 in index
/// order, `inv = 1 / (sum · output_scale)`, each output
/// `round_half_away(table[d] · inv) + y_zp` saturated to int8. The f32
/// operations are plain IEEE multiplies and adds (Rust never fuses them),
/// so the bytes are the same on every target.
///
/// # Panics
/// If `row` is 0 or does not divide `x.len()`, `y` is shorter than `x`, or
/// `table` has fewer than 256 entries.
pub fn softmax_i8(x: &[i8], row: usize, table: &[f32], y_scale: f32, y_zp: i32, y: &mut [i8]) {
    assert!(row > 0 && x.len().is_multiple_of(row) && y.len() >= x.len() && table.len() >= 256);
    for (xr, yr) in x.chunks_exact(row).zip(y.chunks_exact_mut(row)) {
        let max = xr.iter().copied().max().map_or(0, i32::from);
        // `max - v` is in 0..=255 for int8 values.
        let t = |v: i8| table[(max - i32::from(v)) as usize];
        let mut sum = 0.0f32;
        for &v in xr {
            sum += t(v);
        }
        let inv = 1.0 / (sum * y_scale);
        for (&v, out) in xr.iter().zip(yr.iter_mut()) {
            let q = libm::roundf(t(v) * inv) as i32;
            *out = q.saturating_add(y_zp).clamp(-128, 127) as i8;
        }
    }
}

/// Per-tensor f32 → int8 quantization with ONNX `QuantizeLinear`
/// semantics: `round_half_even(x / scale) + zp`, saturated; NaN gives
/// `zp`. The rounding adds and subtracts 1.5·2²³ (exact IEEE
/// round-to-nearest-even for |v| ≤ 2²², larger values saturate anyway), so
/// the loop vectorizes and matches [`crate::math::round_half_even`].
pub fn quantize_i8(x: &[f32], scale: f32, zp: i32, y: &mut [i8]) {
    const MAGIC: f32 = 12_582_912.0;
    const LIMIT: f32 = 4_194_304.0;
    for (o, &v) in y.iter_mut().zip(x) {
        let q = (v / scale).clamp(-LIMIT, LIMIT);
        let r = (q + MAGIC) - MAGIC;
        *o = (r as i32 + zp).clamp(-128, 127) as i8;
    }
}

/// Per-tensor int8 → f32: `(q - zp) · scale`.
pub fn dequantize_i8(x: &[i8], scale: f32, zp: i32, y: &mut [f32]) {
    for (o, &q) in y.iter_mut().zip(x) {
        *o = (i32::from(q) - zp) as f32 * scale;
    }
}

/// Int8 max pooling (TFLite `MAX_POOL_2D`, NCHW here): the largest
/// in-bounds value of each window, clamped to `[act_min, act_max]`. Input
/// and output share their quantization, so no requantization. A window
/// with no in-bounds value gives `act_min` clamped to int8.
///
/// # Panics
/// If a slice is shorter than its shape.
pub fn max_pool_i8(p: &Pool2d, act_min: i32, act_max: i32, x: &[i8], y: &mut [i8]) {
    pool_i8(p, act_min, act_max, x, y, i32::MIN, i32::max, |m| m);
}

/// Shape of a dynamically quantized fully connected layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DynFullyConnected {
    /// Rows of the input (batch × positions).
    pub rows: usize,
    /// Input features.
    pub depth: usize,
    /// Output features.
    pub units: usize,
}

/// Dynamic-range quantized fully connected layer (weights int8 symmetric
/// per unit, stored; activations quantized per call): each input row is
/// quantized to int8 asymmetrically over its own range (which always
/// includes 0, so zero stays exact), `acc = Σ (x_q - zp)·w` in int32, and
/// `y = acc · x_scale · w_scale[u] + bias[u]` in f32. Non-finite inputs make
/// the row's outputs NaN (the engine refuses them before unless told to
/// allow them). `scratch` holds `depth` values.
///
/// # Panics
/// If a slice is shorter than its shape.
pub fn dyn_fully_connected(
    p: &DynFullyConnected,
    x: &[f32],
    w: &[i8],
    w_scale: &[f32],
    bias: Option<&[f32]>,
    scratch: &mut [i32],
    y: &mut [f32],
) {
    let (rows, depth, units) = (p.rows, p.depth, p.units);
    let (x, w, y) = (
        &x[..rows * depth],
        &w[..units * depth],
        &mut y[..rows * units],
    );
    let (ws, xq) = (&w_scale[..units], &mut scratch[..depth]);
    for (xr, yr) in x.chunks_exact(depth.max(1)).zip(y.chunks_exact_mut(units)) {
        let (lo, hi) = xr
            .iter()
            .fold((0.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
        if !(lo.is_finite() && hi.is_finite()) {
            yr.fill(f32::NAN);
            continue;
        }
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        let zp = libm::roundf(-128.0 - lo / scale).clamp(-128.0, 127.0) as i32;
        for (q, &v) in xq.iter_mut().zip(xr) {
            let v = (libm::roundf(v / scale) as i32 + zp).clamp(-128, 127);
            *q = v - zp;
        }
        for (u, out) in yr.iter_mut().enumerate() {
            let wu = &w[u * depth..(u + 1) * depth];
            let acc: i32 = xq
                .iter()
                .zip(wu)
                .fold(0i32, |a, (&q, &wv)| a.wrapping_add(q * i32::from(wv)));
            *out = acc as f32 * (scale * ws[u]) + bias.map_or(0.0, |b| b[u]);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `n` pseudo-random bytes (xorshift) from `seed`.
    pub(crate) fn bytes(n: usize, seed: u64) -> std::vec::Vec<i8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as i8
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// The direct integer paths (portable loops, their AVX2 build,
        /// AVX-512 VNNI where the CPU has it) give the reference's bytes for
        /// convolutions of every shape class (grouped, depthwise, strided
        /// alike or unlike per axis, dilated, padded asymmetrically, 1-wide, several tiles of positions and of
        /// channels), and the FC paths for the same operands.
        #[test]
        fn fast_paths_match_reference(
            (c, m, group) in prop_oneof![Just((3usize, 4usize, 1usize)), Just((4, 4, 4)), Just((8, 8, 8)), Just((20, 20, 20)), Just((4, 8, 2)), Just((16, 6, 1)), Just((64, 3, 1)), Just((5, 9, 1)), Just((2, 4, 2)), Just((7, 7, 7))],
            (h, w) in prop_oneof![(1usize..=9, 1usize..=9), (10usize..=20, 1usize..=3), (1usize..=2, 60usize..=80), (1usize..=2, 250usize..=600)],
            (kh, kw, dil) in (1usize..=3, 1usize..=3, 1usize..=2),
            stride in prop_oneof![Just([1usize, 1usize]), Just([2, 2]), Just([1, 2]), Just([2, 1]), Just([3, 2]), Just([2, 3])],
            pad in prop_oneof![Just([0usize; 4]), Just([1; 4]), Just([0, 1, 2, 0]), Just([1, 0, 2, 0])],
            x_zp in -128i32..=127,
            weight_scale in prop_oneof![Just(1i32), Just(8), Just(127)],
            // Multipliers below 1 (the requantization's fast loop) and
            // above (its general one), any output zero point.
            (rq_scale, y_zp) in (prop_oneof![Just(0.001f64), Just(0.04), Just(1.7)], -128i32..=127),
            seed in any::<u64>(),
        ) {
            let span = |len: usize, k: usize, pads: usize, s: usize| (len + pads).checked_sub((k - 1) * dil + 1).map(|v| v / s + 1);
            let (Some(oh), Some(ow)) = (span(h, kh, pad[0] + pad[2], stride[0]), span(w, kw, pad[1] + pad[3], stride[1])) else { return Ok(()) };
            let p = Conv2d { n: 2, c, h, w, m, kh, kw, oh, ow, group, stride, dilation: [dil; 2], pad };
            let q = QOut { x_zp, y_zp, act_min: -100, act_max: 120 };
            let x = bytes(p.n * c * h * w, seed);
            let wt: std::vec::Vec<i8> = bytes(m * (c / group) * kh * kw, seed ^ 9).iter().map(|&v| (i32::from(v) * weight_scale / 127) as i8).collect();
            let bias: std::vec::Vec<i32> = (0..m as i32).map(|i| i * 1000 - 3000).collect();
            let rq: std::vec::Vec<[i32; 2]> = (0..m).map(|i| { let mm = Multiplier::new(rq_scale * (i + 1) as f64).unwrap(); [mm.mantissa, mm.shift] }).collect();
            let mut want = std::vec![0i8; p.n * m * oh * ow];
            conv2d_i8(&p, &q, &x, &wt, Some(&bias), &rq, &mut want);
            for isa in crate::qconv::Isa::all() {
                let mut got = std::vec![0i8; want.len()];
                let mut scratch = std::vec![f32::NAN; conv2d_i8_scratch_len(&p)];
                conv2d_i8_direct(isa, &p, &q, &x, &wt, Some(&bias), &rq, &mut got, &mut scratch);
                prop_assert_eq!(&got, &want, "{:?}", isa);
                // The least scratch: depthwise layers take the lean strip path.
                let mut lean = std::vec![f32::NAN; conv2d_i8_min_scratch_len(&p)];
                got.fill(0);
                conv2d_i8_direct(isa, &p, &q, &x, &wt, Some(&bias), &rq, &mut got, &mut lean);
                prop_assert_eq!(&got, &want, "{:?} lean scratch", isa);
                conv2d_i8(&p, &q, &x, &wt, None, &rq[..1], &mut want);
                conv2d_i8_direct(isa, &p, &q, &x, &wt, None, &rq[..1], &mut got, &mut scratch);
                prop_assert_eq!(&got, &want, "{:?} without bias", isa);
                conv2d_i8(&p, &q, &x, &wt, Some(&bias), &rq, &mut want);
                // Weights packed ahead of time.
                if let Some(len) = conv2d_i8_packable(&p, x_zp) {
                    let (mut packed, mut fold) = (std::vec![0i8; len], std::vec![0i32; m]);
                    conv2d_i8_pack(&p, x_zp, &wt, Some(&bias), &mut packed, &mut fold);
                    let mut scratch = std::vec![f32::NAN; conv2d_i8_packed_scratch_len(&p)];
                    conv2d_i8_packed_on(isa, &p, &q, &x, &packed, &fold, &rq, &mut got, &mut scratch);
                    prop_assert_eq!(&got, &want, "{:?} packed", isa);
                } else {
                    prop_assert!(group == c && m == c, "only depthwise is not packable here");
                }
            }
            // The same operands as a fully connected layer.
            let f = QFullyConnected { rows: p.n, depth: c * h * w, units: m, x_zp, y_zp: 3, act_min: -100, act_max: 120 };
            let wfc = bytes(m * f.depth, seed ^ 5);
            let mut want = std::vec![0i8; p.n * m];
            fully_connected_i8(&f, &x, &wfc, Some(&bias), &rq, &mut want);
            for vnni in [None, crate::simd_vnni::Vnni::detect()] {
                let mut got = std::vec![0i8; want.len()];
                let mut scratch = std::vec![f32::NAN; fully_connected_i8_scratch_len(&f)];
                fully_connected_i8_on(vnni, &f, &x, &wfc, Some(&bias), &rq, &mut got, &mut scratch);
                prop_assert_eq!(&got, &want, "vnni {:?}", vnni);
                // One row: the integer GEMV path.
                let f1 = QFullyConnected { rows: 1, ..f };
                fully_connected_i8(&f1, &x, &wfc, Some(&bias), &rq, &mut want);
                fully_connected_i8_on(vnni, &f1, &x, &wfc, Some(&bias), &rq, &mut got, &mut scratch);
                prop_assert_eq!(&got[..m], &want[..m], "one row, vnni {:?}", vnni);
                fully_connected_i8(&f, &x, &wfc, Some(&bias), &rq, &mut want);
                // Packed ahead of time, with and without a bias.
                for b in [Some(&bias[..]), None] {
                    fully_connected_i8(&f, &x, &wfc, b, &rq, &mut want);
                    let len = fully_connected_i8_packable(&f).unwrap();
                    let (mut packed, mut fold) = (std::vec![0i8; len], std::vec![0i32; m]);
                    fully_connected_i8_pack(&f, &wfc, b, &mut packed, &mut fold);
                    let mut scratch = std::vec![f32::NAN; fully_connected_i8_packed_scratch_len(&f)];
                    fully_connected_i8_packed_on(vnni, &f, &x, &packed, &fold, &rq, &mut got, &mut scratch);
                    prop_assert_eq!(&got, &want, "packed, vnni {:?}", vnni);
                }
                fully_connected_i8(&f, &x, &wfc, Some(&bias), &rq, &mut want);
            }
        }
    }

    #[test]
    fn fully_connected_by_hand() {
        // x = [3, -1] with zp 1 -> [2, -2]; w rows [1, 2] and [-3, 4].
        // acc0 = 2 - 4 + bias 10 = 8; acc1 = -6 - 8 + 0 = -14.
        // Multiplier 0.5: 4 and -7; + y_zp 5: 9 and -2.
        let p = QFullyConnected {
            rows: 1,
            depth: 2,
            units: 2,
            x_zp: 1,
            y_zp: 5,
            act_min: -128,
            act_max: 127,
        };
        let pair = |m: Multiplier| [m.mantissa, m.shift];
        let half = pair(Multiplier::new(0.5).unwrap());
        let mut y = [0i8; 2];
        fully_connected_i8(
            &p,
            &[3, -1],
            &[1, 2, -3, 4],
            Some(&[10, 0]),
            &[half],
            &mut y,
        );
        assert_eq!(y, [9, -2]);
        // Per-unit multipliers and a ReLU-style clamp at the zero point.
        let q = QFullyConnected { act_min: 5, ..p };
        let m = [half, pair(Multiplier::new(0.25).unwrap())];
        fully_connected_i8(&q, &[3, -1], &[1, 2, -3, 4], Some(&[10, 0]), &m, &mut y);
        // acc1 * 0.25 = -3.5 -> -3 (ties up), + 5 = 2, clamped to 5.
        assert_eq!(y, [9, 5]);
    }

    #[test]
    fn softmax_matches_float_definition() {
        // Scale 0.1: table[d] = e^(-0.1 d). Output scale 1/256, zp -128 (the
        // TFLite convention), so y = round(256 p) - 128.
        let table: std::vec::Vec<f32> = (0..256).map(|d| (-0.1f32 * d as f32).exp()).collect();
        let x = [10i8, 0, -20, 10, 127, -128];
        let mut y = [0i8; 6];
        softmax_i8(&x, 3, &table, 1.0 / 256.0, -128, &mut y);
        for (xr, yr) in x.chunks(3).zip(y.chunks(3)) {
            let e: std::vec::Vec<f64> = xr.iter().map(|&v| (0.1 * v as f64).exp()).collect();
            let s: f64 = e.iter().sum();
            for (ev, &got) in e.iter().zip(yr) {
                let want = ((ev / s * 256.0).round() - 128.0).clamp(-128.0, 127.0);
                assert!((got as f64 - want).abs() <= 1.0, "{xr:?}: {got} vs {want}");
            }
        }
        // A row dominated by one value saturates at 127 and 0 maps to -128.
        assert_eq!(y[4], 127);
        assert_eq!(y[5], -128);
    }

    #[test]
    fn conv_pads_with_the_zero_point() {
        // 1 channel 2x2 input, 3x3 kernel of ones, pad 1: each output sums
        // the in-bounds neighbours of (x - zp). x - zp = [1, 2, 3, 4].
        let p = Conv2d {
            n: 1,
            c: 1,
            h: 2,
            w: 2,
            m: 1,
            kh: 3,
            kw: 3,
            oh: 2,
            ow: 2,
            group: 1,
            stride: [1, 1],
            dilation: [1, 1],
            pad: [1, 1, 1, 1],
        };
        let q = QOut {
            x_zp: -3,
            y_zp: 0,
            act_min: -128,
            act_max: 127,
        };
        let one = Multiplier::new(0.5).unwrap();
        let mut y = [0i8; 4];
        conv2d_i8(
            &p,
            &q,
            &[-2, -1, 0, 1],
            &[2; 9],
            None,
            &[[one.mantissa, one.shift]],
            &mut y,
        );
        // Every 3x3 window covers all four inputs: 2·(1+2+3+4)·0.5 = 10.
        assert_eq!(y, [10; 4]);
        // Depthwise (group = c = 2, one filter each), stride 2, no padding.
        let d = Conv2d {
            c: 2,
            m: 2,
            kh: 1,
            kw: 1,
            oh: 1,
            ow: 1,
            group: 2,
            stride: [2, 2],
            pad: [0; 4],
            ..p
        };
        let x = [5i8, 0, 0, 0, 7, 0, 0, 0];
        let mut y = [0i8; 2];
        conv2d_i8(
            &d,
            &QOut { x_zp: 1, ..q },
            &x,
            &[3, -2],
            Some(&[1, 0]),
            &[[one.mantissa, one.shift]],
            &mut y,
        );
        // (5-1)·3 + 1 = 13 → 6.5 → 7; (7-1)·-2 = -12 → -6.
        assert_eq!(y, [7, -6]);
    }

    #[test]
    fn avg_pool_rounds_half_away_from_zero() {
        let p = Pool2d {
            n: 1,
            c: 2,
            h: 1,
            w: 4,
            oh: 1,
            ow: 2,
            kh: 1,
            kw: 2,
            stride: [1, 2],
            dilation: [1, 1],
            pad: [0; 4],
        };
        let mut y = [0i8; 4];
        // (1 + 2) / 2 = 1.5 → 2; (-1 - 2) / 2 = -1.5 → -2; (4 + 4) / 2 = 4;
        // (-128 + 127) / 2 = -0.5 → -1; then a clamp at -1 lifts nothing.
        avg_pool_i8(&p, -1, 127, &[1, 2, -1, -2, 4, 4, -128, 127], &mut y);
        assert_eq!(y, [2, -1, 4, -1]);
    }

    /// Packed fully connected layers across several 4-block groups and
    /// unit/depth tails give the reference's bytes on every path.
    #[test]
    fn packed_fc_matches_reference_on_wide_layers() {
        for (rows, depth, units) in [(1, 37, 70), (3, 128, 129), (2, 5, 1), (1, 640, 128)] {
            let f = QFullyConnected {
                rows,
                depth,
                units,
                x_zp: -7,
                y_zp: 2,
                act_min: -128,
                act_max: 127,
            };
            let x = bytes(rows * depth, 11);
            let w = bytes(units * depth, 12);
            let bias: std::vec::Vec<i32> = (0..units as i32).map(|i| i * 37 - 900).collect();
            let rq: std::vec::Vec<[i32; 2]> = (0..units)
                .map(|i| {
                    let m = Multiplier::new(0.0003 * (i + 1) as f64).unwrap();
                    [m.mantissa, m.shift]
                })
                .collect();
            let mut want = std::vec![0i8; rows * units];
            fully_connected_i8(&f, &x, &w, Some(&bias), &rq, &mut want);
            let len = fully_connected_i8_packable(&f).unwrap();
            let (mut packed, mut fold) = (std::vec![0i8; len], std::vec![0i32; units]);
            fully_connected_i8_pack(&f, &w, Some(&bias), &mut packed, &mut fold);
            for vnni in [None, crate::simd_vnni::Vnni::detect()] {
                let mut got = std::vec![0i8; rows * units];
                let mut scratch = std::vec![f32::NAN; fully_connected_i8_packed_scratch_len(&f)];
                fully_connected_i8_packed_on(
                    vnni,
                    &f,
                    &x,
                    &packed,
                    &fold,
                    &rq,
                    &mut got,
                    &mut scratch,
                );
                assert_eq!(got, want, "{rows}x{depth}x{units}, vnni {vnni:?}");
            }
        }
    }

    /// The global-pooling shortcut gives the generic window's bytes.
    #[test]
    fn global_avg_pool_matches_the_window_loop() {
        let p = Pool2d {
            n: 2,
            c: 3,
            h: 25,
            w: 5,
            oh: 1,
            ow: 1,
            kh: 25,
            kw: 5,
            stride: [1, 1],
            dilation: [1, 1],
            pad: [0; 4],
        };
        for seed in 1..20u64 {
            let x = bytes(p.n * p.c * p.h * p.w, seed);
            let (mut got, mut want) = ([0i8; 6], [0i8; 6]);
            avg_pool_i8(&p, -100, 127, &x, &mut got);
            let step = |(sum, count): (i32, i32), v: i32| (sum + v, count + 1);
            let finish = |(sum, count): (i32, i32)| {
                if sum > 0 {
                    (sum + count / 2) / count
                } else {
                    (sum - count / 2) / count
                }
            };
            pool_i8(&p, -100, 127, &x, &mut want, (0, 0), step, finish);
            assert_eq!(got, want, "seed {seed}");
        }
    }

    #[test]
    fn add_rescales_both_inputs() {
        // a: scale 0.5, zp 0; b: scale 0.25, zp 10; y: scale 1, zp -5.
        // TFLite's multipliers: twice = 1.0; a 0.5, b 0.25, y 1 / 2^20.
        let pair = |r: f64| {
            let m = Multiplier::new(r).unwrap();
            [m.mantissa, m.shift]
        };
        let q = QAdd {
            a_zp: 0,
            b_zp: 10,
            y_zp: -5,
            a_rq: pair(0.5),
            b_rq: pair(0.25),
            y_rq: pair(1.0 / f64::from(1u32 << ADD_LEFT_SHIFT)),
            act_min: -128,
            act_max: 127,
        };
        let mut y = [0i8; 3];
        // 4·0.5 + (18-10)·0.25 = 4 → -1; 127·0.5 + (127-10)·0.25 = 92.75
        // → 93 - 5 = 88; -128·0.5 + (-128-10)·0.25 = -98.5 → -98 (ties up)
        // - 5 = -103.
        add_i8(&q, &[4, 127, -128], &[18, 127, -128], &mut y);
        assert_eq!(y, [-1, 88, -103]);
    }

    proptest! {
        /// The table-driven ADD gives TFLite's per-element arithmetic for
        /// any zero points, multipliers (above 1 too) and clamps.
        #[test]
        fn add_tables_match_elementwise_formula(
            zps in (-128i32..=127, -128i32..=127, -128i32..=127),
            // Importer-made multipliers (inputs below 1, output tiny) and
            // hand-built ones whose sums saturate (the general loop).
            reals in prop_oneof![
                (1e-6f64..1.0, 1e-6f64..1.0, 1e-9f64..1e-3),
                (1e-6f64..16.0, 1e-6f64..16.0, 1e-9f64..4.0),
            ],
            (act_min, act_max) in (-128i32..=0, 0i32..=127),
            seed in any::<u64>(),
        ) {
            let pair = |r: f64| {
                let m = Multiplier::new(r).unwrap();
                [m.mantissa, m.shift]
            };
            let q = QAdd {
                a_zp: zps.0,
                b_zp: zps.1,
                y_zp: zps.2,
                a_rq: pair(reals.0),
                b_rq: pair(reals.1),
                y_rq: pair(reals.2),
                act_min,
                act_max,
            };
            let (a, b) = (bytes(700, seed), bytes(700, seed ^ 3));
            let mut got = std::vec![0i8; 700];
            add_i8(&q, &a, &b, &mut got);
            let m = |[mantissa, shift]: [i32; 2]| Multiplier { mantissa, shift };
            for ((&av, &bv), &g) in a.iter().zip(&b).zip(&got) {
                let sa = m(q.a_rq).apply((i32::from(av) - q.a_zp) << ADD_LEFT_SHIFT);
                let sb = m(q.b_rq).apply((i32::from(bv) - q.b_zp) << ADD_LEFT_SHIFT);
                let v = m(q.y_rq).apply(sa.saturating_add(sb)).saturating_add(q.y_zp);
                prop_assert_eq!(g, v.clamp(act_min, act_max) as i8, "a {} b {}", av, bv);
            }
        }
    }

    #[test]
    fn empty_activation_range_does_not_panic() {
        // A malformed artifact can carry act_min > act_max (the engine
        // refuses it; the kernels must not panic either way).
        assert_eq!(sat_i8(5, 10, -10), -10);
        assert_eq!(sat_i8(1000, -128, 127), 127);
        assert_eq!(sat_i8(0, 200, -300), -128);
    }

    #[test]
    fn saturates_to_int8() {
        let p = QFullyConnected {
            rows: 2,
            depth: 1,
            units: 1,
            x_zp: 0,
            y_zp: 0,
            act_min: -128,
            act_max: 127,
        };
        let mut y = [0i8; 2];
        let m = Multiplier::new(0.9).unwrap();
        fully_connected_i8(
            &p,
            &[127, -128],
            &[127],
            None,
            &[[m.mantissa, m.shift]],
            &mut y,
        );
        assert_eq!(y, [127, -128]);
    }

    #[test]
    fn max_pool_i8_by_hand() {
        // One 2x3 plane, 2x2 windows, stride 1, padding 1 on the right.
        let p = Pool2d {
            n: 1,
            c: 1,
            h: 2,
            w: 3,
            oh: 1,
            ow: 3,
            kh: 2,
            kw: 2,
            stride: [1, 1],
            dilation: [1, 1],
            pad: [0, 0, 0, 1],
        };
        let x = [-5i8, 7, -128, 3, -9, 2];
        let mut y = [0i8; 3];
        max_pool_i8(&p, -128, 127, &x, &mut y);
        assert_eq!(y, [7, 7, 2]);
        max_pool_i8(&p, -128, 5, &x, &mut y);
        assert_eq!(y, [5, 5, 2]);
    }

    #[test]
    fn dyn_fully_connected_close_to_f32() {
        // Quantization error of one row is at most half a step per input,
        // so |y - y_f32| <= 0.5 · step · Σ|w_real|.
        let (rows, depth, units) = (3, 37, 5);
        let x: std::vec::Vec<f32> = bytes(rows * depth, 3)
            .iter()
            .map(|&v| f32::from(v) / 37.0)
            .collect();
        let w = bytes(units * depth, 4);
        let ws: std::vec::Vec<f32> = (0..units).map(|u| 0.01 * (u + 1) as f32).collect();
        let b: std::vec::Vec<f32> = (0..units).map(|u| u as f32 - 2.0).collect();
        let p = DynFullyConnected { rows, depth, units };
        let mut y = std::vec![0.0f32; rows * units];
        dyn_fully_connected(&p, &x, &w, &ws, Some(&b), &mut std::vec![0; depth], &mut y);
        for r in 0..rows {
            let xr = &x[r * depth..(r + 1) * depth];
            let (lo, hi) = xr
                .iter()
                .fold((0.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
            let step = (hi - lo) / 255.0;
            for u in 0..units {
                let wr: std::vec::Vec<f32> = w[u * depth..(u + 1) * depth]
                    .iter()
                    .map(|&v| f32::from(v) * ws[u])
                    .collect();
                let exact: f32 = xr.iter().zip(&wr).map(|(a, b)| a * b).sum::<f32>() + b[u];
                let bound = 0.5 * step * wr.iter().map(|v| v.abs()).sum::<f32>() + 1e-4;
                assert!(
                    (y[r * units + u] - exact).abs() <= bound,
                    "row {r} unit {u}: {} vs {exact}",
                    y[r * units + u]
                );
            }
        }
        // A non-finite row gives NaN outputs, never a panic.
        let mut xn = x.clone();
        xn[0] = f32::INFINITY;
        dyn_fully_connected(&p, &xn, &w, &ws, None, &mut std::vec![0; depth], &mut y);
        assert!(y[..units].iter().all(|v| v.is_nan()) && y[units..].iter().all(|v| v.is_finite()));
    }

    #[test]
    fn quantize_i8_matches_reference_rounding() {
        let scale = 0.25f32;
        let mut vals: std::vec::Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.0625).collect();
        vals.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e30,
            -1e30,
            0.125,
            -0.125,
            0.375,
        ]);
        let mut y = std::vec![0i8; vals.len()];
        quantize_i8(&vals, scale, -3, &mut y);
        for (&v, &q) in vals.iter().zip(&y) {
            let r = crate::math::round_half_even(v / scale);
            let want = if r.is_nan() {
                -3
            } else {
                (r as i64).saturating_add(-3).clamp(-128, 127)
            };
            assert_eq!(i64::from(q), want, "{v}");
        }
        let mut back = std::vec![0f32; y.len()];
        dequantize_i8(&y, scale, -3, &mut back);
        assert_eq!(back[2000], 0.0 * scale + 0.0);
    }
}

#[cfg(test)]
mod hybrid_tests {
    use super::*;

    /// A 1×1 convolution worked by hand: x = [1, -0.5, 0.25, 0] quantizes
    /// with s = 1/127 to [127, -64, 32, 0] (-63.5 rounds away from zero);
    /// w = 2 at scale 0.5, bias 0.1, clamped at 0 (ReLU).
    #[test]
    fn hybrid_conv_by_hand() {
        let p = Conv2d {
            n: 2,
            c: 1,
            h: 2,
            w: 2,
            m: 1,
            kh: 1,
            kw: 1,
            oh: 2,
            ow: 2,
            group: 1,
            stride: [1, 1],
            dilation: [1, 1],
            pad: [0; 4],
        };
        // The second batch entry is all zeros: scale 1, output = bias.
        let x = [1.0, -0.5, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0];
        let mut y = [f32::NAN; 8];
        let mut scratch = [0i8; 4];
        hybrid_conv2d(
            &p,
            &x,
            &[2],
            0.5,
            Some(&[0.1]),
            [0.0, f32::INFINITY],
            &mut y,
            &mut scratch,
        );
        let s = 1.0f32 / 127.0 * 0.5;
        let want = [
            254.0 * s + 0.1,
            0.0,
            64.0 * s + 0.1,
            0.1,
            0.1,
            0.1,
            0.1,
            0.1,
        ];
        for (g, w) in y.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{y:?} vs {want:?}");
        }
    }
}
