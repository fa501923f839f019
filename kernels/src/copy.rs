//! Data movement: the strided gathers behind the engine's Transpose,
//! Slice and friends. Here rather than in the engine so that they are
//! compiled with the kernels' optimisation level (the WebAssembly package
//! builds the engine for size, where a fixed-size element copy became a
//! `memcpy` call per element). Its entry points are `#[inline(never)]`:
//! under fat LTO an inlined body takes its caller's size optimisation.

/// One strided row of `es`-byte elements: element `j` of `row` from
/// element `off + j·stride` of `src`.
///
/// # Panics
/// If an element lies outside `src` (the engine checks the extent first)
/// or `row` is not a whole number of elements.
#[inline(never)]
pub fn strided_row(es: usize, src: &[u8], off: i64, stride: i64, row: &mut [u8]) {
    match es {
        1 => fixed::<1>(src, off, stride, row),
        2 => fixed::<2>(src, off, stride, row),
        4 => fixed::<4>(src, off, stride, row),
        8 => fixed::<8>(src, off, stride, row),
        _ => {
            for (j, d) in row.chunks_exact_mut(es.max(1)).enumerate() {
                let s = (off + j as i64 * stride) as usize * es;
                d.copy_from_slice(&src[s..s + es]);
            }
        }
    }
}

#[inline(always)]
fn fixed<const N: usize>(src: &[u8], off: i64, stride: i64, row: &mut [u8]) {
    for (j, d) in row.chunks_exact_mut(N).enumerate() {
        let s = (off + j as i64 * stride) as usize * N;
        let v: &[u8; N] = src[s..s + N].try_into().expect("N bytes");
        d.copy_from_slice(v);
    }
}

#[cfg(test)]
mod tests {
    use super::strided_row;

    #[test]
    fn strided_rows_gather_every_element_size() {
        let src: std::vec::Vec<u8> = (0..=255).collect();
        for es in [1usize, 2, 3, 4, 8] {
            for stride in [-2i64, 1, 2] {
                let off = 16;
                let n = 6;
                let mut row = std::vec![0u8; n * es];
                strided_row(es, &src, off, stride, &mut row);
                for j in 0..n {
                    let s = (off + j as i64 * stride) as usize * es;
                    assert_eq!(
                        &row[j * es..][..es],
                        &src[s..s + es],
                        "es {es} stride {stride} j {j}"
                    );
                }
            }
        }
    }
}
