//! General matrix multiply `C = alpha * op(A) * op(B) + beta * C` (row-major f32), with GEMV-shaped fast paths.
//!
//! Dispatch (the instruction set is chosen at run time: AVX2+FMA intrinsics
//! on x86_64 with the `std` feature and a capable CPU, else portable code):
//! * `m <= 4` (or `n <= 4`, by computing `Cᵀ = op(B)ᵀ op(A)ᵀ`): dedicated
//!   skinny kernels, either "row axpy" (B contiguous along `n`: accumulate
//!   `A(i, p) * B(p, j..)` over `p` for a strip of columns kept in registers)
//!   or "dot" (A rows and B columns contiguous along `k`, several dot
//!   products at once). The portable versions use multiple accumulators that
//!   LLVM auto-vectorises.
//! * everything else: on AVX2, a packed kernel (B packed in 16-column panels
//!   on the stack, 6x16 register tiles, k blocked by 256); portable:
//!   `matrixmultiply::sgemm` (it takes row/column strides, so transposes cost
//!   nothing).
//!
//! `Engine` exposes the same machinery to the convolutions (B pre-packed
//! by im2col, direct convolution, AVX2 builds of portable loops).

#[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
use crate::simd_x86::Avx2Fma;

/// Largest `m` (or `n`) handled by the skinny kernels.
const SKINNY: usize = 4;

/// Width of a packed B panel (see [`Engine::b_panels`]).
pub(crate) const PANEL: usize = 16;

/// Strided read-only matrix: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl MatRef<'_> {
    /// The transposed view (swaps the strides).
    fn t(self) -> Self {
        Self {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// Strided mutable matrix: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Debug)]
pub(crate) struct MatMut<'a> {
    pub(crate) data: &'a mut [f32],
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

/// One past the largest index of a non-empty `rows x cols` strided matrix
/// (`None` on overflow).
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    rows.checked_sub(1)?
        .checked_mul(rs)?
        .checked_add(cols.checked_sub(1)?.checked_mul(cs)?)?
        .checked_add(1)
}

/// Asserts that every element of the non-empty `rows x cols` view lies inside `len`.
pub(crate) fn check(what: &str, rows: usize, cols: usize, rs: usize, cs: usize, len: usize) {
    assert!(
        extent(rows, cols, rs, cs).is_some_and(|e| e <= len),
        "gemm: {what} ({rows}x{cols}, strides {rs},{cs}) exceeds its slice of {len}"
    );
}

/// Whether this build runs a one-row product `x · Wᵀ` (`W` row-major
/// `n x k`) faster over `W` repacked once by [`pack_rows8`] than over `W`
/// as stored: the SIMD128 build, for shapes [`gemv_rows8`] takes. A host
/// that keeps constant weights across runs (the runtimes' sessions) packs
/// them once.
pub fn rows8(n: usize, k: usize) -> bool {
    Engine::detect().rows8(n, k)
}

/// Writes `w` (`n x k` row-major) into `out` (`n·k` floats) in the layout
/// [`gemv_rows8`] reads. Only where [`rows8`] holds.
///
/// # Panics
/// If [`rows8`] does not hold or a slice is shorter than `n·k`.
pub fn pack_rows8(w: &[f32], n: usize, k: usize, out: &mut [f32]) {
    assert!(rows8(n, k), "pack_rows8: not a rows8 shape on this build");
    Engine::detect().pack_rows8(w, n, k, out);
}

/// `c[j] += Σ_p a[p] · W[j, p]` for `j < n` over `packed` from
/// [`pack_rows8`]. Not inlined: it must be compiled with the kernels.
///
/// # Panics
/// If [`rows8`] does not hold or a slice is too short.
#[inline(never)]
pub fn gemv_rows8(n: usize, k: usize, a: &[f32], packed: &[f32], c: &mut [f32]) {
    assert!(rows8(n, k), "gemv_rows8: not a rows8 shape on this build");
    Engine::detect().gemv_rows8(n, k, a, packed, c);
}

/// Instruction set of the optimised paths.
#[derive(Debug, Clone, Copy)]
enum Isa {
    #[cfg_attr(
        all(target_arch = "wasm32", target_feature = "simd128"),
        allow(dead_code, reason = "the wasm build always has SIMD128")
    )]
    Portable,
    /// WebAssembly SIMD128 (chosen at compile time).
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    Wasm,
    #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
    Avx2(Avx2Fma),
}

/// Optimised paths for the other kernels (convolution, pooling), bound to
/// one instruction set: GEMM with a caller-built B operand (pre-packed in
/// panels on the AVX2 path), direct convolution, and AVX2 builds of
/// portable loops.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Engine(Isa);

impl Engine {
    /// The engine for this CPU.
    pub(crate) fn detect() -> Self {
        Self(detect())
    }

    /// The portable engine (row-major B, no intrinsics).
    #[cfg(test)]
    pub(crate) fn portable() -> Self {
        Self(Isa::Portable)
    }

    /// The SIMD engines this CPU can run: AVX2 alone, then with the
    /// AVX-512 tiles when available (tests check each against the reference).
    #[cfg(all(test, target_arch = "x86_64"))]
    pub(crate) fn simd() -> std::vec::Vec<Self> {
        let mut v = std::vec::Vec::new();
        if let Some(t) = Avx2Fma::detect() {
            v.push(Self(Isa::Avx2(t.without_avx512())));
            if t.has_avx512() {
                v.push(Self(Isa::Avx2(t)));
            }
        }
        v
    }

    /// Calls `f(a, x, y)` compiled for this engine's instruction set: on
    /// the AVX2 engine an `#[inline(always)]` function item `f` is inlined
    /// into an AVX2+FMA function and auto-vectorised with 256-bit vectors.
    #[inline(always)]
    pub(crate) fn vectorized<A: ?Sized, F: Fn(&A, &[f32], &mut [f32])>(
        self,
        f: F,
        a: &A,
        x: &[f32],
        y: &mut [f32],
    ) {
        match self.0 {
            #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
            Isa::Avx2(t) => t.vectorized(f, a, x, y),
            _ => f(a, x, y),
        }
    }

    /// Runs `k` compiled for this engine's instruction set (like
    /// [`Self::vectorized`], for loops over several mutable slices).
    #[inline(always)]
    pub(crate) fn run<K: Kernel>(self, k: K) {
        match self.0 {
            #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
            Isa::Avx2(t) => t.run_kernel(k),
            _ => k.run(),
        }
    }

    /// One batch row of the default LSTM cell (see `rnn::Cell`): gates `g`
    /// (`4n`), biases `b` (`8n`), state `c` and output `h` (`n` = `c.len()`).
    pub(crate) fn lstm_cell(self, cell: crate::rnn::Cell<'_>) {
        match self.0 {
            #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
            Isa::Avx2(t) if t.has_lstm_cell() => t.lstm_cell(cell.g, cell.b, cell.c, cell.h),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Wasm => crate::simd_wasm::lstm_cell(cell),
            _ => self.run(cell),
        }
    }

    /// `C = A · Bᵀ + beta · C` on this engine, `A` row-major `m x k`, `bt`
    /// row-major `n x k` (ONNX weights as stored), no packing.
    pub(crate) fn gemm_bt(
        self,
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        bt: &[f32],
        beta: f32,
        c: &mut [f32],
    ) {
        gemm_with(self.0, m, n, k, 1.0, a, false, bt, true, beta, c);
    }

    /// Whether a one-row product against ONNX-layout weights (`x · Wᵀ`,
    /// W row-major `n x k`) is faster through [`Self::gemm_bt`] on W as it is than
    /// through [`Self::pack_bt`] + [`Self::gemm_nn`] (the SIMD128 engine,
    /// whose `dots1` reads W in place: the packing would cost a pass over
    /// W per run).
    pub(crate) fn gemv_unpacked(self) -> bool {
        match self.0 {
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Wasm => true,
            _ => false,
        }
    }

    /// Whether [`Self::pack_rows8`] and [`Self::gemv_rows8`] take an
    /// `n x k` weight matrix (the SIMD128 engine: a one-row product over
    /// interleaved rows, for weights reused across an RNN's steps).
    pub(crate) fn rows8(self, n: usize, k: usize) -> bool {
        match self.0 {
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Wasm => crate::simd_wasm::rows8_suits(n, k),
            _ => {
                let _ = (n, k);
                false
            }
        }
    }

    /// Packs `w` (`n x k` row-major) into `out` (`n·k` floats) for
    /// [`Self::gemv_rows8`]. Only where [`Self::rows8`] holds.
    pub(crate) fn pack_rows8(self, w: &[f32], n: usize, k: usize, out: &mut [f32]) {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        crate::simd_wasm::pack_rows8(w, n, k, out);
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        unreachable!(
            "pack_rows8 without rows8 ({:?}, {n}x{k}, {} {})",
            self,
            w.len(),
            out.len()
        );
    }

    /// `c[j] += Σ_p a[p] · W[j, p]` on `packed` from [`Self::pack_rows8`].
    pub(crate) fn gemv_rows8(self, n: usize, k: usize, a: &[f32], packed: &[f32], c: &mut [f32]) {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        crate::simd_wasm::gemv_rows8(n, k, a, packed, c);
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        unreachable!(
            "gemv_rows8 without rows8 ({:?}, {n}x{k}, {} {} {})",
            self,
            a.len(),
            packed.len(),
            c.len()
        );
    }

    /// Whether [`Self::conv_direct`] is available.
    pub(crate) fn has_direct_conv(self) -> bool {
        match self.0 {
            #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
            Isa::Avx2(_) => true,
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Wasm => true,
            Isa::Portable => false,
        }
    }

    /// Direct convolution of one (batch item, group): `y[mg, oh·ow] =
    /// w[mg, cg·kh·kw] ⋆ xp + beta · y`, `xp` the zero-padded input of
    /// [`crate::conv::Direct`]. Only on engines with [`Self::has_direct_conv`].
    pub(crate) fn conv_direct(
        self,
        d: &crate::conv::Direct,
        mg: usize,
        w: &[f32],
        xp: &[f32],
        beta: f32,
        y: &mut [f32],
    ) {
        match self.0 {
            #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
            Isa::Avx2(t) => t.conv_direct(d, mg, w, xp, beta, y),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Wasm => crate::simd_wasm::conv_direct(d, mg, w, xp, beta, y),
            Isa::Portable => {
                let _ = (d, mg, w, xp, beta, y);
                unreachable!("conv_direct needs has_direct_conv");
            }
        }
    }

    /// Whether [`Self::gemm_nn`] wants B packed in panels: element `(p, j)`
    /// of the `k x n` B at [`panel_index`], panels zero-padded to
    /// [`PANEL`] columns, [`Self::b_len`] floats in all. Otherwise B is plain
    /// row-major.
    pub(crate) fn b_panels(self) -> bool {
        !matches!(self.0, Isa::Portable)
    }

    /// Floats needed for a `k x n` B in this engine's layout (an upper bound
    /// for either layout).
    pub(crate) fn b_len(k: usize, n: usize) -> usize {
        k * n.div_ceil(PANEL) * PANEL
    }

    /// Writes `B = btᵀ` (`k x n`; `bt` is `n x k` row-major, the layout of
    /// ONNX weights applied as `x · Wᵀ`) into `out` ([`Self::b_len`] floats)
    /// in the layout [`Self::gemm_nn`] wants.
    #[inline(never)]
    pub(crate) fn pack_bt(self, bt: &[f32], k: usize, n: usize, out: &mut [f32]) {
        let bt = &bt[..n * k];
        if !self.b_panels() {
            for (j, row) in bt.chunks_exact(k.max(1)).enumerate().take(n) {
                for (p, &v) in row.iter().enumerate() {
                    out[p * n + j] = v;
                }
            }
            return;
        }
        // Panel q holds rows q·PANEL.. of bt, transposed: k rows of PANEL.
        for (q, panel) in out[..Self::b_len(k, n)]
            .chunks_exact_mut((k * PANEL).max(1))
            .enumerate()
        {
            let cols = PANEL.min(n - q * PANEL);
            // Whole 16x16 blocks by register transposes where the CPU can;
            // the depth from `done` on is packed below.
            let done = match self.0 {
                #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
                Isa::Avx2(t) if cols == PANEL => {
                    t.transpose_panel(&bt[q * PANEL * k..(q + 1) * PANEL * k], k, panel)
                }
                _ => 0,
            };
            if cols < PANEL {
                panel.fill(0.0);
            }
            for c in 0..cols {
                let row = &bt[(q * PANEL + c) * k..][..k];
                for (p, &v) in row.iter().enumerate().skip(done) {
                    panel[p * PANEL + c] = v;
                }
            }
        }
    }

    /// `C = A * B + beta * C` for row-major `A` (m×k) and `C` (m×n), `B` in
    /// the layout given by [`Self::b_panels`].
    #[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
    pub(crate) fn gemm_nn(
        self,
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
        beta: f32,
        c: &mut [f32],
    ) {
        match self.0 {
            Isa::Portable => gemm_with(self.0, m, n, k, 1.0, a, false, b, false, beta, c),
            #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
            Isa::Avx2(t) => {
                if let Some((a, c)) = packed_operands(m, n, k, a, beta, c) {
                    t.gemm_prepacked(m, n, k, 1.0, a, b, beta, c);
                }
            }
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Wasm => {
                if let Some((a, c)) = packed_operands(m, n, k, a, beta, c) {
                    let b = crate::simd_wasm::BSource::Packed(b);
                    crate::simd_wasm::gemm(m, n, k, 1.0, a, b, beta, c);
                }
            }
        }
    }
}

/// Row-major views of `A` (m×k) and `C` (m×n) for the packed kernels, or
/// `None` when there is nothing to multiply (C is then scaled by `beta`).
#[cfg_attr(
    not(any(
        all(target_arch = "x86_64", any(feature = "std", test)),
        all(target_arch = "wasm32", target_feature = "simd128")
    )),
    allow(dead_code, reason = "only the SIMD engines use packed operands")
)]
fn packed_operands<'a, 'c>(
    m: usize,
    n: usize,
    k: usize,
    a: &'a [f32],
    beta: f32,
    c: &'c mut [f32],
) -> Option<(MatRef<'a>, MatMut<'c>)> {
    if m == 0 || n == 0 {
        return None;
    }
    let mn = m.checked_mul(n).expect("gemm: m*n overflows usize");
    let c = &mut c[..mn];
    if k == 0 {
        scale(c, beta);
        return None;
    }
    let a = MatRef {
        data: a,
        rs: k,
        cs: 1,
    };
    let c = MatMut {
        data: c,
        rs: n,
        cs: 1,
    };
    Some((a, c))
}

/// A loop to compile for the engine's instruction set ([`Engine::run`]):
/// implement `run` as `#[inline(always)]` so it is inlined into the
/// feature-enabled caller and auto-vectorised there.
pub(crate) trait Kernel {
    /// Does the work.
    fn run(self);
}

/// Index of `B(p, j)` in the panel layout of a `k x n` matrix: panels of
/// [`PANEL`] columns, each panel `k x PANEL` row-major.
#[inline]
pub(crate) fn panel_index(k: usize, p: usize, j: usize) -> usize {
    (j / PANEL) * (k * PANEL) + p * PANEL + j % PANEL
}

/// Copies rows `pc..pc+kc`, columns `jc..jc+nc` of B into `buf` as one
/// packed panel (row stride [`PANEL`]; columns past `nc` keep whatever
/// `buf` held, which only reaches C columns that are never stored).
pub(crate) fn pack_panel(
    buf: &mut [f32],
    b: MatRef<'_>,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
) {
    for (p, dst) in buf.chunks_exact_mut(PANEL).take(kc).enumerate() {
        let row = (pc + p) * b.rs;
        if b.cs == 1 && nc == PANEL {
            // Fixed-size copy: inlined as vector moves.
            let src: &[f32; PANEL] = b.data[row + jc..row + jc + PANEL]
                .try_into()
                .expect("PANEL");
            let dst: &mut [f32; PANEL] = dst.try_into().expect("PANEL");
            *dst = *src;
            continue;
        }
        let dst = &mut dst[..nc];
        if b.cs == 1 {
            dst.copy_from_slice(&b.data[row + jc..row + jc + nc]);
        } else {
            for (j, d) in dst.iter_mut().enumerate() {
                *d = b.data[row + (jc + j) * b.cs];
            }
        }
    }
}

/// Best instruction set for this CPU (runtime detection needs `std`).
fn detect() -> Isa {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if let Some(t) = Avx2Fma::detect() {
        return Isa::Avx2(t);
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let isa = Isa::Wasm;
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    let isa = Isa::Portable;
    isa
}

/// C[m×n] = alpha · op(A) · op(B) + beta · C, where op(A) is m×k (A stored
/// k×m when `trans_a`), op(B) is k×n (B stored n×k when `trans_b`). C holds
/// its initial value (bias or zeros) on entry; when `beta == 0` C's initial
/// content is ignored (may be NaN).
///
/// # Panics
/// If a slice is shorter than its matrix (`m·k`, `k·n`, `m·n` elements).
#[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    beta: f32,
    c: &mut [f32],
) {
    gemm_with(detect(), m, n, k, alpha, a, trans_a, b, trans_b, beta, c);
}

/// Scalar reference for [`gemm`] (same arguments and semantics).
#[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
pub fn gemm_reference(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    beta: f32,
    c: &mut [f32],
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                let av = if trans_a { a[p * m + i] } else { a[i * k + p] };
                let bv = if trans_b { b[j * k + p] } else { b[p * n + j] };
                acc += av * bv;
            }
            let cij = &mut c[i * n + j];
            *cij = if beta == 0.0 {
                alpha * acc
            } else {
                alpha * acc + beta * *cij
            };
        }
    }
}

#[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
fn gemm_with(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    beta: f32,
    c: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    let mn = m.checked_mul(n).expect("gemm: m*n overflows usize");
    assert!(c.len() >= mn, "gemm: C has {} < {mn} elements", c.len());
    let c = &mut c[..mn];
    if k == 0 {
        scale(c, beta);
        return;
    }
    let (rsa, csa) = if trans_a { (1, m) } else { (k, 1) };
    let (rsb, csb) = if trans_b { (1, k) } else { (n, 1) };
    let a = MatRef {
        data: a,
        rs: rsa,
        cs: csa,
    };
    let b = MatRef {
        data: b,
        rs: rsb,
        cs: csb,
    };
    check("A", m, k, rsa, csa, a.data.len());
    check("B", k, n, rsb, csb, b.data.len());
    if m <= SKINNY
        && let Some(path) = skinny_path(n, k, a, b)
    {
        let c = MatMut {
            data: c,
            rs: n,
            cs: 1,
        };
        skinny(isa, path, m, n, k, alpha, a, b, beta, c);
        return;
    }
    // Cᵀ (n×m) = op(B)ᵀ (n×k) · op(A)ᵀ (k×m).
    if n <= SKINNY
        && let Some(path) = skinny_path(m, k, b.t(), a.t())
    {
        let c = MatMut {
            data: c,
            rs: 1,
            cs: n,
        };
        skinny(isa, path, n, m, k, alpha, b.t(), a.t(), beta, c);
        return;
    }
    let c = MatMut {
        data: c,
        rs: n,
        cs: 1,
    };
    match isa {
        #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
        Isa::Avx2(t) => t.gemm_packed(m, n, k, alpha, a, b, beta, c),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Isa::Wasm => crate::simd_wasm::gemm(
            m,
            n,
            k,
            alpha,
            a,
            crate::simd_wasm::BSource::Strided(b),
            beta,
            c,
        ),
        #[cfg(feature = "std")]
        Isa::Portable => sgemm(m, n, k, alpha, a, b, beta, c),
        #[cfg(not(feature = "std"))]
        Isa::Portable => blocked(m, n, k, alpha, a, b, beta, c),
    }
}

/// Depth of one packed B panel in [`blocked`]: `BLOCK_K x PANEL` floats
/// are 4 KiB of stack.
const BLOCK_K: usize = 64;

/// Large products without an allocator (the `no_std` build: firmware, the
/// standalone wasm module without SIMD128): B copied panel by panel
/// ([`PANEL`] columns, [`BLOCK_K`] rows) into a stack buffer, then C in
/// register tiles of up to 4 rows × [`PANEL`] columns. With `beta == 0` C
/// is not read.
#[cfg_attr(
    all(feature = "std", not(test)),
    expect(dead_code, reason = "std builds use matrixmultiply")
)]
#[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
fn blocked(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    mut c: MatMut<'_>,
) {
    check("A", m, k, a.rs, a.cs, a.data.len());
    check("B", k, n, b.rs, b.cs, b.data.len());
    check("C", m, n, c.rs, c.cs, c.data.len());
    let mut buf = [0.0f32; BLOCK_K * PANEL];
    let mut pc = 0;
    while pc < k {
        let kc = BLOCK_K.min(k - pc);
        // Later depth blocks add to what the first one stored.
        let beta = if pc == 0 { beta } else { 1.0 };
        let mut jc = 0;
        while jc < n {
            let nc = PANEL.min(n - jc);
            pack_panel(&mut buf, b, pc, kc, jc, nc);
            let mut i = 0;
            while i < m {
                let t = BlockTile {
                    i,
                    pc,
                    kc,
                    jc,
                    nc,
                    alpha,
                    beta,
                };
                i += match m - i {
                    4.. => t.run::<4>(a, &buf, &mut c),
                    3 => t.run::<3>(a, &buf, &mut c),
                    2 => t.run::<2>(a, &buf, &mut c),
                    _ => t.run::<1>(a, &buf, &mut c),
                };
            }
            jc += nc;
        }
        pc += kc;
    }
}

/// One register tile of [`blocked`]: rows `i..i + R`, the packed panel's
/// columns `jc..jc + nc`, depth `pc..pc + kc`.
#[derive(Debug, Clone, Copy)]
struct BlockTile {
    i: usize,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
    alpha: f32,
    beta: f32,
}

impl BlockTile {
    /// `C = alpha · A · panel + beta · C` on the tile; returns `R`.
    fn run<const R: usize>(self, a: MatRef<'_>, panel: &[f32], c: &mut MatMut<'_>) -> usize {
        let mut acc = [[0.0f32; PANEL]; R];
        for (p, brow) in panel.chunks_exact(PANEL).take(self.kc).enumerate() {
            let col = (self.pc + p) * a.cs;
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = a.data[(self.i + r) * a.rs + col];
                for (s, &bv) in acc.iter_mut().zip(brow) {
                    *s += av * bv;
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (j, &s) in acc.iter().enumerate().take(self.nc) {
                let cij = &mut c.data[(self.i + r) * c.rs + (self.jc + j) * c.cs];
                *cij = if self.beta == 0.0 {
                    self.alpha * s
                } else {
                    self.alpha * s + self.beta * *cij
                };
            }
        }
        R
    }
}

/// `c = beta * c`, where `beta == 0` clears `c` even if it holds NaN.
fn scale(c: &mut [f32], beta: f32) {
    if beta == 0.0 {
        c.fill(0.0);
    } else if beta != 1.0 {
        for x in c {
            *x *= beta;
        }
    }
}

/// Which skinny kernel applies to an `m×k · k×n` product (`m <= SKINNY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// B's rows are contiguous: accumulate row axpys over a register strip.
    Rows,
    /// A's rows and B's columns are contiguous: dot products.
    Dots,
}

fn skinny_path(n: usize, k: usize, a: MatRef<'_>, b: MatRef<'_>) -> Option<Path> {
    let rows_ok = b.cs == 1 || n == 1;
    let dots_ok = (a.cs == 1 && b.rs == 1) || k == 1;
    match (rows_ok, dots_ok) {
        (true, true) if n < 8 => Some(Path::Dots),
        (true, _) => Some(Path::Rows),
        (false, true) => Some(Path::Dots),
        (false, false) => None,
    }
}

#[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
fn skinny(
    isa: Isa,
    path: Path,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: MatMut<'_>,
) {
    match isa {
        #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
        Isa::Avx2(t) => match path {
            Path::Rows => t.gemm_rows(m, n, k, alpha, a, b, beta, c),
            Path::Dots => t.gemm_dots(m, n, k, alpha, a, b, beta, c),
        },
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Isa::Wasm if path == Path::Dots && m == 1 && a.cs == 1 && b.rs == 1 => {
            let mut c = c;
            crate::simd_wasm::dots1(n, k, alpha, &a.data[..k], b, beta, &mut c);
        }
        _ => match path {
            Path::Rows => portable_rows(m, n, k, alpha, a, b, beta, c),
            Path::Dots => portable_dots(m, n, k, alpha, a, b, beta, c),
        },
    }
}

/// Stores `alpha * acc + beta * C` into C(i, j0 + t) for each `t`.
fn store_row(c: &mut MatMut<'_>, i: usize, j0: usize, acc: &[f32], alpha: f32, beta: f32) {
    for (t, &v) in acc.iter().enumerate() {
        let ci = &mut c.data[i * c.rs + (j0 + t) * c.cs];
        *ci = if beta == 0.0 {
            alpha * v
        } else {
            alpha * v + beta * *ci
        };
    }
}

/// Portable rows kernel (`B(p, j) = b[p * rs + j]`).
#[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
fn portable_rows(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: MatMut<'_>,
) {
    // The browser package is sized against a budget: one instance, row by
    // row (a small-m product re-reads B per row).
    #[cfg(target_arch = "wasm32")]
    for i in 0..m {
        let ai = MatRef {
            data: &a.data[i * a.rs..],
            rs: a.rs,
            cs: a.cs,
        };
        let ci = MatMut {
            data: &mut c.data[i * c.rs..],
            rs: c.rs,
            cs: c.cs,
        };
        rows_strip::<1, 32>(n, k, alpha, ai, b, beta, ci);
    }
    #[cfg(not(target_arch = "wasm32"))]
    match m {
        1 => rows_strip::<1, 32>(n, k, alpha, a, b, beta, c),
        2 => rows_strip::<2, 16>(n, k, alpha, a, b, beta, c),
        3 => rows_strip::<3, 8>(n, k, alpha, a, b, beta, c),
        _ => rows_strip::<4, 8>(n, k, alpha, a, b, beta, c),
    }
}

#[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
fn rows_strip<const R: usize, const W: usize>(
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    mut c: MatMut<'_>,
) {
    let mut j0 = 0;
    // Full strips: fixed trip counts, so the accumulators stay in registers
    // and the loops vectorise.
    while j0 + W <= n {
        let mut acc = [[0.0f32; W]; R];
        for p in 0..k {
            let brow = &b.data[p * b.rs + j0..][..W];
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let ar = a.data[r * a.rs + p * a.cs];
                for (x, &y) in acc_r.iter_mut().zip(brow) {
                    *x += ar * y;
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            store_row(&mut c, r, j0, acc_r, alpha, beta);
        }
        j0 += W;
    }
    // Tail strip.
    let w = n - j0;
    if w > 0 {
        let mut acc = [[0.0f32; W]; R];
        for p in 0..k {
            let brow = &b.data[p * b.rs + j0..][..w];
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let ar = a.data[r * a.rs + p * a.cs];
                for (x, &y) in acc_r[..w].iter_mut().zip(brow) {
                    *x += ar * y;
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            store_row(&mut c, r, j0, &acc_r[..w], alpha, beta);
        }
    }
}

/// Portable dot kernel (`A(i, p) = a[i * rs + p]`, `B(p, j) = b[j * cs + p]`).
#[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
fn portable_dots(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    mut c: MatMut<'_>,
) {
    for i in 0..m {
        let arow = &a.data[i * a.rs..][..k];
        for j in 0..n {
            let s = dot(arow, &b.data[j * b.cs..][..k]);
            store_row(&mut c, i, j, &[s], alpha, beta);
        }
    }
}

/// Dot product with [`DOT_LANES`] independent accumulators (vectorised).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; DOT_LANES];
    let (ac, ar) = a.as_chunks::<DOT_LANES>();
    let (bc, br) = b.as_chunks::<DOT_LANES>();
    for (x, y) in ac.iter().zip(bc) {
        for l in 0..DOT_LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Accumulators of [`dot`].
const DOT_LANES: usize = 16;

/// Large products with `std`: `matrixmultiply::sgemm` on the strided
/// views (it has NEON and AVX kernels; it allocates its packing buffer,
/// which `no_std` builds cannot, so they use [`blocked`]).
#[cfg(feature = "std")]
#[allow(clippy::too_many_arguments, reason = "BLAS-style signature")]
#[allow(
    unsafe_code,
    reason = "matrixmultiply::sgemm takes raw pointers and strides; every \
              addressed element is bounds-checked just before the call"
)]
fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: MatMut<'_>,
) {
    check("A", m, k, a.rs, a.cs, a.data.len());
    check("B", k, n, b.rs, b.cs, b.data.len());
    check("C", m, n, c.rs, c.cs, c.data.len());
    let s = |x: usize| isize::try_from(x).expect("gemm: stride exceeds isize::MAX");
    // SAFETY: the checks above prove that every element (i, p) / (p, j) /
    // (i, j) that sgemm addresses through these pointers and strides lies
    // inside the corresponding slice; C is exclusively borrowed and does not
    // alias A or B. With beta == 0 sgemm does not read C.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            s(a.rs),
            s(a.cs),
            b.data.as_ptr(),
            s(b.rs),
            s(b.cs),
            beta,
            c.data.as_mut_ptr(),
            s(c.rs),
            s(c.cs),
        );
    }
}

#[cfg(test)]
mod tests {
    //! Every dispatch path (portable and AVX2 skinny kernels, the packed
    //! kernel with and without pre-packed B, matrixmultiply) against
    //! [`gemm_reference`].
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// Deterministic values in [-1, 1).
    fn data(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn isas() -> Vec<Isa> {
        let mut v = std::vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = Avx2Fma::detect() {
            v.push(Isa::Avx2(t.without_avx512()));
            if t.has_avx512() {
                v.push(Isa::Avx2(t));
            }
        }
        v
    }

    #[derive(Debug, Clone)]
    struct Case {
        m: usize,
        n: usize,
        k: usize,
        ta: bool,
        tb: bool,
        alpha: f32,
        beta: f32,
        seed: u64,
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            prop_oneof![1usize..=4, 1usize..=20],
            prop_oneof![1usize..=4, 1usize..=70],
            prop_oneof![1usize..=9, 1usize..=80, 250usize..=300],
            any::<bool>(),
            any::<bool>(),
            prop_oneof![Just(1.0f32), -2.0f32..2.0],
            prop_oneof![Just(0.0f32), Just(1.0f32), -2.0f32..2.0],
            any::<u64>(),
        )
            .prop_map(|(m, n, k, ta, tb, alpha, beta, seed)| Case {
                m,
                n,
                k,
                ta,
                tb,
                alpha,
                beta,
                seed,
            })
    }

    /// Checks `got` against the reference with a tolerance of 1e-5·(k+1)
    /// times the sum of the absolute values of the terms.
    fn assert_close(cs: &Case, got: &[f32], c0: &[f32], a: &[f32], b: &[f32]) {
        let Case {
            m, n, k, ta, tb, ..
        } = *cs;
        let mut want = c0.to_vec();
        gemm_reference(m, n, k, cs.alpha, a, ta, b, tb, cs.beta, &mut want);
        let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
        let mut bound = abs(c0);
        gemm_reference(
            m,
            n,
            k,
            cs.alpha.abs(),
            &abs(a),
            ta,
            &abs(b),
            tb,
            cs.beta.abs(),
            &mut bound,
        );
        for (i, ((g, w), bd)) in got.iter().zip(&want).zip(&bound).enumerate() {
            let tol = 1e-5 * (k + 1) as f32 * bd.max(1e-6);
            assert!(
                (g - w).abs() <= tol,
                "{cs:?}: C[{i}] = {g}, want {w} (tol {tol})"
            );
        }
    }

    fn inputs(cs: &Case) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let a = data(cs.m * cs.k, cs.seed);
        let b = data(cs.k * cs.n, cs.seed.wrapping_add(1));
        let mut c = data(cs.m * cs.n, cs.seed.wrapping_add(2));
        if cs.beta == 0.0 {
            c.fill(f32::NAN); // must be ignored
        }
        (a, b, c)
    }

    proptest! {
        #[test]
        fn gemm_paths_match_reference(cs in case()) {
            let (a, b, c0) = inputs(&cs);
            for isa in isas() {
                let mut c = c0.clone();
                gemm_with(isa, cs.m, cs.n, cs.k, cs.alpha, &a, cs.ta, &b, cs.tb, cs.beta, &mut c);
                assert_close(&cs, &c, &c0, &a, &b);
            }
            // The general kernels, bypassing the skinny dispatch.
            let (rsa, csa) = if cs.ta { (1, cs.m) } else { (cs.k, 1) };
            let (rsb, csb) = if cs.tb { (1, cs.k) } else { (cs.n, 1) };
            let av = MatRef { data: &a, rs: rsa, cs: csa };
            let bv = MatRef { data: &b, rs: rsb, cs: csb };
            #[cfg(feature = "std")]
            {
                let mut c = c0.clone();
                sgemm(cs.m, cs.n, cs.k, cs.alpha, av, bv, cs.beta, MatMut { data: &mut c, rs: cs.n, cs: 1 });
                assert_close(&cs, &c, &c0, &a, &b);
            }
            let mut c = c0.clone();
            blocked(cs.m, cs.n, cs.k, cs.alpha, av, bv, cs.beta, MatMut { data: &mut c, rs: cs.n, cs: 1 });
            assert_close(&cs, &c, &c0, &a, &b);
            #[cfg(target_arch = "x86_64")]
            if let Some(t) = Avx2Fma::detect() {
                let mut c = c0.clone();
                t.gemm_packed(cs.m, cs.n, cs.k, cs.alpha, av, bv, cs.beta, MatMut { data: &mut c, rs: cs.n, cs: 1 });
                assert_close(&cs, &c, &c0, &a, &b);
            }
        }

        #[test]
        fn engine_gemm_nn_matches_reference(mut cs in case()) {
            cs.ta = false;
            cs.tb = false;
            cs.alpha = 1.0;
            let (a, b, c0) = inputs(&cs);
            let mut engines = std::vec![Engine::portable()];
            #[cfg(target_arch = "x86_64")]
            engines.extend(Engine::simd());
            for eng in engines {
                let bl: Vec<f32> = if eng.b_panels() {
                    let mut packed = std::vec![f32::NAN; Engine::b_len(cs.k, cs.n)];
                    for p in 0..cs.k {
                        for j in 0..cs.n {
                            packed[panel_index(cs.k, p, j)] = b[p * cs.n + j];
                        }
                    }
                    packed
                } else {
                    b.clone()
                };
                let mut c = c0.clone();
                eng.gemm_nn(cs.m, cs.n, cs.k, &a, &bl, cs.beta, &mut c);
                assert_close(&cs, &c, &c0, &a, &b);
            }
        }

        /// `pack_bt` + `gemm_nn` as the recurrent cells use them: a few
        /// rows of A against wide B (the multi-panel AVX-512 tiles).
        #[test]
        fn engine_pack_bt_then_gemm_nn_matches_reference(
            m in prop_oneof![1usize..=4, 5usize..=9],
            n in prop_oneof![1usize..=40, 100usize..=300],
            k in 1usize..=140,
            beta in prop_oneof![Just(0.0f32), Just(1.0f32), -2.0f32..2.0],
            seed in any::<u64>(),
        ) {
            let cs = Case { m, n, k, ta: false, tb: false, alpha: 1.0, beta, seed };
            let (a, b, c0) = inputs(&cs);
            let mut bt = std::vec![0.0f32; n * k];
            for p in 0..k {
                for j in 0..n {
                    bt[j * k + p] = b[p * n + j];
                }
            }
            let mut engines = std::vec![Engine::portable()];
            #[cfg(target_arch = "x86_64")]
            engines.extend(Engine::simd());
            for eng in engines {
                let mut packed = std::vec![f32::NAN; Engine::b_len(k, n)];
                eng.pack_bt(&bt, k, n, &mut packed);
                let mut c = c0.clone();
                eng.gemm_nn(m, n, k, &a, &packed, beta, &mut c);
                assert_close(&cs, &c, &c0, &a, &b);
            }
        }
    }

    #[test]
    fn degenerate_shapes() {
        for isa in isas() {
            // k == 0: C = beta * C, and beta == 0 clears NaN.
            let mut c = [f32::NAN; 6];
            gemm_with(isa, 2, 3, 0, 1.0, &[], false, &[], false, 0.0, &mut c);
            assert_eq!(c, [0.0; 6]);
            let mut c = [2.0; 6];
            gemm_with(isa, 2, 3, 0, 1.0, &[], true, &[], true, 0.5, &mut c);
            assert_eq!(c, [1.0; 6]);
            // m == 0 / n == 0: nothing to do, even with empty slices.
            gemm_with(
                isa,
                0,
                3,
                4,
                1.0,
                &[],
                false,
                &[0.0; 12],
                false,
                0.0,
                &mut [],
            );
            gemm_with(
                isa,
                3,
                0,
                4,
                1.0,
                &[0.0; 12],
                false,
                &[],
                false,
                0.0,
                &mut [],
            );
            // 1x1x1.
            let mut c = [1.0];
            gemm_with(isa, 1, 1, 1, 2.0, &[3.0], false, &[4.0], true, 1.0, &mut c);
            assert_eq!(c, [25.0]);
        }
    }
}
