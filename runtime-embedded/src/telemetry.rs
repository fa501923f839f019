//! Drift telemetry on the device, without a heap: a [`Telemetry`] counts
//! one call in `every` (its input rows and its prediction) into a
//! fixed-size window against the baseline the model was compiled with,
//! every rejected call, and the run times the firmware reports; it then
//! streams the window to any `embedded_io::Write` as the postcard bytes
//! the collector takes from every runtime.
//!
//! ```ignore
//! // From the module `kiln compile --target mcu` writes beside a model
//! // compiled with `--reference`:
//! let bins = telemetry::bins(&BASELINE_FEATURES);
//! let baseline = BaselineRef { features: &bins, prediction: telemetry::prediction(BASELINE_PREDICTION) };
//! let mut t = Telemetry::<TELEMETRY_FEATURES, TELEMETRY_BINS>::new(&model, baseline, 64)?;
//! let out = t.run(&model, &mut ARENA.0, &[&row])?;
//! // later, on the uplink:
//! t.write_to(&mut uart)?; // and the window starts again
//! ```

use crate::{Error, Model, Outputs};
use kiln_format::DType;
pub use kiln_protocol::{BaselineRef, Bins, PredictionRef};
use kiln_protocol::{FixedSketch, SketchError};

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
}

fn f32_at(bytes: &[u8]) -> f32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[..4]);
    f32::from_le_bytes(b)
}

impl<'b, const F: usize, const B: usize> Telemetry<'b, F, B> {
    /// Telemetry for `model` against `baseline`, counting one call in
    /// `every` (1: all). The model's first input must be float32 with one
    /// value per baseline feature in its last dimension, and the baseline
    /// must fit `F` and `B`.
    pub fn new(model: &Model<'_>, baseline: BaselineRef<'b>, every: u32) -> Result<Self, Error> {
        FixedSketch::<F, B>::fits(&baseline).map_err(Error::Telemetry)?;
        let input = model.input(0)?;
        let width = input.shape().last().copied().unwrap_or(1) as usize;
        if input.dtype != DType::F32 || width != baseline.features.len() {
            return Err(Error::Telemetry(SketchError::Shape {
                what: "float32 input features",
                expected: baseline.features.len(),
                got: if input.dtype == DType::F32 { width } else { 0 },
            }));
        }
        Ok(Telemetry {
            baseline,
            sketch: FixedSketch::new(),
            sampler: kiln_protocol::Sampler::new(every),
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

    /// Counts one call's rows and predictions.
    fn count(&mut self, inputs: &[&[u8]], outputs: &Outputs<'_, '_>) {
        let n = self.baseline.features.len();
        if let Some(first) = inputs.first() {
            let mut row = [0f64; F];
            for values in first.chunks_exact(4 * n.max(1)) {
                for (r, b) in row.iter_mut().zip(values.chunks_exact(4)) {
                    *r = f64::from(f32_at(b));
                }
                // The baseline fits F (checked at creation).
                let _ = self.sketch.observe(&self.baseline, &row[..n]);
            }
        }
        if let Some(p) = self.baseline.prediction
            && let Ok(out) = outputs.get(p.output as usize)
            && let Ok(info) = outputs.info(p.output as usize)
            && info.dtype == DType::F32
        {
            let width = if p.argmax {
                info.shape().last().copied().unwrap_or(1).max(1) as usize
            } else {
                1
            };
            for scores in out.chunks_exact(4 * width) {
                let value = if p.argmax {
                    // The first largest score, as the compiler took it.
                    let mut best = (0usize, f32::NEG_INFINITY);
                    for (k, b) in scores.chunks_exact(4).enumerate() {
                        let x = f32_at(b);
                        if x > best.1 {
                            best = (k, x);
                        }
                    }
                    best.0 as f64
                } else {
                    f64::from(f32_at(scores))
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
