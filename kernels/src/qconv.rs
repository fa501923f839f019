//! Direct int8 convolution for [`crate::quant::conv2d_i8_fast`]: no
//! im2col, integer arithmetic only.
//!
//! The input is laid out once per call as 32-bit words of four consecutive
//! channels of one position, each byte `x ^ 0x80` (that is `x + 128` as an
//! unsigned byte; padding holds the zero point), and the weights as words
//! of the same four channels per tap. An output position then accumulates
//! `Σ u8(x + 128) · w` over (tap, channel word): one VPDPBUSD per word and
//! 16 positions on AVX-512 VNNI, plain integer loops elsewhere (which LLVM
//! vectorises for the engine's instruction set). `Σ (x - zp) · w` is that sum
//! minus `(128 + zp) · Σ w`, folded into the bias once per output channel.
//! All sums wrap in `i32` as the reference's do, so every path gives the
//! reference's bytes.
//!
//! Positions: the output rows are computed over a plane's full width, one
//! run of `oh · wq` positions whose extra columns are dropped, so vectors
//! stay full even on 1- or 5-wide maps. With unit strides the plane is the
//! padded input. With larger strides the padded input is split into
//! `sh · sw` phase planes (row `y` and column `x` go to plane
//! `(y % sh, x % sw)`, at `(y / sh, x / sw)`), so a tap reads one plane and
//! consecutive output positions, across rows too, read consecutive words:
//! a stride-2 convolution runs the same full vectors as a unit-stride one.
//! Planes that no tap reads (three of four for a 1×1 stride-2 shortcut) are
//! not filled.
//!
//! Depthwise convolutions (one filter per channel) have no channel sum to
//! put in a word; they run over whole planes of `x - zp` in `i32`, by the
//! same run layout.

use crate::conv::Conv2d;
use crate::fixed::Multiplier;
use crate::gemm::Kernel;
use crate::quant::QOut;

/// Positions per vector (16 lanes of `i32`).
pub(crate) const LANES: usize = 16;
/// Output channels per register tile.
pub(crate) const MR: usize = 4;
/// Positions per register tile (four vectors).
pub(crate) const CHUNK: usize = 4 * LANES;

/// Where the direct int8 convolution of `p` reads its packed input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geo {
    /// Channel words per position (`ceil(cg / 4)`).
    c4: usize,
    /// Height of one phase plane (`ceil(hp / sh)`, `hp` the padded height).
    hq: usize,
    /// Width of one phase plane (`ceil(wp / sw)`).
    wq: usize,
    /// Bit `py · sw + px`: some tap reads phase plane `(py, px)`.
    phases: u64,
    /// Words from one channel word's planes to the next.
    cstride: usize,
    /// Kernel taps (`kh · kw`).
    taps: usize,
    /// Packed input length: the planes plus slack for the tail vectors.
    input_words: usize,
}

impl Geo {
    /// The layout for `p`, or `None` when its shapes are inconsistent (the
    /// output would read outside the padded input) or too large for 32-bit
    /// offsets; the caller then runs the reference.
    pub(crate) fn new(p: &Conv2d) -> Option<Geo> {
        let [sh, sw] = p.stride;
        let [dh, dw] = p.dilation;
        if p.group == 0 || sh == 0 || sw == 0 || p.oh == 0 || p.ow == 0 {
            return None;
        }
        let hp = p.h.checked_add(p.pad[0])?.checked_add(p.pad[2])?;
        let wp = p.w.checked_add(p.pad[1])?.checked_add(p.pad[3])?;
        let last = |o: usize, s: usize, k: usize, d: usize| {
            (o - 1)
                .checked_mul(s)?
                .checked_add(k.checked_sub(1)?.checked_mul(d)?)
        };
        if last(p.oh, sh, p.kh, dh)? >= hp || last(p.ow, sw, p.kw, dw)? >= wp {
            return None;
        }
        if sh.checked_mul(sw)? > 64 {
            return None;
        }
        let c4 = (p.c / p.group).div_ceil(4);
        let (hq, wq) = (hp.div_ceil(sh), wp.div_ceil(sw));
        let cstride = sh.checked_mul(sw)?.checked_mul(hq)?.checked_mul(wq)?;
        let mut g = Geo {
            c4,
            hq,
            wq,
            phases: 0,
            cstride,
            taps: p.kh.checked_mul(p.kw)?,
            input_words: 0,
        };
        let mut max_tap = 0;
        for r in 0..p.kh {
            for s in 0..p.kw {
                max_tap = max_tap.max(g.tap(p, r, s));
                g.phases |= 1 << ((r * dh % sh) * sw + s * dw % sw);
            }
        }
        let input_words = c4
            .checked_mul(cstride)?
            .checked_add(max_tap)?
            .checked_add(CHUNK)?;
        u32::try_from(input_words).ok()?;
        Some(Geo { input_words, ..g })
    }

    /// Word offset of tap `(r, s)` from a position's first word.
    fn tap(&self, p: &Conv2d, r: usize, s: usize) -> usize {
        let [sh, sw] = p.stride;
        let (row, col) = (r * p.dilation[0], s * p.dilation[1]);
        let plane = (row % sh) * sw + col % sw;
        (plane * self.hq + row / sh) * self.wq + col / sw
    }

    /// Words per output channel of the packed weights.
    fn k4(&self) -> usize {
        self.taps * self.c4
    }

    /// `u32` scratch words [`conv2d`] needs for `p`: with `packed`
    /// weights only the input layout and the sums, else also room to pack
    /// the weights.
    pub(crate) fn scratch_words(&self, p: &Conv2d, packed: bool) -> usize {
        let mg = p.m / p.group.max(1);
        let weights = if packed { 0 } else { mg * self.k4() + mg };
        self.input_words + self.taps + MR * CHUNK + weights
    }

    /// Bytes of the packed weights of `p` (`m` rows of `taps · c4` words).
    pub(crate) fn packed_len(&self, p: &Conv2d) -> usize {
        p.m * self.k4() * 4
    }
}

/// The word of four bytes.
#[inline(always)]
fn bytes(w: u32) -> [i32; 4] {
    let b = w.to_le_bytes();
    [b[0], b[1], b[2], b[3]].map(i32::from)
}

/// One register tile: `acc[r][j] = Σ_(tap, c) dot4(b word, a word)` for
/// `rows` output channels and `lanes` positions, `b` starting at the first
/// position (reads reach `taps[t] + (c4 - 1)·cstride + lanes` words).
#[derive(Debug)]
pub(crate) struct Tile<'a> {
    /// Packed weights, `rows` rows of `taps.len() · c4` little-endian
    /// words (bytes: no alignment needed, they may come from an artifact).
    pub(crate) a: &'a [u8],
    pub(crate) taps: &'a [u32],
    pub(crate) c4: usize,
    pub(crate) cstride: usize,
    pub(crate) b: &'a [u32],
    pub(crate) rows: usize,
    pub(crate) lanes: usize,
    /// `MR · CHUNK` sums, row `r` at `r · CHUNK`.
    pub(crate) acc: &'a mut [i32],
}

impl crate::gemm::Kernel for Tile<'_> {
    #[inline(always)]
    fn run(self) {
        let k4 = self.taps.len() * self.c4;
        for r in 0..self.rows {
            let acc = &mut self.acc[r * CHUNK..][..self.lanes];
            acc.fill(0);
            let ar = &self.a[r * k4 * 4..][..k4 * 4];
            for (t, &off) in self.taps.iter().enumerate() {
                for ci in 0..self.c4 {
                    let i = (t * self.c4 + ci) * 4;
                    let [w0, w1, w2, w3] =
                        [ar[i], ar[i + 1], ar[i + 2], ar[i + 3]].map(|v| i32::from(v as i8));
                    let src = &self.b[off as usize + ci * self.cstride..][..self.lanes];
                    for (a, &xw) in acc.iter_mut().zip(src) {
                        let [x0, x1, x2, x3] = bytes(xw);
                        *a = a.wrapping_add(x0 * w0 + x1 * w1 + x2 * w2 + x3 * w3);
                    }
                }
            }
        }
    }
}

/// Requantizes one register tile's exact `i32` sums: for each row `r`
/// (output channel) and segment `(from, to, len)` (the chunk's valid
/// columns, the same for every row), `out[r · plane + to + i] =
/// clamp(apply_r(acc[r · CHUNK + from + i] + bias_r) + zp)`, the
/// multipliers hoisted so the loops vectorise.
pub(crate) struct Requant<'a> {
    /// `rows · CHUNK` sums.
    pub(crate) acc: &'a [i32],
    /// `rows` output planes of `plane` bytes.
    pub(crate) out: &'a mut [i8],
    pub(crate) plane: usize,
    pub(crate) rows: usize,
    pub(crate) segs: &'a [(usize, usize, usize)],
    /// `[mantissa, shift]` of each row, or one for all (per-tensor).
    pub(crate) requant: &'a [[i32; 2]],
    /// Each row's bias (the zero-point fold included).
    pub(crate) bias: &'a [i32],
    pub(crate) zp: i32,
    pub(crate) lo: i32,
    pub(crate) hi: i32,
}

impl Requant<'_> {
    /// Row `r`'s multiplier.
    #[inline(always)]
    pub(crate) fn m(&self, r: usize) -> Multiplier {
        let [mantissa, shift] = self.requant[if self.requant.len() == 1 { 0 } else { r }];
        Multiplier { mantissa, shift }
    }
}

impl crate::gemm::Kernel for Requant<'_> {
    #[inline(always)]
    fn run(self) {
        for r in 0..self.rows {
            let m = self.m(r);
            let (acc, out) = (&self.acc[r * CHUNK..], &mut self.out[r * self.plane..]);
            for &(from, to, len) in self.segs {
                requant_portable(
                    &acc[from..][..len],
                    &mut out[to..][..len],
                    m,
                    [self.bias[r], self.zp, self.lo, self.hi],
                );
            }
        }
    }
}

/// [`Requant`]'s loop, its slices as arguments so that LLVM knows `out`
/// and `acc` do not alias (struct fields lose that) and vectorises it.
#[inline(always)]
pub(crate) fn requant_portable(
    acc: &[i32],
    out: &mut [i8],
    m: Multiplier,
    [bias, zp, lo, hi]: [i32; 4],
) {
    if m.shift <= 0 && (-128..=127).contains(&zp) {
        // A multiplier below 1 (every importer-made one): the product
        // shifted by at least 31 fits i32, so `apply`'s clamp is a no-op,
        // and pre-clamping to ±2^16 keeps `+ zp` from overflowing without
        // changing an int8 result. All in 32-bit lanes but the product.
        let total = 31 - m.shift.max(-32);
        let (mm, round) = (i64::from(m.mantissa), 1i64 << (total - 1));
        for (o, &a) in out.iter_mut().zip(acc) {
            let v = ((i64::from(a.wrapping_add(bias)) * mm).wrapping_add(round) >> total) as i32;
            *o = (v.clamp(-65536, 65536) + zp).max(lo).min(hi) as i8;
        }
        return;
    }
    for (o, &a) in out.iter_mut().zip(acc) {
        let v = m.apply(a.wrapping_add(bias)).saturating_add(zp);
        *o = v.max(lo).min(hi) as i8;
    }
}

impl QOut {
    /// The requantization of a tile of `rows` output channels from `c0`
    /// (`out` their planes of `plane` bytes), `segs` of each row of `acc`.
    #[allow(clippy::too_many_arguments, reason = "the tile's operands")]
    pub(crate) fn requant<'a>(
        &self,
        acc: &'a [i32],
        out: &'a mut [i8],
        plane: usize,
        segs: &'a [(usize, usize, usize)],
        requant: &'a [[i32; 2]],
        c0: usize,
        fold: &'a [i32],
    ) -> Requant<'a> {
        let rows = fold.len().min(MR);
        let requant = match requant.len() {
            1 => requant,
            _ => &requant[c0..][..rows],
        };
        Requant {
            acc,
            out,
            plane,
            rows,
            segs,
            requant,
            bias: &fold[..rows],
            zp: self.y_zp,
            lo: self.act_min.clamp(-128, 127),
            hi: self.act_max.clamp(-128, 127),
        }
    }
}

/// Which tile kernel runs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Isa {
    /// Portable loops, compiled for the engine's vector unit.
    Portable(crate::gemm::Engine),
    /// VNNI tiles; the engine requantizes.
    #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
    Vnni(crate::simd_vnni::Vnni, crate::gemm::Engine),
}

impl Isa {
    /// The fastest this CPU runs.
    pub(crate) fn detect() -> Isa {
        #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
        if let Some(v) = crate::simd_vnni::Vnni::detect() {
            return Isa::Vnni(v, crate::gemm::Engine::detect());
        }
        Isa::Portable(crate::gemm::Engine::detect())
    }

    /// Every path this CPU can run (tests check each).
    #[cfg(test)]
    pub(crate) fn all() -> std::vec::Vec<Isa> {
        use crate::gemm::Engine;
        let mut v = std::vec![Isa::Portable(Engine::portable())];
        #[cfg(target_arch = "x86_64")]
        {
            v.extend(Engine::simd().into_iter().map(Isa::Portable));
            v.extend(crate::simd_vnni::Vnni::detect().map(|t| Isa::Vnni(t, Engine::detect())));
        }
        v
    }

    /// Runs `r`: by intrinsics on VNNI CPUs when its multiplier is below 1
    /// and its zero point an int8 value (always, for imported models),
    /// else inline.
    #[inline(always)]
    fn requant(self, r: Requant<'_>) {
        match self {
            #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
            Isa::Vnni(v, _)
                if r.requant.iter().all(|&[m, shift]| m >= 0 && shift <= 0)
                    && (-128..=127).contains(&r.zp) =>
            {
                v.requant(r)
            }
            _ => r.run(),
        }
    }

    /// Runs `t`: inline on the portable path (the caller runs inside the
    /// engine's compiled context), by intrinsics on VNNI.
    #[inline(always)]
    fn tile(self, t: Tile<'_>) {
        match self {
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Portable(_) => crate::simd_wasm::qtile(t),
            #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
            Isa::Portable(_) => t.run(),
            #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
            Isa::Vnni(v, _) => v.tile(t),
        }
    }
}

/// Lays out this group's `cg` input planes of `x` as channel words (see
/// the module docs): padding holds `zp`, channels past `cg` hold 0 or
/// 0x80 (their weights are 0), the slack after the planes 0. Rows and columns of
/// phases no tap reads are skipped.
#[inline(always)]
fn pack_input(p: &Conv2d, g: &Geo, zp: i32, x: &[i8], out: &mut [u32]) {
    /// Columns turned into words at a time.
    const BLOCK: usize = 256;
    /// Rows of the channels past `cg` in a group's last word (their weights
    /// are 0, so what they hold adds nothing).
    const ZEROS: [i8; BLOCK] = [0; BLOCK];
    let cg = p.c / p.group;
    let (h, w) = (p.h, p.w);
    let [sh, sw] = p.stride;
    let pad = u32::from((zp as i8 as u8) ^ 0x80);
    let planes = g.c4 * g.cstride;
    let plane_len = g.hq * g.wq;
    let used = |py: usize, px: usize| g.phases >> (py * sw + px) & 1 != 0;
    // Per column phase and block start: the block's first column of the
    // phase, how many it has and the plane word it lands on (divisions
    // hoisted out of the row loop for the first block; later blocks of
    // rows wider than `BLOCK` compute theirs).
    let phase_cols = |x0: usize, len: usize, px: usize| {
        let j0 = (px + sw - (x0 + p.pad[1]) % sw) % sw;
        let n = len.saturating_sub(j0).div_ceil(sw);
        (j0, n, (x0 + j0 + p.pad[1]) / sw)
    };
    // The block of words and the phases' first columns only exist for
    // strided convolutions (zeroing them costs a small depthwise group
    // more than its packing).
    let (mut tmp_store, mut first_store);
    let (tmp, first): (&mut [u32], &[(usize, usize, usize)]) = match sw {
        1 => (&mut [], &[]),
        _ => {
            tmp_store = [0u32; BLOCK];
            first_store = [(0usize, 0usize, 0usize); 64];
            for (px, c) in first_store.iter_mut().enumerate().take(sw) {
                *c = phase_cols(0, w.min(BLOCK), px);
            }
            (&mut tmp_store, &first_store)
        }
    };
    // Row phases some tap reads.
    let row_used = |py: usize| (0..sw).any(|px| used(py, px));
    for ci4 in 0..g.c4 {
        let lanes = (cg - ci4 * 4).min(4);
        let word = (0..lanes).fold(0u32, |a, t| a | pad << (8 * t));
        let dst = &mut out[ci4 * g.cstride..][..g.cstride];
        for (ph, plane) in dst.chunks_exact_mut(plane_len.max(1)).enumerate() {
            if g.phases >> ph & 1 != 0 {
                plane.fill(word);
            }
        }
        let chans = &x[ci4 * 4 * h * w..][..lanes * h * w];
        if sh == 1 && sw == 1 && p.pad[1] == 0 && p.pad[3] == 0 && h * w <= BLOCK {
            // No column padding at unit stride: the plane's rows are
            // contiguous, so the whole plane is one run of words (a
            // pointwise layer over a [T, 1] map is not T one-word rows).
            let n = h * w;
            let row = |t: usize| match t < lanes {
                true => &chans[t * n..][..n],
                false => &ZEROS[..n],
            };
            words4(
                [row(0), row(1), row(2), row(3)],
                &mut dst[p.pad[0] * w..][..n],
            );
            continue;
        }
        // Padded row `iy + pad` is row `qy` of row phase `py`.
        let (mut py, mut qy) = (p.pad[0] % sh, p.pad[0] / sh);
        for iy in 0..h {
            if !row_used(py) {
                py += 1;
                if py == sh {
                    (py, qy) = (0, qy + 1);
                }
                continue;
            }
            let rows = |x0: usize, len: usize| {
                let row = |t: usize| match t < lanes {
                    true => &chans[(t * h + iy) * w + x0..][..len],
                    false => &ZEROS[..len],
                };
                [row(0), row(1), row(2), row(3)]
            };
            for x0 in (0..w).step_by(BLOCK) {
                let len = (w - x0).min(BLOCK);
                if sw == 1 {
                    // Straight into the plane row, vectorised.
                    let at = py * plane_len + qy * g.wq + x0 + p.pad[1];
                    words4(rows(x0, len), &mut dst[at..][..len]);
                    continue;
                }
                // The block's words once, then each used column phase's
                // every `sw`-th one.
                words4(rows(x0, len), &mut tmp[..len]);
                for px in 0..sw {
                    let (j0, n, col) = match x0 {
                        0 => first[px],
                        _ => phase_cols(x0, len, px),
                    };
                    if n == 0 || !used(py, px) {
                        continue;
                    }
                    let at = (py * sw + px) * plane_len + qy * g.wq + col;
                    every_nth(&tmp[j0..len], sw, &mut dst[at..][..n]);
                }
            }
            py += 1;
            if py == sh {
                (py, qy) = (0, qy + 1);
            }
        }
    }
    out[planes..g.input_words].fill(0);
}

/// `d[k] = s[k · n]` (pairs read whole for `n = 2`, which vectorises).
#[inline(always)]
fn every_nth(s: &[u32], n: usize, d: &mut [u32]) {
    if n == 2 {
        let (pairs, rest) = s.split_at(s.len() & !1);
        let (whole, tail) = d.split_at_mut(pairs.len() / 2);
        for (d, s) in whole.iter_mut().zip(pairs.chunks_exact(2)) {
            *d = s[0];
        }
        if let (Some(d), Some(&s)) = (tail.first_mut(), rest.first()) {
            *d = s;
        }
        return;
    }
    for (d, &s) in d.iter_mut().zip(s.iter().step_by(n)) {
        *d = s;
    }
}

/// `d[i]` = the word of `rows[0..4][i]` (bytes `x ^ 0x80`). A function of
/// its own so that LLVM sees `d` apart from the rows and vectorises.
#[inline(always)]
fn words4(rows: [&[i8]; 4], d: &mut [u32]) {
    let [a, b, c, e] = rows;
    let byte = |v: &i8| u32::from(*v as u8);
    for ((((d, a), b), c), e) in d.iter_mut().zip(a).zip(b).zip(c).zip(e) {
        *d = (byte(a) | byte(b) << 8 | byte(c) << 16 | byte(e) << 24) ^ 0x8080_8080;
    }
}

/// Packs this group's weights (`[mg, cg, kh, kw]`) as channel words per
/// tap (`a`, `mg` rows of `taps · c4`) and folds `-(128 + zp) · Σ w` into
/// each row's bias (`fold`).
#[inline(always)]
fn pack_weights(
    g: &Geo,
    cg: usize,
    zp: i32,
    w: &[i8],
    bias: Option<&[i32]>,
    a: &mut [u32],
    fold: &mut [i32],
) {
    let (taps, k4) = (g.taps, g.k4());
    for (oc, ((wr, ar), f)) in w
        .chunks_exact((cg * taps).max(1))
        .zip(a.chunks_exact_mut(k4.max(1)))
        .zip(fold.iter_mut())
        .enumerate()
    {
        let b = bias.map_or(0, |b| b[oc]);
        ar.fill(0);
        let mut sum = 0i32;
        for (c, wc) in wr.chunks_exact(taps.max(1)).enumerate() {
            let (ci4, shift) = (c / 4, 8 * (c % 4));
            for (t, &v) in wc.iter().enumerate() {
                ar[t * g.c4 + ci4] |= u32::from(v as u8) << shift;
                sum = sum.wrapping_add(i32::from(v));
            }
        }
        *f = folded_bias(b, zp, sum);
    }
}

/// A row's bias with `-(128 + zp) · Σ w` folded in (the words hold `x +
/// 128`, see the module docs), wrapping as the sums do.
#[inline(always)]
fn folded_bias(bias: i32, zp: i32, weight_sum: i32) -> i32 {
    bias.wrapping_sub((128 + zp).wrapping_mul(weight_sum))
}

/// [`pack_weights`] for [`Weights::Diagonal`]: `w` holds one filter of
/// `taps` weights per output channel of the group (`mg <= 4`, one channel
/// word, `c4 = 1`), each placed in its own channel's byte.
#[inline(always)]
fn pack_diagonal(
    g: &Geo,
    zp: i32,
    w: &[i8],
    bias: Option<&[i32]>,
    a: &mut [u32],
    fold: &mut [i32],
) {
    let taps = g.taps;
    for (oc, ((wr, ar), f)) in w
        .chunks_exact(taps.max(1))
        .zip(a.chunks_exact_mut(taps.max(1)))
        .zip(fold.iter_mut())
        .enumerate()
    {
        let mut sum = 0i32;
        for (d, &v) in ar.iter_mut().zip(wr) {
            *d = u32::from(v as u8) << (8 * (oc % 4));
            sum = sum.wrapping_add(i32::from(v));
        }
        let b = bias.map_or(0, |b| b[oc]);
        *f = folded_bias(b, zp, sum);
    }
}

/// Packs all groups' weights of `p` ahead of time into `packed`
/// ([`Geo::packed_len`] bytes) and `fold` (`m` values): what
/// [`Weights::Packed`] takes.
pub(crate) fn pack_conv_weights(
    p: &Conv2d,
    geo: &Geo,
    x_zp: i32,
    w: &[i8],
    bias: Option<&[i32]>,
    packed: &mut [i8],
    fold: &mut [i32],
) {
    let (cg, k4) = (p.c / p.group, geo.k4());
    let packed = &mut packed[..p.m * k4 * 4];
    packed.fill(0);
    for (oc, (wr, dst)) in w
        .chunks_exact((cg * geo.taps).max(1))
        .zip(packed.chunks_exact_mut((k4 * 4).max(1)))
        .take(p.m)
        .enumerate()
    {
        let mut sum = 0i32;
        for (c, wc) in wr.chunks_exact(geo.taps.max(1)).enumerate() {
            for (t, &v) in wc.iter().enumerate() {
                // Byte `c % 4` of word `(tap, c / 4)`, little-endian.
                dst[(t * geo.c4 + c / 4) * 4 + c % 4] = v;
                sum = sum.wrapping_add(i32::from(v));
            }
        }
        let b = bias.map_or(0, |b| b[oc]);
        fold[oc] = folded_bias(b, x_zp, sum);
    }
}

/// The direct int8 convolution (see the module docs). `x_zp` must be an
/// int8 value and `geo` [`Geo::new`] of `p`; `scratch` holds
/// [`Geo::scratch_words`]. The whole op runs inside one call compiled for
/// the engine's instruction set, so its small loops inline there.
#[allow(clippy::too_many_arguments, reason = "the op's operands")]
pub(crate) fn conv2d(
    isa: Isa,
    p: &Conv2d,
    geo: &Geo,
    q: &QOut,
    x: &[i8],
    weights: Weights<'_>,
    requant: &[[i32; 2]],
    y: &mut [i8],
    scratch: &mut [u32],
) {
    let job = ConvJob {
        isa,
        p,
        geo,
        q,
        x,
        weights,
        requant,
        y,
        scratch,
    };
    match isa {
        Isa::Portable(e) => e.run(job),
        #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
        Isa::Vnni(_, e) => e.run(job),
    }
}

/// The operands of [`conv2d`].
struct ConvJob<'a> {
    isa: Isa,
    p: &'a Conv2d,
    geo: &'a Geo,
    q: &'a QOut,
    x: &'a [i8],
    weights: Weights<'a>,
    requant: &'a [[i32; 2]],
    y: &'a mut [i8],
    scratch: &'a mut [u32],
}

/// The weights of [`conv2d`]: as the op stores them (packed per call), or
/// packed ahead of time by [`pack_conv_weights`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Weights<'a> {
    /// `[m, cg, kh, kw]` and the optional bias.
    Raw(&'a [i8], Option<&'a [i32]>),
    /// A depthwise filter `[m, 1, kh, kw]` run as groups of four channels
    /// (`cg = mg = 4`): output channel `oc` of a group weighs only its own
    /// input channel, byte `oc` of each word.
    Diagonal(&'a [i8], Option<&'a [i32]>),
    /// Packed words (`m` rows of `taps · c4`) and the folded bias.
    Packed(&'a [i8], &'a [i32]),
}

impl crate::gemm::Kernel for ConvJob<'_> {
    #[inline(always)]
    fn run(self) {
        let ConvJob {
            isa,
            p,
            geo,
            q,
            x,
            weights,
            requant,
            y,
            scratch,
        } = self;
        let (cg, mg) = (p.c / p.group, p.m / p.group);
        let k4 = geo.k4();
        let (xin, rest) = scratch.split_at_mut(geo.input_words);
        let (taps, rest) = rest.split_at_mut(geo.taps);
        let (acc, rest) = rest.split_at_mut(MR * CHUNK);
        let acc: &mut [i32] = bytemuck::cast_slice_mut(acc);
        let own = !matches!(weights, Weights::Packed(..));
        let (own_a, rest) = rest.split_at_mut(if own { mg * k4 } else { 0 });
        let own_fold: &mut [i32] = bytemuck::cast_slice_mut(&mut rest[..if own { mg } else { 0 }]);
        for r in 0..p.kh {
            for s in 0..p.kw {
                taps[r * p.kw + s] = geo.tap(p, r, s) as u32;
            }
        }
        // Positions: one flat run over the planes whose output rows are
        // `rs` positions apart.
        let rs = geo.wq;
        let plane = p.oh * p.ow;
        let mut segs = [(0usize, 0usize, 0usize); CHUNK];
        for gi in 0..p.group {
            let (a, fold): (&[u8], &[i32]) = match weights {
                Weights::Raw(w, bias) => {
                    let wg = &w[gi * mg * cg * geo.taps..][..mg * cg * geo.taps];
                    let bg = bias.map(|b| &b[gi * mg..][..mg]);
                    pack_weights(geo, cg, q.x_zp, wg, bg, own_a, own_fold);
                    (bytemuck::cast_slice(&*own_a), &*own_fold)
                }
                Weights::Diagonal(w, bias) => {
                    let wg = &w[gi * mg * geo.taps..][..mg * geo.taps];
                    let bg = bias.map(|b| &b[gi * mg..][..mg]);
                    pack_diagonal(geo, q.x_zp, wg, bg, own_a, own_fold);
                    (bytemuck::cast_slice(&*own_a), &*own_fold)
                }
                Weights::Packed(a, fold) => (
                    bytemuck::cast_slice(&a[gi * mg * k4 * 4..][..mg * k4 * 4]),
                    &fold[gi * mg..][..mg],
                ),
            };
            for b in 0..p.n {
                let xg = &x[(b * p.c + gi * cg) * p.h * p.w..][..cg * p.h * p.w];
                pack_input(p, geo, q.x_zp, xg, xin);
                let yb = &mut y[(b * p.m + gi * mg) * plane..][..mg * plane];
                let count = (p.oh - 1) * rs + p.ow;
                for start in (0..count).step_by(CHUNK) {
                    let lanes = (count - start).min(CHUNK);
                    // The chunk's valid columns per output row, as
                    // (offset in the chunk, output index, length): the
                    // same for every channel.
                    let mut nsegs = 0;
                    if rs == p.ow {
                        // Positions are output indices.
                        segs[0] = (0, start, lanes);
                        nsegs = 1;
                    } else {
                        let (mut oy, mut ox) = (start / rs, start % rs);
                        let mut pos = start;
                        while pos < start + lanes {
                            if ox >= p.ow {
                                pos += rs - ox;
                                (oy, ox) = (oy + 1, 0);
                                continue;
                            }
                            let len = (p.ow - ox).min(start + lanes - pos);
                            segs[nsegs] = (pos - start, oy * p.ow + ox, len);
                            nsegs += 1;
                            pos += len;
                            ox += len;
                        }
                    }
                    for r0 in (0..mg).step_by(MR) {
                        let rows = (mg - r0).min(MR);
                        isa.tile(Tile {
                            a: &a[r0 * k4 * 4..][..rows * k4 * 4],
                            taps,
                            c4: geo.c4,
                            cstride: geo.cstride,
                            b: &xin[start..],
                            rows,
                            lanes,
                            acc,
                        });
                        isa.requant(q.requant(
                            acc,
                            &mut yb[r0 * plane..][..rows * plane],
                            plane,
                            &segs[..nsegs],
                            requant,
                            gi * mg + r0,
                            &fold[r0..][..rows],
                        ));
                    }
                }
            }
        }
    }
}

/// Most taps the depthwise kernel takes (`kh · kw`); larger filters run
/// the reference.
pub(crate) const MAX_DW_TAPS: usize = 64;

/// One output position of a depthwise convolution, all `c = acc.len()`
/// channels: `acc[ch] = Σ_t x[taps[t] + ch] · w[t · c + ch]`. Sixteen
/// channels at a time are summed over every tap in registers (a sum kept
/// in memory between taps stalls on store forwarding); the slices are
/// arguments so that LLVM knows they do not alias and vectorises.
#[inline(always)]
fn dw_position(acc: &mut [i32], x: &[i16], taps: &[usize], w: &[i16]) {
    const V: usize = 16;
    let c = acc.len();
    let mut c0 = 0;
    while c0 < c {
        let n = (c - c0).min(V);
        let mut a = [0i32; V];
        if n == V {
            for (t, &off) in taps.iter().enumerate() {
                let xs: &[i16; V] = x[off + c0..][..V].try_into().expect("16 lanes");
                let ws: &[i16; V] = w[t * c + c0..][..V].try_into().expect("16 lanes");
                for j in 0..V {
                    a[j] = a[j].wrapping_add(i32::from(xs[j]) * i32::from(ws[j]));
                }
            }
            let out: &mut [i32; V] = (&mut acc[c0..][..V]).try_into().expect("16 lanes");
            *out = a;
        } else {
            for (t, &off) in taps.iter().enumerate() {
                let (xs, ws) = (&x[off + c0..][..n], &w[t * c + c0..][..n]);
                for ((a, &v), &wv) in a.iter_mut().zip(xs).zip(ws) {
                    *a = a.wrapping_add(i32::from(v) * i32::from(wv));
                }
            }
            acc[c0..][..n].copy_from_slice(&a[..n]);
        }
        c0 += n;
    }
}

/// Requantizes one position's channel sums with per-channel multipliers
/// (`[mantissas, shifts, biases]`) into `line`; arguments for the same
/// reason as [`dw_mac`].
#[inline(always)]
fn dw_requant(
    acc: &[i32],
    [mant, shift, bias]: [&[i32]; 3],
    line: &mut [i8],
    [zp, lo, hi]: [i32; 3],
) {
    let lanes = acc.iter().zip(mant).zip(shift).zip(bias);
    for (o, (((&a, &mantissa), &shift), &b)) in line.iter_mut().zip(lanes) {
        let v = Multiplier { mantissa, shift }
            .apply(a.wrapping_add(b))
            .saturating_add(zp);
        *o = v.max(lo).min(hi) as i8;
    }
}

/// Lengths (4-byte words) of [`depthwise`]'s scratch: the padded input
/// channels-last as `i16` (`x - zp`), the weights tap-major as `i16`, the
/// per-channel requantization (mantissa, shift, bias), the sums of one
/// position and its output bytes.
fn depthwise_parts(p: &Conv2d, strip: bool) -> [usize; 5] {
    let (hp, wp) = (p.h + p.pad[0] + p.pad[2], p.w + p.pad[1] + p.pad[3]);
    let c = p.c;
    let rows = if strip { p.kh } else { hp };
    [
        (rows * wp * c).div_ceil(2),
        (p.kh * p.kw * c).div_ceil(2),
        3 * c,
        c,
        c.div_ceil(4),
    ]
}

/// Scratch words of [`depthwise`] with the whole padded input copied once.
pub(crate) fn depthwise_scratch_words(p: &Conv2d) -> usize {
    depthwise_parts(p, false).iter().sum()
}

/// Scratch words of [`depthwise`]'s lean path, which copies only the `kh`
/// input rows of one output row at a time (for microcontroller arenas:
/// more copying, a fraction of the memory).
pub(crate) fn depthwise_strip_words(p: &Conv2d) -> usize {
    depthwise_parts(p, true).iter().sum()
}

/// Depthwise int8 convolution (`group == c == m`), vectorised across
/// channels: the input is copied channels-last as `x - zp` (`i16`, padding
/// 0), and each output position sums `w · x` over its taps for all channels
/// at once, then requantizes them together (per-channel multipliers in
/// lanes) and scatters the bytes back to NCHW. On the small maps of edge
/// models (5- or 1-wide, dozens of channels) that beats any per-channel
/// plane loop. Exact `i32` sums, so the reference's bytes. Runs inside one
/// call compiled for the engine's instruction set. With less scratch than
/// [`depthwise_scratch_words`] (at least [`depthwise_strip_words`]) it
/// copies only the rows each output row reads, refilled per output row.
#[allow(clippy::too_many_arguments, reason = "the op's operands")]
pub(crate) fn depthwise(
    isa: Isa,
    p: &Conv2d,
    q: &QOut,
    x: &[i8],
    w: &[i8],
    bias: Option<&[i32]>,
    requant: &[[i32; 2]],
    y: &mut [i8],
    scratch: &mut [u32],
) {
    let job = Depthwise {
        isa,
        strip: scratch.len() < depthwise_scratch_words(p),
        p,
        q,
        x,
        w,
        bias,
        requant,
        y,
        scratch,
    };
    match isa {
        Isa::Portable(e) => e.run(job),
        #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
        Isa::Vnni(_, e) => e.run(job),
    }
}

/// The operands of [`depthwise`].
struct Depthwise<'a> {
    isa: Isa,
    /// Copy `kh` rows per output row instead of the whole input once.
    strip: bool,
    p: &'a Conv2d,
    q: &'a QOut,
    x: &'a [i8],
    w: &'a [i8],
    bias: Option<&'a [i32]>,
    requant: &'a [[i32; 2]],
    y: &'a mut [i8],
    scratch: &'a mut [u32],
}

impl Kernel for Depthwise<'_> {
    #[inline(always)]
    fn run(self) {
        let Depthwise {
            isa,
            strip,
            p,
            q,
            x,
            w,
            bias,
            requant,
            y,
            scratch,
        } = self;
        let [xt_len, wt_len, par_len, acc_len, line_len] = depthwise_parts(p, strip);
        let (xt, rest) = scratch.split_at_mut(xt_len);
        let (wt, rest) = rest.split_at_mut(wt_len);
        let (par, rest) = rest.split_at_mut(par_len);
        let (acc, rest) = rest.split_at_mut(acc_len);
        let c = p.c;
        let hp = p.h + p.pad[0] + p.pad[2];
        let (wp, taps, plane) = (p.w + p.pad[1] + p.pad[3], p.kh * p.kw, p.oh * p.ow);
        let rows = if strip { p.kh } else { hp };
        let xt: &mut [i16] = &mut bytemuck::cast_slice_mut(xt)[..rows * wp * c];
        let wt: &mut [i16] = &mut bytemuck::cast_slice_mut(wt)[..p.kh * p.kw * c];
        let par: &mut [i32] = bytemuck::cast_slice_mut(par);
        let (mant, rest_par) = par.split_at_mut(c);
        let (shift, bsum) = rest_par.split_at_mut(c);
        let acc: &mut [i32] = bytemuck::cast_slice_mut(acc);
        let line: &mut [i8] = &mut bytemuck::cast_slice_mut(&mut rest[..line_len])[..c];
        let [sh, sw] = p.stride;
        let [dh, dw] = p.dilation;
        for ch in 0..c {
            for t in 0..taps {
                wt[t * c + ch] = i16::from(w[ch * taps + t]);
            }
            let [m, s] = requant[if requant.len() == 1 { 0 } else { ch }];
            (mant[ch], shift[ch]) = (m, s);
            bsum[ch] = bias.map_or(0, |b| b[ch]);
        }
        let (lo, hi) = (q.act_min.clamp(-128, 127), q.act_max.clamp(-128, 127));
        // Each tap's offset in `xt` from a position's first tap (in a
        // strip, tap row r sits in slot r).
        let row_step = if strip { wp } else { dh * wp };
        let mut taps_at = [0usize; MAX_DW_TAPS];
        for r in 0..p.kh {
            for s in 0..p.kw {
                taps_at[r * p.kw + s] = (r * row_step + s * dw) * c;
            }
        }
        // Input row `iy` (unpadded) into `xt` row `slot`, as `x - zp`.
        let put_row = |xt: &mut [i16], xb: &[i8], iy: usize, slot: usize| {
            let base = slot * wp + p.pad[1];
            for ch in 0..c {
                let row = &xb[(ch * p.h + iy) * p.w..][..p.w];
                for (ix, &v) in row.iter().enumerate() {
                    xt[(base + ix) * c + ch] = (i32::from(v) - q.x_zp) as i16;
                }
            }
        };
        for b in 0..p.n {
            let xb = &x[b * c * p.h * p.w..][..c * p.h * p.w];
            if !strip {
                xt.fill(0);
                for iy in 0..p.h {
                    put_row(xt, xb, iy, iy + p.pad[0]);
                }
            }
            let yb = &mut y[b * c * plane..][..c * plane];
            for oy in 0..p.oh {
                if strip {
                    xt.fill(0);
                    for r in 0..p.kh {
                        // Padded row oy·sh + r·dh; rows in the padding stay 0.
                        let py = oy * sh + r * dh;
                        if let Some(iy) = py.checked_sub(p.pad[0]).filter(|&iy| iy < p.h) {
                            put_row(xt, xb, iy, r);
                        }
                    }
                }
                for ox in 0..p.ow {
                    let at = if strip {
                        ox * sw * c
                    } else {
                        ((oy * sh) * wp + ox * sw) * c
                    };
                    match isa {
                        #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
                        Isa::Vnni(v, _) => v.dw_position(acc, &xt[at..], &taps_at[..taps], wt),
                        _ => dw_position(acc, &xt[at..], &taps_at[..taps], wt),
                    }
                    dw_requant(acc, [mant, shift, bsum], line, [q.y_zp, lo, hi]);
                    let pos = oy * p.ow + ox;
                    for (ch, &v) in line.iter().enumerate() {
                        yb[ch * plane + pos] = v;
                    }
                }
            }
        }
    }
}
