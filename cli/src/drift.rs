//! `kiln drift`: two CSV windows (a header row each) into the drift
//! engine's columns, and its report as a table.

use anyhow::{Context, Result, bail};
use kiln_collector::drift::{Column, DriftReport, Kind, Value};
use std::path::Path;

/// The header and rows of a CSV file.
fn read_csv(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let header: Vec<String> = r
        .headers()
        .with_context(|| format!("{}: no header row", path.display()))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = vec![];
    for (i, rec) in r.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: row {}", path.display(), i + 2))?;
        rows.push(rec.iter().map(|s| s.trim().to_string()).collect());
    }
    Ok((header, rows))
}

/// A cell: a number where it parses as one (`nan` and empty are missing),
/// else a label.
fn cell(s: &str) -> Value {
    match s.parse::<f64>() {
        Ok(v) => Value::Number(v),
        Err(_) => Value::Text(s.to_string()),
    }
}

/// The columns of `reference` and `current` (same header), categorical
/// where named in `categorical` or where a value is not a number;
/// `ignore` columns are left out.
pub fn read_windows(
    reference: &Path,
    current: &Path,
    categorical: &[String],
    ignore: &[String],
) -> Result<Vec<Column>> {
    let (rh, rrows) = read_csv(reference)?;
    let (ch, crows) = read_csv(current)?;
    for name in categorical.iter().chain(ignore) {
        if !rh.contains(name) {
            bail!(
                "column '{name}' is not in {} (it has {rh:?})",
                reference.display()
            );
        }
    }
    let mut columns = vec![];
    for (k, name) in rh.iter().enumerate() {
        if ignore.contains(name) {
            continue;
        }
        let Some(kc) = ch.iter().position(|c| c == name) else {
            bail!(
                "column '{name}' of {} is missing from {}",
                reference.display(),
                current.display()
            );
        };
        let take = |rows: &[Vec<String>], k: usize| -> Vec<Value> {
            rows.iter()
                .map(|r| cell(r.get(k).map_or("", String::as_str)))
                .collect()
        };
        let (r, c) = (take(&rrows, k), take(&crows, kc));
        let text = |v: &[Value]| {
            v.iter()
                .any(|x| matches!(x, Value::Text(s) if !s.is_empty()))
        };
        let kind = if categorical.contains(name) || text(&r) || text(&c) {
            Kind::Categorical
        } else {
            Kind::Numerical
        };
        columns.push(Column {
            name: name.clone(),
            kind,
            reference: r,
            current: c,
        });
    }
    Ok(columns)
}

/// The report as an aligned text table and the dataset verdict.
pub fn table(report: &DriftReport) -> String {
    let width = report
        .columns
        .iter()
        .map(|c| c.column.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut s = format!(
        "{:width$}  type  {:<29}  threshold  {:>12}  drift\n",
        "column", "stattest", "score"
    );
    for c in &report.columns {
        let score = if c.drift_score != 0.0 && c.drift_score.abs() < 1e-4 {
            format!("{:.3e}", c.drift_score)
        } else {
            format!("{:.6}", c.drift_score)
        };
        s += &format!(
            "{:width$}  {:<4}  {:<29}  {:>9}  {:>12}  {}\n",
            c.column,
            c.column_type,
            c.stattest_name,
            c.stattest_threshold,
            score,
            if c.drift_detected { "DRIFT" } else { "-" }
        );
    }
    s += &format!(
        "dataset drift: {} ({} of {} columns drifted, share {:.3}, threshold {})\n",
        if report.dataset_drift { "YES" } else { "no" },
        report.number_of_drifted_columns,
        report.number_of_columns,
        report.share_of_drifted_columns,
        report.drift_share
    );
    s
}

/// The baseline of the reference windows of `columns` and the sketch of
/// their current windows (what a device running the model would send):
/// categories must be numbers here, as devices report them.
pub fn sketch_windows(
    columns: &[Column],
) -> Result<(kiln_protocol::Baseline, kiln_protocol::Sketch)> {
    use kiln_protocol::{Baseline, FeatureBaseline, Sketch, sketch::DEFAULT_BINS};
    let number = |c: &Column, v: &Value| match v {
        Value::Number(x) => Ok(*x),
        Value::Text(s) if s.is_empty() => Ok(f64::NAN),
        Value::Text(s) => bail!(
            "column '{}' holds '{s}': sketches count numbers (encode categories as numbers, as a device does)",
            c.name
        ),
    };
    let mut features = vec![];
    for c in columns {
        let v = c
            .reference
            .iter()
            .map(|x| number(c, x))
            .collect::<Result<Vec<_>>>()?;
        features.push(FeatureBaseline::from_reference(
            &v,
            c.kind == Kind::Categorical,
            DEFAULT_BINS,
        ));
    }
    let baseline = Baseline {
        names: columns.iter().map(|c| c.name.clone()).collect(),
        features,
        prediction: None,
        channels: None,
    };
    let mut sketch = Sketch::new(&baseline);
    let rows = columns.first().map_or(0, |c| c.current.len());
    for i in 0..rows {
        let row = columns
            .iter()
            .map(|c| number(c, &c.current[i]))
            .collect::<Result<Vec<_>>>()?;
        sketch
            .observe(&baseline, &row)
            .map_err(|e| anyhow::anyhow!("row {}: {e}", i + 2))?;
    }
    Ok((baseline, sketch))
}

/// The rows of `current` (a CSV with a header naming every feature of
/// `baseline`; other columns are ignored), in the baseline's feature order;
/// empty cells are NaN.
pub fn rows_of(baseline: &kiln_protocol::Baseline, current: &Path) -> Result<Vec<Vec<f32>>> {
    let (header, rows) = read_csv(current)?;
    let at: Vec<usize> = baseline
        .names
        .iter()
        .map(|n| {
            header.iter().position(|h| h == n).with_context(|| {
                format!(
                    "{} has no column '{n}' (the baseline's features: {:?})",
                    current.display(),
                    baseline.names
                )
            })
        })
        .collect::<Result<_>>()?;
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            at.iter()
                .map(|&k| match cell(r.get(k).map_or("", String::as_str)) {
                    Value::Number(v) => Ok(v as f32),
                    Value::Text(s) if s.is_empty() => Ok(f32::NAN),
                    Value::Text(s) => {
                        bail!("{} row {}: '{s}' is not a number", current.display(), i + 2)
                    }
                })
                .collect()
        })
        .collect()
}
