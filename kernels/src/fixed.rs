//! Fixed-point requantization of the TFLite integer spec (gemmlowp
//! semantics): a real multiplier in (0, 2^31) becomes a Q31 mantissa and a
//! power-of-two exponent; an int32 accumulator is scaled by a saturating,
//! rounding doubling high multiply and a rounding right shift. Every
//! integer kernel goes through these, so integer results are the same bytes
//! on every target (no floating point at run time).

/// A real multiplier as `mantissa · 2^(shift - 31)`, `mantissa` in
/// `[2^30, 2^31)` (or 0 for a zero multiplier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Multiplier {
    pub mantissa: i32,
    pub shift: i32,
}

/// `x = m · 2^e` with `m` in `[0.5, 1)` (C `frexp`) for finite positive `x`.
fn frexp(x: f64) -> (f64, i32) {
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    if exp == 0 {
        // Subnormal: scale into the normal range first.
        let (m, e) = frexp(x * f64::from_bits(0x4350_0000_0000_0000)); // 2^54
        return (m, e - 54);
    }
    let m = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (m, exp - 1022)
}

impl Multiplier {
    /// TFLite's `QuantizeMultiplier`: `None` for a negative, NaN or
    /// infinite multiplier (a model bug the importer reports). Multipliers
    /// below 2^-31 become 0, as in TFLite.
    pub fn new(real: f64) -> Option<Multiplier> {
        if !real.is_finite() || real < 0.0 {
            return None;
        }
        if real == 0.0 {
            return Some(Multiplier {
                mantissa: 0,
                shift: 0,
            });
        }
        let (q, mut shift) = frexp(real);
        // C `round`: half away from zero, as TFLite's TfLiteRound.
        let mut fixed = libm::round(q * (1u64 << 31) as f64) as i64;
        if fixed == 1 << 31 {
            fixed /= 2;
            shift += 1;
        }
        if shift < -31 {
            return Some(Multiplier {
                mantissa: 0,
                shift: 0,
            });
        }
        if shift > 30 {
            // Larger than 2^30: saturate like TFLite's newer versions.
            return Some(Multiplier {
                mantissa: i32::MAX,
                shift: 30,
            });
        }
        Some(Multiplier {
            mantissa: fixed as i32,
            shift,
        })
    }

    /// `round(x · real)` as LiteRT computes it (`MultiplyByQuantizedMultiplier`
    /// built with `TFLITE_SINGLE_ROUNDING`, what LiteRT 2.x ships): one
    /// 64-bit product, one rounding shift, ties towards +∞. Measured: the
    /// int8 FULLY_CONNECTED layers of the MLPerf Tiny autoencoder match
    /// LiteRT 2.3.0 on all 1,672 outputs this way, and differ on 17 with
    /// [`Self::apply_double_rounding`]. The result saturates to `i32` (LiteRT
    /// only debug-asserts it fits).
    #[inline]
    pub fn apply(self, x: i32) -> i32 {
        if cfg!(target_arch = "arm") {
            self.apply_high_word(x)
        } else {
            self.apply_wide(x)
        }
    }

    /// [`Self::apply`] with one 64-bit shift (a single instruction on
    /// 64-bit targets and wasm).
    #[inline]
    fn apply_wide(self, x: i32) -> i32 {
        let total = 31 - self.shift.clamp(-32, 30);
        let p = i64::from(x) * i64::from(self.mantissa);
        let round = 1i64 << (total - 1);
        // Wrapping: only a malformed negative mantissa (i32::MIN · i32::MIN
        // plus 2^62) can overflow, and must not panic.
        let v = p.wrapping_add(round) >> total;
        v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
    }

    /// [`Self::apply`] for 32-bit Arm, where a 64-bit shift by a variable
    /// amount is a library call: for multipliers below 1/4 (almost every
    /// layer's) the rounded shift is `((p >> (total - 1)) + 1) >> 1` (the
    /// same floor), taken from the product's high word with a 32-bit
    /// shift; |p| <= 2^62, so it fits without clamping.
    #[inline]
    fn apply_high_word(self, x: i32) -> i32 {
        let total = 31 - self.shift.clamp(-32, 30);
        if total < 33 {
            return self.apply_wide(x);
        }
        let p = i64::from(x) * i64::from(self.mantissa);
        let q = ((p >> 32) as i32) >> (total - 33);
        ((i64::from(q) + 1) >> 1) as i32
    }

    /// The gemmlowp form of the same scaling (TFLite Micro's default, and
    /// TFLite's before single rounding): a saturating rounding doubling high
    /// multiply, then a rounding right shift (two roundings).
    #[inline]
    pub fn apply_double_rounding(self, x: i32) -> i32 {
        // `new` keeps shift <= 30; a hand-built larger one is clamped.
        let left = self.shift.clamp(0, 30) as u32;
        let right = self.shift.saturating_neg().max(0);
        let x = x.wrapping_mul(1i32 << left);
        rounding_divide_by_pot(
            saturating_rounding_doubling_high_mul(x, self.mantissa),
            right,
        )
    }
}

/// `(a · b · 2 + 2^31) >> 32` with rounding half away from zero, saturating
/// the single overflow case (`i32::MIN · i32::MIN`).
#[inline]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // |ab + nudge| < 2^62: the division is exact integer arithmetic and the
    // quotient fits i32 (it is at most 2^31 - 1 in magnitude).
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `x / 2^exponent` rounded half away from zero; `exponent` in `0..=31`
/// (larger exponents are clamped to 31).
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    let e = exponent.clamp(0, 31) as u32;
    let mask = ((1i64 << e) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> e) + i32::from(remainder > threshold)
}

/// gemmlowp's 16-bit fixed point (`FixedPoint<int16_t, IntegerBits>`), as
/// TFLite's int8x8_16 LSTM uses it for its gate activations: values are
/// raw `i16`s with `int_bits` integer bits (Q`int_bits`.`15 - int_bits`),
/// results are Q0.15. Additions wrap and multiplications saturate exactly
/// as gemmlowp's scalar code does, so the bytes match LiteRT's.
pub mod q16 {
    use super::rounding_divide_by_pot;

    /// `SaturatingRoundingDoublingHighMul` on int16 (the Q0.15 product).
    #[inline]
    fn mul(a: i16, b: i16) -> i16 {
        if a == i16::MIN && b == i16::MIN {
            return i16::MAX;
        }
        let ab = i32::from(a) * i32::from(b);
        let nudge = if ab >= 0 { 1 << 14 } else { 1 - (1 << 14) };
        ((ab + nudge) / (1 << 15)) as i16
    }

    #[inline]
    fn rdpot(x: i16, e: i32) -> i16 {
        rounding_divide_by_pot(i32::from(x), e) as i16
    }

    /// `SaturatingRoundingMultiplyByPOT<e>` for `e > 0`: a left shift
    /// that saturates.
    #[inline]
    fn shl_sat(x: i16, e: u32) -> i16 {
        let threshold = (1i32 << (15 - e)) - 1;
        let x32 = i32::from(x);
        if x32 > threshold {
            i16::MAX
        } else if x32 < -threshold {
            i16::MIN
        } else {
            (x32 << e) as i16
        }
    }

    /// A 32-bit gemmlowp constant rounded to 16 bits
    /// (`RescaleConstantInitializer`).
    #[inline]
    fn constant(raw32: i32) -> i16 {
        rounding_divide_by_pot(raw32, 16) as i16
    }

    #[inline]
    fn saturating_add(a: i16, b: i16) -> i16 {
        (i32::from(a) + i32::from(b)).clamp(-32768, 32767) as i16
    }

    #[inline]
    fn rounding_half_sum(a: i16, b: i16) -> i16 {
        let sum = i32::from(a) + i32::from(b);
        let sign = if sum >= 0 { 1 } else { -1 };
        ((sum + sign) / 2) as i16
    }

    /// exp(a) for a Q0.15 `a` in [-1/4, 0): Taylor expansion around -1/8.
    fn exp_quarter(a: i16) -> i16 {
        let c = constant(1_895_147_668); // exp(-1/8)
        let third = constant(715_827_883); // 1/3
        let x = a.wrapping_add(1 << 12); // a + 1/8
        let x2 = mul(x, x);
        let x3 = mul(x2, x);
        let x4 = mul(x2, x2);
        let x4_over_4 = rdpot(x4, 2);
        let poly = rdpot(mul(x4_over_4.wrapping_add(x3), third).wrapping_add(x2), 1);
        saturating_add(c, mul(c, x.wrapping_add(poly)))
    }

    /// exp(a) for `a <= 0` with `int_bits` integer bits (at most 13),
    /// Q0.15 result: exp of `a mod 1/4`, then one multiplier per set bit
    /// of the rest (a barrel shifter of exp(-2^k)).
    fn exp_negative(a: i16, int_bits: u32) -> i16 {
        let frac = 15 - int_bits as i32;
        let quarter: i16 = 1 << (frac - 2);
        let a_mod = (a & (quarter - 1)).wrapping_sub(quarter);
        let mut result = exp_quarter(if int_bits == 0 {
            a_mod
        } else {
            shl_sat(a_mod, int_bits)
        });
        let rest = a_mod.wrapping_sub(a);
        const BARREL: [(i32, i32); 7] = [
            (-2, 1_672_461_947),
            (-1, 1_302_514_674),
            (0, 790_015_084),
            (1, 290_630_308),
            (2, 39_332_535),
            (3, 720_401),
            (4, 242),
        ];
        for (e, m) in BARREL {
            if int_bits as i32 > e && (i32::from(rest) & (1 << (frac + e))) != 0 {
                result = mul(result, constant(m));
            }
        }
        if int_bits > 5 {
            let clamp = constant(-(1 << (36 - int_bits)));
            if a < clamp {
                result = 0;
            }
        }
        if a == 0 { i16::MAX } else { result }
    }

    /// Newton-Raphson 1/(1 + a) (`minus = false`) or (1 - a)/(1 + a)
    /// (`minus = true`) for a Q0.15 `a` in (0, 1).
    fn newton(a: i16, minus: bool) -> i16 {
        let half_denominator = rounding_half_sum(a, i16::MAX);
        let c48_17 = constant(1_515_870_810); // Q2.13
        let c_neg32_17 = constant(-1_010_580_540);
        let one = 1i16 << 13; // 1.0 in Q2.13
        let mut x = c48_17.wrapping_add(mul(half_denominator, c_neg32_17));
        for _ in 0..3 {
            let one_minus = one.wrapping_sub(mul(half_denominator, x));
            x = x.wrapping_add(shl_sat(mul(x, one_minus), 2));
        }
        if minus {
            shl_sat(x.wrapping_sub(one), 2)
        } else {
            shl_sat(x, 1)
        }
    }

    /// gemmlowp `logistic` of a raw value with `int_bits` integer bits
    /// (at most 13); Q0.15 result.
    pub fn logistic(a: i16, int_bits: u32) -> i16 {
        if a == 0 {
            return constant(1 << 30);
        }
        let abs = if a > 0 { a } else { a.wrapping_neg() };
        let positive = newton(exp_negative(abs.wrapping_neg(), int_bits), false);
        if a > 0 {
            positive
        } else {
            i16::MAX.wrapping_sub(positive)
        }
    }

    /// gemmlowp `tanh` of a raw value with `int_bits` integer bits (at
    /// most 12); Q0.15 result.
    pub fn tanh(a: i16, int_bits: u32) -> i16 {
        if a == 0 {
            return 0;
        }
        let n = if a < 0 { a } else { a.wrapping_neg() };
        let t = newton(exp_negative(n, int_bits + 1), true);
        if a < 0 { t.wrapping_neg() } else { t }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Exact rational reference: round(x · real) half away from zero,
    /// computed from the same mantissa/shift in i128.
    fn reference(x: i32, m: Multiplier) -> i64 {
        // value = x · mantissa · 2^(shift - 31)
        let num = x as i128 * m.mantissa as i128;
        let e = 31 - m.shift; // divide by 2^e (e >= 1 here)
        let d = 1i128 << e;
        let q = num / d;
        let r = num % d;
        let half = d / 2;
        (if r.abs() >= half { q + num.signum() } else { q }) as i64
    }

    #[test]
    fn known_multipliers() {
        let m = Multiplier::new(0.5).unwrap();
        assert_eq!((m.mantissa, m.shift), (1 << 30, 0));
        let m = Multiplier::new(1.0).unwrap();
        assert_eq!((m.mantissa, m.shift), (1 << 30, 1));
        let m = Multiplier::new(0.75).unwrap();
        assert_eq!((m.mantissa, m.shift), (0x6000_0000, 0));
        assert_eq!(Multiplier::new(0.0).unwrap().mantissa, 0);
        assert_eq!(Multiplier::new(1e-12).unwrap().mantissa, 0);
        assert!(Multiplier::new(-1.0).is_none() && Multiplier::new(f64::NAN).is_none());
        // gemmlowp's doubling high multiply breaks ties upwards:
        // 0.5 · 3 = 1.5 → 2, 0.5 · -3 = -1.5 → -1 (as TFLite computes).
        let half = Multiplier::new(0.5).unwrap();
        assert_eq!(half.apply_double_rounding(3), 2);
        assert_eq!(half.apply_double_rounding(-3), -1);
        assert_eq!(half.apply_double_rounding(2), 1);
        // Single rounding also goes up on ties: -1.5 → -1, 2.5 → 3.
        assert_eq!(half.apply(3), 2);
        assert_eq!(half.apply(-3), -1);
        assert_eq!(half.apply(5), 3);
        // Where the two differ: 0.25 · -14 = -3.5; the doubling high
        // multiply gives -7 exactly, then the shift rounds -3.5 away from
        // zero to -4; single rounding gives -3.
        let quarter = Multiplier::new(0.25).unwrap();
        assert_eq!(quarter.apply_double_rounding(-14), -4);
        assert_eq!(quarter.apply(-14), -3);
        assert_eq!(rounding_divide_by_pot(-5, 1), -3);
        assert_eq!(rounding_divide_by_pot(5, 1), 3);
        assert_eq!(rounding_divide_by_pot(-4, 1), -2);
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
    }

    #[test]
    fn q16_activations_follow_the_real_functions() {
        for bits in 0..=6u32 {
            let scale = f64::from(1u32 << (15 - bits));
            for raw in i16::MIN..=i16::MAX {
                let x = f64::from(raw) / scale;
                let s = f64::from(q16::logistic(raw, bits)) / 32768.0;
                let t = f64::from(q16::tanh(raw, bits)) / 32768.0;
                let (ws, wt) = (1.0 / (1.0 + (-x).exp()), x.tanh());
                assert!(
                    (s - ws).abs() < 1e-3,
                    "logistic bits={bits} raw={raw}: {s} vs {ws}"
                );
                assert!(
                    (t - wt).abs() < 1e-3,
                    "tanh bits={bits} raw={raw}: {t} vs {wt}"
                );
            }
        }
        assert_eq!(q16::logistic(0, 3), 16384);
        assert_eq!(q16::tanh(0, 3), 0);
        // Symmetry as gemmlowp computes it: logistic(-x) = 1 - logistic(x)
        // in raw Q0.15 (32767 standing for 1), tanh odd.
        for raw in [1i16, 77, 4096, 20000, 32767] {
            assert_eq!(
                i32::from(q16::logistic(-raw, 3)),
                32767 - i32::from(q16::logistic(raw, 3))
            );
            assert_eq!(q16::tanh(-raw, 4), -q16::tanh(raw, 4));
        }
    }

    proptest! {
        #[test]
        fn apply_is_rounded_scaling(x in -(1i32 << 24)..(1 << 24), real in 1e-6f64..0.999) {
            let m = Multiplier::new(real).unwrap();
            // The real multiplier is represented to 2^-31 relative.
            let back = m.mantissa as f64 * 2f64.powi(m.shift - 31);
            prop_assert!((back - real).abs() <= real * 1e-9);
            // Two roundings (doubling high mul, then the shift) can differ
            // from one exact rounding by at most 1.
            let got = m.apply_double_rounding(x) as i64;
            let want = reference(x, m);
            prop_assert!((got - want).abs() <= 1, "x={x} real={real} got={got} want={want}");
            // Single rounding is exact: floor(x·real + 1/2).
            let num = x as i128 * m.mantissa as i128;
            let e = 31 - m.shift;
            let exact = (num + (1i128 << (e - 1))).div_euclid(1i128 << e) as i64;
            prop_assert_eq!(m.apply(x) as i64, exact);
        }

        /// `apply` is `floor(x·mantissa / 2^total + 1/2)` saturated to i32
        /// for every input, shift and (even malformed) mantissa, in both of
        /// its forms (the 64-bit one and 32-bit Arm's).
        #[test]
        fn apply_is_exact_everywhere(x in any::<i32>(), mantissa in any::<i32>(), shift in -40i32..40) {
            let m = Multiplier { mantissa, shift };
            let total = 31 - shift.clamp(-32, 30);
            let num = x as i128 * mantissa as i128 + (1i128 << (total - 1));
            let want = num.div_euclid(1i128 << total).clamp(i32::MIN as i128, i32::MAX as i128);
            // The one wrapping case: i32::MIN · i32::MIN plus the rounding.
            if x == i32::MIN && mantissa == i32::MIN { return Ok(()); }
            prop_assert_eq!(m.apply_wide(x) as i128, want);
            prop_assert_eq!(m.apply_high_word(x) as i128, want);
        }
    }
}
