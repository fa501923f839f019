//! Convolution: hand-computed ONNX cases, fast `conv2d` against `conv2d_reference` on random shapes, and `conv_transpose2d` against a naive scatter and as the adjoint of `conv2d`.

use kiln_kernels::conv::{Conv2d, conv_transpose2d, conv2d, conv2d_reference, conv2d_scratch_len};
use proptest::prelude::*;

fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn iota(len: usize) -> Vec<f32> {
    (0..len).map(|v| v as f32).collect()
}

#[allow(clippy::too_many_arguments, reason = "shape literal")]
fn shape(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    m: usize,
    k: [usize; 2],
    o: [usize; 2],
    group: usize,
    stride: [usize; 2],
    pad: [usize; 4],
) -> Conv2d {
    Conv2d {
        n,
        c,
        h,
        w,
        m,
        kh: k[0],
        kw: k[1],
        oh: o[0],
        ow: o[1],
        group,
        stride,
        dilation: [1, 1],
        pad,
    }
}

/// Runs the fast path (with NaN-filled scratch and output) and the reference.
fn run_both(p: &Conv2d, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> (Vec<f32>, Vec<f32>) {
    let len = p.n * p.m * p.oh * p.ow;
    let mut fast = vec![f32::NAN; len];
    let mut scratch = vec![f32::NAN; conv2d_scratch_len(p)];
    conv2d(p, x, w, bias, &mut fast, &mut scratch);
    let mut want = vec![f32::NAN; len];
    conv2d_reference(p, x, w, bias, &mut want);
    (fast, want)
}

#[test]
fn onnx_conv_with_and_without_padding() {
    // ONNX backend test `conv`: x = 0..25 (5x5), w = ones(3x3).
    let x = iota(25);
    let w = [1.0; 9];
    let p = shape(1, 1, 5, 5, 1, [3, 3], [5, 5], 1, [1, 1], [1, 1, 1, 1]);
    let want = [
        12., 21., 27., 33., 24., 33., 54., 63., 72., 51., 63., 99., 108., 117., 81., 93., 144.,
        153., 162., 111., 72., 111., 117., 123., 84.,
    ];
    let (fast, reference) = run_both(&p, &x, &w, None);
    assert_eq!(fast, want);
    assert_eq!(reference, want);
    let p = shape(1, 1, 5, 5, 1, [3, 3], [3, 3], 1, [1, 1], [0; 4]);
    let want = [54., 63., 72., 99., 108., 117., 144., 153., 162.];
    let (fast, reference) = run_both(&p, &x, &w, None);
    assert_eq!(fast, want);
    assert_eq!(reference, want);
}

#[test]
fn onnx_conv_with_strides() {
    // ONNX `conv_with_strides_padding` / `_no_padding` / `_and_asymmetric_padding`: x = 0..35 (7x5).
    let x = iota(35);
    let w = [1.0; 9];
    let cases: [([usize; 4], [usize; 2], &[f32]); 3] = [
        (
            [1, 1, 1, 1],
            [4, 3],
            &[
                12., 27., 24., 63., 108., 81., 123., 198., 141., 112., 177., 124.,
            ],
        ),
        ([0; 4], [3, 2], &[54., 72., 144., 162., 234., 252.]),
        (
            [1, 0, 1, 0],
            [4, 2],
            &[21., 33., 99., 117., 189., 207., 171., 183.],
        ),
    ];
    for (pad, o, want) in cases {
        let p = shape(1, 1, 7, 5, 1, [3, 3], o, 1, [2, 2], pad);
        let (fast, reference) = run_both(&p, &x, &w, None);
        assert_eq!(fast, want, "pad {pad:?}");
        assert_eq!(reference, want, "pad {pad:?}");
    }
}

#[test]
fn bias_groups_and_depthwise_by_hand() {
    // Two groups of one channel each (depthwise), 1x1 kernels with bias:
    // y[0] = 2·x[0] + 1, y[1] = −x[1] + 0.5.
    let p = shape(1, 2, 1, 3, 2, [1, 1], [1, 3], 2, [1, 1], [0; 4]);
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let (fast, reference) = run_both(&p, &x, &[2.0, -1.0], Some(&[1.0, 0.5]));
    assert_eq!(fast, [3.0, 5.0, 7.0, -3.5, -4.5, -5.5]);
    assert_eq!(reference, fast);
    // Dilated 1-D conv (h = 1): taps at ix and ix + 2.
    let p = Conv2d {
        dilation: [1, 2],
        ..shape(1, 1, 1, 5, 1, [1, 2], [1, 3], 1, [1, 1], [0; 4])
    };
    let (fast, reference) = run_both(&p, &[1.0, 2.0, 3.0, 4.0, 5.0], &[1.0, 10.0], None);
    assert_eq!(fast, [31.0, 42.0, 53.0]);
    assert_eq!(reference, fast);
}

#[test]
fn onnx_conv_transpose() {
    // ONNX `convtranspose`: x = 0..9 (3x3), w = ones [1, 2, 3, 3] -> y [1, 2, 5, 5].
    let p = shape(1, 1, 3, 3, 2, [3, 3], [5, 5], 1, [1, 1], [0; 4]);
    let mut y = vec![f32::NAN; 50];
    conv_transpose2d(&p, &iota(9), &[1.0; 18], None, &mut y);
    let plane = [
        0., 1., 3., 3., 2., 3., 8., 15., 12., 7., 9., 21., 36., 27., 15., 9., 20., 33., 24., 13.,
        6., 13., 21., 15., 8.,
    ];
    assert_eq!(&y[..25], plane);
    assert_eq!(&y[25..], plane);
    // ONNX `convtranspose_1d`: x = [0, 1, 2], w = ones [1, 2, 3] -> [0, 1, 3, 3, 2] twice.
    let p = shape(1, 1, 1, 3, 2, [1, 3], [1, 5], 1, [1, 1], [0; 4]);
    let mut y = vec![f32::NAN; 10];
    conv_transpose2d(&p, &[0.0, 1.0, 2.0], &[1.0; 6], None, &mut y);
    assert_eq!(y, [0., 1., 3., 3., 2., 0., 1., 3., 3., 2.]);
    // Stride 3 with output_padding-style extra row/column (oh = (h-1)·3 + 3 + 1):
    // each input pixel stamps its 3x3 block; the last row/column only get bias.
    let p = shape(1, 1, 2, 2, 1, [3, 3], [7, 7], 1, [3, 3], [0; 4]);
    let mut y = vec![f32::NAN; 49];
    conv_transpose2d(&p, &[1.0, 2.0, 3.0, 4.0], &[1.0; 9], Some(&[0.5]), &mut y);
    for oy in 0..7 {
        for ox in 0..7 {
            let v = if oy < 6 && ox < 6 {
                1.0 + (oy / 3 * 2 + ox / 3) as f32
            } else {
                0.0
            };
            assert_eq!(y[oy * 7 + ox], v + 0.5, "({oy}, {ox})");
        }
    }
}

/// Naive ConvTranspose: scatter every x·w product to its output position.
fn conv_transpose_naive(p: &Conv2d, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (cg, mg) = (p.c / p.group, p.m / p.group);
    let mut y = vec![0.0; p.n * p.m * p.oh * p.ow];
    for b in 0..p.n {
        for mo in 0..p.m {
            y[(b * p.m + mo) * p.oh * p.ow..][..p.oh * p.ow].fill(bias.map_or(0.0, |bs| bs[mo]));
        }
        for ci in 0..p.c {
            let g = ci / cg;
            for j in 0..mg {
                let mo = g * mg + j;
                for iy in 0..p.h {
                    for ix in 0..p.w {
                        for r in 0..p.kh {
                            for s in 0..p.kw {
                                let oy = (iy * p.stride[0] + r * p.dilation[0]) as isize
                                    - p.pad[0] as isize;
                                let ox = (ix * p.stride[1] + s * p.dilation[1]) as isize
                                    - p.pad[1] as isize;
                                if oy < 0 || ox < 0 || oy >= p.oh as isize || ox >= p.ow as isize {
                                    continue;
                                }
                                let xv = x[((b * p.c + ci) * p.h + iy) * p.w + ix];
                                let wv = w[((ci * mg + j) * p.kh + r) * p.kw + s];
                                y[((b * p.m + mo) * p.oh + oy as usize) * p.ow + ox as usize] +=
                                    xv * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

/// Random conv shapes (batch, groups incl. depthwise with multiplier,
/// stride, dilation, asymmetric pads, 1-D) with their natural output size
/// (sometimes one larger, as ceil-style callers may ask).
fn conv_case() -> impl Strategy<Value = (Conv2d, bool, u64)> {
    (
        (
            1usize..=2,
            1usize..=3,
            1usize..=5,
            1usize..=5,
            prop_oneof![Just(0usize), 1usize..=2],
        ),
        (
            1usize..=9,
            prop_oneof![1usize..=12, 12usize..=40],
            1usize..=3,
            1usize..=4,
        ),
        (1usize..=3, 1usize..=3, 1usize..=2, 1usize..=2),
        [0usize..=2, 0usize..=3, 0usize..=1, 0usize..=2],
        (0usize..=1, any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_filter_map(
            "empty output",
            |(g, sp, sd, pad, (extra, one_d, bias, seed))| {
                let (n, group, cg, mg, mult) = g;
                let (c, m, group) = if mult > 0 {
                    (group * cg, group * cg * mult, group * cg)
                } else {
                    (group * cg, group * mg, group)
                };
                let (h, w, kh, kw) = sp;
                let (h, kh, pad) = if one_d {
                    (1, 1, [0, pad[1], 0, pad[3]])
                } else {
                    (h, kh, pad)
                };
                let (sh, sw, dh, dw) = sd;
                let span = |len: usize, p0: usize, p1: usize, k: usize, d: usize, s: usize| {
                    (len + p0 + p1)
                        .checked_sub(d * (k - 1) + 1)
                        .map(|v| v / s + 1)
                };
                let oh = span(h, pad[0], pad[2], kh, dh, sh)? + if one_d { 0 } else { extra };
                let ow = span(w, pad[1], pad[3], kw, dw, sw)? + extra;
                let p = Conv2d {
                    n,
                    c,
                    h,
                    w,
                    m,
                    kh,
                    kw,
                    oh,
                    ow,
                    group,
                    stride: [sh, sw],
                    dilation: [dh, dw],
                    pad,
                };
                Some((p, bias, seed))
            },
        )
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

proptest! {
    #[test]
    fn conv2d_matches_reference((p, with_bias, seed) in conv_case()) {
        let cg = p.c / p.group;
        let x = data(p.n * p.c * p.h * p.w, seed);
        let w = data(p.m * cg * p.kh * p.kw, seed ^ 3);
        let bias = data(p.m, seed ^ 5);
        let bias = with_bias.then_some(&bias[..]);
        let (fast, want) = run_both(&p, &x, &w, bias);
        let abias = bias.map(abs);
        let mut bound = vec![0.0; fast.len()];
        conv2d_reference(&p, &abs(&x), &abs(&w), abias.as_deref(), &mut bound);
        let k = (cg * p.kh * p.kw) as f32;
        for (i, ((g, w), b)) in fast.iter().zip(&want).zip(&bound).enumerate() {
            prop_assert!((g - w).abs() <= 1e-5 * (k + 1.0) * b.max(1e-6), "{:?}: y[{}] = {}, want {}", p, i, g, w);
        }
    }

    #[test]
    fn conv_transpose_matches_naive_and_is_adjoint_of_conv((p, with_bias, seed) in conv_case()) {
        // `p` describes a forward conv x[n,c,h,w] -> y[n,m,oh,ow]; its
        // transpose maps [n,m,oh,ow] -> [n,c,h,w] with the same weights.
        let t = Conv2d { c: p.m, m: p.c, h: p.oh, w: p.ow, oh: p.h, ow: p.w, ..p };
        let cg = p.c / p.group;
        let w = data(p.m * cg * p.kh * p.kw, seed ^ 3);
        let u = data(p.n * p.m * p.oh * p.ow, seed ^ 7);
        let bias = data(t.m, seed ^ 5);
        let bias = with_bias.then_some(&bias[..]);
        let mut got = vec![f32::NAN; p.n * p.c * p.h * p.w];
        conv_transpose2d(&t, &u, &w, bias, &mut got);
        let want = conv_transpose_naive(&t, &u, &w, bias);
        let bound = conv_transpose_naive(&t, &abs(&u), &abs(&w), bias.map(abs).as_deref());
        let k = (t.c * t.kh * t.kw) as f32;
        for (i, ((g, w), b)) in got.iter().zip(&want).zip(&bound).enumerate() {
            prop_assert!((g - w).abs() <= 1e-5 * (k + 1.0) * b.max(1e-6), "{:?}: y[{}] = {}, want {}", t, i, g, w);
        }
        if bias.is_none() {
            // <conv(x), u> == <x, convT(u)>.
            let x = data(p.n * p.c * p.h * p.w, seed);
            let mut y = vec![0.0; u.len()];
            conv2d_reference(&p, &x, &w, None, &mut y);
            let lhs: f64 = y.iter().zip(&u).map(|(a, b)| f64::from(a * b)).sum();
            let rhs: f64 = x.iter().zip(&got).map(|(a, b)| f64::from(a * b)).sum();
            let scale: f64 = y.iter().map(|v| f64::from(v.abs())).sum::<f64>() + 1.0;
            prop_assert!((lhs - rhs).abs() <= 1e-4 * scale, "{:?}: {} vs {}", p, lhs, rhs);
        }
    }
}

#[test]
fn empty_input_with_padding_gives_bias() {
    // h = 0 (or w = 0) input with padding: every output is just the bias.
    for (h, w) in [(0, 20), (20, 0), (0, 0)] {
        for group in [1, 2] {
            let p = Conv2d {
                dilation: [1, 1],
                ..shape(1, 2, h, w, 2, [3, 3], [2, 16], group, [1, 1], [1, 1, 1, 1])
            };
            let (fast, reference) =
                run_both(&p, &[], &vec![1.0; 2 * 2 / group * 9], Some(&[0.5, -1.0]));
            let want: Vec<f32> = [0.5f32, -1.0].iter().flat_map(|&b| vec![b; 32]).collect();
            assert_eq!(fast, want);
            assert_eq!(reference, want);
        }
    }
}
