//! AVX-512 VNNI kernels for the int8 paths: the register tile of the
//! direct int8 convolution ([`crate::qconv::Tile`]) and the int8 matrix ×
//! vector product of fully connected layers. VPDPBUSD multiplies 64
//! unsigned bytes by 64 signed bytes and adds each group of four products
//! to a 32-bit lane, wrapping, which is exactly the portable loops' integer
//! arithmetic: the bytes out are the same.
//!
//! The only way in is a [`Vnni`] token, built by [`Vnni::detect`] after the
//! CPU reported AVX-512 F, BW and VNNI. The safe entry points check every
//! index the kernels touch against the slice lengths first.
#![allow(
    unsafe_code,
    reason = "AVX-512 intrinsics need raw-pointer loads/stores and calls into \
              #[target_feature] functions; every block carries a SAFETY comment"
)]
#![allow(
    clippy::needless_range_loop,
    reason = "register tiles index fixed arrays"
)]

use crate::qconv::{CHUNK, LANES, MR, Requant, Tile};
use crate::qfc::{Blocks, UNITS};
use core::arch::x86_64::{
    __m512i, _mm256_maskz_loadu_epi16, _mm512_add_epi32, _mm512_add_epi64, _mm512_cvtepu16_epi32,
    _mm512_dpbusd_epi32, _mm512_loadu_si512, _mm512_madd_epi16, _mm512_mask_blend_epi32,
    _mm512_mask_cvtepi32_storeu_epi8, _mm512_mask_storeu_epi32, _mm512_maskz_loadu_epi8,
    _mm512_maskz_loadu_epi32, _mm512_max_epi32, _mm512_min_epi32, _mm512_mul_epi32,
    _mm512_reduce_add_epi32, _mm512_set1_epi8, _mm512_set1_epi32, _mm512_set1_epi64,
    _mm512_setzero_si512, _mm512_shuffle_epi32, _mm512_slli_epi64, _mm512_srav_epi32,
    _mm512_srav_epi64, _mm512_storeu_si512,
};

/// Proof that the CPU runs AVX-512 F, BW and VNNI.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vnni(());

impl Vnni {
    /// The token, when the CPU has the features and `KILN_ISA` (see
    /// [`crate::simd_x86`]) does not cap the instruction set below
    /// AVX-512 VNNI (`avx2`, `avx512` or `portable`).
    pub(crate) fn detect() -> Option<Vnni> {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let has = *HAS.get_or_init(|| {
            let capped = std::env::var("KILN_ISA")
                .is_ok_and(|v| matches!(v.as_str(), "portable" | "avx2" | "avx512"));
            !capped
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vnni")
        });
        has.then_some(Vnni(()))
    }

    /// Runs `t` (same sums as its portable `run`).
    ///
    /// # Panics
    /// If a read or write would leave its slice.
    pub(crate) fn tile(self, t: Tile<'_>) {
        let k4 = t.taps.len() * t.c4;
        let vectors = t.lanes.div_ceil(LANES);
        assert!(t.rows >= 1 && t.rows <= MR && (1..=CHUNK / LANES).contains(&vectors));
        assert!(t.a.len() >= t.rows * k4 * 4 && t.acc.len() >= MR * CHUNK);
        if k4 == 0 {
            t.acc.fill(0);
            return;
        }
        let reach = t.taps.iter().map(|&o| o as usize).max().unwrap_or(0)
            + (t.c4 - 1) * t.cstride
            + vectors * LANES;
        assert!(reach <= t.b.len(), "int8 tile reads past its input");
        let (a, b, acc) = (t.a.as_ptr(), t.b.as_ptr(), t.acc.as_mut_ptr());
        macro_rules! go {
            ($r:literal, $v:literal) => {
                // SAFETY: the token proves AVX-512 F/BW/VNNI; the asserts
                // above bound every read (`rows · k4` words (4 bytes each) of `a`, up to
                // `reach` words of `b`) and write (`MR · CHUNK` of `acc`).
                unsafe { tile::<$r, $v>(a, k4, t.taps, t.c4, t.cstride, b, acc) }
            };
        }
        match (t.rows, vectors) {
            (4, 4) => go!(4, 4),
            (4, 3) => go!(4, 3),
            (4, 2) => go!(4, 2),
            (4, 1) => go!(4, 1),
            (3, 4) => go!(3, 4),
            (3, 3) => go!(3, 3),
            (3, 2) => go!(3, 2),
            (3, 1) => go!(3, 1),
            (2, 4) => go!(2, 4),
            (2, 3) => go!(2, 3),
            (2, 2) => go!(2, 2),
            (2, 1) => go!(2, 1),
            (1, 4) => go!(1, 4),
            (1, 3) => go!(1, 3),
            (1, 2) => go!(1, 2),
            _ => go!(1, 1),
        }
    }

    /// Matrix × vector for fully connected rows: for each of the `units`
    /// rows of `w` (`depth` signed bytes each), `dot[u] = Σ x·w` with `x`
    /// unsigned bytes (`depth` of them, zero-padded to a multiple of 64)
    /// and `sum[u] = Σ w`.
    ///
    /// # Panics
    /// If `x` is shorter than `depth` rounded up to 64, or `w`, `dot` or
    /// `sum` shorter than their shapes.
    pub(crate) fn gemv(
        self,
        x: &[u8],
        w: &[i8],
        depth: usize,
        units: usize,
        dot: &mut [i32],
        sum: &mut [i32],
    ) {
        assert!(x.len() >= depth.div_ceil(64) * 64 && w.len() >= units * depth);
        assert!(dot.len() >= units && sum.len() >= units);
        // SAFETY: the token proves AVX-512 F/BW/VNNI; the asserts bound the
        // reads (`x` to whole 64-byte blocks, `w` row by row with masked
        // tails) and the writes (`units` of `dot` and `sum`).
        unsafe {
            gemv(
                x.as_ptr(),
                w.as_ptr(),
                depth,
                units,
                dot.as_mut_ptr(),
                sum.as_mut_ptr(),
            )
        }
    }
}

impl Vnni {
    /// Runs `r` (the bytes of its portable `run`) when every row's
    /// multiplier is below 1 (`shift <= 0`) and the zero point an int8
    /// value, 16 lanes and all rows at a time: `clamp(clamp(((acc + bias) ·
    /// m + 2^(t-1)) >> t, ±2^16) + zp, lo, hi)`, `t = 31 - shift`.
    ///
    /// # Panics
    /// On a multiplier of 1 or more or a negative mantissa, a zero point or
    /// clamp outside int8, or a segment that leaves a row of `acc` or an
    /// output plane.
    pub(crate) fn requant(self, r: Requant<'_>) {
        let int8 = -128..=127;
        assert!(r.rows <= MR && r.bias.len() >= r.rows);
        // A non-negative mantissa keeps every 64-bit sum below 2^63.
        assert!((0..r.rows).all(|k| r.m(k).shift <= 0 && r.m(k).mantissa >= 0));
        assert!(int8.contains(&r.zp) && int8.contains(&r.lo) && int8.contains(&r.hi));
        let fits = |at: usize, len: usize, n: usize| at.checked_add(len).is_some_and(|e| e <= n);
        assert!(r.acc.len() >= r.rows * CHUNK && r.out.len() >= r.rows * r.plane);
        assert!(
            r.segs
                .iter()
                .all(|&(from, to, len)| fits(from, len, CHUNK) && fits(to, len, r.plane)),
            "requantization segment out of bounds"
        );
        let mut rows = [(0i32, 0i32, 0i32); MR];
        for (k, row) in rows.iter_mut().enumerate().take(r.rows) {
            let m = r.m(k);
            *row = (m.mantissa, 31 - m.shift.max(-32), r.bias[k]);
        }
        // With a total shift of 33 to 55 the zero point rides in the
        // rounding constant (`zp · 2^t` fits with the product in i64, and
        // `|v + zp| < 2^30` needs no guard clamp): 3 of 17 vector µops less.
        let fold = rows[..r.rows]
            .iter()
            .all(|&(_, t, _)| (33..=55).contains(&t));
        let (acc, out) = (r.acc.as_ptr(), r.out.as_mut_ptr());
        let (rows, zlh) = (&rows[..r.rows], [r.zp, r.lo, r.hi]);
        if fold {
            // SAFETY: the token proves AVX-512 F/BW; per row and segment the
            // kernel reads `len` sums from `row · CHUNK + from` and writes
            // `len` bytes from `row · plane + to`, in bounds by the asserts,
            // masked past the last whole vector; every total is in 33..=55.
            unsafe { requant::<true>(acc, out, r.plane, rows, r.segs, zlh) }
        } else {
            // SAFETY: as above, totals in 31..=63 (`shift` in -32..=0).
            unsafe { requant::<false>(acc, out, r.plane, rows, r.segs, zlh) }
        }
    }

    /// One depthwise output position, all `c = acc.len()` channels:
    /// `acc[ch] = Σ_t x[taps[t] + ch] · w[t · c + ch]` (what
    /// `qconv::dw_position` sums), sixteen channels per register over every
    /// tap: each `i16` widened into the low half of a 32-bit lane, so that
    /// VPMADDWD's pair sum is the one product.
    ///
    /// # Panics
    /// If a tap reads past `x` or `w` is shorter than `taps.len() · c`.
    pub(crate) fn dw_position(self, acc: &mut [i32], x: &[i16], taps: &[usize], w: &[i16]) {
        let c = acc.len();
        let reach = taps.iter().map(|&t| t.checked_add(c)).max().flatten();
        assert!(
            reach.is_none_or(|r| r <= x.len()),
            "depthwise tap reads past its input"
        );
        assert!(taps.len().checked_mul(c).is_some_and(|n| n <= w.len()));
        // SAFETY: the token proves AVX-512 F/BW; every read stays inside
        // `x` (each tap's `c` lanes, by the first assert) and `w` (`taps ·
        // c`, by the second), the writes inside `acc`; tails are masked.
        unsafe { dw_position(acc.as_mut_ptr(), c, x.as_ptr(), taps, w.as_ptr()) }
    }

    /// Runs `t` (same sums as its portable `run`).
    ///
    /// # Panics
    /// If `t.blocks` is not 1 to 4 or `t.w` is shorter than its blocks.
    pub(crate) fn fc_blocks(self, t: Blocks<'_>) {
        let k4 = t.x.len();
        assert!((1..=4).contains(&t.blocks) && t.w.len() >= t.blocks * k4 * UNITS * 4);
        let (x, w, acc) = (t.x.as_ptr(), t.w.as_ptr(), t.acc.as_mut_ptr());
        let blocks = t.blocks;
        macro_rules! go {
            ($v:literal) => {
                // SAFETY: the token proves AVX-512 F/BW/VNNI; the assert
                // bounds the reads of `w` (`blocks · k4` 64-byte words), `x`
                // has `k4` words and `acc` 64 lanes (its type).
                unsafe { fc_blocks::<$v>(x, k4, w, acc) }
            };
        }
        match blocks {
            4 => go!(4),
            3 => go!(3),
            2 => go!(2),
            _ => go!(1),
        }
    }
}

/// [`Vnni::requant`]'s loop: the 64-bit products of even and odd lanes
/// (VPMULDQ), rounded and shifted, their low halves merged back; the rows
/// are independent chains, interleaved.
///
/// With `FOLD` the zero point is added through the rounding constant.
///
/// # Safety
/// AVX-512 F and BW; for row `k` (`rows[k]` = mantissa, total shift in
/// 31..=63, or 33..=55 with `FOLD`, bias) and each segment `(from, to,
/// len)`, `acc` readable at `k · CHUNK + from..+ len` and `out` writable
/// at `k · plane + to..+ len`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn requant<const FOLD: bool>(
    acc: *const i32,
    out: *mut i8,
    plane: usize,
    rows: &[(i32, i32, i32)],
    segs: &[(usize, usize, usize)],
    [zp, lo, hi]: [i32; 3],
) {
    let mut consts = [[_mm512_setzero_si512(); 4]; MR];
    for (c, &(mantissa, total, bias)) in consts.iter_mut().zip(rows) {
        *c = [
            _mm512_set1_epi64(i64::from(mantissa)),
            _mm512_set1_epi64(match FOLD {
                true => (1i64 << (total - 1)) + (i64::from(zp) << total),
                false => 1i64 << (total - 1),
            }),
            // One count per lane (VPSRAV: one µop; the xmm-count form is
            // two): `t - 32` on the high 32-bit halves with `FOLD`.
            match FOLD {
                true => _mm512_set1_epi32(total - 32),
                false => _mm512_set1_epi64(i64::from(total)),
            },
            _mm512_set1_epi32(bias),
        ];
    }
    let (guard_lo, guard_hi) = (_mm512_set1_epi32(-65536), _mm512_set1_epi32(65536));
    let (vzp, vlo, vhi) = (
        _mm512_set1_epi32(zp),
        _mm512_set1_epi32(lo),
        _mm512_set1_epi32(hi),
    );
    for &(from, to, n) in segs {
        let mut i = 0;
        while i < n {
            let len = (n - i).min(16);
            let k = (u32::MAX >> (32 - len)) as u16;
            for (row, &[vm, round, count, vbias]) in consts[..rows.len()].iter().enumerate() {
                // SAFETY: lanes `i..i + len` of the segment are in bounds
                // (the caller's contract); the mask keeps the rest untouched.
                let a = unsafe { _mm512_maskz_loadu_epi32(k, acc.add(row * CHUNK + from + i)) };
                let a = _mm512_add_epi32(a, vbias);
                // Odd lanes moved to even places (VPMULDQ reads those).
                let odd = _mm512_shuffle_epi32::<0xF5>(a);
                let even = _mm512_add_epi64(_mm512_mul_epi32(a, vm), round);
                let odd = _mm512_add_epi64(_mm512_mul_epi32(odd, vm), round);
                let v = match FOLD {
                    true => {
                        // `>> t` with t >= 33 is the high halves `>> (t - 32)`:
                        // shuffles and one 32-bit shift (VPMULDQ and the
                        // shifts share one port on 512-bit vectors).
                        let hi = _mm512_mask_blend_epi32(
                            0xAAAA,
                            _mm512_shuffle_epi32::<0xF5>(even),
                            odd,
                        );
                        _mm512_srav_epi32(hi, count)
                    }
                    false => {
                        let even = _mm512_srav_epi64(even, count);
                        let odd = _mm512_srav_epi64(odd, count);
                        let v = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64::<32>(odd));
                        let v = _mm512_min_epi32(_mm512_max_epi32(v, guard_lo), guard_hi);
                        _mm512_add_epi32(v, vzp)
                    }
                };
                let v = _mm512_min_epi32(_mm512_max_epi32(v, vlo), vhi);
                // SAFETY: as the load.
                unsafe { _mm512_mask_cvtepi32_storeu_epi8(out.add(row * plane + to + i), k, v) };
            }
            i += len;
        }
    }
}

/// [`Vnni::dw_position`]'s loop.
///
/// # Safety
/// AVX-512 F and BW; `acc` writable for `c` lanes, `x` readable at every
/// `taps[t]..taps[t] + c`, `w` for `taps.len() · c`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn dw_position(acc: *mut i32, c: usize, x: *const i16, taps: &[usize], w: *const i16) {
    let mut c0 = 0;
    while c0 < c {
        let n = (c - c0).min(16);
        let k = (u32::MAX >> (32 - n)) as u16;
        let mut a = _mm512_setzero_si512();
        for (t, &off) in taps.iter().enumerate() {
            // SAFETY: lanes `c0..c0 + n` of this tap's row and of its
            // weights are in bounds (the caller's contract), masked after.
            let (xv, wv) = unsafe {
                (
                    _mm256_maskz_loadu_epi16(k, x.add(off + c0)),
                    _mm256_maskz_loadu_epi16(k, w.add(t * c + c0)),
                )
            };
            let p = _mm512_madd_epi16(_mm512_cvtepu16_epi32(xv), _mm512_cvtepu16_epi32(wv));
            a = _mm512_add_epi32(a, p);
        }
        // SAFETY: as the loads.
        unsafe { _mm512_mask_storeu_epi32(acc.add(c0), k, a) };
        c0 += n;
    }
}

/// `V` blocks of 16 units of a packed fully connected layer.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI; `x` must hold `k4` words, `w`
/// `V · k4 · 64` bytes, `acc` `16 · V` lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn fc_blocks<const V: usize>(x: *const u32, k4: usize, w: *const i8, acc: *mut i32) {
    let mut s = [_mm512_setzero_si512(); V];
    for g in 0..k4 {
        // SAFETY: `g < k4` (caller's contract).
        let xb = _mm512_set1_epi32(unsafe { *x.add(g) } as i32);
        for v in 0..V {
            // SAFETY: block `v`, word `g`: inside `V · k4 · 64` bytes.
            let wv = unsafe { _mm512_loadu_si512(w.add((v * k4 + g) * 64).cast::<__m512i>()) };
            s[v] = _mm512_dpbusd_epi32(s[v], xb, wv);
        }
    }
    for v in 0..V {
        // SAFETY: `16·v + 16 <= 16·V` lanes (caller's contract).
        unsafe { _mm512_storeu_si512(acc.add(UNITS * v).cast::<__m512i>(), s[v]) };
    }
}

/// `R` rows × `V` vectors of the direct int8 convolution.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI; `a` must hold `R · k4` words
/// (as bytes, any alignment),
/// `b` every word up to the largest tap plus `(c4 - 1) · cstride + 16·V`,
/// `acc` `MR · CHUNK` lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const R: usize, const V: usize>(
    a: *const u8,
    k4: usize,
    taps: &[u32],
    c4: usize,
    cstride: usize,
    b: *const u32,
    acc: *mut i32,
) {
    let mut s = [[_mm512_setzero_si512(); V]; R];
    for (t, &off) in taps.iter().enumerate() {
        for ci in 0..c4 {
            // SAFETY: within `b`'s checked reach (caller's contract).
            let bp = unsafe { b.add(off as usize + ci * cstride) };
            let mut xv = [_mm512_setzero_si512(); V];
            for v in 0..V {
                // SAFETY: as above; unaligned loads.
                xv[v] = unsafe { _mm512_loadu_si512(bp.add(LANES * v).cast::<__m512i>()) };
            }
            for r in 0..R {
                // SAFETY: word `r · k4 + t · c4 + ci < R · k4` (caller's
                // contract); an unaligned 4-byte read.
                let word = unsafe {
                    a.add((r * k4 + t * c4 + ci) * 4)
                        .cast::<i32>()
                        .read_unaligned()
                };
                let wv = _mm512_set1_epi32(word);
                for v in 0..V {
                    s[r][v] = _mm512_dpbusd_epi32(s[r][v], xv[v], wv);
                }
            }
        }
    }
    for r in 0..R {
        for v in 0..V {
            // SAFETY: `r · CHUNK + 16·v + 16 <= MR · CHUNK` (caller's contract).
            unsafe {
                _mm512_storeu_si512(acc.add(r * CHUNK + LANES * v).cast::<__m512i>(), s[r][v])
            };
        }
    }
}

/// See [`Vnni::gemv`]; four rows of `w` per pass over `x`.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI; `x` must hold `depth` rounded
/// up to 64 bytes, `w` `units · depth`, `dot` and `sum` `units` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn gemv(
    x: *const u8,
    w: *const i8,
    depth: usize,
    units: usize,
    dot: *mut i32,
    sum: *mut i32,
) {
    let ones = _mm512_set1_epi8(1);
    let blocks = depth.div_ceil(64);
    let mut u = 0;
    while u < units {
        let rows = (units - u).min(4);
        let mut d = [_mm512_setzero_si512(); 4];
        let mut t = [_mm512_setzero_si512(); 4];
        for blk in 0..blocks {
            let k = blk * 64;
            let left = depth - k;
            let mask = if left >= 64 {
                u64::MAX
            } else {
                (1u64 << left) - 1
            };
            // SAFETY: `x` holds whole 64-byte blocks (caller's contract).
            let xv = unsafe { _mm512_loadu_si512(x.add(k).cast::<__m512i>()) };
            for r in 0..rows {
                // SAFETY: the mask limits the load to row `u + r`'s
                // remaining `min(64, depth - k)` bytes.
                let wv = unsafe { _mm512_maskz_loadu_epi8(mask, w.add((u + r) * depth + k)) };
                d[r] = _mm512_dpbusd_epi32(d[r], xv, wv);
                t[r] = _mm512_dpbusd_epi32(t[r], ones, wv);
            }
        }
        for r in 0..rows {
            // SAFETY: `u + r < units` (caller's contract).
            unsafe {
                *dot.add(u + r) = _mm512_reduce_add_epi32(d[r]);
                *sum.add(u + r) = _mm512_reduce_add_epi32(t[r]);
            }
        }
        u += rows;
    }
}

#[cfg(test)]
mod tests {
    use super::Vnni;
    use crate::fixed::Multiplier;

    /// The intrinsics requantization gives the portable loop's bytes, on
    /// extreme sums (wrapping bias adds included), every tail length, 1 to
    /// 4 rows and multipliers from 2^-30 to just below 1 (both kernels).
    #[test]
    fn requant_matches_portable_loop() {
        use crate::gemm::Kernel;
        use crate::qconv::{CHUNK, MR, Requant};
        let Some(v) = Vnni::detect() else {
            return;
        };
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for case in 0..400 {
            let n = case % 40;
            let acc: std::vec::Vec<i32> = (0..MR * CHUNK)
                .map(|i| match i % 5 {
                    0 => i32::MAX - (next() % 3) as i32,
                    1 => i32::MIN + (next() % 3) as i32,
                    _ => next() as i32 >> (next() % 24),
                })
                .collect();
            let rows = 1 + case % MR;
            // Totals all in 33..=55 (the zero point folded into the
            // rounding) every other case, else mixed with 31 and 60.
            let reals = match case % 2 {
                0 => [2.3e-4, 0.01, 3e-7, 0.2],
                _ => [1e-9, 2.3e-4, 0.01, 0.999_999],
            };
            let m = reals.map(|r| {
                let m = Multiplier::new(r).unwrap();
                [m.mantissa, m.shift]
            });
            let bias = [0; MR].map(|_| next() as i32 >> (next() % 31));
            let (zp, lo, hi) = (
                (next() % 256) as i32 - 128,
                -128 + (next() % 64) as i32,
                127 - (next() % 64) as i32,
            );
            // Two segments, the second written ahead of the first.
            let half = n / 2;
            let segs = [(half + 3, 0, n - half), (0, n - half + 5, half)];
            let plane = n + 5;
            let mut want = std::vec![0i8; rows * plane];
            let mut got = std::vec![1i8; rows * plane];
            let tile = |out| Requant {
                acc: &acc,
                out,
                plane,
                rows,
                segs: &segs,
                requant: &m[..rows],
                bias: &bias,
                zp,
                lo,
                hi,
            };
            tile(&mut want).run();
            v.requant(tile(&mut got));
            // Bytes no segment writes keep their values.
            let untouched =
                |o: &[i8], b: i8| (0..rows).all(|r| o[r * plane + n - half..][..5] == [b; 5]);
            assert!(untouched(&want, 0) && untouched(&got, 1), "case {case}");
            for r in 0..rows {
                let (w, g) = (&want[r * plane..][..plane], &got[r * plane..][..plane]);
                assert_eq!(g[..n - half], w[..n - half], "case {case} row {r}");
                assert_eq!(g[n - half + 5..], w[n - half + 5..], "case {case} row {r}");
            }
        }
    }
}
