//! Drift baselines and per-window sketches.

use alloc::vec;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::fixed::{Bins, latency_bucket};
pub use crate::fixed::{LATENCY_BUCKETS, SketchError};

/// Quantile bins of a continuous feature in a default baseline.
pub const DEFAULT_BINS: usize = 32;

/// Reference features with at most this many distinct values are binned
/// by value (Evidently bins such numeric columns by value too).
pub const MAX_DISCRETE_VALUES: usize = 20;

/// How one feature's values are binned, with the reference's counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FeatureBaseline {
    /// A continuous feature: `edges` ascending and distinct; bin `i` holds
    /// `edges[i - 1] < x ≤ edges[i]` (bin 0 everything up to `edges[0]`,
    /// the last one everything above the last edge). `min`, `max` and
    /// `variance` (population) describe the reference.
    Continuous {
        edges: Vec<f64>,
        counts: Vec<u64>,
        min: f64,
        max: f64,
        variance: f64,
    },
    /// A discrete or categorical feature: one bin per reference value
    /// (ascending), and a last bin for any other value.
    Values {
        categorical: bool,
        values: Vec<f64>,
        counts: Vec<u64>,
    },
}

impl FeatureBaseline {
    /// The baseline of one reference feature (missing values, NaN, left
    /// out): by value when it is categorical or has at most
    /// [`MAX_DISCRETE_VALUES`] distinct values, else `bins` quantile bins.
    pub fn from_reference(values: &[f64], categorical: bool, bins: usize) -> FeatureBaseline {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        let mut distinct: Vec<f64> = v.clone();
        distinct.dedup();
        let mut b = if categorical || distinct.len() <= MAX_DISCRETE_VALUES {
            FeatureBaseline::Values {
                categorical,
                counts: vec![0; distinct.len() + 1],
                values: distinct,
            }
        } else {
            let n = v.len();
            let mut edges: Vec<f64> = (1..bins.max(2))
                .map(|i| v[(i * n / bins.max(2)).min(n - 1)])
                .collect();
            edges.dedup();
            let mean = v.iter().sum::<f64>() / n as f64;
            let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
            FeatureBaseline::Continuous {
                counts: vec![0; edges.len() + 1],
                edges,
                min: v[0],
                max: v[n - 1],
                variance: var,
            }
        };
        for &x in &v {
            let k = b.bin(x);
            b.counts_mut()[k] += 1;
        }
        b
    }

    /// The bin of a present value.
    pub fn bin(&self, x: f64) -> usize {
        self.as_bins().bin(x)
    }

    /// Where values fall, borrowed (what a device without a heap keeps).
    pub fn as_bins(&self) -> Bins<'_> {
        match self {
            FeatureBaseline::Continuous { edges, .. } => Bins::Edges(edges),
            FeatureBaseline::Values { values, .. } => Bins::Values(values),
        }
    }

    /// Number of bins.
    pub fn bins(&self) -> usize {
        self.counts().len()
    }

    /// The reference's count per bin.
    pub fn counts(&self) -> &[u64] {
        match self {
            FeatureBaseline::Continuous { counts, .. } | FeatureBaseline::Values { counts, .. } => {
                counts
            }
        }
    }

    fn counts_mut(&mut self) -> &mut Vec<u64> {
        match self {
            FeatureBaseline::Continuous { counts, .. } | FeatureBaseline::Values { counts, .. } => {
                counts
            }
        }
    }
}

/// The artifact property holding the drift baseline (written by `kiln
/// compile --reference`): [`Baseline::to_property`]'s text.
pub const BASELINE_PROPERTY: &str = "kiln.drift_baseline";

impl Baseline {
    /// The baseline as an artifact property value: base64 (standard
    /// alphabet) of its postcard bytes.
    pub fn to_property(&self) -> alloc::string::String {
        use base64::Engine as _;
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// A baseline from its artifact property value.
    pub fn from_property(text: &str) -> Result<Baseline, SketchError> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| SketchError::BadBaseline("not base64"))?;
        Baseline::from_postcard(&bytes)
    }
}

/// The reference side of drift: one [`FeatureBaseline`] per input feature,
/// and the model's predictions on the reference rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub names: Vec<alloc::string::String>,
    pub features: Vec<FeatureBaseline>,
    pub prediction: Option<PredictionBaseline>,
    /// For a tensor input (rank 3 or more), the axis of its channels in
    /// the input's shape: the features are then each channel's mean and
    /// standard deviation over a sample ([`crate::summarize_channels`]), two per
    /// channel. `None`: the input is tabular, one feature per value.
    pub channels: Option<u32>,
}

/// A baseline as it was written before tensor inputs had one (no
/// `channels`): older artifacts and collector databases hold these.
#[derive(Deserialize)]
struct TabularBaseline {
    names: Vec<alloc::string::String>,
    features: Vec<FeatureBaseline>,
    prediction: Option<PredictionBaseline>,
}

impl Baseline {
    /// A baseline from its postcard bytes, in either layout (with or
    /// without `channels`).
    pub fn from_postcard(bytes: &[u8]) -> Result<Baseline, SketchError> {
        if let Ok(b) = postcard::from_bytes::<Baseline>(bytes) {
            return Ok(b);
        }
        let t: TabularBaseline = postcard::from_bytes(bytes)
            .map_err(|_| SketchError::BadBaseline("not a postcard baseline"))?;
        Ok(Baseline {
            names: t.names,
            features: t.features,
            prediction: t.prediction,
            channels: None,
        })
    }
}

/// What the model predicted on the reference rows: from its output
/// `output` (graph order), the index of the largest score (`argmax`: a
/// classifier's class) or the value itself (a regressor), binned as a
/// feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionBaseline {
    pub output: u32,
    pub argmax: bool,
    pub feature: FeatureBaseline,
}

/// One feature's counts in a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureCounts {
    /// Per bin of the feature's baseline.
    pub bins: Vec<u64>,
    /// NaN values.
    pub missing: u64,
    /// Smallest and largest present value (`+∞`, `−∞` while none; on the
    /// wire, `None`: JSON has no infinities).
    #[serde(with = "lowest")]
    pub min: f64,
    #[serde(with = "highest")]
    pub max: f64,
}

/// A finite value as `Some(x)`, any other as `None`.
pub(crate) fn serialize_finite<S: serde::Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    if x.is_finite() {
        s.serialize_some(x)
    } else {
        s.serialize_none()
    }
}

/// [`FeatureCounts::min`] on the wire: `None` is `+∞` (no value yet).
mod lowest {
    pub(crate) use super::serialize_finite as serialize;
    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(<Option<f64> as serde::Deserialize>::deserialize(d)?.unwrap_or(f64::INFINITY))
    }
}

/// [`FeatureCounts::max`] on the wire: `None` is `−∞` (no value yet).
mod highest {
    pub(crate) use super::serialize_finite as serialize;
    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(<Option<f64> as serde::Deserialize>::deserialize(d)?.unwrap_or(f64::NEG_INFINITY))
    }
}

/// One window of rows, counted into a baseline's bins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    pub rows: u64,
    pub features: Vec<FeatureCounts>,
    /// Calls whose input the runtime rejected (wrong shape, NaN, ...).
    pub rejected: u64,
    /// Runs per latency bucket (log2 of microseconds).
    pub latency_us: Vec<u64>,
    /// The predictions, in the baseline's prediction bins.
    pub prediction: Option<FeatureCounts>,
}

impl FeatureCounts {
    fn empty(bins: usize) -> FeatureCounts {
        FeatureCounts {
            bins: vec![0; bins],
            missing: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Counts a value into `f`'s bins (NaN: missing).
    fn count(&mut self, f: &FeatureBaseline, x: f64) -> Result<(), SketchError> {
        if x.is_nan() {
            self.missing = self.missing.saturating_add(1);
            return Ok(());
        }
        let k = f.bin(x);
        let slot = self.bins.get_mut(k).ok_or(SketchError::Shape {
            what: "bins",
            expected: f.bins(),
            got: k + 1,
        })?;
        *slot = slot.saturating_add(1);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        Ok(())
    }

    fn add(&mut self, other: &FeatureCounts) -> Result<(), SketchError> {
        if self.bins.len() != other.bins.len() {
            return Err(SketchError::Shape {
                what: "bins",
                expected: self.bins.len(),
                got: other.bins.len(),
            });
        }
        for (x, y) in self.bins.iter_mut().zip(&other.bins) {
            *x = x.saturating_add(*y);
        }
        self.missing = self.missing.saturating_add(other.missing);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        Ok(())
    }
}

impl Sketch {
    /// An empty window for `baseline`.
    pub fn new(baseline: &Baseline) -> Sketch {
        Sketch {
            rows: 0,
            features: baseline
                .features
                .iter()
                .map(|f| FeatureCounts::empty(f.bins()))
                .collect(),
            rejected: 0,
            latency_us: vec![0; LATENCY_BUCKETS],
            prediction: baseline
                .prediction
                .as_ref()
                .map(|p| FeatureCounts::empty(p.feature.bins())),
        }
    }

    /// Whether this sketch has `baseline`'s shape: as many features, each
    /// with its bins, a prediction exactly when the baseline has one, and
    /// the latency buckets. A sketch from the wire is checked before it is
    /// stored or merged.
    pub fn check(&self, baseline: &Baseline) -> Result<(), SketchError> {
        let shape = |what, expected: usize, got: usize| {
            if expected == got {
                Ok(())
            } else {
                Err(SketchError::Shape {
                    what,
                    expected,
                    got,
                })
            }
        };
        shape("features", baseline.features.len(), self.features.len())?;
        for (f, c) in baseline.features.iter().zip(&self.features) {
            shape("bins", f.bins(), c.bins.len())?;
        }
        shape("latency buckets", LATENCY_BUCKETS, self.latency_us.len())?;
        match (&baseline.prediction, &self.prediction) {
            (Some(p), Some(c)) => shape("prediction bins", p.feature.bins(), c.bins.len()),
            (None, None) => Ok(()),
            (p, _) => shape(
                "predictions",
                usize::from(p.is_some()),
                usize::from(p.is_none()),
            ),
        }
    }

    /// Counts one prediction (ignored when the baseline has none).
    pub fn predicted(&mut self, baseline: &Baseline, value: f64) -> Result<(), SketchError> {
        match (&mut self.prediction, &baseline.prediction) {
            (Some(c), Some(p)) => c.count(&p.feature, value),
            _ => Ok(()),
        }
    }

    /// Counts one rejected call.
    pub fn reject(&mut self) {
        self.rejected = self.rejected.saturating_add(1);
    }

    /// Counts one run of `micros` microseconds.
    pub fn latency(&mut self, micros: u64) {
        if let Some(b) = self.latency_us.get_mut(latency_bucket(micros)) {
            *b = b.saturating_add(1);
        }
    }

    /// Counts one row (one value per feature; NaN is missing).
    pub fn observe(&mut self, baseline: &Baseline, row: &[f64]) -> Result<(), SketchError> {
        let n = baseline.features.len();
        if row.len() != n || self.features.len() != n {
            return Err(SketchError::Shape {
                what: "values per row",
                expected: n,
                got: row.len(),
            });
        }
        for ((f, c), &x) in baseline.features.iter().zip(&mut self.features).zip(row) {
            c.count(f, x)?;
        }
        self.rows = self.rows.saturating_add(1);
        Ok(())
    }

    /// Adds `other`'s counts (same baseline) into `self`.
    pub fn merge(&mut self, other: &Sketch) -> Result<(), SketchError> {
        if self.features.len() != other.features.len() {
            return Err(SketchError::Shape {
                what: "features",
                expected: self.features.len(),
                got: other.features.len(),
            });
        }
        for (a, b) in self.features.iter().zip(&other.features) {
            if a.bins.len() != b.bins.len() {
                return Err(SketchError::Shape {
                    what: "bins",
                    expected: a.bins.len(),
                    got: b.bins.len(),
                });
            }
        }
        match (&self.prediction, &other.prediction) {
            (Some(a), Some(b)) if a.bins.len() != b.bins.len() => {
                return Err(SketchError::Shape {
                    what: "prediction bins",
                    expected: a.bins.len(),
                    got: b.bins.len(),
                });
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(SketchError::Shape {
                    what: "prediction counts",
                    expected: usize::from(self.prediction.is_some()),
                    got: usize::from(other.prediction.is_some()),
                });
            }
            _ => {}
        }
        if self.latency_us.len() != other.latency_us.len() {
            return Err(SketchError::Shape {
                what: "latency buckets",
                expected: self.latency_us.len(),
                got: other.latency_us.len(),
            });
        }
        self.rows = self.rows.saturating_add(other.rows);
        self.rejected = self.rejected.saturating_add(other.rejected);
        for (x, y) in self.latency_us.iter_mut().zip(&other.latency_us) {
            *x = x.saturating_add(*y);
        }
        for (a, b) in self.features.iter_mut().zip(&other.features) {
            a.add(b)?;
        }
        if let (Some(a), Some(b)) = (&mut self.prediction, &other.prediction) {
            a.add(b)?;
        }
        Ok(())
    }

    /// The L1 sensitivity of a window to one input row: the row count,
    /// one bin (or the missing count) per feature, one prediction bin and,
    /// at most, one latency bucket (a rejected call touches only the
    /// rejected count).
    pub fn sensitivity(&self) -> u64 {
        3 + self.features.len() as u64
    }

    /// Makes the window ε-differentially private with respect to one input
    /// row: every count (rows, bins, missing, rejected, latency buckets,
    /// predictions) gets independent two-sided geometric noise (the
    /// discrete Laplace mechanism, `P(k) ∝ exp(-ε|k| / Δ)`, Δ =
    /// [`Sketch::sensitivity`]) and is clamped at zero; the extremes,
    /// which no noise hides, are dropped. `random` gives uniform 64-bit
    /// words (the caller's OS generator: the noise is only as private as
    /// they are unpredictable). Each count's noise has variance
    /// `2α / (1 − α)²`, α = `exp(-ε/Δ)`, about `2(Δ/ε)²`: windows must
    /// hold many rows for drift to show through, and merged windows add
    /// their noise. Each window spends ε on its own rows; the collector
    /// sees no row twice, so windows compose in parallel.
    pub fn privatize(&mut self, epsilon: f64, random: &mut dyn FnMut() -> u64) {
        let alpha = libm::exp(-epsilon / self.sensitivity() as f64);
        let mut noisy = |c: &mut u64| {
            let noise = geometric(alpha, random) - geometric(alpha, random);
            *c = (*c as i128 + i128::from(noise)).clamp(0, i128::from(u64::MAX)) as u64;
        };
        noisy(&mut self.rows);
        noisy(&mut self.rejected);
        self.latency_us.iter_mut().for_each(&mut noisy);
        for f in self.features.iter_mut().chain(self.prediction.as_mut()) {
            f.bins.iter_mut().for_each(&mut noisy);
            noisy(&mut f.missing);
            f.min = f64::INFINITY;
            f.max = f64::NEG_INFINITY;
        }
    }

    /// Postcard bytes (varint counts): what a device sends.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Room for every count as a 2-byte varint up front: the collector
        // encodes each batch it takes, and growing the vector a dozen
        // times showed in its profile.
        let counts: usize = self
            .features
            .iter()
            .map(|f| f.bins.len() + 20)
            .sum::<usize>()
            + self.latency_us.len()
            + self.prediction.as_ref().map_or(0, |p| p.bins.len() + 20);
        postcard::to_extend(self, Vec::with_capacity(2 * counts + 16)).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Sketch, SketchError> {
        postcard::from_bytes(bytes).map_err(|_| SketchError::Decode)
    }
}

/// The number of failures before the first success of trials that fail
/// with probability `alpha` (inverse transform of a uniform in (0, 1]).
fn geometric(alpha: f64, random: &mut dyn FnMut() -> u64) -> i64 {
    if alpha <= 0.0 {
        return 0;
    }
    // 53 random bits, never 0.
    let u = ((random() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let g = libm::floor(libm::log(u) / libm::log(alpha));
    if g.is_finite() {
        g.min(i64::MAX as f64) as i64
    } else {
        i64::MAX / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn baseline() -> Baseline {
        let cont: Vec<f64> = (0..500).map(|i| f64::from(i) * 0.37 % 11.0).collect();
        let disc: Vec<f64> = (0..500).map(|i| f64::from(i % 4)).collect();
        let classes: Vec<f64> = (0..500).map(|i| f64::from(i % 3)).collect();
        Baseline {
            names: vec!["c".into(), "d".into()],
            features: vec![
                FeatureBaseline::from_reference(&cont, false, DEFAULT_BINS),
                FeatureBaseline::from_reference(&disc, true, DEFAULT_BINS),
            ],
            prediction: Some(PredictionBaseline {
                output: 0,
                argmax: true,
                feature: FeatureBaseline::from_reference(&classes, true, DEFAULT_BINS),
            }),
            channels: None,
        }
    }

    fn window(b: &Baseline, rows: &[(f64, f64)]) -> Sketch {
        let mut s = Sketch::new(b);
        for &(x, y) in rows {
            s.observe(b, &[x, y]).unwrap();
            s.predicted(b, (y % 3.0).floor()).unwrap();
            s.latency((x * 1000.0) as u64);
            if y > 4.0 {
                s.reject();
            }
        }
        s
    }

    #[test]
    fn latency_buckets_are_powers_of_two() {
        let mut s = Sketch::new(&baseline());
        for us in [0, 1, 2, 3, 4, 1023, 1024, u64::MAX] {
            s.latency(us);
        }
        assert_eq!(&s.latency_us[..12], &[1, 1, 2, 1, 0, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(s.latency_us[LATENCY_BUCKETS - 1], 1);
    }

    #[test]
    fn reference_counts_fill_the_bins() {
        let b = baseline();
        let FeatureBaseline::Continuous { edges, counts, .. } = &b.features[0] else {
            panic!("continuous");
        };
        assert!(edges.len() > 20 && edges.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(counts.iter().sum::<u64>(), 500);
        let FeatureBaseline::Values { values, counts, .. } = &b.features[1] else {
            panic!("values");
        };
        assert_eq!(values, &[0.0, 1.0, 2.0, 3.0]);
        assert_eq!(counts, &[125, 125, 125, 125, 0]);
        // An unseen category goes to the last bin, NaN is missing.
        let s = window(&b, &[(1.0, 9.0), (f64::NAN, 2.0)]);
        assert_eq!(s.features[1].bins, [0, 0, 1, 0, 1]);
        assert_eq!((s.features[0].missing, s.rows), (1, 2));
    }

    #[test]
    fn bytes_round_trip_and_garbage_is_refused() {
        let b = baseline();
        let s = window(&b, &[(1.0, 2.0), (5.0, 3.0)]);
        assert_eq!(Sketch::from_bytes(&s.to_bytes()).unwrap(), s);
        assert_eq!(Sketch::from_bytes(&[0xff; 3]), Err(SketchError::Decode));
        let mut other = Sketch::new(&b);
        other.features.pop();
        assert!(s.clone().merge(&other).is_err());
        assert_eq!(s.check(&b), Ok(()));
        assert!(other.check(&b).is_err());
        let mut other = s.clone();
        other.prediction = None;
        assert!(other.check(&b).is_err());
        other.latency_us.push(0);
        assert!(other.check(&b).is_err());
        assert!(Sketch::new(&b).observe(&b, &[1.0]).is_err());
    }

    #[test]
    fn a_baseline_written_before_channels_still_reads() {
        let b = baseline();
        let mut bytes = postcard::to_allocvec(&b).unwrap();
        assert_eq!(bytes.pop(), Some(0), "channels: None is the last byte");
        assert_eq!(Baseline::from_postcard(&bytes).unwrap(), b);
        let tensor = Baseline {
            channels: Some(3),
            ..b
        };
        let text = tensor.to_property();
        assert_eq!(Baseline::from_property(&text).unwrap(), tensor);
        assert!(Baseline::from_postcard(&[1, 2, 3]).is_err());
    }

    #[test]
    fn an_empty_window_survives_json() {
        // A feature that saw no value has infinite extremes, which JSON
        // cannot carry: they travel as null and come back infinite.
        let b = baseline();
        let mut s = window(&b, &[(f64::NAN, 2.0)]);
        assert_eq!(s.features[0].min, f64::INFINITY);
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains("\"min\":null"), "{text}");
        assert_eq!(serde_json::from_str::<Sketch>(&text).unwrap(), s);
        assert_eq!(Sketch::from_bytes(&s.to_bytes()).unwrap(), s);
        s.features[0].min = -3.5;
        assert_eq!(
            serde_json::from_str::<Sketch>(&serde_json::to_string(&s).unwrap()).unwrap(),
            s
        );
    }

    /// A deterministic generator for the noise tests.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn privatized_counts_carry_discrete_laplace_noise() {
        // Many windows of a known count: the noise's mean is 0 and its
        // variance 2α/(1−α)² with α = exp(-ε/Δ) (Δ = 5 for 2 features),
        // while clamping at zero only lifts counts near zero.
        let b = baseline();
        let rows: Vec<(f64, f64)> = (0..400)
            .map(|i| (f64::from(i % 11), f64::from(i % 4)))
            .collect();
        let exact = window(&b, &rows);
        assert_eq!(exact.sensitivity(), 5);
        let mut state = 7u64;
        let eps = 1.0;
        let alpha = (-eps / 5.0f64).exp();
        let want_var = 2.0 * alpha / ((1.0 - alpha) * (1.0 - alpha));
        let n = 4000;
        let (mut sum, mut sum2) = (0.0, 0.0);
        for _ in 0..n {
            let mut s = exact.clone();
            s.privatize(eps, &mut || splitmix(&mut state));
            assert_eq!(s.check(&b), Ok(()));
            assert_eq!(s.features[0].min, f64::INFINITY);
            let d = s.rows as f64 - exact.rows as f64;
            sum += d;
            sum2 += d * d;
        }
        let mean = sum / f64::from(n);
        let var = sum2 / f64::from(n) - mean * mean;
        // The mean's standard error is sqrt(var / n) ≈ 0.12.
        assert!(mean.abs() < 0.5, "mean {mean}");
        assert!(
            (var / want_var - 1.0).abs() < 0.1,
            "variance {var}, want {want_var}"
        );
        // A larger ε, less noise; the sketch still round-trips.
        let mut s = exact.clone();
        s.privatize(1e6, &mut || splitmix(&mut state));
        assert_eq!(s.features[1].bins, exact.features[1].bins);
        assert_eq!(Sketch::from_bytes(&s.to_bytes()).unwrap(), s);
    }

    proptest! {
        /// Device bytes: decoding anything either fails or gives a sketch
        /// that merges into a window of the baseline or is refused.
        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(s) = Sketch::from_bytes(&bytes) {
                let mut w = Sketch::new(&baseline());
                let _ = w.merge(&s);
            }
        }

        #[test]
        fn merging_is_associative_and_commutative(
            a in proptest::collection::vec((0.0f64..12.0, 0u8..6), 0..40),
            b in proptest::collection::vec((0.0f64..12.0, 0u8..6), 0..40),
            c in proptest::collection::vec((0.0f64..12.0, 0u8..6), 0..40),
        ) {
            let base = baseline();
            let w = |rows: &[(f64, u8)]| {
                let rows: Vec<(f64, f64)> = rows.iter().map(|&(x, y)| (x, f64::from(y))).collect();
                window(&base, &rows)
            };
            let (sa, sb, sc) = (w(&a), w(&b), w(&c));
            let mut ab_c = sa.clone();
            ab_c.merge(&sb).unwrap();
            ab_c.merge(&sc).unwrap();
            let mut bc = sb.clone();
            bc.merge(&sc).unwrap();
            let mut a_bc = sa.clone();
            a_bc.merge(&bc).unwrap();
            prop_assert_eq!(&ab_c, &a_bc);
            let mut ba = sb.clone();
            ba.merge(&sa).unwrap();
            let mut ab = sa.clone();
            ab.merge(&sb).unwrap();
            prop_assert_eq!(&ab, &ba);
            // And merging equals counting all rows in one window.
            let all: Vec<(f64, u8)> = a.iter().chain(&b).chain(&c).copied().collect();
            prop_assert_eq!(&ab_c, &w(&all));
        }
    }
}
