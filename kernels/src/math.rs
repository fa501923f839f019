//! Scalar math shared by element-wise kernels (no_std: everything through `libm`).

/// Logistic sigmoid, stable for large |x|.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + libm::expf(-x))
    } else {
        let e = libm::expf(x);
        e / (1.0 + e)
    }
}

#[inline]
pub fn erf(x: f32) -> f32 {
    libm::erff(x)
}

/// GELU, exact (erf) or with the tanh approximation.
#[inline]
pub fn gelu(x: f32, tanh_approx: bool) -> f32 {
    if tanh_approx {
        const C: f32 = 0.797_884_6; // sqrt(2/pi)
        0.5 * x * (1.0 + libm::tanhf(C * (x + 0.044_715 * x * x * x)))
    } else {
        0.5 * x * (1.0 + libm::erff(x * core::f32::consts::FRAC_1_SQRT_2))
    }
}

/// Softplus `ln(1 + e^x)` without overflow.
#[inline]
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        libm::log1pf(libm::expf(x))
    }
}

/// Round half to even (ONNX Round, QuantizeLinear).
#[inline]
pub fn round_half_even(x: f32) -> f32 {
    let r = libm::roundf(x);
    if libm::fabsf(x - libm::truncf(x)) == 0.5 {
        2.0 * libm::roundf(x / 2.0)
    } else {
        r
    }
}

/// Applies `f` element-wise: `y[i] = f(x[i])`.
#[inline]
pub fn map<F: Fn(f32) -> f32>(x: &[f32], y: &mut [f32], f: F) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = f(v);
    }
}

/// Applies `f` in place.
#[inline(always)]
pub fn map_inplace<F: Fn(f32) -> f32>(y: &mut [f32], f: F) {
    for v in y.iter_mut() {
        *v = f(*v);
    }
}

/// The four float arithmetic ops of [`arith`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

/// `out[i] = a[i] ∘ b[i]` over `out.len()` elements (residual adds and the
/// like; broadcasts stay in the engine). Neither generic nor inlined, so it
/// is compiled with the kernels (vectorised) however its caller is built:
/// under fat LTO an inlined body takes its caller's size optimisation.
///
/// # Panics
/// If an operand is shorter than `out`.
#[inline(never)]
pub fn arith(op: Arith, a: &[f32], b: &[f32], out: &mut [f32]) {
    match op {
        Arith::Add => zip_with(a, b, out, |p, q| p + q),
        Arith::Sub => zip_with(a, b, out, |p, q| p - q),
        Arith::Mul => zip_with(a, b, out, |p, q| p * q),
        Arith::Div => zip_with(a, b, out, |p, q| p / q),
    }
}

#[inline(always)]
fn zip_with(a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    let n = out.len();
    for ((o, &p), &q) in out.iter_mut().zip(&a[..n]).zip(&b[..n]) {
        *o = f(p, q);
    }
}

/// Index of the first NaN or infinity among little-endian `f32` bytes
/// (a trailing partial element is ignored). Blocks of 64 are screened with
/// one vectorisable OR before any element is looked at: the runtimes check
/// every float input with this before a run. Not inlined (see
/// [`relu_inplace`]).
#[inline(never)]
pub fn first_non_finite_f32(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 64;
    let bad = |c: &[u8; 4]| u32::from_le_bytes(*c) & 0x7f80_0000 == 0x7f80_0000;
    let (words, _) = bytes.as_chunks::<4>();
    let (blocks, _) = words.as_chunks::<BLOCK>();
    let mut start = blocks.len() * BLOCK;
    for (b, block) in blocks.iter().enumerate() {
        if block.iter().fold(false, |any, c| any | bad(c)) {
            start = b * BLOCK;
            break;
        }
    }
    words[start..].iter().position(bad).map(|i| start + i)
}

/// `y = max(y, 0)` in place (NaN becomes 0, as ONNX Relu in onnxruntime).
/// Not inlined, so it is compiled with this crate's optimisation level
/// (vectorised; the wasm build compiles the engine for size).
#[inline(never)]
pub fn relu_inplace(y: &mut [f32]) {
    map_inplace(y, |x| if x > 0.0 { x } else { 0.0 });
}

/// `y = y >= 0 ? y : alpha·y` in place.
#[inline(never)]
pub fn leaky_relu_inplace(y: &mut [f32], alpha: f32) {
    map_inplace(y, |x| if x >= 0.0 { x } else { alpha * x });
}

/// Clamps to `[lo, hi]` in place; NaN stays NaN.
#[inline(never)]
pub fn clip_inplace(y: &mut [f32], lo: f32, hi: f32) {
    map_inplace(y, |x| clamp_keep_nan(x, lo, hi));
}

/// Clamps to `[lo, hi]`, letting NaN through (`f32::clamp`-like, but
/// written with comparisons so it vectorises and never hides a NaN).
#[inline(always)]
fn clamp_keep_nan(x: f32, lo: f32, hi: f32) -> f32 {
    let x = if x < lo { lo } else { x };
    if x > hi { hi } else { x }
}

/// `e^x` without branches or calls, so loops over it vectorise: range
/// reduction `x = n·ln2 + r` (`|r| <= ln2/2`, ln2 split in two for an exact
/// product), a degree-7 Taylor polynomial for `e^r` (truncation below
/// 1e-8 relative) and `2^n` built from its exponent bits. Within 2 ulp of
/// `libm::expf` on `[-87, 88]`; inputs are clamped to that range (so the
/// result is never 0 or infinite), NaN stays NaN.
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    // ln2 = LN2_HI + LN2_LO, LN2_HI with few mantissa bits so n·LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = clamp_keep_nan(x, -87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // n is in [-126, 127] and sits in the low mantissa bits of t (whose
    // exponent is that of ROUND): the biased exponent n + 127 is an integer
    // subtraction away, with no float-to-int conversion (which would not
    // vectorise). A NaN x gives a NaN p, so any scale keeps it NaN.
    let scale = f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits() - 127) << 23);
    p * scale
}

/// Logistic sigmoid through [`exp_approx`] (vectorisable; absolute error
/// below 1e-7, relative error a few ulp where the result is above 1e-30).
#[inline(always)]
pub fn sigmoid_approx(x: f32) -> f32 {
    1.0 / (1.0 + exp_approx(-x))
}

/// `tanh` without branches or calls: an odd Taylor polynomial for
/// `|x| < 0.3` (truncation below 1e-7 relative), else
/// `1 - 2 / (e^{2|x|} + 1)` with the sign of `x`. Within a few ulp of
/// `libm::tanhf`; NaN stays NaN.
#[inline(always)]
pub fn tanh_approx(x: f32) -> f32 {
    let ax = if x < 0.0 { -x } else { x };
    let x2 = x * x;
    let p = 62.0 / 2835.0;
    let p = p * x2 - 17.0 / 315.0;
    let p = p * x2 + 2.0 / 15.0;
    let p = p * x2 - 1.0 / 3.0;
    let small = x + x * x2 * p;
    let big = 1.0 - 2.0 / (exp_approx(2.0 * ax) + 1.0);
    let big = if x < 0.0 { -big } else { big };
    if ax < 0.3 { small } else { big }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arith_is_elementwise() {
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        let b = [0.5f32, -1.0, 2.0, 8.0, -4.0];
        let mut out = [0.0f32; 5];
        for (op, f) in [
            (Arith::Add, (|p, q| p + q) as fn(f32, f32) -> f32),
            (Arith::Sub, |p, q| p - q),
            (Arith::Mul, |p, q| p * q),
            (Arith::Div, |p, q| p / q),
        ] {
            arith(op, &a, &b, &mut out);
            assert!((0..5).all(|i| out[i] == f(a[i], b[i])), "{op:?}");
        }
    }

    #[test]
    fn first_non_finite_finds_the_first_bad_element_anywhere() {
        for len in [0usize, 1, 5, 63, 64, 65, 200] {
            let good: std::vec::Vec<f32> = (0..len).map(|i| i as f32 - 7.5).collect();
            let bytes = |v: &[f32]| {
                v.iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect::<std::vec::Vec<u8>>()
            };
            assert_eq!(first_non_finite_f32(&bytes(&good)), None);
            for at in 0..len {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut v = good.clone();
                    v[at] = bad;
                    if at + 1 < len {
                        v[len - 1] = f32::NAN;
                    }
                    assert_eq!(
                        first_non_finite_f32(&bytes(&v)),
                        Some(at),
                        "len {len} at {at}"
                    );
                }
            }
            // A trailing partial element is not an element.
            let mut b = bytes(&good);
            b.extend_from_slice(&[0xff, 0xff]);
            assert_eq!(first_non_finite_f32(&b), None);
        }
    }

    /// Sweeps `[lo, hi]` and returns the largest error of `f` against `g`
    /// measured as |d| / max(|want|, floor).
    fn worst(f: fn(f32) -> f32, g: fn(f32) -> f32, lo: f32, hi: f32, floor: f32) -> (f32, f32) {
        let steps = 200_000;
        let mut worst = (0.0f32, lo);
        for i in 0..=steps {
            let x = lo + (hi - lo) * (i as f32 / steps as f32);
            let (got, want) = (f(x), g(x));
            let e = (got - want).abs() / want.abs().max(floor);
            if e > worst.0 {
                worst = (e, x);
            }
        }
        worst
    }

    #[test]
    fn approximations_match_libm() {
        let sig = |x: f32| 1.0 / (1.0 + libm::expf(-x));
        let (e, at) = worst(exp_approx, libm::expf, -87.0, 88.0, 0.0);
        assert!(e < 3e-7, "exp: rel error {e} at {at}");
        let (e, at) = worst(sigmoid_approx, sig, -80.0, 80.0, 1e-30);
        assert!(e < 3e-7, "sigmoid: rel error {e} at {at}");
        let (e, at) = worst(tanh_approx, libm::tanhf, -20.0, 20.0, 0.0);
        assert!(e < 5e-7, "tanh: rel error {e} at {at}");
        let (e, at) = worst(tanh_approx, libm::tanhf, -1e-3, 1e-3, 0.0);
        assert!(e < 3e-7, "tanh near 0: rel error {e} at {at}");
    }

    #[test]
    fn approximations_keep_nan_and_saturate() {
        assert!(exp_approx(f32::NAN).is_nan());
        assert!(sigmoid_approx(f32::NAN).is_nan());
        assert!(tanh_approx(f32::NAN).is_nan());
        assert_eq!(tanh_approx(f32::INFINITY), 1.0);
        assert_eq!(tanh_approx(f32::NEG_INFINITY), -1.0);
        assert_eq!(sigmoid_approx(f32::INFINITY), 1.0);
        assert!(sigmoid_approx(f32::NEG_INFINITY) < 1e-37);
        assert!(exp_approx(1e6).is_finite() && exp_approx(-1e6) > 0.0);
        assert_eq!(tanh_approx(0.0), 0.0);
    }

    #[test]
    fn round_half_even_matches_onnx() {
        let cases = [
            (0.5, 0.0),
            (1.5, 2.0),
            (2.5, 2.0),
            (-0.5, -0.0),
            (-1.5, -2.0),
            (2.4, 2.0),
            (2.6, 3.0),
        ];
        for (x, want) in cases {
            assert_eq!(round_half_even(x), want, "round({x})");
        }
    }

    #[test]
    fn sigmoid_is_stable() {
        assert_eq!(sigmoid(-200.0), 0.0);
        assert_eq!(sigmoid(200.0), 1.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
    }
}

#[cfg(test)]
mod activation_tests {
    use super::*;

    #[test]
    fn in_place_activations_match_their_definitions() {
        let xs = [
            -3.0f32,
            -0.0,
            0.0,
            0.5,
            7.0,
            f32::NAN,
            f32::NEG_INFINITY,
            f32::INFINITY,
        ];
        let mut y = xs;
        relu_inplace(&mut y);
        for (&x, &r) in xs.iter().zip(&y) {
            assert_eq!(
                r.to_bits(),
                (if x > 0.0 { x } else { 0.0 }).to_bits(),
                "relu {x}"
            );
        }
        let mut y = xs;
        leaky_relu_inplace(&mut y, 0.1);
        assert_eq!(y[0], -0.3f32 * 1.0);
        assert!(y[5].is_nan());
        let mut y = xs;
        clip_inplace(&mut y, -1.0, 6.0);
        assert_eq!(&y[..5], &[-1.0, -0.0, 0.0, 0.5, 6.0]);
        assert!(y[5].is_nan());
        assert_eq!((y[6], y[7]), (-1.0, 6.0));
    }
}
