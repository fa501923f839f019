//! Int8 kernels for microcontrollers: no scratch memory and little code,
//! at some speed. The same bytes as the references in [`crate::quant`]
//! (exact integer sums, in wrapping `i32` as TFLite accumulates), so an
//! artifact gives the same outputs whichever path runs it.
//!
//! [`crate::quant::conv2d_i8_fast`] and
//! [`crate::quant::fully_connected_i8_fast`] take these paths with the
//! `compact` feature, which leaves the other paths out of the binary
//! (firmware built for flash size; a compile for a microcontroller gives
//! these layers no scratch, which other builds answer with the
//! references).

use crate::conv::{Conv2d, out_range};
use crate::quant::QOut;

/// [`crate::quant::conv2d_i8`] with no scratch: pointwise layers (1×1,
/// stride 1, no padding) four positions at a time, the rest one output at
/// a time over the taps that land inside the input.
///
/// # Panics
/// As [`crate::quant::conv2d_i8`].
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
        p.group > 0
            && p.c.is_multiple_of(p.group)
            && p.m.is_multiple_of(p.group)
            && (requant.len() == 1 || requant.len() == p.m),
        "groups divide the channels; one multiplier or one per channel"
    );
    let (cg, mg) = (p.c / p.group, p.m / p.group);
    let (hw, taps, plane) = (p.h * p.w, cg * p.kh * p.kw, p.oh * p.ow);
    let x = &x[..p.n * p.c * hw];
    let w = &w[..p.m * taps];
    let y = &mut y[..p.n * p.m * plane];
    let bias = bias.map(|b| &b[..p.m]);
    let pointwise = p.kh == 1
        && p.kw == 1
        && p.stride == [1, 1]
        && p.pad == [0; 4]
        && (p.oh, p.ow) == (p.h, p.w);
    for (i, yo) in y.chunks_exact_mut(plane.max(1)).enumerate() {
        let (b, oc) = (i / p.m, i % p.m);
        let wk = &w[oc * taps..][..taps];
        let xg = &x[(b * p.c + oc / mg * cg) * hw..][..cg * hw];
        let b0 = bias.map_or(0, |v| v[oc]);
        if pointwise {
            pointwise_channel(xg, wk, hw, q, b0, requant, oc, yo);
        } else {
            general_channel(p, xg, wk, q, b0, requant, oc, yo);
        }
    }
}

/// One output channel of a pointwise convolution: `Σ_ci w·x` over four
/// positions at a time, the zero point folded out as `x_zp·Σw`.
// Out of line: inlined into the engine's dispatch its sums spill.
#[inline(never)]
#[allow(clippy::too_many_arguments, reason = "the op's operands")]
fn pointwise_channel(
    xg: &[i8],
    wk: &[i8],
    hw: usize,
    q: &QOut,
    bias: i32,
    requant: &[[i32; 2]],
    oc: usize,
    yo: &mut [i8],
) {
    let wsum = wk.iter().fold(0i32, |s, &v| s.wrapping_add(i32::from(v)));
    let base = bias.wrapping_sub(q.x_zp.wrapping_mul(wsum));
    // Indexing, not iterator adapters, and the four sums unrolled by hand:
    // firmware builds at `opt-level = "z"`, which neither inlines the
    // adapters nor unrolls loops.
    let quads = hw / 4 * 4;
    let mut px = 0;
    while px < quads {
        let [a0, a1, a2, a3] = pointwise_quad(xg, wk, hw, px, base);
        let out = &mut yo[px..px + 4];
        out[0] = q.store(a0, requant, oc);
        out[1] = q.store(a1, requant, oc);
        out[2] = q.store(a2, requant, oc);
        out[3] = q.store(a3, requant, oc);
        px += 4;
    }
    while px < hw {
        let (mut acc, mut off) = (base, px);
        for &wv in wk {
            acc = acc.wrapping_add(i32::from(xg[off]) * i32::from(wv));
            off += hw;
        }
        yo[px] = q.store(acc, requant, oc);
        px += 1;
    }
}

/// `base + Σ_ci w[ci]·x[ci·hw + px + k]` for `k` in 0..4.
#[cfg(not(all(feature = "dsp", target_arch = "arm")))]
use portable_quad as pointwise_quad;

/// See `pointwise_quad`.
fn portable_quad(xg: &[i8], wk: &[i8], hw: usize, px: usize, base: i32) -> [i32; 4] {
    let (mut a0, mut a1, mut a2, mut a3) = (base, base, base, base);
    let mut off = px;
    for &wv in wk {
        let wv = i32::from(wv);
        let xs = &xg[off..off + 4];
        a0 = a0.wrapping_add(i32::from(xs[0]) * wv);
        a1 = a1.wrapping_add(i32::from(xs[1]) * wv);
        a2 = a2.wrapping_add(i32::from(xs[2]) * wv);
        a3 = a3.wrapping_add(i32::from(xs[3]) * wv);
        off += hw;
    }
    [a0, a1, a2, a3]
}

#[cfg(all(feature = "dsp", target_arch = "arm"))]
use dsp::pointwise_quad;

/// `(Σ x·w, Σ w)` over the common length, in wrapping `i32`.
#[cfg(not(all(feature = "dsp", target_arch = "arm")))]
use portable_dot as dot;

/// See `dot`.
fn portable_dot(x: &[i8], w: &[i8]) -> (i32, i32) {
    let (mut xw, mut ws) = (0i32, 0i32);
    for (&xv, &wv) in x.iter().zip(w) {
        xw = xw.wrapping_add(i32::from(xv) * i32::from(wv));
        ws = ws.wrapping_add(i32::from(wv));
    }
    (xw, ws)
}

#[cfg(all(feature = "dsp", target_arch = "arm"))]
use dsp::dot;

/// Runs the DSP kernels against the portable ones on the target, over
/// pseudo-random operands of every length up to 67 (odd and even: the
/// pairwise and four-lane tails) and extreme values; returns how many
/// results differed (0 when bit-exact). The firmware demo runs it with
/// `cargo xtask firmware --dsp-check`.
#[cfg(all(feature = "dsp", target_arch = "arm"))]
pub fn dsp_self_check() -> usize {
    let mut s = 0x9E37_79B9u32;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s as i8
    };
    let (mut x, mut w) = ([0i8; 67 * 5], [0i8; 67]);
    let mut bad = 0;
    for len in 0..=67 {
        for round in 0..3 {
            for v in x.iter_mut() {
                *v = if round == 0 { -128 } else { next() };
            }
            for v in w.iter_mut() {
                *v = if round == 0 { -128 } else { next() };
            }
            let (x1, w1) = (&x[..len], &w[..len]);
            bad += usize::from(dsp::dot(x1, w1) != portable_dot(x1, w1));
            let hw = 5;
            let rows = &x[..(len * hw).max(4)];
            let got = dsp::pointwise_quad(rows, w1, hw, 1, 7);
            bad += usize::from(got != portable_quad(rows, w1, hw, 1, 7));
        }
    }
    bad
}

/// [`crate::quant::fully_connected_i8`] with no scratch: one dot product
/// per output (the zero point folded out as `x_zp·Σw`), on Cortex-M4/M7
/// with the `dsp` feature two multiply-accumulates per instruction.
///
/// # Panics
/// As [`crate::quant::fully_connected_i8`].
pub fn fully_connected_i8(
    p: &crate::quant::QFullyConnected,
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
    let q = QOut {
        x_zp: p.x_zp,
        y_zp: p.y_zp,
        act_min: p.act_min,
        act_max: p.act_max,
    };
    let (x, w) = (&x[..p.rows * p.depth], &w[..p.units * p.depth]);
    let y = &mut y[..p.rows * p.units];
    let bias = bias.map(|b| &b[..p.units]);
    for (xr, yr) in x
        .chunks_exact(p.depth.max(1))
        .zip(y.chunks_exact_mut(p.units.max(1)))
    {
        for (u, (out, wr)) in yr
            .iter_mut()
            .zip(w.chunks_exact(p.depth.max(1)))
            .enumerate()
        {
            let (xw, ws) = dot(xr, wr);
            let acc = bias
                .map_or(0, |b| b[u])
                .wrapping_add(xw)
                .wrapping_sub(q.x_zp.wrapping_mul(ws));
            *out = q.store(acc, requant, u);
        }
    }
}

/// The ARMv7E-M DSP extension (Cortex-M4/M7): `SXTB16` widens two int8
/// lanes to int16, `SMLAD` adds two 16×16 products to an accumulator
/// (wrapping, as the references add). Only with the `dsp` feature on an
/// Arm target; the QEMU firmware test checks the outputs against the
/// native (scalar) runtime bit for bit.
#[cfg(all(feature = "dsp", target_arch = "arm"))]
#[allow(unsafe_code, reason = "inline assembly for the DSP instructions")]
mod dsp {
    use core::arch::asm;

    /// Four bytes as a little-endian word (one unaligned load on ARMv7-M).
    #[inline(always)]
    fn word(b: &[i8]) -> u32 {
        u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
    }

    /// See the portable `pointwise_quad`: input channels two at a time,
    /// each position's pair `(x[c], x[c+1])` against `(w[c], w[c+1])`.
    pub(super) fn pointwise_quad(
        xg: &[i8],
        wk: &[i8],
        hw: usize,
        px: usize,
        base: i32,
    ) -> [i32; 4] {
        let (mut a0, mut a1, mut a2, mut a3) = (base, base, base, base);
        let pairs = wk.len() / 2;
        // Every row read: `px + c·hw .. + 4` for c < wk.len().
        let last_row = wk.len().saturating_sub(1) * hw + px;
        if wk.is_empty() || last_row.checked_add(4).is_none_or(|end| end > xg.len()) {
            return super::portable_quad(xg, wk, hw, px, base);
        }
        let mut xp = xg[px..].as_ptr();
        let step = 2 * hw;
        for c in 0..pairs {
            // SAFETY: rows 2c and 2c + 1 start at `px + 2c·hw` and
            // `px + (2c + 1)·hw`, whose 4 bytes lie inside `xg` (checked
            // above for the last row); unaligned loads are allowed here.
            let (x0, x1) = unsafe {
                (
                    xp.cast::<u32>().read_unaligned(),
                    xp.add(hw).cast::<u32>().read_unaligned(),
                )
            };
            // Bytes 0 and 2, the lanes SXTB16 widens.
            let w = u32::from(wk[2 * c] as u8) | u32::from(wk[2 * c + 1] as u8) << 16;
            // SAFETY: register-only arithmetic (no memory, no stack); the
            // Q flag SMLAD may set is not read by Rust code.
            unsafe {
                asm!(
                    "sxtb16 {w}, {w}",
                    "sxtb16 {t}, {x0}",
                    "sxtb16 {u}, {x1}",
                    "pkhbt {v}, {t}, {u}, lsl #16",
                    "smlad {a0}, {v}, {w}, {a0}",
                    "pkhtb {v}, {u}, {t}, asr #16",
                    "smlad {a2}, {v}, {w}, {a2}",
                    "sxtb16 {t}, {x0}, ror #8",
                    "sxtb16 {u}, {x1}, ror #8",
                    "pkhbt {v}, {t}, {u}, lsl #16",
                    "smlad {a1}, {v}, {w}, {a1}",
                    "pkhtb {v}, {u}, {t}, asr #16",
                    "smlad {a3}, {v}, {w}, {a3}",
                    w = inout(reg) w => _,
                    x0 = in(reg) x0,
                    x1 = in(reg) x1,
                    t = out(reg) _,
                    u = out(reg) _,
                    v = out(reg) _,
                    a0 = inout(reg) a0,
                    a1 = inout(reg) a1,
                    a2 = inout(reg) a2,
                    a3 = inout(reg) a3,
                    options(pure, nomem, nostack),
                );
            }
            // SAFETY: stays within `xg` or one row past the last read
            // (`wrapping_add`: never dereferenced past it).
            xp = xp.wrapping_add(step);
        }
        if wk.len() % 2 == 1 {
            let tail =
                super::portable_quad(&xg[(wk.len() - 1) * hw..], &wk[wk.len() - 1..], hw, px, 0);
            a0 = a0.wrapping_add(tail[0]);
            a1 = a1.wrapping_add(tail[1]);
            a2 = a2.wrapping_add(tail[2]);
            a3 = a3.wrapping_add(tail[3]);
        }
        [a0, a1, a2, a3]
    }

    /// See the portable `dot`: four lanes per step.
    pub(super) fn dot(x: &[i8], w: &[i8]) -> (i32, i32) {
        let n = x.len().min(w.len());
        let (mut xw, mut ws) = (0i32, 0i32);
        let quads = n / 4 * 4;
        let ones: u32 = 0x0001_0001;
        let mut i = 0;
        while i < quads {
            let mut xv = word(&x[i..i + 4]);
            let mut wv = word(&w[i..i + 4]);
            // SAFETY: as in `pointwise_quad`.
            unsafe {
                asm!(
                    "sxtb16 {xo}, {x}, ror #8",
                    "sxtb16 {x}, {x}",
                    "sxtb16 {wo}, {w}, ror #8",
                    "sxtb16 {w}, {w}",
                    "smlad {xw}, {x}, {w}, {xw}",
                    "smlad {xw}, {xo}, {wo}, {xw}",
                    "smlad {ws}, {w}, {ones}, {ws}",
                    "smlad {ws}, {wo}, {ones}, {ws}",
                    x = inout(reg) xv,
                    w = inout(reg) wv,
                    xo = out(reg) _,
                    wo = out(reg) _,
                    ones = in(reg) ones,
                    xw = inout(reg) xw,
                    ws = inout(reg) ws,
                    options(pure, nomem, nostack),
                );
            }
            let _ = (xv, wv);
            i += 4;
        }
        for (&xv, &wv) in x[quads..n].iter().zip(&w[quads..n]) {
            xw = xw.wrapping_add(i32::from(xv) * i32::from(wv));
            ws = ws.wrapping_add(i32::from(wv));
        }
        (xw, ws)
    }
}

/// One output channel of any other convolution. Outputs whose taps all
/// land inside the input go four rows at a time down a column (one weight
/// load for four sums, the zero point folded out as `x_zp·Σw`; columns
/// first, because microcontroller feature maps are often a few columns
/// wide); the top and bottom rows' inner columns four at a time along the
/// row over the kernel rows inside the input; the rest one at a time over
/// the kernel rows and columns inside the input (padding contributes
/// nothing).
#[inline(never)]
#[allow(clippy::too_many_arguments, reason = "the op's operands")]
fn general_channel(
    p: &Conv2d,
    xg: &[i8],
    wk: &[i8],
    q: &QOut,
    bias: i32,
    requant: &[[i32; 2]],
    oc: usize,
    yo: &mut [i8],
) {
    let [sh, sw] = p.stride;
    let [dh, dw] = p.dilation;
    // Rows and columns of outputs whose whole kernel is inside the input.
    let inner = |pad: usize, s: usize, d: usize, k: usize, len: usize, out: usize| {
        out_range(-(pad as isize), s, len.saturating_sub((k - 1) * d), out)
    };
    let (ry0, ry1) = inner(p.pad[0], sh, dh, p.kh, p.h, p.oh);
    let (cx0, cx1) = inner(p.pad[1], sw, dw, p.kw, p.w, p.ow);
    // Rows [ry0, quads) of the inner columns go in blocks of four down the
    // column; the other rows' inner columns in runs of four along the row
    // (the kernel rows inside the input are the same for all four).
    let quads = ry0 + (ry1 - ry0) / 4 * 4;
    let store4 = |yo: &mut [i8], at: usize, step: usize, (sums, wsum): ([i32; 4], i32)| {
        let base = bias.wrapping_sub(q.x_zp.wrapping_mul(wsum));
        for (k, a) in sums.into_iter().enumerate() {
            yo[at + k * step] = q.store(base.wrapping_add(a), requant, oc);
        }
    };
    for oy in 0..p.oh {
        let offy = (oy * sh) as isize - p.pad[0] as isize;
        let (r0, r1) = out_range(offy, dh, p.h, p.kh);
        let down = (ry0..quads).contains(&oy);
        let mut ox = 0;
        while ox < p.ow {
            let inner_col = (cx0..cx1).contains(&ox);
            if inner_col && down {
                if (oy - ry0) % 4 == 0 {
                    let ix = ox * sw - p.pad[1];
                    let sums = quad(
                        p,
                        xg,
                        wk,
                        (oy * sh - p.pad[0]) * p.w + ix,
                        sh * p.w,
                        0,
                        p.kh,
                    );
                    store4(yo, oy * p.ow + ox, p.ow, sums);
                }
                ox += 1;
            } else if inner_col && ox + 4 <= cx1 && r0 < r1 {
                // In range by `out_range`: 0 <= offy + r0·dh < h.
                let iy = (offy + (r0 * dh) as isize) as usize;
                let sums = quad(p, xg, wk, iy * p.w + ox * sw - p.pad[1], sw, r0, r1);
                store4(yo, oy * p.ow + ox, 1, sums);
                ox += 4;
            } else {
                let acc = one(p, xg, wk, q.x_zp, bias, oy, ox);
                yo[oy * p.ow + ox] = q.store(acc, requant, oc);
                ox += 1;
            }
        }
    }
}

/// The sums `Σ x·w` of four outputs whose taps in kernel rows `r0..r1`
/// (all columns) lie inside the input, and `Σ w` over those taps: the
/// first output's row `r0` starts at input offset `at`, the others are
/// `step` apart.
#[allow(clippy::too_many_arguments, reason = "the window's geometry")]
fn quad(
    p: &Conv2d,
    xg: &[i8],
    wk: &[i8],
    at: usize,
    step: usize,
    r0: usize,
    r1: usize,
) -> ([i32; 4], i32) {
    let hw = p.h * p.w;
    let [dh, dw] = p.dilation;
    let (mut a0, mut a1, mut a2, mut a3, mut ws) = (0i32, 0i32, 0i32, 0i32, 0i32);
    let (mut t, mut xc) = (0, at);
    while t < wk.len() {
        for r in r0..r1 {
            let mut xi = xc + (r - r0) * dh * p.w;
            let row = t + r * p.kw;
            for &wv in &wk[row..row + p.kw] {
                let wv = i32::from(wv);
                let xs = &xg[xi..xi + 3 * step + 1];
                a0 = a0.wrapping_add(i32::from(xs[0]) * wv);
                a1 = a1.wrapping_add(i32::from(xs[step]) * wv);
                a2 = a2.wrapping_add(i32::from(xs[2 * step]) * wv);
                a3 = a3.wrapping_add(i32::from(xs[3 * step]) * wv);
                ws = ws.wrapping_add(wv);
                xi += dw;
            }
        }
        t += p.kh * p.kw;
        xc += hw;
    }
    ([a0, a1, a2, a3], ws)
}

/// The sum of one output (row `oy`, column `ox`) over the kernel rows and
/// columns whose taps fall inside the input.
fn one(p: &Conv2d, xg: &[i8], wk: &[i8], x_zp: i32, bias: i32, oy: usize, ox: usize) -> i32 {
    let (hw, kk) = (p.h * p.w, p.kh * p.kw);
    let [dh, dw] = p.dilation;
    let offy = (oy * p.stride[0]) as isize - p.pad[0] as isize;
    let offx = (ox * p.stride[1]) as isize - p.pad[1] as isize;
    let (r0, r1) = out_range(offy, dh, p.h, p.kh);
    let (s0, s1) = out_range(offx, dw, p.w, p.kw);
    let (mut acc, mut xc) = (bias, 0);
    for wc in wk.chunks_exact(kk.max(1)) {
        for r in r0..r1 {
            // In range by `out_range`: 0 <= offy + r·dh < h, and likewise
            // each column.
            let iy = (offy + (r * dh) as isize) as usize;
            let mut xi = xc + iy * p.w + (offx + (s0 * dw) as isize) as usize;
            for &wv in &wc[r * p.kw + s0..r * p.kw + s1] {
                acc = acc.wrapping_add((i32::from(xg[xi]) - x_zp) * i32::from(wv));
                xi += dw;
            }
        }
        xc += hw;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed::Multiplier;
    use crate::quant::tests::bytes;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The compact convolution gives the reference's bytes for every
        /// shape class: pointwise (with and without a tail of positions),
        /// grouped, depthwise, strided, dilated, padded asymmetrically,
        /// any zero points, per-channel or per-tensor requantization.
        #[test]
        fn compact_conv_matches_reference(
            (c, m, group) in prop_oneof![Just((3usize, 4usize, 1usize)), Just((4, 4, 4)), Just((8, 8, 8)), Just((4, 8, 2)), Just((16, 6, 1)), Just((1, 5, 1)), Just((7, 7, 7))],
            (h, w) in (1usize..=11, 1usize..=11),
            (kh, kw, dil) in (1usize..=4, 1usize..=4, 1usize..=2),
            stride in prop_oneof![Just([1usize, 1usize]), Just([2, 2]), Just([1, 2]), Just([3, 1])],
            pad in prop_oneof![Just([0usize; 4]), Just([1; 4]), Just([0, 1, 2, 0]), Just([2, 0, 0, 1])],
            x_zp in -128i32..=127,
            (rq_scale, y_zp) in (prop_oneof![Just(0.002f64), Just(0.05), Just(1.3)], -128i32..=127),
            per_tensor in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let span = |len: usize, k: usize, pads: usize, s: usize| (len + pads).checked_sub((k - 1) * dil + 1).map(|v| v / s + 1);
            let (Some(oh), Some(ow)) = (span(h, kh, pad[0] + pad[2], stride[0]), span(w, kw, pad[1] + pad[3], stride[1])) else { return Ok(()) };
            let p = Conv2d { n: 2, c, h, w, m, kh, kw, oh, ow, group, stride, dilation: [dil; 2], pad };
            let q = QOut { x_zp, y_zp, act_min: -110, act_max: 125 };
            let x = bytes(p.n * c * h * w, seed);
            let wt = bytes(m * (c / group) * kh * kw, seed ^ 7);
            let bias: std::vec::Vec<i32> = (0..m as i32).map(|i| i * 700 - 2000).collect();
            let rq: std::vec::Vec<[i32; 2]> = (0..m).map(|i| { let mm = Multiplier::new(rq_scale * (i + 1) as f64).unwrap(); [mm.mantissa, mm.shift] }).collect();
            let rq = if per_tensor { &rq[..1] } else { &rq[..] };
            let mut want = std::vec![0i8; p.n * m * oh * ow];
            crate::quant::conv2d_i8(&p, &q, &x, &wt, Some(&bias), rq, &mut want);
            let mut got = std::vec![0i8; want.len()];
            conv2d_i8(&p, &q, &x, &wt, Some(&bias), rq, &mut got);
            prop_assert_eq!(&got, &want);
            crate::quant::conv2d_i8(&p, &q, &x, &wt, None, rq, &mut want);
            conv2d_i8(&p, &q, &x, &wt, None, rq, &mut got);
            prop_assert_eq!(&got, &want, "without bias");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The compact fully connected layer gives the reference's bytes.
        #[test]
        fn compact_fc_matches_reference(
            rows in 1usize..4, depth in 1usize..40, units in 1usize..12,
            x_zp in -128i32..=127, y_zp in -128i32..=127,
            per_tensor in any::<bool>(), with_bias in any::<bool>(), seed in any::<u64>(),
        ) {
            let p = crate::quant::QFullyConnected { rows, depth, units, x_zp, y_zp, act_min: -120, act_max: 127 };
            let x = bytes(rows * depth, seed);
            let w = bytes(units * depth, seed ^ 3);
            let bias: std::vec::Vec<i32> = (0..units as i32).map(|i| i * 999 - 4000).collect();
            let rq: std::vec::Vec<[i32; 2]> = (0..units).map(|i| { let m = Multiplier::new(0.01 * (i + 1) as f64).unwrap(); [m.mantissa, m.shift] }).collect();
            let rq = if per_tensor { &rq[..1] } else { &rq[..] };
            let bias = with_bias.then_some(&bias[..]);
            let (mut want, mut got) = (std::vec![0i8; rows * units], std::vec![0i8; rows * units]);
            crate::quant::fully_connected_i8(&p, &x, &w, bias, rq, &mut want);
            fully_connected_i8(&p, &x, &w, bias, rq, &mut got);
            prop_assert_eq!(got, want);
        }
    }

    /// Accumulations that overflow `i32` wrap as the reference's do (the
    /// pointwise path folds the zero point out of the sum).
    #[test]
    fn pointwise_wraps_like_the_reference() {
        let (c, hw) = (4096usize, 5usize);
        let p = Conv2d {
            n: 1,
            c,
            h: 1,
            w: hw,
            m: 2,
            kh: 1,
            kw: 1,
            oh: 1,
            ow: hw,
            group: 1,
            stride: [1, 1],
            dilation: [1, 1],
            pad: [0; 4],
        };
        let q = QOut {
            x_zp: -128,
            y_zp: 0,
            act_min: -128,
            act_max: 127,
        };
        let x = std::vec![127i8; c * hw];
        let w = std::vec![127i8; 2 * c];
        let bias = [i32::MAX - 5, i32::MIN + 5];
        let rq = [[1 << 30, 0]];
        let (mut want, mut got) = (std::vec![0i8; 2 * hw], std::vec![0i8; 2 * hw]);
        crate::quant::conv2d_i8(&p, &q, &x, &w, Some(&bias), &rq, &mut want);
        conv2d_i8(&p, &q, &x, &w, Some(&bias), &rq, &mut got);
        assert_eq!(got, want);
    }
}
