//! Telemetry: a session that records counts every run into a
//! `kiln_protocol::Sketch` of the artifact's drift baseline (the input's
//! features in the baseline's bins, rejected calls, latency), in memory of
//! a fixed size, for the host to take and send (`Session::take_sketch`).

#[cfg(feature = "telemetry")]
use crate::DType;
use crate::{Model, TensorValue};
use kiln_protocol::{Baseline, Sketch};

pub use kiln_protocol::BASELINE_PROPERTY;

/// The sampling rate [`crate::Session::record_telemetry`] is meant to be
/// called with in production: one call in 64 counted (the telemetry bench
/// in BENCHMARKS.md measures what it costs).
pub const DEFAULT_SAMPLE_EVERY: u32 = 64;

/// Why telemetry cannot be recorded for a model.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TelemetryError {
    #[error(
        "the artifact has no drift baseline: compile it with `kiln compile ... --reference DATA`"
    )]
    NoBaseline,
    #[error("the artifact's drift baseline is damaged: {0}")]
    BadBaseline(&'static str),
    #[error(
        "the drift baseline has {baseline} features but the model's first input takes {input} per sample (float32 or 8-bit integer values)"
    )]
    Features { baseline: usize, input: usize },
    #[error("this build of the runtime records no telemetry (cargo feature `telemetry` is off)")]
    Disabled,
    #[error("the session records no telemetry: call `record_telemetry` first")]
    NotRecording,
}

impl Model {
    /// The drift baseline the artifact carries, if any.
    pub fn drift_baseline(&self) -> Result<Baseline, TelemetryError> {
        let view = self.view();
        let value = view
            .meta()
            .property(BASELINE_PROPERTY)
            .ok_or(TelemetryError::NoBaseline)?;
        Baseline::from_property(value).map_err(|e| match e {
            kiln_protocol::SketchError::BadBaseline(why) => TelemetryError::BadBaseline(why),
            _ => TelemetryError::BadBaseline("does not decode"),
        })
    }
}

/// A session's recording state.
#[cfg(feature = "telemetry")]
#[derive(Debug)]
pub(crate) struct Recorder {
    baseline: Baseline,
    sketch: Sketch,
    /// Reused per row.
    row: Vec<f64>,
    /// Which calls are counted (and timed).
    sampler: kiln_protocol::Sampler,
    /// A tensor input's layout (its features are channel summaries).
    tensor: Option<Tensor>,
    /// Raw rows kept, if asked for ([`crate::Session::record_samples`]).
    reservoir: Option<Reservoir>,
    /// The first input's element type: float32, or 8-bit integers counted
    /// as their codes (as the compiler took the reference).
    dtype: DType,
}

/// Element `k` of `data` as telemetry counts it (NaN: a type it does not
/// count, which [`DType::drift_counted`] rules out at creation).
#[cfg(feature = "telemetry")]
fn value(dtype: DType, data: &[u8], k: usize) -> f64 {
    dtype.drift_value(data, k).unwrap_or(f64::NAN)
}

/// How a tensor input's samples become features.
#[cfg(feature = "telemetry")]
#[derive(Debug)]
struct Tensor {
    axis: usize,
    /// The input's shape with a batch of 1.
    shape: Vec<usize>,
    per_sample: usize,
}

/// A uniform sample of `k` of the rows seen (Vitter's algorithm R): after
/// `n` rows, each is kept with probability `k / n`.
#[cfg(feature = "telemetry")]
#[derive(Debug)]
pub(crate) struct Reservoir {
    k: usize,
    seen: u64,
    rows: Vec<Vec<f32>>,
    rng: u64,
}

#[cfg(feature = "telemetry")]
impl Reservoir {
    pub(crate) fn new(k: usize, seed: u64) -> Reservoir {
        Reservoir {
            k,
            seen: 0,
            rows: Vec::with_capacity(k.min(1024)),
            rng: seed,
        }
    }

    /// Offers one row (float32 values widened to f64, narrowed back
    /// exactly).
    pub(crate) fn offer(&mut self, row: &[f64]) {
        self.seen += 1;
        if self.rows.len() < self.k {
            self.rows.push(row.iter().map(|&x| x as f32).collect());
            return;
        }
        // Uniform in [0, seen) by rejection-free multiply-shift (bias below
        // 2^-64 · seen).
        let r = splitmix(&mut self.rng);
        let j = ((u128::from(r) * u128::from(self.seen)) >> 64) as usize;
        if let Some(slot) = self.rows.get_mut(j) {
            for (s, &x) in slot.iter_mut().zip(row) {
                *s = x as f32;
            }
        }
    }

    pub(crate) fn take(&mut self) -> Vec<Vec<f32>> {
        self.seen = 0;
        std::mem::take(&mut self.rows)
    }
}

/// SplitMix64: the reservoir's, and the uploader's jitter, noise and batch
/// ids' generator, seeded by [`seed`].
#[cfg(feature = "telemetry")]
pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seed from std's random hashing keys (drawn from the OS generator,
/// secret to the process): a new one per call.
#[cfg(feature = "telemetry")]
pub(crate) fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[cfg(all(test, feature = "telemetry"))]
mod tests {
    use super::Reservoir;

    #[test]
    fn the_reservoir_keeps_each_row_with_probability_k_over_n() {
        // 50 rows, keep 10, 4000 times: each row is kept ≈ 800 times
        // (binomial, σ ≈ 25).
        let mut kept = [0u32; 50];
        for trial in 0..4000u64 {
            let mut r = Reservoir::new(10, trial.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            for i in 0..50 {
                r.offer(&[f64::from(i), -1.0]);
            }
            let rows = r.take();
            assert_eq!(rows.len(), 10);
            for row in rows {
                assert_eq!(row[1], -1.0);
                kept[row[0] as usize] += 1;
            }
        }
        for (i, &n) in kept.iter().enumerate() {
            assert!((700..=900).contains(&n), "row {i} kept {n} times");
        }
        // Fewer rows than k: all of them, in order.
        let mut r = Reservoir::new(10, 1);
        r.offer(&[1.0]);
        r.offer(&[2.0]);
        assert_eq!(r.take(), vec![vec![1.0], vec![2.0]]);
        assert!(r.take().is_empty());
    }
}

#[cfg(feature = "telemetry")]
impl Recorder {
    pub(crate) fn new(model: &Model, every: u32) -> Result<Recorder, TelemetryError> {
        let baseline = model.drift_baseline()?;
        let n = baseline.features.len();
        let first = model.inputs().first().filter(|i| i.dtype.drift_counted());
        let dtype = first.map_or(DType::F32, |i| i.dtype);
        let shape = first.map(|i| i.shape(1)).unwrap_or_default();
        let tensor = match baseline.channels {
            // Two summaries per channel of the axis the compiler chose.
            Some(axis) => {
                let axis = axis as usize;
                let channels = shape
                    .get(axis)
                    .copied()
                    .filter(|_| axis > 0 && shape.len() > 2);
                if channels.map(|c| 2 * c) != Some(n) {
                    return Err(TelemetryError::Features {
                        baseline: n,
                        input: channels.map_or(0, |c| 2 * c),
                    });
                }
                Some(Tensor {
                    axis,
                    per_sample: shape[1..].iter().product(),
                    shape: shape.clone(),
                })
            }
            None => {
                let input = shape.last().copied().unwrap_or(0);
                if input != n {
                    return Err(TelemetryError::Features { baseline: n, input });
                }
                None
            }
        };
        let sketch = Sketch::new(&baseline);
        Ok(Recorder {
            tensor,
            baseline,
            sketch,
            row: vec![0.0; n],
            sampler: kiln_protocol::Sampler::new(every),
            reservoir: None,
            dtype,
        })
    }

    /// Keeps a uniform sample of `k` raw rows per window from now on.
    pub(crate) fn keep_samples(&mut self, k: usize) {
        self.reservoir = (k > 0).then(|| Reservoir::new(k, seed()));
    }

    /// The window's sampled rows; a new sample starts.
    pub(crate) fn take_samples(&mut self) -> Vec<Vec<f32>> {
        self.reservoir
            .as_mut()
            .map(Reservoir::take)
            .unwrap_or_default()
    }

    /// Whether this call is one of the sampled ones.
    pub(crate) fn sample(&mut self) -> bool {
        self.sampler.sample()
    }

    /// Counts the rows of a validated first input, the predictions in
    /// `outputs` and the run's time.
    pub(crate) fn record(&mut self, input: &TensorValue, outputs: &[TensorValue], micros: u64) {
        if let Some(p) = &self.baseline.prediction
            && let Some(out) = outputs.get(p.output as usize)
            && out.dtype.drift_counted()
        {
            let width = if p.argmax {
                out.shape.last().copied().unwrap_or(1).max(1)
            } else {
                1
            };
            for row in out.data.chunks_exact(out.dtype.size() * width) {
                let v = (0..width).map(|k| value(out.dtype, row, k));
                let value = if p.argmax {
                    // The first largest score (NaN never wins), as the
                    // compiler took it on the reference rows.
                    let mut best = (0usize, f64::NEG_INFINITY);
                    for (k, x) in v.enumerate() {
                        if x > best.1 {
                            best = (k, x);
                        }
                    }
                    best.0 as f64
                } else {
                    v.into_iter().next().unwrap_or(f64::NAN)
                };
                let _ = self.sketch.predicted(&self.baseline, value);
            }
        }
        if let Some(t) = &self.tensor {
            // Sample by sample: each channel's mean and deviation.
            let dtype = self.dtype;
            for sample in input.data.chunks_exact(dtype.size() * t.per_sample.max(1)) {
                let at = |k: usize| value(dtype, sample, k);
                if kiln_protocol::summarize_channels(at, &t.shape, t.axis, &mut self.row).is_ok() {
                    let _ = self.sketch.observe(&self.baseline, &self.row);
                }
            }
            self.sketch.latency(micros);
            return;
        }
        // Row by row, without allocating: the input has the element type
        // seen at creation (the run's validation checks it).
        let n = self.row.len().max(1);
        for row in input.data.chunks_exact(self.dtype.size() * n) {
            for (k, r) in self.row.iter_mut().enumerate() {
                *r = value(self.dtype, row, k);
            }
            // The row has the baseline's width (checked at creation).
            let _ = self.sketch.observe(&self.baseline, &self.row);
            if let Some(r) = &mut self.reservoir {
                r.offer(&self.row);
            }
        }
        self.sketch.latency(micros);
    }

    pub(crate) fn reject(&mut self) {
        self.sketch.reject();
    }

    /// The window so far; a new one starts.
    pub(crate) fn take(&mut self) -> Sketch {
        std::mem::replace(&mut self.sketch, Sketch::new(&self.baseline))
    }
}

/// Without the `telemetry` feature (the wasm package, whose size is
/// budgeted) a recorder cannot exist, so every telemetry branch of
/// `Session::run` is dead code the compiler removes.
#[cfg(not(feature = "telemetry"))]
#[derive(Debug)]
pub(crate) enum Recorder {}

#[cfg(not(feature = "telemetry"))]
impl Recorder {
    pub(crate) fn new(_: &Model, _: u32) -> Result<Recorder, TelemetryError> {
        Err(TelemetryError::Disabled)
    }

    pub(crate) fn sample(&mut self) -> bool {
        match *self {}
    }

    pub(crate) fn record(&mut self, _: &TensorValue, _: &[TensorValue], _: u64) {
        match *self {}
    }

    pub(crate) fn reject(&mut self) {
        match *self {}
    }

    pub(crate) fn take(&mut self) -> Sketch {
        match *self {}
    }

    pub(crate) fn keep_samples(&mut self, _: usize) {
        match *self {}
    }

    pub(crate) fn take_samples(&mut self) -> Vec<Vec<f32>> {
        match *self {}
    }
}
