//! Reading the artifact's postcard records without serde.
//!
//! The writer encodes with serde + postcard (`write.rs`); readers decode by
//! hand here, one small function per type, because serde's generated
//! visitors and postcard's deserializer were about 30 KB of the browser
//! package and would be most of a microcontroller runtime's flash. The
//! derived `Deserialize` impls stay as the specification: a test decodes
//! random and real records both ways and requires the same values, the same
//! bytes consumed and the same acceptance.
//!
//! postcard's wire format, as far as the artifact uses it: `u8`/`i8` and
//! `bool` (0 or 1) are one byte; `u16`/`u32`/`u64` and lengths are LEB128
//! varints (at most 3, 5 and 10 bytes, the last byte bounded); `i16`/`i32`/
//! `i64` are zigzag varints; `f32`/`f64` are little-endian; an `Option` is a
//! 0/1 byte then the value; an enum is its variant index as a `u32` varint
//! then the fields; structs, tuples and arrays are their fields in order;
//! `&str` and `&[u8]` are a length then the bytes.

use crate::FormatError;
use crate::table::{Ids, Table};

/// A cursor over one record. Reads never fail on the spot: past the end
/// or on a malformed value they return a zero value and remember the first
/// problem, which [`from_record`] reports once the record is read. The
/// decoders are then straight-line code, a fraction of the size a `?` on
/// every field costs.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
    error: Option<&'static str>,
}

/// A type read from a postcard record (see the module docs).
pub trait Decode<'a>: Sized {
    #[doc(hidden)]
    fn decode(r: &mut Reader<'a>) -> Self;
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader {
            bytes,
            what,
            error: None,
        }
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    /// Records the first problem.
    pub(crate) fn fail(&mut self, detail: &'static str) {
        self.error.get_or_insert(detail);
    }

    /// The first problem met so far.
    pub(crate) fn error(&self) -> Option<FormatError> {
        self.error.map(|detail| FormatError::Decode {
            what: self.what,
            detail,
        })
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        if n > self.bytes.len() {
            self.fail("unexpected end of data");
            self.bytes = &[];
            return &[];
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        head
    }

    #[inline(never)]
    pub(crate) fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&b, tail)) => {
                self.bytes = tail;
                b
            }
            None => {
                self.fail("unexpected end of data");
                0
            }
        }
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        if let Some(b) = self.take(N).get(..N) {
            a.copy_from_slice(b);
        }
        a
    }

    /// A varint of at most `max` bytes whose last byte is at most `last`.
    #[inline(never)]
    fn varint(&mut self, max: u32, last: u8) -> u64 {
        let mut out = 0u64;
        for i in 0..max {
            let b = self.byte();
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i == max - 1 && b > last {
                    break;
                }
                return out;
            }
        }
        self.fail("bad varint");
        0
    }

    pub(crate) fn u16(&mut self) -> u16 {
        self.varint(3, 0x03) as u16
    }

    #[inline(never)]
    pub(crate) fn u32(&mut self) -> u32 {
        self.varint(5, 0x0f) as u32
    }

    pub(crate) fn u64(&mut self) -> u64 {
        self.varint(10, 0x01)
    }

    pub(crate) fn i16(&mut self) -> i16 {
        let v = self.u16();
        ((v >> 1) as i16) ^ -((v & 1) as i16)
    }

    #[inline(never)]
    pub(crate) fn i32(&mut self) -> i32 {
        let v = self.u32();
        ((v >> 1) as i32) ^ -((v & 1) as i32)
    }

    pub(crate) fn i64(&mut self) -> i64 {
        let v = self.u64();
        ((v >> 1) as i64) ^ -((v & 1) as i64)
    }

    #[inline(never)]
    pub(crate) fn bool(&mut self) -> bool {
        match self.byte() {
            0 => false,
            1 => true,
            _ => {
                self.fail("bad bool");
                false
            }
        }
    }

    #[inline(never)]
    pub(crate) fn f32(&mut self) -> f32 {
        f32::from_le_bytes(self.array())
    }

    pub(crate) fn f64(&mut self) -> f64 {
        f64::from_le_bytes(self.array())
    }

    /// A length-prefixed byte string (a length past the data fails in
    /// `take`, before any allocation).
    #[inline(never)]
    pub(crate) fn bytes(&mut self) -> &'a [u8] {
        let n = self.u64();
        self.take(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub(crate) fn str(&mut self) -> &'a str {
        let b = self.bytes();
        core::str::from_utf8(b).unwrap_or_else(|_| {
            self.fail("bad utf-8 string");
            ""
        })
    }

    /// An enum's variant index: below `count`, else 0 and a problem.
    #[inline(never)]
    pub(crate) fn tag(&mut self, count: u32) -> u32 {
        let t = self.u32();
        if t < count {
            t
        } else {
            self.fail("unknown enum tag");
            0
        }
    }

    pub(crate) fn option<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        match self.byte() {
            0 => None,
            1 => Some(f(self)),
            _ => {
                self.fail("bad option tag");
                None
            }
        }
    }

    pub(crate) fn each<T, const N: usize>(&mut self, mut f: impl FnMut(&mut Self) -> T) -> [T; N]
    where
        T: Copy + Default,
    {
        let mut a = [T::default(); N];
        for v in &mut a {
            *v = f(self);
        }
        a
    }

    pub(crate) fn get<T: Decode<'a>>(&mut self) -> T {
        T::decode(self)
    }
}

/// Decodes one whole record: trailing bytes are an error.
pub(crate) fn from_record<'a, T: Decode<'a>>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<T, FormatError> {
    let mut r = Reader::new(bytes, what);
    let v = T::decode(&mut r);
    if !r.rest().is_empty() {
        r.fail("trailing bytes");
    }
    match r.error() {
        Some(e) => Err(e),
        None => Ok(v),
    }
}

impl Decode<'_> for u32 {
    fn decode(r: &mut Reader<'_>) -> Self {
        r.u32()
    }
}

impl<'a> Decode<'a> for &'a str {
    fn decode(r: &mut Reader<'a>) -> Self {
        r.str()
    }
}

impl<'a> Decode<'a> for (&'a str, &'a str) {
    fn decode(r: &mut Reader<'a>) -> Self {
        (r.str(), r.str())
    }
}

impl<'a> Decode<'a> for Ids<'a> {
    fn decode(r: &mut Reader<'a>) -> Self {
        Ids(r.bytes())
    }
}

impl<'a, T> Decode<'a> for Table<'a, T> {
    fn decode(r: &mut Reader<'a>) -> Self {
        let b = r.bytes();
        Table::parse(b).unwrap_or_else(|_| {
            // serde's impl reports every table problem as this one message.
            r.fail("malformed table");
            Table::empty()
        })
    }
}

#[cfg(test)]
mod tests {
    //! The hand decoders against serde's derived `Deserialize` (the
    //! specification) on random records: the same value (compared by its
    //! re-encoding, so NaN fields compare), the same bytes left over, and
    //! the same acceptance.

    use super::{Decode, Reader};
    use crate::view::GraphSection;
    use crate::*;
    use core::fmt::Debug;
    use serde::{Deserialize, Serialize};

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// Bytes a record is made of: small tags, bools, varint
        /// continuations, and anything.
        fn record(&mut self, buf: &mut [u8; 96]) -> usize {
            let len = (self.next() % 96) as usize;
            for (i, b) in buf[..len].iter_mut().enumerate() {
                let r = self.next();
                *b = match (r >> 8) % 8 {
                    _ if i == 0 => (r % 72) as u8,
                    0..=2 => (r % 3) as u8,
                    3 => 0x80 | (r as u8),
                    4 => (r % 16) as u8,
                    _ => r as u8,
                };
            }
            len
        }
    }

    fn encode<T: Serialize>(v: &T) -> ([u8; 512], usize) {
        let mut buf = [0u8; 512];
        let n = postcard::to_slice(v, &mut buf).expect("fits").len();
        (buf, n)
    }

    /// Decodes `bytes` both ways; returns whether it decoded.
    fn same<'a, T>(bytes: &'a [u8]) -> Option<T>
    where
        T: Decode<'a> + Deserialize<'a> + Serialize + Debug,
    {
        let mut r = Reader::new(bytes, "test");
        let v = T::decode(&mut r);
        let ours = match r.error() {
            None => Ok((v, r.rest().len())),
            Some(e) => Err(e),
        };
        let spec = postcard::take_from_bytes::<T>(bytes).map(|(v, rest)| (v, rest.len()));
        match (ours, spec) {
            (Ok((a, ra)), Ok((b, rb))) => {
                let (ea, na) = encode(&a);
                let (eb, nb) = encode(&b);
                assert_eq!(
                    (ra, &ea[..na]),
                    (rb, &eb[..nb]),
                    "{bytes:?}: ours {a:?}, serde {b:?}"
                );
                Some(a)
            }
            (Err(_), Err(_)) => None,
            (a, b) => panic!("{bytes:?}: ours {a:?}, serde {b:?}"),
        }
    }

    #[test]
    fn every_op_decodes_as_serde_does() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut buf = [0u8; 96];
        let mut seen = [false; 64];
        for _ in 0..400_000 {
            let len = rng.record(&mut buf);
            if let Some(op) = same::<Op>(&buf[..len]) {
                seen[buf[0] as usize] = true;
                assert_eq!(buf[0] as usize, op_index(&op));
                assert_eq!(op.tag(), buf[0], "Op::tag of {op:?}");
            }
        }
        let missing: usize = seen[..62].iter().filter(|s| !**s).count();
        assert_eq!(missing, 0, "variants never decoded: {seen:?}");
        assert!(
            !seen[62],
            "a 63rd Op variant decoded: add it to the decoder"
        );
    }

    /// The variant's position, from its encoding.
    fn op_index(op: &Op) -> usize {
        encode(op).0[0] as usize
    }

    #[test]
    fn every_record_type_decodes_as_serde_does() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut buf = [0u8; 96];
        let mut ok = [0usize; 12];
        for _ in 0..100_000 {
            let len = rng.record(&mut buf);
            let b = &buf[..len];
            let hits = [
                same::<Unary>(b).is_some(),
                same::<Binary>(b).is_some(),
                same::<RnnAct>(b).is_some(),
                same::<Window>(b).is_some(),
                same::<DType>(b).is_some(),
                same::<Dim<'_>>(b).is_some(),
                same::<Range>(b).is_some(),
                same::<Provenance<'_>>(b).is_some(),
                same::<Preprocessing<'_>>(b).is_some(),
                same::<Node<'_>>(b).is_some(),
                same::<(&str, &str)>(b).is_some(),
                same::<Ids<'_>>(b).is_some(),
            ];
            for (n, h) in ok.iter_mut().zip(hits) {
                *n += usize::from(h);
            }
            // Tables inside these rarely parse from random bytes; the
            // round-trip tests cover their success path.
            same::<IoSpec<'_>>(b);
            same::<Meta<'_>>(b);
            same::<GraphSection<'_>>(b);
            same::<ReduceKind>(b);
            same::<PadMode>(b);
            same::<PostTransform>(b);
            same::<TreeAggregate>(b);
            same::<Norm>(b);
            same::<RnnDirection>(b);
        }
        assert!(
            ok.iter().all(|&n| n > 20),
            "too few successful decodes: {ok:?}"
        );
    }

    #[test]
    fn varints_are_bounded_like_postcard() {
        for bytes in [
            &[0xff, 0xff, 0xff, 0xff, 0x0f][..],
            &[0xff, 0xff, 0xff, 0xff, 0x10],
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
            &[0x80, 0x00],
            &[0x80],
        ] {
            let mut r = Reader::new(bytes, "test");
            let v = r.u32();
            let ours = r.error().is_none().then_some(v);
            let spec = postcard::take_from_bytes::<u32>(bytes).ok().map(|(v, _)| v);
            assert_eq!(ours, spec, "{bytes:?}");
        }
    }
}
