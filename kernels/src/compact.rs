//! Int8 kernels for microcontrollers: no scratch memory and little code,
//! at some speed. The same bytes as the references in [`crate::quant`]
//! (exact integer sums, in wrapping `i32` as TFLite accumulates), so an
//! artifact gives the same outputs whichever path runs it.
//!
//! [`crate::quant::conv2d_i8_fast`] and
//! [`crate::quant::fully_connected_i8_fast`] take these paths when their
//! scratch is too short for the others (a compile for a microcontroller
//! gives them none), and always with the `compact` feature, which leaves
//! the other paths out of the binary (firmware built for flash size).

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

/// One output channel of any other convolution. Outputs whose taps all
/// land inside the input go four rows at a time down a column (one weight
/// load for four sums, the zero point folded out as `x_zp·Σw`; columns,
/// not rows, because microcontroller feature maps are often a few columns
/// wide); the rest one at a time over the kernel rows and columns inside
/// the input (padding contributes nothing).
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
    // Rows [ry0, quads) of the inner columns go in blocks of four.
    let quads = ry0 + (ry1 - ry0) / 4 * 4;
    let wsum = wk.iter().fold(0i32, |s, &v| s.wrapping_add(i32::from(v)));
    let base = bias.wrapping_sub(q.x_zp.wrapping_mul(wsum));
    for oy in 0..p.oh {
        for ox in 0..p.ow {
            if (cx0..cx1).contains(&ox) && (ry0..quads).contains(&oy) {
                if (oy - ry0) % 4 == 0 {
                    let (iy, ix) = (oy * sh - p.pad[0], ox * sw - p.pad[1]);
                    let acc = quad(p, xg, wk, base, iy * p.w + ix, sh * p.w);
                    for (k, a) in acc.into_iter().enumerate() {
                        yo[(oy + k) * p.ow + ox] = q.store(a, requant, oc);
                    }
                }
                continue;
            }
            let acc = one(p, xg, wk, q.x_zp, bias, oy, ox);
            yo[oy * p.ow + ox] = q.store(acc, requant, oc);
        }
    }
}

/// The sums of four outputs, every tap inside the input: the first's
/// window starts at input offset `at`, the others `step` apart. `base` is
/// the bias minus `x_zp·Σw`.
fn quad(p: &Conv2d, xg: &[i8], wk: &[i8], base: i32, at: usize, step: usize) -> [i32; 4] {
    let hw = p.h * p.w;
    let [dh, dw] = p.dilation;
    let (mut a0, mut a1, mut a2, mut a3) = (base, base, base, base);
    let (mut t, mut xc) = (0, at);
    while t < wk.len() {
        for r in 0..p.kh {
            let mut xi = xc + r * dh * p.w;
            for &wv in &wk[t..t + p.kw] {
                let wv = i32::from(wv);
                let xs = &xg[xi..xi + 3 * step + 1];
                a0 = a0.wrapping_add(i32::from(xs[0]) * wv);
                a1 = a1.wrapping_add(i32::from(xs[step]) * wv);
                a2 = a2.wrapping_add(i32::from(xs[2 * step]) * wv);
                a3 = a3.wrapping_add(i32::from(xs[3 * step]) * wv);
                xi += dw;
            }
            t += p.kw;
        }
        xc += hw;
    }
    [a0, a1, a2, a3]
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
    use proptest::prelude::*;

    fn bytes(n: usize, seed: u64) -> std::vec::Vec<i8> {
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
