//! Kiln's telemetry messages: what a runtime reports about the data it
//! sees, small enough for a microcontroller and mergeable by addition.
//!
//! A [`Baseline`] (built from the reference data, carried with the model)
//! fixes, per input feature, the bins a value falls in: quantile edges for
//! continuous features, the reference's distinct values for discrete and
//! categorical ones. A [`Sketch`] counts one window of rows into those bins
//! (plus missing values and the window's extremes); two sketches of the
//! same baseline merge by adding counts ([`Sketch::merge`]), so devices,
//! gateways and the collector can combine windows in any order. Sketches
//! travel as postcard bytes ([`Sketch::to_bytes`]) from devices and as
//! JSON over HTTP (serde).
//!
//! Without a heap (`default-features = false`, no `alloc`), [`fixed`]
//! keeps a window in fixed storage against a baseline borrowed from flash
//! and encodes it into the same bytes, for microcontrollers.
//!
//! [`ota`] holds the over-the-air update manifests the collector signs and
//! every device verifies (the `ota` feature: ed25519, no heap).
//!
//! Architecture invariant: `no_std`; `alloc` only with the default `alloc`
//! feature ([`sketch`]); depends on nothing in the workspace (runtimes, the
//! compiler and the collector depend on it).

#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod fixed;
#[cfg(feature = "alloc")]
pub mod sketch;

pub mod channels;
pub mod ota;
pub use channels::{channel_axis, summarize_channels};
pub use fixed::{
    BaselineRef, Bins, FixedSketch, LATENCY_BUCKETS, PredictionRef, Sampler, SketchError,
};
#[cfg(feature = "alloc")]
pub use sketch::{
    BASELINE_PROPERTY, Baseline, FeatureBaseline, FeatureCounts, PredictionBaseline, Sketch,
};
