//! Tensor inputs' drift features: per channel, the mean and standard
//! deviation of a sample's values (no heap: firmware can compute them).

use crate::SketchError;

/// The channel axis of a tensor input of `shape` (batch first): the
/// smaller of axis 1 (NCHW) and the last axis (NHWC, or the features of a
/// `[batch, time, features]` sequence); `None` below rank 3 (tabular).
pub fn channel_axis(shape: &[usize]) -> Option<usize> {
    let rank = shape.len();
    if rank < 3 {
        return None;
    }
    Some(if shape[1] <= shape[rank - 1] {
        1
    } else {
        rank - 1
    })
}

/// One sample's per-channel summaries: for each channel `c` of `sample`
/// (laid out as `shape`, batch first, batch dim included), its mean into
/// `out[2c]` and population standard deviation into `out[2c + 1]`, summed
/// in f64 in memory order (the compiler and every runtime use this one
/// function, so they agree to the bit). A NaN value makes its channel's
/// summaries NaN (a missing value to the sketch).
pub fn summarize_channels(
    sample: impl Fn(usize) -> f64,
    shape: &[usize],
    axis: usize,
    out: &mut [f64],
) -> Result<(), SketchError> {
    let channels = *shape.get(axis).ok_or(SketchError::BadBaseline(
        "the channel axis is outside the input's shape",
    ))?;
    if out.len() != 2 * channels || axis == 0 {
        return Err(SketchError::Shape {
            what: "channel summaries",
            expected: 2 * channels,
            got: out.len(),
        });
    }
    let outer: usize = shape[1..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let n = (outer * inner).max(1) as f64;
    for c in 0..channels {
        let (mut sum, mut sum2) = (0.0, 0.0);
        for o in 0..outer {
            let base = (o * channels + c) * inner;
            for i in 0..inner {
                let x = sample(base + i);
                sum += x;
                sum2 += x * x;
            }
        }
        let mean = sum / n;
        out[2 * c] = mean;
        // Rounding can make the variance slightly negative; NaN stays.
        let variance = sum2 / n - mean * mean;
        out[2 * c + 1] = libm::sqrt(if variance < 0.0 { 0.0 } else { variance });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_found_and_summarized_in_either_layout() {
        assert_eq!(channel_axis(&[1, 13]), None);
        assert_eq!(channel_axis(&[1, 3, 4, 4]), Some(1));
        assert_eq!(channel_axis(&[1, 4, 4, 3]), Some(3));
        assert_eq!(channel_axis(&[1, 98, 40]), Some(2));
        // NCHW, 2 channels of 2x2: channel 0 is 0..4, channel 1 is 10..14.
        let nchw = [0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0];
        let mut out = [0.0; 4];
        summarize_channels(|i| nchw[i], &[1, 2, 2, 2], 1, &mut out).unwrap();
        let sd = 1.25f64.sqrt();
        assert_eq!(out, [1.5, sd, 11.5, sd]);
        // The same values NHWC (channel last, interleaved).
        let nhwc = [0.0, 10.0, 1.0, 11.0, 2.0, 12.0, 3.0, 13.0];
        let mut again = [0.0; 4];
        summarize_channels(|i| nhwc[i], &[1, 2, 2, 2], 3, &mut again).unwrap();
        assert_eq!(again, out);
        // A NaN spoils its channel only; wrong sizes are errors.
        let mut gap = nchw;
        gap[5] = f64::NAN;
        summarize_channels(|i| gap[i], &[1, 2, 2, 2], 1, &mut out).unwrap();
        assert!(out[2].is_nan() && out[3].is_nan() && out[0] == 1.5);
        assert!(summarize_channels(|i| nchw[i], &[1, 2, 2, 2], 1, &mut [0.0; 3]).is_err());
        assert!(summarize_channels(|i| nchw[i], &[1, 2, 2, 2], 4, &mut out).is_err());
        assert!(summarize_channels(|i| nchw[i], &[1, 2, 2, 2], 0, &mut out).is_err());
    }
}
