//! Drift from sketches: the current window as a device reports it (counts
//! in the baseline's bins, `kiln_protocol::Sketch`) against the reference
//! counts the baseline carries. The test is chosen as for raw columns;
//! scores are exact where the bins hold single values (categorical and
//! discrete features: chi-square, Z-test, Jensen–Shannon, and K-S and
//! Wasserstein over the values) and approximate over a continuous
//! feature's quantile bins (K-S from the CDFs at the bin edges, Wasserstein
//! with each bin's mass spread evenly across it, Jensen–Shannon and PSI
//! over the quantile bins instead of Sturges bins).

use super::{
    ColumnDrift, DriftError, DriftOptions, DriftReport, Kind, StatTest, default_test, stattest,
};
use kiln_protocol::{Baseline, FeatureBaseline, Sketch};

/// `∫ |f|` over `[0, w]` for `f` linear from `a` to `b`.
fn abs_linear(a: f64, b: f64, w: f64) -> f64 {
    if a * b >= 0.0 {
        w * (a.abs() + b.abs()) / 2.0
    } else {
        w * (a * a + b * b) / (2.0 * (a.abs() + b.abs()))
    }
}

/// Cumulative shares of `counts`.
fn cdf(counts: &[u64], n: f64) -> Vec<f64> {
    let mut acc = 0u64;
    counts
        .iter()
        .map(|&c| {
            acc = acc.saturating_add(c);
            acc as f64 / n
        })
        .collect()
}

/// The drift report of `current` against `baseline`.
pub fn detect_sketch(
    baseline: &Baseline,
    current: &Sketch,
    options: &DriftOptions,
) -> Result<DriftReport, DriftError> {
    if current.features.len() != baseline.features.len() {
        return Err(DriftError::Sketch(format!(
            "the sketch has {} features, the baseline {}",
            current.features.len(),
            baseline.features.len()
        )));
    }
    let mut columns = vec![];
    for (k, (f, cur)) in baseline.features.iter().zip(&current.features).enumerate() {
        let name = baseline
            .names
            .get(k)
            .cloned()
            .unwrap_or_else(|| format!("feature {k}"));
        columns.push(judge(name, f, cur, options)?);
    }
    // Prediction drift: the model's outputs as one more column.
    match (&baseline.prediction, &current.prediction) {
        (Some(p), Some(c)) => columns.push(judge("prediction".into(), &p.feature, c, options)?),
        (None, None) => {}
        _ => {
            return Err(DriftError::Sketch(
                "the sketch and the baseline disagree on counting predictions".into(),
            ));
        }
    }
    Ok(DriftReport::of(columns, options.drift_share))
}

/// One feature's verdict from its reference counts (`f`) and current ones.
fn judge(
    name: String,
    f: &FeatureBaseline,
    cur: &kiln_protocol::FeatureCounts,
    options: &DriftOptions,
) -> Result<ColumnDrift, DriftError> {
    {
        let r = f.counts();
        let c = &cur.bins;
        if c.len() != r.len() {
            return Err(DriftError::Sketch(format!(
                "feature '{name}': the sketch has {} bins, the baseline {}",
                c.len(),
                r.len()
            )));
        }
        // Counts come from devices: sums saturate rather than overflow.
        let total = |v: &[u64]| v.iter().fold(0u64, |a, &b| a.saturating_add(b));
        let (nr, nc) = (total(r), total(c));
        for (window, n) in [("reference", nr), ("current", nc)] {
            if n == 0 {
                return Err(DriftError::Empty {
                    column: name.clone(),
                    window,
                });
            }
        }
        let (nrf, ncf) = (nr as f64, nc as f64);
        let kind = match f {
            FeatureBaseline::Values {
                categorical: true, ..
            } => Kind::Categorical,
            _ => Kind::Numerical,
        };
        // Distinct values: bins with a value in either window (a
        // continuous feature has more than 20 in the reference alone).
        let n_unique = match f {
            FeatureBaseline::Continuous { .. } => usize::MAX,
            FeatureBaseline::Values { .. } => {
                r.iter().zip(c).filter(|(a, b)| **a + **b > 0).count()
            }
        };
        let test = options
            .stattests
            .get(&name)
            .copied()
            .unwrap_or_else(|| default_test(kind, nr as usize, n_unique));
        let present: Vec<usize> = (0..r.len()).filter(|&i| r[i] > 0 || c[i] > 0).collect();
        let shares =
            |v: &[u64], n: f64| present.iter().map(|&i| v[i] as f64 / n).collect::<Vec<_>>();
        let score = match (test, f) {
            (StatTest::Ks, _) | (StatTest::Wasserstein, _) if kind == Kind::Categorical => {
                return Err(DriftError::NeedsNumbers {
                    column: name,
                    test: test.name(),
                });
            }
            (StatTest::Ks, _) => {
                // CDFs where they are known: at each edge, or at each value
                // (the "other" bin last, where both reach 1).
                let (fr, fc) = (cdf(r, nrf), cdf(c, ncf));
                let d = fr
                    .iter()
                    .zip(&fc)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                stattest::ks_p_value(nr as usize, nc as usize, d)
            }
            (StatTest::Wasserstein, FeatureBaseline::Values { values, .. }) => {
                let (fr, fc) = (cdf(r, nrf), cdf(c, ncf));
                let w: f64 = values
                    .windows(2)
                    .enumerate()
                    .map(|(i, v)| (fr[i] - fc[i]).abs() * (v[1] - v[0]))
                    .sum();
                let mean = values
                    .iter()
                    .zip(r)
                    .map(|(v, &n)| v * n as f64)
                    .sum::<f64>()
                    / nrf;
                let var = values
                    .iter()
                    .zip(r)
                    .map(|(v, &n)| (v - mean) * (v - mean) * n as f64)
                    .sum::<f64>()
                    / nrf;
                w / var.sqrt().max(0.001)
            }
            (
                StatTest::Wasserstein,
                FeatureBaseline::Continuous {
                    edges,
                    min,
                    max,
                    variance,
                    ..
                },
            ) => {
                // Knots: the lowest value seen, each edge, the highest;
                // both CDFs linear in between.
                let lo = min.min(cur.min);
                let hi = max.max(cur.max);
                let mut xs = vec![lo];
                xs.extend(edges.iter().map(|e| e.clamp(lo, hi)));
                xs.push(hi);
                let (fr, fc) = (cdf(r, nrf), cdf(c, ncf));
                let mut diff = vec![0.0];
                diff.extend(fr.iter().zip(&fc).take(edges.len()).map(|(a, b)| a - b));
                diff.push(0.0);
                let w: f64 = (0..xs.len() - 1)
                    .map(|i| abs_linear(diff[i], diff[i + 1], xs[i + 1] - xs[i]))
                    .sum();
                w / variance.sqrt().max(0.001)
            }
            (StatTest::ZTest, _) => {
                if present.len() == 1
                    && r[present[0]] > 0
                    && c[present[0]] > 0
                    && present[0] + 1 < r.len()
                {
                    1.0
                } else {
                    let first = present.first().copied().unwrap_or(0);
                    stattest::z_test(
                        (nr - r[first]) as usize,
                        nr as usize,
                        (nc - c[first]) as usize,
                        nc as usize,
                    )
                }
            }
            (StatTest::ChiSquare, _) => {
                let k_norm = ncf / nrf;
                let expected: Vec<f64> = present.iter().map(|&i| r[i] as f64 * k_norm).collect();
                let observed: Vec<f64> = present.iter().map(|&i| c[i] as f64).collect();
                stattest::chi_square(&observed, &expected)
            }
            (StatTest::JensenShannon, _) => {
                stattest::jensen_shannon(&shares(r, nrf), &shares(c, ncf))
            }
            (StatTest::Psi, _) => stattest::psi(&shares(r, nrf), &shares(c, ncf)),
        };
        let threshold = options
            .thresholds
            .get(&name)
            .copied()
            .unwrap_or(test.default_threshold());
        let drifted = if test.is_p_value() {
            score < threshold
        } else {
            score >= threshold
        };
        Ok(ColumnDrift {
            column: name,
            column_type: if kind == Kind::Numerical {
                "num"
            } else {
                "cat"
            },
            stattest_name: test.name(),
            stattest_threshold: threshold,
            drift_score: score,
            drift_detected: drifted,
        })
    }
}
