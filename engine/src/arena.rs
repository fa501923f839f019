//! Splitting the arena into a node's disjoint output regions (mutable) and
//! the gaps between them (shared, where the inputs live), without `unsafe`.

use crate::MAX_IO;
use crate::error::{EngineError, bad};

/// A node's view of the arena.
pub(crate) struct Regions<'x> {
    gaps: [(usize, &'x [u8]); MAX_IO + 2],
    n_gaps: usize,
    muts: [Option<&'x mut [u8]>; MAX_IO + 1],
}

impl<'x> Regions<'x> {
    /// No regions: the state before [`Regions::split`] fills them.
    pub(crate) fn empty() -> Regions<'x> {
        Regions {
            gaps: [(0, &[]); MAX_IO + 2],
            n_gaps: 0,
            muts: core::array::from_fn(|_| None),
        }
    }

    /// Splits `arena` into `self` (in place: a caller on a small stack
    /// keeps one `Regions`, not a copy per move). `ranges[i]` = (offset,
    /// len) of mutable region `i` (outputs, then scratch). Regions must not
    /// overlap each other.
    pub(crate) fn split(
        &mut self,
        arena: &'x mut [u8],
        ranges: &[(usize, usize)],
    ) -> Result<(), EngineError> {
        let n = ranges.len();
        if n > MAX_IO + 1 {
            return Err(bad("too many outputs"));
        }
        let mut order = [0usize; MAX_IO + 1];
        for (i, o) in order.iter_mut().enumerate().take(n) {
            *o = i;
        }
        let order = &mut order[..n];
        // Insertion sort by offset: at most MAX_IO + 1 entries, and core's
        // sort is 4 KB of the WebAssembly package.
        for j in 1..n {
            let mut k = j;
            while k > 0 && ranges[order[k - 1]].0 > ranges[order[k]].0 {
                order.swap(k - 1, k);
                k -= 1;
            }
        }
        *self = Regions::empty();
        let regions = self;
        let mut rest: &'x mut [u8] = arena;
        let mut pos = 0usize;
        for &i in order.iter() {
            let (off, len) = ranges[i];
            if len == 0 {
                regions.muts[i] = Some(&mut []);
                continue;
            }
            if off < pos {
                return Err(bad("outputs overlap in the arena"));
            }
            let end = off.checked_add(len).ok_or(bad("output range overflows"))?;
            if end - pos > rest.len() {
                return Err(EngineError::Arena(
                    "an output lies past the end of the arena",
                ));
            }
            let (gap, tail) = rest.split_at_mut(off - pos);
            let (m, tail) = tail.split_at_mut(len);
            regions.gaps[regions.n_gaps] = (pos, gap);
            regions.n_gaps += 1;
            regions.muts[i] = Some(m);
            rest = tail;
            pos = end;
        }
        regions.gaps[regions.n_gaps] = (pos, rest);
        regions.n_gaps += 1;
        Ok(())
    }

    /// Shared bytes at `offset..offset + len`, which must not overlap a mutable region.
    pub(crate) fn get(&self, offset: usize, len: usize) -> Result<&'x [u8], EngineError> {
        for &(start, g) in &self.gaps[..self.n_gaps] {
            if offset >= start && offset + len <= start + g.len() {
                return Ok(&g[offset - start..offset - start + len]);
            }
        }
        Err(bad("an input overlaps an output in the arena"))
    }

    pub(crate) fn take_mut(&mut self, i: usize) -> Option<&'x mut [u8]> {
        self.muts.get_mut(i).and_then(Option::take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_disjoint_regions_and_finds_inputs() {
        let mut arena = [0u8; 64];
        for (i, b) in arena.iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut r = Regions::empty();
        r.split(&mut arena, &[(32, 16), (0, 8)]).unwrap();
        assert_eq!(r.get(8, 8).unwrap()[0], 8);
        assert_eq!(r.get(48, 16).unwrap()[0], 48);
        assert!(r.get(30, 4).is_err());
        let a = r.take_mut(0).unwrap();
        a[0] = 7;
        assert_eq!(r.take_mut(1).unwrap().len(), 8);
        assert!(
            Regions::empty()
                .split(&mut arena, &[(0, 16), (8, 16)])
                .is_err()
        );
        assert!(Regions::empty().split(&mut arena, &[(60, 16)]).is_err());
    }
}
