//! Drift telemetry on the device, without a heap: a [`Telemetry`] counts
//! one call in `every` (its input rows, or a tensor input's per-channel
//! mean and deviation, and its prediction) into a
//! fixed-size window against the baseline the model was compiled with,
//! every rejected call, and the run times the firmware reports; it then
//! streams the window to any `embedded_io::Write` as the postcard bytes
//! the collector takes from every runtime.
//!
//! ```ignore
//! // From the module `kiln compile --target mcu` writes beside a model
//! // compiled with `--reference`:
//! let bins = telemetry::bins(&BASELINE_FEATURES);
//! let baseline = BaselineRef {
//!     features: &bins,
//!     prediction: telemetry::prediction(BASELINE_PREDICTION),
//!     channels: BASELINE_CHANNELS,
//! };
//! let mut t = Telemetry::<TELEMETRY_FEATURES, TELEMETRY_BINS>::new(&model, baseline, 64)?;
//! let out = t.run(&model, &mut ARENA.0, &[&row])?;
//! // later, on the uplink:
//! t.write_to(&mut uart)?; // and the window starts again
//! ```

use crate::{Error, Model, Outputs};
use kiln_format::{DType, MAX_RANK};
pub use kiln_protocol::{BaselineRef, Bins, PredictionRef};
use kiln_protocol::{FixedSketch, SketchError, summarize_channels};

/// The bins of the generated `BASELINE_FEATURES` static:
/// `(quantile edges?, values)` per feature.
pub fn bins<const N: usize>(spec: &[(bool, &'static [f64]); N]) -> [Bins<'static>; N] {
    core::array::from_fn(|i| match spec[i] {
        (true, edges) => Bins::Edges(edges),
        (false, values) => Bins::Values(values),
    })
}

/// The generated `BASELINE_PREDICTION` static: `(output, argmax, quantile
/// edges?, values)`.
pub fn prediction(
    spec: Option<(u32, bool, bool, &'static [f64])>,
) -> Option<PredictionRef<'static>> {
    spec.map(|(output, argmax, edges, v)| PredictionRef {
        output,
        argmax,
        bins: if edges {
            Bins::Edges(v)
        } else {
            Bins::Values(v)
        },
    })
}

/// A model's telemetry window: `F` features of at most `B` bins.
#[derive(Debug, Clone)]
pub struct Telemetry<'b, const F: usize, const B: usize> {
    baseline: BaselineRef<'b>,
    sketch: FixedSketch<F, B>,
    sampler: kiln_protocol::Sampler,
    /// The first input's element type (float32, or 8-bit codes).
    dtype: DType,
    /// Its shape with a batch of 1 (`rank` dims used).
    shape: [usize; MAX_RANK],
    rank: usize,
    /// Elements per row (tabular) or per sample (tensor).
    per_sample: usize,
    /// A tensor input's channel axis: its features are summaries.
    axis: Option<usize>,
}

impl<'b, const F: usize, const B: usize> Telemetry<'b, F, B> {
    /// Telemetry for `model` against `baseline`, counting one call in
    /// `every` (1: all). The model's first input must be float32 or 8-bit
    /// integers (counted as their codes), with one value per baseline
    /// feature in its last dimension, or, for a tensor baseline
    /// (`channels`), two features (mean, deviation) per channel; and the
    /// baseline must fit `F` and `B`.
    pub fn new(model: &Model<'_>, baseline: BaselineRef<'b>, every: u32) -> Result<Self, Error> {
        FixedSketch::<F, B>::fits(&baseline).map_err(Error::Telemetry)?;
        let input = model.input(0)?;
        let dims = input.shape();
        let rank = dims.len();
        let mut shape = [1usize; MAX_RANK];
        for (s, &d) in shape.iter_mut().zip(dims).skip(1) {
            *s = d as usize;
        }
        let per_sample = shape[1..rank.max(1)].iter().product::<usize>();
        let axis = baseline
            .channels
            .map(|a| a as usize)
            .filter(|&a| a > 0 && a < rank && rank > 2);
        let width = match (baseline.channels, axis) {
            (None, _) => dims.last().map_or(1, |&d| d as usize),
            (Some(_), Some(a)) => 2 * shape[a],
            (Some(_), None) => 0,
        };
        let n = baseline.features.len();
        if !input.dtype.drift_counted() || width != n {
            return Err(Error::Telemetry(SketchError::Shape {
                what: "input features (float32 or 8-bit values, or channel summaries)",
                expected: n,
                got: if input.dtype.drift_counted() {
                    width
                } else {
                    0
                },
            }));
        }
        Ok(Telemetry {
            baseline,
            sketch: FixedSketch::new(),
            sampler: kiln_protocol::Sampler::new(every),
            dtype: input.dtype,
            shape,
            rank,
            per_sample: if axis.is_some() { per_sample } else { n },
            axis,
        })
    }

    /// [`Model::run`], recorded: a call the model rejects counts as
    /// rejected, a sampled call's rows and predictions are counted. Every
    /// call, rejected or not, advances the sampling (as on every runtime).
    pub fn run<'r, 'a>(
        &mut self,
        model: &Model<'a>,
        arena: &'r mut [u8],
        inputs: &[&[u8]],
    ) -> Result<Outputs<'r, 'a>, Error> {
        let sampled = self.sample();
        match model.run(arena, inputs) {
            Ok(out) => {
                if sampled {
                    self.count(inputs, &out);
                }
                Ok(out)
            }
            Err(e) => {
                if e.is_rejection() {
                    self.sketch.reject();
                }
                Err(e)
            }
        }
    }

    /// Whether this call is one of the sampled ones.
    fn sample(&mut self) -> bool {
        self.sampler.sample()
    }

    /// Records a successful call the firmware made itself (with
    /// [`Model::run_ops`]): counted if it is one of the sampled ones.
    pub fn record(&mut self, inputs: &[&[u8]], outputs: &Outputs<'_, '_>) {
        if self.sample() {
            self.count(inputs, outputs);
        }
    }

    /// Counts one call's rows (or samples' channel summaries) and
    /// predictions.
    fn count(&mut self, inputs: &[&[u8]], outputs: &Outputs<'_, '_>) {
        let n = self.baseline.features.len();
        let dtype = self.dtype;
        if let Some(first) = inputs.first() {
            let mut row = [0f64; F];
            // The baseline fits F (checked at creation).
            let row = &mut row[..n.min(F)];
            for sample in first.chunks_exact(dtype.size() * self.per_sample.max(1)) {
                let value = |k: usize| dtype.drift_value(sample, k).unwrap_or(f64::NAN);
                match self.axis {
                    Some(axis) => {
                        let shape = &self.shape[..self.rank];
                        if summarize_channels(value, shape, axis, row).is_err() {
                            continue;
                        }
                    }
                    None => {
                        for (k, r) in row.iter_mut().enumerate() {
                            *r = value(k);
                        }
                    }
                }
                let _ = self.sketch.observe(&self.baseline, row);
            }
        }
        if let Some(p) = self.baseline.prediction
            && let Ok(out) = outputs.get(p.output as usize)
            && let Ok(info) = outputs.info(p.output as usize)
            && info.dtype.drift_counted()
        {
            let width = if p.argmax {
                info.shape().last().copied().unwrap_or(1).max(1) as usize
            } else {
                1
            };
            for scores in out.chunks_exact(info.dtype.size() * width) {
                let at = |k: usize| info.dtype.drift_value(scores, k).unwrap_or(f64::NAN);
                let value = if p.argmax {
                    // The first largest score, as the compiler took it.
                    let mut best = (0usize, f64::NEG_INFINITY);
                    for k in 0..width {
                        let x = at(k);
                        if x > best.1 {
                            best = (k, x);
                        }
                    }
                    best.0 as f64
                } else {
                    at(0)
                };
                let _ = self.sketch.predicted(&self.baseline, value);
            }
        }
    }

    /// Records a call the firmware saw rejected (with [`Model::run_ops`]).
    pub fn reject(&mut self) {
        self.sample();
        self.sketch.reject();
    }

    /// Counts one run of `micros` microseconds (from the firmware's timer).
    pub fn latency(&mut self, micros: u64) {
        self.sketch.latency(micros);
    }

    /// Rows counted in this window.
    pub fn rows(&self) -> u32 {
        self.sketch.rows()
    }

    /// Streams the window to `writer` and starts a new one (the window
    /// is kept when the write fails, to be tried again).
    pub fn write_to<W: embedded_io::Write>(&mut self, writer: W) -> Result<W, Error> {
        let w = self
            .sketch
            .write_to(&self.baseline, writer)
            .map_err(Error::Telemetry)?;
        self.sketch.clear();
        Ok(w)
    }
}
