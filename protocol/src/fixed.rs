//! Telemetry without a heap, for microcontrollers: a baseline borrowed
//! from flash ([`BaselineRef`], typically the statics `kiln compile
//! --target mcu` generates) and a window of fixed capacity
//! ([`FixedSketch`]: `F` features of at most `B` bins, counts in `u32`),
//! encoded into a caller's buffer as the very bytes [`Sketch::to_bytes`]
//! gives for the same window, so the collector cannot tell an MCU's sketch
//! from a native one.
//!
//! [`Sketch::to_bytes`]: crate::Sketch::to_bytes

use core::fmt;
use serde::Serialize;
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};

/// Buckets of a sketch's latency histogram: bucket `k` counts runs of
/// `2^(k-1) ≤ µs < 2^k` (bucket 0: under 1 µs; the last: everything from
/// about 36 minutes up).
pub const LATENCY_BUCKETS: usize = 32;

/// The latency bucket of a run of `micros` microseconds.
pub fn latency_bucket(micros: u64) -> usize {
    (64 - micros.leading_zeros() as usize).min(LATENCY_BUCKETS - 1)
}

/// Why a sketch could not be updated, merged, encoded or read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SketchError {
    /// A row or sketch does not have the baseline's shape.
    Shape {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// The bytes are not a sketch.
    Decode,
    /// The output buffer is too small for the encoded sketch.
    BufferFull,
    /// The writer a sketch was streamed to failed.
    Write,
    /// An artifact's baseline property is damaged (what is wrong).
    BadBaseline(&'static str),
}

impl fmt::Display for SketchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SketchError::Shape {
                what,
                expected,
                got,
            } => write!(f, "{what}: expected {expected}, got {got}"),
            SketchError::Decode => f.write_str("the bytes are not a postcard-encoded sketch"),
            SketchError::Write => f.write_str("the writer failed while the sketch was written"),
            SketchError::BadBaseline(why) => write!(f, "the drift baseline is damaged: {why}"),
            SketchError::BufferFull => f.write_str(
                "the buffer is too small for the sketch: see FixedSketch::max_encoded_len",
            ),
        }
    }
}

/// Which calls a runtime counts: one in `every` (the `every`-th, the
/// `2·every`-th, …), rejected calls included in the count, the same on
/// every runtime so their sketches of the same calls agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampler {
    every: u32,
    tick: u32,
}

impl Sampler {
    /// One call in `every` (0 counts as 1: every call).
    pub const fn new(every: u32) -> Sampler {
        Sampler {
            every: if every == 0 { 1 } else { every },
            tick: 0,
        }
    }

    /// Advances by one call; whether that call is counted.
    pub fn sample(&mut self) -> bool {
        self.tick += 1;
        if self.tick >= self.every {
            self.tick = 0;
            true
        } else {
            false
        }
    }
}

/// How one feature's values fall into bins, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bins<'a> {
    /// Ascending, distinct quantile edges: bin `i` holds
    /// `edges[i - 1] < x ≤ edges[i]`, the last bin everything above.
    Edges(&'a [f64]),
    /// Ascending reference values, one bin each, and a last bin for any
    /// other value.
    Values(&'a [f64]),
}

impl Bins<'_> {
    /// The bin of a present (not NaN) value.
    pub fn bin(&self, x: f64) -> usize {
        match self {
            Bins::Edges(edges) => edges.partition_point(|&e| e < x),
            Bins::Values(values) => values
                .binary_search_by(|v| v.total_cmp(&x))
                .unwrap_or(values.len()),
        }
    }

    /// Number of bins.
    pub fn len(&self) -> usize {
        match self {
            Bins::Edges(v) | Bins::Values(v) => v.len() + 1,
        }
    }

    /// Never: there is always the last bin.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What a model predicted on the reference rows, borrowed: from output
/// `output`, the index of the largest score (`argmax`) or the value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PredictionRef<'a> {
    pub output: u32,
    pub argmax: bool,
    pub bins: Bins<'a>,
}

/// A drift baseline's bins, borrowed (no reference counts: a device only
/// needs to know where values fall).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaselineRef<'a> {
    pub features: &'a [Bins<'a>],
    pub prediction: Option<PredictionRef<'a>>,
    /// A tensor input's channel axis (`Baseline::channels`): its features
    /// are per-channel summaries ([`crate::summarize_channels`]).
    pub channels: Option<u32>,
}

#[cfg(feature = "alloc")]
impl crate::Baseline {
    /// Each feature's bins, for [`crate::Baseline::borrowed`].
    pub fn feature_bins(&self) -> alloc::vec::Vec<Bins<'_>> {
        self.features
            .iter()
            .map(crate::FeatureBaseline::as_bins)
            .collect()
    }

    /// This baseline as a device holds it, given its
    /// [`feature_bins`](crate::Baseline::feature_bins).
    pub fn borrowed<'a>(&'a self, bins: &'a [Bins<'a>]) -> BaselineRef<'a> {
        BaselineRef {
            features: bins,
            prediction: self.prediction.as_ref().map(|p| PredictionRef {
                output: p.output,
                argmax: p.argmax,
                bins: p.feature.as_bins(),
            }),
            channels: self.channels,
        }
    }
}

/// One window of rows in fixed storage: up to `F` features of up to `B`
/// bins each (the prediction's bins too). Counts saturate.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedSketch<const F: usize, const B: usize> {
    rows: u32,
    counts: [[u32; B]; F],
    missing: [u32; F],
    min: [f64; F],
    max: [f64; F],
    rejected: u32,
    latency: [u32; LATENCY_BUCKETS],
    predicted: [u32; B],
    predicted_missing: u32,
    predicted_min: f64,
    predicted_max: f64,
}

impl<const F: usize, const B: usize> Default for FixedSketch<F, B> {
    fn default() -> Self {
        Self::new()
    }
}

fn count(bins: &mut [u32], missing: &mut u32, lo: &mut f64, hi: &mut f64, b: &Bins<'_>, x: f64) {
    if x.is_nan() {
        *missing = missing.saturating_add(1);
        return;
    }
    // `fits` checked that every bin index is in range.
    if let Some(slot) = bins.get_mut(b.bin(x)) {
        *slot = slot.saturating_add(1);
    }
    *lo = lo.min(x);
    *hi = hi.max(x);
}

impl<const F: usize, const B: usize> FixedSketch<F, B> {
    /// An empty window (usable in a `static`).
    pub const fn new() -> Self {
        FixedSketch {
            rows: 0,
            counts: [[0; B]; F],
            missing: [0; F],
            min: [f64::INFINITY; F],
            max: [f64::NEG_INFINITY; F],
            rejected: 0,
            latency: [0; LATENCY_BUCKETS],
            predicted: [0; B],
            predicted_missing: 0,
            predicted_min: f64::INFINITY,
            predicted_max: f64::NEG_INFINITY,
        }
    }

    /// Whether `baseline` fits this storage: at most `F` features, none
    /// with more than `B` bins.
    pub fn fits(baseline: &BaselineRef<'_>) -> Result<(), SketchError> {
        if baseline.features.len() > F {
            return Err(SketchError::Shape {
                what: "features (capacity)",
                expected: F,
                got: baseline.features.len(),
            });
        }
        let widest = baseline
            .features
            .iter()
            .chain(baseline.prediction.as_ref().map(|p| &p.bins))
            .map(Bins::len)
            .max()
            .unwrap_or(0);
        if widest > B {
            return Err(SketchError::Shape {
                what: "bins (capacity)",
                expected: B,
                got: widest,
            });
        }
        Ok(())
    }

    /// Counts one row (one value per feature of `baseline`; NaN is
    /// missing).
    pub fn observe(&mut self, baseline: &BaselineRef<'_>, row: &[f64]) -> Result<(), SketchError> {
        Self::fits(baseline)?;
        if row.len() != baseline.features.len() {
            return Err(SketchError::Shape {
                what: "values per row",
                expected: baseline.features.len(),
                got: row.len(),
            });
        }
        for (k, (b, &x)) in baseline.features.iter().zip(row).enumerate() {
            count(
                &mut self.counts[k],
                &mut self.missing[k],
                &mut self.min[k],
                &mut self.max[k],
                b,
                x,
            );
        }
        self.rows = self.rows.saturating_add(1);
        Ok(())
    }

    /// Counts one prediction (ignored when the baseline has none).
    pub fn predicted(&mut self, baseline: &BaselineRef<'_>, value: f64) -> Result<(), SketchError> {
        Self::fits(baseline)?;
        if let Some(p) = &baseline.prediction {
            count(
                &mut self.predicted,
                &mut self.predicted_missing,
                &mut self.predicted_min,
                &mut self.predicted_max,
                &p.bins,
                value,
            );
        }
        Ok(())
    }

    /// Counts one rejected call.
    pub fn reject(&mut self) {
        self.rejected = self.rejected.saturating_add(1);
    }

    /// Counts one run of `micros` microseconds.
    pub fn latency(&mut self, micros: u64) {
        let b = &mut self.latency[latency_bucket(micros)];
        *b = b.saturating_add(1);
    }

    /// Rows counted so far.
    pub fn rows(&self) -> u32 {
        self.rows
    }

    /// Starts a new window.
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// An upper bound of [`FixedSketch::encode`]'s length for any window
    /// of this capacity: size the output buffer with it.
    pub const fn max_encoded_len() -> usize {
        // Varints: 5 bytes a u32, 10 a u64 or length; an f64 8 bytes and
        // its option tag.
        let counts = 5 + 5 + 2 * 9 + 5 * B;
        10 + 5 + F * counts + 5 + 5 + 5 * LATENCY_BUCKETS + 1 + counts
    }

    /// Encodes the window against `baseline` into `out`: the bytes
    /// [`crate::Sketch::to_bytes`] gives for the same counts. Returns the
    /// length written.
    pub fn encode(&self, baseline: &BaselineRef<'_>, out: &mut [u8]) -> Result<usize, SketchError> {
        Self::fits(baseline)?;
        let wire = Wire {
            sketch: self,
            baseline,
        };
        postcard::to_slice(&wire, out)
            .map(|b| b.len())
            .map_err(|_| SketchError::BufferFull)
    }
}

#[cfg(feature = "embedded-io")]
impl<const F: usize, const B: usize> FixedSketch<F, B> {
    /// Streams the window against `baseline` to `writer` (a UART, a
    /// socket, a flash page: any `embedded_io::Write`), as
    /// [`FixedSketch::encode`] would lay it out, without a buffer.
    pub fn write_to<W: embedded_io::Write>(
        &self,
        baseline: &BaselineRef<'_>,
        writer: W,
    ) -> Result<W, SketchError> {
        Self::fits(baseline)?;
        let wire = Wire {
            sketch: self,
            baseline,
        };
        postcard::to_eio(&wire, writer).map_err(|_| SketchError::Write)
    }
}

/// A window and its baseline, serialised with [`crate::Sketch`]'s field
/// order and types (postcard writes `u32` and `u64` as the same varints).
struct Wire<'s, 'b, const F: usize, const B: usize> {
    sketch: &'s FixedSketch<F, B>,
    baseline: &'s BaselineRef<'b>,
}

/// One feature's counts: `FeatureCounts` on the wire.
struct Counts<'a> {
    bins: &'a [u32],
    missing: u32,
    min: f64,
    max: f64,
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl Serialize for Counts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("FeatureCounts", 4)?;
        st.serialize_field("bins", self.bins)?;
        st.serialize_field("missing", &self.missing)?;
        st.serialize_field("min", &finite(self.min))?;
        st.serialize_field("max", &finite(self.max))?;
        st.end()
    }
}

struct Features<'s, 'b, const F: usize, const B: usize>(&'s Wire<'s, 'b, F, B>);

impl<const F: usize, const B: usize> Serialize for Features<'_, '_, F, B> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (sk, bl) = (self.0.sketch, self.0.baseline);
        let mut seq = s.serialize_seq(Some(bl.features.len()))?;
        for (k, b) in bl.features.iter().enumerate() {
            seq.serialize_element(&Counts {
                bins: &sk.counts[k][..b.len()],
                missing: sk.missing[k],
                min: sk.min[k],
                max: sk.max[k],
            })?;
        }
        seq.end()
    }
}

impl<const F: usize, const B: usize> Serialize for Wire<'_, '_, F, B> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let sk = self.sketch;
        let mut st = s.serialize_struct("Sketch", 5)?;
        st.serialize_field("rows", &u64::from(sk.rows))?;
        st.serialize_field("features", &Features(self))?;
        st.serialize_field("rejected", &u64::from(sk.rejected))?;
        st.serialize_field("latency_us", &sk.latency[..])?;
        let prediction = self.baseline.prediction.as_ref().map(|p| Counts {
            bins: &sk.predicted[..p.bins.len()],
            missing: sk.predicted_missing,
            min: sk.predicted_min,
            max: sk.predicted_max,
        });
        st.serialize_field("prediction", &prediction)?;
        st.end()
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use crate::{Baseline, FeatureBaseline, PredictionBaseline, Sketch};
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    fn baseline() -> Baseline {
        let cont: Vec<f64> = (0..400).map(|i| f64::from(i) * 0.61 % 9.0).collect();
        let disc: Vec<f64> = (0..400).map(|i| f64::from(i % 5)).collect();
        Baseline {
            names: vec!["c".into(), "d".into()],
            features: vec![
                FeatureBaseline::from_reference(&cont, false, 32),
                FeatureBaseline::from_reference(&disc, true, 32),
            ],
            prediction: Some(PredictionBaseline {
                output: 0,
                argmax: false,
                feature: FeatureBaseline::from_reference(&cont, false, 16),
            }),
            channels: None,
        }
    }

    proptest! {
        /// The fixed window and the heap one, fed the same calls, encode
        /// to the same bytes.
        #[test]
        fn fixed_and_heap_sketches_encode_alike(
            rows in proptest::collection::vec((-2.0f64..11.0, 0u8..7, any::<bool>(), 0u64..5_000_000), 0..60),
        ) {
            let b = baseline();
            let bins: Vec<Bins<'_>> = b.features.iter().map(FeatureBaseline::as_bins).collect();
            let p = b.prediction.as_ref().unwrap();
            let r = BaselineRef {
                features: &bins,
                prediction: Some(PredictionRef { output: p.output, argmax: p.argmax, bins: p.feature.as_bins() }),
                channels: None,
            };
            let mut heap = Sketch::new(&b);
            let mut fixed = FixedSketch::<2, 33>::new();
            for &(x, d, missing, us) in &rows {
                let row = [if missing { f64::NAN } else { x }, f64::from(d)];
                heap.observe(&b, &row).unwrap();
                fixed.observe(&r, &row).unwrap();
                heap.predicted(&b, x * 0.5).unwrap();
                fixed.predicted(&r, x * 0.5).unwrap();
                heap.latency(us);
                fixed.latency(us);
                if d == 6 {
                    heap.reject();
                    fixed.reject();
                }
            }
            let mut out = [0u8; FixedSketch::<2, 33>::max_encoded_len()];
            let n = fixed.encode(&r, &mut out).unwrap();
            prop_assert_eq!(&out[..n], &heap.to_bytes()[..]);
            prop_assert_eq!(Sketch::from_bytes(&out[..n]).unwrap(), heap);
        }
    }

    #[test]
    fn capacity_and_buffer_are_checked() {
        let b = baseline();
        let bins: Vec<Bins<'_>> = b.features.iter().map(FeatureBaseline::as_bins).collect();
        let r = BaselineRef {
            features: &bins,
            prediction: None,
            channels: None,
        };
        // 32 quantile bins do not fit 8.
        assert!(FixedSketch::<2, 8>::new().observe(&r, &[1.0, 2.0]).is_err());
        assert!(
            FixedSketch::<1, 33>::new()
                .observe(&r, &[1.0, 2.0])
                .is_err()
        );
        let mut s = FixedSketch::<2, 33>::new();
        assert!(s.observe(&r, &[1.0]).is_err());
        s.observe(&r, &[1.0, 2.0]).unwrap();
        assert_eq!(s.encode(&r, &mut [0u8; 10]), Err(SketchError::BufferFull));
        s.clear();
        assert_eq!(s.rows(), 0);
    }
}
