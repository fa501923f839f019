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
#[inline]
pub fn map_inplace<F: Fn(f32) -> f32>(y: &mut [f32], f: F) {
    for v in y.iter_mut() {
        *v = f(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
