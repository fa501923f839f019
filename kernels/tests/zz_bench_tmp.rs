//! Throwaway timing (delete before commit).
use kiln_kernels::gemm::{gemm, gemm_reference};
use std::time::Instant;

fn fill(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn time_gemm(m: usize, n: usize, k: usize, ta: bool, tb: bool) {
    let a = fill(m * k, 1);
    let b = fill(k * n, 2);
    let mut c = vec![0.0f32; m * n];
    let mut c2 = vec![0.0f32; m * n];
    gemm(m, n, k, 1.0, &a, ta, &b, tb, 0.0, &mut c);
    gemm_reference(m, n, k, 1.0, &a, ta, &b, tb, 0.0, &mut c2);
    let err = c
        .iter()
        .zip(&c2)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    let flops = 2.0 * (m * n * k) as f64;
    let iters = ((1e8 / flops) as usize).clamp(1, 100000);
    let mut best = f64::MAX;
    for _ in 0..40 {
        let t = Instant::now();
        for _ in 0..iters {
            gemm(
                m,
                n,
                k,
                1.0,
                std::hint::black_box(&a),
                ta,
                &b,
                tb,
                0.0,
                &mut c,
            );
        }
        best = best.min(t.elapsed().as_secs_f64() / iters as f64);
    }
    println!(
        "m={m:4} n={n:5} k={k:5} ta={ta:5} tb={tb:5}: {:8.2} us {:7.2} GFLOP/s  maxerr {err:.2e}",
        best * 1e6,
        flops / best / 1e9
    );
}

#[test]
#[ignore]
fn bench_gemm() {
    for &(m, n, k) in &[
        (1, 500, 784),
        (1, 128, 640),
        (1, 10, 64),
        (1, 16, 1),
        (4, 500, 784),
    ] {
        time_gemm(m, n, k, false, false);
        time_gemm(m, n, k, false, true);
    }
    for &(m, n, k) in &[
        (16, 1024, 144),
        (8, 1024, 9),
        (32, 256, 288),
        (64, 256, 576),
        (128, 64, 1152),
        (256, 16, 2304),
        (256, 64, 2304),
        (64, 1024, 576),
        (512, 512, 512),
    ] {
        time_gemm(m, n, k, false, false);
    }
}

#[test]
#[ignore]
fn bench_one() {
    let v: Vec<usize> = std::env::var("SHAPE")
        .unwrap()
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    for _ in 0..v.get(3).copied().unwrap_or(1) {
        time_gemm(v[0], v[1], v[2], false, false);
    }
}

fn time_conv(c: usize, hw: usize, m: usize, k: usize, stride: usize, group: usize) {
    use kiln_kernels::conv::*;
    let pad = k / 2;
    let o = (hw + 2 * pad - k) / stride + 1;
    let p = Conv2d {
        n: 1,
        c,
        h: hw,
        w: hw,
        m,
        kh: k,
        kw: k,
        oh: o,
        ow: o,
        group,
        stride: [stride; 2],
        dilation: [1, 1],
        pad: [pad; 4],
    };
    let x = fill(c * hw * hw, 3);
    let w = fill(m * c / group * k * k, 4);
    let b = fill(m, 5);
    let mut y = vec![0.0f32; m * o * o];
    let mut y2 = vec![0.0f32; m * o * o];
    let mut s = vec![0.0f32; conv2d_scratch_len(&p)];
    conv2d(&p, &x, &w, Some(&b), &mut y, &mut s);
    conv2d_reference(&p, &x, &w, Some(&b), &mut y2);
    let err = y
        .iter()
        .zip(&y2)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    let flops = 2.0 * (m * o * o * (c / group) * k * k) as f64;
    let iters = ((1e8 / flops) as usize).clamp(1, 100000);
    let mut best = f64::MAX;
    for _ in 0..40 {
        let t = Instant::now();
        for _ in 0..iters {
            conv2d(&p, std::hint::black_box(&x), &w, Some(&b), &mut y, &mut s);
        }
        best = best.min(t.elapsed().as_secs_f64() / iters as f64);
    }
    println!(
        "conv c={c:3} hw={hw:3} m={m:3} k={k} s={stride} g={group:3}: {:8.2} us {:7.2} GFLOP/s maxerr {err:.1e}",
        best * 1e6,
        flops / best / 1e9
    );
}

#[test]
#[ignore]
fn bench_conv() {
    time_conv(16, 32, 16, 3, 1, 1);
    time_conv(3, 224, 32, 3, 2, 1);
    time_conv(32, 56, 64, 3, 1, 1);
    time_conv(64, 28, 128, 3, 1, 1);
    time_conv(256, 7, 256, 3, 1, 1);
    time_conv(64, 56, 128, 1, 1, 1);
    time_conv(32, 112, 32, 3, 1, 32);
    time_conv(128, 28, 128, 3, 2, 128);
}

#[test]
#[ignore]
fn bench_conv_one() {
    let v: Vec<usize> = std::env::var("CONV")
        .unwrap()
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    for _ in 0..v[6] {
        time_conv(v[0], v[1], v[2], v[3], v[4], v[5]);
    }
}
