//! WebAssembly SIMD128 paths (builds with `target_feature = "simd128"`).
//!
//! The f32 GEMM of [`crate::gemm`] for everything the skinny kernels do not
//! take: B packed in [`NR`]-column panels (the layout im2col writes for
//! the convolutions, see [`crate::gemm::panel_index`]), k blocked by
//! [`KC`], and a register tile of up to [`MR`] rows × 8 columns (12
//! accumulators, 2 B vectors and 1 broadcast: 15 of the 16 xmm registers
//! V8 and other engines map v128 to on x86-64). wasm has no fused
//! multiply-add, so results differ from the AVX2 path by rounding; the
//! package tests compare every corpus model with the native runtime.
//!
//! Also: the direct convolution (`conv_direct`), one-row products over
//! column-contiguous weights (`dots1`) and over weights interleaved by 8
//! rows (`pack_rows8` / `gemv_rows8`, for weights reused across runs or
//! RNN steps), and the int8 hot loops by `i32x4.dot_i16x8_s`: the direct
//! convolution's tile (`qtile`) and the packed fully connected blocks
//! (`fc_blocks`), both bit-exact with the reference; and the default LSTM
//! cell (`lstm_cell`), four lanes of `rnn::Cell` at a time with its
//! operations in its order.
//!
//! The other skinny products and loops stay portable: the `wasm` build
//! profile compiles this crate at opt-level 2, where LLVM vectorises them
//! with SIMD128.
#![allow(
    unsafe_code,
    reason = "v128 loads and stores through raw pointers whose ranges are \
              checked by the driver; every block carries a SAFETY comment"
)]

use crate::gemm::{MatMut, MatRef, PANEL as NR, check, pack_panel};
use core::arch::wasm32::{
    f32x4_add, f32x4_extract_lane, f32x4_mul, f32x4_splat, v128, v128_load, v128_store,
};

/// Rows of a register tile.
const MR: usize = 6;
/// Depth of a cache block (a `KC x NR` panel is 16 KiB).
const KC: usize = 256;

/// Rows of the next tile when `rem` rows are left: full tiles, then 4, 2
/// and 1 (four kernel instances instead of six; the module is shipped to
/// browsers, so its size counts).
fn tile_rows(rem: usize) -> usize {
    match rem {
        MR.. => MR,
        4 | 5 => 4,
        2 | 3 => 2,
        _ => 1,
    }
}

/// Where B comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BSource<'a> {
    /// A strided matrix, packed panel by panel into a stack buffer.
    Strided(MatRef<'a>),
    /// Already packed (layout of [`crate::gemm::panel_index`]).
    Packed(&'a [f32]),
}

/// `C = alpha * A * B + beta * C` (C rows contiguous, `c.cs == 1`); with
/// `beta == 0` C is not read.
#[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
pub(crate) fn gemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef<'_>,
    b: BSource<'_>,
    beta: f32,
    c: MatMut<'_>,
) {
    assert!(m >= 1 && n >= 1 && k >= 1 && c.cs == 1);
    check("A", m, k, a.rs, a.cs, a.data.len());
    check("C", m, n, c.rs, 1, c.data.len());
    match b {
        BSource::Strided(b) => check("B", k, n, b.rs, b.cs, b.data.len()),
        BSource::Packed(p) => assert!(
            k.checked_mul(n.div_ceil(NR) * NR)
                .is_some_and(|len| p.len() >= len),
            "gemm: packed B too short"
        ),
    }
    let mut buf = [0.0f32; KC * NR];
    let mut pc = 0;
    while pc < k {
        let kc = KC.min(k - pc);
        let beta_blk = if pc == 0 { beta } else { 1.0 };
        let mut jc = 0;
        while jc < n {
            let nc = NR.min(n - jc);
            let bp: &[f32] = match b {
                BSource::Strided(b) => {
                    pack_panel(&mut buf, b, pc, kc, jc, nc);
                    &buf[..kc * NR]
                }
                BSource::Packed(p) => {
                    let start = (jc / NR) * (k * NR) + pc * NR;
                    &p[start..start + kc * NR]
                }
            };
            if m == 1 {
                // One row (a GEMV, e.g. an LSTM step at batch 1): the whole
                // panel at once, two depth steps in flight (8 independent
                // accumulator chains instead of 2).
                // SAFETY: A(0, pc..pc+kc) and C(0, jc..jc+nc) are inside
                // their slices by the checks above; the panel holds kc rows
                // of NR floats.
                unsafe {
                    row1_panel(
                        kc,
                        a.data[pc * a.cs..].as_ptr(),
                        a.cs,
                        bp.as_ptr(),
                        c.data[jc..].as_mut_ptr(),
                        nc,
                        alpha,
                        beta_blk,
                    );
                }
                jc += nc;
                continue;
            }
            for half in 0..nc.div_ceil(8) {
                let cols = (nc - 8 * half).min(8);
                let mut ic = 0;
                while ic < m {
                    let mr = tile_rows(m - ic);
                    let t = Tile {
                        kc,
                        a: a.data[ic * a.rs + pc * a.cs..].as_ptr(),
                        rsa: a.rs,
                        csa: a.cs,
                        b: bp[8 * half..].as_ptr(),
                        c: c.data[ic * c.rs + jc + 8 * half..].as_mut_ptr(),
                        rsc: c.rs,
                        cols,
                        alpha,
                        beta: beta_blk,
                    };
                    // SAFETY: A rows ic..ic+mr, columns pc..pc+kc and C rows
                    // ic..ic+mr, columns jc+8·half..+cols lie inside their
                    // slices by the checks above (mr <= m - ic, kc <= k -
                    // pc, 8·half + cols <= nc <= n - jc); the panel holds
                    // kc rows of NR floats and the kernel reads 8 floats
                    // from column 8·half <= 8 of each.
                    unsafe {
                        match mr {
                            MR => micro::<MR>(&t),
                            4 => micro::<4>(&t),
                            2 => micro::<2>(&t),
                            _ => micro::<1>(&t),
                        }
                    }
                    ic += mr;
                }
            }
            jc += nc;
        }
        pc += kc;
    }
}

/// One register tile: `C[R x cols] = alpha · A[R x kc] · B[kc x 8] + beta · C`.
struct Tile {
    kc: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    /// First of 8 columns of a panel (row stride NR).
    b: *const f32,
    c: *mut f32,
    rsc: usize,
    /// Valid columns, 1..=8.
    cols: usize,
    alpha: f32,
    beta: f32,
}

/// `C[0, 0..cols] = alpha · a[0..kc] · panel[kc x NR] + beta · C`.
///
/// # Safety
/// `a + p·csa` for p < kc, `kc·NR` floats at `b`, and `c + (0..cols)`
/// (cols <= NR) must be valid.
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
unsafe fn row1_panel(
    kc: usize,
    a: *const f32,
    csa: usize,
    b: *const f32,
    c: *mut f32,
    cols: usize,
    alpha: f32,
    beta: f32,
) {
    let zero = f32x4_splat(0.0);
    let mut even = [zero; 4];
    let mut odd = [zero; 4];
    // SAFETY: every address is one the caller vouches for.
    unsafe {
        let mut p = 0;
        while p + 2 <= kc {
            let a0 = f32x4_splat(*a.add(p * csa));
            let a1 = f32x4_splat(*a.add((p + 1) * csa));
            let b0 = b.add(p * NR);
            let b1 = b0.add(NR);
            for v in 0..4 {
                even[v] = f32x4_add(even[v], f32x4_mul(a0, v128_load(b0.add(4 * v).cast())));
                odd[v] = f32x4_add(odd[v], f32x4_mul(a1, v128_load(b1.add(4 * v).cast())));
            }
            p += 2;
        }
        if p < kc {
            let a0 = f32x4_splat(*a.add(p * csa));
            let b0 = b.add(p * NR);
            for v in 0..4 {
                even[v] = f32x4_add(even[v], f32x4_mul(a0, v128_load(b0.add(4 * v).cast())));
            }
        }
        let sum: [v128; 4] = core::array::from_fn(|v| f32x4_add(even[v], odd[v]));
        store8(sum[0], sum[1], c, cols.min(8), alpha, beta);
        if cols > 8 {
            store8(sum[2], sum[3], c.add(8), cols - 8, alpha, beta);
        }
    }
}

/// # Safety
/// `A(r, p)` for r < R, p < kc; 8 floats at `b + p·NR` for p < kc; and
/// `C(r, 0..cols)` must be valid.
#[inline(always)]
unsafe fn micro<const R: usize>(t: &Tile) {
    let zero = f32x4_splat(0.0);
    let mut acc = [[zero; 2]; R];
    // SAFETY: every address is one the caller vouches for.
    unsafe {
        let mut ap = t.a;
        let mut bp = t.b;
        for _ in 0..t.kc {
            let b0 = v128_load(bp.cast::<v128>());
            let b1 = v128_load(bp.add(4).cast::<v128>());
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = f32x4_splat(*ap.add(r * t.rsa));
                acc[0] = f32x4_add(acc[0], f32x4_mul(av, b0));
                acc[1] = f32x4_add(acc[1], f32x4_mul(av, b1));
            }
            ap = ap.add(t.csa);
            bp = bp.add(NR);
        }
        // One call per row at a constant index (a loop LLVM unrolls), so
        // the accumulators stay in registers: indexed in a loop that is
        // not unrolled, they lived on the stack, stored every depth step.
        for (r, acc) in acc.into_iter().enumerate() {
            store8(acc[0], acc[1], t.c.add(r * t.rsc), t.cols, t.alpha, t.beta);
        }
    }
}

/// Direct convolution of one (batch item, group) as an implicit GEMM (see
/// the AVX2 `conv_direct`): `y[mg, oh·ow] = w[mg, k] · B + beta · y`, where
/// row `(ci, r, s)` of B, for a strip of up to 8 output columns starting
/// at `(oy, ox0)`, is the contiguous run at
/// `xp[ci·plane + oy·sh·row + ox0 + tap(r, s)..]` of the padded input of
/// [`crate::conv::Direct`]. Output rows are taken one at a time (the
/// padded input's `pair` hint is for the wider AVX tiles).
pub(crate) fn conv_direct(
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
    let ohw = d.oh * d.ow;
    for oy in 0..d.oh {
        let mut ox0 = 0;
        while ox0 < d.ow {
            let cols = 8.min(d.ow - ox0);
            let mut ib = 0;
            while ib < mg {
                let mr = tile_rows(mg - ib);
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
                    beta,
                };
                // SAFETY: weight rows ib..ib+mr (k floats each) and the C
                // strip (mr rows of `cols` floats at stride oh·ow) are
                // inside `w` and `y`, and every B load
                // starts at a tap position inside the buffer and reads 8
                // floats, as `Direct::checked_taps` checked.
                unsafe {
                    match mr {
                        MR => conv_micro::<MR>(&t),
                        4 => conv_micro::<4>(&t),
                        2 => conv_micro::<2>(&t),
                        _ => conv_micro::<1>(&t),
                    }
                }
                ib += mr;
            }
            ox0 += cols;
        }
    }
}

/// One tile of [`conv_direct`]: `R` output channels × up to 8 columns.
struct ConvTile<'t> {
    a: *const f32,
    lda: usize,
    b: *const f32,
    taps: &'t [usize],
    cg: usize,
    plane: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    beta: f32,
}

/// # Safety
/// `a + r·lda + kk` for r < R, kk < cg·taps; 8 floats at `b + ci·plane +
/// tap`; `c + r·ldc + (0..cols)`, all valid.
#[inline(always)]
unsafe fn conv_micro<const R: usize>(t: &ConvTile<'_>) {
    let zero = f32x4_splat(0.0);
    let mut acc = [[zero; 2]; R];
    let ntaps = t.taps.len();
    // SAFETY: every address is one the caller vouches for.
    unsafe {
        for ci in 0..t.cg {
            let bc = t.b.add(ci * t.plane);
            let ac = t.a.add(ci * ntaps);
            for (q, &tap) in t.taps.iter().enumerate() {
                let b0 = v128_load(bc.add(tap).cast::<v128>());
                let b1 = v128_load(bc.add(tap + 4).cast::<v128>());
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = f32x4_splat(*ac.add(r * t.lda + q));
                    acc[0] = f32x4_add(acc[0], f32x4_mul(av, b0));
                    acc[1] = f32x4_add(acc[1], f32x4_mul(av, b1));
                }
            }
        }
        for (r, acc) in acc.into_iter().enumerate() {
            store8_inline(acc[0], acc[1], t.c.add(r * t.ldc), t.cols, 1.0, t.beta);
        }
    }
}

/// `C[0..cols] = alpha · acc + beta · C` (C not read when `beta == 0`).
///
/// # Safety
/// `c + (0..cols)` valid, `cols <= 8`.
#[inline(never)]
unsafe fn store8(a0: v128, a1: v128, c: *mut f32, cols: usize, alpha: f32, beta: f32) {
    // SAFETY: passed on from the caller.
    unsafe { store8_inline(a0, a1, c, cols, alpha, beta) }
}

/// [`store8`] inlined (the convolution's short tiles would pay for the
/// call).
///
/// # Safety
/// As for [`store8`].
#[inline(always)]
unsafe fn store8_inline(a0: v128, a1: v128, c: *mut f32, cols: usize, alpha: f32, beta: f32) {
    let acc = [a0, a1];
    let alpha = f32x4_splat(alpha);
    // SAFETY: the caller vouches for C(0..cols).
    unsafe {
        for (v, &x) in acc.iter().enumerate() {
            if cols <= 4 * v {
                break;
            }
            let y = f32x4_mul(x, alpha);
            let q = c.add(4 * v);
            if cols >= 4 * (v + 1) {
                let y = if beta == 0.0 {
                    y
                } else {
                    f32x4_add(y, f32x4_mul(f32x4_splat(beta), v128_load(q.cast())))
                };
                v128_store(q.cast::<v128>(), y);
            } else {
                let lanes = [
                    f32x4_extract_lane::<0>(y),
                    f32x4_extract_lane::<1>(y),
                    f32x4_extract_lane::<2>(y),
                    f32x4_extract_lane::<3>(y),
                ];
                for (l, &yl) in lanes.iter().enumerate().take(cols - 4 * v) {
                    let e = q.add(l);
                    *e = if beta == 0.0 { yl } else { beta * *e + yl };
                }
            }
        }
    }
}

/// One-row product against a B whose columns are contiguous
/// (`B(p, j) = b[j·cs + p]`, the layout of ONNX Gemm weights with
/// `transB`): `C(0, j) = alpha · a·B(:, j) + beta · C(0, j)`, eight columns
/// at a time, one accumulator each, so each load of `a` feeds eight
/// products (5% faster in V8 than four columns with two accumulators; twelve
/// columns spill and run 1.4× slower).
#[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
pub(crate) fn dots1(
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: MatRef<'_>,
    beta: f32,
    c: &mut MatMut<'_>,
) {
    assert!(b.rs == 1 && a.len() >= k);
    check("B", k, n, b.rs, b.cs, b.data.len());
    check("C", 1, n, c.rs, c.cs, c.data.len());
    let mut store = |j: usize, s: f32| {
        let cj = &mut c.data[j * c.cs];
        *cj = if beta == 0.0 {
            alpha * s
        } else {
            alpha * s + beta * *cj
        };
    };
    let hsum = |v: v128| {
        f32x4_extract_lane::<0>(v)
            + f32x4_extract_lane::<1>(v)
            + f32x4_extract_lane::<2>(v)
            + f32x4_extract_lane::<3>(v)
    };
    let k4 = k - k % 4;
    let mut j = 0;
    while j < n {
        let cols = 8.min(n - j);
        let mut acc = [f32x4_splat(0.0); 8];
        let base: [usize; 8] = core::array::from_fn(|r| (j + r.min(cols - 1)) * b.cs);
        // SAFETY: the checks above put B(0..k, j..j+cols) inside `b` (a
        // column past `cols` repeats the last real one) and `a` has k
        // floats; every load reads 4 floats below k4 <= k.
        unsafe {
            let ap = a.as_ptr();
            let bp = b.data.as_ptr();
            let mut p = 0;
            while p < k4 {
                let a0 = v128_load(ap.add(p).cast::<v128>());
                for (acc, &o) in acc.iter_mut().zip(&base) {
                    *acc = f32x4_add(*acc, f32x4_mul(a0, v128_load(bp.add(o + p).cast())));
                }
                p += 4;
            }
        }
        for (r, &acc) in acc.iter().enumerate().take(cols) {
            let col = &b.data[base[r]..base[r] + k];
            let tail: f32 = a[k4..k].iter().zip(&col[k4..]).map(|(x, y)| x * y).sum();
            store(j + r, hsum(acc) + tail);
        }
        j += cols;
    }
}

/// Whether [`gemv_rows8`] takes an `n x k` weight matrix.
pub(crate) fn rows8_suits(n: usize, k: usize) -> bool {
    n > 0 && k > 0 && n.is_multiple_of(8) && k.is_multiple_of(4)
}

/// Packs `w` (`n x k` row-major; [`rows8_suits`]) for [`gemv_rows8`]: each
/// block of 8 rows as `k / 4` groups of the 8 rows' next 4 floats, so the
/// product streams one pointer with constant offsets.
pub(crate) fn pack_rows8(w: &[f32], n: usize, k: usize, out: &mut [f32]) {
    let (w, out) = (&w[..n * k], &mut out[..n * k]);
    for (blk, ob) in w.chunks_exact(8 * k).zip(out.chunks_exact_mut(8 * k)) {
        for (r, row) in blk.chunks_exact(k).enumerate() {
            for (p4, v) in row.chunks_exact(4).enumerate() {
                ob[32 * p4 + 4 * r..][..4].copy_from_slice(v);
            }
        }
    }
}

/// `c[j] += Σ_p a[p] · W[j, p]` on `packed` from [`pack_rows8`]: eight rows
/// at a time, one accumulator of four depth lanes each, summed as
/// [`dots1`] sums (the same bits as it gives with `alpha = beta = 1`).
pub(crate) fn gemv_rows8(n: usize, k: usize, a: &[f32], packed: &[f32], c: &mut [f32]) {
    assert!(rows8_suits(n, k) && a.len() >= k && packed.len() >= n * k && c.len() >= n);
    let a = &a[..k];
    for (blk, cb) in packed[..n * k]
        .chunks_exact(8 * k)
        .zip(c.chunks_exact_mut(8))
    {
        let mut acc = [f32x4_splat(0.0); 8];
        // SAFETY: `blk` holds 8k floats and group p4 reads its 32 at 32·p4
        // (p4 < k/4); `a` holds k floats and the load reads 4 at 4·p4.
        unsafe {
            let (ap, bp) = (a.as_ptr(), blk.as_ptr());
            for p4 in 0..k / 4 {
                let a0 = v128_load(ap.add(4 * p4).cast::<v128>());
                let q = bp.add(32 * p4);
                for (r, acc) in acc.iter_mut().enumerate() {
                    *acc = f32x4_add(*acc, f32x4_mul(a0, v128_load(q.add(4 * r).cast())));
                }
            }
        }
        for (cj, v) in cb.iter_mut().zip(acc) {
            let s = f32x4_extract_lane::<0>(v)
                + f32x4_extract_lane::<1>(v)
                + f32x4_extract_lane::<2>(v)
                + f32x4_extract_lane::<3>(v);
            *cj += s;
        }
    }
}

/// `[a0 + a1, a2 + a3, b0 + b1, b2 + b3]`: two dot products' pair sums
/// each, folded into four totals.
#[inline(always)]
fn fold_pairs(a: v128, b: v128) -> v128 {
    use core::arch::wasm32::{i32x4_add, i32x4_shuffle};
    i32x4_add(
        i32x4_shuffle::<0, 2, 4, 6>(a, b),
        i32x4_shuffle::<1, 3, 5, 7>(a, b),
    )
}

/// The int8 direct convolution's register tile ([`crate::qconv::Tile`]) by
/// `i32x4.dot_i16x8_s`. Four positions at a time: their channel words
/// (bytes `u8(x + 128)`, one v128) are widened once into two i16x8 halves
/// and feed all four output channels, whose weight word is loaded splatted
/// and widened to `[w0, w1, w2, w3, w0, w1, w2, w3]`; each dot gives two
/// positions' channel-pair sums, kept in pair accumulators and folded once
/// per tile. Products and pair sums fit i32 and the sums wrap like the
/// reference's, so the bytes are the reference's. Writes `acc` up to
/// `lanes` rounded up to 4 (inside the tile's `CHUNK` row).
pub(crate) fn qtile(t: crate::qconv::Tile<'_>) {
    use crate::qconv::{CHUNK, MR};
    use core::arch::wasm32::{
        i16x8_extend_low_i8x16, i32x4_add, i32x4_dot_i16x8, u16x8_extend_high_u8x16,
        u16x8_extend_low_u8x16, u32x4_splat, v128_load32_splat,
    };
    let k4 = t.taps.len() * t.c4;
    let width = t.lanes.div_ceil(4) * 4;
    if t.rows == 0 || t.rows > MR || width > CHUNK || k4 == 0 {
        return;
    }
    // Every read below, checked once: weights of `rows` rows, and inputs
    // up to the last tap's last channel word plus `width` positions.
    assert!(t.a.len() >= t.rows * k4 * 4 && t.acc.len() >= MR * CHUNK);
    let reach =
        t.taps.iter().map(|&o| o as usize).max().unwrap_or(0) + (t.c4 - 1) * t.cstride + width;
    assert!(t.b.len() >= reach, "qtile: input shorter than its taps");
    // Rows past `rows` repeat the last one; their sums are not stored.
    let row: [usize; MR] = core::array::from_fn(|r| r.min(t.rows - 1) * k4 * 4);
    let z = u32x4_splat(0);
    for g in (0..width).step_by(4) {
        let mut acc = [[z; 2]; MR];
        // SAFETY: the asserts above bound every load: weight bytes
        // row[r] + 4·(ti·c4 + ci) + 4 <= rows·k4·4 <= a.len(), input words
        // off + ci·cstride + g + 4 <= reach <= b.len().
        unsafe {
            let (ap, bp) = (t.a.as_ptr(), t.b.as_ptr());
            for (ti, &off) in t.taps.iter().enumerate() {
                for ci in 0..t.c4 {
                    let x = v128_load(bp.add(off as usize + ci * t.cstride + g).cast());
                    let (xl, xh) = (u16x8_extend_low_u8x16(x), u16x8_extend_high_u8x16(x));
                    let i = 4 * (ti * t.c4 + ci);
                    for (acc, &ro) in acc.iter_mut().zip(&row) {
                        let w = i16x8_extend_low_i8x16(v128_load32_splat(ap.add(ro + i).cast()));
                        acc[0] = i32x4_add(acc[0], i32x4_dot_i16x8(xl, w));
                        acc[1] = i32x4_add(acc[1], i32x4_dot_i16x8(xh, w));
                    }
                }
            }
        }
        for (r, [lo, hi]) in acc.iter().enumerate().take(t.rows) {
            let v = fold_pairs(*lo, *hi);
            let out = &mut t.acc[r * CHUNK + g..][..4];
            // SAFETY: `out` is four i32, the 16 bytes v128_store writes.
            unsafe { v128_store(out.as_mut_ptr().cast(), v) };
        }
    }
}

/// The packed int8 fully connected layer's blocks ([`crate::qfc::Blocks`])
/// by `i32x4.dot_i16x8_s`: per input word, its four unsigned bytes are
/// splatted and widened to `[x0, x1, x2, x3, x0, x1, x2, x3]`; each 16-byte
/// weight vector (4 units × 4 bytes) widens to two units per half, and a
/// dot gives each unit's two byte-pair sums, kept in pair accumulators and
/// folded once per block. Exact wrapping `i32` sums: the reference's bytes.
pub(crate) fn fc_blocks(t: crate::qfc::Blocks<'_>) {
    use crate::qfc::UNITS;
    use core::arch::wasm32::{
        i16x8_extend_high_i8x16, i16x8_extend_low_i8x16, i32x4_add, i32x4_dot_i16x8,
        u16x8_extend_low_u8x16, u32x4_splat,
    };
    let k4 = t.x.len();
    for v in 0..t.blocks.min(4) {
        let wb = &t.w[v * k4 * UNITS * 4..][..k4 * UNITS * 4];
        let z = u32x4_splat(0);
        // acc[q] holds units 2q, 2q + 1 as (pair 0-1, pair 2-3) lanes.
        let mut acc = [z; 8];
        // SAFETY: group g reads the 64 bytes at 64·g of `wb`, which holds
        // k4 groups.
        unsafe {
            let wp = wb.as_ptr();
            for (g, &xw) in t.x.iter().enumerate() {
                let xx = u16x8_extend_low_u8x16(u32x4_splat(xw));
                for (q, acc) in acc.chunks_exact_mut(2).enumerate() {
                    let w = v128_load(wp.add(64 * g + 16 * q).cast());
                    acc[0] = i32x4_add(acc[0], i32x4_dot_i16x8(xx, i16x8_extend_low_i8x16(w)));
                    acc[1] = i32x4_add(acc[1], i32x4_dot_i16x8(xx, i16x8_extend_high_i8x16(w)));
                }
            }
        }
        let out = &mut t.acc[v * UNITS..][..UNITS];
        for (o, pair) in out.chunks_exact_mut(4).zip(acc.chunks_exact(2)) {
            let s = fold_pairs(pair[0], pair[1]);
            // SAFETY: `o` is four i32, the 16 bytes v128_store writes.
            unsafe { v128_store(o.as_mut_ptr().cast(), s) };
        }
    }
}

/// [`crate::math::exp_approx`] on four lanes, its operations in its order
/// (wasm has no fused multiply-add, so the bits are the scalar code's).
#[inline(always)]
fn exp4(x: v128) -> v128 {
    use core::arch::wasm32::{
        f32x4_pmax, f32x4_pmin, f32x4_sub, i32x4_shl, i32x4_splat, i32x4_sub,
    };
    const ROUND: f32 = 12_582_912.0;
    let k = f32x4_splat;
    // pmax(x, lo) is `x < lo ? lo : x`, as the scalar clamp: NaN stays.
    let x = f32x4_pmin(f32x4_pmax(x, k(-87.0)), k(88.0));
    let t = f32x4_add(f32x4_mul(x, k(core::f32::consts::LOG2_E)), k(ROUND));
    let n = f32x4_sub(t, k(ROUND));
    let r = f32x4_sub(
        f32x4_sub(x, f32x4_mul(n, k(0.693_359_4))),
        f32x4_mul(n, k(-2.121_944_4e-4)),
    );
    let mut p = k(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = f32x4_add(f32x4_mul(p, r), k(c));
    }
    let bias = i32x4_splat((ROUND.to_bits() - 127) as i32);
    f32x4_mul(p, i32x4_shl(i32x4_sub(t, bias), 23))
}

/// [`crate::math::sigmoid_approx`] on four lanes.
#[inline(always)]
fn sigmoid4(x: v128) -> v128 {
    use core::arch::wasm32::{f32x4_div, f32x4_neg};
    let one = f32x4_splat(1.0);
    f32x4_div(one, f32x4_add(one, exp4(f32x4_neg(x))))
}

/// [`crate::math::tanh_approx`] on four lanes.
#[inline(always)]
fn tanh4(x: v128) -> v128 {
    use core::arch::wasm32::{f32x4_div, f32x4_lt, f32x4_neg, f32x4_sub, v128_bitselect};
    let k = f32x4_splat;
    let neg = f32x4_lt(x, k(0.0));
    let ax = v128_bitselect(f32x4_neg(x), x, neg);
    let x2 = f32x4_mul(x, x);
    let mut p = k(62.0 / 2835.0);
    for c in [-17.0 / 315.0, 2.0 / 15.0, -1.0 / 3.0] {
        p = f32x4_add(f32x4_mul(p, x2), k(c));
    }
    let small = f32x4_add(x, f32x4_mul(f32x4_mul(x, x2), p));
    let e = exp4(f32x4_mul(k(2.0), ax));
    let big = f32x4_sub(k(1.0), f32x4_div(k(2.0), f32x4_add(e, k(1.0))));
    let big = v128_bitselect(f32x4_neg(big), big, neg);
    v128_bitselect(small, big, f32x4_lt(ax, k(0.3)))
}

/// The default LSTM cell for one batch row ([`crate::rnn::Cell`]): four
/// columns at a time by the scalar cell's operations in its order, the
/// last `n % 4` columns by the scalar cell. V8 keeps
/// these few live vectors in registers, where LLVM's vectorisation of
/// the portable cell spilled.
#[inline(never)]
pub(crate) fn lstm_cell(cell: crate::rnn::Cell<'_>) {
    let n = cell.c.len();
    let (c, h, g) = (cell.c, &mut cell.h[..n], &cell.g[..4 * n]);
    assert!(cell.b.is_none_or(|b| b.len() >= 8 * n));
    let n4 = n - n % 4;
    let ld = |s: &[f32], at: usize| -> v128 {
        // SAFETY: callers pass `at + 4 <= s.len()` (bounds below).
        unsafe { v128_load(s[at..at + 4].as_ptr().cast()) }
    };
    for j in (0..n4).step_by(4) {
        // Gate order i, o, f, c; biases Wb then Rb, added as `g + (wb + rb)`.
        let gate = |q: usize| match cell.b {
            Some(b) => f32x4_add(
                ld(g, q * n + j),
                f32x4_add(ld(b, q * n + j), ld(b, 4 * n + q * n + j)),
            ),
            None => ld(g, q * n + j),
        };
        let (gi, go, gf, gc) = (gate(0), gate(1), gate(2), gate(3));
        let cl = f32x4_add(
            f32x4_mul(sigmoid4(gf), ld(c, j)),
            f32x4_mul(sigmoid4(gi), tanh4(gc)),
        );
        let hl = f32x4_mul(sigmoid4(go), tanh4(cl));
        // SAFETY: j + 4 <= n4 <= n = c.len() = h.len().
        unsafe {
            v128_store(c[j..j + 4].as_mut_ptr().cast(), cl);
            v128_store(h[j..j + 4].as_mut_ptr().cast(), hl);
        }
    }
    for j in n4..n {
        crate::rnn::cell_block::<1>(g, cell.b, n, j, &mut c[j..=j], &mut h[j..=j]);
    }
}
