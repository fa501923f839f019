//! 2-D convolution and transposed convolution (NCHW, f32): scalar references and fast paths (im2col + GEMM, direct depthwise, 1×1).
//!
//! Fast [`conv2d`] picks, per call:
//! * depthwise (`group == c` and `m` a multiple of `c`): a direct kernel that
//!   accumulates one filter tap at a time over whole output rows (no scratch);
//! * 1×1, stride 1, no padding: one GEMM per batch item and group straight on
//!   the input (no scratch);
//! * anything else: im2col of one (batch item, group) into `scratch`, then a
//!   GEMM. On the AVX2 path im2col writes the GEMM's packed-panel layout
//!   directly, so the GEMM does no packing of its own.
//!
//! 1-D convolutions are passed as `h = 1`.

use crate::gemm::{Engine, PANEL, panel_index};

/// Shape and attributes of a 2-D convolution. For [`conv_transpose2d`], `c`
/// is the input and `m` the output channel count, `h, w` the input and
/// `oh, ow` the output spatial size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2d {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub m: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Number of groups (divides `c` and `m`).
    pub group: usize,
    /// Strides (height, width), each >= 1.
    pub stride: [usize; 2],
    /// Dilations (height, width), each >= 1.
    pub dilation: [usize; 2],
    /// Padding: top, left, bottom, right.
    pub pad: [usize; 4],
}

/// Range `[lo, hi)` of output positions `o < out_len` whose input position
/// `o * stride + off` lies in `[0, in_len)`. `stride >= 1`.
pub fn out_range(off: isize, stride: usize, in_len: usize, out_len: usize) -> (usize, usize) {
    let s = stride as isize;
    let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
    let end = in_len as isize - off;
    let hi = if end <= 0 { 0 } else { (end + s - 1) / s };
    let lo = (lo as usize).min(out_len);
    let hi = (hi as usize).clamp(lo, out_len);
    (lo, hi)
}

/// Panics unless strides, dilations and groups are usable.
fn check_attrs(p: &Conv2d) {
    assert!(
        p.stride.iter().chain(&p.dilation).all(|&v| v >= 1),
        "conv: strides and dilations must be >= 1"
    );
    assert!(
        p.group >= 1 && p.c.is_multiple_of(p.group) && p.m.is_multiple_of(p.group),
        "conv: group {} must divide c = {} and m = {}",
        p.group,
        p.c,
        p.m
    );
}

/// Product of `dims`, panicking on overflow.
fn prod(dims: &[usize]) -> usize {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .expect("conv: size overflows usize")
}

/// Checks the slice lengths of a convolution whose input is `[n, xc, h, w]`,
/// output `[n, yc, oh, ow]` and weights `wlen` floats.
#[allow(clippy::too_many_arguments, reason = "one check for all operands")]
fn check_lens(
    p: &Conv2d,
    xc: usize,
    yc: usize,
    wlen: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &[f32],
) {
    check_attrs(p);
    assert!(x.len() >= prod(&[p.n, xc, p.h, p.w]), "conv: x too short");
    assert!(w.len() >= wlen, "conv: w too short");
    assert!(y.len() >= prod(&[p.n, yc, p.oh, p.ow]), "conv: y too short");
    if let Some(b) = bias {
        assert!(b.len() >= yc, "conv: bias too short");
    }
}

/// Whether the direct depthwise kernel applies (one input channel per group,
/// several groups: a single-channel input is an ordinary convolution, which
/// the GEMM-shaped paths do much faster).
fn is_depthwise(p: &Conv2d) -> bool {
    p.group == p.c && p.c > 1
}

/// Whether the convolution is a plain per-pixel matrix product.
fn is_pointwise(p: &Conv2d) -> bool {
    p.kh == 1 && p.kw == 1 && p.stride == [1, 1] && p.pad == [0; 4] && p.oh == p.h && p.ow == p.w
}

/// f32 elements of scratch [`conv2d`] needs (0 when it needs none, e.g. 1x1
/// stride-1 unpadded or depthwise).
pub fn conv2d_scratch_len(p: &Conv2d) -> usize {
    if let Some(t) = as_row(p) {
        return conv2d_scratch_len(&t);
    }
    if p.group == 0 || is_depthwise(p) || is_pointwise(p) {
        return 0;
    }
    let k = prod(&[p.c / p.group, p.kh, p.kw]);
    // Slack to start the packed columns on a cache line.
    let im2col = Engine::b_len(k, prod(&[p.oh, p.ow])) + 15;
    // Independent of the CPU: the larger of both paths' needs.
    im2col.max(Direct::new(p).len())
}

/// A column (width 1, kernel width 1, no horizontal padding) is a row in
/// memory: the same convolution stated on a row, so the row kernels'
/// vector paths apply (1-D audio models keep time along H with W = 1).
/// Inputs, filters and outputs keep their bytes.
fn as_row(p: &Conv2d) -> Option<Conv2d> {
    (p.w == 1 && p.kw == 1 && p.ow == 1 && p.pad[1] == 0 && p.pad[3] == 0 && p.h > 1).then(|| {
        Conv2d {
            h: 1,
            w: p.h,
            kh: 1,
            kw: p.kh,
            oh: 1,
            ow: p.oh,
            stride: [1, p.stride[0]],
            dilation: [1, p.dilation[0]],
            pad: [0, p.pad[0], 0, p.pad[2]],
            ..*p
        }
    })
}

/// Most filter taps (`kh·kw`) the direct path handles (its tap table lives
/// on the stack); larger kernels go through im2col.
pub(crate) const MAX_TAPS: usize = 64;

/// Geometry of the direct (implicit-GEMM) path: the input of one (batch
/// item, group) copied into a zero-padded buffer (plus [`PANEL`] floats of
/// slack) laid out so that every filter tap of a strip of output columns
/// reads contiguous, in-bounds memory.
///
/// Each padded row of `sw·wq` floats holds its columns split by phase
/// (`col % sw`): phase `f` occupies `[f·wq, (f+1)·wq)` with padded column
/// `q·sw + f` at `f·wq + q`. Output column `ox`'s tap `s` reads padded column
/// `ox·sw + s·dw`, i.e. phase `(s·dw) % sw` at `ox + (s·dw) / sw`: output
/// columns read consecutive floats whatever the stride (for `sw = 1` this is
/// the plain padded row).
///
/// Output rows narrower than half a [`PANEL`] are computed two at a time
/// (`pair`): the low half of a 16-float strip is row `oy`, the high half row
/// `oy + 1`.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(
    not(any(
        all(target_arch = "x86_64", any(feature = "std", test)),
        all(target_arch = "wasm32", target_feature = "simd128")
    )),
    allow(dead_code, reason = "the fields are read by the SIMD kernels only")
)]
pub(crate) struct Direct {
    /// Input channels per group.
    pub(crate) cg: usize,
    /// Padded input height.
    pub(crate) hp: usize,
    /// Floats per phase of a padded row.
    pub(crate) wq: usize,
    /// Floats per padded row (`sw · wq`).
    pub(crate) row: usize,
    /// Strides.
    pub(crate) sh: usize,
    pub(crate) sw: usize,
    /// Kernel size and dilations.
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) dh: usize,
    pub(crate) dw: usize,
    /// Output size.
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    /// Two output rows per strip.
    #[cfg_attr(
        all(target_arch = "wasm32", target_feature = "simd128"),
        allow(dead_code, reason = "the wasm kernel takes one row per strip")
    )]
    pub(crate) pair: bool,
}

impl Direct {
    fn new(p: &Conv2d) -> Self {
        let cg = p.c.checked_div(p.group).unwrap_or(0);
        let [sh, sw] = p.stride;
        let [dh, dw] = p.dilation;
        // Large enough for every tap of every output position, even when
        // the caller asks for more output than the padded input covers.
        let hp = (p.h + p.pad[0] + p.pad[2])
            .max(p.oh.saturating_sub(1) * sh + p.kh.saturating_sub(1) * dh + 1);
        let wp = p.w + p.pad[1] + p.pad[3];
        let reach = (p.kw.saturating_sub(1) * dw) / sw.max(1);
        let wq = wp.div_ceil(sw.max(1)).max(p.ow + reach);
        Self {
            cg,
            hp,
            wq,
            row: sw * wq,
            sh,
            sw,
            kh: p.kh,
            kw: p.kw,
            dh,
            dw,
            oh: p.oh,
            ow: p.ow,
            pair: p.ow <= PANEL / 2 && p.oh >= 2,
        }
    }

    /// Floats of one padded input channel.
    pub(crate) fn plane(&self) -> usize {
        self.hp * self.row
    }

    /// Floats of the padded buffer.
    pub(crate) fn len(&self) -> usize {
        prod(&[self.cg, self.hp, self.row]) + PANEL
    }

    #[cfg_attr(
        not(any(
            all(target_arch = "x86_64", any(feature = "std", test)),
            all(target_arch = "wasm32", target_feature = "simd128")
        )),
        allow(dead_code, reason = "read by the SIMD kernels only")
    )]
    /// Offset of tap `(r, s)` from the strip's base `(row oy·sh, column ox)`.
    pub(crate) fn tap(&self, r: usize, s: usize) -> usize {
        let c = s * self.dw;
        r * self.dh * self.row + (c % self.sw) * self.wq + c / self.sw
    }

    /// Checks what the SIMD direct convolutions rely on (every tap of
    /// every strip starts inside the padded buffer `xp`, and a strip's read
    /// of at most [`PANEL`] floats from there stays inside: rows up to
    /// `(oh-1)·sh + (kh-1)·dh < hp`, and within a row the phase offset plus
    /// `ow - 1 + ((kw-1)·dw)/sw` below `sw·wq`, with `PANEL` floats of
    /// slack at the end), and returns the tap table: entry `r·kw + s` is
    /// [`Self::tap`]`(r, s)`.
    ///
    /// # Panics
    /// If `w` (`mg` rows of `cg·kh·kw`), `y` (`mg` planes of `oh·ow`) or
    /// `xp` is too short, or the geometry breaks the rules above.
    #[cfg(any(
        all(target_arch = "x86_64", any(feature = "std", test)),
        all(target_arch = "wasm32", target_feature = "simd128")
    ))]
    pub(crate) fn checked_taps(
        &self,
        mg: usize,
        w: &[f32],
        xp: &[f32],
        y: &[f32],
    ) -> [usize; MAX_TAPS] {
        let ntaps = self.kh * self.kw;
        let k = self.cg * ntaps;
        assert!(ntaps <= MAX_TAPS && w.len() >= mg * k && y.len() >= mg * self.oh * self.ow);
        assert!(self.hp > (self.oh - 1) * self.sh + (self.kh - 1) * self.dh);
        assert!(
            self.sw >= 1
                && self.wq >= self.ow + (self.kw - 1) * self.dw / self.sw
                && self.row == self.sw * self.wq
        );
        assert!(xp.len() >= self.cg * self.plane() + PANEL);
        let mut taps = [0usize; MAX_TAPS];
        for r in 0..self.kh {
            for s in 0..self.kw {
                taps[r * self.kw + s] = self.tap(r, s);
            }
        }
        taps
    }

    /// Whether the direct path fits `p`: more than one tap, a tap table that
    /// fits [`MAX_TAPS`]
    /// and strips that fill most of a register tile (rows of at least 12
    /// outputs, or narrow rows taken two at a time).
    fn suits(p: &Conv2d) -> bool {
        // A strided 1x1 kernel reads a fraction of the input: im2col
        // gathers just that, where the padded copy would take all of it.
        let taps = p.kh * p.kw;
        taps > 1
            && taps <= MAX_TAPS
            && (p.ow >= 12 || (p.ow >= 4 && p.ow <= PANEL / 2 && p.oh >= 2))
    }

    /// Copies `x` (`[cg, h, w]`) into `buf` with `top`/`left` zero padding
    /// (everything else zero too), columns split by phase.
    fn pad_input(&self, p: &Conv2d, x: &[f32], buf: &mut [f32]) {
        let buf = &mut buf[..self.len()];
        buf.fill(0.0);
        let (plane, (pt, pl)) = (self.plane(), (p.pad[0], p.pad[1]));
        for (ci, xc) in x.chunks_exact(p.h * p.w).take(self.cg).enumerate() {
            for (iy, xrow) in xc.chunks_exact(p.w).enumerate() {
                let start = ci * plane + (iy + pt) * self.row;
                let dst = &mut buf[start..start + self.row];
                if self.sw == 1 {
                    dst[pl..pl + p.w].copy_from_slice(xrow);
                } else {
                    // Phase f holds padded columns q·sw + f, i.e. input
                    // columns q·sw + f - pl.
                    for f in 0..self.sw {
                        let q0 = pl.saturating_sub(f).div_ceil(self.sw);
                        let Some(ix0) = (q0 * self.sw + f).checked_sub(pl) else {
                            continue;
                        };
                        let phase = &mut dst[f * self.wq + q0..(f + 1) * self.wq];
                        let src = xrow.get(ix0..).unwrap_or(&[]).iter().step_by(self.sw);
                        for (d, &v) in phase.iter_mut().zip(src) {
                            *d = v;
                        }
                    }
                }
            }
        }
    }
}

/// `y[n, m, oh, ow] = bias[m] + Σ x·w`, `w` is `[m, c/group, kh, kw]`.
/// `scratch.len() >= conv2d_scratch_len(p)`.
///
/// # Panics
/// If a slice is too short, a stride or dilation is 0, or `group` does not
/// divide `c` and `m`.
pub fn conv2d(
    p: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    scratch: &mut [f32],
) {
    conv2d_with(Engine::detect(), p, x, w, bias, y, scratch);
}

pub(crate) fn conv2d_with(
    eng: Engine,
    p: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    scratch: &mut [f32],
) {
    if let Some(t) = as_row(p) {
        return conv2d_with(eng, &t, x, w, bias, y, scratch);
    }
    let cg = p.c.checked_div(p.group).unwrap_or(0);
    check_lens(p, p.c, p.m, prod(&[p.m, cg, p.kh, p.kw]), x, w, bias, y);
    let mg = p.m / p.group;
    let (hw, ohw) = (p.h * p.w, p.oh * p.ow);
    if p.n == 0 || p.m == 0 || ohw == 0 {
        return;
    }
    if is_depthwise(p) {
        eng.vectorized(depthwise, &(*p, w, bias), x, y);
        return;
    }
    let k = cg * p.kh * p.kw;
    let pointwise = is_pointwise(p);
    if !pointwise {
        assert!(
            scratch.len() >= conv2d_scratch_len(p),
            "conv: scratch too short"
        );
    }
    let direct = (!pointwise && hw > 0 && Direct::suits(p)).then(|| Direct::new(p));
    for b in 0..p.n {
        for g in 0..p.group {
            let xg = &x[(b * p.c + g * cg) * hw..][..cg * hw];
            let wg = &w[g * mg * k..][..mg * k];
            let yg = &mut y[(b * p.m + g * mg) * ohw..][..mg * ohw];
            let beta = init_bias(yg, ohw, bias.map(|bs| &bs[g * mg..][..mg]));
            if pointwise {
                crate::gemm::gemm(mg, ohw, k, 1.0, wg, false, xg, false, beta, yg);
            } else if let Some(d) = direct
                && eng.has_direct_conv()
            {
                d.pad_input(p, xg, scratch);
                eng.conv_direct(&d, mg, wg, &scratch[..d.len()], beta, yg);
            } else {
                let skip = scratch.as_ptr().align_offset(64).min(15);
                let col = &mut scratch[skip..skip + Engine::b_len(k, ohw)];
                im2col(p, xg, cg, eng.b_panels(), col);
                eng.gemm_nn(mg, ohw, k, wg, col, beta, yg);
            }
        }
    }
}

/// Fills each `len`-long row of `y` with its bias; returns the GEMM `beta`
/// (1 when a bias was written, 0 otherwise).
fn init_bias(y: &mut [f32], len: usize, bias: Option<&[f32]>) -> f32 {
    match bias {
        Some(bias) => {
            for (row, &bv) in y.chunks_exact_mut(len).zip(bias) {
                row.fill(bv);
            }
            1.0
        }
        None => 0.0,
    }
}

/// Writes the im2col matrix of one (batch item, group) — `x` is `[cg, h, w]` —
/// into `col`: `k = cg·kh·kw` rows by `n = oh·ow` columns, row-major or in
/// the GEMM's packed panels (padding columns zeroed).
fn im2col(p: &Conv2d, x: &[f32], cg: usize, panels: bool, col: &mut [f32]) {
    let k = cg * p.kh * p.kw;
    let n = p.oh * p.ow;
    let [sh, sw] = p.stride;
    let [dh, dw] = p.dilation;
    let (pt, pl) = (p.pad[0] as isize, p.pad[1] as isize);
    let cols = Cols { panels, k, n };
    for ci in 0..cg {
        let xc = &x[ci * p.h * p.w..][..p.h * p.w];
        for r in 0..p.kh {
            let (y0, y1) = out_range((r * dh) as isize - pt, sh, p.h, p.oh);
            for s in 0..p.kw {
                let row = (ci * p.kh + r) * p.kw + s;
                let xoff = (s * dw) as isize - pl;
                let (x0, x1) = out_range(xoff, sw, p.w, p.ow);
                cols.zero(col, row, 0, y0 * p.ow);
                for oy in y0..y1 {
                    let iy = (oy * sh + r * dh) as isize - pt;
                    // In range by construction of (y0, y1).
                    let xrow = &xc[iy as usize * p.w..][..p.w];
                    let jb = oy * p.ow;
                    cols.zero(col, row, jb, jb + x0);
                    cols.pieces(col, row, jb + x0, jb + x1, |d, j| {
                        let ix = (((j - jb) * sw) as isize + xoff) as usize;
                        if sw == 1 {
                            copy_small(d, &xrow[ix..ix + d.len()]);
                        } else {
                            for (v, &s) in d.iter_mut().zip(xrow[ix..].iter().step_by(sw)) {
                                *v = s;
                            }
                        }
                    });
                    cols.zero(col, row, jb + x1, jb + p.ow);
                }
                cols.zero(col, row, y1 * p.ow, n);
                if panels {
                    // Padding columns of the last panel.
                    cols.zero(col, row, n, n.div_ceil(PANEL) * PANEL);
                }
            }
        }
    }
}

/// Destination of [`im2col`]: a `k x n` matrix, row-major or in panels.
#[derive(Debug, Clone, Copy)]
struct Cols {
    panels: bool,
    k: usize,
    n: usize,
}

impl Cols {
    /// Calls `f(dst, j)` for the contiguous pieces of row `row`, columns
    /// `ja..jb` (`j` is the first column of the piece; pieces never cross a
    /// panel, so they hold at most [`PANEL`] floats in panel layout).
    #[inline(always)]
    fn pieces(
        self,
        col: &mut [f32],
        row: usize,
        ja: usize,
        jb: usize,
        mut f: impl FnMut(&mut [f32], usize),
    ) {
        if ja >= jb {
            return;
        }
        if !self.panels {
            f(&mut col[row * self.n + ja..row * self.n + jb], ja);
            return;
        }
        let mut j = ja;
        while j < jb {
            let end = jb.min((j / PANEL + 1) * PANEL);
            let start = panel_index(self.k, row, j);
            f(&mut col[start..start + (end - j)], j);
            j = end;
        }
    }

    #[inline(always)]
    fn zero(self, col: &mut [f32], row: usize, ja: usize, jb: usize) {
        self.pieces(col, row, ja, jb, |d, _| {
            if d.len() == PANEL
                && let Some(d) = d.first_chunk_mut::<PANEL>()
            {
                *d = [0.0; PANEL];
            } else {
                d.fill(0.0);
            }
        });
    }
}

/// `dst.copy_from_slice(src)`, with a fixed-size (inlined, vector) copy for
/// whole panel rows instead of a `memcpy` call.
#[inline(always)]
fn copy_small(dst: &mut [f32], src: &[f32]) {
    if dst.len() == PANEL
        && let (Some(d), Some(s)) = (dst.first_chunk_mut::<PANEL>(), src.first_chunk::<PANEL>())
    {
        *d = *s;
    } else {
        dst.copy_from_slice(src);
    }
}

/// Direct depthwise convolution (`group == c`, `m = c · mult`). Each output
/// row is accumulated one filter tap at a time: over the interior columns
/// (where every tap is inside the input) as one vectorisable axpy, over the
/// few border columns with bounds checks.
#[inline(always)]
fn depthwise((p, w, bias): &(Conv2d, &[f32], Option<&[f32]>), x: &[f32], y: &mut [f32]) {
    let (w, bias) = (*w, *bias);
    let mult = p.m / p.c;
    let [sh, sw] = p.stride;
    let [dh, dw] = p.dilation;
    let (pt, pl) = (p.pad[0] as isize, p.pad[1] as isize);
    let (hw, ohw, kk) = (p.h * p.w, p.oh * p.ow, p.kh * p.kw);
    // Interior columns: tap 0 is inside from xa on, the last tap until xb.
    let xa = out_range(-pl, sw, p.w, p.ow).0;
    let xb = out_range((p.kw.saturating_sub(1) * dw) as isize - pl, sw, p.w, p.ow)
        .1
        .max(xa);
    for b in 0..p.n {
        for mo in 0..p.m {
            let xc = &x[(b * p.c + mo / mult) * hw..][..hw];
            let wc = &w[mo * kk..][..kk];
            let yc = &mut y[(b * p.m + mo) * ohw..][..ohw];
            let bv = bias.map_or(0.0, |bs| bs[mo]);
            for (oy, yrow) in yc.chunks_exact_mut(p.ow).enumerate() {
                // Filter rows whose input row exists.
                let (r0, r1) = out_range((oy * sh) as isize - pt, dh, p.h, p.kh);
                let iy0 = (oy * sh) as isize - pt;
                let xrow = |r: usize| input_row(xc, p.w, iy0 + (r * dh) as isize);
                // Border columns: only the taps inside the input.
                for ox in (0..xa).chain(xb..p.ow) {
                    let (s0, s1) = out_range((ox * sw) as isize - pl, dw, p.w, p.kw);
                    let mut acc = bv;
                    for r in r0..r1 {
                        let xr = xrow(r);
                        for s in s0..s1 {
                            let ix = ((ox * sw + s * dw) as isize - pl) as usize;
                            acc += wc[r * p.kw + s] * xr[ix];
                        }
                    }
                    yrow[ox] = acc;
                }
                // Interior columns, unit stride: tiles of outputs accumulated
                // over all taps in registers. Tiles write final values, so
                // the last one may overlap its predecessor.
                let mut x_lo = xa;
                if sw == 1 {
                    let width = xb - xa;
                    let t = if width >= DW_TILE { DW_TILE } else { 8 };
                    if width >= t {
                        let g = DwTile {
                            bias: bv,
                            rows: r0..r1,
                            xc,
                            w: p.w,
                            iy0,
                            dh,
                            wc,
                            kw: p.kw,
                            dw,
                            pl,
                        };
                        loop {
                            // The last tile may overlap its predecessor.
                            let t0 = x_lo.min(xb - t);
                            if t == DW_TILE {
                                g.run::<DW_TILE>(yrow, t0);
                            } else {
                                g.run::<8>(yrow, t0);
                            }
                            x_lo = t0 + t;
                            if x_lo >= xb {
                                break;
                            }
                        }
                    }
                }
                // Remaining interior columns: one axpy per tap.
                let ys = &mut yrow[x_lo..xb];
                ys.fill(bv);
                if ys.is_empty() {
                    continue;
                }
                for r in r0..r1 {
                    let xr = xrow(r);
                    for s in 0..p.kw {
                        let wv = wc[r * p.kw + s];
                        let xs = &xr[((x_lo * sw + s * dw) as isize - pl) as usize..];
                        match sw {
                            1 => {
                                for (yv, &xv) in ys.iter_mut().zip(xs) {
                                    *yv += wv * xv;
                                }
                            }
                            // Constant stride: vectorised as interleaved loads.
                            2 => {
                                for (yv, xv) in ys.iter_mut().zip(xs.chunks_exact(2)) {
                                    *yv += wv * xv[0];
                                }
                                // The last output may have only one input left.
                                if xs.len() < 2 * ys.len() {
                                    let t = ys.len() - 1;
                                    ys[t] += wv * xs[2 * t];
                                }
                            }
                            _ => {
                                for (t, yv) in ys.iter_mut().enumerate() {
                                    *yv += wv * xs[t * sw];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Output columns accumulated in registers at once by [`depthwise`].
const DW_TILE: usize = 32;

/// Row `iy` (in range) of an input plane of width `w`.
#[inline(always)]
fn input_row(xc: &[f32], w: usize, iy: isize) -> &[f32] {
    &xc[iy as usize * w..][..w]
}

/// Depthwise tile parameters for one output row (see [`DwTile::run`]).
struct DwTile<'a> {
    bias: f32,
    /// Filter rows whose input row exists.
    rows: core::ops::Range<usize>,
    xc: &'a [f32],
    w: usize,
    /// Input row of filter row 0 (may be negative).
    iy0: isize,
    dh: usize,
    wc: &'a [f32],
    kw: usize,
    dw: usize,
    pl: isize,
}

impl DwTile<'_> {
    /// Computes the `T` outputs `yrow[t0..t0 + T]` (interior columns, unit
    /// stride): `bias + Σ_taps w · x`, accumulated in registers.
    #[inline(always)]
    fn run<const T: usize>(&self, yrow: &mut [f32], t0: usize) {
        let mut acc = [self.bias; T];
        for r in self.rows.clone() {
            let xr = input_row(self.xc, self.w, self.iy0 + (r * self.dh) as isize);
            for s in 0..self.kw {
                let wv = self.wc[r * self.kw + s];
                // >= 0 for interior columns.
                let base = ((t0 + s * self.dw) as isize - self.pl) as usize;
                let xs = &xr[base..base + T];
                for t in 0..T {
                    acc[t] += wv * xs[t];
                }
            }
        }
        yrow[t0..t0 + T].copy_from_slice(&acc);
    }
}

/// Scalar reference for [`conv2d`].
pub fn conv2d_reference(p: &Conv2d, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let cg = p.c.checked_div(p.group).unwrap_or(0);
    check_lens(p, p.c, p.m, prod(&[p.m, cg, p.kh, p.kw]), x, w, bias, y);
    let mg = p.m / p.group;
    for b in 0..p.n {
        for mo in 0..p.m {
            let g = mo / mg;
            for oy in 0..p.oh {
                for ox in 0..p.ow {
                    let mut acc = bias.map_or(0.0, |bs| bs[mo]);
                    for ci in 0..cg {
                        for r in 0..p.kh {
                            let iy =
                                (oy * p.stride[0] + r * p.dilation[0]) as isize - p.pad[0] as isize;
                            if iy < 0 || iy >= p.h as isize {
                                continue;
                            }
                            for s in 0..p.kw {
                                let ix = (ox * p.stride[1] + s * p.dilation[1]) as isize
                                    - p.pad[1] as isize;
                                if ix < 0 || ix >= p.w as isize {
                                    continue;
                                }
                                let xv = x[((b * p.c + g * cg + ci) * p.h + iy as usize) * p.w
                                    + ix as usize];
                                let wv = w[((mo * cg + ci) * p.kh + r) * p.kw + s];
                                acc += xv * wv;
                            }
                        }
                    }
                    y[((b * p.m + mo) * p.oh + oy) * p.ow + ox] = acc;
                }
            }
        }
    }
}

/// ConvTranspose: x `[n, c, h, w]`, w `[c, m/group, kh, kw]`, y `[n, m, oh, ow]`
/// (oh/ow given; pads as in ONNX after auto_pad/output_padding resolution:
/// top, left, bottom, right).
///
/// Output position `o = i · stride + k · dilation − pad_begin` receives
/// `x[i] · w[k]`; positions outside `[0, oh) × [0, ow)` are dropped. Computed
/// directly, one output plane at a time, as row axpys (no scratch).
///
/// # Panics
/// If a slice is too short, a stride or dilation is 0, or `group` does not
/// divide `c` and `m`.
pub fn conv_transpose2d(p: &Conv2d, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let mg = p.m.checked_div(p.group).unwrap_or(0);
    check_lens(p, p.c, p.m, prod(&[p.c, mg, p.kh, p.kw]), x, w, bias, y);
    let cg = p.c / p.group;
    let [sh, sw] = p.stride;
    let [dh, dw] = p.dilation;
    let (pt, pl) = (p.pad[0] as isize, p.pad[1] as isize);
    let (hw, ohw, kk) = (p.h * p.w, p.oh * p.ow, p.kh * p.kw);
    for b in 0..p.n {
        for mo in 0..p.m {
            let g = mo / mg.max(1);
            let yc = &mut y[(b * p.m + mo) * ohw..][..ohw];
            yc.fill(bias.map_or(0.0, |bs| bs[mo]));
            for ci in g * cg..(g + 1) * cg {
                let xc = &x[(b * p.c + ci) * hw..][..hw];
                let wc = &w[(ci * mg + mo % mg.max(1)) * kk..][..kk];
                for r in 0..p.kh {
                    // Input rows iy with oy = iy·sh + r·dh − pt in [0, oh).
                    let (i0, i1) = out_range((r * dh) as isize - pt, sh, p.oh, p.h);
                    for iy in i0..i1 {
                        let oy = ((iy * sh + r * dh) as isize - pt) as usize;
                        let xrow = &xc[iy * p.w..][..p.w];
                        let yrow = &mut yc[oy * p.ow..][..p.ow];
                        for s in 0..p.kw {
                            let wv = wc[r * p.kw + s];
                            let off = (s * dw) as isize - pl;
                            let (j0, j1) = out_range(off, sw, p.ow, p.w);
                            if j0 == j1 {
                                continue;
                            }
                            let ox0 = (j0 as isize * sw as isize + off) as usize;
                            let xs = &xrow[j0..j1];
                            if sw == 1 {
                                for (yv, &xv) in yrow[ox0..].iter_mut().zip(xs) {
                                    *yv += wv * xv;
                                }
                            } else {
                                for (yv, &xv) in yrow[ox0..].iter_mut().step_by(sw).zip(xs) {
                                    *yv += wv * xv;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The fast paths of [`conv2d`] under both GEMM engines (row-major and
    //! packed-panel im2col) against [`conv2d_reference`].
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

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

    /// Random convolutions: groups (incl. depthwise), strides, dilations,
    /// asymmetric pads, 1x1 and 1-D shapes.
    fn conv_case() -> impl Strategy<Value = (Conv2d, bool, u64)> {
        (
            (
                1usize..=2,
                1usize..=3,
                1usize..=4,
                prop_oneof![1usize..=3, 4usize..=20],
                prop_oneof![Just(0usize), 1usize..=3],
            ),
            (
                1usize..=8,
                prop_oneof![1usize..=10, 10usize..=40],
                1usize..=3,
                1usize..=3,
            ),
            (1usize..=3, 1usize..=3, 1usize..=2, 1usize..=2),
            [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
            (any::<bool>(), any::<bool>(), any::<u64>()),
        )
            .prop_filter_map("empty output", |(g, sp, sd, pad, (b, one_d, seed))| {
                let (n, group, cg, mg, mult) = g;
                // mult > 0: depthwise with multiplier `mult`.
                let (c, m, group) = if mult > 0 {
                    (group * cg, group * cg * mult, group * cg)
                } else {
                    (group * cg, group * mg, group)
                };
                let (h, w, kh, kw) = sp;
                let (h, kh) = if one_d { (1, 1) } else { (h, kh) };
                let pad = if one_d { [0, pad[1], 0, pad[3]] } else { pad };
                let (sh, sw, dh, dw) = sd;
                let span = |len: usize, p0: usize, p1: usize, k: usize, d: usize, s: usize| {
                    (len + p0 + p1)
                        .checked_sub(d * (k - 1) + 1)
                        .map(|v| v / s + 1)
                };
                let oh = span(h, pad[0], pad[2], kh, dh, sh)?;
                let ow = span(w, pad[1], pad[3], kw, dw, sw)?;
                let p = Conv2d {
                    n,
                    c,
                    h,
                    w,
                    m,
                    kh,
                    kw,
                    oh,
                    ow,
                    group,
                    stride: [sh, sw],
                    dilation: [dh, dw],
                    pad,
                };
                Some((p, b, seed))
            })
    }

    fn check_conv(eng: Engine, p: &Conv2d, with_bias: bool, seed: u64) {
        let cg = p.c / p.group;
        let x = data(p.n * p.c * p.h * p.w, seed);
        let w = data(p.m * cg * p.kh * p.kw, seed ^ 0x55);
        let bias = data(p.m, seed ^ 0xaa);
        let bias = with_bias.then_some(&bias[..]);
        let ylen = p.n * p.m * p.oh * p.ow;
        let mut want = std::vec![0.0; ylen];
        conv2d_reference(p, &x, &w, bias, &mut want);
        let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
        let abias = bias.map(abs);
        let mut bound = std::vec![0.0; ylen];
        conv2d_reference(p, &abs(&x), &abs(&w), abias.as_deref(), &mut bound);
        let mut y = std::vec![f32::NAN; ylen];
        let mut scratch = std::vec![f32::NAN; conv2d_scratch_len(p)];
        conv2d_with(eng, p, &x, &w, bias, &mut y, &mut scratch);
        let k = (cg * p.kh * p.kw) as f32;
        for (i, ((g, w), b)) in y.iter().zip(&want).zip(&bound).enumerate() {
            let tol = 1e-5 * (k + 1.0) * b.max(1e-6);
            assert!(
                (g - w).abs() <= tol,
                "{p:?} {eng:?}: y[{i}] = {g}, want {w}"
            );
        }
    }

    proptest! {
        #[test]
        fn conv2d_engines_match_reference((p, with_bias, seed) in conv_case()) {
            check_conv(Engine::portable(), &p, with_bias, seed);
            #[cfg(target_arch = "x86_64")]
            for eng in Engine::simd() {
                check_conv(eng, &p, with_bias, seed);
            }
        }
    }

    #[test]
    fn out_range_bounds() {
        // o * 2 - 1 in [0, 5): o in 1..=2 (o = 3 gives 5).
        assert_eq!(out_range(-1, 2, 5, 10), (1, 3));
        assert_eq!(out_range(3, 1, 2, 4), (0, 0));
        assert_eq!(out_range(0, 3, 7, 2), (0, 2));
        assert_eq!(out_range(-10, 1, 4, 3), (3, 3));
    }
}
