//! A load generator for `POST /v1/telemetry` (`kiln collector load`, the
//! ingest benchmark and the crash test): `concurrency` keep-alive
//! connections send `batches` batches of one sketch between them, each
//! with its own batch id, and time every request.
//!
//! A 429 (queue full) is retried after its `Retry-After` hint, shortened
//! to 10 ms, with the same batch id, as a device would; a connection that
//! fails ends that connection's work (the crash test kills the collector
//! under load), and what was acknowledged until then is in the report.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use kiln_protocol::{Baseline, Sketch};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What to send, where.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `HOST:PORT` of the collector.
    pub addr: String,
    /// A device token of `model`.
    pub token: String,
    pub model: String,
    pub version: String,
    /// Batch ids are `{id_prefix}-{n}`.
    pub id_prefix: String,
    pub batches: usize,
    pub concurrency: usize,
}

/// What came back.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Batches answered 200, by index `n` of their id.
    pub acknowledged: Vec<usize>,
    /// Of those, the ones the collector already had.
    pub duplicates: usize,
    /// 429 answers (each retried).
    pub overloaded: usize,
    /// Other answers (status, body), at most the first ten.
    pub errors: Vec<(u16, String)>,
    /// Requests that failed at the connection (the server gone).
    pub broken: usize,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Per acknowledged batch, from first send to its 200 (retries
    /// included), sorted.
    pub latencies: Vec<Duration>,
}

impl LoadReport {
    /// Acknowledged batches per second.
    pub fn throughput(&self) -> f64 {
        self.acknowledged.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies (zero when none).
    pub fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let k = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[k]
    }
}

/// A window as large as the reference, with the reference's counts: what
/// a busy device would send for `baseline`.
pub fn reference_sketch(baseline: &Baseline) -> Sketch {
    let mut s = Sketch::new(baseline);
    for (counts, b) in s.features.iter_mut().zip(&baseline.features) {
        counts.bins.copy_from_slice(b.counts());
        counts.min = 0.0;
        counts.max = 1.0;
    }
    s.rows = baseline
        .features
        .first()
        .map_or(0, |b| b.counts().iter().sum());
    if let (Some(p), Some(b)) = (s.prediction.as_mut(), baseline.prediction.as_ref()) {
        p.bins.copy_from_slice(b.feature.counts());
    }
    for (k, l) in s.latency_us.iter_mut().enumerate().take(12) {
        *l = (k as u64 * 37) % 101;
    }
    s
}

/// Sends the batches; see the module's docs.
pub async fn run(opts: &LoadOptions, sketch: &Sketch) -> LoadReport {
    let sketch_json = serde_json::to_string(sketch).unwrap_or_default();
    let shared = Arc::new((opts.clone(), sketch_json, AtomicUsize::new(0)));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..opts.concurrency.max(1) {
        tasks.spawn(connection(shared.clone()));
    }
    let mut report = LoadReport::default();
    while let Some(part) = tasks.join_next().await {
        let Ok(part) = part else { continue };
        report.acknowledged.extend(part.acknowledged);
        report.duplicates += part.duplicates;
        report.overloaded += part.overloaded;
        report.broken += part.broken;
        report.latencies.extend(part.latencies);
        for e in part.errors {
            if report.errors.len() < 10 {
                report.errors.push(e);
            }
        }
    }
    report.elapsed = start.elapsed();
    report.latencies.sort();
    report.acknowledged.sort_unstable();
    report
}

type Shared = Arc<(LoadOptions, String, AtomicUsize)>;

async fn connection(shared: Shared) -> LoadReport {
    let (opts, sketch, next) = (&shared.0, &shared.1, &shared.2);
    let mut report = LoadReport::default();
    let Ok(stream) = tokio::net::TcpStream::connect(&opts.addr).await else {
        report.broken += 1;
        return report;
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        report.broken += 1;
        return report;
    };
    tokio::spawn(conn);
    let auth = format!("Bearer {}", opts.token);
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= opts.batches {
            break;
        }
        let body = format!(
            "{{\"batch_id\":\"{}-{n}\",\"model\":{},\"version\":{},\"sketch\":{sketch}}}",
            opts.id_prefix,
            serde_json::Value::from(opts.model.as_str()),
            serde_json::Value::from(opts.version.as_str()),
        );
        let body = Bytes::from(body);
        let t0 = Instant::now();
        loop {
            let req = hyper::Request::post("/v1/telemetry")
                .header("host", opts.addr.as_str())
                .header("authorization", auth.as_str())
                .header("content-type", "application/json")
                .body(Full::new(body.clone()));
            let Ok(req) = req else {
                report.errors.push((0, "cannot build the request".into()));
                return report;
            };
            let answer = match sender.send_request(req).await {
                Ok(r) => r,
                Err(_) => {
                    report.broken += 1;
                    return report;
                }
            };
            let status = answer.status().as_u16();
            let Ok(collected) = answer.into_body().collect().await else {
                report.broken += 1;
                return report;
            };
            let text = collected.to_bytes();
            match status {
                200 => {
                    report.latencies.push(t0.elapsed());
                    report.acknowledged.push(n);
                    if text.windows(16).any(|w| w == b"\"duplicate\":true") {
                        report.duplicates += 1;
                    }
                    break;
                }
                429 => {
                    report.overloaded += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                _ => {
                    if report.errors.len() < 10 {
                        report
                            .errors
                            .push((status, String::from_utf8_lossy(&text).into_owned()));
                    }
                    break;
                }
            }
        }
    }
    report
}

/// One request on a fresh connection to `addr`: the status and the body
/// (the load command's admin calls).
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Vec<u8>,
) -> Result<(u16, Bytes), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let answer = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let status = answer.status().as_u16();
    let body = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?
        .to_bytes();
    Ok((status, body))
}
