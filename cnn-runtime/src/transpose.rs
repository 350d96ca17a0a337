//! `to[j, i] = from[i, j]` over strided matrices: the layout changes between channels-first
//! planes `[C, H·W]` and channel-last rows `[H·W, C]` (Winograd), and the plain transposes of
//! the transposed convolution and the backward passes. Square blocks of the instruction set's
//! vector width go through [`Simd::transpose_block`] (register shuffles, 16×16 at AVX-512, 8×8 at
//! AVX2); the rows and columns left over go one value at a time.

use crate::simd::{with_simd, Simd};

/// `to[j·to_stride + i] = from[i·from_stride + j]` for `i < rows`, `j < cols`; nothing else
/// of `to` is written.
///
/// # Panics
/// If a stride is shorter than its row (`from_stride < cols`, `to_stride < rows`, when the
/// matrix is not empty), or a slice is shorter than its last row's end.
pub(crate) fn transpose(
    rows: usize,
    cols: usize,
    from: &[f32],
    from_stride: usize,
    to: &mut [f32],
    to_stride: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        from_stride >= cols && to_stride >= rows,
        "transpose strides shorter than the rows"
    );
    assert!(
        from.len() >= (rows - 1) * from_stride + cols,
        "transpose source too short"
    );
    assert!(
        to.len() >= (cols - 1) * to_stride + rows,
        "transpose destination too short"
    );
    with_simd!(
        |s: S| {
            let l = S::LANES;
            let (whole_rows, whole_cols) = (rows - rows % l, cols - cols % l);
            // LOOP over blocks of columns (rows of `to`), then blocks of rows: each block row of
            // `to` is written whole before the next.
            for j0 in (0..whole_cols).step_by(l) {
                for i0 in (0..whole_rows).step_by(l) {
                    // SAFETY: the asserts above put rows i0..i0 + l (< rows) of `from`, columns
                    // j0..j0 + l (< cols), inside `from`, and rows j0..j0 + l of `to`, columns
                    // i0..i0 + l, inside `to`; two slices cannot overlap.
                    unsafe {
                        s.transpose_block(
                            from.as_ptr().add(i0 * from_stride + j0),
                            from_stride,
                            to.as_mut_ptr().add(j0 * to_stride + i0),
                            to_stride,
                        )
                    }
                }
                // The rows past the last whole block, for these columns.
                for j in j0..j0 + l {
                    for i in whole_rows..rows {
                        to[j * to_stride + i] = from[i * from_stride + j];
                    }
                }
            }
            // The columns past the last whole block, for every row.
            for j in whole_cols..cols {
                for i in 0..rows {
                    to[j * to_stride + i] = from[i * from_stride + j];
                }
            }
        },
        (
            rows: usize,
            cols: usize,
            from: &[f32],
            from_stride: usize,
            to: &mut [f32],
            to_stride: usize
        )
    )
}

/// [`transpose`] of a dense `from: [rows, cols]` into a dense `to: [cols, rows]`.
///
/// # Panics
/// If a slice holds fewer than `rows · cols` values.
pub(crate) fn dense(rows: usize, cols: usize, from: &[f32], to: &mut [f32]) {
    transpose(rows, cols, from, cols, to, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::testing;

    /// Every element of `to` after transposing a `rows × cols` matrix of distinct values with
    /// the given strides into a buffer of sentinels, checked one by one at every level.
    #[test]
    fn matches_the_definition_over_awkward_shapes_and_strides_at_every_level() {
        let sizes = [1, 2, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 47, 64];
        const SENTINEL: f32 = -7.5;
        testing::each_level(|level| {
            for &rows in &sizes {
                for &cols in &sizes {
                    for (pad_from, pad_to) in [(0, 0), (3, 0), (0, 5), (17, 1)] {
                        let (fs, ts) = (cols + pad_from, rows + pad_to);
                        let from: Vec<f32> = (0..(rows - 1) * fs + cols)
                            .map(|k| k as f32 + 0.25)
                            .collect();
                        // One row's slack past the end, which must stay untouched.
                        let mut to = vec![SENTINEL; cols * ts + ts];
                        transpose(rows, cols, &from, fs, &mut to, ts);
                        for (k, &got) in to.iter().enumerate() {
                            let (j, i) = (k / ts, k % ts);
                            let want = if j < cols && i < rows {
                                from[i * fs + j]
                            } else {
                                SENTINEL
                            };
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{rows}×{cols}, strides {fs}/{ts} at {}: to[{j}, {i}]",
                                level.name()
                            );
                        }
                    }
                }
            }
        });
    }

    #[test]
    fn empty_matrices_write_nothing() {
        let mut to = [1.0f32; 4];
        transpose(0, 5, &[], 5, &mut to, 0);
        transpose(5, 0, &[], 0, &mut to, 5);
        assert_eq!(to, [1.0; 4]);
    }

    #[test]
    #[should_panic(expected = "transpose source too short")]
    fn a_short_source_panics() {
        let mut to = [0.0f32; 16];
        transpose(4, 4, &[0.0; 15], 4, &mut to, 4);
    }

    #[test]
    #[should_panic(expected = "transpose destination too short")]
    fn a_short_destination_panics() {
        let mut to = [0.0f32; 15];
        transpose(4, 4, &[0.0; 16], 4, &mut to, 4);
    }

    #[test]
    #[should_panic(expected = "transpose strides shorter than the rows")]
    fn a_short_stride_panics() {
        let mut to = [0.0f32; 16];
        transpose(4, 4, &[0.0; 16], 3, &mut to, 4);
    }
}
