//! The update service (`kiln collector serve --ota-key KEY --ota-release-pub
//! PUB`): releases (signed artifacts stored by content hash in an object
//! store: a local directory by default), channels with staged rollouts,
//! and the manifests devices ask for.
//!
//! - A release is immutable: `POST /v1/ota/{model}/releases/{version}`
//!   (admin) takes an artifact signed by a trusted release key (`kiln
//!   sign`), stores it under its sha256, and registers its drift baseline
//!   (so its telemetry is judged like any version's).
//! - A channel (`stable`, `canary`, …) has a stable version, every device
//!   runs it, and at most one rollout: a candidate version served to the
//!   devices whose hash of (model, candidate, device id) falls below its
//!   percentage. `POST …/channels/{channel}/rollout` starts one or steps it
//!   up (percent only grows; 100 promotes it to stable); `pause`,
//!   `resume`, `abort` and `rollback` (manual) do what they say.
//! - Before a step, and every few seconds while a rollout runs, the
//!   candidate's telemetry since its step began is judged: a rejection
//!   rate above the policy's, or dataset drift, rolls it back
//!   automatically (the devices that had it go back to stable).
//! - Every change bumps the channel's serial and is recorded (who, when,
//!   from, to) in the same transaction as the new state.
//! - Devices: `GET /v1/ota/{model}/manifest?device=&current=&channel=`
//!   (device token) answers 204 when the device runs its target already,
//!   else a manifest (`kiln_protocol::ota`) signed with the service's key
//!   and expiring after the configured time; `GET
//!   /v1/ota/{model}/artifacts/{sha256}` serves the bytes with an `ETag`
//!   and single `Range` requests (206), so downloads resume.

use crate::server::{Collector, Failure, internal, now, require_admin};
use crate::store::OtaEvent;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_protocol::Sketch;
use object_store::{ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// How the update service is set up.
#[derive(Debug, Clone)]
pub struct OtaConfig {
    /// Where artifacts are kept, by sha256.
    pub objects: Arc<dyn ObjectStore>,
    /// The ed25519 secret seed manifests are signed with (the service's
    /// online key; devices trust its public half).
    pub manifest_key: [u8; 32],
    /// Public keys a release must be signed by one of (`kiln sign`).
    pub release_keys: Vec<[u8; 32]>,
    /// Seconds a manifest is valid for.
    pub ttl: u64,
}

/// A published release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub model: String,
    pub version: String,
    pub sha256: String,
    pub length: u64,
    pub published: i64,
    /// The release key that signed it.
    pub key_id: String,
}

/// When a rollout is rolled back automatically.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Rejected share of the candidate's calls above which it is rolled
    /// back.
    pub max_rejection_rate: f64,
    /// Calls the candidate needs in a step before it is judged.
    pub min_calls: u64,
    /// Roll back on dataset drift of the candidate's inputs too.
    pub drift: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_rejection_rate: 0.2,
            min_calls: 20,
            drift: true,
        }
    }
}

/// A candidate being rolled out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub version: String,
    pub percent: u8,
    pub paused: bool,
    /// When the current step began (its telemetry is what is judged).
    pub step_started: i64,
    pub policy: Policy,
}

/// A channel's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    pub model: String,
    pub channel: String,
    pub serial: u64,
    pub stable: Option<String>,
    /// The stable version before the current one (a manual rollback's
    /// default target).
    pub previous: Option<String>,
    pub rollout: Option<Rollout>,
}

/// The update service: its configuration and state (in memory, written
/// through to the collector's store).
#[derive(Debug)]
pub struct Ota {
    config: OtaConfig,
    state: Mutex<OtaState>,
}

#[derive(Debug, Default)]
struct OtaState {
    releases: BTreeMap<(String, String), Release>,
    channels: BTreeMap<(String, String), Channel>,
    seq: i64,
}

/// Which bucket (0..100) a device falls in for a rollout of `version`:
/// the same device always gets the same answer for the same release, and
/// each release picks its own canaries.
pub fn bucket(model: &str, version: &str, device: &str) -> u8 {
    let mut h = sha2::Sha256::new();
    for part in [model, version, device] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let d = h.finalize();
    (u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]) % 100) as u8
}

impl Channel {
    /// The version a device should run.
    pub fn target(&self, device: &str) -> Option<&str> {
        match &self.rollout {
            Some(r) if bucket(&self.model, &r.version, device) < r.percent => Some(&r.version),
            _ => self.stable.as_deref(),
        }
    }
}

/// The object store at `location`: a local directory (created if
/// missing), or `s3://BUCKET[/PREFIX]` (S3-compatible, credentials and
/// endpoint from the `AWS_*` environment) when built with the `s3`
/// feature.
pub fn object_store(location: &str) -> Result<Arc<dyn ObjectStore>, String> {
    if let Some(rest) = location.strip_prefix("s3://") {
        #[cfg(feature = "s3")]
        {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| format!("{location}: {e}"))?;
            return Ok(if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
            });
        }
        #[cfg(not(feature = "s3"))]
        return Err(format!(
            "{location}: this collector was built without S3 support (cargo feature `s3`); use a directory ({rest} is not one)"
        ));
    }
    std::fs::create_dir_all(location).map_err(|e| format!("{location}: {e}"))?;
    object_store::local::LocalFileSystem::new_with_prefix(location)
        .map(|fs| Arc::new(fs) as Arc<dyn ObjectStore>)
        .map_err(|e| format!("{location}: {e}"))
}

fn object_path(sha256: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!("artifacts/{sha256}.kiln"))
}

fn fail(status: StatusCode, why: impl Into<String>) -> Failure {
    Failure(status, why.into())
}

impl Ota {
    /// The service over `config`, its state read back from `c`'s store.
    pub fn load(c: &Collector, config: OtaConfig) -> Result<Ota, crate::store::StoreError> {
        let mut state = OtaState::default();
        let (entries, events) = c.store_call(|s| Ok((s.ota()?, s.ota_events()?)))?;
        for (key, value) in entries {
            if key.starts_with("release/") {
                if let Ok(r) = serde_json::from_str::<Release>(&value) {
                    state
                        .releases
                        .insert((r.model.clone(), r.version.clone()), r);
                }
            } else if let Ok(ch) = serde_json::from_str::<Channel>(&value) {
                state
                    .channels
                    .insert((ch.model.clone(), ch.channel.clone()), ch);
            }
        }
        state.seq = events.last().map_or(0, |e| e.seq);
        Ok(Ota {
            config,
            state: Mutex::new(state),
        })
    }
}

/// Records a change: the new value of `key` and its event, in one
/// transaction; the event as recorded.
async fn record(
    c: &Arc<Collector>,
    key: String,
    value: String,
    mut event: OtaEvent,
) -> Result<OtaEvent, Failure> {
    let ota = ota(c)?;
    event.seq = {
        let mut st = ota.state.lock().map_err(internal)?;
        st.seq += 1;
        st.seq
    };
    let e = event.clone();
    c.with_store(move |s| s.put_ota(&key, &value, &e)).await?;
    Ok(event)
}

fn ota(c: &Collector) -> Result<&Ota, Failure> {
    c.ota().ok_or_else(|| {
        fail(
            StatusCode::NOT_FOUND,
            "the update service is off: start the collector with --ota-key and --ota-release-pub",
        )
    })
}

fn actor(headers: &HeaderMap, given: Option<&str>) -> String {
    given
        .or_else(|| headers.get("x-kiln-actor").and_then(|v| v.to_str().ok()))
        .unwrap_or("admin")
        .to_string()
}

/// `POST /v1/ota/{model}/releases/{version}` (admin): the body is the
/// signed artifact.
pub(crate) async fn publish(
    State(c): State<Arc<Collector>>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    require_admin(&c, &headers)?;
    let service = ota(&c)?;
    // One aligned copy of the body: its signature, and the baseline that
    // lets its telemetry be judged like any version's (without one, its
    // telemetry is refused and its rollouts go unjudged).
    let (key_id, baseline) = crate::server::with_view(&body, |view| {
        view.verify_signature(&service.config.release_keys)
            .map(|id| (id.to_string(), crate::server::view_baseline(&view).ok()))
            .map_err(|e| e.to_string())
    })
    .and_then(|r| r)
    .map_err(|e| fail(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let sha256 = kiln_protocol::ota::to_hex(&sha2::Sha256::digest(&body));
    let release = Release {
        model: model.clone(),
        version: version.clone(),
        sha256: sha256.clone(),
        length: body.len() as u64,
        published: now(),
        key_id,
    };
    {
        let st = service.state.lock().map_err(internal)?;
        if let Some(old) = st.releases.get(&(model.clone(), version.clone())) {
            if old.sha256 == sha256 {
                return Ok(axum::Json(old).into_response());
            }
            return Err(fail(
                StatusCode::CONFLICT,
                format!(
                    "{model} {version} is already published with other content (sha256 {}): releases are immutable, publish a new version",
                    old.sha256
                ),
            ));
        }
    }
    service
        .config
        .objects
        .put(&object_path(&sha256), PutPayload::from(body.clone()))
        .await
        .map_err(internal)?;
    if let Some(b) = baseline {
        crate::server::keep_baseline(&c, model.clone(), version.clone(), b).await?;
    }
    let value = serde_json::to_string(&release).map_err(internal)?;
    record(
        &c,
        format!("release/{model}/{version}"),
        value,
        OtaEvent {
            seq: 0,
            at: release.published,
            model: model.clone(),
            channel: String::new(),
            actor: actor(&headers, None),
            action: "publish".into(),
            from: String::new(),
            to: version.clone(),
            percent: 0,
            serial: 0,
            detail: format!("sha256 {sha256}, {} bytes", release.length),
        },
    )
    .await?;
    service
        .state
        .lock()
        .map_err(internal)?
        .releases
        .insert((model, version), release.clone());
    Ok(axum::Json(release).into_response())
}

/// A channel move's request body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoveRequest {
    version: Option<String>,
    percent: Option<u8>,
    actor: Option<String>,
    policy: Option<Policy>,
    reason: Option<String>,
}

/// What a move did to a channel.
struct Moved {
    channel: Channel,
    action: &'static str,
    from: String,
    to: String,
    detail: String,
}

/// Applies `action` to the channel (in memory, after the checks), then
/// records it; the new state.
async fn apply(
    c: &Arc<Collector>,
    (model, channel): (&str, &str),
    actor: String,
    change: impl FnOnce(&OtaState, Channel) -> Result<Moved, Failure>,
) -> Result<Moved, Failure> {
    let service = ota(c)?;
    let moved = {
        let st = service.state.lock().map_err(internal)?;
        let current = st
            .channels
            .get(&(model.to_string(), channel.to_string()))
            .cloned()
            .unwrap_or(Channel {
                model: model.to_string(),
                channel: channel.to_string(),
                serial: 0,
                stable: None,
                previous: None,
                rollout: None,
            });
        let mut moved = change(&st, current)?;
        moved.channel.serial += 1;
        moved
    };
    let value = serde_json::to_string(&moved.channel).map_err(internal)?;
    let percent = moved.channel.rollout.as_ref().map_or(
        if moved.channel.stable.is_some() {
            100
        } else {
            0
        },
        |r| r.percent,
    );
    record(
        c,
        format!("channel/{model}/{channel}"),
        value,
        OtaEvent {
            seq: 0,
            at: now(),
            model: model.to_string(),
            channel: channel.to_string(),
            actor,
            action: moved.action.into(),
            from: moved.from.clone(),
            to: moved.to.clone(),
            percent: i64::from(percent),
            serial: moved.channel.serial as i64,
            detail: moved.detail.clone(),
        },
    )
    .await?;
    service.state.lock().map_err(internal)?.channels.insert(
        (model.to_string(), channel.to_string()),
        moved.channel.clone(),
    );
    Ok(moved)
}

/// Rolls the channel's candidate back (`action`: "abort", "rollback" or
/// "auto-rollback"): every device goes back to the stable version.
fn roll_back(mut ch: Channel, action: &'static str, detail: String) -> Result<Moved, Failure> {
    let r = ch.rollout.take().ok_or_else(|| {
        fail(
            StatusCode::CONFLICT,
            format!("{} has no rollout to roll back", ch.channel),
        )
    })?;
    let to = ch.stable.clone().unwrap_or_default();
    Ok(Moved {
        channel: ch,
        action,
        from: r.version,
        to,
        detail,
    })
}

/// Whether the candidate's telemetry since its step began calls for a
/// rollback: the reason.
async fn unhealthy(
    c: &Arc<Collector>,
    model: &str,
    r: &Rollout,
) -> Result<Option<String>, Failure> {
    let Ok(baseline) = crate::server::version_baseline(c, model, &r.version) else {
        return Ok(None);
    };
    let (m, v, since) = (model.to_string(), r.version.clone(), r.step_started);
    let blobs = c.with_store(move |s| s.sketches(&m, &v, since)).await?;
    let mut window = Sketch::new(&baseline);
    for (_, b) in &blobs {
        if let Ok(s) = Sketch::from_bytes(b) {
            let _ = window.merge(&s);
        }
    }
    let calls = window.latency_us.iter().sum::<u64>() + window.rejected;
    if calls < r.policy.min_calls.max(1) {
        return Ok(None);
    }
    let rate = window.rejected as f64 / calls as f64;
    if rate > r.policy.max_rejection_rate {
        return Ok(Some(format!(
            "{:.1}% of {calls} calls rejected (policy: at most {:.1}%)",
            100.0 * rate,
            100.0 * r.policy.max_rejection_rate
        )));
    }
    if r.policy.drift
        && window.rows > 0
        && let Ok(report) =
            crate::drift::detect_sketch(&baseline, &window, &crate::DriftOptions::default())
        && report.dataset_drift
    {
        return Ok(Some(format!(
            "dataset drift: {:.0}% of columns drifted over {} rows",
            100.0 * report.share_of_drifted_columns,
            window.rows
        )));
    }
    Ok(None)
}

/// `POST /v1/ota/{model}/channels/{channel}/rollout` (admin): `{"version",
/// "percent", "policy"?}` starts a rollout (or, on a channel without a
/// stable version, makes it stable at 100); `{"percent"}` steps the
/// running one up after judging its current step.
pub(crate) async fn rollout(
    State(c): State<Arc<Collector>>,
    Path((model, channel)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    require_admin(&c, &headers)?;
    let req = parse_move(&body)?;
    let who = actor(&headers, req.actor.as_deref());
    let percent = req
        .percent
        .filter(|p| (1..=100).contains(p))
        .ok_or_else(|| fail(StatusCode::BAD_REQUEST, "percent must be 1..=100"))?;
    // A step judges the running step first.
    let running = ota(&c)?
        .state
        .lock()
        .map_err(internal)?
        .channels
        .get(&(model.clone(), channel.clone()))
        .and_then(|ch| ch.rollout.clone());
    if let Some(r) = running.filter(|r| req.version.as_ref().is_none_or(|v| *v == r.version))
        && let Some(reason) = unhealthy(&c, &model, &r).await?
    {
        let moved = apply(&c, (&model, &channel), "auto".into(), |_, ch| {
            roll_back(ch, "auto-rollback", reason.clone())
        })
        .await?;
        return Err(fail(
            StatusCode::CONFLICT,
            format!(
                "{model} {} was rolled back instead of stepped up: {reason} (serial {})",
                r.version, moved.channel.serial
            ),
        ));
    }
    let policy = req.policy;
    let moved = apply(&c, (&model, &channel), who, |st, mut ch| {
        let version = match (&req.version, &ch.rollout) {
            (Some(v), _) => v.clone(),
            (None, Some(r)) => r.version.clone(),
            (None, None) => {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    format!("{channel} has no rollout: give the version to roll out"),
                ));
            }
        };
        if !st.releases.contains_key(&(model.clone(), version.clone())) {
            return Err(fail(
                StatusCode::NOT_FOUND,
                format!("{model} {version} is not published: publish it first"),
            ));
        }
        let from = ch.stable.clone().unwrap_or_default();
        if ch.stable.is_none() {
            // The first release of a channel goes to every device.
            ch.stable = Some(version.clone());
            return Ok(Moved {
                channel: ch,
                action: "promote",
                from,
                to: version,
                detail: "first release of the channel".into(),
            });
        }
        if ch.stable.as_deref() == Some(version.as_str()) {
            return Err(fail(
                StatusCode::CONFLICT,
                format!("{model} {version} is already {channel}'s stable version"),
            ));
        }
        let (action, mut r) = match ch.rollout.take() {
            Some(r) if r.version == version => {
                if r.paused {
                    return Err(fail(
                        StatusCode::CONFLICT,
                        format!("the rollout of {version} is paused: resume it first"),
                    ));
                }
                if percent <= r.percent {
                    return Err(fail(
                        StatusCode::CONFLICT,
                        format!(
                            "the rollout of {version} is at {}%: a step only grows (abort or roll back to stop it)",
                            r.percent
                        ),
                    ));
                }
                ("step", r)
            }
            Some(r) => {
                return Err(fail(
                    StatusCode::CONFLICT,
                    format!(
                        "a rollout of {} is running on {channel}: finish, abort or roll it back first",
                        r.version
                    ),
                ));
            }
            None => (
                "start",
                Rollout {
                    version: version.clone(),
                    percent: 0,
                    paused: false,
                    step_started: 0,
                    policy: policy.unwrap_or_default(),
                },
            ),
        };
        if let Some(p) = policy {
            r.policy = p;
        }
        r.percent = percent;
        r.step_started = now();
        if percent == 100 {
            ch.previous = ch.stable.replace(version.clone());
            return Ok(Moved {
                channel: ch,
                action: "promote",
                from,
                to: version,
                detail: "rollout complete".into(),
            });
        }
        ch.rollout = Some(r);
        Ok(Moved {
            channel: ch,
            action,
            from,
            to: version,
            detail: format!("{percent}% of devices"),
        })
    })
    .await?;
    Ok(axum::Json(moved.channel).into_response())
}

fn parse_move(body: &[u8]) -> Result<MoveRequest, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(MoveRequest::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        fail(
            StatusCode::BAD_REQUEST,
            format!(
                "expected {{\"version\"?, \"percent\"?, \"actor\"?, \"policy\"?, \"reason\"?}}: {e}"
            ),
        )
    })
}

/// `POST /v1/ota/{model}/channels/{channel}/{pause|resume|abort|rollback}`
/// (admin). `rollback` with no rollout running makes `{"version"}` (by
/// default the previous stable one) stable again.
pub(crate) async fn control(
    State(c): State<Arc<Collector>>,
    Path((model, channel, what)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    require_admin(&c, &headers)?;
    let req = parse_move(&body)?;
    let who = actor(&headers, req.actor.as_deref());
    let reason = req.reason.clone().unwrap_or_default();
    let moved = apply(&c, (&model, &channel), who, |st, mut ch| {
        match what.as_str() {
            "pause" | "resume" => {
                let pause = what == "pause";
                let r = ch.rollout.as_mut().ok_or_else(|| {
                    fail(
                        StatusCode::CONFLICT,
                        format!("{channel} has no rollout to {what}"),
                    )
                })?;
                r.paused = pause;
                if !pause {
                    // The resumed step is judged from now.
                    r.step_started = now();
                }
                let (from, to) = (ch.stable.clone().unwrap_or_default(), r.version.clone());
                Ok(Moved {
                    channel: ch,
                    action: if pause { "pause" } else { "resume" },
                    from,
                    to,
                    detail: reason,
                })
            }
            "abort" => roll_back(ch, "abort", reason),
            "rollback" if ch.rollout.is_some() => roll_back(ch, "rollback", reason),
            "rollback" => {
                let to = req
                    .version
                    .clone()
                    .or_else(|| ch.previous.clone())
                    .ok_or_else(|| {
                        fail(
                            StatusCode::CONFLICT,
                            format!("{channel} has no previous version: name one"),
                        )
                    })?;
                if !st.releases.contains_key(&(model.clone(), to.clone())) {
                    return Err(fail(
                        StatusCode::NOT_FOUND,
                        format!("{model} {to} is not published"),
                    ));
                }
                let from = ch.stable.clone().unwrap_or_default();
                ch.previous = ch.stable.replace(to.clone());
                Ok(Moved {
                    channel: ch,
                    action: "rollback",
                    from,
                    to,
                    detail: reason,
                })
            }
            _ => Err(fail(
                StatusCode::NOT_FOUND,
                format!("no such channel action '{what}' (pause, resume, abort, rollback)"),
            )),
        }
    })
    .await?;
    Ok(axum::Json(moved.channel).into_response())
}

/// `GET /v1/ota/{model}/status` (admin): releases, channels, and every
/// recorded move.
pub(crate) async fn status(
    State(c): State<Arc<Collector>>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    require_admin(&c, &headers)?;
    let service = ota(&c)?;
    let (releases, channels) = {
        let st = service.state.lock().map_err(internal)?;
        (
            st.releases
                .values()
                .filter(|r| r.model == model)
                .cloned()
                .collect::<Vec<_>>(),
            st.channels
                .values()
                .filter(|ch| ch.model == model)
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    let events: Vec<OtaEvent> = c
        .with_store(|s| s.ota_events())
        .await?
        .into_iter()
        .filter(|e| e.model == model)
        .collect();
    Ok(axum::Json(serde_json::json!({
        "model": model, "releases": releases, "channels": channels, "events": events,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ManifestQuery {
    device: String,
    #[serde(default)]
    current: String,
    channel: Option<String>,
}

/// The device a token speaks for may only ask about its model.
fn require_device(c: &Collector, headers: &HeaderMap, model: &str) -> Result<(), Failure> {
    if c.device_model(headers).as_deref() == Some(model) {
        Ok(())
    } else {
        Err(fail(
            StatusCode::UNAUTHORIZED,
            format!("a device token for {model} is required (Authorization: Bearer TOKEN)"),
        ))
    }
}

/// `GET /v1/ota/{model}/manifest?device=ID&current=VERSION&channel=stable`
/// (device token).
pub(crate) async fn manifest(
    State(c): State<Arc<Collector>>,
    Path(model): Path<String>,
    Query(q): Query<ManifestQuery>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    require_device(&c, &headers, &model)?;
    let service = ota(&c)?;
    if q.device.is_empty() || q.device.len() > 128 {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "device=ID (1 to 128 characters) is required",
        ));
    }
    let channel = q.channel.unwrap_or_else(|| "stable".into());
    let (ch, release) = {
        let st = service.state.lock().map_err(internal)?;
        let Some(ch) = st.channels.get(&(model.clone(), channel.clone())).cloned() else {
            return Ok(StatusCode::NO_CONTENT.into_response());
        };
        let Some(target) = ch.target(&q.device).map(str::to_string) else {
            return Ok(StatusCode::NO_CONTENT.into_response());
        };
        if target == q.current {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        let release = st
            .releases
            .get(&(model.clone(), target))
            .cloned()
            .ok_or_else(|| internal("a channel names an unpublished version"))?;
        (ch, release)
    };
    let body = kiln_protocol::ota::ManifestBody {
        model: &model,
        channel: &channel,
        serial: ch.serial,
        expires: (now().max(0) as u64).saturating_add(service.config.ttl),
        version: &release.version,
        sha256: &release.sha256,
        length: release.length,
    };
    let (mut k, mut s) = ([0u8; 16], [0u8; 128]);
    let (key_id, signature) =
        kiln_protocol::ota::sign(&body, &service.config.manifest_key, &mut k, &mut s)
            .map_err(|e| fail(StatusCode::BAD_REQUEST, e.to_string()))?;
    let signed = kiln_protocol::ota::SignedManifest {
        signed: body,
        key_id,
        signature,
    };
    Ok(axum::Json(signed).into_response())
}

/// `GET /v1/ota/{model}/artifacts/{sha256}` (device token): the bytes,
/// whole or one `Range: bytes=A-[B]` (206), with `ETag: "SHA256"`;
/// `If-Range` with another tag gets the whole artifact.
pub(crate) async fn artifact(
    State(c): State<Arc<Collector>>,
    Path((model, sha256)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    require_device(&c, &headers, &model)?;
    let service = ota(&c)?;
    let length = {
        let st = service.state.lock().map_err(internal)?;
        st.releases
            .values()
            .find(|r| r.model == model && r.sha256 == sha256)
            .map(|r| r.length)
            .ok_or_else(|| {
                fail(
                    StatusCode::NOT_FOUND,
                    format!("{model} has no release with sha256 {sha256}"),
                )
            })?
    };
    let etag = format!("\"{sha256}\"");
    let same = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let range = headers
        .get(header::RANGE)
        .filter(|_| same)
        .map(|v| parse_range(v.to_str().unwrap_or(""), length))
        .transpose()?;
    let (start, end) = range.unwrap_or((0, length));
    let opts = object_store::GetOptions {
        range: Some(object_store::GetRange::Bounded(start..end)),
        ..Default::default()
    };
    let got = service
        .config
        .objects
        .get_opts(&object_path(&sha256), opts)
        .await
        .map_err(internal)?;
    let body = axum::body::Body::from_stream(got.into_stream());
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).map_err(internal)?,
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if range.is_some() {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{}/{length}", end - 1))
                .map_err(internal)?,
        );
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(response)
}

/// One `bytes=A-B` or `bytes=A-` range of a `length`-byte object: the
/// half-open byte range; 416 when unsatisfiable.
fn parse_range(value: &str, length: u64) -> Result<(u64, u64), Failure> {
    let bad = || {
        fail(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("Range '{value}': one bytes=START-[END] within {length} bytes is served"),
        )
    };
    let spec = value.strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end: u64 = match b.trim() {
        "" => length,
        b => b
            .parse::<u64>()
            .map_err(|_| bad())?
            .saturating_add(1)
            .min(length),
    };
    if start >= end {
        return Err(bad());
    }
    Ok((start, end))
}

/// Judges every running rollout every `every`, rolling back the
/// unhealthy ones (between steps too, not only when one is asked for).
pub fn spawn_watch(c: Arc<Collector>, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let Some(service) = c.ota() else { return };
            let running: Vec<(String, String, Rollout)> = match service.state.lock() {
                Ok(st) => st
                    .channels
                    .values()
                    .filter_map(|ch| {
                        ch.rollout
                            .clone()
                            .filter(|r| !r.paused)
                            .map(|r| (ch.model.clone(), ch.channel.clone(), r))
                    })
                    .collect(),
                Err(_) => return,
            };
            for (model, channel, r) in running {
                let Ok(Some(reason)) = unhealthy(&c, &model, &r).await else {
                    continue;
                };
                let version = r.version.clone();
                // Only if the same rollout is still running.
                let _ = apply(&c, (&model, &channel), "auto".into(), |_, ch| {
                    if ch.rollout.as_ref().map(|x| &x.version) != Some(&version) {
                        return Err(fail(StatusCode::CONFLICT, "moved on"));
                    }
                    roll_back(ch, "auto-rollback", reason.clone())
                })
                .await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket("m", "2", "dev-1"), bucket("m", "2", "dev-1"));
        let mut counts = [0u32; 10];
        for d in 0..10_000 {
            counts[usize::from(bucket("m", "2", &format!("dev-{d}")) / 10)] += 1;
        }
        // 1,000 expected per decile (binomial, sd ≈ 30).
        assert!(
            counts.iter().all(|&n| (880..=1120).contains(&n)),
            "{counts:?}"
        );
        // Another release picks other canaries.
        let moved = (0..1000)
            .filter(|d| {
                let id = format!("dev-{d}");
                (bucket("m", "2", &id) < 10) != (bucket("m", "3", &id) < 10)
            })
            .count();
        assert!(moved > 100, "{moved}");
    }

    #[test]
    fn ranges_parse_or_are_refused() {
        assert_eq!(parse_range("bytes=0-99", 1000).ok(), Some((0, 100)));
        assert_eq!(parse_range("bytes=500-", 1000).ok(), Some((500, 1000)));
        assert_eq!(parse_range("bytes=500-5000", 1000).ok(), Some((500, 1000)));
        for bad in [
            "bytes=1000-",
            "items=0-1",
            "bytes=5-2",
            "bytes=-5",
            "bytes=a-b",
        ] {
            assert!(parse_range(bad, 1000).is_err(), "{bad}");
        }
    }
}
