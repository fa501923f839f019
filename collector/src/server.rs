//! The collector's HTTP service (feature `server`; `kiln collector serve`):
//! models and their drift baselines, device tokens, telemetry ingest into
//! SQLite or PostgreSQL ([`crate::store`]), and drift reports over a window of merged sketches.
//!
//! Endpoints (JSON; tokens as `Authorization: Bearer`):
//! - `POST /v1/models/{model}/versions/{version}` (admin): the body is the
//!   version's `.kiln` artifact; its drift baseline is kept.
//! - `POST /v1/tokens` (admin): a new device token for `{"model"}`.
//! - `POST /v1/telemetry` (device): `{"batch_id", "model", "version",
//!   "sketch", "samples"?}`; a batch id already stored counts once (`duplicate: true`).
//! - `GET /v1/batches/{id}` (admin): whether a batch is stored.
//! - `GET /v1/alerts` (admin): the latest alerts ([`crate::alerts`]).
//! - `GET /v1/models/{model}/drift?version=V&window=SECONDS` (admin): the
//!   drift report of the sketches received in the window, merged.
//! - `GET /v1/models/{model}/samples?version=V&window=SECONDS` (admin): the
//!   raw rows batches carried (optional `samples`, at most [`MAX_SAMPLES`]
//!   per batch), as CSV.
//! - `GET /health/live`, `GET /health/ready` (the database answers),
//!   `GET /metrics` (Prometheus text).
//! - `GET /dashboard`, `GET /dashboard/{model}/{version}` (admin, the
//!   token also as `?token=`): HTML ([`crate::dashboard`]).
//!
//! Bodies over [`MAX_BODY`] are refused (413), malformed ones say what is
//! wrong (400/422), unknown models and versions are 404. Batches go
//! through one writer thread that commits whatever is queued in one
//! transaction (group commit); a batch's 200 goes out only after its
//! group has committed, so an acknowledged batch survives a crash. A full
//! queue answers 429 with `Retry-After`.

use crate::drift::{DriftOptions, detect_sketch};
use crate::store::{BatchRow, Store, StoreError};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kiln_protocol::{Baseline, Sketch};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};

/// Largest request body accepted (an artifact upload included).
pub const MAX_BODY: usize = 64 << 20;

/// Batches waiting for the writer, at most; a full queue answers 429.
pub const QUEUE: usize = 16_384;

/// Batches committed in one transaction, at most.
const GROUP: usize = 2_048;

/// A batch on its way to the writer, and where its outcome goes: whether
/// it was new, once its group has committed.
struct Job {
    row: BatchRow,
    done: oneshot::Sender<Result<bool, String>>,
}

/// The service's state.
#[derive(Debug)]
pub struct Collector {
    /// For admin writes and reads; the writer thread has its own
    /// connection.
    store: Mutex<Box<dyn Store>>,
    writer: mpsc::Sender<Job>,
    /// Device token → model, and (model, version) → baseline: every
    /// ingest consults them, so they live in memory (the store has them
    /// too, and fills them at start).
    tokens: RwLock<HashMap<String, String>>,
    baselines: RwLock<HashMap<(String, String), Arc<Baseline>>>,
    admin_token: String,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    overloaded: AtomicU64,
    groups: AtomicU64,
    /// The latest alerts ([`crate::alerts`]), oldest first.
    alerts: Mutex<std::collections::VecDeque<crate::alerts::Alert>>,
    /// The update service, when configured ([`Collector::enable_ota`]).
    ota: std::sync::OnceLock<crate::ota::Ota>,
}

/// Alerts kept for `GET /v1/alerts`.
const KEPT_ALERTS: usize = 1_000;

/// Why a collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the database: {0}")]
    Db(#[from] StoreError),
    #[error("a stored baseline of {model} {version} does not decode")]
    Baseline { model: String, version: String },
}

impl Collector {
    /// Opens (creating) the database at `url` (`sqlite://FILE`,
    /// `postgres://…`, see [`crate::store::open`]) and starts the writer
    /// thread, which commits batches in groups. Call from within a tokio
    /// runtime's context or outside one; the writer is a plain thread.
    pub fn open(url: &str, admin_token: String) -> Result<Arc<Collector>, ServerError> {
        let mut store = crate::store::open(url)?;
        let writer_store = crate::store::open(url)?;
        let tokens = store.tokens()?.into_iter().collect();
        let mut baselines = HashMap::new();
        for (model, version, blob) in store.versions()? {
            let b = Baseline::from_postcard(&blob).map_err(|_| ServerError::Baseline {
                model: model.clone(),
                version: version.clone(),
            })?;
            baselines.insert((model, version), Arc::new(b));
        }
        let kept = store
            .alerts(KEPT_ALERTS as i64)?
            .into_iter()
            .filter_map(crate::alerts::Alert::from_row)
            .collect();
        let (tx, rx) = mpsc::channel(QUEUE);
        let collector = Arc::new(Collector {
            store: Mutex::new(store),
            writer: tx,
            tokens: RwLock::new(tokens),
            baselines: RwLock::new(baselines),
            admin_token,
            accepted: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            alerts: Mutex::new(kept),
            ota: std::sync::OnceLock::new(),
        });
        let weak = Arc::downgrade(&collector);
        std::thread::Builder::new()
            .name("kiln-collector-writer".into())
            .spawn(move || write_groups(writer_store, rx, weak))
            .map_err(|e| StoreError::Url(format!("cannot start the writer thread: {e}")))?;
        Ok(collector)
    }
}

/// The writer: takes what is queued (up to [`GROUP`] batches), commits it
/// in one transaction, then answers each batch. Ends when every sender is
/// gone.
fn write_groups(
    mut store: Box<dyn Store>,
    mut rx: mpsc::Receiver<Job>,
    collector: std::sync::Weak<Collector>,
) {
    let mut jobs = Vec::with_capacity(GROUP);
    while let Some(first) = rx.blocking_recv() {
        // Whatever else queued up while the last group committed: the
        // busier the collector, the larger its groups (no timer needed).
        jobs.push(first);
        while jobs.len() < GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (rows, done): (Vec<BatchRow>, Vec<_>) = jobs.drain(..).map(|j| (j.row, j.done)).unzip();
        let outcome = store.put_batches(&rows);
        if let Some(c) = collector.upgrade() {
            c.groups.fetch_add(1, Ordering::Relaxed);
        }
        match outcome {
            Ok(fresh) => {
                for (done, new) in done.into_iter().zip(fresh) {
                    let _ = done.send(Ok(new));
                }
            }
            Err(e) => {
                let why = e.to_string();
                for done in done {
                    let _ = done.send(Err(why.clone()));
                }
            }
        }
    }
}

impl Collector {
    /// Turns the update service on ([`crate::ota`]), its state read back
    /// from the store. Once: a second call changes nothing.
    pub fn enable_ota(&self, config: crate::ota::OtaConfig) -> Result<(), StoreError> {
        let service = crate::ota::Ota::load(self, config)?;
        let _ = self.ota.set(service);
        Ok(())
    }

    /// The update service, if on.
    pub(crate) fn ota(&self) -> Option<&crate::ota::Ota> {
        self.ota.get()
    }

    /// `f` on the admin connection, on this thread (at start).
    pub(crate) fn store_call<T>(
        &self,
        f: impl FnOnce(&mut dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut store = self
            .store
            .lock()
            .map_err(|_| StoreError::Url("the store's lock is poisoned".into()))?;
        f(store.as_mut())
    }

    /// The model a request's device token (Bearer) speaks for.
    pub(crate) fn device_model(&self, headers: &HeaderMap) -> Option<String> {
        let token = bearer(headers)?;
        self.tokens.read().ok()?.get(token).cloned()
    }

    /// Every registered model version and its baseline.
    pub(crate) fn versions(&self) -> Vec<(String, String, Arc<Baseline>)> {
        self.baselines
            .read()
            .map(|b| {
                b.iter()
                    .map(|((m, v), b)| (m.clone(), v.clone(), b.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Batches accepted since the collector started.
    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// The alerts kept, oldest first.
    pub(crate) fn kept_alerts(&self) -> Vec<crate::alerts::Alert> {
        self.alerts
            .lock()
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Stores an alert (a restarted collector knows what is firing) and
    /// keeps it for `GET /v1/alerts`.
    pub(crate) async fn remember(self: &Arc<Self>, alert: crate::alerts::Alert) {
        let row = alert.to_row();
        if let Err(Failure(_, why)) = self.with_store(move |s| s.put_alert(&row)).await {
            eprintln!("alert not stored: {why}");
        }
        if let Ok(mut kept) = self.alerts.lock() {
            if kept.len() == KEPT_ALERTS {
                kept.pop_front();
            }
            kept.push_back(alert);
        }
    }

    /// Runs `f` on the admin connection, on tokio's blocking pool: a
    /// database call never holds an async worker (and PostgreSQL's
    /// synchronous client must not run on one).
    pub(crate) async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Failure> {
        let c = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = c.store.lock().map_err(internal)?;
            f(store.as_mut()).map_err(internal)
        })
        .await
        .map_err(internal)?
    }
}

/// The service's routes over `state`.
pub fn app(state: Arc<Collector>) -> Router {
    Router::new()
        .route("/v1/models/{model}/versions/{version}", post(register))
        .route("/v1/tokens", post(issue_token))
        .route("/v1/telemetry", post(ingest))
        .route("/v1/batches/{id}", get(batch_status))
        .route("/v1/alerts", get(alerts))
        .route("/v1/models/{model}/drift", get(drift))
        .route("/v1/models/{model}/samples", get(samples))
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/dashboard", get(crate::dashboard::index))
        .route(
            "/v1/ota/{model}/releases/{version}",
            post(crate::ota::publish),
        )
        .route(
            "/v1/ota/{model}/channels/{channel}/rollout",
            post(crate::ota::rollout),
        )
        .route(
            "/v1/ota/{model}/channels/{channel}/{action}",
            post(crate::ota::control),
        )
        .route("/v1/ota/{model}/status", get(crate::ota::status))
        .route("/v1/ota/{model}/manifest", get(crate::ota::manifest))
        .route(
            "/v1/ota/{model}/artifacts/{sha256}",
            get(crate::ota::artifact),
        )
        .route(
            "/dashboard/{model}/{version}",
            get(crate::dashboard::version),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// An error response: status and a JSON `{"error": ...}`.
pub(crate) struct Failure(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Failure {
    Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

pub(crate) fn require_admin(c: &Collector, headers: &HeaderMap) -> Result<(), Failure> {
    match bearer(headers) {
        Some(t) if t == c.admin_token => Ok(()),
        _ => Err(Failure(
            StatusCode::UNAUTHORIZED,
            "an admin token is required (Authorization: Bearer TOKEN)".into(),
        )),
    }
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `f` on a view of the artifact `bytes` (copied to 16-byte aligned
/// memory, as the format's views need), or why they are not one.
pub(crate) fn with_view<T>(
    bytes: &[u8],
    f: impl FnOnce(kiln_format::View<'_>) -> T,
) -> Result<T, String> {
    let mut words = vec![0u128; bytes.len().div_ceil(16)];
    let aligned: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    aligned[..bytes.len()].copy_from_slice(bytes);
    let view = kiln_format::View::parse(&aligned[..bytes.len()])
        .map_err(|e| format!("the body is not a .kiln artifact: {e}"))?;
    Ok(f(view))
}

/// The baseline an artifact's view carries.
pub(crate) fn view_baseline(view: &kiln_format::View<'_>) -> Result<Baseline, String> {
    let value = view
        .meta()
        .property(kiln_protocol::BASELINE_PROPERTY)
        .ok_or("the artifact has no drift baseline: compile it with --reference DATA")?;
    Baseline::from_property(value).map_err(|e| format!("the artifact's {e}"))
}

async fn register(
    State(c): State<Arc<Collector>>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    require_admin(&c, &headers)?;
    let baseline = with_view(&body, |view| view_baseline(&view))
        .and_then(|b| b)
        .map_err(|e| Failure(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let reply = serde_json::json!({
        "model": model, "version": version, "features": baseline.features.len(),
        "prediction": baseline.prediction.is_some(),
    });
    keep_baseline(&c, model, version, baseline).await?;
    Ok(axum::Json(reply).into_response())
}

/// Stores a version's baseline (replacing) and serves its telemetry.
pub(crate) async fn keep_baseline(
    c: &Arc<Collector>,
    model: String,
    version: String,
    baseline: Baseline,
) -> Result<(), Failure> {
    let blob = postcard::to_allocvec(&baseline).map_err(internal)?;
    let (m, v) = (model.clone(), version.clone());
    c.with_store(move |s| s.put_version(&m, &v, &blob)).await?;
    c.baselines
        .write()
        .map_err(internal)?
        .insert((model, version), Arc::new(baseline));
    Ok(())
}

#[derive(Deserialize)]
struct TokenRequest {
    model: String,
}

async fn issue_token(
    State(c): State<Arc<Collector>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    require_admin(&c, &headers)?;
    let req: TokenRequest = serde_json::from_slice(&body).map_err(|e| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"model\": ...}}: {e}"),
        )
    })?;
    // 128 random bits from the OS, as hex.
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(internal)?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let (t, m) = (token.clone(), req.model.clone());
    c.with_store(move |s| s.put_token(&t, &m)).await?;
    c.tokens
        .write()
        .map_err(internal)?
        .insert(token.clone(), req.model.clone());
    Ok(axum::Json(serde_json::json!({ "token": token, "model": req.model })).into_response())
}

/// The baseline of `model` at `version` (404 when unregistered).
/// The baseline of a registered version (404 if none).
pub(crate) fn version_baseline(
    c: &Collector,
    model: &str,
    version: &str,
) -> Result<Arc<Baseline>, Failure> {
    c.baselines
        .read()
        .map_err(internal)?
        .get(&(model.to_string(), version.to_string()))
        .cloned()
        .ok_or_else(|| {
            Failure(
                StatusCode::NOT_FOUND,
                format!("model '{model}' has no version '{version}'"),
            )
        })
}

#[derive(Deserialize)]
struct Batch {
    batch_id: String,
    model: String,
    version: String,
    sketch: Sketch,
    /// Raw rows sampled in the window (optional; NaN travels as null).
    #[serde(default)]
    samples: Vec<Vec<Option<f64>>>,
}

/// Raw rows one batch may carry, at most.
pub const MAX_SAMPLES: usize = 1_000;

async fn ingest(
    State(c): State<Arc<Collector>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    let reject = |status, why: String| {
        c.rejected.fetch_add(1, Ordering::Relaxed);
        Failure(status, why)
    };
    let token = bearer(&headers).ok_or_else(|| {
        reject(
            StatusCode::UNAUTHORIZED,
            "a device token is required".into(),
        )
    })?;
    let batch: Batch = serde_json::from_slice(&body).map_err(|e| {
        reject(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"batch_id\", \"model\", \"version\", \"sketch\"}}: {e}"),
        )
    })?;
    if batch.batch_id.is_empty() || batch.batch_id.len() > 128 {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "batch_id must be 1 to 128 characters".into(),
        ));
    }
    let owns = c.tokens.read().map_err(internal)?.get(token) == Some(&batch.model);
    if !owns {
        return Err(reject(
            StatusCode::UNAUTHORIZED,
            format!("the token does not belong to model '{}'", batch.model),
        ));
    }
    let baseline = version_baseline(&c, &batch.model, &batch.version).inspect_err(|_| {
        c.rejected.fetch_add(1, Ordering::Relaxed);
    })?;
    batch.sketch.check(&baseline).map_err(|e| {
        reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the sketch does not fit the baseline: {e}"),
        )
    })?;
    if batch.samples.len() > MAX_SAMPLES {
        return Err(reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "{} sampled rows: at most {MAX_SAMPLES} per batch",
                batch.samples.len()
            ),
        ));
    }
    let width = baseline.features.len();
    if let Some((k, row)) = batch
        .samples
        .iter()
        .enumerate()
        .find(|(_, r)| r.len() != width)
    {
        return Err(reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "sampled row {k} has {} values; the model's baseline has {width} features",
                row.len()
            ),
        ));
    }
    let samples = (!batch.samples.is_empty())
        .then(|| serde_json::to_string(&batch.samples))
        .transpose()
        .map_err(internal)?;
    let (done, outcome) = oneshot::channel();
    let job = Job {
        row: BatchRow {
            samples,
            sketch: batch.sketch.to_bytes(),
            batch_id: batch.batch_id,
            model: batch.model,
            version: batch.version,
            received: now(),
        },
        done,
    };
    let batch_id = job.row.batch_id.clone();
    match c.writer.try_send(job) {
        Ok(()) => {}
        // The writer thread is gone: nothing can be stored.
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return Err(Failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "the collector's writer stopped: it cannot store batches until restarted".into(),
            ));
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            c.overloaded.fetch_add(1, Ordering::Relaxed);
            let why = "the collector's write queue is full: retry the batch (same batch_id) later";
            return Ok((
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                axum::Json(serde_json::json!({ "error": why })),
            )
                .into_response());
        }
    }
    // Answered once the batch's group has committed.
    let duplicate = match outcome.await {
        Ok(Ok(new)) => !new,
        Ok(Err(why)) => return Err(internal(why)),
        Err(_) => return Err(internal("the writer stopped")),
    };
    if duplicate {
        c.duplicates.fetch_add(1, Ordering::Relaxed);
    } else {
        c.accepted.fetch_add(1, Ordering::Relaxed);
    }
    Ok(
        axum::Json(serde_json::json!({ "batch_id": batch_id, "duplicate": duplicate }))
            .into_response(),
    )
}

/// `GET /v1/batches/{id}` (admin): 200 when the batch is stored, 404 when
/// not.
async fn batch_status(
    State(c): State<Arc<Collector>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    require_admin(&c, &headers)?;
    let key = id.clone();
    let stored = c.with_store(move |s| s.has_batch(&key)).await?;
    if !stored {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("no batch '{id}' is stored"),
        ));
    }
    Ok(axum::Json(serde_json::json!({ "batch_id": id, "stored": true })).into_response())
}

/// `GET /v1/alerts` (admin): the latest alerts, oldest first.
async fn alerts(State(c): State<Arc<Collector>>, headers: HeaderMap) -> Result<Response, Failure> {
    require_admin(&c, &headers)?;
    Ok(axum::Json(c.kept_alerts()).into_response())
}

#[derive(Deserialize)]
struct DriftQuery {
    version: String,
    /// Seconds back from now (default: a day).
    window: Option<i64>,
}

impl DriftQuery {
    /// For an admin: the version's baseline and where the window starts.
    fn window_of(
        &self,
        c: &Collector,
        headers: &HeaderMap,
        model: &str,
    ) -> Result<(Arc<Baseline>, i64), Failure> {
        require_admin(c, headers)?;
        let baseline = version_baseline(c, model, &self.version)?;
        Ok((baseline, now() - self.window.unwrap_or(86_400).max(0)))
    }
}

async fn drift(
    State(c): State<Arc<Collector>>,
    Path(model): Path<String>,
    Query(q): Query<DriftQuery>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let (baseline, since) = q.window_of(&c, &headers, &model)?;
    let version = q.version.clone();
    let blobs = c
        .with_store(move |s| s.sketches(&model, &version, since))
        .await?;
    // Merging a long window takes a while: off the async workers too.
    tokio::task::spawn_blocking(move || {
        let mut window = Sketch::new(&baseline);
        for (_, bytes) in &blobs {
            let s = Sketch::from_bytes(bytes).map_err(internal)?;
            window.merge(&s).map_err(internal)?;
        }
        let report = detect_sketch(&baseline, &window, &DriftOptions::default())
            .map_err(|e| Failure(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        let mut v = serde_json::to_value(&report).map_err(internal)?;
        v["batches"] = blobs.len().into();
        v["rows"] = window.rows.into();
        v["rejected"] = window.rejected.into();
        Ok(axum::Json(v).into_response())
    })
    .await
    .map_err(internal)?
}

/// `GET /v1/models/{model}/samples?version=V&window=SECONDS` (admin): the
/// raw rows devices sampled in the window, as CSV with the baseline's
/// feature names as header (a missing value is an empty field): the
/// `--current` of `kiln drift`.
async fn samples(
    State(c): State<Arc<Collector>>,
    Path(model): Path<String>,
    Query(q): Query<DriftQuery>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let (baseline, since) = q.window_of(&c, &headers, &model)?;
    let version = q.version.clone();
    let batches = c
        .with_store(move |s| s.samples(&model, &version, since))
        .await?;
    let mut csv = baseline
        .names
        .iter()
        .map(|n| csv_field(n))
        .collect::<Vec<_>>()
        .join(",");
    csv.push('\n');
    for text in &batches {
        let rows: Vec<Vec<Option<f64>>> = serde_json::from_str(text).map_err(internal)?;
        for row in rows {
            let fields: Vec<String> = row
                .iter()
                .map(|x| x.map_or_else(String::new, |x| x.to_string()))
                .collect();
            csv.push_str(&fields.join(","));
            csv.push('\n');
        }
    }
    Ok(([("content-type", "text/csv; charset=utf-8")], csv).into_response())
}

/// A CSV field, quoted when it must be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

async fn ready(State(c): State<Arc<Collector>>) -> Result<&'static str, Failure> {
    c.with_store(|s| s.ping())
        .await
        .map_err(|f| Failure(StatusCode::SERVICE_UNAVAILABLE, f.1))?;
    Ok("ready")
}

async fn metrics(State(c): State<Arc<Collector>>) -> String {
    format!(
        "# TYPE kiln_collector_batches_total counter\n\
         kiln_collector_batches_total{{result=\"accepted\"}} {}\n\
         kiln_collector_batches_total{{result=\"duplicate\"}} {}\n\
         kiln_collector_batches_total{{result=\"rejected\"}} {}\n\
         kiln_collector_batches_total{{result=\"overloaded\"}} {}\n\
         # TYPE kiln_collector_write_groups_total counter\n\
         kiln_collector_write_groups_total {}\n\
         # TYPE kiln_collector_write_queue gauge\n\
         kiln_collector_write_queue {}\n",
        c.accepted.load(Ordering::Relaxed),
        c.duplicates.load(Ordering::Relaxed),
        c.rejected.load(Ordering::Relaxed),
        c.overloaded.load(Ordering::Relaxed),
        c.groups.load(Ordering::Relaxed),
        QUEUE - c.writer.capacity()
    )
}

/// Serves `app` on `addr` until the process ends; prints the bound address
/// first (`listening on ADDR`), so `--addr 127.0.0.1:0` can be used.
pub async fn serve(addr: &str, state: Arc<Collector>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app(state)).await
}
