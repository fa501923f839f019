//! Integer kernels of the TFLite int8 spec: int8 activations (asymmetric,
//! zero point), int8 weights (symmetric, per output channel or per tensor),
//! int32 bias, int32 accumulation and fixed-point requantization
//! ([`crate::fixed`]), saturated to the fused activation's range. No
//! floating point at run time, so every target computes the same bytes.

use crate::fixed::Multiplier;

/// Shape and quantization of a TFLite int8 `FULLY_CONNECTED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QFullyConnected {
    /// Rows of `x` (batch).
    pub rows: usize,
    /// Inputs per row.
    pub depth: usize,
    /// Outputs per row.
    pub units: usize,
    /// Zero point of `x`.
    pub x_zp: i32,
    /// Zero point of `y`.
    pub y_zp: i32,
    /// Clamp of the output (the fused activation in the quantized domain).
    pub act_min: i32,
    /// See `act_min`.
    pub act_max: i32,
}

/// `y[r, u] = clamp(requant_u(Σ_d (x[r, d] - x_zp) · w[u, d] + bias[u]) + y_zp)`.
///
/// `requant` holds `[mantissa, shift]` of a [`Multiplier`] per unit, or a
/// single one for all.
///
/// # Panics
/// If a slice is shorter than its shape, `requant` is empty or has neither
/// 1 nor `units` entries, or `bias` is shorter than `units`.
pub fn fully_connected_i8(
    p: &QFullyConnected,
    x: &[i8],
    w: &[i8],
    bias: Option<&[i32]>,
    requant: &[[i32; 2]],
    y: &mut [i8],
) {
    assert!(
        requant.len() == 1 || requant.len() == p.units,
        "one multiplier or one per unit"
    );
    let (x, w, y) = (
        &x[..p.rows * p.depth],
        &w[..p.units * p.depth],
        &mut y[..p.rows * p.units],
    );
    let bias = bias.map(|b| &b[..p.units]);
    for (xr, yr) in x
        .chunks_exact(p.depth.max(1))
        .zip(y.chunks_exact_mut(p.units.max(1)))
    {
        for (u, out) in yr.iter_mut().enumerate() {
            let wr = &w[u * p.depth..(u + 1) * p.depth];
            // Σ (x - zp)·w = Σ x·w - zp·Σ w, both exact in i32 for the sizes
            // TFLite allows (it accumulates in i32 too).
            let mut acc = 0i32;
            for (&xv, &wv) in xr.iter().zip(wr) {
                acc = acc.wrapping_add((i32::from(xv) - p.x_zp) * i32::from(wv));
            }
            if let Some(b) = bias {
                acc = acc.wrapping_add(b[u]);
            }
            let [mantissa, shift] = requant[if requant.len() == 1 { 0 } else { u }];
            let v = Multiplier { mantissa, shift }
                .apply(acc)
                .saturating_add(p.y_zp);
            *out = v.clamp(p.act_min.max(-128), p.act_max.min(127)) as i8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fully_connected_by_hand() {
        // x = [3, -1] with zp 1 -> [2, -2]; w rows [1, 2] and [-3, 4].
        // acc0 = 2 - 4 + bias 10 = 8; acc1 = -6 - 8 + 0 = -14.
        // Multiplier 0.5: 4 and -7; + y_zp 5: 9 and -2.
        let p = QFullyConnected {
            rows: 1,
            depth: 2,
            units: 2,
            x_zp: 1,
            y_zp: 5,
            act_min: -128,
            act_max: 127,
        };
        let pair = |m: Multiplier| [m.mantissa, m.shift];
        let half = pair(Multiplier::new(0.5).unwrap());
        let mut y = [0i8; 2];
        fully_connected_i8(
            &p,
            &[3, -1],
            &[1, 2, -3, 4],
            Some(&[10, 0]),
            &[half],
            &mut y,
        );
        assert_eq!(y, [9, -2]);
        // Per-unit multipliers and a ReLU-style clamp at the zero point.
        let q = QFullyConnected { act_min: 5, ..p };
        let m = [half, pair(Multiplier::new(0.25).unwrap())];
        fully_connected_i8(&q, &[3, -1], &[1, 2, -3, 4], Some(&[10, 0]), &m, &mut y);
        // acc1 * 0.25 = -3.5 -> -3 (ties up), + 5 = 2, clamped to 5.
        assert_eq!(y, [9, 5]);
    }

    #[test]
    fn saturates_to_int8() {
        let p = QFullyConnected {
            rows: 2,
            depth: 1,
            units: 1,
            x_zp: 0,
            y_zp: 0,
            act_min: -128,
            act_max: 127,
        };
        let mut y = [0i8; 2];
        let m = Multiplier::new(0.9).unwrap();
        fully_connected_i8(
            &p,
            &[127, -128],
            &[127],
            None,
            &[[m.mantissa, m.shift]],
            &mut y,
        );
        assert_eq!(y, [127, -128]);
    }
}
