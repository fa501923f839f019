//! Random-access tables of postcard records, readable without an allocator.
//!
//! A table's bytes are: `count: u32`, `count + 1` end-exclusive record
//! boundaries (`u32`, relative to the start of the record data, the first one
//! 0), then the records. Record `i` is `data[bound[i]..bound[i + 1]]`,
//! decoded on demand. Inside a postcard struct a table is a byte string.

use crate::FormatError;
use crate::decode::{Decode, from_record};
use crate::header::u32_at;
use core::fmt;
use core::marker::PhantomData;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A lazily decoded, random-access sequence of `T`.
pub struct Table<'a, T> {
    bytes: &'a [u8],
    len: u32,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Table<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Table<'_, T> {}

impl<T> fmt::Debug for Table<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Table(len={}, {} bytes)", self.len, self.bytes.len())
    }
}

impl<T> PartialEq for Table<'_, T> {
    fn eq(&self, o: &Self) -> bool {
        self.bytes == o.bytes
    }
}

impl<'a, T> Table<'a, T> {
    /// Checks the table structure (not the records).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        Ok(Table {
            bytes,
            len: check_structure(bytes)?,
            _t: PhantomData,
        })
    }

    /// An empty table (what a missing table reads as).
    pub fn empty() -> Self {
        const EMPTY: [u8; 8] = [0; 8];
        Table {
            bytes: &EMPTY,
            len: 0,
            _t: PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The encoded bytes (as stored).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub(crate) fn record(&self, i: usize) -> Option<&'a [u8]> {
        record(self.bytes, self.len, i)
    }
}

// The structure checks and record lookup are the same for every `T`: one
// copy each, not one per record type (firmware flash).

/// The record count of a well-formed table.
#[inline(never)]
fn check_structure(bytes: &[u8]) -> Result<u32, FormatError> {
    const WHAT: &str = "table";
    let invalid = |detail| FormatError::Invalid { what: WHAT, detail };
    if bytes.len() < 4 {
        return Err(invalid("shorter than its count"));
    }
    let len = u32_at(bytes, 0);
    let head = (len as usize + 2)
        .checked_mul(4)
        .ok_or(invalid("count overflows"))?;
    if head > bytes.len() {
        return Err(invalid("record boundaries run past the end"));
    }
    let data = bytes.len() - head;
    let mut prev = 0u32;
    for i in 0..=len as usize {
        let b = u32_at(bytes, 4 + 4 * i);
        if (i == 0 && b != 0) || b < prev || b as usize > data {
            return Err(invalid(
                "record boundaries are out of order or out of range",
            ));
        }
        prev = b;
    }
    if prev as usize != data {
        return Err(invalid("trailing bytes after the last record"));
    }
    Ok(len)
}

/// Record `i` of a table `check_structure` accepted with `len` records.
#[inline(never)]
fn record(bytes: &[u8], len: u32, i: usize) -> Option<&[u8]> {
    if i >= len as usize {
        return None;
    }
    let head = (len as usize + 2) * 4;
    let s = u32_at(bytes, 4 + 4 * i) as usize;
    let e = u32_at(bytes, 8 + 4 * i) as usize;
    bytes.get(head + s..head + e)
}

impl<'a, T: Decode<'a>> Table<'a, T> {
    pub fn get(&self, i: usize) -> Result<T, FormatError> {
        let rec = self.record(i).ok_or(FormatError::InvalidAt {
            what: "table record",
            index: i as u32,
            detail: "index out of range",
        })?;
        from_record(rec, "table record")
    }

    pub fn iter(&self) -> impl Iterator<Item = Result<T, FormatError>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

impl<T> Serialize for Table<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.bytes)
    }
}

impl<'de: 'a, 'a, T> Deserialize<'de> for Table<'a, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: &'de [u8] = Deserialize::deserialize(d)?;
        Table::parse(bytes).map_err(|_| serde::de::Error::custom("malformed table"))
    }
}

/// Encodes records into table bytes.
#[cfg(feature = "write")]
pub fn encode_table<T: Serialize>(items: &[T]) -> Result<alloc::vec::Vec<u8>, postcard::Error> {
    use alloc::vec::Vec;
    let mut data = Vec::new();
    let mut bounds = Vec::with_capacity(items.len() + 1);
    bounds.push(0u32);
    for it in items {
        data.extend_from_slice(&postcard::to_allocvec(it)?);
        bounds.push(data.len() as u32);
    }
    let mut out = Vec::with_capacity(4 + bounds.len() * 4 + data.len());
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for b in bounds {
        out.extend_from_slice(&b.to_le_bytes());
    }
    out.extend_from_slice(&data);
    Ok(out)
}

/// A list of `u32` tensor ids stored as little-endian bytes. `u32::MAX`
/// marks an absent optional input.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids<'a>(#[serde(borrow)] pub &'a [u8]);

impl Ids<'_> {
    pub const ABSENT: u32 = u32::MAX;

    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    pub fn is_empty(&self) -> bool {
        self.0.len() < 4
    }

    pub fn get(&self, i: usize) -> Option<u32> {
        if i < self.len() {
            Some(u32_at(self.0, 4 * i))
        } else {
            None
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len()).map(|i| u32_at(self.0, 4 * i))
    }
}

impl fmt::Debug for Ids<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(all(test, feature = "write"))]
mod tests {
    use super::*;
    extern crate std;
    use std::vec;

    #[test]
    fn table_roundtrip_and_random_access() {
        let items = vec![10u32, 300, 70000];
        let bytes = encode_table(&items).unwrap();
        let t: Table<u32> = Table::parse(&bytes).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(1).unwrap(), 300);
        assert_eq!(t.get(2).unwrap(), 70000);
        assert!(t.get(3).is_err());
    }

    #[test]
    fn table_rejects_bad_bounds_without_panicking() {
        let items = vec![1u32, 2];
        let bytes = encode_table(&items).unwrap();
        for cut in 0..bytes.len() {
            let _ = Table::<u32>::parse(&bytes[..cut]).map(|t| t.iter().count());
        }
        let mut b = bytes.clone();
        b[0] = 200;
        assert!(Table::<u32>::parse(&b).is_err());
    }
}
