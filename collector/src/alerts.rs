//! Alerts (feature `server`): every `every`, each registered model
//! version's recent window (its sketches of the last `window`, merged) is
//! judged for three conditions:
//! - `drift`: the dataset drifted (`detect_sketch`, Evidently's rule);
//! - `class_collapse`: a class the model predicted for at least
//!   [`COLLAPSE_SHARE`] of the reference rows was not predicted once in the
//!   window (the "fraud is never said" silent failure);
//! - `rejection`: more than `max_rejection_rate` of the window's calls were
//!   rejected.
//!
//! A window judges only with at least `min_rows` calls. Alerts are
//! de-duplicated: one fires when its condition starts to hold and again
//! only after it has stopped holding (a `resolved` alert goes out then).
//! Each alert is POSTed as JSON to the webhook (plain `http://`), stored
//! (a restarted collector replays what is firing, so a condition holding
//! across the restart stays one alert) and kept for `GET /v1/alerts`, and a `drift` or `class_collapse` alert
//! runs the retrain command (`sh -c`, with `KILN_ALERT_KIND`,
//! `KILN_ALERT_MODEL`, `KILN_ALERT_VERSION` and `KILN_ALERT_DETAIL` set).

use crate::drift::{DriftOptions, detect_sketch};
use crate::server::Collector;
use kiln_protocol::{Baseline, FeatureBaseline, Sketch};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// A class below this share of the reference predictions may vanish
/// without an alert.
pub const COLLAPSE_SHARE: f64 = 0.05;

/// What to watch and whom to tell.
#[derive(Debug, Clone)]
pub struct AlertOptions {
    /// `http://HOST:PORT/PATH` receiving each alert as JSON.
    pub webhook: Option<String>,
    /// Shell command run on `drift` and `class_collapse`.
    pub retrain_command: Option<String>,
    pub every: Duration,
    pub window: Duration,
    pub min_rows: u64,
    pub max_rejection_rate: f64,
}

impl Default for AlertOptions {
    fn default() -> Self {
        AlertOptions {
            webhook: None,
            retrain_command: None,
            every: Duration::from_secs(60),
            window: Duration::from_secs(3600),
            min_rows: 100,
            max_rejection_rate: 0.05,
        }
    }
}

/// One alert, as sent and as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// `drift`, `class_collapse` or `rejection`.
    pub kind: &'static str,
    /// `firing` or `resolved`.
    pub state: &'static str,
    pub model: String,
    pub version: String,
    pub detail: String,
    /// Seconds since the Unix epoch.
    pub at: i64,
}

impl Alert {
    /// The alert as the store keeps it.
    pub(crate) fn to_row(&self) -> crate::store::AlertRow {
        crate::store::AlertRow {
            at: self.at,
            model: self.model.clone(),
            version: self.version.clone(),
            kind: self.kind.into(),
            state: self.state.into(),
            detail: self.detail.clone(),
        }
    }

    /// A stored alert (`None` for a kind or state this build does not
    /// know).
    pub(crate) fn from_row(r: crate::store::AlertRow) -> Option<Alert> {
        let kind = *KINDS.iter().find(|k| **k == r.kind)?;
        let state = ["firing", "resolved"].into_iter().find(|s| *s == r.state)?;
        Some(Alert {
            kind,
            state,
            model: r.model,
            version: r.version,
            detail: r.detail,
            at: r.at,
        })
    }
}

/// Every kind of alert.
pub const KINDS: [&str; 3] = ["drift", "class_collapse", "rejection"];

/// The conditions that hold for one window of `baseline`.
pub fn conditions(
    baseline: &Baseline,
    window: &Sketch,
    opts: &AlertOptions,
) -> Vec<(&'static str, String)> {
    let mut found = vec![];
    let calls = window.rows.saturating_add(window.rejected);
    if calls < opts.min_rows.max(1) {
        return found;
    }
    let rate = window.rejected as f64 / calls as f64;
    if rate > opts.max_rejection_rate {
        found.push((
            "rejection",
            format!(
                "{} of {calls} calls rejected ({:.1}% > {:.1}%)",
                window.rejected,
                rate * 100.0,
                opts.max_rejection_rate * 100.0
            ),
        ));
    }
    if window.rows >= opts.min_rows.max(1) {
        if let Ok(report) = detect_sketch(baseline, window, &DriftOptions::default())
            && report.dataset_drift
        {
            let drifted: Vec<&str> = report
                .columns
                .iter()
                .filter(|c| c.drift_detected)
                .map(|c| c.column.as_str())
                .collect();
            found.push((
                "drift",
                format!(
                    "{} of {} columns drifted: {}",
                    report.number_of_drifted_columns,
                    report.number_of_columns,
                    drifted.join(", ")
                ),
            ));
        }
        if let (Some(p), Some(counts)) = (&baseline.prediction, &window.prediction)
            && p.argmax
            && let FeatureBaseline::Values {
                values,
                counts: reference,
                ..
            } = &p.feature
        {
            let total: u64 = reference.iter().sum();
            let seen: u64 = counts.bins.iter().sum();
            for (k, class) in values.iter().enumerate() {
                let share = reference[k] as f64 / total.max(1) as f64;
                if share >= COLLAPSE_SHARE && seen >= opts.min_rows && counts.bins[k] == 0 {
                    found.push((
                        "class_collapse",
                        format!(
                            "class {class} ({:.0}% of the reference predictions) was not predicted in {seen} calls",
                            share * 100.0
                        ),
                    ));
                }
            }
        }
    }
    found
}

/// Runs the alert loop on the current tokio runtime until the process
/// ends.
pub fn spawn(c: Arc<Collector>, opts: AlertOptions) {
    tokio::spawn(async move {
        // What was firing when the collector last stopped (its stored
        // alerts, replayed): no second alert for a condition that held
        // across the restart.
        let mut firing: HashSet<(String, String, &'static str)> = HashSet::new();
        for a in c.kept_alerts() {
            let key = (a.model, a.version, a.kind);
            if a.state == "firing" {
                firing.insert(key);
            } else {
                firing.remove(&key);
            }
        }
        let mut tick = tokio::time::interval(opts.every);
        loop {
            tick.tick().await;
            let versions = c.versions();
            for (model, version, baseline) in versions {
                let since = crate::server::now() - opts.window.as_secs() as i64;
                let (m, v) = (model.clone(), version.clone());
                let Ok(blobs) = c.with_store(move |s| s.sketches(&m, &v, since)).await else {
                    continue;
                };
                let mut window = Sketch::new(&baseline);
                for (_, b) in &blobs {
                    if let Ok(s) = Sketch::from_bytes(b) {
                        let _ = window.merge(&s);
                    }
                }
                let now: Vec<(&'static str, String)> = conditions(&baseline, &window, &opts);
                let kinds: HashSet<&'static str> = now.iter().map(|(k, _)| *k).collect();
                // The first instance of each kind (a collapse may name
                // several classes: one alert says the first).
                let mut told = HashSet::new();
                for (kind, detail) in now {
                    let key = (model.clone(), version.clone(), kind);
                    if firing.contains(&key) || !told.insert(kind) {
                        continue;
                    }
                    firing.insert(key);
                    let alert = Alert {
                        kind,
                        state: "firing",
                        model: model.clone(),
                        version: version.clone(),
                        detail,
                        at: crate::server::now(),
                    };
                    deliver(&c, &opts, alert).await;
                }
                let ended: Vec<_> = firing
                    .iter()
                    .filter(|(m, v, k)| *m == model && *v == version && !kinds.contains(k))
                    .cloned()
                    .collect();
                for key in ended {
                    firing.remove(&key);
                    let alert = Alert {
                        kind: key.2,
                        state: "resolved",
                        model: key.0,
                        version: key.1,
                        detail: "the condition no longer holds".into(),
                        at: crate::server::now(),
                    };
                    deliver(&c, &opts, alert).await;
                }
            }
        }
    });
}

async fn deliver(c: &Arc<Collector>, opts: &AlertOptions, alert: Alert) {
    eprintln!(
        "alert {} {}: {} {} — {}",
        alert.state, alert.kind, alert.model, alert.version, alert.detail
    );
    if let Some(url) = &opts.webhook {
        let body = serde_json::to_vec(&alert).unwrap_or_default();
        if let Err(e) = post(url, body).await {
            eprintln!("alert webhook {url}: {e}");
        }
    }
    if alert.state == "firing"
        && matches!(alert.kind, "drift" | "class_collapse")
        && let Some(cmd) = &opts.retrain_command
    {
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("KILN_ALERT_KIND", alert.kind)
            .env("KILN_ALERT_MODEL", &alert.model)
            .env("KILN_ALERT_VERSION", &alert.version)
            .env("KILN_ALERT_DETAIL", &alert.detail)
            .spawn();
        // A retraining run takes as long as it takes: the alert loop does
        // not wait for it.
        let cmd = cmd.clone();
        tokio::spawn(async move {
            match child {
                Ok(mut child) => match child.wait().await {
                    Ok(s) if s.success() => {}
                    Ok(s) => eprintln!("retrain command `{cmd}` failed ({s})"),
                    Err(e) => eprintln!("retrain command `{cmd}`: {e}"),
                },
                Err(e) => eprintln!("retrain command `{cmd}` did not start: {e}"),
            }
        });
    }
    c.remember(alert).await;
}

/// POSTs `body` to `url` (`http://HOST:PORT/PATH`).
async fn post(url: &str, body: Vec<u8>) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// webhooks are supported")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(10),
        crate::load::request(host, "POST", &format!("/{path}"), "", body),
    )
    .await
    .map_err(|_| "timed out".to_string())??;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::{FeatureBaseline, PredictionBaseline};

    fn baseline() -> Baseline {
        let x: Vec<f64> = (0..300).map(|i| f64::from(i % 50)).collect();
        let classes: Vec<f64> = (0..300).map(|i| f64::from(i % 3)).collect();
        Baseline {
            names: vec!["x".into()],
            features: vec![FeatureBaseline::from_reference(&x, false, 32)],
            prediction: Some(PredictionBaseline {
                output: 0,
                argmax: true,
                feature: FeatureBaseline::from_reference(&classes, true, 32),
            }),
            channels: None,
        }
    }

    fn window(b: &Baseline, rows: u32, class: impl Fn(u32) -> f64, rejected: u64) -> Sketch {
        let mut s = Sketch::new(b);
        for i in 0..rows {
            s.observe(b, &[f64::from(i % 50)]).unwrap();
            s.predicted(b, class(i)).unwrap();
        }
        s.rejected = rejected;
        s
    }

    #[test]
    fn each_condition_needs_its_evidence() {
        let b = baseline();
        let opts = AlertOptions {
            min_rows: 60,
            ..Default::default()
        };
        let kinds =
            |s: &Sketch| -> Vec<&str> { conditions(&b, s, &opts).iter().map(|c| c.0).collect() };
        // Like the reference: nothing.
        assert!(kinds(&window(&b, 300, |i| f64::from(i % 3), 0)).is_empty());
        // Class 2 never predicted: a collapse (and the prediction column
        // drifted, one of two columns: dataset drift), but nothing below
        // min_rows.
        assert_eq!(
            kinds(&window(&b, 300, |i| f64::from(i % 2), 0)),
            ["drift", "class_collapse"]
        );
        assert!(kinds(&window(&b, 50, |i| f64::from(i % 2), 0)).is_empty());
        // 10% rejected.
        assert_eq!(
            kinds(&window(&b, 270, |i| f64::from(i % 3), 30)),
            ["rejection"]
        );
        assert!(kinds(&window(&b, 290, |i| f64::from(i % 3), 10)).is_empty());
    }
}
