//! Metadata: what the model expects and where it came from.

use crate::{DType, Table};
use serde::{Deserialize, Serialize};

/// One dimension of an input or output in the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dim<'a> {
    Fixed(u32),
    /// The symbolic batch dimension (always dim 0), with the source's name for it.
    Batch(&'a str),
}

/// Valid range of one feature (the last axis), inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Range {
    pub min: f32,
    pub max: f32,
}

/// Schema of one graph input or output.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IoSpec<'a> {
    pub name: &'a str,
    /// Index into the tensor table.
    pub tensor: u32,
    pub dtype: DType,
    #[serde(borrow)]
    pub dims: Table<'a, Dim<'a>>,
    /// Either empty or one range per element of the last axis.
    #[serde(borrow)]
    pub ranges: Table<'a, Range>,
    /// Class labels, for an output that indexes classes (scores or label ids).
    #[serde(borrow)]
    pub labels: Table<'a, &'a str>,
}

/// Where the artifact came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance<'a> {
    /// `onnx`, `tflite`, `kiln-trainer`, …
    pub source_format: &'a str,
    /// File name of the source model, without directories.
    pub source_name: &'a str,
    pub source_sha256: [u8; 32],
    /// Producer recorded in the source (e.g. `pytorch 2.0.0`).
    pub producer: &'a str,
    /// `kiln-compiler x.y.z`.
    pub compiler: &'a str,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
}

/// A preprocessing step that was lowered into the graph (so it runs on every
/// target), recorded for people and tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preprocessing<'a> {
    /// e.g. `Scaler`, `Normalizer`
    pub kind: &'a str,
    /// Human-readable parameters, e.g. `offset=[..] scale=[..]`.
    pub detail: &'a str,
    /// Name of the graph input it applies to.
    pub input: &'a str,
}

/// The artifact's metadata section.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Meta<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub description: &'a str,
    #[serde(borrow)]
    pub inputs: Table<'a, IoSpec<'a>>,
    #[serde(borrow)]
    pub outputs: Table<'a, IoSpec<'a>>,
    #[serde(borrow)]
    pub provenance: Provenance<'a>,
    #[serde(borrow)]
    pub preprocessing: Table<'a, Preprocessing<'a>>,
    /// Free-form key/value properties (e.g. the source's metadata_props).
    #[serde(borrow)]
    pub properties: Table<'a, (&'a str, &'a str)>,
}

impl<'a> Meta<'a> {
    /// The value of property `key` (the first, if repeated); `None` when
    /// absent. A property record that does not decode is skipped.
    pub fn property(&self, key: &str) -> Option<&'a str> {
        self.properties
            .iter()
            .flatten()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

use crate::decode::{Decode, Reader};

impl<'a> Decode<'a> for Dim<'a> {
    fn decode(r: &mut Reader<'a>) -> Self {
        match r.tag(2) {
            0 => Dim::Fixed(r.u32()),
            _ => Dim::Batch(r.str()),
        }
    }
}

impl Decode<'_> for Range {
    fn decode(r: &mut Reader<'_>) -> Self {
        Range {
            min: r.f32(),
            max: r.f32(),
        }
    }
}

impl<'a> Decode<'a> for IoSpec<'a> {
    fn decode(r: &mut Reader<'a>) -> Self {
        IoSpec {
            name: r.str(),
            tensor: r.u32(),
            dtype: r.get(),
            dims: r.get(),
            ranges: r.get(),
            labels: r.get(),
        }
    }
}

impl<'a> Decode<'a> for Provenance<'a> {
    fn decode(r: &mut Reader<'a>) -> Self {
        Provenance {
            source_format: r.str(),
            source_name: r.str(),
            source_sha256: r.each(Reader::byte),
            producer: r.str(),
            compiler: r.str(),
            created_unix: r.u64(),
        }
    }
}

impl<'a> Decode<'a> for Preprocessing<'a> {
    fn decode(r: &mut Reader<'a>) -> Self {
        Preprocessing {
            kind: r.str(),
            detail: r.str(),
            input: r.str(),
        }
    }
}

impl<'a> Decode<'a> for Meta<'a> {
    fn decode(r: &mut Reader<'a>) -> Self {
        Meta {
            name: r.str(),
            version: r.str(),
            description: r.str(),
            inputs: r.get(),
            outputs: r.get(),
            provenance: r.get(),
            preprocessing: r.get(),
            properties: r.get(),
        }
    }
}
