//! The device side of over-the-air model updates (feature `ota`): ask the
//! collector's update service which version this device should run, and
//! if it is not the one installed, download it (resuming where an
//! interrupted download stopped), check it (the manifest's signature,
//! expiry and serial; the artifact's sha256 and release signature), try
//! it (it loads and answers a run), and switch to it atomically, keeping
//! the previous version to go back to.
//!
//! On disk, in the client's directory: `state.json` (the installed and
//! previous versions, the highest manifest serial accepted, the versions
//! refused), `models/SHA256.kiln`, and `SHA256.part` while downloading.
//! `state.json` is replaced by rename after an fsync, so a device that
//! loses power mid-update runs either the old version or the new one.

use crate::{Model, RunError, TensorValue};
use kiln_protocol::ota::{OtaError as ManifestError, SignedManifest};
use sha2::Digest as _;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where and how a device updates.
#[derive(Debug, Clone)]
pub struct OtaConfig {
    /// The collector, e.g. `http://127.0.0.1:8470`.
    pub url: String,
    /// This device's token (`POST /v1/tokens`).
    pub token: String,
    pub model: String,
    pub channel: String,
    /// This device's stable id (rollouts pick devices by its hash).
    pub device: String,
    /// The update service's public keys (manifests).
    pub manifest_keys: Vec<[u8; 32]>,
    /// Release public keys (artifacts, `kiln sign`).
    pub release_keys: Vec<[u8; 32]>,
    /// The client's directory (created if missing).
    pub dir: PathBuf,
    /// Per HTTP request.
    pub timeout: Duration,
    /// Download attempts per pull (each resumes the last).
    pub attempts: u32,
    /// Runs after an update that are watched ([`OtaClient::observe`]):
    /// when more than half of them fail, the previous version comes back.
    pub probation: u32,
}

impl OtaConfig {
    pub fn new(url: &str, token: &str, model: &str, device: &str, dir: impl Into<PathBuf>) -> Self {
        OtaConfig {
            url: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            model: model.to_string(),
            channel: "stable".into(),
            device: device.to_string(),
            manifest_keys: vec![],
            release_keys: vec![],
            dir: dir.into(),
            timeout: Duration::from_secs(30),
            attempts: 5,
            probation: 10,
        }
    }
}

/// Why an update did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtaError {
    #[error("{url}: {message}")]
    Network { url: String, message: String },
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("manifest refused: {0}")]
    Manifest(ManifestError),
    #[error("{0}: not a manifest")]
    NotAManifest(String),
    #[error(
        "the downloaded artifact's sha256 is {got}, the manifest says {expected}: tampered with in transit or in storage; not installed"
    )]
    Tampered { expected: String, got: String },
    #[error("the new version {version} failed its check and was not installed: {why}")]
    Unhealthy { version: String, why: String },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("no previous version to go back to")]
    NoPrevious,
}

/// An installed version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Slot {
    pub version: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct State {
    serial: u64,
    current: Option<Slot>,
    previous: Option<Slot>,
    /// Artifacts that failed here (health check or probation): not
    /// installed again.
    refused: Vec<String>,
    /// Runs watched since the last update, and how many failed.
    watched: u32,
    failed: u32,
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pulled {
    /// The service has nothing new for this device (HTTP 204).
    UpToDate,
    /// The manifest names an artifact that failed here before.
    Refused { version: String },
    /// Installed `to` (the previous version kept).
    Updated {
        from: Option<String>,
        to: String,
        /// Artifact bytes received, resumed attempts included.
        received: u64,
    },
}

/// A device's update client.
#[derive(Debug)]
pub struct OtaClient {
    config: OtaConfig,
    state: State,
    agent: ureq::Agent,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> OtaError + '_ {
    move |e| OtaError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl OtaClient {
    /// The client over `config.dir`, picking up what an earlier process
    /// installed.
    pub fn open(config: OtaConfig) -> Result<OtaClient, OtaError> {
        let models = config.dir.join("models");
        std::fs::create_dir_all(&models).map_err(io(&models))?;
        let path = config.dir.join("state.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| OtaError::Io {
                path: path.display().to_string(),
                message: format!("damaged: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io(&path)(e)),
        };
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(config.timeout))
                .http_status_as_error(false)
                .build(),
        );
        Ok(OtaClient {
            config,
            state,
            agent,
        })
    }

    /// The installed version.
    pub fn current(&self) -> Option<&Slot> {
        self.state.current.as_ref()
    }

    /// The version kept to go back to.
    pub fn previous(&self) -> Option<&Slot> {
        self.state.previous.as_ref()
    }

    /// The highest manifest serial accepted.
    pub fn serial(&self) -> u64 {
        self.state.serial
    }

    fn artifact_path(&self, sha256: &str) -> PathBuf {
        self.config
            .dir
            .join("models")
            .join(format!("{sha256}.kiln"))
    }

    /// The installed model, its signature checked again.
    pub fn model(&self) -> Result<Option<Model>, OtaError> {
        let Some(slot) = &self.state.current else {
            return Ok(None);
        };
        let path = self.artifact_path(&slot.sha256);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        Model::load_trusted(&bytes, &self.config.release_keys)
            .map(Some)
            .map_err(|e| OtaError::Unhealthy {
                version: slot.version.clone(),
                why: e.to_string(),
            })
    }

    /// Asks for, checks and installs what the service wants this device
    /// to run.
    pub fn pull(&mut self) -> Result<Pulled, OtaError> {
        let current = self
            .state
            .current
            .as_ref()
            .map_or("", |s| s.version.as_str());
        let url = format!(
            "{}/v1/ota/{}/manifest?device={}&current={}&channel={}",
            self.config.url,
            encode(&self.config.model),
            encode(&self.config.device),
            encode(current),
            encode(&self.config.channel)
        );
        let mut response = self
            .agent
            .get(&url)
            .header("authorization", &format!("Bearer {}", self.config.token))
            .call()
            .map_err(|e| OtaError::Network {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_vec()
            .map_err(|e| OtaError::Network {
                url: url.clone(),
                message: e.to_string(),
            })?;
        match status {
            204 => Ok(Pulled::UpToDate),
            200 => self.apply(&body, unix_now()),
            _ => Err(OtaError::Status {
                url,
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            }),
        }
    }

    /// Checks a manifest (JSON, as the service sends it) at `now` (unix
    /// seconds) without acting on it: what [`OtaClient::pull`] does first.
    pub fn check(&self, manifest: &[u8], now: u64) -> Result<(), OtaError> {
        self.verified(manifest, now).map(|_| ())
    }

    /// The manifest, parsed (borrowing `manifest`) and verified.
    fn verified<'m>(&self, manifest: &'m [u8], now: u64) -> Result<SignedManifest<'m>, OtaError> {
        let m: SignedManifest<'m> =
            serde_json::from_slice(manifest).map_err(|e| OtaError::NotAManifest(e.to_string()))?;
        m.verify(
            &self.config.manifest_keys,
            (&self.config.model, &self.config.channel),
            now,
            self.state.serial,
        )
        .map_err(OtaError::Manifest)?;
        Ok(m)
    }

    /// Acts on a manifest: downloads, checks and installs its artifact.
    pub fn apply(&mut self, manifest: &[u8], now: u64) -> Result<Pulled, OtaError> {
        let b = self.verified(manifest, now)?.signed;
        if self.state.refused.iter().any(|s| s == b.sha256) {
            self.state.serial = b.serial;
            self.save()?;
            return Ok(Pulled::Refused {
                version: b.version.to_string(),
            });
        }
        let slot = Slot {
            version: b.version.to_string(),
            sha256: b.sha256.to_string(),
        };
        let received = if self.artifact_path(b.sha256).exists() {
            0
        } else {
            self.download(b.sha256, b.length)?
        };
        let path = self.artifact_path(b.sha256);
        if let Err(why) = self.try_model(&path) {
            self.state.refused.push(slot.sha256.clone());
            self.state.serial = b.serial;
            let _ = std::fs::remove_file(&path);
            self.save()?;
            return Err(OtaError::Unhealthy {
                version: slot.version,
                why,
            });
        }
        let from = self.state.current.as_ref().map(|s| s.version.clone());
        self.switch(Some(slot), b.serial, true)?;
        Ok(Pulled::Updated {
            from,
            to: b.version.to_string(),
            received,
        })
    }

    /// Makes `next` current with one rename; the current one becomes the
    /// previous one if `keep` (else there is none).
    fn switch(&mut self, next: Option<Slot>, serial: u64, keep: bool) -> Result<(), OtaError> {
        let mut state = self.state.clone();
        if next.as_ref() != state.current.as_ref() {
            let current = state.current.take();
            state.previous = if keep { current } else { None };
            state.current = next;
        }
        state.serial = state.serial.max(serial);
        state.watched = 0;
        state.failed = 0;
        let old = std::mem::replace(&mut self.state, state);
        if let Err(e) = self.save() {
            self.state = old;
            return Err(e);
        }
        // Artifacts neither slot names are not needed any more.
        let keep: Vec<String> = [&self.state.current, &self.state.previous]
            .into_iter()
            .flatten()
            .map(|s| format!("{}.kiln", s.sha256))
            .collect();
        if let Ok(dir) = std::fs::read_dir(self.config.dir.join("models")) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    fn save(&self) -> Result<(), OtaError> {
        let path = self.config.dir.join("state.json");
        let tmp = self.config.dir.join("state.json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(|e| OtaError::Io {
            path: tmp.display().to_string(),
            message: e.to_string(),
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Downloads the artifact into `models/`, resuming a `.part` file;
    /// the bytes received.
    fn download(&self, sha256: &str, length: u64) -> Result<u64, OtaError> {
        let part = self.config.dir.join(format!("{sha256}.part"));
        let url = format!(
            "{}/v1/ota/{}/artifacts/{sha256}",
            self.config.url,
            encode(&self.config.model)
        );
        let mut received = 0u64;
        let mut last = None;
        for _ in 0..self.config.attempts.max(1) {
            match self.fetch(&url, &part, sha256, &mut received) {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e @ (OtaError::Network { .. } | OtaError::Io { .. })) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        let mut hasher = sha2::Sha256::new();
        let mut f = std::fs::File::open(&part).map_err(io(&part))?;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(io(&part))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            hasher.update(&buf[..n]);
        }
        let got = kiln_protocol::ota::to_hex(&hasher.finalize());
        if got != sha256 || total != length {
            let _ = std::fs::remove_file(&part);
            return Err(OtaError::Tampered {
                expected: sha256.to_string(),
                got,
            });
        }
        let dest = self.artifact_path(sha256);
        std::fs::rename(&part, &dest).map_err(io(&dest))?;
        Ok(received)
    }

    /// One attempt: asks for what `part` lacks and appends it.
    fn fetch(
        &self,
        url: &str,
        part: &Path,
        sha256: &str,
        received: &mut u64,
    ) -> Result<(), OtaError> {
        let have = std::fs::metadata(part).map_or(0, |m| m.len());
        let etag = format!("\"{sha256}\"");
        let mut request = self
            .agent
            .get(url)
            .header("authorization", &format!("Bearer {}", self.config.token));
        if have > 0 {
            request = request
                .header("range", &format!("bytes={have}-"))
                .header("if-range", &etag);
        }
        let net = |e: &dyn std::fmt::Display| OtaError::Network {
            url: url.to_string(),
            message: e.to_string(),
        };
        let mut response = request.call().map_err(|e| net(&e))?;
        let status = response.status().as_u16();
        let mut file = match status {
            206 => std::fs::OpenOptions::new()
                .append(true)
                .open(part)
                .map_err(io(part))?,
            200 => std::fs::File::create(part).map_err(io(part))?,
            416 if have > 0 => {
                // Already whole (or longer than the artifact): start over.
                let _ = std::fs::remove_file(part);
                return Err(net(&"the partial download does not fit; starting again"));
            }
            _ => {
                let body = response.body_mut().read_to_string().unwrap_or_default();
                return Err(OtaError::Status {
                    url: url.to_string(),
                    status,
                    body,
                });
            }
        };
        let mut reader = response.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    // What arrived stays on disk for the next attempt.
                    let _ = file.sync_data();
                    return Err(net(&e));
                }
            };
            file.write_all(&buf[..n]).map_err(io(part))?;
            *received += n as u64;
        }
        file.sync_all().map_err(io(part))?;
        Ok(())
    }

    /// The health check before a switch: the signature verifies, the
    /// model loads and answers a run on a neutral input (zeros) with
    /// finite outputs.
    fn try_model(&self, path: &Path) -> Result<(), String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let model =
            Model::load_trusted(&bytes, &self.config.release_keys).map_err(|e| e.to_string())?;
        health_check(&model)
    }

    /// Counts one run of the installed version (`ok`: it answered): while
    /// on probation after an update, more than half of the watched runs
    /// failing reverts to the previous version; whether it reverted.
    pub fn observe(&mut self, ok: bool) -> Result<bool, OtaError> {
        if self.state.previous.is_none() || self.state.watched >= self.config.probation {
            return Ok(false);
        }
        self.state.watched += 1;
        self.state.failed += u32::from(!ok);
        if 2 * self.state.failed > self.config.probation {
            if let Some(bad) = &self.state.current {
                self.state.refused.push(bad.sha256.clone());
            }
            self.revert()?;
            return Ok(true);
        }
        if self.state.watched == self.config.probation {
            self.save()?;
        }
        Ok(false)
    }

    /// Goes back to the previous version.
    pub fn revert(&mut self) -> Result<(), OtaError> {
        let previous = self.state.previous.clone().ok_or(OtaError::NoPrevious)?;
        let serial = self.state.serial;
        // The reverted-from version is not kept as "previous".
        self.switch(Some(previous), serial, false)
    }
}

/// A run on zeros of every input's shape (batch 1) answers with finite
/// float outputs.
pub fn health_check(model: &Model) -> Result<(), String> {
    let inputs: Vec<TensorValue> = model
        .inputs()
        .iter()
        .map(|spec| {
            let shape = spec.shape(1);
            let n: usize = shape.iter().product();
            TensorValue {
                dtype: spec.dtype,
                shape,
                data: vec![0u8; n * spec.dtype.size()],
            }
        })
        .collect();
    let refs: Vec<&TensorValue> = inputs.iter().collect();
    let outputs = model
        .session()
        .run(&refs)
        .map_err(|e: RunError| format!("a run on zeros failed: {e}"))?;
    if outputs
        .iter()
        .any(|o| o.f32_values().any(|x| !x.is_finite()))
    {
        return Err("a run on zeros gave NaN or infinite outputs".into());
    }
    Ok(())
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
