//! TFLite's fully integer LSTM (`UNIDIRECTIONAL_SEQUENCE_LSTM`, int8x8_16:
//! int8 input, weights and output, int16 gates and cell state), computed
//! step for step as LiteRT's `LstmStepInteger8x8_16` so the bytes match:
//!
//! - each gate is `sat16(rq_r(b_r + h·R) + sat16(rq_x(b_x + x·W)))` in
//!   Q3.12, where the biases already hold the zero-point terms
//!   (`-zp · Σ row`) and the multipliers the scale ratios;
//! - input, forget and output gates go through gemmlowp's 16-bit
//!   logistic, the cell gate through its tanh (all Q0.15 results);
//! - `c = rdpot(f·c, 15) + rdpot(i·g, 30 + log2(cell scale))`, saturated
//!   to int16 and clipped;
//! - `h = clamp(rq_h(o · tanh(c)) + hidden_zp)` in int8.
//!
//! Supported: optional CIFG (coupled input and forget gates). Peephole,
//! projection and layer-norm LSTMs are refused by the importer. The state
//! starts at real zero on every call (the cell at 0, the hidden state at
//! its zero point).

use crate::fixed::{Multiplier, q16, rounding_divide_by_pot};

/// Shapes and constants of one integer LSTM layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QLstm {
    pub batch: usize,
    pub steps: usize,
    pub input: usize,
    /// Cells, which is also the output size (no projection).
    pub cell: usize,
    /// `x` and `y` are `[steps, batch, …]` rather than `[batch, steps, …]`.
    pub time_major: bool,
    /// No input gate: it is `1 - forget`.
    pub cifg: bool,
    /// log2 of the cell state's (power-of-two) scale, in `-15..=-9`.
    pub cell_log2: i32,
    /// Cell clip in cell-state units; 0 for none.
    pub cell_clip: i16,
    pub hidden_zp: i32,
    /// Zero point of the output state: the hidden state starts there
    /// (real zero), as LiteRT resets int8 variable tensors.
    pub state_zp: i32,
}

/// Gate order of `w`, `r`, the biases and the multipliers.
const INPUT: usize = 0;
const FORGET: usize = 1;
const CELL: usize = 2;
const OUTPUT: usize = 3;

/// `i16` scratch `q_lstm` needs: four gates, the cell and hidden states.
pub fn q_lstm_scratch_len(p: &QLstm) -> usize {
    6 * p.batch * p.cell
}

/// `acc + Σ w·v` in wrapping int32.
fn dot<T: Copy + Into<i32>>(acc: i32, w: &[i8], v: &[T]) -> i32 {
    w.iter().zip(v).fold(acc, |acc, (&wv, &xv)| {
        acc.wrapping_add(i32::from(wv) * xv.into())
    })
}

/// One gate of one batch row: both matrix products, requantized and
/// accumulated with int16 saturation, in Q3.12.
#[allow(
    clippy::too_many_arguments,
    reason = "one gate of q_lstm: its operands, passed through"
)]
fn gate(
    p: &QLstm,
    g: usize,
    x: &[i8],
    h: &[i16],
    w: &[i8],
    r: &[i8],
    bias: &[i32],
    rq: &[Multiplier; 9],
    out: &mut [i16],
) {
    let (n, ni) = (p.cell, p.input);
    let wg = &w[g * n * ni..(g + 1) * n * ni];
    let rg = &r[g * n * n..(g + 1) * n * n];
    for (row, o) in out.iter_mut().enumerate().take(n) {
        let dot_x = dot(bias[g * n + row], &wg[row * ni..(row + 1) * ni], x);
        let from_x = rq[g].apply_double_rounding(dot_x).clamp(-32768, 32767);
        let dot_h = dot(bias[(4 + g) * n + row], &rg[row * n..(row + 1) * n], h);
        *o = (rq[4 + g]
            .apply_double_rounding(dot_h)
            .saturating_add(from_x))
        .clamp(-32768, 32767) as i16;
    }
}

/// Runs the layer over the whole sequence.
///
/// - `x`: i8 `[batch, steps, input]` (`[steps, batch, input]` if time major)
/// - `w`: i8 `[4, cell, input]`, `r`: i8 `[4, cell, cell]` in gate order
///   input, forget, cell, output (the input rows are unused with CIFG)
/// - `bias`: i32 `[8, cell]`: the input-side effective biases of the four
///   gates, then the recurrent-side ones
/// - `rq`: input-side multipliers of the four gates, recurrent-side ones,
///   then the hidden-state multiplier
/// - `y`: i8, laid out as `x` with `cell` features
///
/// # Panics
/// If a slice is shorter than its shape says (the engine checks first).
#[allow(
    clippy::too_many_arguments,
    reason = "mirrors the operator's inputs and output"
)]
pub fn q_lstm(
    p: &QLstm,
    x: &[i8],
    w: &[i8],
    r: &[i8],
    bias: &[i32],
    rq: &[Multiplier; 9],
    y: &mut [i8],
    scratch: &mut [i16],
) {
    let (b, n) = (p.batch, p.cell);
    let (gates, rest) = scratch[..q_lstm_scratch_len(p)].split_at_mut(4 * b * n);
    let (cell, hidden) = rest.split_at_mut(b * n);
    cell.fill(0);
    hidden.fill(p.state_zp.clamp(-128, 127) as i16);
    let tanh_bits = (15 + p.cell_log2) as u32;
    let cell_shift = 30 + p.cell_log2;
    for t in 0..p.steps {
        for bi in 0..b {
            let row = if p.time_major {
                t * b + bi
            } else {
                bi * p.steps + t
            };
            let xr = &x[row * p.input..(row + 1) * p.input];
            let h = &hidden[bi * n..(bi + 1) * n];
            let gb = &mut gates[bi * 4 * n..(bi + 1) * 4 * n];
            let (gi, rest) = gb.split_at_mut(n);
            let (gf, rest) = rest.split_at_mut(n);
            let (gc, go) = rest.split_at_mut(n);
            if !p.cifg {
                gate(p, INPUT, xr, h, w, r, bias, rq, gi);
                gi.iter_mut().for_each(|v| *v = q16::logistic(*v, 3));
            }
            gate(p, FORGET, xr, h, w, r, bias, rq, gf);
            gf.iter_mut().for_each(|v| *v = q16::logistic(*v, 3));
            gate(p, CELL, xr, h, w, r, bias, rq, gc);
            gc.iter_mut().for_each(|v| *v = q16::tanh(*v, 3));
            let c = &mut cell[bi * n..(bi + 1) * n];
            for k in 0..n {
                let (f, g) = (i32::from(gf[k]), i32::from(gc[k]));
                let kept = rounding_divide_by_pot(f * i32::from(c[k]), 15) as i16;
                let i = if p.cifg { 32767 - f } else { i32::from(gi[k]) };
                let added = rounding_divide_by_pot(i * g, cell_shift) as i16;
                let mut v = (i32::from(kept) + i32::from(added)).clamp(-32768, 32767) as i16;
                if p.cell_clip > 0 {
                    v = v.clamp(-p.cell_clip, p.cell_clip);
                }
                c[k] = v;
            }
            gate(p, OUTPUT, xr, h, w, r, bias, rq, go);
            go.iter_mut().for_each(|v| *v = q16::logistic(*v, 3));
            let yr = &mut y[row * n..(row + 1) * n];
            let h = &mut hidden[bi * n..(bi + 1) * n];
            for k in 0..n {
                let prod = i32::from(go[k]) * i32::from(q16::tanh(c[k], tanh_bits));
                let v = rq[8]
                    .apply_double_rounding(prod)
                    .saturating_add(p.hidden_zp)
                    .clamp(-128, 127);
                yr[k] = v as i8;
                h[k] = v as i16;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    /// With zero weights and biases every gate is 0 → sigmoid 1/2, tanh 0:
    /// the cell stays 0 and the output is the hidden zero point.
    #[test]
    fn zero_weights_give_the_zero_point() {
        let p = QLstm {
            batch: 2,
            steps: 3,
            input: 5,
            cell: 4,
            time_major: false,
            cifg: false,
            cell_log2: -11,
            cell_clip: 0,
            hidden_zp: -7,
            state_zp: 0,
        };
        let m = Multiplier::new(0.01).unwrap();
        let rq = [m; 9];
        let x = vec![100i8; 2 * 3 * 5];
        let (w, r, bias) = (
            vec![0i8; 4 * 4 * 5],
            vec![0i8; 4 * 4 * 4],
            vec![0i32; 8 * 4],
        );
        let mut y = vec![0i8; 2 * 3 * 4];
        let mut s = vec![0i16; q_lstm_scratch_len(&p)];
        q_lstm(&p, &x, &w, &r, &bias, &rq, &mut y, &mut s);
        assert!(y.iter().all(|&v| v == -7), "{y:?}");
    }

    /// A one-cell LSTM against the real-valued recurrence it quantizes:
    /// gates saturated open, a constant cell input accumulates.
    #[test]
    fn tracks_the_float_recurrence() {
        let p = QLstm {
            batch: 1,
            steps: 4,
            input: 1,
            cell: 1,
            time_major: true,
            cifg: false,
            cell_log2: -11,
            cell_clip: 0,
            hidden_zp: 0,
            state_zp: 0,
        };
        // Gate pre-activations in Q3.12: bias 4·4096 = 4.0 for i, f, o;
        // the cell gate sees x·w = 4096 = 1.0, so g = tanh(1). The output
        // multiplier maps o·tanh(c) (Q0.30) to hundredths.
        let one = Multiplier::new(1.0).unwrap();
        let mut rq = [one; 9];
        rq[8] = Multiplier::new(100.0 / f64::from(1u32 << 30)).unwrap();
        let x = vec![64i8; 4];
        let w = vec![0i8, 0, 64, 0]; // [4, 1, 1]
        let r = vec![0i8; 4];
        let mut bias = vec![0i32; 8];
        bias[INPUT] = 4 * 4096;
        bias[FORGET] = 4 * 4096;
        bias[OUTPUT] = 4 * 4096;
        let mut y = vec![0i8; 4];
        let mut s = vec![0i16; q_lstm_scratch_len(&p)];
        q_lstm(&p, &x, &w, &r, &bias, &rq, &mut y, &mut s);
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let g = 1.0f64.tanh();
        let mut c = 0.0;
        for (t, &got) in y.iter().enumerate() {
            c = sig(4.0) * c + sig(4.0) * g;
            let want = (sig(4.0) * c.tanh() * 100.0).round();
            assert!(
                (f64::from(got) - want).abs() <= 1.0,
                "t={t}: {got} vs {want}"
            );
        }
    }
}
