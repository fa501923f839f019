//! The Kiln collector: what the fleet's telemetry turns into. Today it owns
//! the drift engine ([`drift`]): per-column statistical tests chosen and
//! computed as Evidently's defaults do, and the dataset verdict, on raw
//! reference and current columns (`kiln drift`), or on a current window
//! as devices report it, a `kiln_protocol::Sketch` of counts in the
//! baseline's bins (`kiln drift --sketch`). With the `server` feature,
//! [`server`] is the HTTP service devices send their sketches to (`kiln
//! collector serve`), and [`ota`] the update service that rolls model
//! versions out to them (signed manifests, staged rollouts, automatic
//! rollback on their telemetry).
//!
//! Architecture invariant: depends on `protocol` (and, for the server,
//! `format`) and on no runtime, engine or compiler crate: a collector reads what devices
//! send and what artifacts declare, never runs a model.

#[cfg(feature = "server")]
pub mod alerts;
#[cfg(feature = "server")]
pub mod dashboard;
pub mod drift;
#[cfg(feature = "server")]
pub mod load;
#[cfg(feature = "server")]
pub mod ota;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod store;

pub use drift::{
    Column, ColumnDrift, DriftError, DriftOptions, DriftReport, Kind, StatTest, Value, detect,
    detect_sketch,
};
