//! Sending telemetry (feature `upload`): an [`Uploader`] takes the windows
//! a session records ([`crate::Session::take_sketch`]) and POSTs them to a
//! Kiln collector (`POST /v1/telemetry`) from a background thread.
//!
//! - [`Uploader::submit`] never blocks and never does I/O on the caller's
//!   thread: the window goes to a bounded queue (full: it is dropped and
//!   counted).
//! - Each window becomes a batch with a random 128-bit id. With a spool
//!   directory, the thread writes the batch there (a temporary file
//!   renamed into place) before its first attempt and deletes it once the
//!   collector has acknowledged it, so batches survive the collector being
//!   unreachable and the process restarting: a new uploader on the same
//!   directory sends what it finds, oldest first. Without one, batches wait
//!   in memory and are lost with the process.
//! - A failed attempt (no connection, a timeout, 429, 5xx) is retried with
//!   exponential backoff and full jitter (a random wait up to
//!   `min(max_backoff, first_backoff · 2^attempt)`). The collector counts a
//!   batch id once, so a batch whose acknowledgement was lost is sent again
//!   safely. A batch the collector refuses for good (another 4xx: a wrong
//!   token, a sketch that does not fit the version) is dropped and counted
//!   (`refused`), with the collector's reason in [`UploadStats::last_error`].
//! - At most `max_pending` batches wait; beyond that the oldest go
//!   (`dropped`): an offline device keeps its newest windows.
//! - With `epsilon`, each window gets Laplace noise before it leaves the
//!   caller's thread ([`kiln_protocol::Sketch::privatize`]): what is
//!   spooled and sent is already private.

use crate::telemetry::{seed, splitmix};
use kiln_protocol::Sketch;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where and how an [`Uploader`] sends.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// The collector, `http://HOST:PORT` or `https://…` (no path).
    pub url: String,
    /// The device token the collector issued for `model`.
    pub token: String,
    pub model: String,
    pub version: String,
    /// The on-disk buffer (created if missing), or `None` for memory only.
    pub spool: Option<PathBuf>,
    /// Batches waiting at most (memory and disk together).
    pub max_pending: usize,
    /// Windows queued between `submit` and the thread, at most.
    pub queue: usize,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Per request (connect, send, answer).
    pub timeout: Duration,
    /// ε of the Laplace noise added to each window (`None`: exact counts).
    pub epsilon: Option<f64>,
}

impl UploadConfig {
    /// Defaults for a device: no spool, 1,000 pending batches, backoff
    /// from 1 s to 5 min, 10 s requests, exact counts.
    pub fn new(url: &str, token: &str, model: &str, version: &str) -> UploadConfig {
        UploadConfig {
            url: url.trim_end_matches('/').into(),
            token: token.into(),
            model: model.into(),
            version: version.into(),
            spool: None,
            max_pending: 1_000,
            queue: 64,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            epsilon: None,
        }
    }
}

/// Why an uploader could not start or take a window.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    #[error("the spool directory {path}: {source}")]
    Spool {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the collector URL '{0}' must start with http:// or https://")]
    Url(String),
    #[error("ε must be a positive number, not {0}")]
    Epsilon(f64),
    #[error("raw samples cannot be sent with ε-differential privacy on: they would undo it")]
    SamplesNotPrivate,
    #[error("the upload queue is full ({0} windows): this window is dropped")]
    QueueFull(usize),
    #[error("the uploader has stopped")]
    Stopped,
    #[error("cannot start the upload thread: {0}")]
    Thread(std::io::Error),
}

/// What an uploader has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadStats {
    /// Batches the collector acknowledged (`duplicates` of them already
    /// stored from an earlier attempt).
    pub sent: u64,
    pub duplicates: u64,
    /// Attempts that failed and will be retried.
    pub retries: u64,
    /// Batches the collector refused for good.
    pub refused: u64,
    /// Batches dropped: the queue or the pending limit was full.
    pub dropped: u64,
    /// Batches waiting now.
    pub pending: u64,
    /// The latest failure, as the collector or the network said it.
    pub last_error: Option<String>,
}

enum Message {
    Batch(Batch),
    Stop,
}

#[derive(Debug)]
struct Batch {
    id: String,
    body: Vec<u8>,
    file: Option<PathBuf>,
}

/// Sends a model version's telemetry windows to a collector from a
/// background thread; see the [module docs](self).
#[derive(Debug)]
pub struct Uploader {
    tx: SyncSender<Message>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<Mutex<UploadStats>>,
    /// Windows submitted that the thread has not taken yet.
    queued: Arc<AtomicU64>,
    config: UploadConfig,
}

impl Uploader {
    /// Starts the thread; with a spool directory, batches a previous
    /// uploader left there are pending from the start.
    pub fn start(config: UploadConfig) -> Result<Uploader, UploadError> {
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(UploadError::Url(config.url.clone()));
        }
        if let Some(e) = config.epsilon
            && !(e.is_finite() && e > 0.0)
        {
            return Err(UploadError::Epsilon(e));
        }
        let mut pending = VecDeque::new();
        if let Some(dir) = &config.spool {
            pending = read_spool(dir).map_err(|source| UploadError::Spool {
                path: dir.clone(),
                source,
            })?;
        }
        let stats = Arc::new(Mutex::new(UploadStats {
            pending: pending.len() as u64,
            ..Default::default()
        }));
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue.max(1));
        let queued = Arc::new(AtomicU64::new(0));
        let worker = Worker {
            queued: queued.clone(),
            agent: ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .timeout_global(Some(config.timeout))
                    .http_status_as_error(false)
                    .build(),
            ),
            endpoint: format!("{}/v1/telemetry", config.url),
            auth: format!("Bearer {}", config.token),
            config: config.clone(),
            pending,
            stats: stats.clone(),
            attempt: 0,
            rng: seed(),
        };
        let thread = std::thread::Builder::new()
            .name("kiln-telemetry-upload".into())
            .spawn(move || worker.run(rx))
            .map_err(UploadError::Thread)?;
        Ok(Uploader {
            tx,
            thread: Some(thread),
            stats,
            queued,
            config,
        })
    }

    /// Queues a window for sending; returns at once. The window must be
    /// of this model version's baseline (the collector refuses others).
    pub fn submit(&self, sketch: Sketch) -> Result<(), UploadError> {
        self.submit_with_samples(sketch, Vec::new())
    }

    /// [`Uploader::submit`], with the raw rows the session sampled in the
    /// window ([`crate::Session::take_samples`]; at most 1,000, the
    /// collector's limit). Refused when the uploader adds noise: raw rows
    /// would undo the privacy.
    pub fn submit_with_samples(
        &self,
        mut sketch: Sketch,
        samples: Vec<Vec<f32>>,
    ) -> Result<(), UploadError> {
        if let Some(epsilon) = self.config.epsilon {
            if !samples.is_empty() {
                return Err(UploadError::SamplesNotPrivate);
            }
            let mut rng = seed();
            sketch.privatize(epsilon, &mut || splitmix(&mut rng));
        }
        let id = batch_id();
        let mut batch = serde_json::json!({
            "batch_id": id,
            "model": self.config.model,
            "version": self.config.version,
            "sketch": sketch,
        });
        if !samples.is_empty() {
            // NaN becomes null, as the collector reads it.
            batch["samples"] = serde_json::json!(samples);
        }
        let body = serde_json::to_vec(&batch).unwrap_or_default();
        let batch = Batch {
            id,
            body,
            file: None,
        };
        self.queued.fetch_add(1, Ordering::SeqCst);
        let sent = self.tx.try_send(Message::Batch(batch));
        if sent.is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
        match sent {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                if let Ok(mut s) = self.stats.lock() {
                    s.dropped += 1;
                }
                Err(UploadError::QueueFull(self.config.queue))
            }
            Err(TrySendError::Disconnected(_)) => Err(UploadError::Stopped),
        }
    }

    /// What the uploader has done so far.
    pub fn stats(&self) -> UploadStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until nothing is pending or `timeout` passes; whether
    /// everything was delivered (or refused).
    pub fn flush(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.queued.load(Ordering::SeqCst) == 0 && self.stats().pending == 0 {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Uploader {
    /// Stops the thread after its current attempt: spooled batches stay on
    /// disk for the next uploader; memory-only ones are lost.
    fn drop(&mut self) {
        let _ = self.tx.send(Message::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    queued: Arc<AtomicU64>,
    agent: ureq::Agent,
    endpoint: String,
    auth: String,
    config: UploadConfig,
    pending: VecDeque<Batch>,
    stats: Arc<Mutex<UploadStats>>,
    /// Failed attempts in a row.
    attempt: u32,
    rng: u64,
}

/// What one attempt came to.
enum Outcome {
    Stored { duplicate: bool },
    Retry(String),
    Refused(String),
}

impl Worker {
    fn run(mut self, rx: Receiver<Message>) {
        // When the next attempt is due (`None`: now, if anything waits).
        let mut retry_at: Option<Instant> = None;
        loop {
            let wait = retry_at.map(|t| t.saturating_duration_since(Instant::now()));
            let message = match (self.pending.is_empty(), wait) {
                (true, _) => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                (false, Some(w)) if !w.is_zero() => rx.recv_timeout(w),
                (false, _) => rx.try_recv().map_err(|e| match e {
                    std::sync::mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                    std::sync::mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                }),
            };
            match message {
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                // New windows are spooled at once; they do not cut a
                // backoff short.
                Ok(Message::Batch(b)) => {
                    self.add(b);
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            match self.send_pending(&rx) {
                Some(w) if w == Duration::MAX => return,
                Some(w) => retry_at = Some(Instant::now() + w),
                None => retry_at = None,
            }
        }
    }

    /// Takes a new batch: spooled first, then pending (dropping the oldest
    /// beyond the limit).
    fn add(&mut self, mut b: Batch) {
        if let Some(dir) = &self.config.spool {
            match spool(dir, &b) {
                Ok(path) => b.file = Some(path),
                Err(e) => self.note(|s| s.last_error = Some(format!("spooling a batch: {e}"))),
            }
        }
        self.pending.push_back(b);
        while self.pending.len() > self.config.max_pending.max(1) {
            if let Some(old) = self.pending.pop_front() {
                forget(&old);
                self.note(|s| s.dropped += 1);
            }
        }
        let n = self.pending.len() as u64;
        self.note(|s| s.pending = n);
        // Only now: `flush` must never see the batch in neither count.
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }

    /// Sends pending batches, oldest first, until one fails; how long to
    /// wait before the next try (`None`: all sent; `Duration::MAX`: stop
    /// now).
    fn send_pending(&mut self, rx: &Receiver<Message>) -> Option<Duration> {
        while let Some(b) = self.pending.front() {
            let outcome = self.attempt_one(b);
            match outcome {
                Outcome::Stored { duplicate } => {
                    self.attempt = 0;
                    if let Some(b) = self.pending.pop_front() {
                        forget(&b);
                    }
                    self.note(|s| {
                        s.sent += 1;
                        s.duplicates += u64::from(duplicate);
                    });
                }
                Outcome::Refused(why) => {
                    self.attempt = 0;
                    if let Some(b) = self.pending.pop_front() {
                        forget(&b);
                    }
                    self.note(|s| {
                        s.refused += 1;
                        s.last_error = Some(why);
                    });
                }
                Outcome::Retry(why) => {
                    self.attempt = self.attempt.saturating_add(1);
                    self.note(|s| {
                        s.retries += 1;
                        s.last_error = Some(why);
                    });
                    let n = self.pending.len() as u64;
                    self.note(|s| s.pending = n);
                    let cap = backoff_cap(
                        self.attempt,
                        self.config.first_backoff,
                        self.config.max_backoff,
                    );
                    // Full jitter: uniform in [0, cap].
                    let r = splitmix(&mut self.rng) as f64 / u64::MAX as f64;
                    return Some(cap.mul_f64(r));
                }
            }
            let n = self.pending.len() as u64;
            self.note(|s| s.pending = n);
            // A stop asked for mid-way ends the loop between batches.
            if let Ok(m) = rx.try_recv() {
                match m {
                    Message::Stop => return Some(Duration::MAX),
                    Message::Batch(b) => self.add(b),
                }
            }
        }
        None
    }

    fn attempt_one(&self, b: &Batch) -> Outcome {
        let answer = self
            .agent
            .post(&self.endpoint)
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .send(&b.body[..]);
        let mut response = match answer {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("{}: {e}", self.endpoint)),
        };
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        match status {
            200..=299 => {
                let duplicate = serde_json::from_str::<serde_json::Value>(&text)
                    .map(|v| v["duplicate"] == true)
                    .unwrap_or(false);
                Outcome::Stored { duplicate }
            }
            408 | 429 | 500..=599 => Outcome::Retry(format!("HTTP {status}: {text}")),
            _ => Outcome::Refused(format!("batch {}: HTTP {status}: {text}", b.id)),
        }
    }

    fn note(&self, f: impl FnOnce(&mut UploadStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }
}

/// The longest wait before retry `attempt` (1-based): `first · 2^(attempt
/// - 1)`, at most `max`.
pub fn backoff_cap(attempt: u32, first: Duration, max: Duration) -> Duration {
    let factor = 2f64.powi(attempt.saturating_sub(1).min(62) as i32);
    first.mul_f64(factor).min(max)
}

/// Writes a batch into the spool: `NANOS-ID.json` (names sort oldest
/// first), through a temporary file renamed into place, synced.
fn spool(dir: &Path, b: &Batch) -> std::io::Result<PathBuf> {
    use std::io::Write;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = dir.join(format!("{nanos:024}-{}.json", b.id));
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&b.body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The batches a spool holds, oldest first (creating the directory;
/// half-written temporary files are removed).
fn read_spool(dir: &Path) -> std::io::Result<VecDeque<Batch>> {
    std::fs::create_dir_all(dir)?;
    let mut names = vec![];
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => names.push(path),
            Some("tmp") => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
    names.sort();
    let mut batches = VecDeque::new();
    for path in names {
        let body = std::fs::read(&path)?;
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.split_once('-'))
            .map_or_else(String::new, |(_, id)| id.to_string());
        batches.push_back(Batch {
            id,
            body,
            file: Some(path),
        });
    }
    Ok(batches)
}

fn forget(b: &Batch) {
    if let Some(path) = &b.file {
        let _ = std::fs::remove_file(path);
    }
}

/// A random batch id: 128 bits, hex.
fn batch_id() -> String {
    let mut state = seed();
    let (a, b) = (splitmix(&mut state), splitmix(&mut state));
    format!("{a:016x}{b:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (first, max) = (Duration::from_millis(100), Duration::from_secs(1));
        let caps: Vec<u128> = (1..7)
            .map(|a| backoff_cap(a, first, max).as_millis())
            .collect();
        assert_eq!(caps, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff_cap(u32::MAX, first, max), max);
    }

    #[test]
    fn batch_ids_are_random_hex() {
        let (a, b) = (batch_id(), batch_id());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_spool_reads_back_oldest_first_and_drops_half_writes() {
        let dir = std::env::temp_dir().join(format!("kiln-spool-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for k in 0..3 {
            let b = Batch {
                id: format!("id{k}"),
                body: format!("{{\"k\":{k}}}").into_bytes(),
                file: None,
            };
            spool(&dir, &b).unwrap();
        }
        std::fs::write(dir.join("junk.tmp"), b"half").unwrap();
        let got = read_spool(&dir).unwrap();
        let ids: Vec<&str> = got.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, ["id0", "id1", "id2"]);
        assert_eq!(got[2].body, b"{\"k\":2}");
        assert!(!dir.join("junk.tmp").exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
