//! The zero-padded, stride-phase-split copies of an input that the direct and depthwise kernels
//! read: padded column `i·SW + r` of a row goes to phase `r`, index `i`, so that the `SW`-strided
//! columns one tap reads are contiguous.

use crate::simd::Simd;

/// `dst = src`, `S::LANES` floats at a time (a plain loop would become a call of `memcpy`).
#[inline(always)]
pub(super) fn copy<S: Simd>(s: S, src: &[f32], dst: &mut [f32]) {
    let mut src = src.chunks_exact(S::LANES);
    let mut dst = dst.chunks_exact_mut(S::LANES);
    for (x, d) in src.by_ref().zip(dst.by_ref()) {
        // SAFETY: `x` and `d` hold `S::LANES` floats each.
        unsafe { s.store(d.as_mut_ptr(), s.load(x.as_ptr())) };
    }
    for (d, &x) in dst.into_remainder().iter_mut().zip(src.remainder()) {
        *d = x;
    }
}

/// Copies one input row into its padded row `dst: [SW, row]`:
/// `dst[r, i] = src[i·SW + r − PW]` where that is inside `src`; other entries are untouched.
#[inline(always)]
pub(super) fn copy_row(src: &[f32], dst: &mut [f32], row: usize, sw: usize, pw: usize) {
    match sw {
        1 => {
            let m = src.len().min(row.saturating_sub(pw));
            let at = pw.min(row);
            dst[at..at + m].copy_from_slice(&src[..m]);
        }
        2 => {
            // Padded column `ix + PW` goes to phase `(ix + PW) mod 2`, index `(ix + PW) / 2`.
            let (phase0, phase1) = dst.split_at_mut(row);
            let (even, odd) = if pw.is_multiple_of(2) {
                (
                    &mut phase0[(pw / 2).min(row)..],
                    &mut phase1[(pw / 2).min(row)..],
                )
            } else {
                let at = (pw / 2 + 1).min(row);
                (&mut phase1[(pw / 2).min(row)..], &mut phase0[at..])
            };
            let m = (src.len() / 2).min(even.len()).min(odd.len());
            if src.len() % 2 == 1 && m == src.len() / 2 && m < even.len() {
                even[m] = src[2 * m];
            }
            let (even, odd, pairs) = (&mut even[..m], &mut odd[..m], &src[..2 * m]);
            for j in 0..m {
                even[j] = pairs[2 * j];
                odd[j] = pairs[2 * j + 1];
            }
        }
        _ => {
            for (r, phase) in dst.chunks_exact_mut(row).enumerate() {
                // Entries `i` with `i·SW + r − PW` inside `src`: from `i0`, at most `row`.
                let i0 = pw.saturating_sub(r).div_ceil(sw).min(row);
                let first = (i0 * sw + r).saturating_sub(pw);
                let values = src.iter().skip(first).step_by(sw);
                for (d, &v) in phase[i0..].iter_mut().zip(values) {
                    *d = v;
                }
            }
        }
    }
}
