//! The statistics behind each drift test, computed as scipy computes them
//! for Evidently (its numbers are the reference: `kiln drift` must give
//! Evidently's p-values to 1e-6 and its distances to 1e-6 relative).

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

/// Upper bound of `sorted` for `v`: how many values are ≤ `v`.
fn count_le(sorted: &[f64], v: f64) -> usize {
    sorted.partition_point(|&x| x <= v)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Two-sample Kolmogorov–Smirnov test, two-sided: `(D, p-value)`.
///
/// As scipy's `ks_2samp` with `method="auto"` for samples of up to 10,000
/// values: `D` is rounded to the lattice of `1 / lcm(n1, n2)` (half to
/// even, as `np.round`) and the p-value is the exact probability that a
/// random path leaves the band (Hodges' inside method, in the `1 − p`
/// recursion). Above 10,000 values scipy switches to an asymptotic
/// distribution; this stays exact. Both samples sorted, neither empty.
pub fn ks_2samp(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (n1, n2) = (a.len(), b.len());
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for &v in a.iter().chain(b) {
        let d = count_le(a, v) as f64 / n1 as f64 - count_le(b, v) as f64 / n2 as f64;
        lo = lo.min(d);
        hi = hi.max(d);
    }
    let d = hi.max((-lo).clamp(0.0, 1.0));
    let (d, p) = ks_exact(n1, n2, d);
    (d, p)
}

/// The two-sided K-S p-value of statistic `d` between samples of `n1` and
/// `n2` values (both non-zero), as [`ks_2samp`] computes it.
pub fn ks_p_value(n1: usize, n2: usize, d: f64) -> f64 {
    ks_exact(n1, n2, d).1
}

/// Largest sample scipy's `method="auto"` computes exactly.
const MAX_EXACT_N: usize = 10_000;

/// `d` on the `1/lcm` lattice and its exact p-value; past
/// [`MAX_EXACT_N`] values, `d` and the asymptotic Kolmogorov p-value of
/// `√(n1·n2 / (n1 + n2)) · d` (scipy uses the finite-n distribution of the
/// rounded effective size there, so scores differ slightly; so does the
/// cost: the exact method takes time proportional to the larger sample,
/// which a device's counts must not be able to make unbounded).
fn ks_exact(n1: usize, n2: usize, d: f64) -> (f64, f64) {
    if n1.max(n2) > MAX_EXACT_N {
        let en = n1 as f64 * n2 as f64 / (n1 as f64 + n2 as f64);
        return (d, kolmogorov_sf(en.sqrt() * d));
    }
    let g = gcd(n1 as u64, n2 as u64);
    let lcm = (n1 as u64 / g) * n2 as u64;
    let h = (d * lcm as f64).round_ties_even() as u64;
    let d = h as f64 / lcm as f64;
    if h == 0 {
        return (d, 1.0);
    }
    let p = outside_probability(n1 as u64, n2 as u64, g, h);
    (d, p.clamp(0.0, 1.0))
}

/// The survival function of the Kolmogorov distribution,
/// `2 Σ (−1)^(k−1) exp(−2 k² x²)`.
fn kolmogorov_sf(x: f64) -> f64 {
    if x < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = f64::from(k);
        let term = (-2.0 * k * k * x * x).exp();
        sum += if k as u32 % 2 == 1 { term } else { -term };
        if term < 1e-18 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// The share of lattice paths from (0, 0) to (m, n) that leave the band
/// `|x/m − y/n| < h / lcm(m, n)` (`g = gcd(m, n)`), computed column by
/// column over a sliding window of the band, as the probability of
/// leaving so far (so no binomial coefficient overflows).
fn outside_probability(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng) = ((m / g) as i64, (n / g) as i64);
    let (n, h) = (n as i64, h as i64);
    let mut minj: i64 = 0;
    let mut maxj: i64 = (h.div_euclid(mg) + i64::from(h.rem_euclid(mg) != 0)).min(n + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n + 1) as usize;
    let mut a = vec![1.0f64; len_a];
    for v in &mut a[minj as usize..maxj as usize] {
        *v = 0.0;
    }
    for i in 1..=m as i64 {
        let (last_minj, last_len) = (minj, curlen);
        minj = ((ng * i - h).div_euclid(mg) + 1).max(0).min(n);
        let up = ng * i + h;
        maxj = (up.div_euclid(mg) + i64::from(up.rem_euclid(mg) != 0)).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        if (maxj - minj) as usize > a.len() {
            a.resize((maxj - minj) as usize, 1.0);
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            let src = (jj + minj - last_minj) as usize;
            let prev = a.get(src).copied().unwrap_or(1.0);
            val = (prev * i as f64 + val * j as f64) / (i + j) as f64;
            a[jj as usize] = val;
        }
        curlen = maxj - minj;
        if last_len > curlen {
            let start = (maxj - minj) as usize;
            let end = (start + (last_len - curlen) as usize).min(a.len());
            for v in &mut a[start..end] {
                *v = 1.0;
            }
        }
    }
    a[(maxj - minj - 1) as usize]
}

/// Evidently's two-proportion Z-test: the share of values other than the
/// smallest key in each sample, pooled; p-value `2 · (1 − Φ(|z|))`
/// (computed as written, so tiny p-values are 0 as there). `p = 1` when
/// both samples hold the same single value.
pub fn z_test(reference_other: usize, n1: usize, current_other: usize, n2: usize) -> f64 {
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let p1 = reference_other as f64 / n1f;
    let p2 = current_other as f64 / n2f;
    let pooled = (p1 * n1f + p2 * n2f) / (n1f + n2f);
    let z = (p1 - p2) / (pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f)).sqrt();
    let phi = Normal::standard().cdf(z.abs());
    2.0 * (1.0 - phi)
}

/// Pearson's chi-square goodness of fit of `observed` against `expected`
/// counts: the survival function of χ²(k − 1) at the statistic (scipy's
/// `chisquare`).
pub fn chi_square(observed: &[f64], expected: &[f64]) -> f64 {
    let stat: f64 = observed
        .iter()
        .zip(expected)
        .map(|(o, e)| (o - e) * (o - e) / e)
        .sum();
    let dof = observed.len().saturating_sub(1);
    if dof == 0 {
        return f64::NAN;
    }
    match ChiSquared::new(dof as f64) {
        Ok(d) => d.sf(stat),
        Err(_) => f64::NAN,
    }
}

/// The first Wasserstein distance between two samples (scipy's
/// `wasserstein_distance`: the area between their empirical CDFs), both
/// sorted.
pub fn wasserstein(u: &[f64], v: &[f64]) -> f64 {
    let mut all: Vec<f64> = u.iter().chain(v).copied().collect();
    all.sort_by(f64::total_cmp);
    let (nu, nv) = (u.len() as f64, v.len() as f64);
    all.windows(2)
        .map(|w| {
            let cu = count_le(u, w[0]) as f64 / nu;
            let cv = count_le(v, w[0]) as f64 / nv;
            (cu - cv).abs() * (w[1] - w[0])
        })
        .sum()
}

/// Population standard deviation (`np.std`, ddof 0).
pub fn std(x: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    (x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt()
}

/// The Jensen–Shannon distance between two histograms (scipy's
/// `jensenshannon`, natural log: each normalised, then
/// `sqrt((KL(p‖m) + KL(q‖m)) / 2)`).
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
    let rel = |x: f64, y: f64| {
        if x > 0.0 && y > 0.0 {
            x * (x / y).ln()
        } else if x == 0.0 && y >= 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    };
    let (mut left, mut right) = (0.0, 0.0);
    for (&a, &b) in p.iter().zip(q) {
        let (a, b) = (a / sp, b / sq);
        let m = (a + b) / 2.0;
        left += rel(a, m);
        right += rel(b, m);
    }
    ((left + right) / 2.0).sqrt()
}

/// Population stability index of two histograms (shares), zero shares
/// filled as Evidently fills them.
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    let fill = |v: &[f64]| -> Vec<f64> {
        let min = v
            .iter()
            .copied()
            .filter(|&x| x != 0.0)
            .fold(f64::INFINITY, f64::min);
        let eps = if min <= 1e-4 { min / 1e6 } else { 1e-4 };
        v.iter().map(|&x| if x == 0.0 { eps } else { x }).collect()
    };
    let (r, c) = (fill(reference), fill(current));
    r.iter().zip(&c).map(|(r, c)| (c - r) * (c / r).ln()).sum()
}

/// numpy's `histogram_bin_edges(x, bins="sturges")` over `all` (sorted):
/// as many equal bins as the range over Sturges' width rounds up to.
pub fn sturges_edges(all: &[f64]) -> Vec<f64> {
    let (first, last) = (all[0], all[all.len() - 1]);
    let (first, last) = if first == last {
        (first - 0.5, last + 0.5)
    } else {
        (first, last)
    };
    let range = last - first;
    let width = range / ((all.len() as f64).log2() + 1.0);
    let bins = if width > 0.0 {
        ((range / width).ceil() as usize).max(1)
    } else {
        1
    };
    let step = range / bins as f64;
    let mut edges: Vec<f64> = (0..=bins).map(|i| i as f64 * step + first).collect();
    edges[bins] = last;
    edges
}

/// `np.histogram(x, edges)[0]`: counts per bin, each bin `[e_i, e_i+1)`
/// and the last one closed; values outside the edges are not counted.
pub fn histogram(x: &[f64], edges: &[f64]) -> Vec<f64> {
    let bins = edges.len() - 1;
    let mut counts = vec![0.0; bins];
    let last = edges[bins];
    for &v in x {
        if v < edges[0] || v > last {
            continue;
        }
        let i = edges
            .partition_point(|&e| e <= v)
            .saturating_sub(1)
            .min(bins - 1);
        counts[i] += 1.0;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<f64>) -> Vec<f64> {
        v.sort_by(f64::total_cmp);
        v
    }

    /// Values from scipy 1.17.1 (`ks_2samp`, `chisquare`, `jensenshannon`,
    /// `wasserstein_distance`), printed with `repr`.
    #[test]
    fn matches_scipy_on_small_cases() {
        let a = sorted(vec![0.1, 0.4, 0.7, 1.3, 2.2, 2.9, 3.1]);
        let b = sorted(vec![0.5, 1.9, 2.5, 3.3, 4.0]);
        let (d, p) = ks_2samp(&a, &b);
        assert!((d - 0.4).abs() < 1e-12, "{d}");
        assert!((p - 0.6388888888888888).abs() < 1e-12, "{p}");
        let p = chi_square(&[10.0, 20.0, 30.0], &[20.0, 20.0, 20.0]);
        assert!((p - 0.006737946999085468).abs() < 1e-12, "{p}");
        let js = jensen_shannon(&[0.1, 0.4, 0.5], &[0.3, 0.3, 0.4]);
        assert!((js - 0.18035965602712561).abs() < 1e-12, "{js}");
        let w = wasserstein(&sorted(vec![0.0, 1.0, 3.0]), &sorted(vec![5.0, 6.0, 8.0]));
        assert!((w - 5.0).abs() < 1e-12, "{w}");
    }

    /// The exact p-value by brute force: the share of all ways to split
    /// the pooled (distinct) values into samples of n1 and n2 whose D is
    /// at least the observed one.
    fn brute_p(a: &[f64], b: &[f64]) -> f64 {
        let (n1, n2) = (a.len(), b.len());
        let d0 = ks_2samp(a, b).0;
        let all = sorted(a.iter().chain(b).copied().collect());
        let (mut hits, mut total) = (0u64, 0u64);
        for mask in 0u32..(1 << (n1 + n2)) {
            if mask.count_ones() as usize != n1 {
                continue;
            }
            let (x, y): (Vec<f64>, Vec<f64>) = {
                let (mut x, mut y) = (vec![], vec![]);
                for (i, &v) in all.iter().enumerate() {
                    if mask >> i & 1 == 1 {
                        x.push(v)
                    } else {
                        y.push(v)
                    }
                }
                (x, y)
            };
            total += 1;
            hits += u64::from(ks_2samp(&x, &y).0 >= d0 - 1e-12);
        }
        hits as f64 / total as f64
    }

    proptest::proptest! {
        #[test]
        fn ks_p_value_is_the_exact_permutation_probability(
            n1 in 1usize..7, n2 in 1usize..7, seed in 0u64..1000,
        ) {
            // Distinct values from a permutation of 0..n1+n2.
            let mut v: Vec<f64> = (0..n1 + n2).map(|i| i as f64).collect();
            let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            for i in (1..v.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                v.swap(i, (s >> 33) as usize % (i + 1));
            }
            let (a, b) = (sorted(v[..n1].to_vec()), sorted(v[n1..].to_vec()));
            let p = ks_2samp(&a, &b).1;
            proptest::prop_assert!((p - brute_p(&a, &b)).abs() < 1e-9, "{} vs {}", p, brute_p(&a, &b));
        }
    }

    /// Past 10,000 values the p-value is asymptotic: for these shifted
    /// grids scipy 1.17.1 gives D = 0.02005 and p = 0.000636 (its
    /// finite-n distribution), `kstwobign.sf` 0.000645; and huge counts
    /// cost no time.
    #[test]
    fn large_samples_use_the_asymptotic_distribution() {
        let a: Vec<f64> = (0..20_000).map(|i| f64::from(i) / 20_000.0).collect();
        let b: Vec<f64> = (0..20_000)
            .map(|i| f64::from(i) / 20_000.0 + 0.02)
            .collect();
        let (d, p) = ks_2samp(&a, &b);
        assert!((d - 0.020050000000000012).abs() < 1e-12, "{d}");
        assert!((p - 0.0006356828723877861).abs() < 0.02 * 0.000636, "{p}");
        let t = std::time::Instant::now();
        assert!(ks_p_value(usize::MAX / 4, 3, 0.5) <= 1.0);
        assert!(t.elapsed().as_millis() < 100);
    }

    #[test]
    fn sturges_bins_cover_the_range() {
        let all: Vec<f64> = (0..100).map(f64::from).collect();
        let e = sturges_edges(&all);
        // log2(100) + 1 = 7.64 -> 8 bins.
        assert_eq!(e.len(), 9);
        assert_eq!((e[0], e[8]), (0.0, 99.0));
        let h = histogram(&all, &e);
        assert_eq!(h.iter().sum::<f64>(), 100.0);
        // The last bin is closed.
        assert_eq!(histogram(&[99.0], &e)[7], 1.0);
    }

    #[test]
    fn identical_samples_do_not_drift() {
        let a = sorted((0..50).map(|i| f64::from(i) * 0.3).collect());
        assert_eq!(ks_2samp(&a, &a), (0.0, 1.0));
        assert_eq!(wasserstein(&a, &a), 0.0);
        assert_eq!(jensen_shannon(&[1.0, 2.0], &[2.0, 4.0]), 0.0);
        assert!((z_test(10, 100, 20, 200) - 1.0).abs() < 1e-12);
    }
}
