//! The dashboard (feature `server`): HTML pages the collector draws itself,
//! charts as inline SVG, no script and nothing fetched from elsewhere (a
//! collector on a closed network shows the same page).
//!
//! - `GET /dashboard`: every model version with its calls, rejection rate
//!   and drift verdict over the window, and the latest alerts.
//! - `GET /dashboard/{model}/{version}`: over time (the window cut into
//!   `buckets`), the share of drifted columns, the rejection rate and the
//!   latency percentiles; per feature (and the prediction) the drift test,
//!   score and verdict over the whole window, the score over time, and the
//!   reference distribution beside the current one.
//!
//! Query: `window` (seconds back from now, default a day), `buckets`
//! (default 24) and `token` (the admin token, for a browser that cannot
//! send `Authorization: Bearer`, which is accepted too).
//!
//! Every number shown is what the drift endpoint computes
//! ([`detect_sketch`] on the sketches received in the window, merged); the
//! verdict cells carry them as `data-` attributes, which the browser test
//! compares with `GET /v1/models/{model}/drift`.

use crate::drift::{ColumnDrift, DriftOptions, DriftReport, detect_sketch};
use crate::server::{Collector, Failure, now};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Html;
use kiln_protocol::{Baseline, FeatureBaseline, FeatureCounts, Sketch};
use serde::Deserialize;
use std::fmt::Write as _;
use std::sync::Arc;

/// The dashboard's query string.
#[derive(Debug, Deserialize)]
pub(crate) struct View {
    window: Option<i64>,
    buckets: Option<usize>,
    token: Option<String>,
}

impl View {
    fn window(&self) -> i64 {
        self.window.unwrap_or(86_400).clamp(1, 366 * 86_400)
    }

    fn buckets(&self) -> usize {
        self.buckets.unwrap_or(24).clamp(1, 240)
    }

    /// The query to carry to the next page (the token included).
    fn carry(&self) -> String {
        let mut q = format!("window={}&buckets={}", self.window(), self.buckets());
        if let Some(t) = &self.token {
            let _ = write!(q, "&token={}", percent(t));
        }
        q
    }
}

fn allowed(c: &Collector, headers: &HeaderMap, view: &View) -> Result<(), Failure> {
    if view.token.as_deref() == Some(c.admin_token()) {
        return Ok(());
    }
    crate::server::require_admin(c, headers).map_err(|_| {
        Failure(
            StatusCode::UNAUTHORIZED,
            "the dashboard needs the admin token: /dashboard?token=TOKEN (or Authorization: Bearer)"
                .into(),
        )
    })
}

/// One version's window, cut into buckets.
struct Series {
    since: i64,
    width: i64,
    total: Sketch,
    buckets: Vec<Sketch>,
    batches: usize,
}

fn series(baseline: &Baseline, blobs: &[(i64, Vec<u8>)], since: i64, buckets: usize) -> Series {
    let width = ((now() - since) as f64 / buckets as f64).ceil().max(1.0) as i64;
    let mut s = Series {
        since,
        width,
        total: Sketch::new(baseline),
        buckets: vec![Sketch::new(baseline); buckets],
        batches: 0,
    };
    for (at, bytes) in blobs {
        // Stored sketches were checked against this baseline at ingest.
        let Ok(sketch) = Sketch::from_bytes(bytes) else {
            continue;
        };
        let k = (((at - since) / width).max(0) as usize).min(buckets - 1);
        if s.total.merge(&sketch).is_ok() {
            let _ = s.buckets[k].merge(&sketch);
            s.batches += 1;
        }
    }
    s
}

/// Calls in a window: runs timed plus calls rejected.
fn calls(s: &Sketch) -> u64 {
    s.latency_us.iter().sum::<u64>() + s.rejected
}

fn rejection_rate(s: &Sketch) -> Option<f64> {
    let n = calls(s);
    (n > 0).then(|| s.rejected as f64 / n as f64)
}

/// The `q` quantile of the latency histogram: the upper end of the log2
/// bucket it falls in (bucket `k` holds runs of less than `2^k` µs).
fn latency_quantile(s: &Sketch, q: f64) -> Option<f64> {
    let n: u64 = s.latency_us.iter().sum();
    if n == 0 {
        return None;
    }
    let target = (q * n as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (k, &c) in s.latency_us.iter().enumerate() {
        seen += c;
        if seen >= target {
            return Some(2f64.powi(k as i32));
        }
    }
    None
}

fn report(baseline: &Baseline, s: &Sketch) -> Option<DriftReport> {
    if s.rows == 0 {
        return None;
    }
    detect_sketch(baseline, s, &DriftOptions::default()).ok()
}

/// `GET /dashboard`.
pub(crate) async fn index(
    State(c): State<Arc<Collector>>,
    Query(view): Query<View>,
    headers: HeaderMap,
) -> Result<Html<String>, Failure> {
    allowed(&c, &headers, &view)?;
    let since = now() - view.window();
    let mut versions = c.versions();
    versions.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut rows = String::new();
    for (model, version, baseline) in versions {
        let (m, v) = (model.clone(), version.clone());
        let blobs = c.with_store(move |s| s.sketches(&m, &v, since)).await?;
        let s = tokio::task::spawn_blocking(move || {
            let s = series(&baseline, &blobs, since, 1);
            let r = report(&baseline, &s.total);
            (s, r)
        })
        .await
        .map_err(crate::server::internal)?;
        let (s, r) = s;
        let verdict = match &r {
            Some(r) if r.dataset_drift => format!(
                "<span class=bad>drift</span> ({} of {} columns)",
                r.number_of_drifted_columns, r.number_of_columns
            ),
            Some(r) => format!(
                "<span class=good>no drift</span> ({} of {} columns)",
                r.number_of_drifted_columns, r.number_of_columns
            ),
            None => "<span class=muted>no rows yet</span>".into(),
        };
        let _ = write!(
            rows,
            "<tr><td><a href=\"/dashboard/{}/{}?{}\">{} {}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            percent(&model),
            percent(&version),
            view.carry(),
            esc(&model),
            esc(&version),
            s.batches,
            s.total.rows,
            calls(&s.total),
            rejection_rate(&s.total).map_or("–".into(), |r| format!("{:.2}%", 100.0 * r)),
            verdict
        );
    }
    if rows.is_empty() {
        rows = "<tr><td colspan=6 class=muted>no model versions registered</td></tr>".into();
    }
    let body = format!(
        "<h1>Kiln collector</h1>\
         <p class=muted>the last {}; {} accepted batches since start</p>\
         <table><tr><th>model version</th><th>batches</th><th>rows</th><th>calls</th><th>rejected</th><th>drift</th></tr>{rows}</table>\
         <h2>Latest alerts</h2>{}",
        span(view.window()),
        c.accepted(),
        alert_table(&c, None)
    );
    Ok(Html(page("Kiln collector", &body)))
}

/// `GET /dashboard/{model}/{version}`.
pub(crate) async fn version(
    State(c): State<Arc<Collector>>,
    Path((model, version)): Path<(String, String)>,
    Query(view): Query<View>,
    headers: HeaderMap,
) -> Result<Html<String>, Failure> {
    allowed(&c, &headers, &view)?;
    let baseline = crate::server::version_baseline(&c, &model, &version)?;
    let since = now() - view.window();
    let (m, v) = (model.clone(), version.clone());
    let blobs = c.with_store(move |s| s.sketches(&m, &v, since)).await?;
    let buckets = view.buckets();
    let alerts = alert_table(&c, Some((&model, &version)));
    let back = view.carry();
    let html = tokio::task::spawn_blocking(move || {
        let s = series(&baseline, &blobs, since, buckets);
        version_page(
            &model,
            &version,
            &baseline,
            &s,
            &alerts,
            &back,
            view.window(),
        )
    })
    .await
    .map_err(crate::server::internal)?;
    Ok(Html(html))
}

fn version_page(
    model: &str,
    version: &str,
    baseline: &Baseline,
    s: &Series,
    alerts: &str,
    back: &str,
    window: i64,
) -> String {
    let total = report(baseline, &s.total);
    let per_bucket: Vec<Option<DriftReport>> =
        s.buckets.iter().map(|b| report(baseline, b)).collect();
    let labels: Vec<String> = (0..s.buckets.len())
        .map(|k| clock(s.since + k as i64 * s.width))
        .collect();
    let mut out = format!(
        "<p><a href=\"/dashboard?{back}\">all models</a></p><h1>{} {}</h1>",
        esc(model),
        esc(version)
    );
    let _ = write!(
        out,
        "<p class=muted>the last {}, in {} buckets of {}: {} batches, {} rows, {} calls, {} rejected</p>",
        span(window),
        s.buckets.len(),
        span(s.width),
        s.batches,
        s.total.rows,
        calls(&s.total),
        s.total.rejected
    );
    match &total {
        Some(r) => {
            let _ = write!(
                out,
                "<p id=verdict data-dataset-drift=\"{}\" data-share=\"{}\">dataset drift: {} ({} of {} columns drifted, share {:.3}, threshold {})</p>",
                r.dataset_drift,
                r.share_of_drifted_columns,
                if r.dataset_drift {
                    "<b class=bad>yes</b>"
                } else {
                    "<b class=good>no</b>"
                },
                r.number_of_drifted_columns,
                r.number_of_columns,
                r.share_of_drifted_columns,
                r.drift_share
            );
        }
        None => out.push_str("<p id=verdict class=muted>no rows in the window yet</p>"),
    }
    out.push_str("<div class=row>");
    out.push_str(&line_chart(
        "share of drifted columns",
        &labels,
        &[(
            "drifted share",
            "#c0392b",
            per_bucket
                .iter()
                .map(|r| r.as_ref().map(|r| r.share_of_drifted_columns))
                .collect(),
        )],
        Some(total.as_ref().map_or(0.5, |r| r.drift_share)),
        Scale::Linear(1.0),
    ));
    out.push_str(&line_chart(
        "rejection rate",
        &labels,
        &[(
            "rejected calls",
            "#8e44ad",
            s.buckets.iter().map(rejection_rate).collect(),
        )],
        None,
        Scale::Linear(
            s.buckets
                .iter()
                .filter_map(rejection_rate)
                .fold(0.05f64, f64::max),
        ),
    ));
    let q =
        |p: f64| -> Vec<Option<f64>> { s.buckets.iter().map(|b| latency_quantile(b, p)).collect() };
    out.push_str(&line_chart(
        "latency (µs, log scale; log2 buckets' upper ends)",
        &labels,
        &[
            ("p50", "#2471a3", q(0.5)),
            ("p95", "#d68910", q(0.95)),
            ("p99", "#c0392b", q(0.99)),
        ],
        None,
        Scale::Log,
    ));
    out.push_str("</div>");
    let _ = write!(
        out,
        "<p>latency over the window: p50 ≤ {} µs, p95 ≤ {} µs, p99 ≤ {} µs</p>",
        num(latency_quantile(&s.total, 0.5)),
        num(latency_quantile(&s.total, 0.95)),
        num(latency_quantile(&s.total, 0.99))
    );
    out.push_str(
        "<h2>Features</h2><table class=features><tr><th>column</th><th>test</th><th>threshold</th>\
         <th>score</th><th>drift</th><th>score over time</th><th>reference vs current</th></tr>",
    );
    let mut columns: Vec<(&FeatureBaseline, &FeatureCounts)> =
        baseline.features.iter().zip(&s.total.features).collect();
    if let (Some(p), Some(c)) = (&baseline.prediction, &s.total.prediction) {
        columns.push((&p.feature, c));
    }
    for (k, (f, current)) in columns.into_iter().enumerate() {
        let col: Option<&ColumnDrift> = total.as_ref().and_then(|r| r.columns.get(k));
        let name = col.map_or_else(
            || {
                baseline
                    .names
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| "prediction".into())
            },
            |c| c.column.clone(),
        );
        let scores: Vec<Option<(f64, bool)>> = per_bucket
            .iter()
            .map(|r| {
                r.as_ref()
                    .and_then(|r| r.columns.get(k))
                    .map(|c| (c.drift_score, c.drift_detected))
            })
            .collect();
        match col {
            Some(c) => {
                let _ = write!(
                    out,
                    "<tr class=col data-column=\"{}\" data-test=\"{}\" data-score=\"{}\" data-drift=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                    esc(&c.column),
                    c.stattest_name,
                    c.drift_score,
                    c.drift_detected,
                    esc(&name),
                    c.stattest_name,
                    c.stattest_threshold,
                    sig(c.drift_score),
                    if c.drift_detected {
                        "<b class=bad>drift</b>"
                    } else {
                        "<span class=good>ok</span>"
                    }
                );
                out.push_str("<td>");
                out.push_str(&sparkline(&scores, c.stattest_threshold));
                out.push_str("</td>");
            }
            None => {
                let _ = write!(
                    out,
                    "<tr class=col data-column=\"{}\"><td>{}</td><td colspan=5 class=muted>no values in the window</td>",
                    esc(&name),
                    esc(&name)
                );
            }
        }
        out.push_str("<td>");
        out.push_str(&histogram(f, current));
        out.push_str("</td></tr>");
    }
    out.push_str("</table><h2>Alerts</h2>");
    out.push_str(alerts);
    page(&format!("{model} {version} — Kiln collector"), &out)
}

fn alert_table(c: &Collector, only: Option<(&str, &str)>) -> String {
    let mut rows = String::new();
    for a in c.kept_alerts().iter().rev().take(50) {
        if only.is_some_and(|(m, v)| m != a.model || v != a.version) {
            continue;
        }
        let _ = write!(
            rows,
            "<tr><td>{}</td><td class={}>{}</td><td>{}</td><td>{} {}</td><td>{}</td></tr>",
            clock(a.at),
            if a.state == "firing" { "bad" } else { "good" },
            a.state,
            a.kind,
            esc(&a.model),
            esc(&a.version),
            esc(&a.detail)
        );
    }
    if rows.is_empty() {
        return "<p class=muted>no alerts</p>".into();
    }
    format!(
        "<table><tr><th>at (UTC)</th><th>state</th><th>kind</th><th>version</th><th>detail</th></tr>{rows}</table>"
    )
}

enum Scale {
    /// From 0 to at least this.
    Linear(f64),
    /// Log10 between the data's extremes.
    Log,
}

const W: f64 = 420.0;
const H: f64 = 160.0;
const LEFT: f64 = 46.0;
const BOTTOM: f64 = 22.0;

/// A line chart over the buckets; `None` points are gaps.
fn line_chart(
    title: &str,
    labels: &[String],
    series: &[(&str, &str, Vec<Option<f64>>)],
    threshold: Option<f64>,
    scale: Scale,
) -> String {
    let values = series.iter().flat_map(|s| s.2.iter().flatten().copied());
    let (lo, hi, log) = match scale {
        Scale::Linear(top) => (0.0, values.fold(top, f64::max), false),
        Scale::Log => {
            let (mut lo, mut hi) = (f64::INFINITY, 0f64);
            for v in values {
                lo = lo.min(v.max(1.0));
                hi = hi.max(v.max(1.0));
            }
            if !lo.is_finite() {
                (lo, hi) = (1.0, 10.0);
            }
            (
                lo.log10().floor(),
                hi.log10().ceil().max(lo.log10().floor() + 1.0),
                true,
            )
        }
    };
    let n = labels.len().max(1);
    let x = |k: usize| LEFT + (W - LEFT - 8.0) * (k as f64 + 0.5) / n as f64;
    let y = |v: f64| {
        let v = if log { v.max(1.0).log10() } else { v };
        let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
        8.0 + (H - BOTTOM - 8.0) * (1.0 - t)
    };
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg class=chart width={W} height={H} viewBox=\"0 0 {W} {H}\" role=img>",
        esc(title)
    );
    // Axes and the extremes of the scale.
    let (top, bottom) = if log {
        (10f64.powf(hi), 10f64.powf(lo))
    } else {
        (hi, lo)
    };
    let _ = write!(
        svg,
        "<line x1={LEFT} y1=8 x2={LEFT} y2={b} class=axis /><line x1={LEFT} y1={b} x2={r} y2={b} class=axis />\
         <text x={tx} y=14 class=tick>{}</text><text x={tx} y={b} class=tick>{}</text>",
        sig(top),
        sig(bottom),
        b = H - BOTTOM,
        r = W - 8.0,
        tx = LEFT - 4.0
    );
    // First, middle and last bucket's start, kept inside the chart.
    for (k, anchor, at) in [
        (0, "start", LEFT),
        (n / 2, "middle", x(n / 2)),
        (n - 1, "end", W - 8.0),
    ] {
        let repeated = (anchor == "middle" && n < 3) || (anchor == "end" && n < 2);
        if let Some(l) = labels.get(k).filter(|_| !repeated) {
            let _ = write!(
                svg,
                "<text x={at} y={} class=xlabel text-anchor={anchor}>{}</text>",
                H - 6.0,
                esc(l)
            );
        }
    }
    if let Some(t) = threshold {
        let _ = write!(
            svg,
            "<line x1={LEFT} y1={y0} x2={r} y2={y0} class=threshold />",
            y0 = y(t),
            r = W - 8.0
        );
    }
    for (i, (name, color, points)) in series.iter().enumerate() {
        let path = polyline(
            points
                .iter()
                .enumerate()
                .map(|(k, p)| p.map(|v| (x(k), y(v)))),
        );
        let _ = write!(
            svg,
            "<path d=\"{path}\" fill=none stroke=\"{color}\" stroke-width=2 />"
        );
        for (k, p) in points.iter().enumerate() {
            if let Some(v) = p {
                let _ = write!(
                    svg,
                    "<circle cx={:.1} cy={:.1} r=2.5 fill=\"{color}\"><title>{} {}: {}</title></circle>",
                    x(k),
                    y(*v),
                    esc(name),
                    esc(&labels[k]),
                    sig(*v)
                );
            }
        }
        let _ = write!(
            svg,
            "<text x={} y=14 fill=\"{color}\" class=legend>{}</text>",
            LEFT + 8.0 + 60.0 * i as f64,
            esc(name)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// An SVG path through the points, lifting the pen over gaps (`None`).
fn polyline(points: impl Iterator<Item = Option<(f64, f64)>>) -> String {
    let mut path = String::new();
    let mut pen_up = true;
    for p in points {
        match p {
            Some((x, y)) => {
                let _ = write!(path, "{}{x:.1},{y:.1} ", if pen_up { "M" } else { "L" });
                pen_up = false;
            }
            None => pen_up = true,
        }
    }
    path
}

/// A column's drift score per bucket, drifted points red, the threshold
/// dashed.
fn sparkline(scores: &[Option<(f64, bool)>], threshold: f64) -> String {
    let (w, h) = (160.0, 36.0);
    let hi = scores
        .iter()
        .flatten()
        .map(|s| s.0)
        .fold(threshold * 1.2, f64::max)
        .max(1e-12);
    let n = scores.len().max(1) as f64;
    let x = |k: usize| 3.0 + (w - 6.0) * (k as f64 + 0.5) / n;
    let y = |v: f64| 3.0 + (h - 6.0) * (1.0 - (v / hi).clamp(0.0, 1.0));
    let mut svg = format!(
        "<svg class=spark width={w} height={h} viewBox=\"0 0 {w} {h}\"><line x1=0 y1={t} x2={w} y2={t} class=threshold />",
        t = y(threshold)
    );
    let path = polyline(
        scores
            .iter()
            .enumerate()
            .map(|(k, s)| s.map(|(v, _)| (x(k), y(v)))),
    );
    let _ = write!(
        svg,
        "<path d=\"{path}\" fill=none stroke=\"#555\" stroke-width=1.5 />"
    );
    for (k, s) in scores.iter().enumerate() {
        if let Some((v, drift)) = s {
            let _ = write!(
                svg,
                "<circle cx={:.1} cy={:.1} r=2.2 fill=\"{}\"><title>{}</title></circle>",
                x(k),
                y(*v),
                if *drift { "#c0392b" } else { "#27ae60" },
                sig(*v)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The reference's share per bin (grey) beside the window's (blue).
fn histogram(f: &FeatureBaseline, current: &FeatureCounts) -> String {
    let reference = f.counts();
    let (rn, cn) = (
        reference.iter().sum::<u64>().max(1) as f64,
        current.bins.iter().sum::<u64>().max(1) as f64,
    );
    let shares: Vec<(f64, f64)> = reference
        .iter()
        .zip(&current.bins)
        .map(|(&r, &c)| (r as f64 / rn, c as f64 / cn))
        .collect();
    let top = shares.iter().map(|s| s.0.max(s.1)).fold(1e-9, f64::max);
    let (w, h) = (220.0, 48.0);
    let step = w / shares.len().max(1) as f64;
    let bar = (step / 2.0 - 0.5).max(0.5);
    let mut svg = format!("<svg class=hist width={w} height={h} viewBox=\"0 0 {w} {h}\">");
    for (k, (r, c)) in shares.iter().enumerate() {
        let label = bin_label(f, k);
        for (j, (v, class)) in [(r, "ref"), (c, "cur")].into_iter().enumerate() {
            let bh = (h - 2.0) * v / top;
            let _ = write!(
                svg,
                "<rect x={:.2} y={:.2} width={bar:.2} height={bh:.2} class={class}><title>{}: {} {:.1}%</title></rect>",
                k as f64 * step + j as f64 * (bar + 0.5),
                h - bh,
                esc(&label),
                if j == 0 { "reference" } else { "current" },
                100.0 * v
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

fn bin_label(f: &FeatureBaseline, k: usize) -> String {
    match f {
        FeatureBaseline::Continuous { edges, .. } => match (k.checked_sub(1), edges.get(k)) {
            (None, Some(hi)) => format!("≤ {}", sig(*hi)),
            (Some(i), Some(hi)) => format!("{} – {}", sig(edges[i]), sig(*hi)),
            _ => format!("> {}", edges.last().map_or("–".into(), |e| sig(*e))),
        },
        FeatureBaseline::Values { values, .. } => values.get(k).map_or("other".into(), |v| sig(*v)),
    }
}

/// Four significant digits, plain.
fn sig(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').into()
    } else {
        s
    }
}

fn num(v: Option<f64>) -> String {
    v.map_or("–".into(), sig)
}

/// `HH:MM:SS` (UTC) of a Unix time.
fn clock(t: i64) -> String {
    let d = t.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", d / 3600, d / 60 % 60, d % 60)
}

fn span(seconds: i64) -> String {
    match seconds {
        s if s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s % 3_600 == 0 => format!("{} h", s / 3_600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Text for HTML (element content and quoted attributes).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A URL path segment or query value.
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{}</title>\
         <meta name=viewport content=\"width=device-width\"><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    )
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}\
h1{font-size:20px}h2{font-size:16px;margin-top:28px}table{border-collapse:collapse}\
td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:middle}\
.muted{color:#888}.bad{color:#c0392b}.good{color:#27ae60}.row{display:flex;flex-wrap:wrap;gap:12px}\
figure{margin:0}figcaption{font-weight:600;margin:6px 0}svg{background:#fafafa}\
.axis{stroke:#999}.threshold{stroke:#c0392b;stroke-dasharray:4 3}.tick{font-size:10px;text-anchor:end;fill:#666}\
.xlabel{font-size:10px;fill:#666}.legend{font-size:11px}\
rect.ref{fill:#aab7b8}rect.cur{fill:#2e86c1}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_text_are_printed_safely() {
        assert_eq!(sig(0.000123456), "0.0001235");
        assert_eq!(sig(1234.6), "1235");
        assert_eq!(sig(0.05), "0.05");
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(percent("iris v1/x"), "iris%20v1%2Fx");
        assert_eq!(clock(86_400 + 3_725), "01:02:05");
        assert_eq!(span(3_600), "1 h");
    }

    #[test]
    fn latency_quantiles_read_the_log_buckets() {
        let b = Baseline {
            names: vec![],
            features: vec![],
            prediction: None,
            channels: None,
        };
        let mut s = Sketch::new(&b);
        assert_eq!(latency_quantile(&s, 0.5), None);
        for us in [3, 3, 3, 100] {
            s.latency(us);
        }
        // 3 µs is in bucket 2 (< 4 µs), 100 µs in bucket 7 (< 128 µs).
        assert_eq!(latency_quantile(&s, 0.5), Some(4.0));
        assert_eq!(latency_quantile(&s, 0.75), Some(4.0));
        assert_eq!(latency_quantile(&s, 0.99), Some(128.0));
        s.reject();
        assert_eq!(rejection_rate(&s), Some(0.2));
    }
}
