//! A bounds-checked reader for the FlatBuffers wire format, enough to walk
//! a `.tflite` model.
//!
//! Why not the `flatbuffers` crate: its accessors (`Table::get`,
//! `Follow::follow`) are `unsafe` and rely on a verifier generated from the
//! schema; the compiler crate forbids `unsafe`, and hand-writing verifier
//! impls costs more than this file. Every read here is checked against the
//! buffer, so a truncated or hostile file gives [`FbError`], never a panic.
//!
//! Wire format (FlatBuffers "binary encoding"): little-endian; the buffer
//! starts with a `u32` offset to the root table. A table starts with an
//! `i32` whose value, subtracted from the table's position, locates its
//! vtable: `u16` vtable size, `u16` table size, then one `u16` per field
//! giving the field's offset inside the table (0 or beyond the vtable:
//! absent, use the default). Offsets to tables, vectors and strings are
//! `u32`s relative to where they are stored; a vector is a `u32` length and
//! its elements; a string is a vector of bytes.

/// A malformed buffer: what was being read and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed flatbuffer: {what} at byte {at}")]
pub struct FbError {
    pub what: &'static str,
    pub at: usize,
}

pub type Result<T> = std::result::Result<T, FbError>;

fn bytes<const N: usize>(buf: &[u8], at: usize, what: &'static str) -> Result<[u8; N]> {
    at.checked_add(N)
        .and_then(|end| buf.get(at..end))
        .and_then(|s| s.try_into().ok())
        .ok_or(FbError { what, at })
}

fn u16_at(buf: &[u8], at: usize) -> Result<u16> {
    bytes::<2>(buf, at, "u16 past the end").map(u16::from_le_bytes)
}

fn u32_at(buf: &[u8], at: usize) -> Result<u32> {
    bytes::<4>(buf, at, "u32 past the end").map(u32::from_le_bytes)
}

/// Follows the `u32` offset stored at `at`.
fn follow(buf: &[u8], at: usize) -> Result<usize> {
    let off = u32_at(buf, at)? as usize;
    at.checked_add(off)
        .filter(|&p| p < buf.len())
        .ok_or(FbError {
            what: "offset points past the end",
            at,
        })
}

/// A table inside a buffer.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    buf: &'a [u8],
    pos: usize,
    vtable: usize,
    vt_len: usize,
}

impl<'a> Table<'a> {
    /// The root table of `buf`.
    pub fn root(buf: &'a [u8]) -> Result<Self> {
        Self::at(buf, follow(buf, 0)?)
    }

    fn at(buf: &'a [u8], pos: usize) -> Result<Self> {
        let soff = i32::from_le_bytes(bytes::<4>(buf, pos, "table past the end")?);
        let vtable = (pos as i64 - soff as i64)
            .try_into()
            .ok()
            .filter(|&v: &usize| v < buf.len())
            .ok_or(FbError {
                what: "vtable outside the buffer",
                at: pos,
            })?;
        let vt_len = u16_at(buf, vtable)? as usize;
        if vt_len < 4 || vtable + vt_len > buf.len() {
            return Err(FbError {
                what: "bad vtable size",
                at: vtable,
            });
        }
        Ok(Table {
            buf,
            pos,
            vtable,
            vt_len,
        })
    }

    /// Absolute position of field `id`'s value, or `None` when absent.
    fn field(&self, id: usize) -> Result<Option<usize>> {
        let slot = 4 + 2 * id;
        if slot + 2 > self.vt_len {
            return Ok(None);
        }
        let off = u16_at(self.buf, self.vtable + slot)? as usize;
        Ok((off != 0).then_some(self.pos + off))
    }

    fn scalar<const N: usize>(&self, id: usize) -> Result<Option<[u8; N]>> {
        match self.field(id)? {
            Some(at) => bytes::<N>(self.buf, at, "field past the end").map(Some),
            None => Ok(None),
        }
    }

    pub fn u8(&self, id: usize, default: u8) -> Result<u8> {
        Ok(self.scalar::<1>(id)?.map_or(default, |b| b[0]))
    }

    pub fn i8(&self, id: usize, default: i8) -> Result<i8> {
        Ok(self.scalar::<1>(id)?.map_or(default, |b| b[0] as i8))
    }

    pub fn bool(&self, id: usize) -> Result<bool> {
        Ok(self.u8(id, 0)? != 0)
    }

    pub fn i32(&self, id: usize, default: i32) -> Result<i32> {
        Ok(self.scalar::<4>(id)?.map_or(default, i32::from_le_bytes))
    }

    pub fn u32(&self, id: usize, default: u32) -> Result<u32> {
        Ok(self.scalar::<4>(id)?.map_or(default, u32::from_le_bytes))
    }

    pub fn f32(&self, id: usize, default: f32) -> Result<f32> {
        Ok(self.scalar::<4>(id)?.map_or(default, f32::from_le_bytes))
    }

    pub fn u64(&self, id: usize, default: u64) -> Result<u64> {
        Ok(self.scalar::<8>(id)?.map_or(default, u64::from_le_bytes))
    }

    /// A sub-table field.
    pub fn table(&self, id: usize) -> Result<Option<Table<'a>>> {
        match self.field(id)? {
            Some(at) => Table::at(self.buf, follow(self.buf, at)?).map(Some),
            None => Ok(None),
        }
    }

    /// A vector field: its element count and the position of element 0.
    fn vector(&self, id: usize, elem: usize) -> Result<Option<(usize, usize)>> {
        let Some(at) = self.field(id)? else {
            return Ok(None);
        };
        let v = follow(self.buf, at)?;
        let n = u32_at(self.buf, v)? as usize;
        let start = v + 4;
        let fits = n
            .checked_mul(elem)
            .and_then(|len| start.checked_add(len))
            .is_some_and(|end| end <= self.buf.len());
        if !fits {
            return Err(FbError {
                what: "vector runs past the end",
                at: v,
            });
        }
        Ok(Some((n, start)))
    }

    /// A `[ubyte]` (or string) field as a slice (empty when absent).
    pub fn bytes(&self, id: usize) -> Result<&'a [u8]> {
        Ok(match self.vector(id, 1)? {
            Some((n, start)) => &self.buf[start..start + n],
            None => &[],
        })
    }

    /// A string field (`None` when absent); invalid UTF-8 is replaced.
    pub fn str(&self, id: usize) -> Result<Option<String>> {
        if self.field(id)?.is_none() {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(self.bytes(id)?).into_owned()))
    }

    fn scalars<const N: usize, T>(&self, id: usize, f: fn([u8; N]) -> T) -> Result<Vec<T>> {
        let Some((n, start)) = self.vector(id, N)? else {
            return Ok(vec![]);
        };
        (0..n)
            .map(|i| bytes::<N>(self.buf, start + i * N, "element past the end").map(f))
            .collect()
    }

    pub fn i32s(&self, id: usize) -> Result<Vec<i32>> {
        self.scalars::<4, i32>(id, i32::from_le_bytes)
    }

    pub fn f32s(&self, id: usize) -> Result<Vec<f32>> {
        self.scalars::<4, f32>(id, f32::from_le_bytes)
    }

    pub fn i64s(&self, id: usize) -> Result<Vec<i64>> {
        self.scalars::<8, i64>(id, i64::from_le_bytes)
    }

    /// A vector-of-tables field (empty when absent).
    pub fn tables(&self, id: usize) -> Result<Vec<Table<'a>>> {
        let Some((n, start)) = self.vector(id, 4)? else {
            return Ok(vec![]);
        };
        (0..n)
            .map(|i| Table::at(self.buf, follow(self.buf, start + 4 * i)?))
            .collect()
    }

    /// The whole buffer (for `Buffer`s stored outside the flatbuffer, by
    /// offset and size).
    pub fn buffer(&self) -> &'a [u8] {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer with one root table: field 0 = i32 7, field 1 absent,
    /// field 2 = [i32] {1, 2}, field 3 = "hi".
    fn sample() -> Vec<u8> {
        let mut b = vec![];
        b.extend(16u32.to_le_bytes()); // 0: root offset -> table at 16
        // 4..16: vtable: size 12, table size 16, f0 at +4, f1 absent, f2 at +8, f3 at +12
        for v in [12u16, 16, 4, 0, 8, 12] {
            b.extend(v.to_le_bytes());
        }
        b.extend(12i32.to_le_bytes()); // 16: soffset: vtable at 16 - 12 = 4
        b.extend(7i32.to_le_bytes()); // 20: field 0
        b.extend(8u32.to_le_bytes()); // 24: field 2 -> 32
        b.extend(16u32.to_le_bytes()); // 28: field 3 -> 44
        b.extend(2u32.to_le_bytes()); // 32: vector length
        b.extend(1i32.to_le_bytes()); // 36
        b.extend(2i32.to_le_bytes()); // 40
        b.extend(2u32.to_le_bytes()); // 44: string length
        b.extend(b"hi");
        b
    }

    #[test]
    fn reads_fields_and_defaults() {
        let b = sample();
        let t = Table::root(&b).unwrap();
        assert_eq!(t.i32(0, -1).unwrap(), 7);
        assert_eq!(t.i32(1, -1).unwrap(), -1);
        assert_eq!(t.i32s(2).unwrap(), vec![1, 2]);
        assert_eq!(t.str(3).unwrap().as_deref(), Some("hi"));
        assert_eq!(t.i32(9, 5).unwrap(), 5, "beyond the vtable: default");
        assert!(t.tables(1).unwrap().is_empty());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let b = sample();
        for n in 0..b.len() {
            let cut = &b[..n];
            if let Ok(t) = Table::root(cut) {
                let _ = (t.i32(0, 0), t.i32s(2), t.str(3), t.tables(2));
            }
        }
        // Corrupt every byte in turn as well.
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0xA5;
            if let Ok(t) = Table::root(&c) {
                let _ = (t.i32(0, 0), t.i32s(2), t.str(3), t.tables(2), t.table(0));
            }
        }
    }
}
