//! `gemm` (runtime-dispatched) against `gemm_reference`: the batch-1 shapes the engine uses and random shapes.

use kiln_kernels::gemm::{gemm, gemm_reference};
use proptest::prelude::*;

/// Deterministic values in [-1, 1).
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

/// Runs both implementations and compares with a tolerance of 1e-5·(k+1)
/// times the sum of absolute values of the terms of each output.
#[allow(clippy::too_many_arguments, reason = "mirrors the gemm signature")]
fn check(m: usize, n: usize, k: usize, ta: bool, tb: bool, alpha: f32, beta: f32, seed: u64) {
    let a = data(m * k, seed);
    let b = data(k * n, seed ^ 1);
    let mut c0 = data(m * n, seed ^ 2);
    if beta == 0.0 {
        c0.fill(f32::NAN);
    }
    let mut got = c0.clone();
    gemm(m, n, k, alpha, &a, ta, &b, tb, beta, &mut got);
    let mut want = c0.clone();
    gemm_reference(m, n, k, alpha, &a, ta, &b, tb, beta, &mut want);
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let mut bound = abs(&c0);
    gemm_reference(
        m,
        n,
        k,
        alpha.abs(),
        &abs(&a),
        ta,
        &abs(&b),
        tb,
        beta.abs(),
        &mut bound,
    );
    for (i, ((g, w), bd)) in got.iter().zip(&want).zip(&bound).enumerate() {
        let tol = 1e-5 * (k + 1) as f32 * bd.max(1e-6);
        assert!(
            (g - w).abs() <= tol,
            "m={m} n={n} k={k} ta={ta} tb={tb}: C[{i}] = {g}, want {w}"
        );
    }
}

#[test]
fn engine_shapes() {
    // GEMV (m = 1) shapes of batch-1 MLPs, both B layouts, with and without bias.
    for &(n, k) in &[(500, 784), (128, 640), (10, 64), (16, 1)] {
        for tb in [false, true] {
            check(1, n, k, false, tb, 1.0, 1.0, 7);
            check(1, n, k, false, tb, 1.0, 0.0, 8);
        }
    }
    // im2col shapes: m = out channels, k = c·kh·kw, n = oh·ow.
    for &(m, k, n) in &[
        (8, 9, 1024),
        (16, 144, 1024),
        (32, 288, 256),
        (64, 576, 64),
        (256, 2304, 16),
    ] {
        check(m, n, k, false, false, 1.0, 1.0, 9);
    }
    // Small m with every transpose combination, and small n (Cᵀ path).
    for m in 1..=5 {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            check(m, 37, 29, ta, tb, 0.5, -1.5, m as u64);
            check(37, m, 29, ta, tb, 0.5, -1.5, m as u64);
        }
    }
}

#[test]
fn beta_zero_ignores_nan_and_k_zero_scales() {
    let mut c = [f32::NAN; 4];
    gemm(2, 2, 0, 1.0, &[], false, &[], false, 0.0, &mut c);
    assert_eq!(c, [0.0; 4]);
    let mut c = [1.0, 2.0, 3.0, 4.0];
    gemm(2, 2, 0, 1.0, &[], false, &[], false, 2.0, &mut c);
    assert_eq!(c, [2.0, 4.0, 6.0, 8.0]);
    // [1 2; 3 4] · [5 6; 7 8] = [19 22; 43 50]
    let mut c = [f32::NAN; 4];
    gemm(
        2,
        2,
        2,
        1.0,
        &[1.0, 2.0, 3.0, 4.0],
        false,
        &[5.0, 6.0, 7.0, 8.0],
        false,
        0.0,
        &mut c,
    );
    assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
    // Aᵀ stored: A = [1 3; 2 4]ᵀ, Bᵀ stored.
    let mut c = [1.0; 4];
    gemm(
        2,
        2,
        2,
        1.0,
        &[1.0, 3.0, 2.0, 4.0],
        true,
        &[5.0, 7.0, 6.0, 8.0],
        true,
        1.0,
        &mut c,
    );
    assert_eq!(c, [20.0, 23.0, 44.0, 51.0]);
}

proptest! {
    #[test]
    fn gemm_matches_reference(
        m in prop_oneof![1usize..=4, 1usize..=24],
        n in prop_oneof![1usize..=4, 1usize..=80],
        k in prop_oneof![1usize..=8, 1usize..=64, 256usize..=300],
        ta in any::<bool>(),
        tb in any::<bool>(),
        alpha in prop_oneof![Just(1.0f32), -2.0f32..2.0],
        beta in prop_oneof![Just(0.0f32), Just(1.0f32), -2.0f32..2.0],
        seed in any::<u64>(),
    ) {
        check(m, n, k, ta, tb, alpha, beta, seed);
    }
}
