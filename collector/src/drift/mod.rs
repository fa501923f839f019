//! Data drift between a reference window and a current one, column by
//! column, as Evidently's `DataDriftPreset` decides it by default, so
//! that a Kiln verdict and an Evidently verdict on the same data agree.
//!
//! Test choice (Evidently's `_get_default_stattest`; `n_unique` counts the
//! distinct values of reference and current together):
//!
//! | reference rows | column | distinct values | test (threshold) |
//! |---|---|---|---|
//! | ≤ 1000 | numerical | > 5 | K-S p-value (0.05) |
//! | ≤ 1000 | numerical | 3–5 | chi-square p-value (0.05) |
//! | ≤ 1000 | any | ≤ 2 | Z-test p-value (0.05) |
//! | ≤ 1000 | categorical | > 2 | chi-square p-value (0.05) |
//! | > 1000 | numerical | > 5 | Wasserstein distance normed by the reference's std (0.1) |
//! | > 1000 | otherwise | | Jensen–Shannon distance (0.1) |
//!
//! A p-value drifts below its threshold, a distance at or above it. The
//! dataset drifts when the share of drifted columns reaches
//! [`DriftOptions::drift_share`] (0.5). Missing values (NaN, empty
//! labels) are left out of every test.

mod sketched;
pub mod stattest;

pub use sketched::detect_sketch;

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One cell of a column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Text(String),
}

impl Value {
    fn missing(&self) -> bool {
        match self {
            Value::Number(v) => v.is_nan(),
            Value::Text(s) => s.is_empty(),
        }
    }

    /// A total order: numbers (by value) before labels (by text).
    fn key(&self) -> Key<'_> {
        match self {
            Value::Number(v) => Key::Number(OrdF64(*v)),
            Value::Text(s) => Key::Text(s),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct OrdF64(f64);
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key<'a> {
    Number(OrdF64),
    Text(&'a str),
}

/// How a column is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Numerical,
    Categorical,
}

/// One column of both windows.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
    pub reference: Vec<Value>,
    pub current: Vec<Value>,
}

/// A drift test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatTest {
    Ks,
    ZTest,
    ChiSquare,
    Wasserstein,
    JensenShannon,
    Psi,
}

impl StatTest {
    /// Evidently's name for the test's score.
    pub fn name(self) -> &'static str {
        match self {
            StatTest::Ks => "K-S p_value",
            StatTest::ZTest => "Z-test p_value",
            StatTest::ChiSquare => "chi-square p_value",
            StatTest::Wasserstein => "Wasserstein distance (normed)",
            StatTest::JensenShannon => "Jensen-Shannon distance",
            StatTest::Psi => "PSI",
        }
    }

    /// A p-value (drift below the threshold) rather than a distance (drift
    /// at or above it).
    pub fn is_p_value(self) -> bool {
        matches!(self, StatTest::Ks | StatTest::ZTest | StatTest::ChiSquare)
    }

    pub fn default_threshold(self) -> f64 {
        if self.is_p_value() { 0.05 } else { 0.1 }
    }
}

impl std::str::FromStr for StatTest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "ks" => StatTest::Ks,
            "z" => StatTest::ZTest,
            "chisquare" => StatTest::ChiSquare,
            "wasserstein" => StatTest::Wasserstein,
            "jensenshannon" => StatTest::JensenShannon,
            "psi" => StatTest::Psi,
            _ => {
                return Err(format!(
                    "unknown drift test '{s}' (expected ks, z, chisquare, wasserstein, jensenshannon or psi)"
                ));
            }
        })
    }
}

/// Settings of a drift computation; the defaults are Evidently's.
#[derive(Debug, Clone)]
pub struct DriftOptions {
    /// Share of drifted columns at which the dataset drifts.
    pub drift_share: f64,
    /// A test per column instead of the default choice.
    pub stattests: HashMap<String, StatTest>,
    /// A threshold per column instead of the test's default.
    pub thresholds: HashMap<String, f64>,
}

impl Default for DriftOptions {
    fn default() -> Self {
        DriftOptions {
            drift_share: 0.5,
            stattests: HashMap::new(),
            thresholds: HashMap::new(),
        }
    }
}

/// One column's verdict.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ColumnDrift {
    pub column: String,
    /// `num` or `cat`, as Evidently writes it.
    pub column_type: &'static str,
    pub stattest_name: &'static str,
    pub stattest_threshold: f64,
    pub drift_score: f64,
    pub drift_detected: bool,
}

/// The verdict over all columns.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DriftReport {
    pub number_of_columns: usize,
    pub number_of_drifted_columns: usize,
    pub share_of_drifted_columns: f64,
    pub drift_share: f64,
    pub dataset_drift: bool,
    pub columns: Vec<ColumnDrift>,
}

/// Why drift could not be computed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriftError {
    #[error("column '{column}': the {window} window has no values (after dropping missing ones)")]
    Empty {
        column: String,
        window: &'static str,
    },
    #[error("column '{column}' is numerical but holds '{value}'; mark it categorical")]
    NotNumeric { column: String, value: String },
    #[error("column '{column}': {test} needs a numerical column")]
    NeedsNumbers { column: String, test: &'static str },
    #[error("the sketch does not fit the baseline: {0}")]
    Sketch(String),
}

/// The present values of `v`.
fn present(v: &[Value]) -> Vec<&Value> {
    v.iter().filter(|x| !x.missing()).collect()
}

/// Sorted numbers of a numerical column's window.
fn numbers(column: &str, v: &[&Value]) -> Result<Vec<f64>, DriftError> {
    let mut out = v
        .iter()
        .map(|x| match x {
            Value::Number(n) => Ok(*n),
            Value::Text(s) => Err(DriftError::NotNumeric {
                column: column.into(),
                value: s.clone(),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// Count of each distinct value.
fn counts<'a>(v: &[&'a Value]) -> BTreeMap<Key<'a>, usize> {
    let mut m = BTreeMap::new();
    for x in v {
        *m.entry(x.key()).or_insert(0) += 1;
    }
    m
}

/// Reference and current shares over common bins: Sturges bins over both
/// windows for numerical columns with more than 20 distinct reference
/// values, else one bin per distinct value (Evidently's `get_binned_data`).
fn binned(column: &Column, r: &[&Value], c: &[&Value]) -> Result<(Vec<f64>, Vec<f64>), DriftError> {
    let (rc, cc) = (counts(r), counts(c));
    let (nr, nc) = (r.len() as f64, c.len() as f64);
    if column.kind == Kind::Numerical && rc.len() > 20 {
        let (rn, cn) = (numbers(&column.name, r)?, numbers(&column.name, c)?);
        let mut all: Vec<f64> = rn.iter().chain(&cn).copied().collect();
        all.sort_by(f64::total_cmp);
        let edges = stattest::sturges_edges(&all);
        let share = |h: Vec<f64>, n: f64| h.into_iter().map(|k| k / n).collect();
        return Ok((
            share(stattest::histogram(&rn, &edges), nr),
            share(stattest::histogram(&cn, &edges), nc),
        ));
    }
    let keys: BTreeSet<Key<'_>> = rc.keys().chain(cc.keys()).copied().collect();
    let share =
        |m: &BTreeMap<Key<'_>, usize>, k: &Key<'_>, n: f64| *m.get(k).unwrap_or(&0) as f64 / n;
    Ok((
        keys.iter().map(|k| share(&rc, k, nr)).collect(),
        keys.iter().map(|k| share(&cc, k, nc)).collect(),
    ))
}

/// Evidently's default test for a column.
pub fn default_test(kind: Kind, reference_rows: usize, n_unique: usize) -> StatTest {
    match (reference_rows <= 1000, kind) {
        (true, Kind::Numerical) if n_unique > 5 => StatTest::Ks,
        (true, _) if n_unique <= 2 => StatTest::ZTest,
        (true, _) => StatTest::ChiSquare,
        (false, Kind::Numerical) if n_unique > 5 => StatTest::Wasserstein,
        (false, _) => StatTest::JensenShannon,
    }
}

/// The drift score of `test` on one column.
fn score(column: &Column, test: StatTest, r: &[&Value], c: &[&Value]) -> Result<f64, DriftError> {
    let name = &column.name;
    Ok(match test {
        StatTest::Ks => {
            let (a, b) = (numbers(name, r)?, numbers(name, c)?);
            stattest::ks_2samp(&a, &b).1
        }
        StatTest::Wasserstein => {
            let (a, b) = (numbers(name, r)?, numbers(name, c)?);
            stattest::wasserstein(&a, &b) / stattest::std(&a).max(0.001)
        }
        StatTest::ZTest => {
            let keys: BTreeSet<Key<'_>> = r.iter().chain(c).map(|v| v.key()).collect();
            let (rk, ck): (BTreeSet<Key<'_>>, BTreeSet<Key<'_>>) = (
                r.iter().map(|v| v.key()).collect(),
                c.iter().map(|v| v.key()).collect(),
            );
            if rk.len() == 1 && ck.len() == 1 && rk == ck {
                1.0
            } else {
                let first = keys.first().copied();
                let other = |w: &[&Value]| w.iter().filter(|v| Some(v.key()) != first).count();
                stattest::z_test(other(r), r.len(), other(c), c.len())
            }
        }
        StatTest::ChiSquare => {
            let (rc, cc) = (counts(r), counts(c));
            let keys: BTreeSet<Key<'_>> = rc.keys().chain(cc.keys()).copied().collect();
            let k_norm = c.len() as f64 / r.len() as f64;
            let expected: Vec<f64> = keys
                .iter()
                .map(|k| *rc.get(k).unwrap_or(&0) as f64 * k_norm)
                .collect();
            let observed: Vec<f64> = keys
                .iter()
                .map(|k| *cc.get(k).unwrap_or(&0) as f64)
                .collect();
            stattest::chi_square(&observed, &expected)
        }
        StatTest::JensenShannon => {
            let (p, q) = binned(column, r, c)?;
            stattest::jensen_shannon(&p, &q)
        }
        StatTest::Psi => {
            let (p, q) = binned(column, r, c)?;
            stattest::psi(&p, &q)
        }
    })
}

/// Drift of every column, then of the dataset.
pub fn detect(columns: &[Column], options: &DriftOptions) -> Result<DriftReport, DriftError> {
    let mut out = vec![];
    for column in columns {
        let (r, c) = (present(&column.reference), present(&column.current));
        for (window, v) in [("reference", &r), ("current", &c)] {
            if v.is_empty() {
                return Err(DriftError::Empty {
                    column: column.name.clone(),
                    window,
                });
            }
        }
        let n_unique = r
            .iter()
            .chain(&c)
            .map(|v| v.key())
            .collect::<BTreeSet<_>>()
            .len();
        let test = options
            .stattests
            .get(&column.name)
            .copied()
            .unwrap_or_else(|| default_test(column.kind, r.len(), n_unique));
        if matches!(test, StatTest::Ks | StatTest::Wasserstein) && column.kind != Kind::Numerical {
            return Err(DriftError::NeedsNumbers {
                column: column.name.clone(),
                test: test.name(),
            });
        }
        let threshold = options
            .thresholds
            .get(&column.name)
            .copied()
            .unwrap_or(test.default_threshold());
        let s = score(column, test, &r, &c)?;
        let drifted = if test.is_p_value() {
            s < threshold
        } else {
            s >= threshold
        };
        out.push(ColumnDrift {
            column: column.name.clone(),
            column_type: match column.kind {
                Kind::Numerical => "num",
                Kind::Categorical => "cat",
            },
            stattest_name: test.name(),
            stattest_threshold: threshold,
            drift_score: s,
            drift_detected: drifted,
        });
    }
    Ok(DriftReport::of(out, options.drift_share))
}

impl DriftReport {
    /// The dataset verdict over `columns`.
    pub fn of(columns: Vec<ColumnDrift>, drift_share: f64) -> DriftReport {
        let drifted = columns.iter().filter(|c| c.drift_detected).count();
        let share = if columns.is_empty() {
            0.0
        } else {
            drifted as f64 / columns.len() as f64
        };
        DriftReport {
            number_of_columns: columns.len(),
            number_of_drifted_columns: drifted,
            share_of_drifted_columns: share,
            drift_share,
            dataset_drift: !columns.is_empty() && share >= drift_share,
            columns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(name: &str, r: &[f64], c: &[f64]) -> Column {
        Column {
            name: name.into(),
            kind: Kind::Numerical,
            reference: r.iter().map(|&v| Value::Number(v)).collect(),
            current: c.iter().map(|&v| Value::Number(v)).collect(),
        }
    }

    #[test]
    fn default_tests_follow_evidently() {
        assert_eq!(default_test(Kind::Numerical, 1000, 6), StatTest::Ks);
        assert_eq!(default_test(Kind::Numerical, 1000, 5), StatTest::ChiSquare);
        assert_eq!(default_test(Kind::Numerical, 10, 2), StatTest::ZTest);
        assert_eq!(default_test(Kind::Categorical, 10, 3), StatTest::ChiSquare);
        assert_eq!(default_test(Kind::Categorical, 10, 2), StatTest::ZTest);
        assert_eq!(
            default_test(Kind::Numerical, 1001, 6),
            StatTest::Wasserstein
        );
        assert_eq!(
            default_test(Kind::Numerical, 1001, 5),
            StatTest::JensenShannon
        );
        assert_eq!(
            default_test(Kind::Categorical, 5000, 50),
            StatTest::JensenShannon
        );
    }

    #[test]
    fn shifted_column_drifts_and_dataset_verdict_uses_the_share() {
        let r: Vec<f64> = (0..200).map(|i| f64::from(i) / 10.0).collect();
        let shifted: Vec<f64> = r.iter().map(|v| v + 8.0).collect();
        let cols = [num("same", &r, &r), num("moved", &r, &shifted)];
        let rep = detect(&cols, &DriftOptions::default()).unwrap();
        assert!(!rep.columns[0].drift_detected);
        assert!(rep.columns[1].drift_detected);
        assert_eq!(rep.share_of_drifted_columns, 0.5);
        assert!(rep.dataset_drift, "a share of 0.5 reaches the default 0.5");
    }

    #[test]
    fn missing_values_are_left_out_and_empty_windows_refused() {
        let cols = [num("x", &[f64::NAN, 1.0, 2.0], &[1.0, f64::NAN, 2.0])];
        let rep = detect(&cols, &DriftOptions::default()).unwrap();
        assert_eq!(rep.columns[0].stattest_name, "Z-test p_value");
        assert!((rep.columns[0].drift_score - 1.0).abs() < 1e-12);
        let e = detect(&[num("y", &[f64::NAN], &[1.0])], &DriftOptions::default()).unwrap_err();
        assert!(
            e.to_string().contains("reference window has no values"),
            "{e}"
        );
    }

    #[test]
    fn text_in_a_numerical_column_is_an_error() {
        let col = Column {
            name: "x".into(),
            kind: Kind::Numerical,
            reference: (0..10).map(|i| Value::Number(f64::from(i))).collect(),
            current: vec![Value::Text("seven".into()); 3],
        };
        let e = detect(&[col], &DriftOptions::default()).unwrap_err();
        assert!(e.to_string().contains("holds 'seven'"), "{e}");
    }
}
