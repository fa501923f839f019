//! The Kiln artifact: the only contract between build time (the compiler) and
//! device time (every runtime).
//!
//! This crate owns the bytes of a `.kiln` file: the fixed header, the section
//! directory, the graph (tensor table, node table, operator attributes), the
//! metadata (input/output schema, labels, provenance) and the 16-byte aligned
//! weight blob. [`View::parse`] validates every offset, length and index of an
//! untrusted `&[u8]` and never panics; after that the engine can read weights
//! zero-copy, straight from flash on a microcontroller.
//!
//! It is `#![no_std]` and needs no allocator to read. The writer
//! ([`write::ArtifactWriter`]) is behind the `write` feature; ed25519
//! signing and verification of the optional signature section
//! ([`View::verify_signature`], [`sign`]) behind `signature`.
//!
//! Architecture invariant: this crate depends on nothing else in the
//! workspace and knows nothing about ONNX, TFLite or how ops are computed.
//! See `SPEC.md` for the byte layout and the stability rule.
#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod decode;
mod dtype;
mod error;
mod header;
mod meta;
mod ops;
mod signature;
mod table;
mod view;
#[cfg(feature = "write")]
pub mod write;

pub use dtype::DType;
pub use error::FormatError;
pub use header::{FORMAT_MAJOR, FORMAT_MINOR, HEADER_LEN, Header, MAGIC, WEIGHT_ALIGN};
pub use meta::{Dim, IoSpec, Meta, Preprocessing, Provenance, Range};
pub use ops::*;
#[cfg(all(feature = "signature", feature = "alloc"))]
pub use signature::sign;
pub use signature::{
    KeyId, SIGNATURE_LEN, SIGNATURE_MAGIC, SIGNING_CONTEXT, SignatureRef, signed_message,
};
#[cfg(feature = "signature")]
pub use signature::{public_key, verify_section};
pub use table::{Ids, Table};
pub use view::{MAX_RANK, Node, TensorInfo, TensorKind, View};
