//! Normalisation kernels: Softmax / LogSoftmax, LayerNormalization,
//! BatchNormalization (inference), InstanceNormalization, LRN, and the
//! ONNX-ML `Normalizer` and classifier `post_transform`s.
//!
//! Means and variances are accumulated in `f64` (two passes) so that long
//! rows do not lose precision; everything else is plain `f32`. Where
//! onnxruntime's CPU kernels pick one of several equivalent formulas
//! (fused batch-norm scale, signed `sqrt(x²/Σx²)` for L2, the
//! `1 / (1 + e^-|x|)` logistic) the same formula is used here so results
//! agree to the last bit or so.

/// Softmax (or log-softmax when `log`) over the middle axis of x viewed as [outer, axis_len, inner]. Numerically stable (subtract max).
///
/// `x` and `y` have `outer * axis_len * inner` elements. A slice along the
/// axis that is all `-inf` gives NaN, as in onnxruntime.
pub fn softmax(outer: usize, axis_len: usize, inner: usize, log: bool, x: &[f32], y: &mut [f32]) {
    let block = axis_len * inner;
    for o in 0..outer {
        let xb = &x[o * block..(o + 1) * block];
        let yb = &mut y[o * block..(o + 1) * block];
        for i in 0..inner {
            let mut max = f32::NEG_INFINITY;
            for a in 0..axis_len {
                let v = xb[a * inner + i];
                if v > max {
                    max = v;
                }
            }
            let mut sum = 0.0f32;
            for a in 0..axis_len {
                let e = libm::expf(xb[a * inner + i] - max);
                yb[a * inner + i] = e;
                sum += e;
            }
            if log {
                let lsum = libm::logf(sum);
                for a in 0..axis_len {
                    yb[a * inner + i] = xb[a * inner + i] - max - lsum;
                }
            } else {
                let inv = 1.0 / sum;
                for a in 0..axis_len {
                    yb[a * inner + i] *= inv;
                }
            }
        }
    }
}

/// Mean and biased variance of `v`, accumulated in `f64` (two passes).
fn mean_var(v: &[f32]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let mean = v.iter().map(|&a| a as f64).sum::<f64>() / n;
    let var = v
        .iter()
        .map(|&a| {
            let d = a as f64 - mean;
            d * d
        })
        .sum::<f64>()
        / n;
    (mean, var)
}

/// LayerNormalization: x viewed as [rows, cols]; normalise each row (mean/var over cols, biased var), then * scale[col] + bias[col]. scale/bias have len cols.
pub fn layer_norm(
    rows: usize,
    cols: usize,
    eps: f32,
    x: &[f32],
    scale: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    for r in 0..rows {
        let xr = &x[r * cols..(r + 1) * cols];
        let yr = &mut y[r * cols..(r + 1) * cols];
        let (mean, var) = mean_var(xr);
        let inv = 1.0 / libm::sqrt(var + eps as f64);
        for c in 0..cols {
            let n = ((xr[c] as f64 - mean) * inv) as f32;
            let b = bias.map_or(0.0, |b| b[c]);
            yr[c] = n * scale[c] + b;
        }
    }
}

/// Inference BatchNormalization on x [n, c, hw]: (x - mean[c]) / sqrt(var[c] + eps) * scale[c] + bias[c].
///
/// Computed in the fused form `x * a + b` with `a = scale / sqrt(var + eps)`
/// and `b = bias - mean * a`, as onnxruntime does.
#[allow(
    clippy::too_many_arguments,
    reason = "mirrors the ONNX operator's inputs"
)]
pub fn batch_norm(
    n: usize,
    c: usize,
    hw: usize,
    eps: f32,
    x: &[f32],
    scale: &[f32],
    bias: &[f32],
    mean: &[f32],
    var: &[f32],
    y: &mut [f32],
) {
    for ch in 0..c {
        let a = scale[ch] / libm::sqrtf(var[ch] + eps);
        let b = bias[ch] - mean[ch] * a;
        for img in 0..n {
            let off = (img * c + ch) * hw;
            for (yo, &xi) in y[off..off + hw].iter_mut().zip(&x[off..off + hw]) {
                *yo = xi * a + b;
            }
        }
    }
}

/// InstanceNormalization on x [n, c, hw].
///
/// Each `(n, c)` plane is normalised by its own mean and biased variance,
/// then scaled by `scale[c]` and shifted by `bias[c]`.
#[allow(
    clippy::too_many_arguments,
    reason = "mirrors the ONNX operator's inputs"
)]
pub fn instance_norm(
    n: usize,
    c: usize,
    hw: usize,
    eps: f32,
    x: &[f32],
    scale: &[f32],
    bias: &[f32],
    y: &mut [f32],
) {
    for img in 0..n {
        for ch in 0..c {
            let off = (img * c + ch) * hw;
            let xp = &x[off..off + hw];
            let (mean, var) = mean_var(xp);
            let inv = 1.0 / libm::sqrt(var + eps as f64);
            for (yo, &xi) in y[off..off + hw].iter_mut().zip(xp) {
                *yo = ((xi as f64 - mean) * inv) as f32 * scale[ch] + bias[ch];
            }
        }
    }
}

/// LRN across channels, x [n, c, hw] (ONNX formula: square_sum over [c - floor((size-1)/2), c + ceil((size-1)/2)], y = x / (bias + alpha/size * square_sum)^beta).
///
/// The window is clipped to the existing channels. `size` must be at least 1.
#[allow(
    clippy::too_many_arguments,
    reason = "mirrors the ONNX operator's attributes"
)]
pub fn lrn(
    n: usize,
    c: usize,
    hw: usize,
    size: usize,
    alpha: f32,
    beta: f32,
    bias: f32,
    x: &[f32],
    y: &mut [f32],
) {
    let size = size.max(1);
    let before = (size - 1) / 2;
    let after = size - 1 - before; // ceil((size - 1) / 2)
    let alpha_over_size = alpha / size as f32;
    for img in 0..n {
        let base = img * c * hw;
        for ch in 0..c {
            let lo = ch.saturating_sub(before);
            let hi = (ch + after).min(c - 1);
            for p in 0..hw {
                let mut sq = 0.0f32;
                for j in lo..=hi {
                    let v = x[base + j * hw + p];
                    sq += v * v;
                }
                let i = base + ch * hw + p;
                y[i] = x[i] * libm::powf(bias + alpha_over_size * sq, -beta);
            }
        }
    }
}

/// Normalizer mode (ONNX-ML `norm` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// Divide by the row's maximum (not its largest magnitude).
    Max,
    /// Divide by the sum of absolute values.
    L1,
    /// Divide by the Euclidean norm.
    L2,
}

/// ONNX-ML Normalizer per row of [rows, cols] (a zero row stays zero).
///
/// As in onnxruntime, a row whose divisor is exactly zero (for `Max`: whose
/// maximum is 0) is copied unchanged.
pub fn normalize_rows(rows: usize, cols: usize, norm: Norm, x: &[f32], y: &mut [f32]) {
    for r in 0..rows {
        let xr = &x[r * cols..(r + 1) * cols];
        let yr = &mut y[r * cols..(r + 1) * cols];
        match norm {
            Norm::Max => {
                let max = xr.iter().fold(f32::MIN, |m, &v| if v > m { v } else { m });
                divide_or_copy(xr, yr, max);
            }
            Norm::L1 => {
                let sum = xr.iter().fold(0.0f32, |s, &v| s + libm::fabsf(v));
                divide_or_copy(xr, yr, sum);
            }
            Norm::L2 => {
                let sum = xr.iter().fold(0.0f32, |s, &v| s + v * v);
                if sum != 0.0 {
                    for (yo, &xi) in yr.iter_mut().zip(xr) {
                        let m = libm::sqrtf(xi * xi / sum);
                        *yo = if xi < 0.0 { -m } else { m };
                    }
                } else {
                    yr.copy_from_slice(xr);
                }
            }
        }
    }
}

fn divide_or_copy(x: &[f32], y: &mut [f32], d: f32) {
    if d != 0.0 {
        for (yo, &xi) in y.iter_mut().zip(x) {
            *yo = xi / d;
        }
    } else {
        y.copy_from_slice(x);
    }
}

/// ONNX-ML `post_transform` of tree / linear classifier scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Post {
    /// Scores unchanged.
    None,
    /// Softmax over each row.
    Softmax,
    /// `1 / (1 + e^-x)` per score.
    Logistic,
    /// Softmax over each row's non-zero scores; zeros stay zero.
    SoftmaxZero,
    /// Inverse standard normal CDF per score.
    Probit,
}

/// ONNX-ML post_transform applied in place on [rows, cols] scores (SOFTMAX_ZERO: softmax that keeps zeros at zero; PROBIT: inverse normal CDF, sqrt(2)*erfinv(2p-1)).
///
/// SOFTMAX_ZERO follows onnxruntime (scores with `|v| <= 1e-7` count as
/// zero), except that a row with no non-zero score stays as it is instead of
/// becoming NaN. PROBIT is the exact inverse CDF (to f32 precision):
/// onnxruntime uses Winitzki's closed-form approximation, which differs by
/// up to about 1e-3 relative.
pub fn post_transform(rows: usize, cols: usize, post: Post, y: &mut [f32]) {
    for r in 0..rows {
        let row = &mut y[r * cols..(r + 1) * cols];
        match post {
            Post::None => {}
            Post::Logistic => row.iter_mut().for_each(|v| *v = logistic(*v)),
            Post::Probit => row.iter_mut().for_each(|v| *v = probit(*v)),
            Post::Softmax => {
                let max = row
                    .iter()
                    .fold(-f32::MAX, |m, &v| if v > m { v } else { m });
                let mut sum = 0.0f32;
                for v in row.iter_mut() {
                    *v = libm::expf(*v - max);
                    sum += *v;
                }
                row.iter_mut().for_each(|v| *v /= sum);
            }
            Post::SoftmaxZero => {
                let max = row
                    .iter()
                    .fold(-f32::MAX, |m, &v| if v > m { v } else { m });
                let exp_neg_max = libm::expf(-max);
                let mut sum = 0.0f32;
                for v in row.iter_mut() {
                    if *v > 1e-7 || *v < -1e-7 {
                        *v = libm::expf(*v - max);
                        sum += *v;
                    } else {
                        *v *= exp_neg_max;
                    }
                }
                if sum != 0.0 {
                    row.iter_mut().for_each(|v| *v /= sum);
                }
            }
        }
    }
}

/// Logistic in onnxruntime's form (symmetric, no overflow).
fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + libm::expf(-libm::fabsf(x)));
    if x < 0.0 { 1.0 - v } else { v }
}

/// Inverse of the standard normal CDF: `sqrt(2) * erfinv(2p - 1)`.
///
/// Acklam's rational approximation (relative error 1.15e-9) in `f64`,
/// refined by one Halley step on `erfc`. `p` outside [0, 1] gives NaN,
/// 0 and 1 give -inf and +inf.
fn probit(p: f32) -> f32 {
    let p = p as f64;
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f32::NAN;
    }
    if p == 0.0 {
        return f32::NEG_INFINITY;
    }
    if p == 1.0 {
        return f32::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.024_25;
    let x = if p < P_LOW {
        let q = libm::sqrt(-2.0 * libm::log(p));
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - P_LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = libm::sqrt(-2.0 * libm::log(1.0 - p));
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    // One Halley step: e = Phi(x) - p with Phi(x) = erfc(-x / sqrt 2) / 2.
    let e = 0.5 * libm::erfc(-x / core::f64::consts::SQRT_2) - p;
    let u = e * libm::sqrt(2.0 * core::f64::consts::PI) * libm::exp(x * x / 2.0);
    (x - u / (1.0 + x * u / 2.0)) as f32
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "at {i}: {x} vs {y} (got {a:?}, want {b:?})"
            );
        }
    }

    #[test]
    fn softmax_last_axis() {
        // e^0, e^1, e^2 = 1, 2.718282, 7.389056; sum 11.107338.
        let x = [0.0, 1.0, 2.0, 5.0, 5.0, 5.0];
        let mut y = [0.0; 6];
        softmax(2, 3, 1, false, &x, &mut y);
        close(
            &y,
            &[
                0.090_030_57,
                0.244_728_47,
                0.665_240_96,
                1.0 / 3.0,
                1.0 / 3.0,
                1.0 / 3.0,
            ],
            1e-6,
        );
        softmax(2, 3, 1, true, &x, &mut y);
        // ln(11.107338) = 2.407606
        close(
            &y,
            &[
                -2.407_606,
                -1.407_606,
                -0.407_606,
                -1.098_612_3,
                -1.098_612_3,
                -1.098_612_3,
            ],
            1e-6,
        );
    }

    #[test]
    fn softmax_middle_axis_and_large_values() {
        // [1, 2, 2] layout: axis of length 2, inner 2. Large values must not overflow.
        let x = [1000.0, 0.0, 1000.0, 1.0];
        let mut y = [0.0; 4];
        softmax(1, 2, 2, false, &x, &mut y);
        // column 0: equal -> 0.5 each; column 1: softmax(0, 1) = 0.268941, 0.731059
        close(&y, &[0.5, 0.268_941_43, 0.5, 0.731_058_6], 1e-6);
    }

    #[test]
    fn layer_norm_rows() {
        // row [1, 2, 3, 4]: mean 2.5, var 1.25, 1/sqrt(1.25) = 0.894427.
        let x = [1.0, 2.0, 3.0, 4.0, 2.0, 2.0, 2.0, 2.0];
        let scale = [1.0, 2.0, 1.0, 1.0];
        let bias = [0.0, 0.0, 0.5, 0.0];
        let mut y = [0.0; 8];
        layer_norm(2, 4, 0.0, &x, &scale, Some(&bias), &mut y);
        close(
            &y[..4],
            &[-1.341_640_8, -0.894_427_2, 0.947_213_6, 1.341_640_8],
            1e-6,
        );
        // constant row with eps 0 would be 0/0: use eps.
        layer_norm(2, 4, 1e-5, &x, &scale, None, &mut y);
        close(&y[4..], &[0.0, 0.0, 0.0, 0.0], 0.0);
    }

    #[test]
    fn batch_and_instance_norm() {
        // n = 1, c = 2, hw = 2
        let x = [1.0, 3.0, 10.0, 20.0];
        let mut y = [0.0; 4];
        // channel 0: (x - 1) / sqrt(4) * 2 + 1 -> 1, 3; channel 1: (x - 10) / 1 * 1 + 0 -> 0, 10
        batch_norm(
            1,
            2,
            2,
            0.0,
            &x,
            &[2.0, 1.0],
            &[1.0, 0.0],
            &[1.0, 10.0],
            &[4.0, 1.0],
            &mut y,
        );
        close(&y, &[1.0, 3.0, 0.0, 10.0], 1e-6);
        // instance: channel 0 mean 2 var 1 -> -1, 1; channel 1 mean 15 var 25 -> -1, 1
        instance_norm(1, 2, 2, 0.0, &x, &[1.0, 3.0], &[0.0, 1.0], &mut y);
        close(&y, &[-1.0, 1.0, -2.0, 4.0], 1e-6);
    }

    #[test]
    fn lrn_window() {
        // c = 3, hw = 1, size = 2 -> window [c, c + 1]; alpha 1, beta 1, bias 1.
        // square sums: 1 + 4 = 5, 4 + 9 = 13, 9
        // y = x / (1 + 0.5 * s): 1 / 3.5, 2 / 7.5, 3 / 5.5
        let x = [1.0, 2.0, 3.0];
        let mut y = [0.0; 3];
        lrn(1, 3, 1, 2, 1.0, 1.0, 1.0, &x, &mut y);
        close(&y, &[1.0 / 3.5, 2.0 / 7.5, 3.0 / 5.5], 1e-6);
        // size 3 -> window [c - 1, c + 1]: sums 5, 14, 13; beta 0.5:
        lrn(1, 3, 1, 3, 3.0, 0.5, 2.0, &x, &mut y);
        close(
            &y,
            &[
                1.0 / 7.0f32.sqrt(),
                2.0 / 16.0f32.sqrt(),
                3.0 / 15.0f32.sqrt(),
            ],
            1e-6,
        );
    }

    #[test]
    fn normalizer() {
        let x = [1.0, -2.0, 4.0, 0.0, 0.0, 0.0, 3.0, 4.0, 0.0];
        let mut y = [9.0; 9];
        normalize_rows(3, 3, Norm::Max, &x, &mut y);
        close(&y, &[0.25, -0.5, 1.0, 0.0, 0.0, 0.0, 0.75, 1.0, 0.0], 1e-7);
        normalize_rows(3, 3, Norm::L1, &x, &mut y);
        close(
            &y,
            &[
                1.0 / 7.0,
                -2.0 / 7.0,
                4.0 / 7.0,
                0.0,
                0.0,
                0.0,
                3.0 / 7.0,
                4.0 / 7.0,
                0.0,
            ],
            1e-7,
        );
        normalize_rows(3, 3, Norm::L2, &x, &mut y);
        let n = 21.0f32.sqrt();
        close(
            &y,
            &[1.0 / n, -2.0 / n, 4.0 / n, 0.0, 0.0, 0.0, 0.6, 0.8, 0.0],
            1e-6,
        );
    }

    #[test]
    fn post_transforms() {
        let mut y = [0.0, 1.0, -1.0, 100.0, -100.0, 2.0];
        post_transform(2, 3, Post::Logistic, &mut y);
        close(
            &y,
            &[0.5, 0.731_058_6, 0.268_941_43, 1.0, 0.0, 0.880_797_1],
            1e-6,
        );

        let mut y = [1.0, 2.0, 3.0];
        post_transform(1, 3, Post::Softmax, &mut y);
        close(&y, &[0.090_030_57, 0.244_728_47, 0.665_240_96], 1e-6);

        // zeros stay zero, the rest is a softmax of (1, 2).
        let mut y = [1.0, 0.0, 2.0, 0.0, 0.0, 0.0];
        post_transform(2, 3, Post::SoftmaxZero, &mut y);
        close(&y, &[0.268_941_43, 0.0, 0.731_058_6, 0.0, 0.0, 0.0], 1e-6);

        let mut y = [1.0, 2.0];
        post_transform(1, 2, Post::None, &mut y);
        assert_eq!(y, [1.0, 2.0]);
    }

    #[test]
    fn probit_values() {
        // Standard normal quantiles of f32-exact probabilities (Python's
        // statistics.NormalDist().inv_cdf, 12 digits).
        let p: [f32; 7] = [
            0.5,
            0.875,
            0.125,
            0.75,
            0.000_976_562_5,
            0.999_999_05,
            1e-10,
        ];
        let want = [
            0.0,
            1.150_349_4,
            -1.150_349_4,
            0.674_489_75,
            -3.097_269,
            4.763_001,
            -6.361_341,
        ];
        let mut y = p;
        post_transform(1, y.len(), Post::Probit, &mut y);
        close(&y, &want, 2e-6);
        let mut edge = vec![0.0, 1.0, -0.5, 1.5];
        post_transform(1, 4, Post::Probit, &mut edge);
        assert_eq!(edge[0], f32::NEG_INFINITY);
        assert_eq!(edge[1], f32::INFINITY);
        assert!(edge[2].is_nan() && edge[3].is_nan());
    }
}
