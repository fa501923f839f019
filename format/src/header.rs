//! The fixed 128-byte header. Layout (all integers little-endian):
//!
//! | bytes   | field |
//! |---------|-------|
//! | 0..8    | magic `KILNART\0` |
//! | 8..10   | format major |
//! | 10..12  | format minor |
//! | 12..16  | header length (128) |
//! | 16..24  | content length: header + meta + graph + weights, without a trailing signature |
//! | 24..32  | meta section offset, length |
//! | 32..40  | graph section offset, length |
//! | 40..48  | weights section offset (16-aligned), length |
//! | 48..56  | signature section offset, length (0, 0 when unsigned) |
//! | 56..64  | reserved, zero |
//! | 64..96  | sha256 of bytes `0..48` followed by bytes `128..content length` |
//! | 96..128 | reserved, zero |

use crate::FormatError;
use sha2::{Digest, Sha256};

pub const MAGIC: [u8; 8] = *b"KILNART\0";
pub const FORMAT_MAJOR: u16 = 0;
pub const FORMAT_MINOR: u16 = 1;
pub const HEADER_LEN: usize = 128;
/// Alignment of the weight section and of every tensor inside it and inside the arena.
pub const WEIGHT_ALIGN: usize = 16;

/// A section's place in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Section {
    pub offset: u32,
    pub len: u32,
}

impl Section {
    pub fn range(self) -> core::ops::Range<usize> {
        self.offset as usize..self.offset as usize + self.len as usize
    }
}

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub major: u16,
    pub minor: u16,
    pub content_len: u64,
    pub meta: Section,
    pub graph: Section,
    pub weights: Section,
    pub signature: Section,
    pub content_sha256: [u8; 32],
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Header {
    /// Reads and checks the header; `bytes` is the whole artifact.
    pub fn parse(bytes: &[u8]) -> Result<Header, FormatError> {
        if bytes.len() < 8 || bytes[..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        if bytes.len() < HEADER_LEN {
            return Err(FormatError::Truncated {
                what: "header",
                start: 0,
                end: HEADER_LEN as u64,
                len: bytes.len(),
            });
        }
        let major = u16_at(bytes, 8);
        let minor = u16_at(bytes, 10);
        if major != FORMAT_MAJOR {
            return Err(FormatError::UnsupportedVersion { major, minor });
        }
        if u32_at(bytes, 12) as usize != HEADER_LEN {
            return Err(FormatError::Invalid {
                what: "header",
                detail: "header length is not 128",
            });
        }
        let sec = |at| Section {
            offset: u32_at(bytes, at),
            len: u32_at(bytes, at + 4),
        };
        let mut content_sha256 = [0u8; 32];
        content_sha256.copy_from_slice(&bytes[64..96]);
        let h = Header {
            major,
            minor,
            content_len: u64_at(bytes, 16),
            meta: sec(24),
            graph: sec(32),
            weights: sec(40),
            signature: sec(48),
            content_sha256,
        };
        if h.content_len > bytes.len() as u64 {
            return Err(FormatError::Truncated {
                what: "content",
                start: 0,
                end: h.content_len,
                len: bytes.len(),
            });
        }
        let content = h.content_len as usize;
        for (what, s) in [
            ("meta section", h.meta),
            ("graph section", h.graph),
            ("weight section", h.weights),
        ] {
            let end = s.offset as u64 + s.len as u64;
            if (s.offset as usize) < HEADER_LEN || end > content as u64 {
                return Err(FormatError::Truncated {
                    what,
                    start: s.offset as u64,
                    end,
                    len: content,
                });
            }
        }
        if !(h.weights.offset as usize).is_multiple_of(WEIGHT_ALIGN) {
            return Err(FormatError::Invalid {
                what: "weight section",
                detail: "offset is not 16-byte aligned",
            });
        }
        if bytes[56..64].iter().chain(&bytes[96..128]).any(|&b| b != 0) {
            return Err(FormatError::Invalid {
                what: "header",
                detail: "reserved bytes are not zero",
            });
        }
        if h.signature.len == 0 && h.signature.offset != 0 {
            return Err(FormatError::Invalid {
                what: "header",
                detail: "signature offset without a signature",
            });
        }
        if h.signature.len != 0 {
            let end = h.signature.offset as u64 + h.signature.len as u64;
            if (h.signature.offset as u64) < h.content_len || end > bytes.len() as u64 {
                return Err(FormatError::Truncated {
                    what: "signature section",
                    start: h.signature.offset as u64,
                    end,
                    len: bytes.len(),
                });
            }
        }
        Ok(h)
    }
}

/// sha256 over the header's first 48 bytes and everything after the header up
/// to the content length: what the header's checksum field must hold.
pub fn content_digest(bytes: &[u8], content_len: usize) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&bytes[..48]);
    h.update(&bytes[HEADER_LEN..content_len]);
    h.finalize().into()
}
