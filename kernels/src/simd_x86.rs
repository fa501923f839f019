//! AVX2 + FMA kernels for x86_64 (skinny and packed GEMM, direct convolution), used only behind runtime feature detection.
//!
//! The only way to reach a kernel is through an [`Avx2Fma`] token, which can
//! only be built by [`Avx2Fma::detect`] after the CPU reported both features.
//! The safe entry points check every index the kernels will touch against the
//! slice lengths before entering the `unsafe` inner loops. [`Avx2Fma::vectorized`]
//! also lets portable code be compiled for AVX2.
#![allow(
    unsafe_code,
    reason = "AVX2/FMA intrinsics need raw-pointer loads/stores and calls into \
              #[target_feature] functions; every block carries a SAFETY comment"
)]
// Iterator adapters are not always inlined into `#[target_feature]` code,
// which would spill the accumulators; the kernels use plain index loops.
#![allow(clippy::needless_range_loop, reason = "see above")]

#[cfg(all(test, not(feature = "std")))]
extern crate std;

use crate::gemm::{MatMut, MatRef, check, pack_panel};
use core::arch::x86_64::{
    __m256, __m256i, __m512, __mmask16, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_movehl_ps,
    _mm_shuffle_ps, _mm256_castps256_ps128, _mm256_cmpgt_epi32, _mm256_extractf128_ps,
    _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_maskload_ps, _mm256_maskstore_ps, _mm256_mul_ps,
    _mm256_set1_epi32, _mm256_set1_ps, _mm256_setr_epi32, _mm256_setzero_ps, _mm256_storeu_ps,
    _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_loadu_ps, _mm512_mask_storeu_ps,
    _mm512_maskz_loadu_ps, _mm512_mul_ps, _mm512_set1_ps, _mm512_setzero_ps,
};

/// Proof that the running CPU supports AVX2 and FMA, and whether it also
/// supports AVX-512F (then the packed GEMM and direct convolution use
/// 16-lane register tiles).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2Fma {
    avx512: bool,
}

impl Avx2Fma {
    /// Returns the token when the CPU supports AVX2 and FMA. The environment
    /// variable `KILN_ISA` caps the instruction set for comparisons and bug
    /// reports: `avx2` (no AVX-512 tiles) or `portable` (no token at all).
    pub(crate) fn detect() -> Option<Self> {
        static CAP: std::sync::OnceLock<Option<std::string::String>> = std::sync::OnceLock::new();
        let cap = CAP.get_or_init(|| std::env::var("KILN_ISA").ok());
        if cap.as_deref() == Some("portable") {
            return None;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            Some(Self {
                avx512: std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512dq")
                    && cap.as_deref() != Some("avx2"),
            })
        } else {
            None
        }
    }

    /// The same token restricted to the AVX2 kernels (tests run both).
    #[cfg(test)]
    pub(crate) fn without_avx512(self) -> Self {
        Self { avx512: false }
    }

    /// Whether the AVX-512 kernels will be used.
    #[cfg(test)]
    pub(crate) fn has_avx512(self) -> bool {
        self.avx512
    }
}

impl Avx2Fma {
    /// Calls `f(a, x, y)` from a `#[target_feature(enable = "avx2,fma")]`
    /// function. When `f` is an `#[inline(always)]` function item it is
    /// inlined there, so its portable loops are auto-vectorised for AVX2
    /// (`x` and `y` keep their no-alias guarantee as arguments).
    #[inline(always)]
    pub(crate) fn vectorized<A: ?Sized, F: Fn(&A, &[f32], &mut [f32])>(
        self,
        f: F,
        a: &A,
        x: &[f32],
        y: &mut [f32],
    ) {
        #[target_feature(enable = "avx2,fma")]
        fn run<A: ?Sized, F: Fn(&A, &[f32], &mut [f32])>(f: F, a: &A, x: &[f32], y: &mut [f32]) {
            f(a, x, y);
        }
        // SAFETY: `self` proves the CPU supports AVX2 and FMA.
        unsafe { run(f, a, x, y) }
    }

    /// Runs `k` compiled for AVX2+FMA, or AVX-512 (F, VL, BW, DQ: 32 vector
    /// registers, byte and 64-bit lane operations for the int8 loops) where
    /// the token has it (see [`crate::gemm::Kernel`]).
    #[inline(always)]
    pub(crate) fn run_kernel<K: crate::gemm::Kernel>(self, k: K) {
        #[target_feature(enable = "avx2,fma")]
        fn run<K: crate::gemm::Kernel>(k: K) {
            k.run();
        }
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
        fn run512<K: crate::gemm::Kernel>(k: K) {
            k.run();
        }
        if self.avx512 {
            // SAFETY: the token saw AVX-512 F, VL, BW and DQ.
            unsafe { run512(k) }
        } else {
            // SAFETY: `self` proves the CPU supports AVX2 and FMA.
            unsafe { run(k) }
        }
    }
}

/// Mask selecting the first `lanes` (1..=8) lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn tail_mask(lanes: usize) -> __m256i {
    // `lanes <= 8`, so the cast is lossless.
    let l = lanes as i32;
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(l),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// Horizontal sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

impl Avx2Fma {
    /// `C = alpha * A * B + beta * C` for `m <= 4` rows, with B's rows contiguous
    /// (`B(p, j) = b[p * rs + j]`, `b.cs` is ignored). `k, n >= 1`.
    #[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
    pub(crate) fn gemm_rows(
        self,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        beta: f32,
        c: MatMut<'_>,
    ) {
        assert!((1..=4).contains(&m) && n >= 1 && k >= 1);
        check("A", m, k, a.rs, a.cs, a.data.len());
        check("B", k, n, b.rs, 1, b.data.len());
        check("C", m, n, c.rs, c.cs, c.data.len());
        let args = Args {
            n,
            k,
            alpha,
            beta,
            a: a.data.as_ptr(),
            rsa: a.rs,
            csa: a.cs,
            b: b.data.as_ptr(),
            ldb: b.rs,
            c: c.data.as_mut_ptr(),
            rsc: c.rs,
            csc: c.cs,
        };
        // SAFETY: `self` proves AVX2+FMA are available; the checks above ensure
        // every A, B and C element the kernel addresses is inside its slice,
        // and `c` is borrowed mutably for the whole call.
        unsafe {
            match m {
                1 => rows_m::<1, 8>(&args),
                2 => rows_m::<2, 4>(&args),
                3 => rows_m::<3, 3>(&args),
                _ => rows_m::<4, 2>(&args),
            }
        }
    }

    /// `C = alpha * A * B + beta * C` for `m <= 4` rows, with A's rows and
    /// B's columns contiguous (`A(i, p) = a[i * rs + p]`,
    /// `B(p, j) = b[j * cs + p]`; `a.cs` and `b.rs` are ignored). `k, n >= 1`.
    #[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
    pub(crate) fn gemm_dots(
        self,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        beta: f32,
        c: MatMut<'_>,
    ) {
        assert!((1..=4).contains(&m) && n >= 1 && k >= 1);
        check("A", m, k, a.rs, 1, a.data.len());
        check("B", k, n, 1, b.cs, b.data.len());
        check("C", m, n, c.rs, c.cs, c.data.len());
        let args = Args {
            n,
            k,
            alpha,
            beta,
            a: a.data.as_ptr(),
            rsa: a.rs,
            csa: 1,
            b: b.data.as_ptr(),
            ldb: b.cs,
            c: c.data.as_mut_ptr(),
            rsc: c.rs,
            csc: c.cs,
        };
        // SAFETY: as in `gemm_rows`: the token proves the CPU features and the
        // checks above bound every index the kernels compute.
        unsafe {
            match m {
                1 => dots_m::<1, 8>(&args),
                2 => dots_m::<2, 4>(&args),
                3 => dots_m::<3, 3>(&args),
                _ => dots_m::<4, 2>(&args),
            }
        }
    }
}

/// Raw arguments shared by the kernels. `a`, `b`, `c` point at element (0, 0).
struct Args {
    n: usize,
    k: usize,
    alpha: f32,
    beta: f32,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    /// Row stride of B (rows kernel) or column stride of B (dot kernel).
    ldb: usize,
    c: *mut f32,
    rsc: usize,
    csc: usize,
}

/// Writes `alpha * acc + beta * C` to `lanes` consecutive columns of C at `cp`.
///
/// # Safety
/// AVX2+FMA available; the `lanes` (1..=8) C elements `cp + t * csc` are valid.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_c(acc: __m256, cp: *mut f32, csc: usize, lanes: usize, alpha: f32, beta: f32) {
    let res = _mm256_mul_ps(acc, _mm256_set1_ps(alpha));
    // SAFETY: the caller guarantees the `lanes` addressed C elements are valid;
    // masked lanes of maskload/maskstore are never accessed.
    unsafe {
        if csc == 1 && lanes == 8 {
            let res = if beta == 0.0 {
                res
            } else {
                _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(cp), res)
            };
            _mm256_storeu_ps(cp, res);
        } else if csc == 1 {
            let mask = tail_mask(lanes);
            let res = if beta == 0.0 {
                res
            } else {
                _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_maskload_ps(cp, mask), res)
            };
            _mm256_maskstore_ps(cp, mask, res);
        } else {
            let mut tmp = [0.0f32; 8];
            _mm256_storeu_ps(tmp.as_mut_ptr(), res);
            for t in 0..lanes {
                let q = cp.add(t * csc);
                *q = if beta == 0.0 {
                    tmp[t]
                } else {
                    beta * *q + tmp[t]
                };
            }
        }
    }
}

/// Rows kernel driver: tiles of `8 * V` columns, then one masked tail tile.
///
/// # Safety
/// AVX2+FMA available; all `R x n` C, `R x k` A and `k x n` B elements valid.
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_m<const R: usize, const V: usize>(g: &Args) {
    let w = 8 * V;
    let mut j = 0;
    // SAFETY: every tile lies within the `n` columns the caller vouches for.
    unsafe {
        while j + w <= g.n {
            rows_tile::<R, V>(g, j, 8);
            j += w;
        }
        let rem = g.n - j;
        if rem > 0 {
            let last = rem - (rem - 1) / 8 * 8;
            match rem.div_ceil(8) {
                1 => rows_tile::<R, 1>(g, j, last),
                2 => rows_tile::<R, 2>(g, j, last),
                3 => rows_tile::<R, 3>(g, j, last),
                4 => rows_tile::<R, 4>(g, j, last),
                5 => rows_tile::<R, 5>(g, j, last),
                6 => rows_tile::<R, 6>(g, j, last),
                7 => rows_tile::<R, 7>(g, j, last),
                _ => rows_tile::<R, 8>(g, j, last),
            }
        }
    }
}

/// `R x 8V` tile of C at column `j0` accumulated as `sum_p A(:, p) * B(p, j0..)`;
/// the last vector covers only `last` (1..=8) columns.
///
/// # Safety
/// AVX2+FMA available; columns `j0 .. j0 + 8 * (V - 1) + last` of the R rows of
/// C and the k rows of B are valid, as are the `R x k` A elements.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_tile<const R: usize, const V: usize>(g: &Args, j0: usize, last: usize) {
    let mask = tail_mask(last);
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    // SAFETY: per the contract, B(p, j0 .. j0 + 8(V-1) + last) and A(r, p) are
    // readable for p < k, r < R; the partial last vector uses a masked load, so
    // lanes past `last` are not read. C writes stay in the vouched range.
    unsafe {
        let bj = g.b.add(j0);
        for p in 0..g.k {
            let bp = bj.add(p * g.ldb);
            let ap = g.a.add(p * g.csa);
            if R == 1 {
                // Single row: B vectors feed one FMA each, so load them as
                // FMA memory operands instead of holding V extra registers.
                let ar = _mm256_set1_ps(*ap);
                for v in 0..V {
                    let b = if v + 1 == V && last < 8 {
                        _mm256_maskload_ps(bp.add(8 * v), mask)
                    } else {
                        _mm256_loadu_ps(bp.add(8 * v))
                    };
                    acc[0][v] = _mm256_fmadd_ps(ar, b, acc[0][v]);
                }
                continue;
            }
            let mut bv = [_mm256_setzero_ps(); V];
            for v in 0..V {
                bv[v] = if v + 1 == V && last < 8 {
                    _mm256_maskload_ps(bp.add(8 * v), mask)
                } else {
                    _mm256_loadu_ps(bp.add(8 * v))
                };
            }
            for r in 0..R {
                let ar = _mm256_set1_ps(*ap.add(r * g.rsa));
                for v in 0..V {
                    acc[r][v] = _mm256_fmadd_ps(ar, bv[v], acc[r][v]);
                }
            }
        }
        for r in 0..R {
            for v in 0..V {
                let lanes = if v + 1 == V { last } else { 8 };
                let cp = g.c.add(r * g.rsc + (j0 + 8 * v) * g.csc);
                store_c(acc[r][v], cp, g.csc, lanes, g.alpha, g.beta);
            }
        }
    }
}

/// Dot kernel driver: tiles of `J` columns, then a narrower tail tile.
///
/// # Safety
/// AVX2+FMA available; all `R x n` C, `R x k` A (rows contiguous) and `k x n`
/// B (columns contiguous) elements valid.
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_m<const R: usize, const J: usize>(g: &Args) {
    let mut j = 0;
    // SAFETY: every tile lies within the `n` columns the caller vouches for.
    unsafe {
        while j + J <= g.n {
            dots_tile::<R, J>(g, j);
            j += J;
        }
        match g.n - j {
            0 => {}
            1 => dots_tile::<R, 1>(g, j),
            2 => dots_tile::<R, 2>(g, j),
            3 => dots_tile::<R, 3>(g, j),
            4 => dots_tile::<R, 4>(g, j),
            5 => dots_tile::<R, 5>(g, j),
            6 => dots_tile::<R, 6>(g, j),
            _ => dots_tile::<R, 7>(g, j),
        }
    }
}

/// `R x J` tile of C at column `j0`, each element a length-k dot product.
///
/// # Safety
/// AVX2+FMA available; A rows `0..R`, B columns `j0..j0 + J` (all k elements,
/// contiguous) and the matching C elements are valid.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_tile<const R: usize, const J: usize>(g: &Args, j0: usize) {
    let k8 = g.k & !7;
    let mut acc = [[_mm256_setzero_ps(); J]; R];
    // SAFETY: loads cover p < k8 (full vectors) and the k - k8 tail lanes via a
    // masked load, so only A(r, p) / B(p, j) with p < k are read; C writes are
    // the R x J elements vouched for by the caller.
    unsafe {
        let bj = g.b.add(j0 * g.ldb);
        let mut p = 0;
        while p < k8 {
            let mut av = [_mm256_setzero_ps(); R];
            for r in 0..R {
                av[r] = _mm256_loadu_ps(g.a.add(r * g.rsa + p));
            }
            for j in 0..J {
                let bv = _mm256_loadu_ps(bj.add(j * g.ldb + p));
                for r in 0..R {
                    acc[r][j] = _mm256_fmadd_ps(av[r], bv, acc[r][j]);
                }
            }
            p += 8;
        }
        if k8 < g.k {
            let mask = tail_mask(g.k - k8);
            let mut av = [_mm256_setzero_ps(); R];
            for r in 0..R {
                av[r] = _mm256_maskload_ps(g.a.add(r * g.rsa + k8), mask);
            }
            for j in 0..J {
                let bv = _mm256_maskload_ps(bj.add(j * g.ldb + k8), mask);
                for r in 0..R {
                    acc[r][j] = _mm256_fmadd_ps(av[r], bv, acc[r][j]);
                }
            }
        }
        for r in 0..R {
            for j in 0..J {
                let cp = g.c.add(r * g.rsc + (j0 + j) * g.csc);
                let s = g.alpha * hsum(acc[r][j]);
                *cp = if g.beta == 0.0 { s } else { g.beta * *cp + s };
            }
        }
    }
}

/// Columns of a packed B panel (two AVX vectors).
const NR: usize = crate::gemm::PANEL;
const _: () = assert!(
    NR == 16,
    "the micro-kernels hold two 8-lane vectors per row"
);
/// Rows of a register tile of C (6 x 2 accumulators + 2 B vectors + 1
/// broadcast = 15 of the 16 ymm registers).
const MR: usize = 6;
/// Depth of a cache block: a `KC x NR` B panel (16 KiB) stays in L1.
const KC: usize = 256;

impl Avx2Fma {
    /// `C = alpha * A * B + beta * C` with a packed, register-blocked kernel
    /// (`MR x NR` tiles). C must have contiguous rows (`c.cs == 1`).
    #[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
    pub(crate) fn gemm_packed(
        self,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        beta: f32,
        c: MatMut<'_>,
    ) {
        assert!(m >= 1 && n >= 1 && k >= 1 && c.cs == 1);
        check("B", k, n, b.rs, b.cs, b.data.len());
        self.packed_driver(m, n, k, alpha, a, BSource::Strided(b), beta, c);
    }

    /// Like [`Self::gemm_packed`], with B already packed (layout of
    /// [`crate::gemm::panel_index`], panels padded to `NR` columns).
    #[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
    pub(crate) fn gemm_prepacked(
        self,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: MatRef<'_>,
        packed: &[f32],
        beta: f32,
        c: MatMut<'_>,
    ) {
        assert!(m >= 1 && n >= 1 && k >= 1 && c.cs == 1);
        assert!(
            k.checked_mul(n.div_ceil(NR) * NR)
                .is_some_and(|len| packed.len() >= len),
            "gemm: packed B too short"
        );
        self.packed_driver(m, n, k, alpha, a, BSource::Packed(packed), beta, c);
    }

    /// Blocked loop nest: for each `KC` slab of k and `NR` panel of columns,
    /// pack (or look up) the `kc x NR` B panel and run the register kernel
    /// down all rows of C.
    #[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
    fn packed_driver(
        self,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: MatRef<'_>,
        b: BSource<'_>,
        beta: f32,
        c: MatMut<'_>,
    ) {
        check("A", m, k, a.rs, a.cs, a.data.len());
        check("C", m, n, c.rs, 1, c.data.len());
        // Stack buffers are only zeroed where B needs packing (a 16-32 KiB
        // memset per call shows up in profiles of many small products).
        match b {
            BSource::Packed(packed) if self.avx512 && m <= 4 => {
                return self.packed_short(m, n, k, alpha, a, packed, beta, c);
            }
            BSource::Packed(_) if self.avx512 => {
                return self.packed_driver512(m, n, k, alpha, a, b, beta, c, &mut []);
            }
            BSource::Strided(_) if self.avx512 => {
                let mut buf = Aligned([0.0f32; 2 * KC * NR]);
                return self.packed_driver512(m, n, k, alpha, a, b, beta, c, &mut buf.0);
            }
            _ => {}
        }
        let mut buf = Aligned([0.0f32; KC * NR]);
        let buf = &mut buf.0;
        let mut pc = 0;
        while pc < k {
            let kc = KC.min(k - pc);
            let beta_blk = if pc == 0 { beta } else { 1.0 };
            let mut jc = 0;
            while jc < n {
                let nc = NR.min(n - jc);
                let bp: &[f32] = match b {
                    BSource::Strided(b) => {
                        pack_panel(buf, b, pc, kc, jc, nc);
                        &buf[..kc * NR]
                    }
                    BSource::Packed(packed) => {
                        let start = (jc / NR) * (k * NR) + pc * NR;
                        &packed[start..start + kc * NR]
                    }
                };
                assert!(bp.len() >= kc * NR);
                let mut ic = 0;
                while ic < m {
                    let mr = MR.min(m - ic);
                    let t = Tile {
                        kc,
                        a: a.data[ic * a.rs + pc * a.cs..].as_ptr(),
                        rsa: a.rs,
                        csa: a.cs,
                        b: bp.as_ptr(),
                        c: c.data[ic * c.rs + jc..].as_mut_ptr(),
                        rsc: c.rs,
                        cols: nc,
                        alpha,
                        beta: beta_blk,
                    };
                    // A rows ic..ic+mr, columns pc..pc+kc and C rows
                    // ic..ic+mr, columns jc..jc+nc are inside their slices
                    // by the `check`s above (mr <= m - ic, kc <= k - pc,
                    // nc <= n - jc); the panel holds kc x NR floats
                    // (asserted).
                    // SAFETY: the token proves AVX2+FMA; see above for the
                    // addresses. The kernel reads the first
                    // 8 * ceil(nc / 8) <= NR floats of each panel row.
                    unsafe {
                        match (mr, nc > 8) {
                            (6, true) => micro::<6, 2>(&t),
                            (6, false) => micro::<6, 1>(&t),
                            (5, true) => micro::<5, 2>(&t),
                            (5, false) => micro::<5, 1>(&t),
                            (4, true) => micro::<4, 2>(&t),
                            (4, false) => micro::<4, 1>(&t),
                            (3, true) => micro::<3, 2>(&t),
                            (3, false) => micro::<3, 1>(&t),
                            (2, true) => micro::<2, 2>(&t),
                            (2, false) => micro::<2, 1>(&t),
                            (_, true) => micro::<1, 2>(&t),
                            (_, false) => micro::<1, 1>(&t),
                        }
                    }
                    ic += mr;
                }
                jc += nc;
            }
            pc += kc;
        }
    }
}

impl Avx2Fma {
    /// [`Self::packed_driver`] on AVX-512: `MR16 x 2·NR` register tiles
    /// (two panels per step of depth: 2 loads and `MR16` broadcasts feed
    /// `2·MR16` FMAs; one panel per tile would leave the load ports, not the
    /// FMA units, as the limit). B is packed two panels at a time into
    /// `buf` (`2·KC·NR` floats; may be empty when B comes packed).
    #[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
    fn packed_driver512(
        self,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: MatRef<'_>,
        b: BSource<'_>,
        beta: f32,
        c: MatMut<'_>,
        buf: &mut [f32],
    ) {
        let mut pc = 0;
        while pc < k {
            let kc = KC.min(k - pc);
            let beta_blk = if pc == 0 { beta } else { 1.0 };
            let mut jc = 0;
            while jc < n {
                let nc = (2 * NR).min(n - jc);
                let g = nc.div_ceil(NR);
                let (bp, pstride): (&[f32], usize) = match b {
                    BSource::Strided(b) => {
                        for q in 0..g {
                            let cols = NR.min(nc - q * NR);
                            pack_panel(&mut buf[q * kc * NR..], b, pc, kc, jc + q * NR, cols);
                        }
                        (&buf[..g * kc * NR], kc * NR)
                    }
                    BSource::Packed(packed) => {
                        let start = (jc / NR) * (k * NR) + pc * NR;
                        (&packed[start..start + (g - 1) * k * NR + kc * NR], k * NR)
                    }
                };
                let mut ic = 0;
                while ic < m {
                    let mr = balanced_rows(m - ic, MR16);
                    let t = Tile {
                        kc,
                        a: a.data[ic * a.rs + pc * a.cs..].as_ptr(),
                        rsa: a.rs,
                        csa: a.cs,
                        b: bp.as_ptr(),
                        c: c.data[ic * c.rs + jc..].as_mut_ptr(),
                        rsc: c.rs,
                        cols: nc,
                        alpha,
                        beta: beta_blk,
                    };
                    // SAFETY: the token saw AVX-512F. A rows ic..ic+mr,
                    // columns pc..pc+kc and C rows ic..ic+mr, columns
                    // jc..jc+nc are inside their slices (`check`ed by the
                    // caller; mr <= m - ic, kc <= k - pc, nc <= n - jc);
                    // `bp` holds g panels of kc rows of NR floats, pstride
                    // apart (sliced above).
                    unsafe {
                        if g == 2 {
                            rows_1_to_12_wide2(mr, &t, pstride);
                        } else {
                            micro16_dispatch(mr, &t);
                        }
                    }
                    ic += mr;
                }
                jc += nc;
            }
            pc += kc;
        }
    }

    /// [`Self::packed_driver`] for at most four rows of A and an already
    /// packed B (a GEMV per step of a recurrent cell, say): one pass over
    /// the whole depth with several panels' accumulators in registers, so
    /// B streams through once and the FMA chains are independent.
    #[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
    fn packed_short(
        self,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: MatRef<'_>,
        packed: &[f32],
        beta: f32,
        c: MatMut<'_>,
    ) {
        assert!((1..=4).contains(&m) && self.avx512);
        let panels = n.div_ceil(NR);
        assert!(packed.len() >= panels * k * NR, "packed B is too short");
        let group = match m {
            1 | 2 => 8,
            3 => 6,
            _ => 4,
        };
        let mut q = 0;
        while q < panels {
            let g = if q + group <= panels { group } else { 1 };
            let jc = q * NR;
            let t = Tile {
                kc: k,
                a: a.data.as_ptr(),
                rsa: a.rs,
                csa: a.cs,
                b: packed[q * k * NR..].as_ptr(),
                c: c.data[jc..].as_mut_ptr(),
                rsc: c.rs,
                cols: (n - jc).min(g * NR),
                alpha,
                beta,
            };
            // SAFETY: the token saw AVX-512F. A rows 0..m and C rows 0..m,
            // columns jc..jc + cols are inside their slices (`check`ed by
            // the caller); panels q..q + g exist (g <= panels - q) and each
            // holds k rows of NR floats (length asserted above).
            unsafe {
                match (m, g) {
                    (1, 8) => micro16_wide::<1, 8>(&t, k * NR),
                    (2, 8) => micro16_wide::<2, 8>(&t, k * NR),
                    (3, 6) => micro16_wide::<3, 6>(&t, k * NR),
                    (4, 4) => micro16_wide::<4, 4>(&t, k * NR),
                    (1, _) => micro16_wide::<1, 1>(&t, k * NR),
                    (2, _) => micro16_wide::<2, 1>(&t, k * NR),
                    (3, _) => micro16_wide::<3, 1>(&t, k * NR),
                    _ => micro16_wide::<4, 1>(&t, k * NR),
                }
            }
            q += g;
        }
    }

    /// Rows of C per register tile of the direct convolution.
    fn conv_mr(self) -> usize {
        if self.avx512 { CONV_MR16 } else { MR }
    }
}

/// Rows per tile of the AVX-512 GEMM kernels: `MR16` rows of two 16-lane
/// panels (24 accumulators, 2 panel loads, 12 broadcasts per step).
const MR16: usize = 12;

/// Rows of the next tile when `left` rows remain and a tile holds at most
/// `max`: the rows are spread evenly over the tiles still needed (16 rows
/// become 8 + 8, not 12 + 4, whose short tile would waste most of its
/// loads).
fn balanced_rows(left: usize, max: usize) -> usize {
    left.div_ceil(left.div_ceil(max))
}

/// Rows per tile of the AVX-512 direct convolution (one panel of 16 output
/// columns, so up to 16 rows fit the registers).
const CONV_MR16: usize = 16;

/// Calls the `R`-row AVX-512 kernel for `r = R` (1..=16).
macro_rules! rows_1_to_16 {
    ($f:ident, $r:expr, $t:expr) => {
        match $r {
            16 => $f::<16>($t),
            15 => $f::<15>($t),
            14 => $f::<14>($t),
            13 => $f::<13>($t),
            12 => $f::<12>($t),
            11 => $f::<11>($t),
            10 => $f::<10>($t),
            9 => $f::<9>($t),
            8 => $f::<8>($t),
            7 => $f::<7>($t),
            6 => $f::<6>($t),
            5 => $f::<5>($t),
            4 => $f::<4>($t),
            3 => $f::<3>($t),
            2 => $f::<2>($t),
            _ => $f::<1>($t),
        }
    };
}

/// # Safety
/// As [`micro16`], with `1 <= r <= 16` rows.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn micro16_dispatch(r: usize, t: &Tile) {
    // SAFETY: forwarded from the caller.
    unsafe { rows_1_to_16!(micro16, r, t) }
}

/// # Safety
/// As [`micro16_wide`] with `G = 2`, `1 <= r <= MR16` rows.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rows_1_to_12_wide2(r: usize, t: &Tile, pstride: usize) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match r {
            12 => micro16_wide::<12, 2>(t, pstride),
            11 => micro16_wide::<11, 2>(t, pstride),
            10 => micro16_wide::<10, 2>(t, pstride),
            9 => micro16_wide::<9, 2>(t, pstride),
            8 => micro16_wide::<8, 2>(t, pstride),
            7 => micro16_wide::<7, 2>(t, pstride),
            6 => micro16_wide::<6, 2>(t, pstride),
            5 => micro16_wide::<5, 2>(t, pstride),
            4 => micro16_wide::<4, 2>(t, pstride),
            3 => micro16_wide::<3, 2>(t, pstride),
            2 => micro16_wide::<2, 2>(t, pstride),
            _ => micro16_wide::<1, 2>(t, pstride),
        }
    }
}

/// # Safety
/// As [`conv_micro16`], with `1 <= r <= 16` rows.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn conv_micro16_dispatch<const PAIR: bool>(r: usize, t: &ConvTile<'_>) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match r {
            16 => conv_micro16::<16, PAIR>(t),
            15 => conv_micro16::<15, PAIR>(t),
            14 => conv_micro16::<14, PAIR>(t),
            13 => conv_micro16::<13, PAIR>(t),
            12 => conv_micro16::<12, PAIR>(t),
            11 => conv_micro16::<11, PAIR>(t),
            10 => conv_micro16::<10, PAIR>(t),
            9 => conv_micro16::<9, PAIR>(t),
            8 => conv_micro16::<8, PAIR>(t),
            7 => conv_micro16::<7, PAIR>(t),
            6 => conv_micro16::<6, PAIR>(t),
            5 => conv_micro16::<5, PAIR>(t),
            4 => conv_micro16::<4, PAIR>(t),
            3 => conv_micro16::<3, PAIR>(t),
            2 => conv_micro16::<2, PAIR>(t),
            _ => conv_micro16::<1, PAIR>(t),
        }
    }
}

/// Lane mask of the first `cols` (clamped to 16) lanes.
#[inline]
fn mask16(cols: usize) -> __mmask16 {
    if cols >= 16 {
        0xFFFF
    } else {
        ((1u32 << cols) - 1) as __mmask16
    }
}

/// Writes `alpha * acc + beta * C` to the lanes of `mask` at `cp`.
///
/// # Safety
/// AVX-512F available; the C elements of the set lanes are valid (masked-off
/// lanes are never accessed, not even by the load).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn store16(acc: __m512, cp: *mut f32, mask: __mmask16, alpha: f32, beta: f32) {
    let res = _mm512_mul_ps(acc, _mm512_set1_ps(alpha));
    // SAFETY: see above.
    unsafe {
        let res = if beta == 0.0 {
            res
        } else {
            _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(mask, cp), res)
        };
        _mm512_mask_storeu_ps(cp, mask, res);
    }
}

/// AVX-512 register tile: `C[R x cols] = alpha * A[R x kc] * Bpanel + beta * C`
/// with one 16-lane accumulator per row.
///
/// # Safety
/// AVX-512F available; `A(r, p)` (r < R, p < kc), the `NR` floats of each of
/// the `kc` panel rows and `C(r, 0..cols)` are valid.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn micro16<const R: usize>(t: &Tile) {
    let mut acc = [_mm512_setzero_ps(); R];
    // SAFETY: every address below is one the caller vouches for.
    unsafe {
        let mut ap = t.a;
        let mut bp = t.b;
        for _ in 0..t.kc {
            let bv = _mm512_loadu_ps(bp);
            for r in 0..R {
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(*ap.add(r * t.rsa)), bv, acc[r]);
            }
            ap = ap.add(t.csa);
            bp = bp.add(NR);
        }
        let mask = mask16(t.cols);
        for r in 0..R {
            store16(acc[r], t.c.add(r * t.rsc), mask, t.alpha, t.beta);
        }
    }
}

/// AVX-512 tile over `G` consecutive panels (`pstride` floats apart):
/// `C[R x cols] = alpha * A[R x kc] * B[kc x cols] + beta * C`, `R * G`
/// accumulators, `G` panel loads and `R * G` FMAs per step of depth.
///
/// # Safety
/// AVX-512F available; `A(r, p)` (r < R, p < kc), the `NR` floats of the
/// first `kc` rows of each of the `G` panels and `C(r, 0..cols)` are valid,
/// `cols <= G * NR`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn micro16_wide<const R: usize, const G: usize>(t: &Tile, pstride: usize) {
    let mut acc = [[_mm512_setzero_ps(); G]; R];
    // SAFETY: every address below is one the caller vouches for.
    unsafe {
        let mut ap = t.a;
        let mut bp = t.b;
        for _ in 0..t.kc {
            let mut bv = [_mm512_setzero_ps(); G];
            for g in 0..G {
                bv[g] = _mm512_loadu_ps(bp.add(g * pstride));
            }
            for r in 0..R {
                let av = _mm512_set1_ps(*ap.add(r * t.rsa));
                for g in 0..G {
                    acc[r][g] = _mm512_fmadd_ps(av, bv[g], acc[r][g]);
                }
            }
            ap = ap.add(t.csa);
            bp = bp.add(NR);
        }
        for g in 0..G {
            let mask = mask16(t.cols.saturating_sub(g * NR));
            for r in 0..R {
                store16(
                    acc[r][g],
                    t.c.add(r * t.rsc + g * NR),
                    mask,
                    t.alpha,
                    t.beta,
                );
            }
        }
    }
}

/// AVX-512 direct-convolution tile: like [`micro16`], with B row
/// `(ci, r, s)` read straight from the padded input. In pair mode lanes 0..8
/// are output row oy and lanes 8..16 row oy+1 (both masked to `cols`).
///
/// # Safety
/// AVX-512F available; the `R` weight rows, the `cg·kh·kw` input runs of
/// `NR` floats (two runs of 8 in pair mode) and the outputs addressed are
/// valid.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn conv_micro16<const R: usize, const PAIR: bool>(t: &ConvTile<'_>) {
    let mut acc = [_mm512_setzero_ps(); R];
    // SAFETY: every address below is one the caller vouches for. In pair
    // mode the high half is loaded with lanes 8..16 addressing
    // `bp + hi + (0..8)` through a base pointer 8 floats lower (built with
    // wrapping arithmetic; masked-off lanes are never accessed).
    unsafe {
        let mut ap = t.a;
        for ci in 0..t.cg {
            let bc = t.b.add(ci * t.plane);
            for &tap in t.taps {
                let bp = bc.add(tap);
                let bv = if PAIR {
                    let lo = _mm512_maskz_loadu_ps(0x00FF, bp);
                    _mm512_mask_loadu_ps(lo, 0xFF00, bp.wrapping_add(t.hi).wrapping_sub(8))
                } else {
                    _mm512_loadu_ps(bp)
                };
                for rr in 0..R {
                    acc[rr] = _mm512_fmadd_ps(_mm512_set1_ps(*ap.add(rr * t.lda)), bv, acc[rr]);
                }
                ap = ap.add(1);
            }
        }
        let mask = mask16(t.cols.min(if PAIR { 8 } else { NR }));
        for rr in 0..R {
            let cp = t.c.add(rr * t.ldc);
            store16(acc[rr], cp, mask, 1.0, t.beta);
            if PAIR && t.rows == 2 {
                // Lane 8 + j goes to cp + ow + j.
                let hp = cp.wrapping_add(t.ow).wrapping_sub(8);
                store16(acc[rr], hp, mask << 8, 1.0, t.beta);
            }
        }
    }
}

/// A stack buffer on a cache-line boundary: each 16-float panel row is then
/// one line (a misaligned row costs two, and split loads).
#[repr(C, align(64))]
struct Aligned<T>(T);

/// Where the packed driver gets its B panels from.
#[derive(Debug, Clone, Copy)]
enum BSource<'a> {
    /// A strided matrix, packed panel by panel into a stack buffer.
    Strided(MatRef<'a>),
    /// Already packed (layout of [`crate::gemm::panel_index`]).
    Packed(&'a [f32]),
}

/// One register tile: `C[R x cols] = alpha * A[R x kc] * Bpanel[kc x 8V] + beta * C`.
struct Tile {
    kc: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    /// Packed panel, row stride `NR`.
    b: *const f32,
    c: *mut f32,
    rsc: usize,
    /// Valid columns, `8 * (V - 1) < cols <= 8 * V`.
    cols: usize,
    alpha: f32,
    beta: f32,
}

/// Register-blocked micro-kernel: `R x 8V` accumulators.
///
/// # Safety
/// AVX2+FMA available; `A(r, p)` (r < R, p < kc), the first `8V` floats of
/// each of the `kc` panel rows and `C(r, 0..cols)` are valid.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn micro<const R: usize, const V: usize>(t: &Tile) {
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    // SAFETY: every address below is one the caller vouches for (see above).
    unsafe {
        let mut ap = t.a;
        let mut bp = t.b;
        for _ in 0..t.kc {
            let mut bv = [_mm256_setzero_ps(); V];
            for v in 0..V {
                bv[v] = _mm256_loadu_ps(bp.add(8 * v));
            }
            for r in 0..R {
                let ar = _mm256_set1_ps(*ap.add(r * t.rsa));
                for v in 0..V {
                    acc[r][v] = _mm256_fmadd_ps(ar, bv[v], acc[r][v]);
                }
            }
            ap = ap.add(t.csa);
            bp = bp.add(NR);
        }
        for r in 0..R {
            for v in 0..V {
                let lanes = (t.cols - 8 * v).min(8);
                store_c(
                    acc[r][v],
                    t.c.add(r * t.rsc + 8 * v),
                    1,
                    lanes,
                    t.alpha,
                    t.beta,
                );
            }
        }
    }
}

impl Avx2Fma {
    /// Direct convolution of one (batch item, group) as an implicit GEMM:
    /// `y[mg, oh·ow] = w[mg, k] · B + beta · y`, where row `(ci, r, s)` of B,
    /// for a strip of output columns starting at `(oy, ox0)`, is the
    /// contiguous run at `xp[ci·plane + oy·sh·row + ox0 + tap(r, s)..]` of the
    /// padded input laid out by [`crate::conv::Direct`] (two such runs, for
    /// rows `oy` and `oy + 1`, in pair mode). The register tiles are those
    /// of [`micro`] / [`micro16`].
    pub(crate) fn conv_direct(
        self,
        d: &crate::conv::Direct,
        mg: usize,
        w: &[f32],
        xp: &[f32],
        beta: f32,
        y: &mut [f32],
    ) {
        let plane = d.plane();
        let ntaps = d.kh * d.kw;
        let k = d.cg * ntaps;
        if mg == 0 || d.oh == 0 || d.ow == 0 || k == 0 {
            return;
        }
        let taps = d.checked_taps(mg, w, xp, y);
        if d.pair {
            assert!(d.ow <= NR / 2);
        }
        let ohw = d.oh * d.ow;
        let strip = |y: &mut [f32], oy: usize, ox0: usize, cols: usize, hi: usize, rows: usize| {
            let mut ib = 0;
            while ib < mg {
                let mr = self.conv_mr().min(mg - ib);
                let t = ConvTile {
                    a: w[ib * k..].as_ptr(),
                    lda: k,
                    b: xp[oy * d.sh * d.row + ox0..].as_ptr(),
                    taps: &taps[..ntaps],
                    cg: d.cg,
                    plane,
                    c: y[ib * ohw + oy * d.ow + ox0..].as_mut_ptr(),
                    ldc: ohw,
                    cols,
                    hi,
                    rows,
                    ow: d.ow,
                    beta,
                };
                // SAFETY: the token proves AVX2+FMA (and AVX-512F when
                // `self.avx512`). Weight rows ib..ib+mr (k floats each) and
                // the C strip (mr rows of `cols` floats at stride oh·ow, plus
                // the same of row oy+1 in pair mode, which exists when
                // rows == 2) are inside `w` and `y` (`Direct::checked_taps`);
                // every B load starts at a tap position inside the buffer
                // and reads at most NR floats, as `checked_taps` checked.
                unsafe {
                    match (self.avx512, d.pair) {
                        (true, false) => conv_micro16_dispatch::<false>(mr, &t),
                        (true, true) => conv_micro16_dispatch::<true>(mr, &t),
                        (false, true) => conv_micro_dispatch::<2, true>(mr, &t),
                        (false, false) if cols > 8 => conv_micro_dispatch::<2, false>(mr, &t),
                        (false, false) => conv_micro_dispatch::<1, false>(mr, &t),
                    }
                }
                ib += mr;
            }
        };
        // Two strips per AVX-512 tile (`MR16` rows x 2 strips): two input
        // loads and `MR16` weight broadcasts feed `2·MR16` FMAs.
        type Strip = (usize, usize, usize, usize, usize);
        let strips2 = |y: &mut [f32], s0: Strip, s1: Strip| {
            let mut ib = 0;
            while ib < mg {
                let mr = balanced_rows(mg - ib, MR16);
                let mut tile = |(oy, ox0, cols, hi, rows): Strip| ConvTile {
                    a: w[ib * k..].as_ptr(),
                    lda: k,
                    b: xp[oy * d.sh * d.row + ox0..].as_ptr(),
                    taps: &taps[..ntaps],
                    cg: d.cg,
                    plane,
                    c: y[ib * ohw + oy * d.ow + ox0..].as_mut_ptr(),
                    ldc: ohw,
                    cols,
                    hi,
                    rows,
                    ow: d.ow,
                    beta,
                };
                let (t0, t1) = (tile(s0), tile(s1));
                // SAFETY: the token saw AVX-512F; each strip is one the
                // single-strip kernel accepts (see `strip` above), and the
                // two share weights, taps and channel geometry.
                unsafe {
                    if d.pair {
                        conv_rows_1_to_12_x2::<true>(mr, &t0, &t1);
                    } else {
                        conv_rows_1_to_12_x2::<false>(mr, &t0, &t1);
                    }
                }
                ib += mr;
            }
        };
        // Strips in order; on AVX-512 consecutive ones go two to a tile,
        // except in pair mode (measured slower there: its merged half-loads
        // already give each tile two rows).
        let mut pending: Option<Strip> = None;
        let mut visit = |y: &mut [f32], st: Strip| {
            if !self.avx512 || d.pair {
                strip(y, st.0, st.1, st.2, st.3, st.4);
            } else if let Some(s0) = pending.take() {
                strips2(y, s0, st);
            } else {
                pending = Some(st);
            }
        };
        if d.pair {
            for oy in (0..d.oh).step_by(2) {
                let rows = (d.oh - oy).min(2);
                let hi = if rows == 2 { d.sh * d.row } else { 0 };
                visit(y, (oy, 0, d.ow, hi, rows));
            }
        } else {
            for oy in 0..d.oh {
                let mut ox0 = 0;
                while ox0 < d.ow {
                    let cols = NR.min(d.ow - ox0);
                    visit(y, (oy, ox0, cols, 0, 1));
                    ox0 += cols;
                }
            }
        }
        if let Some((oy, ox0, cols, hi, rows)) = pending {
            strip(y, oy, ox0, cols, hi, rows);
        }
    }
}

/// # Safety
/// As [`conv_micro16x2`], with `1 <= r <= MR16` rows.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn conv_rows_1_to_12_x2<const PAIR: bool>(r: usize, t0: &ConvTile<'_>, t1: &ConvTile<'_>) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match r {
            12 => conv_micro16x2::<12, PAIR>(t0, t1),
            11 => conv_micro16x2::<11, PAIR>(t0, t1),
            10 => conv_micro16x2::<10, PAIR>(t0, t1),
            9 => conv_micro16x2::<9, PAIR>(t0, t1),
            8 => conv_micro16x2::<8, PAIR>(t0, t1),
            7 => conv_micro16x2::<7, PAIR>(t0, t1),
            6 => conv_micro16x2::<6, PAIR>(t0, t1),
            5 => conv_micro16x2::<5, PAIR>(t0, t1),
            4 => conv_micro16x2::<4, PAIR>(t0, t1),
            3 => conv_micro16x2::<3, PAIR>(t0, t1),
            2 => conv_micro16x2::<2, PAIR>(t0, t1),
            _ => conv_micro16x2::<1, PAIR>(t0, t1),
        }
    }
}

/// Two strips of [`conv_micro16`] (same weights, taps and channels; their
/// own input, output, columns and, in pair mode, rows) in one tile.
///
/// # Safety
/// As [`conv_micro16`] for each of `t0` and `t1`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn conv_micro16x2<const R: usize, const PAIR: bool>(t0: &ConvTile<'_>, t1: &ConvTile<'_>) {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    // SAFETY: every address below is one the caller vouches for; the pair
    // loads are those of `conv_micro16`.
    unsafe {
        let load = |t: &ConvTile<'_>, bp: *const f32| {
            if PAIR {
                let lo = _mm512_maskz_loadu_ps(0x00FF, bp);
                _mm512_mask_loadu_ps(lo, 0xFF00, bp.wrapping_add(t.hi).wrapping_sub(8))
            } else {
                _mm512_loadu_ps(bp)
            }
        };
        let mut ap = t0.a;
        for ci in 0..t0.cg {
            let b0 = t0.b.add(ci * t0.plane);
            let b1 = t1.b.add(ci * t0.plane);
            for &tap in t0.taps {
                let v0 = load(t0, b0.add(tap));
                let v1 = load(t1, b1.add(tap));
                for rr in 0..R {
                    let wv = _mm512_set1_ps(*ap.add(rr * t0.lda));
                    acc[rr][0] = _mm512_fmadd_ps(wv, v0, acc[rr][0]);
                    acc[rr][1] = _mm512_fmadd_ps(wv, v1, acc[rr][1]);
                }
                ap = ap.add(1);
            }
        }
        for (v, t) in [t0, t1].into_iter().enumerate() {
            let mask = mask16(t.cols.min(if PAIR { 8 } else { NR }));
            for rr in 0..R {
                let cp = t.c.add(rr * t.ldc);
                store16(acc[rr][v], cp, mask, 1.0, t.beta);
                if PAIR && t.rows == 2 {
                    let hp = cp.wrapping_add(t.ow).wrapping_sub(8);
                    store16(acc[rr][v], hp, mask << 8, 1.0, t.beta);
                }
            }
        }
    }
}

/// One register tile of the direct convolution.
struct ConvTile<'t> {
    /// Weights of the tile's first output channel (row stride `lda`).
    a: *const f32,
    lda: usize,
    /// Padded input at (channel 0, row oy·sh, column ox0).
    b: *const f32,
    /// Offset of each filter tap from `b` within a channel.
    taps: &'t [usize],
    cg: usize,
    plane: usize,
    /// Output at (first channel, oy, ox0), channel stride `ldc`.
    c: *mut f32,
    ldc: usize,
    /// Valid columns per output row.
    cols: usize,
    /// Pair mode: input offset of row oy+1 from `b` (0 when `rows == 1`),
    /// output rows in the strip and the output row length.
    hi: usize,
    rows: usize,
    ow: usize,
    beta: f32,
}

/// # Safety
/// As [`conv_micro`], with `1 <= r <= MR`.
#[target_feature(enable = "avx2,fma")]
unsafe fn conv_micro_dispatch<const V: usize, const PAIR: bool>(r: usize, t: &ConvTile<'_>) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match r {
            6 => conv_micro::<6, V, PAIR>(t),
            5 => conv_micro::<5, V, PAIR>(t),
            4 => conv_micro::<4, V, PAIR>(t),
            3 => conv_micro::<3, V, PAIR>(t),
            2 => conv_micro::<2, V, PAIR>(t),
            _ => conv_micro::<1, V, PAIR>(t),
        }
    }
}

/// `R x 8V` direct-convolution tile: like [`micro`], with B row `(ci, r, s)`
/// read straight from the padded input; in pair mode (`V = 2`) vector 1 is
/// output row oy+1.
///
/// # Safety
/// AVX2+FMA available; the `R` weight rows, the `cg·kh·kw` input runs of
/// `8V` floats (two runs of 8 in pair mode) and the outputs addressed are
/// valid.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn conv_micro<const R: usize, const V: usize, const PAIR: bool>(t: &ConvTile<'_>) {
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    let voff = |v: usize| if PAIR { v * t.hi } else { 8 * v };
    // SAFETY: every address below is one the caller vouches for.
    unsafe {
        let mut ap = t.a;
        for ci in 0..t.cg {
            let bc = t.b.add(ci * t.plane);
            for &tap in t.taps {
                let bp = bc.add(tap);
                let mut bv = [_mm256_setzero_ps(); V];
                for v in 0..V {
                    bv[v] = _mm256_loadu_ps(bp.add(voff(v)));
                }
                for rr in 0..R {
                    let ar = _mm256_set1_ps(*ap.add(rr * t.lda));
                    for v in 0..V {
                        acc[rr][v] = _mm256_fmadd_ps(ar, bv[v], acc[rr][v]);
                    }
                }
                ap = ap.add(1);
            }
        }
        for rr in 0..R {
            for v in 0..V {
                let (lanes, coff) = if PAIR {
                    (if v < t.rows { t.cols.min(8) } else { 0 }, v * t.ow)
                } else {
                    (t.cols.saturating_sub(8 * v).min(8), 8 * v)
                };
                if lanes > 0 {
                    store_c(
                        acc[rr][v],
                        t.c.add(rr * t.ldc + coff),
                        1,
                        lanes,
                        1.0,
                        t.beta,
                    );
                }
            }
        }
    }
}

impl Avx2Fma {
    /// Packs the 16 rows of `rows` (`16 x k`, row-major) transposed into
    /// `panel` (`k x 16`) for depth `0..done`, 16 at a time with AVX-512
    /// register transposes, and returns `done` (a multiple of 16; 0 without
    /// AVX-512). The caller packs the rest.
    ///
    /// # Panics
    /// If `rows` is shorter than `16k` or `panel` than `16k`.
    pub(crate) fn transpose_panel(self, rows: &[f32], k: usize, panel: &mut [f32]) -> usize {
        if !self.avx512 {
            return 0;
        }
        assert!(rows.len() >= NR * k && panel.len() >= NR * k);
        let done = k & !(NR - 1);
        let mut p = 0;
        while p < done {
            // SAFETY: the token saw AVX-512F; row c's loads cover
            // rows[c·k + p..+16] and the stores panel[(p + i)·16..+16], all
            // below 16k (p + 16 <= done <= k, asserted lengths).
            unsafe { transpose16(rows.as_ptr().add(p), k, panel.as_mut_ptr().add(p * NR)) };
            p += NR;
        }
        done
    }

    /// Whether [`Self::lstm_cell`] has an intrinsics path.
    pub(crate) fn has_lstm_cell(self) -> bool {
        self.avx512
    }

    /// The default LSTM cell (sigmoid, tanh, tanh) for one batch row, 16
    /// lanes at a time: `g` holds the gates `i, o, f, c` (`4n`), `b` the
    /// biases `Wb, Rb` (`8n`). Same formulas and operation order as
    /// `rnn::Cell`, with exp's polynomial in fused multiply-adds and each
    /// division replaced by a 14-bit reciprocal estimate plus one Newton
    /// step (within an ulp or two of the quotient).
    ///
    /// # Panics
    /// If the slices are shorter than stated or `self` lacks AVX-512.
    pub(crate) fn lstm_cell(self, g: &[f32], b: Option<&[f32]>, c: &mut [f32], h: &mut [f32]) {
        let n = c.len();
        assert!(self.avx512 && h.len() >= n && g.len() >= 4 * n);
        assert!(b.is_none_or(|b| b.len() >= 8 * n));
        // SAFETY: the token saw AVX-512F; every access is masked to lanes
        // below n, inside the lengths asserted above.
        unsafe { cell::row(g, b, n, c.as_mut_ptr(), h.as_mut_ptr()) };
    }
}

/// Vector `e^x`, sigmoid and tanh for [`Avx2Fma::lstm_cell`]: the
/// algorithms of [`crate::math`] on 16 lanes.
mod cell {
    use core::arch::x86_64::{
        __m512, __mmask16, _CMP_LT_OQ, _mm512_abs_ps, _mm512_add_ps, _mm512_castps_si512,
        _mm512_castsi512_ps, _mm512_cmp_ps_mask, _mm512_fmadd_ps, _mm512_fnmadd_ps,
        _mm512_mask_blend_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_max_ps,
        _mm512_min_ps, _mm512_mul_ps, _mm512_rcp14_ps, _mm512_set1_epi32, _mm512_set1_ps,
        _mm512_slli_epi32, _mm512_sub_epi32, _mm512_sub_ps, _mm512_xor_si512,
    };

    /// `1 / d` from the 14-bit estimate and one Newton step.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn recip(d: __m512) -> __m512 {
        let r = _mm512_rcp14_ps(d);
        _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0)))
    }

    /// [`crate::math::exp_approx`] with fused multiply-adds.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn exp(x: __m512) -> __m512 {
        const ROUND: f32 = 12_582_912.0;
        // max/min return their second operand when either is NaN: x stays NaN.
        let x = _mm512_min_ps(
            _mm512_set1_ps(88.0),
            _mm512_max_ps(_mm512_set1_ps(-87.0), x),
        );
        let t = _mm512_fmadd_ps(
            x,
            _mm512_set1_ps(core::f32::consts::LOG2_E),
            _mm512_set1_ps(ROUND),
        );
        let n = _mm512_sub_ps(t, _mm512_set1_ps(ROUND));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        // The degree-7 polynomial by Estrin's scheme (depth 3 instead of 7).
        let c = |k: f32| _mm512_set1_ps(k);
        let r2 = _mm512_mul_ps(r, r);
        let r4 = _mm512_mul_ps(r2, r2);
        let p01 = _mm512_fmadd_ps(r, c(1.0), c(1.0));
        let p23 = _mm512_fmadd_ps(r, c(1.0 / 6.0), c(0.5));
        let p45 = _mm512_fmadd_ps(r, c(1.0 / 120.0), c(1.0 / 24.0));
        let p67 = _mm512_fmadd_ps(r, c(1.0 / 5040.0), c(1.0 / 720.0));
        let lo = _mm512_fmadd_ps(r2, p23, p01);
        let hi = _mm512_fmadd_ps(r2, p67, p45);
        let p = _mm512_fmadd_ps(r4, hi, lo);
        let bias = _mm512_set1_epi32((ROUND.to_bits() - 127) as i32);
        let scale = _mm512_slli_epi32::<23>(_mm512_sub_epi32(_mm512_castps_si512(t), bias));
        _mm512_mul_ps(p, _mm512_castsi512_ps(scale))
    }

    /// [`crate::math::sigmoid_approx`].
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn sigmoid(x: __m512) -> __m512 {
        let e = exp(_mm512_sub_ps(_mm512_set1_ps(0.0), x));
        recip(_mm512_add_ps(_mm512_set1_ps(1.0), e))
    }

    /// [`crate::math::tanh_approx`].
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn tanh(x: __m512) -> __m512 {
        let ax = _mm512_abs_ps(x);
        let x2 = _mm512_mul_ps(x, x);
        let mut p = _mm512_set1_ps(62.0 / 2835.0);
        for k in [-17.0 / 315.0, 2.0 / 15.0, -1.0 / 3.0] {
            p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(k));
        }
        let small = _mm512_fmadd_ps(_mm512_mul_ps(x, x2), p, x);
        let e = exp(_mm512_add_ps(ax, ax));
        let big = _mm512_fnmadd_ps(
            _mm512_set1_ps(2.0),
            recip(_mm512_add_ps(e, _mm512_set1_ps(1.0))),
            _mm512_set1_ps(1.0),
        );
        // Give `big` the sign of x (tanh is odd).
        let sign = _mm512_xor_si512(_mm512_castps_si512(x), _mm512_castps_si512(ax));
        let big = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(big), sign));
        let is_small: __mmask16 = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(ax, _mm512_set1_ps(0.3));
        _mm512_mask_blend_ps(is_small, big, small)
    }

    /// A whole row of `n` columns, two blocks of 16 at a time (two
    /// independent dependency chains interleaved: each block is a long
    /// chain of exp, reciprocal, exp again).
    ///
    /// # Safety
    /// AVX-512F available; `g` has `4n` floats, `b` `8n`, `c` and `h` `n`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn row(g: &[f32], b: Option<&[f32]>, n: usize, c: *mut f32, h: *mut f32) {
        let mut j = 0;
        while j < n {
            let m0 = super::mask16(n - j);
            let m1 = super::mask16((n - j).saturating_sub(16));
            // SAFETY: forwarded; lanes past n are masked off (m1 is empty
            // when j + 16 >= n).
            unsafe { block2(g, b, n, j, [m0, m1], c, h) };
            j += 32;
        }
    }

    /// Columns `j..j + 32` under `masks` (16 lanes each).
    ///
    /// # Safety
    /// As [`row`]; masked-off lanes are never accessed.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn block2(
        g: &[f32],
        b: Option<&[f32]>,
        n: usize,
        j: usize,
        masks: [__mmask16; 2],
        c: *mut f32,
        h: *mut f32,
    ) {
        // SAFETY: the caller vouches for every masked lane; the pointer
        // offsets stay inside the slices for the lanes that are accessed.
        unsafe {
            let load =
                |w: usize, p: *const f32| _mm512_maskz_loadu_ps(masks[w], p.wrapping_add(16 * w));
            let gate = |w: usize, k: usize| {
                let v = load(w, g.as_ptr().wrapping_add(k * n + j));
                match b {
                    Some(b) => {
                        let wb = load(w, b.as_ptr().wrapping_add(k * n + j));
                        let rb = load(w, b.as_ptr().wrapping_add(4 * n + k * n + j));
                        _mm512_add_ps(v, _mm512_add_ps(wb, rb))
                    }
                    None => v,
                }
            };
            let i = [sigmoid(gate(0, 0)), sigmoid(gate(1, 0))];
            let f = [sigmoid(gate(0, 2)), sigmoid(gate(1, 2))];
            let z = [tanh(gate(0, 3)), tanh(gate(1, 3))];
            let o = [sigmoid(gate(0, 1)), sigmoid(gate(1, 1))];
            let cp = c.wrapping_add(j);
            let cv = [
                _mm512_fmadd_ps(f[0], load(0, cp), _mm512_mul_ps(i[0], z[0])),
                _mm512_fmadd_ps(f[1], load(1, cp), _mm512_mul_ps(i[1], z[1])),
            ];
            let hv = [tanh(cv[0]), tanh(cv[1])];
            for w in 0..2 {
                _mm512_mask_storeu_ps(cp.wrapping_add(16 * w), masks[w], cv[w]);
                let hp = h.wrapping_add(j + 16 * w);
                _mm512_mask_storeu_ps(hp, masks[w], _mm512_mul_ps(o[w], hv[w]));
            }
        }
    }
}

/// Transposes the 16x16 block at `src` (row stride `lds`) into 16
/// contiguous rows of 16 at `dst`: unpack pairs, then quads, then two rounds
/// of 128-bit lane shuffles.
///
/// # Safety
/// AVX-512F available; `src + r·lds + 0..16` (r < 16) readable and
/// `dst + 0..256` writable.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn transpose16(src: *const f32, lds: usize, dst: *mut f32) {
    use core::arch::x86_64::{
        _mm512_castpd_ps, _mm512_castps_pd, _mm512_shuffle_f32x4, _mm512_storeu_ps,
        _mm512_unpackhi_pd, _mm512_unpackhi_ps, _mm512_unpacklo_pd, _mm512_unpacklo_ps,
    };
    // SAFETY: the caller vouches for the 16 rows read and 256 floats written.
    unsafe {
        let mut r = [_mm512_setzero_ps(); 16];
        for (i, v) in r.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(src.add(i * lds));
        }
        // t: within each 128-bit lane, pairs of rows interleaved.
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        // u[4g + j]: rows 4g..4g+4 at column 4l + j of each lane l.
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
            let pd = |x, y, hi: bool| {
                let (x, y) = (_mm512_castps_pd(x), _mm512_castps_pd(y));
                _mm512_castpd_ps(if hi {
                    _mm512_unpackhi_pd(x, y)
                } else {
                    _mm512_unpacklo_pd(x, y)
                })
            };
            u[4 * g] = pd(a, c, false);
            u[4 * g + 1] = pd(a, c, true);
            u[4 * g + 2] = pd(b, d, false);
            u[4 * g + 3] = pd(b, d, true);
        }
        // v: lanes 0 and 2 (0x88) or 1 and 3 (0xdd) of two row groups.
        let mut v = [_mm512_setzero_ps(); 16];
        for j in 0..4 {
            v[j] = _mm512_shuffle_f32x4::<0x88>(u[j], u[4 + j]);
            v[4 + j] = _mm512_shuffle_f32x4::<0xdd>(u[j], u[4 + j]);
            v[8 + j] = _mm512_shuffle_f32x4::<0x88>(u[8 + j], u[12 + j]);
            v[12 + j] = _mm512_shuffle_f32x4::<0xdd>(u[8 + j], u[12 + j]);
        }
        // Column c of the block: c = 4l + j comes from lane l of group j.
        for j in 0..8 {
            _mm512_storeu_ps(
                dst.add(j * 16),
                _mm512_shuffle_f32x4::<0x88>(v[j], v[8 + j]),
            );
            _mm512_storeu_ps(
                dst.add((8 + j) * 16),
                _mm512_shuffle_f32x4::<0xdd>(v[j], v[8 + j]),
            );
        }
    }
}
