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

#[test]
#[ignore]
fn bench_pool() {
    use kiln_kernels::pool::*;
    let p = Pool2d {
        n: 1,
        c: 64,
        h: 112,
        w: 112,
        oh: 56,
        ow: 56,
        kh: 3,
        kw: 3,
        stride: [2, 2],
        dilation: [1, 1],
        pad: [1, 1, 1, 1],
    };
    let x = fill(64 * 112 * 112, 9);
    let mut y = vec![0.0f32; 64 * 56 * 56];
    for (name, f) in [("max3x3s2", 0), ("avg3x3s2", 1), ("gap", 2)] {
        let mut best = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            match f {
                0 => max_pool2d(&p, std::hint::black_box(&x), &mut y),
                1 => avg_pool2d(&p, false, std::hint::black_box(&x), &mut y),
                _ => global_avg_pool(64, 112 * 112, std::hint::black_box(&x), &mut y),
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "pool {name}: {:.1} us ({:.2} GB/s read)",
            best * 1e6,
            (x.len() * 4) as f64 / best / 1e9
        );
    }
}

#[test]
#[ignore]
fn bench_fixed() {
    use kiln_kernels::conv::*;
    let what = std::env::var("WHAT").unwrap();
    let iters: usize = std::env::var("ITERS").unwrap().parse().unwrap();
    match what.as_str() {
        "gemv_nt" | "gemv_t" => {
            let (n, k) = (500, 784);
            let a = fill(k, 1);
            let b = fill(k * n, 2);
            let mut c = vec![0.0f32; n];
            for _ in 0..iters {
                gemm(
                    1,
                    n,
                    k,
                    1.0,
                    std::hint::black_box(&a),
                    false,
                    &b,
                    what == "gemv_t",
                    0.0,
                    &mut c,
                );
            }
        }
        _ => {
            let p = Conv2d {
                n: 1,
                c: 16,
                h: 32,
                w: 32,
                m: 16,
                kh: 3,
                kw: 3,
                oh: 32,
                ow: 32,
                group: 1,
                stride: [1, 1],
                dilation: [1, 1],
                pad: [1; 4],
            };
            let x = fill(16 * 32 * 32, 3);
            let w = fill(16 * 16 * 9, 4);
            let b = fill(16, 5);
            let mut y = vec![0.0f32; 16 * 32 * 32];
            let mut s = vec![0.0f32; conv2d_scratch_len(&p)];
            for _ in 0..iters {
                conv2d(&p, std::hint::black_box(&x), &w, Some(&b), &mut y, &mut s);
            }
        }
    }
}

fn percall(name: &str, flops: f64, mut f: impl FnMut()) {
    for _ in 0..200 {
        f();
    }
    let mut v: Vec<f64> = (0..3000)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (mn, med) = (v[0], v[v.len() / 2]);
    println!(
        "{name}: min {:.2} us ({:.1} GFLOP/s), median {:.2} us ({:.1} GFLOP/s)",
        mn * 1e6,
        flops / mn / 1e9,
        med * 1e6,
        flops / med / 1e9
    );
}

#[test]
#[ignore]
fn bench_report() {
    use kiln_kernels::conv::*;
    for &(m, n, k) in &[
        (1usize, 500usize, 784usize),
        (1, 128, 640),
        (1, 10, 64),
        (16, 1024, 144),
        (64, 256, 576),
        (256, 64, 2304),
    ] {
        for tb in [false, true] {
            if m > 1 && tb {
                continue;
            }
            let a = fill(m * k, 1);
            let b = fill(k * n, 2);
            let mut c = vec![0.0f32; m * n];
            percall(
                &format!("gemm m={m} n={n} k={k} trans_b={tb}"),
                2.0 * (m * n * k) as f64,
                || {
                    gemm(
                        m,
                        n,
                        k,
                        1.0,
                        std::hint::black_box(&a),
                        false,
                        &b,
                        tb,
                        0.0,
                        &mut c,
                    )
                },
            );
            let mut c2 = vec![0.0f32; m * n];
            percall(&format!("  reference"), 2.0 * (m * n * k) as f64, || {
                gemm_reference(
                    m,
                    n,
                    k,
                    1.0,
                    std::hint::black_box(&a),
                    false,
                    &b,
                    tb,
                    0.0,
                    &mut c2,
                )
            });
        }
    }
    let p = Conv2d {
        n: 1,
        c: 16,
        h: 32,
        w: 32,
        m: 16,
        kh: 3,
        kw: 3,
        oh: 32,
        ow: 32,
        group: 1,
        stride: [1, 1],
        dilation: [1, 1],
        pad: [1; 4],
    };
    let x = fill(16 * 32 * 32, 3);
    let w = fill(16 * 16 * 9, 4);
    let b = fill(16, 5);
    let mut y = vec![0.0f32; 16 * 32 * 32];
    let mut s = vec![0.0f32; conv2d_scratch_len(&p)];
    let flops = 2.0 * (16 * 32 * 32 * 16 * 9) as f64;
    percall("conv [1,16,32,32]x[16,16,3,3] pad 1 (+bias)", flops, || {
        conv2d(&p, std::hint::black_box(&x), &w, Some(&b), &mut y, &mut s)
    });
    percall("  reference", flops, || {
        conv2d_reference(&p, std::hint::black_box(&x), &w, Some(&b), &mut y)
    });
}
