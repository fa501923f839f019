//! Pooling: hand-computed ONNX backend cases and the row-wise kernels against a naive per-window implementation.

use kiln_kernels::pool::{
    Pool2d, avg_pool2d, global_avg_pool, global_max_pool, lp_pool2d, max_pool2d,
};
use proptest::prelude::*;

fn iota1(len: usize) -> Vec<f32> {
    (1..=len).map(|v| v as f32).collect()
}

#[allow(clippy::too_many_arguments, reason = "shape literal")]
fn pool(
    h: usize,
    w: usize,
    k: [usize; 2],
    o: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: [usize; 4],
) -> Pool2d {
    Pool2d {
        n: 1,
        c: 1,
        h,
        w,
        oh: o[0],
        ow: o[1],
        kh: k[0],
        kw: k[1],
        stride,
        dilation,
        pad,
    }
}

fn max(p: &Pool2d, x: &[f32]) -> Vec<f32> {
    let mut y = vec![f32::NAN; p.n * p.c * p.oh * p.ow];
    max_pool2d(p, x, &mut y);
    y
}

fn avg(p: &Pool2d, include_pad: bool, x: &[f32]) -> Vec<f32> {
    let mut y = vec![f32::NAN; p.n * p.c * p.oh * p.ow];
    avg_pool2d(p, include_pad, x, &mut y);
    y
}

fn close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "[{i}] = {g}, want {w}\n got {got:?}"
        );
    }
}

#[test]
fn onnx_maxpool_cases() {
    let x = iota1(16);
    // maxpool_2d_dilations: 2x2 kernel, dilation 2, stride 1.
    close(
        &max(&pool(4, 4, [2, 2], [2, 2], [1, 1], [2, 2], [0; 4]), &x),
        &[11., 12., 15., 16.],
    );
    // maxpool_2d_ceil: 3x3 kernel, stride 2, ceil_mode (last window clipped).
    close(
        &max(&pool(4, 4, [3, 3], [2, 2], [2, 2], [1, 1], [0; 4]), &x),
        &[11., 12., 15., 16.],
    );
    // maxpool_2d_pads: 5x5 input 1..25, 5x5 kernel, pads 2.
    let x = iota1(25);
    let want = [
        13., 14., 15., 15., 15., 18., 19., 20., 20., 20., 23., 24., 25., 25., 25., 23., 24., 25.,
        25., 25., 23., 24., 25., 25., 25.,
    ];
    close(
        &max(&pool(5, 5, [5, 5], [5, 5], [1, 1], [1, 1], [2; 4]), &x),
        &want,
    );
    // maxpool_2d_precomputed_strides: 2x2 kernel, stride 2.
    close(
        &max(&pool(5, 5, [2, 2], [2, 2], [2, 2], [1, 1], [0; 4]), &x),
        &[7., 9., 17., 19.],
    );
    // Negative values: padding must not contribute a 0.
    let neg: Vec<f32> = x.iter().map(|v| -v).collect();
    close(
        &max(
            &pool(5, 5, [3, 3], [1, 1], [1, 1], [1, 1], [1, 1, 0, 0]),
            &neg,
        ),
        &[-1.0],
    );
}

#[test]
fn onnx_averagepool_cases() {
    // averagepool_2d_ceil: 4x4 input 1..16, 3x3 kernel, stride 2, ceil_mode.
    close(
        &avg(
            &pool(4, 4, [3, 3], [2, 2], [2, 2], [1, 1], [0; 4]),
            false,
            &iota1(16),
        ),
        &[6., 7.5, 12., 13.5],
    );
    let x = iota1(25);
    let p = pool(5, 5, [5, 5], [5, 5], [1, 1], [1, 1], [2; 4]);
    // averagepool_2d_precomputed_pads (count_include_pad = 0).
    let want = [
        7., 7.5, 8., 8.5, 9., 9.5, 10., 10.5, 11., 11.5, 12., 12.5, 13., 13.5, 14., 14.5, 15.,
        15.5, 16., 16.5, 17., 17.5, 18., 18.5, 19.,
    ];
    close(&avg(&p, false, &x), &want);
    // averagepool_2d_precomputed_pads_count_include_pad.
    let want = [
        2.52, 3.6, 4.8, 4.08, 3.24, 4.56, 6.4, 8.4, 7.04, 5.52, 7.2, 10., 13., 10.8, 8.4, 6.96,
        9.6, 12.4, 10.24, 7.92, 6.12, 8.4, 10.8, 8.88, 6.84,
    ];
    close(&avg(&p, true, &x), &want);
    // averagepool_2d_dilations: 2x2 kernel, dilation 2, stride 1.
    close(
        &avg(
            &pool(4, 4, [2, 2], [2, 2], [1, 1], [2, 2], [0; 4]),
            false,
            &iota1(16),
        ),
        &[6., 7., 10., 11.],
    );
}

#[test]
fn avg_pool_ceil_overhang_is_not_counted_as_padding() {
    // x = 1..6 (1x6), kernel 3, stride 2, pads 1/1, ceil_mode -> 4 windows
    // starting at -1, 1, 3, 5. The padded input spans [-1, 7): the last
    // window [5, 8) has one input (6), one pad (6) and one overhang (7).
    let p = Pool2d {
        n: 1,
        c: 1,
        h: 1,
        w: 6,
        oh: 1,
        ow: 4,
        kh: 1,
        kw: 3,
        stride: [1, 2],
        dilation: [1, 1],
        pad: [0, 1, 0, 1],
    };
    let x = iota1(6);
    close(&avg(&p, true, &x), &[1., 3., 5., 3.]);
    close(&avg(&p, false, &x), &[1.5, 3., 5., 6.]);
    // Without padding the overhang alone never counts.
    let p = Pool2d {
        ow: 3,
        pad: [0; 4],
        ..p
    };
    close(&avg(&p, true, &x), &[2., 4., 5.5]);
}

#[test]
fn lp_and_global_pools() {
    let p = pool(2, 2, [2, 2], [1, 1], [1, 1], [1, 1], [0; 4]);
    let x = [3.0, -4.0, 0.0, 0.0];
    let mut y = [f32::NAN];
    lp_pool2d(&p, 2, &x, &mut y);
    close(&y, &[5.0]);
    lp_pool2d(&p, 1, &x, &mut y);
    close(&y, &[7.0]);
    lp_pool2d(&p, 3, &x, &mut y);
    close(&y, &[91f32.powf(1.0 / 3.0)]);
    // ONNX lppool_2d_pads-like: padding contributes nothing.
    let p = pool(2, 2, [3, 3], [2, 2], [1, 1], [1, 1], [1; 4]);
    let mut y = [f32::NAN; 4];
    lp_pool2d(&p, 2, &x, &mut y);
    close(&y, &[5.0; 4]);

    let x: Vec<f32> = (0..3 * 37).map(|v| v as f32 - 50.0).collect();
    let mut y = [f32::NAN; 3];
    global_avg_pool(3, 37, &x, &mut y);
    close(&y, &[-32.0, 5.0, 42.0]);
    global_max_pool(3, 37, &x, &mut y);
    close(&y, &[-14.0, 23.0, 60.0]);
}

/// Naive per-window pooling: `kind` 0 = max, 1 = avg (exclude pad),
/// 2 = avg (include pad), 3 = Lp with p = 2, 4 = Lp with p = 3.
fn naive(p: &Pool2d, kind: u8, x: &[f32]) -> Vec<f32> {
    let mut y = Vec::new();
    for plane in 0..p.n * p.c {
        for oy in 0..p.oh {
            for ox in 0..p.ow {
                let (mut mx, mut sum, mut cnt, mut cnt_pad) = (f32::NEG_INFINITY, 0.0f32, 0, 0);
                for r in 0..p.kh {
                    for s in 0..p.kw {
                        let iy =
                            (oy * p.stride[0] + r * p.dilation[0]) as isize - p.pad[0] as isize;
                        let ix =
                            (ox * p.stride[1] + s * p.dilation[1]) as isize - p.pad[1] as isize;
                        let in_padded =
                            iy < (p.h + p.pad[2]) as isize && ix < (p.w + p.pad[3]) as isize;
                        if in_padded {
                            cnt_pad += 1;
                        }
                        if iy < 0 || ix < 0 || iy >= p.h as isize || ix >= p.w as isize {
                            continue;
                        }
                        let v = x[(plane * p.h + iy as usize) * p.w + ix as usize];
                        mx = mx.max(v);
                        sum += match kind {
                            3 => v * v,
                            4 => v.abs().powi(3),
                            _ => v,
                        };
                        cnt += 1;
                    }
                }
                y.push(match kind {
                    0 => mx,
                    1 => sum / cnt as f32,
                    2 => sum / cnt_pad as f32,
                    3 => sum.sqrt(),
                    _ => sum.powf(1.0 / 3.0),
                });
            }
        }
    }
    y
}

fn pool_case() -> impl Strategy<Value = (Pool2d, Vec<f32>)> {
    (
        (1usize..=2, 1usize..=3, 1usize..=9, 1usize..=9),
        (
            1usize..=3,
            1usize..=3,
            1usize..=3,
            1usize..=3,
            1usize..=2,
            1usize..=2,
        ),
        [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
        any::<bool>(),
    )
        .prop_filter_map(
            "bad window",
            |((n, c, h, w), (kh, kw, sh, sw, dh, dw), pad, ceil)| {
                // ONNX requires pads smaller than the window.
                let pad = [
                    pad[0].min(kh - 1),
                    pad[1].min(kw - 1),
                    pad[2].min(kh - 1),
                    pad[3].min(kw - 1),
                ];
                let span = |len: usize, p0: usize, p1: usize, k: usize, d: usize, s: usize| {
                    let total = (len + p0 + p1).checked_sub(d * (k - 1) + 1)?;
                    // ceil_mode: the last window must start inside the input or left padding.
                    let o = if ceil {
                        total.div_ceil(s) + 1
                    } else {
                        total / s + 1
                    };
                    Some(if (o - 1) * s >= len + p0 { o - 1 } else { o })
                };
                let oh = span(h, pad[0], pad[2], kh, dh, sh)?;
                let ow = span(w, pad[1], pad[3], kw, dw, sw)?;
                let p = Pool2d {
                    n,
                    c,
                    h,
                    w,
                    oh,
                    ow,
                    kh,
                    kw,
                    stride: [sh, sw],
                    dilation: [dh, dw],
                    pad,
                };
                let x = (0..n * c * h * w)
                    .map(|i| ((i * 7919) % 23) as f32 - 11.0)
                    .collect();
                Some((p, x))
            },
        )
}

proptest! {
    #[test]
    fn pools_match_naive((p, x) in pool_case()) {
        let len = p.n * p.c * p.oh * p.ow;
        let mut y = vec![f32::NAN; len];
        max_pool2d(&p, &x, &mut y);
        prop_assert_eq!(&y, &naive(&p, 0, &x));
        for (include, kind) in [(false, 1), (true, 2)] {
            avg_pool2d(&p, include, &x, &mut y);
            let want = naive(&p, kind, &x);
            for (g, w) in y.iter().zip(&want) {
                prop_assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0) || (g.is_nan() && w.is_nan()), "{:?} avg({}) {:?} vs {:?}", p, include, y, want);
            }
        }
        for (pw, kind) in [(2, 3), (3, 4)] {
            lp_pool2d(&p, pw, &x, &mut y);
            let want = naive(&p, kind, &x);
            for (g, w) in y.iter().zip(&want) {
                prop_assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{:?} lp{} {:?} vs {:?}", p, pw, y, want);
            }
        }
    }
}
