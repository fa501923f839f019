//! The collector's HTTP service (feature `server`; `kiln collector serve`):
//! models and their drift baselines, device tokens, telemetry ingest into
//! SQLite, and drift reports over a window of merged sketches.
//!
//! Endpoints (JSON; tokens as `Authorization: Bearer`):
//! - `POST /v1/models/{model}/versions/{version}` (admin): the body is the
//!   version's `.kiln` artifact; its drift baseline is kept.
//! - `POST /v1/tokens` (admin): a new device token for `{"model"}`.
//! - `POST /v1/telemetry` (device): `{"batch_id", "model", "version",
//!   "sketch"}`; a batch id already stored counts once (`duplicate: true`).
//! - `GET /v1/models/{model}/drift?version=V&window=SECONDS` (admin): the
//!   drift report of the sketches received in the window, merged.
//! - `GET /health/live`, `GET /health/ready` (the database answers),
//!   `GET /metrics` (Prometheus text).
//!
//! Bodies over [`MAX_BODY`] are refused (413), malformed ones say what is
//! wrong (400/422), unknown models and versions are 404. Every accepted
//! batch is committed to SQLite before the 200 goes out.

use crate::drift::{DriftOptions, detect_sketch};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kiln_protocol::{Baseline, Sketch};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Largest request body accepted (an artifact upload included).
pub const MAX_BODY: usize = 64 << 20;

/// The artifact property holding the drift baseline.
const BASELINE_PROPERTY: &str = "kiln.drift_baseline";

/// The service's state.
#[derive(Debug)]
pub struct Collector {
    db: Mutex<Connection>,
    admin_token: String,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
}

/// Why a collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the database: {0}")]
    Db(#[from] rusqlite::Error),
}

impl Collector {
    /// Opens (creating) the SQLite database at `path` (`:memory:` for a
    /// throwaway one).
    pub fn open(path: &str, admin_token: String) -> Result<Arc<Collector>, ServerError> {
        let db = Connection::open(path)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS versions (
                 model TEXT NOT NULL, version TEXT NOT NULL, baseline BLOB NOT NULL,
                 PRIMARY KEY (model, version));
             CREATE TABLE IF NOT EXISTS tokens (token TEXT PRIMARY KEY, model TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS batches (
                 batch_id TEXT PRIMARY KEY, model TEXT NOT NULL, version TEXT NOT NULL,
                 received INTEGER NOT NULL, sketch BLOB NOT NULL);
             CREATE INDEX IF NOT EXISTS batches_by_model ON batches (model, version, received);",
        )?;
        Ok(Arc::new(Collector {
            db: Mutex::new(db),
            admin_token,
            accepted: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }))
    }
}

/// The service's routes over `state`.
pub fn app(state: Arc<Collector>) -> Router {
    Router::new()
        .route("/v1/models/{model}/versions/{version}", post(register))
        .route("/v1/tokens", post(issue_token))
        .route("/v1/telemetry", post(ingest))
        .route("/v1/models/{model}/drift", get(drift))
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// An error response: status and a JSON `{"error": ...}`.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn require_admin(c: &Collector, headers: &HeaderMap) -> Result<(), Failure> {
    match bearer(headers) {
        Some(t) if t == c.admin_token => Ok(()),
        _ => Err(Failure(
            StatusCode::UNAUTHORIZED,
            "an admin token is required (Authorization: Bearer TOKEN)".into(),
        )),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The baseline a `.kiln` artifact carries.
fn artifact_baseline(bytes: &[u8]) -> Result<Baseline, String> {
    use base64::Engine as _;
    // The format's views need 16-byte aligned bytes.
    let mut words = vec![0u128; bytes.len().div_ceil(16)];
    let aligned: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    aligned[..bytes.len()].copy_from_slice(bytes);
    let view = kiln_format::View::parse(&aligned[..bytes.len()])
        .map_err(|e| format!("the body is not a .kiln artifact: {e}"))?;
    let meta = view.meta();
    let value = meta
        .properties
        .iter()
        .flatten()
        .find(|(k, _)| *k == BASELINE_PROPERTY)
        .map(|(_, v)| v.to_string())
        .ok_or("the artifact has no drift baseline: compile it with --reference DATA")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|_| "the artifact's drift baseline is not base64")?;
    postcard::from_bytes(&raw).map_err(|_| "the artifact's drift baseline does not decode".into())
}

async fn register(
    State(c): State<Arc<Collector>>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    require_admin(&c, &headers)?;
    let baseline =
        artifact_baseline(&body).map_err(|e| Failure(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let blob = postcard::to_allocvec(&baseline).map_err(internal)?;
    let db = c.db.lock().map_err(internal)?;
    db.execute(
        "INSERT OR REPLACE INTO versions (model, version, baseline) VALUES (?1, ?2, ?3)",
        params![model, version, blob],
    )
    .map_err(internal)?;
    Ok(axum::Json(serde_json::json!({
        "model": model, "version": version, "features": baseline.features.len(),
        "prediction": baseline.prediction.is_some(),
    }))
    .into_response())
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
    let db = c.db.lock().map_err(internal)?;
    db.execute(
        "INSERT INTO tokens (token, model) VALUES (?1, ?2)",
        params![token, req.model],
    )
    .map_err(internal)?;
    Ok(axum::Json(serde_json::json!({ "token": token, "model": req.model })).into_response())
}

/// The stored baseline of `model` at `version` (404 when unregistered).
fn version_baseline(db: &Connection, model: &str, version: &str) -> Result<Baseline, Failure> {
    let blob: Option<Vec<u8>> = db
        .query_row(
            "SELECT baseline FROM versions WHERE model = ?1 AND version = ?2",
            params![model, version],
            |r| r.get(0),
        )
        .optional()
        .map_err(internal)?;
    let Some(blob) = blob else {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("model '{model}' has no version '{version}'"),
        ));
    };
    postcard::from_bytes(&blob).map_err(internal)
}

#[derive(Deserialize)]
struct Batch {
    batch_id: String,
    model: String,
    version: String,
    sketch: Sketch,
}

async fn ingest(
    State(c): State<Arc<Collector>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    let reject = |status, why: String| {
        c.rejected.fetch_add(1, Ordering::Relaxed);
        Failure(status, why)
    };
    let token = bearer(&headers)
        .ok_or_else(|| {
            reject(
                StatusCode::UNAUTHORIZED,
                "a device token is required".into(),
            )
        })?
        .to_string();
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
    let db = c.db.lock().map_err(internal)?;
    let owner: Option<String> = db
        .query_row(
            "SELECT model FROM tokens WHERE token = ?1",
            params![token],
            |r| r.get(0),
        )
        .optional()
        .map_err(internal)?;
    if owner.as_deref() != Some(batch.model.as_str()) {
        return Err(reject(
            StatusCode::UNAUTHORIZED,
            format!("the token does not belong to model '{}'", batch.model),
        ));
    }
    let baseline = version_baseline(&db, &batch.model, &batch.version).inspect_err(|f| {
        if f.0 == StatusCode::NOT_FOUND {
            c.rejected.fetch_add(1, Ordering::Relaxed);
        }
    })?;
    // The sketch must fit the version's baseline: merging into an empty
    // window checks every shape.
    Sketch::new(&baseline).merge(&batch.sketch).map_err(|e| {
        reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the sketch does not fit the baseline: {e}"),
        )
    })?;
    let changed = db
        .execute(
            "INSERT OR IGNORE INTO batches (batch_id, model, version, received, sketch)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                batch.batch_id,
                batch.model,
                batch.version,
                now(),
                batch.sketch.to_bytes()
            ],
        )
        .map_err(internal)?;
    let duplicate = changed == 0;
    if duplicate {
        c.duplicates.fetch_add(1, Ordering::Relaxed);
    } else {
        c.accepted.fetch_add(1, Ordering::Relaxed);
    }
    Ok(
        axum::Json(serde_json::json!({ "batch_id": batch.batch_id, "duplicate": duplicate }))
            .into_response(),
    )
}

#[derive(Deserialize)]
struct DriftQuery {
    version: String,
    /// Seconds back from now (default: a day).
    window: Option<i64>,
}

async fn drift(
    State(c): State<Arc<Collector>>,
    Path(model): Path<String>,
    Query(q): Query<DriftQuery>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    require_admin(&c, &headers)?;
    let db = c.db.lock().map_err(internal)?;
    let baseline = version_baseline(&db, &model, &q.version)?;
    let since = now() - q.window.unwrap_or(86_400).max(0);
    let mut stmt = db
        .prepare("SELECT sketch FROM batches WHERE model = ?1 AND version = ?2 AND received >= ?3")
        .map_err(internal)?;
    let rows = stmt
        .query_map(params![model, q.version, since], |r| r.get::<_, Vec<u8>>(0))
        .map_err(internal)?;
    let mut window = Sketch::new(&baseline);
    let mut batches = 0u64;
    for bytes in rows {
        let s = Sketch::from_bytes(&bytes.map_err(internal)?).map_err(internal)?;
        window.merge(&s).map_err(internal)?;
        batches += 1;
    }
    let report = detect_sketch(&baseline, &window, &DriftOptions::default())
        .map_err(|e| Failure(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let mut v = serde_json::to_value(&report).map_err(internal)?;
    v["batches"] = batches.into();
    v["rows"] = window.rows.into();
    v["rejected"] = window.rejected.into();
    Ok(axum::Json(v).into_response())
}

async fn ready(State(c): State<Arc<Collector>>) -> Result<&'static str, Failure> {
    let db = c.db.lock().map_err(internal)?;
    db.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
        .map_err(|e| Failure(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok("ready")
}

async fn metrics(State(c): State<Arc<Collector>>) -> String {
    format!(
        "# TYPE kiln_collector_batches_total counter\n\
         kiln_collector_batches_total{{result=\"accepted\"}} {}\n\
         kiln_collector_batches_total{{result=\"duplicate\"}} {}\n\
         kiln_collector_batches_total{{result=\"rejected\"}} {}\n",
        c.accepted.load(Ordering::Relaxed),
        c.duplicates.load(Ordering::Relaxed),
        c.rejected.load(Ordering::Relaxed)
    )
}

/// Serves `app` on `addr` until the process ends; prints the bound address
/// first (`listening on ADDR`), so `--addr 127.0.0.1:0` can be used.
pub async fn serve(addr: &str, state: Arc<Collector>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app(state)).await
}
