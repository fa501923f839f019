//! Int8 fully connected layers on weights packed at compile time: blocks
//! of 16 units, each `[depth / 4][16 units][4 bytes]` (unit and depth tails
//! zero), with `bias - (128 + x_zp)·Σ w` folded per unit. Each input row
//! becomes words of four unsigned bytes (`x ^ 0x80`), and a block's 16
//! sums grow by `dot4(x word, weight word)` per word: one VPDPBUSD per word
//! and block on AVX-512 VNNI, no horizontal reductions. Exact wrapping
//! `i32` sums, so the bytes of [`crate::quant::fully_connected_i8`].

use crate::fixed::Multiplier;
use crate::gemm::Kernel;
use crate::quant::QFullyConnected;

/// Units per block (16 lanes of `i32`).
pub(crate) const UNITS: usize = 16;

/// Bytes of the packed weights of `units × depth`.
pub(crate) fn packed_len(units: usize, depth: usize) -> usize {
    units.div_ceil(UNITS) * depth.div_ceil(4) * UNITS * 4
}

/// Packs `w` (`[units, depth]`) and folds the zero point into `fold`.
pub(crate) fn pack(
    p: &QFullyConnected,
    w: &[i8],
    bias: Option<&[i32]>,
    packed: &mut [i8],
    fold: &mut [i32],
) {
    let k4 = p.depth.div_ceil(4);
    let packed = &mut packed[..packed_len(p.units, p.depth)];
    packed.fill(0);
    for (u, (wr, f)) in w
        .chunks_exact(p.depth.max(1))
        .zip(fold.iter_mut())
        .take(p.units)
        .enumerate()
    {
        let base = (u / UNITS) * k4 * UNITS * 4 + (u % UNITS) * 4;
        let mut sum = 0i32;
        for (d, &v) in wr.iter().enumerate() {
            packed[base + (d / 4) * UNITS * 4 + d % 4] = v;
            sum = sum.wrapping_add(i32::from(v));
        }
        let b = bias.map_or(0, |b| b[u]);
        *f = b.wrapping_sub((128 + p.x_zp).wrapping_mul(sum));
    }
}

/// Sums of up to 4 blocks of one row: `acc[v·16 + j] = Σ_g dot4(x[g],
/// w word (block v, g, lane j))`, `w` starting at the first block.
#[derive(Debug)]
pub(crate) struct Blocks<'a> {
    pub(crate) x: &'a [u32],
    pub(crate) w: &'a [i8],
    pub(crate) blocks: usize,
    pub(crate) acc: &'a mut [i32; 4 * UNITS],
}

impl Kernel for Blocks<'_> {
    #[inline(always)]
    fn run(self) {
        let k4 = self.x.len();
        for v in 0..self.blocks {
            let acc = &mut self.acc[v * UNITS..][..UNITS];
            acc.fill(0);
            let wb = &self.w[v * k4 * UNITS * 4..][..k4 * UNITS * 4];
            for (g, &xw) in self.x.iter().enumerate() {
                let xb = xw.to_le_bytes().map(i32::from);
                let ww = &wb[g * UNITS * 4..][..UNITS * 4];
                for (a, w4) in acc.iter_mut().zip(ww.chunks_exact(4)) {
                    let d = xb[0] * i32::from(w4[0])
                        + xb[1] * i32::from(w4[1])
                        + xb[2] * i32::from(w4[2])
                        + xb[3] * i32::from(w4[3]);
                    *a = a.wrapping_add(d);
                }
            }
        }
    }
}

/// The whole layer inside one call compiled for the engine's vector unit.
struct Layer<'a> {
    vnni: Option<super::quant::Gemv>,
    p: &'a QFullyConnected,
    x: &'a [i8],
    w: &'a [i8],
    fold: &'a [i32],
    requant: &'a [[i32; 2]],
    y: &'a mut [i8],
    xw: &'a mut [u32],
}

impl Kernel for Layer<'_> {
    #[inline(always)]
    fn run(self) {
        let Layer {
            vnni,
            p,
            x,
            w,
            fold,
            requant,
            y,
            xw,
        } = self;
        let k4 = p.depth.div_ceil(4);
        let block = k4 * UNITS * 4;
        let (lo, hi) = (p.act_min.clamp(-128, 127), p.act_max.clamp(-128, 127));
        let mut acc = [0i32; 4 * UNITS];
        for (xr, yr) in x
            .chunks_exact(p.depth)
            .zip(y.chunks_exact_mut(p.units))
            .take(p.rows)
        {
            let whole = xr.len() / 4;
            for (word, q) in xw.iter_mut().zip(xr.chunks_exact(4)) {
                *word = u32::from_le_bytes([q[0], q[1], q[2], q[3]].map(|v| (v as u8) ^ 0x80));
            }
            if let Some(word) = xw.get_mut(whole) {
                // The tail word: missing bytes are 0 (their weights are 0).
                let mut b = [0u8; 4];
                for (v, &s) in b.iter_mut().zip(&xr[4 * whole..]) {
                    *v = (s as u8) ^ 0x80;
                }
                *word = u32::from_le_bytes(b);
            }
            for u0 in (0..p.units).step_by(4 * UNITS) {
                let blocks = (p.units - u0).div_ceil(UNITS).min(4);
                let t = Blocks {
                    x: xw,
                    w: &w[(u0 / UNITS) * block..][..blocks * block],
                    blocks,
                    acc: &mut acc,
                };
                match vnni {
                    #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
                    Some(v) => v.fc_blocks(t),
                    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                    _ => crate::simd_wasm::fc_blocks(t),
                    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
                    _ => t.run(),
                }
                let n = (p.units - u0).min(4 * UNITS);
                let (out, acc, fold) = (&mut yr[u0..u0 + n], &acc[..n], &fold[u0..u0 + n]);
                let store = |o: &mut i8, a: i32, f: i32, [mantissa, shift]: [i32; 2]| {
                    let v = Multiplier { mantissa, shift }.apply(a.wrapping_add(f));
                    *o = v.saturating_add(p.y_zp).clamp(lo, hi) as i8;
                };
                if let [one] = requant {
                    for ((o, &a), &f) in out.iter_mut().zip(acc).zip(fold) {
                        store(o, a, f, *one);
                    }
                } else {
                    for (((o, &a), &f), &rq) in
                        out.iter_mut().zip(acc).zip(fold).zip(&requant[u0..])
                    {
                        store(o, a, f, rq);
                    }
                }
            }
        }
    }
}

/// Runs the packed layer (`xw`: `ceil(depth / 4)` scratch words).
#[allow(clippy::too_many_arguments, reason = "the op's operands")]
pub(crate) fn run(
    vnni: Option<super::quant::Gemv>,
    p: &QFullyConnected,
    x: &[i8],
    w: &[i8],
    fold: &[i32],
    requant: &[[i32; 2]],
    y: &mut [i8],
    xw: &mut [u32],
) {
    crate::gemm::Engine::detect().run(Layer {
        vnni,
        p,
        x,
        w,
        fold,
        requant,
        y,
        xw,
    });
}
