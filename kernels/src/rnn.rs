//! Recurrent cells: ONNX `LSTM` and `GRU` (layout 0, time-major), with the
//! activation functions the ONNX spec allows inside them.
//!
//! Both kernels first project the whole input sequence through `W` in one
//! matrix product (into scratch), then walk the time steps, adding `R · h`
//! for each step. Bidirectional runs do the forward direction, then the
//! reverse one, reusing the same scratch. The order of the floating-point
//! additions follows onnxruntime's CPU kernels: `(x·Wᵀ + h·Rᵀ) [+ P ⊙ c] +
//! (Wb + Rb)`, then the clip, then the activation. Matrix products go
//! through [`crate::gemm::gemm`].
//!
//! Sequence lengths: a batch entry with length `L` runs time steps
//! `0..L` (forward) or `L-1..=0` (reverse); later steps write zeros to `Y`
//! and leave its state alone, so `Y_h`/`Y_c` hold the state after the last
//! real step. As in onnxruntime, an entry with length 0 gets zeros in
//! `Y_h`/`Y_c` (not `h0`/`c0`). Lengths outside `0..=seq` are clamped.

use crate::gemm::{Engine, gemm};

/// Activation function of a recurrent cell (ONNX `activations` attribute).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `max(0, x)`.
    Relu,
    /// `max(0, min(1, alpha * x + beta))`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `alpha * x + beta`.
    Affine {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `x` for `x >= 0`, else `alpha * x`.
    LeakyRelu {
        /// Slope below zero.
        alpha: f32,
    },
    /// `alpha * tanh(beta * x)`.
    ScaledTanh {
        /// Output scale.
        alpha: f32,
        /// Input scale.
        beta: f32,
    },
    /// `x` for `x >= 0`, else `alpha * (e^x - 1)`.
    Elu {
        /// Scale below zero.
        alpha: f32,
    },
    /// `x / (1 + |x|)`.
    Softsign,
    /// `ln(1 + e^x)`.
    Softplus,
    /// `x` for `x > alpha`, else 0.
    ThresholdedRelu {
        /// Threshold.
        alpha: f32,
    },
}

/// Applies activation `a` to `x`.
#[inline]
pub fn act(a: Act, x: f32) -> f32 {
    match a {
        Act::Sigmoid => 1.0 / (1.0 + libm::expf(-x)),
        Act::Tanh => libm::tanhf(x),
        Act::Relu => {
            if x > 0.0 {
                x
            } else {
                0.0
            }
        }
        Act::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
        Act::Affine { alpha, beta } => alpha * x + beta,
        Act::LeakyRelu { alpha } => {
            if x >= 0.0 {
                x
            } else {
                alpha * x
            }
        }
        Act::ScaledTanh { alpha, beta } => alpha * libm::tanhf(beta * x),
        Act::Elu { alpha } => {
            if x >= 0.0 {
                x
            } else {
                alpha * libm::expm1f(x)
            }
        }
        Act::Softsign => x / (1.0 + libm::fabsf(x)),
        // max(x, 0) + ln(1 + e^-|x|): no overflow for large x.
        Act::Softplus => {
            let m = if x > 0.0 { x } else { 0.0 };
            m + libm::log1pf(libm::expf(-libm::fabsf(x)))
        }
        Act::ThresholdedRelu { alpha } => {
            if x > alpha {
                x
            } else {
                0.0
            }
        }
    }
}

/// Clips (when `c` is set) and applies `a` to every element of `v`. Sigmoid
/// and tanh, the cells' usual gates, use the vectorisable
/// [`crate::math::sigmoid_approx`] / [`crate::math::tanh_approx`] (a few ulp
/// from libm), compiled for the CPU's vector unit; the rest go through
/// [`act`].
fn act_rows(a: Act, c: Option<f32>, v: &mut [f32]) {
    #[inline(always)]
    fn rows(&(a, c): &(Act, Option<f32>), _: &[f32], v: &mut [f32]) {
        match (a, c) {
            (Act::Sigmoid, None) => crate::math::map_inplace(v, crate::math::sigmoid_approx),
            (Act::Tanh, None) => crate::math::map_inplace(v, crate::math::tanh_approx),
            (Act::Sigmoid, Some(c)) => {
                crate::math::map_inplace(v, |x| crate::math::sigmoid_approx(clip(x, Some(c))))
            }
            (Act::Tanh, Some(c)) => {
                crate::math::map_inplace(v, |x| crate::math::tanh_approx(clip(x, Some(c))))
            }
            _ => crate::math::map_inplace(v, |x| act(a, clip(x, c))),
        }
    }
    crate::gemm::Engine::detect().vectorized(rows, &(a, c), &[], v);
}

/// Shape and direction of an LSTM / GRU run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rnn {
    /// Time steps in `x`.
    pub seq: usize,
    /// Batch size.
    pub batch: usize,
    /// Input features per step.
    pub input: usize,
    /// Hidden size `H`.
    pub hidden: usize,
    /// 1 or 2
    pub directions: usize,
    /// when directions == 1: run backwards in time (direction = "reverse")
    pub reverse: bool,
    /// Clip threshold applied to every gate's pre-activation (ONNX `clip`).
    pub clip: Option<f32>,
    /// Bound on the LSTM cell state after every update (TFLite's
    /// `cell_clip`, which ONNX lacks).
    pub cell_clip: Option<f32>,
}

/// f32 scratch elements lstm()/gru() need.
///
/// LSTM: the input projection `[seq, batch, 4H]`, the `h` and `c` states and
/// `Wᵀ` or `Rᵀ` of one direction (one after the other) in the GEMM engine's
/// packed layout.
pub fn lstm_scratch_len(p: &Rnn) -> usize {
    p.seq * p.batch * 4 * p.hidden
        + 2 * p.batch * p.hidden
        + Engine::b_len(p.hidden.max(p.input), 4 * p.hidden)
        + ALIGN_SLACK
}

/// Floats of slack so the packed weights can start on a 64-byte boundary
/// (each 16-float panel row is then exactly one cache line).
const ALIGN_SLACK: usize = 15;

/// f32 scratch elements gru() needs: the input projection `[seq, batch, 3H]`,
/// the `h` state, `h·R[zr]ᵀ` (`[batch, 2H]`) and two `[batch, H]` temporaries.
pub fn gru_scratch_len(p: &Rnn) -> usize {
    p.seq * p.batch * 3 * p.hidden + 5 * p.batch * p.hidden
}

/// Clips to `[-c, c]` when a threshold is set (NaN passes through).
#[inline]
fn clip(v: f32, c: Option<f32>) -> f32 {
    match c {
        Some(c) if v > c => c,
        Some(c) if v < -c => -c,
        _ => v,
    }
}

/// Length of batch entry `b`, clamped to `0..=seq`.
#[inline]
fn seq_len(seq_lens: Option<&[i32]>, b: usize, seq: usize) -> usize {
    match seq_lens {
        Some(l) => (l[b].max(0) as usize).min(seq),
        None => seq,
    }
}

/// Whether direction `d` runs backwards in time.
#[inline]
fn is_backward(p: &Rnn, d: usize) -> bool {
    if p.directions == 2 { d == 1 } else { p.reverse }
}

/// ONNX LSTM (layout 0): x [seq, batch, input]; w [dirs, 4H, input] gate order i,o,f,c; r [dirs, 4H, H]; b [dirs, 8H] (Wb then Rb) or None = zeros;
/// seq_lens [batch] (None = all seq; steps past a batch entry's length produce zeros in y and keep h/c);
/// h0, c0 [dirs, batch, H] or None = zeros; peep [dirs, 3H] (i, o, f) or None;
/// acts = [f, g, h] for the forward direction (ONNX `activations`, default Sigmoid, Tanh, Tanh) — the same acts are used for both directions;
/// input_forget couples input and forget gates (f = 1 - i).
/// Outputs (each optional): y [seq, dirs, batch, H], y_h [dirs, batch, H], y_c [dirs, batch, H].
///
/// `scratch` has at least [`lstm_scratch_len`] elements. The output gate's
/// peephole uses the new cell state, the others the previous one.
#[allow(
    clippy::too_many_arguments,
    reason = "mirrors the ONNX operator's inputs and outputs"
)]
pub fn lstm(
    p: &Rnn,
    acts: [Act; 3],
    input_forget: bool,
    x: &[f32],
    w: &[f32],
    r: &[f32],
    b: Option<&[f32]>,
    seq_lens: Option<&[i32]>,
    h0: Option<&[f32]>,
    c0: Option<&[f32]>,
    peep: Option<&[f32]>,
    y: Option<&mut [f32]>,
    y_h: Option<&mut [f32]>,
    y_c: Option<&mut [f32]>,
    scratch: &mut [f32],
) {
    lstm_prepacked(
        p,
        acts,
        input_forget,
        x,
        [w, r, &[]],
        b,
        seq_lens,
        h0,
        c0,
        peep,
        y,
        y_h,
        y_c,
        scratch,
    );
}

/// Floats of the weights [`lstm_prepack`] repacks for `p`: per direction
/// `Wᵀ` in the GEMM's packed layout and `R` interleaved by 8 rows, when
/// this build has the one-row product (batch 1 on SIMD128); else 0.
pub fn lstm_prepack_len(p: &Rnn) -> usize {
    let (g4, eng) = (4 * p.hidden, Engine::detect());
    if p.batch != 1 || !eng.rows8(g4, p.hidden) {
        return 0;
    }
    p.directions * (Engine::b_len(p.input, g4) + g4 * p.hidden)
}

/// Repacks `w` and `r` (as [`lstm`] takes them) into `out`
/// ([`lstm_prepack_len`] floats) for [`lstm_prepacked`], once per model
/// instead of once per run.
///
/// # Panics
/// If a slice is shorter than `p` says.
pub fn lstm_prepack(p: &Rnn, w: &[f32], r: &[f32], out: &mut [f32]) {
    let (ni, h, g4, eng) = (p.input, p.hidden, 4 * p.hidden, Engine::detect());
    let per = lstm_prepack_len(p) / p.directions.max(1);
    for (d, o) in out[..per * p.directions]
        .chunks_exact_mut(per.max(1))
        .enumerate()
    {
        let (ow, or) = o.split_at_mut(Engine::b_len(ni, g4));
        eng.pack_bt(&w[d * g4 * ni..][..g4 * ni], ni, g4, ow);
        eng.pack_rows8(&r[d * g4 * h..][..g4 * h], g4, h, or);
    }
}

/// [`lstm`] with `w`, `r` and `pre`: the weights as stored and, when not
/// empty, their [`lstm_prepack`] (then used instead of packing per run).
/// Not inlined: the step loop must be compiled with the kernels (the wasm
/// build optimises this crate for speed and its callers for size).
#[inline(never)]
#[allow(
    clippy::too_many_arguments,
    reason = "mirrors the ONNX operator's inputs and outputs"
)]
pub fn lstm_prepacked(
    p: &Rnn,
    acts: [Act; 3],
    input_forget: bool,
    x: &[f32],
    [w, r, pre]: [&[f32]; 3],
    b: Option<&[f32]>,
    seq_lens: Option<&[i32]>,
    h0: Option<&[f32]>,
    c0: Option<&[f32]>,
    peep: Option<&[f32]>,
    mut y: Option<&mut [f32]>,
    mut y_h: Option<&mut [f32]>,
    mut y_c: Option<&mut [f32]>,
    scratch: &mut [f32],
) {
    let (s, nb, ni, h) = (p.seq, p.batch, p.input, p.hidden);
    let dirs = p.directions;
    let g4 = 4 * h;
    let [fa, ga, ha] = acts;
    let (xw, rest) = scratch.split_at_mut(s * nb * g4);
    let (hs, rest) = rest.split_at_mut(nb * h);
    let (cs, rest) = rest.split_at_mut(nb * h);
    // Wᵀ and Rᵀ are packed once per direction: every step then streams Rᵀ
    // in the order the GEMM reads it (all batch rows at once).
    let skip = rest.as_ptr().align_offset(64).min(ALIGN_SLACK);
    let packed = &mut rest[skip..skip + Engine::b_len(h.max(ni), g4)];
    let eng = Engine::detect();
    let plain = acts == [Act::Sigmoid, Act::Tanh, Act::Tanh]
        && p.clip.is_none()
        && p.cell_clip.is_none()
        && !input_forget
        && peep.is_none();

    for d in 0..dirs {
        let backward = is_backward(p, d);
        let wd = &w[d * g4 * ni..(d + 1) * g4 * ni];
        let rd = &r[d * g4 * h..(d + 1) * g4 * h];
        let bd = b.map(|b| &b[d * 8 * h..(d + 1) * 8 * h]);
        let pd = peep.map(|p| &p[d * 3 * h..(d + 1) * 3 * h]);
        let state = d * nb * h..(d + 1) * nb * h;
        match h0 {
            Some(h0) => hs.copy_from_slice(&h0[state.clone()]),
            None => hs.fill(0.0),
        }
        match c0 {
            Some(c0) => cs.copy_from_slice(&c0[state.clone()]),
            None => cs.fill(0.0),
        }

        // This direction's share of the caller's prepacked weights.
        let per = lstm_prepack_len(p) / dirs.max(1);
        let pre_d = (per > 0 && pre.len() >= per * dirs).then(|| &pre[d * per..][..per]);
        let bw = Engine::b_len(ni, g4);
        // W is used once per direction but for every time step: packing it
        // first turns the projection into a prepacked GEMM.
        if s * nb > 0 {
            match pre_d {
                Some(pw) => eng.gemm_nn(s * nb, g4, ni, x, &pw[..bw], 0.0, xw),
                None => {
                    eng.pack_bt(wd, ni, g4, packed);
                    eng.gemm_nn(s * nb, g4, ni, x, packed, 0.0, xw);
                }
            }
        }
        // Batch 1 on the SIMD128 engine: R interleaved by 8 rows (one pass,
        // then every step streams it), or read in place when its shape
        // does not suit; elsewhere packed for the GEMM.
        let rows8 = nb == 1 && eng.rows8(g4, h);
        let unpacked = !rows8 && nb == 1 && eng.gemv_unpacked();
        let rp: &[f32] = match pre_d {
            Some(pr) if rows8 => &pr[bw..],
            _ => {
                if rows8 {
                    eng.pack_rows8(rd, g4, h, packed);
                } else if !unpacked {
                    eng.pack_bt(rd, h, g4, packed);
                }
                &*packed
            }
        };

        for step in 0..s {
            let t = if backward { s - 1 - step } else { step };
            let g = &mut xw[t * nb * g4..(t + 1) * nb * g4];
            if rows8 {
                eng.gemv_rows8(g4, h, hs, rp, g);
            } else if unpacked {
                eng.gemm_bt(1, g4, h, hs, rd, 1.0, g);
            } else {
                eng.gemm_nn(nb, g4, h, hs, rp, 1.0, g);
            }
            for bi in 0..nb {
                let out = ((t * dirs + d) * nb + bi) * h..((t * dirs + d) * nb + bi + 1) * h;
                if t >= seq_len(seq_lens, bi, s) {
                    if let Some(y) = y.as_deref_mut() {
                        y[out].fill(0.0);
                    }
                    continue;
                }
                if plain {
                    // The default cell, fused into one pass per batch row.
                    let cell = Cell {
                        g: &g[bi * g4..(bi + 1) * g4],
                        c: &mut cs[bi * h..(bi + 1) * h],
                        h: &mut hs[bi * h..(bi + 1) * h],
                        b: bd,
                    };
                    eng.lstm_cell(cell);
                    if let Some(y) = y.as_deref_mut() {
                        y[out].copy_from_slice(&hs[bi * h..(bi + 1) * h]);
                    }
                    continue;
                }
                let gr = &mut g[bi * g4..(bi + 1) * g4];
                let (gi, gr) = gr.split_at_mut(h);
                let (go, gr) = gr.split_at_mut(h);
                let (gf, gc) = gr.split_at_mut(h);
                let hr = &mut hs[bi * h..(bi + 1) * h];
                let cr = &mut cs[bi * h..(bi + 1) * h];
                // Gate by gate over whole rows, so every loop vectorises;
                // per element the order of operations is that of the
                // reference cell: (xW + hR) [+ P ⊙ c] + (Wb + Rb), clip, act.
                if let Some(pd) = pd {
                    for j in 0..h {
                        gi[j] += pd[j] * cr[j];
                        gf[j] += pd[2 * h + j] * cr[j];
                    }
                }
                if let Some(bd) = bd {
                    for j in 0..h {
                        gi[j] += bd[j] + bd[g4 + j];
                        gf[j] += bd[2 * h + j] + bd[g4 + 2 * h + j];
                        gc[j] += bd[3 * h + j] + bd[g4 + 3 * h + j];
                    }
                }
                act_rows(fa, p.clip, gi);
                if input_forget {
                    for j in 0..h {
                        gf[j] = 1.0 - gi[j];
                    }
                } else {
                    act_rows(fa, p.clip, gf);
                }
                act_rows(ga, p.clip, gc);
                for j in 0..h {
                    cr[j] = clip(gf[j] * cr[j] + gi[j] * gc[j], p.cell_clip);
                }
                if let Some(pd) = pd {
                    for j in 0..h {
                        go[j] += pd[h + j] * cr[j];
                    }
                }
                if let Some(bd) = bd {
                    for j in 0..h {
                        go[j] += bd[h + j] + bd[g4 + h + j];
                    }
                }
                act_rows(fa, p.clip, go);
                hr.copy_from_slice(cr);
                act_rows(ha, None, hr);
                for j in 0..h {
                    hr[j] *= go[j];
                }
                if let Some(y) = y.as_deref_mut() {
                    y[out].copy_from_slice(hr);
                }
            }
        }

        for bi in 0..nb {
            let zero = seq_len(seq_lens, bi, s) == 0;
            let o = d * nb * h + bi * h..d * nb * h + (bi + 1) * h;
            if let Some(yh) = y_h.as_deref_mut() {
                copy_or_zero(&mut yh[o.clone()], &hs[bi * h..(bi + 1) * h], zero);
            }
            if let Some(yc) = y_c.as_deref_mut() {
                copy_or_zero(&mut yc[o], &cs[bi * h..(bi + 1) * h], zero);
            }
        }
    }
}

/// One batch row of the default LSTM cell (sigmoid, tanh, tanh; no clip,
/// peepholes or coupling): gates `g` (`i, o, f, c`, each `H`) to the new
/// `c` and `h`, with the operation order of the general path.
pub(crate) struct Cell<'a> {
    pub(crate) g: &'a [f32],
    pub(crate) c: &'a mut [f32],
    pub(crate) h: &'a mut [f32],
    /// `Wb` then `Rb` (`8H`).
    pub(crate) b: Option<&'a [f32]>,
}

impl crate::gemm::Kernel for Cell<'_> {
    #[inline(always)]
    fn run(self) {
        /// Lanes per block: a whole number of vectors on every target, so
        /// the block body compiles to straight-line SIMD.
        const L: usize = 16;
        let n = self.c.len();
        let (c, h) = (self.c, &mut self.h[..n]);
        let g = &self.g[..4 * n];
        let mut j = 0;
        while j + L <= n {
            cell_block::<L>(g, self.b, n, j, &mut c[j..j + L], &mut h[j..j + L]);
            j += L;
        }
        while j < n {
            cell_block::<1>(g, self.b, n, j, &mut c[j..=j], &mut h[j..=j]);
            j += 1;
        }
    }
}

/// Columns `j..j + L` of [`Cell`]: gates `g` (`4n`, order i, o, f, c),
/// biases `b` (`8n`), state `c` and output `h` (`L` each).
#[inline(always)]
pub(crate) fn cell_block<const L: usize>(
    g: &[f32],
    b: Option<&[f32]>,
    n: usize,
    j: usize,
    c: &mut [f32],
    h: &mut [f32],
) {
    use crate::math::{sigmoid_approx as sig, tanh_approx as tanh};
    let lanes = |off: usize| -> [f32; L] {
        let mut v = [0.0; L];
        v.copy_from_slice(&g[off + j..off + j + L]);
        v
    };
    let (mut gi, mut go, mut gf, mut gc) = (lanes(0), lanes(n), lanes(2 * n), lanes(3 * n));
    if let Some(b) = b {
        let (wb, rb) = b.split_at(4 * n);
        for (gate, v) in [&mut gi, &mut go, &mut gf, &mut gc].into_iter().enumerate() {
            let (wb, rb) = (&wb[gate * n + j..][..L], &rb[gate * n + j..][..L]);
            for l in 0..L {
                v[l] += wb[l] + rb[l];
            }
        }
    }
    let (c, h) = (&mut c[..L], &mut h[..L]);
    for l in 0..L {
        let cl = sig(gf[l]) * c[l] + sig(gi[l]) * tanh(gc[l]);
        c[l] = cl;
        h[l] = sig(go[l]) * tanh(cl);
    }
}

fn copy_or_zero(dst: &mut [f32], src: &[f32], zero: bool) {
    if zero {
        dst.fill(0.0);
    } else {
        dst.copy_from_slice(src);
    }
}

/// ONNX GRU (layout 0): w [dirs, 3H, input] gate order z, r, h; r [dirs, 3H, H]; b [dirs, 6H]; acts = [f, g]; linear_before_reset per spec.
///
/// x [seq, batch, input]; b is `Wb` then `Rb` (None = zeros); seq_lens and
/// h0 as for [`lstm`]; the same acts are used for both directions (ONNX
/// default Sigmoid, Tanh). Outputs (each optional): y [seq, dirs, batch, H],
/// y_h [dirs, batch, H]. `scratch` has at least [`gru_scratch_len`] elements.
#[allow(
    clippy::too_many_arguments,
    reason = "mirrors the ONNX operator's inputs and outputs"
)]
#[inline(never)]
pub fn gru(
    p: &Rnn,
    acts: [Act; 2],
    linear_before_reset: bool,
    x: &[f32],
    w: &[f32],
    r: &[f32],
    b: Option<&[f32]>,
    seq_lens: Option<&[i32]>,
    h0: Option<&[f32]>,
    mut y: Option<&mut [f32]>,
    mut y_h: Option<&mut [f32]>,
    scratch: &mut [f32],
) {
    let (s, nb, ni, h) = (p.seq, p.batch, p.input, p.hidden);
    let dirs = p.directions;
    let g3 = 3 * h;
    let [fa, ga] = acts;
    let (xw, rest) = scratch.split_at_mut(s * nb * g3);
    let (hs, rest) = rest.split_at_mut(nb * h);
    let (zr, rest) = rest.split_at_mut(nb * 2 * h);
    let (lin, rest) = rest.split_at_mut(nb * h);
    let rh = &mut rest[..nb * h];

    for d in 0..dirs {
        let backward = is_backward(p, d);
        let wd = &w[d * g3 * ni..(d + 1) * g3 * ni];
        let rd = &r[d * g3 * h..(d + 1) * g3 * h];
        let (r_zr, r_h) = rd.split_at(2 * h * h);
        let bd = b.map(|b| &b[d * 6 * h..(d + 1) * 6 * h]);
        match h0 {
            Some(h0) => hs.copy_from_slice(&h0[d * nb * h..(d + 1) * nb * h]),
            None => hs.fill(0.0),
        }

        gemm(s * nb, g3, ni, 1.0, x, false, wd, true, 0.0, xw);

        for step in 0..s {
            let t = if backward { s - 1 - step } else { step };
            let g = &mut xw[t * nb * g3..(t + 1) * nb * g3];
            gemm(nb, 2 * h, h, 1.0, hs, false, r_zr, true, 0.0, zr);
            if linear_before_reset {
                // lin = h·Rhᵀ + Rbh
                if let Some(bd) = bd {
                    for bi in 0..nb {
                        lin[bi * h..(bi + 1) * h].copy_from_slice(&bd[5 * h..6 * h]);
                    }
                }
                gemm(
                    nb,
                    h,
                    h,
                    1.0,
                    hs,
                    false,
                    r_h,
                    true,
                    if bd.is_some() { 1.0 } else { 0.0 },
                    lin,
                );
            }
            // Reset gate; rh = r ⊙ h (or r ⊙ (h·Rhᵀ + Rbh) with linear_before_reset).
            for bi in 0..nb {
                for j in 0..h {
                    let mut pr = g[bi * g3 + h + j] + zr[bi * 2 * h + h + j];
                    if let Some(bd) = bd {
                        pr += bd[h + j] + bd[4 * h + j];
                    }
                    let rt = act(fa, clip(pr, p.clip));
                    let k = bi * h + j;
                    rh[k] = rt * if linear_before_reset { lin[k] } else { hs[k] };
                }
            }
            if !linear_before_reset {
                gemm(nb, h, h, 1.0, rh, false, r_h, true, 0.0, lin);
            }
            for bi in 0..nb {
                let out = ((t * dirs + d) * nb + bi) * h..((t * dirs + d) * nb + bi + 1) * h;
                if t >= seq_len(seq_lens, bi, s) {
                    if let Some(y) = y.as_deref_mut() {
                        y[out].fill(0.0);
                    }
                    continue;
                }
                for j in 0..h {
                    let k = bi * h + j;
                    let mut pz = g[bi * g3 + j] + zr[bi * 2 * h + j];
                    // Either Xh·Whᵀ + (r ⊙ h)·Rhᵀ or Xh·Whᵀ + r ⊙ (h·Rhᵀ + Rbh).
                    let mut ph =
                        g[bi * g3 + 2 * h + j] + if linear_before_reset { rh[k] } else { lin[k] };
                    if let Some(bd) = bd {
                        pz += bd[j] + bd[3 * h + j];
                        ph += if linear_before_reset {
                            bd[2 * h + j]
                        } else {
                            bd[2 * h + j] + bd[5 * h + j]
                        };
                    }
                    let z = act(fa, clip(pz, p.clip));
                    let ht = act(ga, clip(ph, p.clip));
                    hs[k] = (1.0 - z) * ht + z * hs[k];
                }
                if let Some(y) = y.as_deref_mut() {
                    y[out].copy_from_slice(&hs[bi * h..(bi + 1) * h]);
                }
            }
        }

        if let Some(yh) = y_h.as_deref_mut() {
            for bi in 0..nb {
                let zero = seq_len(seq_lens, bi, s) == 0;
                let o = d * nb * h + bi * h..d * nb * h + (bi + 1) * h;
                copy_or_zero(&mut yh[o], &hs[bi * h..(bi + 1) * h], zero);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// Deterministic test data, exact in f32: multiples of 1/16 in [-11/16, 11/16].
    fn arr(n: usize, salt: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 + salt * 11) % 23) as f32 / 16.0 - 11.0 / 16.0)
            .collect()
    }

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6,
                "at {i}: {g} vs {w}\n got {got:?}\nwant {want:?}"
            );
        }
    }

    const LSTM_ACTS: [Act; 3] = [Act::Sigmoid, Act::Tanh, Act::Tanh];
    const GRU_ACTS: [Act; 2] = [Act::Sigmoid, Act::Tanh];

    #[test]
    fn activations() {
        let e = core::f32::consts::E;
        assert!((act(Act::Sigmoid, 0.0) - 0.5).abs() < 1e-7);
        assert!((act(Act::Sigmoid, 2.0) - 0.880_797_1).abs() < 1e-7);
        assert_eq!(act(Act::Sigmoid, -200.0), 0.0);
        assert!((act(Act::Tanh, 1.0) - 0.761_594_2).abs() < 1e-7);
        assert_eq!(act(Act::Relu, -3.0), 0.0);
        assert_eq!(act(Act::Relu, 3.0), 3.0);
        let hs = Act::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        };
        assert_eq!([act(hs, -5.0), act(hs, 1.0), act(hs, 5.0)], [0.0, 0.7, 1.0]);
        assert_eq!(
            act(
                Act::Affine {
                    alpha: 2.0,
                    beta: 1.0
                },
                3.0
            ),
            7.0
        );
        assert_eq!(act(Act::LeakyRelu { alpha: 0.1 }, -2.0), -0.2);
        assert_eq!(act(Act::LeakyRelu { alpha: 0.1 }, 2.0), 2.0);
        // 2 * tanh(0.5 * 2) = 2 * 0.7615942
        assert!(
            (act(
                Act::ScaledTanh {
                    alpha: 2.0,
                    beta: 0.5
                },
                2.0
            ) - 1.523_188_3)
                .abs()
                < 1e-6
        );
        assert!((act(Act::Elu { alpha: 2.0 }, -1.0) - 2.0 * (1.0 / e - 1.0)).abs() < 1e-6);
        assert_eq!(act(Act::Elu { alpha: 2.0 }, 1.5), 1.5);
        assert_eq!(act(Act::Softsign, 3.0), 0.75);
        assert_eq!(act(Act::Softsign, -1.0), -0.5);
        // ln(1 + e) = 1.3132617; ln 2; large x stays finite and exact.
        assert!((act(Act::Softplus, 1.0) - 1.313_261_7).abs() < 1e-6);
        assert!((act(Act::Softplus, 0.0) - core::f32::consts::LN_2).abs() < 1e-7);
        assert_eq!(act(Act::Softplus, 100.0), 100.0);
        assert_eq!(act(Act::ThresholdedRelu { alpha: 1.0 }, 1.0), 0.0);
        assert_eq!(act(Act::ThresholdedRelu { alpha: 1.0 }, 1.5), 1.5);
    }

    fn rnn(seq: usize, batch: usize, directions: usize, reverse: bool, clip: Option<f32>) -> Rnn {
        Rnn {
            seq,
            batch,
            input: 2,
            hidden: 2,
            directions,
            reverse,
            clip,
            cell_clip: None,
        }
    }

    #[test]
    fn lstm_single_step_by_hand() {
        // H = 1, input = 1, x = 1, W = 0.5 for every gate, R = 0, h0 = c0 = 0:
        // i = o = f = sigmoid(0.5) = 0.6224593, c~ = tanh(0.5) = 0.4621172,
        // C = i * c~ = 0.2876491, H = o * tanh(C) = 0.1742697.
        let p = Rnn {
            seq: 1,
            batch: 1,
            input: 1,
            hidden: 1,
            directions: 1,
            reverse: false,
            clip: None,
            cell_clip: None,
        };
        let mut scratch = vec![f32::NAN; lstm_scratch_len(&p)];
        let (mut y, mut yh, mut yc) = ([0.0], [0.0], [0.0]);
        let w = [0.5; 4];
        lstm(
            &p,
            LSTM_ACTS,
            false,
            &[1.0],
            &w,
            &[0.0; 4],
            None,
            None,
            None,
            None,
            None,
            Some(&mut y),
            Some(&mut yh),
            Some(&mut yc),
            &mut scratch,
        );
        close(&y, &[0.174_269_72]);
        close(&yh, &[0.174_269_72]);
        close(&yc, &[0.287_649_14]);
    }

    /// TFLite's `cell_clip` bounds the cell state itself: the same step
    /// with the cell clipped to 0.1 gives C = 0.1, H = o · tanh(0.1).
    #[test]
    fn lstm_cell_clip_bounds_the_cell_state() {
        let p = Rnn {
            input: 1,
            hidden: 1,
            cell_clip: Some(0.1),
            ..rnn(1, 1, 1, false, None)
        };
        let mut scratch = vec![f32::NAN; lstm_scratch_len(&p)];
        let (mut yh, mut yc) = ([0.0], [0.0]);
        lstm(
            &p,
            LSTM_ACTS,
            false,
            &[1.0],
            &[0.5; 4],
            &[0.0; 4],
            None,
            None,
            None,
            None,
            None,
            None,
            Some(&mut yh),
            Some(&mut yc),
            &mut scratch,
        );
        close(&yc, &[0.1]);
        close(&yh, &[0.622_459_3 * 0.099_667_99]);
    }

    #[test]
    fn gru_single_step_by_hand() {
        // H = 1, x = 1, W = [z 0.5, r 0.5, h 1], h0 = 0.5, R = [0, 0, 2], no bias.
        // z = r = sigmoid(0.5) = 0.6224593
        // h~ = tanh(1 + 2 * (r * 0.5)) = tanh(1.6224593) = 0.9249802
        // H = (1 - z) * h~ + z * 0.5 = 0.3492175 + 0.3112297 = 0.6604473
        // With linear_before_reset and no bias h~ is the same, so use Rbh = 1
        // to tell them apart: default h~ = tanh(1 + 2 * 0.3112297 + 1) = tanh(2.6224593) = 0.9895068,
        // linear_before_reset h~ = tanh(1 + r * (2 * 0.5 + 1)) = tanh(2.2449187) = 0.9778042.
        let p = Rnn {
            seq: 1,
            batch: 1,
            input: 1,
            hidden: 1,
            directions: 1,
            reverse: false,
            clip: None,
            cell_clip: None,
        };
        let mut scratch = vec![f32::NAN; gru_scratch_len(&p)];
        let (w, r) = ([0.5, 0.5, 1.0], [0.0, 0.0, 2.0]);
        let mut yh = [0.0];
        gru(
            &p,
            GRU_ACTS,
            false,
            &[1.0],
            &w,
            &r,
            None,
            None,
            Some(&[0.5]),
            None,
            Some(&mut yh),
            &mut scratch,
        );
        close(&yh, &[0.660_447_3]);
        let b = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let z = 0.622_459_3f32;
        gru(
            &p,
            GRU_ACTS,
            false,
            &[1.0],
            &w,
            &r,
            Some(&b),
            None,
            Some(&[0.5]),
            None,
            Some(&mut yh),
            &mut scratch,
        );
        close(&yh, &[(1.0 - z) * 0.989_506_8 + z * 0.5]);
        gru(
            &p,
            GRU_ACTS,
            true,
            &[1.0],
            &w,
            &r,
            Some(&b),
            None,
            Some(&[0.5]),
            None,
            Some(&mut yh),
            &mut scratch,
        );
        close(&yh, &[(1.0 - z) * 0.977_804_2 + z * 0.5]);
    }

    #[test]
    fn custom_activations_by_hand() {
        // LSTM as in lstm_single_step_by_hand with f = HardSigmoid(0.2, 0.5), g = Relu,
        // h = Affine(2, 1): i = o = f = 0.6, c~ = 0.5, C = 0.3, H = 0.6 * (2 * 0.3 + 1) = 0.96.
        let p = Rnn {
            seq: 1,
            batch: 1,
            input: 1,
            hidden: 1,
            directions: 1,
            reverse: false,
            clip: None,
            cell_clip: None,
        };
        let hs = Act::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        };
        let acts = [
            hs,
            Act::Relu,
            Act::Affine {
                alpha: 2.0,
                beta: 1.0,
            },
        ];
        let mut scratch = vec![0.0; lstm_scratch_len(&p)];
        let (mut yh, mut yc) = ([0.0], [0.0]);
        let w = [0.5; 4];
        let r = [0.0; 4];
        #[rustfmt::skip]
        lstm(&p, acts, false, &[1.0], &w, &r, None, None, None, None, None, None, Some(&mut yh), Some(&mut yc), &mut scratch);
        close(&yh, &[0.96]);
        close(&yc, &[0.3]);
        // GRU with f = HardSigmoid(0.2, 0.5), g = identity: z = r = 0.6,
        // h~ = 1 + 2 * (0.6 * 0.5) = 1.6, H = 0.4 * 1.6 + 0.6 * 0.5 = 0.94.
        let mut scratch = vec![0.0; gru_scratch_len(&p)];
        let acts = [
            hs,
            Act::Affine {
                alpha: 1.0,
                beta: 0.0,
            },
        ];
        let (w, r) = ([0.5, 0.5, 1.0], [0.0, 0.0, 2.0]);
        gru(
            &p,
            acts,
            false,
            &[1.0],
            &w,
            &r,
            None,
            None,
            Some(&[0.5]),
            None,
            Some(&mut yh),
            &mut scratch,
        );
        close(&yh, &[0.94]);
    }

    #[test]
    fn degenerate_shapes_do_not_panic() {
        for (seq, batch, hidden) in [(0, 2, 2), (2, 0, 2), (2, 2, 0)] {
            let p = Rnn {
                seq,
                batch,
                input: 2,
                hidden,
                directions: 2,
                reverse: false,
                clip: None,
                cell_clip: None,
            };
            let h = hidden;
            let (x, w, r, b) = (
                arr(seq * batch * 2, 1),
                arr(2 * 4 * h * 2, 2),
                arr(2 * 4 * h * h, 3),
                arr(16 * h, 4),
            );
            let mut y = vec![f32::NAN; seq * 2 * batch * h];
            let mut yh = vec![f32::NAN; 2 * batch * h];
            let mut scratch = vec![0.0; lstm_scratch_len(&p).max(gru_scratch_len(&p))];
            #[rustfmt::skip]
            lstm(&p, LSTM_ACTS, false, &x, &w, &r, Some(&b), None, None, None, None, Some(&mut y), Some(&mut yh), None, &mut scratch);
            // seq == 0: every entry has length 0, so Y_h is zero.
            assert!(yh.iter().all(|&v| v == 0.0 || seq > 0));
            let (w, r) = (&w[..2 * 3 * h * 2], &r[..2 * 3 * h * h]);
            #[rustfmt::skip]
            gru(&p, GRU_ACTS, true, &x, w, r, Some(&b[..12 * h]), None, None, Some(&mut y), Some(&mut yh), &mut scratch);
        }
    }

    // Expected values below come from a direct per-sample transcription of
    // the ONNX formulas in f64 (Python), not from this implementation.

    /// Every engine's default cell (AVX-512 intrinsics, AVX2 and portable
    /// builds of the loop) against the textbook formulas in f64, on gate
    /// values from deep saturation to zero and row lengths around the
    /// vector widths.
    #[test]
    fn lstm_cell_engines_match_f64_formulas() {
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let mut engines = vec![crate::gemm::Engine::portable()];
        #[cfg(target_arch = "x86_64")]
        engines.extend(crate::gemm::Engine::simd());
        for n in [1usize, 7, 16, 17, 31, 32, 33, 64, 100] {
            let val = |i: usize| ((i * 7919) % 4001) as f32 / 40.0 - 50.0;
            let g: Vec<f32> = (0..4 * n)
                .map(|i| {
                    if i % 11 == 0 {
                        0.0
                    } else {
                        val(i) / (1 + i % 5) as f32
                    }
                })
                .collect();
            let b: Vec<f32> = (0..8 * n).map(|i| val(i + 3) / 100.0).collect();
            let c0: Vec<f32> = (0..n).map(|i| val(i + 5) / 20.0).collect();
            for &eng in &engines {
                for bias in [None, Some(&b[..])] {
                    let (mut c, mut h) = (c0.clone(), vec![f32::NAN; n]);
                    eng.lstm_cell(Cell {
                        g: &g,
                        c: &mut c,
                        h: &mut h,
                        b: bias,
                    });
                    for j in 0..n {
                        let gate = |k: usize| {
                            let bk = bias
                                .map_or(0.0, |b| b[k * n + j] as f64 + b[4 * n + k * n + j] as f64);
                            g[k * n + j] as f64 + bk
                        };
                        let cw = sig(gate(2)) * c0[j] as f64 + sig(gate(0)) * gate(3).tanh();
                        let hw = sig(gate(1)) * cw.tanh();
                        for (got, want) in [(c[j], cw), (h[j], hw)] {
                            assert!(
                                (got as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                                "{eng:?} n={n} j={j}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The fused default cell agrees with the general gate-by-gate path
    /// (forced here by a clip no value reaches; bit for bit on the portable
    /// engine, within rounding where the cell uses FMA and reciprocal
    /// estimates), with and without bias, on a hidden size that is not a
    /// multiple of any vector width.
    #[test]
    fn lstm_fused_cell_matches_general_path() {
        for bias in [false, true] {
            let run = |clip: Option<f32>| {
                let p = Rnn {
                    hidden: 19,
                    ..rnn(5, 3, 2, false, clip)
                };
                let (x, w, r, b) = (
                    arr(15 * 2, 1),
                    arr(2 * 76 * 2, 2),
                    arr(2 * 76 * 19, 3),
                    arr(2 * 152, 4),
                );
                let (h0, c0) = (arr(2 * 3 * 19, 5), arr(2 * 3 * 19, 6));
                let mut y = vec![f32::NAN; 5 * 2 * 3 * 19];
                let mut yc = vec![f32::NAN; 2 * 3 * 19];
                let mut scratch = vec![f32::NAN; lstm_scratch_len(&p)];
                lstm(
                    &p,
                    LSTM_ACTS,
                    false,
                    &x,
                    &w,
                    &r,
                    bias.then_some(&b[..]),
                    Some(&[5, 2, 0]),
                    Some(&h0),
                    Some(&c0),
                    None,
                    Some(&mut y),
                    None,
                    Some(&mut yc),
                    &mut scratch,
                );
                (y, yc)
            };
            let (fused, general) = (run(None), run(Some(f32::MAX)));
            for (a, b) in fused
                .0
                .iter()
                .chain(&fused.1)
                .zip(general.0.iter().chain(&general.1))
            {
                assert!(
                    (a - b).abs() <= 2e-6 * b.abs().max(1.0),
                    "bias {bias}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn lstm_bidirectional_peephole_seq_lens() {
        let p = rnn(3, 2, 2, false, None);
        let (x, w, r, b) = (arr(12, 1), arr(32, 2), arr(32, 3), arr(32, 4));
        let (h0, c0, peep) = (arr(8, 5), arr(8, 6), arr(12, 7));
        let (mut y, mut yh, mut yc) = (vec![f32::NAN; 24], vec![f32::NAN; 8], vec![f32::NAN; 8]);
        let mut scratch = vec![f32::NAN; lstm_scratch_len(&p)];
        lstm(
            &p,
            LSTM_ACTS,
            false,
            &x,
            &w,
            &r,
            Some(&b),
            Some(&[3, 2]),
            Some(&h0),
            Some(&c0),
            Some(&peep),
            Some(&mut y),
            Some(&mut yh),
            Some(&mut yc),
            &mut scratch,
        );
        let want_y = [
            0.0162135, -0.2242782, -0.0514012, -0.0762548, -0.5838276, 0.1706534, -0.3769462,
            0.047591, -0.0040752, -0.3509246, 0.0449905, -0.3400891, -0.4503229, 0.2496314,
            -0.150083, -0.0731253, 0.0637588, -0.4682874, 0.0, 0.0, -0.2251695, 0.3529566, 0.0,
            0.0,
        ];
        let want_yh = [
            0.0637588, -0.4682874, 0.0449905, -0.3400891, -0.5838276, 0.1706534, -0.3769462,
            0.047591,
        ];
        let want_yc = [
            0.3957126, -0.9347854, 0.2282792, -0.5880844, -1.1151589, 0.5094199, -0.5888148,
            0.121183,
        ];
        close(&y, &want_y);
        close(&yh, &want_yh);
        close(&yc, &want_yc);
        // Outputs are optional and independent.
        let mut yh2 = vec![0.0; 8];
        lstm(
            &p,
            LSTM_ACTS,
            false,
            &x,
            &w,
            &r,
            Some(&b),
            Some(&[3, 2]),
            Some(&h0),
            Some(&c0),
            Some(&peep),
            None,
            Some(&mut yh2),
            None,
            &mut scratch,
        );
        assert_eq!(yh2, yh);
    }

    #[test]
    fn lstm_reverse_coupled_clipped_zero_length() {
        let p = rnn(3, 2, 1, true, Some(0.3));
        let (x, w, r) = (arr(12, 8), arr(16, 9), arr(16, 10));
        let (mut y, mut yh, mut yc) = (vec![f32::NAN; 12], vec![f32::NAN; 4], vec![f32::NAN; 4]);
        let mut scratch = vec![f32::NAN; lstm_scratch_len(&p)];
        lstm(
            &p,
            LSTM_ACTS,
            true,
            &x,
            &w,
            &r,
            None,
            Some(&[2, 0]),
            None,
            None,
            None,
            Some(&mut y),
            Some(&mut yh),
            Some(&mut yc),
            &mut scratch,
        );
        let want_y = [
            -0.0101031, 0.0510633, 0.0, 0.0, -0.0667048, -0.0372539, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        close(&y, &want_y);
        close(&yh, &[-0.0101031, 0.0510633, 0.0, 0.0]);
        close(&yc, &[-0.0183307, 0.0891271, 0.0, 0.0]);
    }

    #[test]
    fn gru_bidirectional_seq_lens() {
        let p = rnn(3, 2, 2, false, None);
        let (x, w, r, b, h0) = (
            arr(12, 11),
            arr(24, 12),
            arr(24, 13),
            arr(24, 14),
            arr(8, 15),
        );
        let (mut y, mut yh) = (vec![f32::NAN; 24], vec![f32::NAN; 8]);
        let mut scratch = vec![f32::NAN; gru_scratch_len(&p)];
        gru(
            &p,
            GRU_ACTS,
            false,
            &x,
            &w,
            &r,
            Some(&b),
            Some(&[3, 1]),
            Some(&h0),
            Some(&mut y),
            Some(&mut yh),
            &mut scratch,
        );
        let want_y = [
            -0.301041, 0.3255349, -0.0135711, -0.4450424, -0.4235056, -0.155229, -0.1826687,
            -0.2610649, -0.1104236, 0.3932563, 0.0, 0.0, -0.2956317, -0.3604395, 0.0, 0.0,
            -0.1557244, 0.2298534, 0.0, 0.0, -0.2018159, -0.1560003, 0.0, 0.0,
        ];
        let want_yh = [
            -0.1557244, 0.2298534, -0.0135711, -0.4450424, -0.4235056, -0.155229, -0.1826687,
            -0.2610649,
        ];
        close(&y, &want_y);
        close(&yh, &want_yh);
    }

    #[test]
    fn gru_reverse_linear_before_reset_clipped() {
        let p = rnn(3, 2, 1, true, Some(0.4));
        let (x, w, r, b) = (arr(12, 16), arr(12, 17), arr(12, 18), arr(12, 19));
        let (mut y, mut yh) = (vec![f32::NAN; 12], vec![f32::NAN; 4]);
        let mut scratch = vec![f32::NAN; gru_scratch_len(&p)];
        gru(
            &p,
            GRU_ACTS,
            true,
            &x,
            &w,
            &r,
            Some(&b),
            None,
            None,
            Some(&mut y),
            Some(&mut yh),
            &mut scratch,
        );
        let want_y = [
            -0.2159373, -0.23598, -0.2473894, -0.2182191, 0.0279368, -0.0739591, -0.0496339,
            -0.0562022, -0.1939934, -0.2117697, -0.2274708, -0.1970211,
        ];
        close(&y, &want_y);
        close(&yh, &[-0.2159373, -0.23598, -0.2473894, -0.2182191]);
    }
}
