//! Output-size arithmetic shared by convolution and pooling.

/// Output length of one spatial axis, as PyTorch computes it for `Conv2d`, `MaxPool2d` and
/// `AvgPool2d`.
///
/// `floor((input + 2·padding − dilation·(kernel − 1) − 1) / stride) + 1`; with `ceil_mode`,
/// `ceil` instead of `floor`, and then the last window is dropped when it would start inside the
/// right padding (`(out − 1)·stride ≥ input + padding`).
///
/// Returns `None` when the result is not a positive length (the kernel does not fit in the padded
/// input) or when `stride` or `dilation` is 0. The arithmetic is done in `i128`, so no input
/// overflows.
pub fn out_len(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Option<usize> {
    let (i, k, s, p, d) = (
        input as i128,
        kernel as i128,
        stride as i128,
        padding as i128,
        dilation as i128,
    );
    if s <= 0 || d <= 0 || k <= 0 {
        return None;
    }
    let span = i
        .checked_add(p.checked_mul(2)?)?
        .checked_sub(d.checked_mul(k - 1)?)?
        .checked_sub(1)?;
    if span < 0 {
        return None;
    }
    let mut out = if ceil_mode {
        (span + s - 1) / s + 1
    } else {
        span / s + 1
    };
    if ceil_mode && (out - 1) * s >= i + p {
        out -= 1;
    }
    if out <= 0 {
        return None;
    }
    usize::try_from(out).ok()
}

#[cfg(test)]
mod tests {
    use super::out_len;

    /// `(input, kernel, stride, padding, dilation, ceil_mode, expected)`; shared with the macro's
    /// shape inference so both agree.
    /// `(input, kernel, stride, padding, dilation, ceil_mode, expected)`.
    type Case = (usize, usize, usize, usize, usize, bool, Option<usize>);

    const CASES: &[Case] = include!("../../testdefs/out_len_cases.rs");

    /// PyTorch's output length counted window by window (window `j` starts at `j·s − p`):
    /// without `ceil_mode` a window must end inside the padded input; with it, it must start
    /// inside the input or the left padding, at most one stride after the last full window.
    fn windows(i: usize, k: usize, s: usize, p: usize, d: usize, ceil: bool) -> Option<usize> {
        let extent = d * (k - 1) + 1;
        if i + 2 * p < extent {
            return None;
        }
        let last_full = i + 2 * p - extent;
        let fits = |start: usize| {
            if ceil {
                start < last_full + s && start < i + p
            } else {
                start <= last_full
            }
        };
        Some((0..).take_while(|j| fits(j * s)).count())
    }

    /// Every small geometry (pooling's `ceil_mode` with padding up to half the kernel, as
    /// PyTorch requires) against counting the windows, and the degenerate arguments.
    #[test]
    fn out_len_counts_the_windows() {
        for i in 0..30 {
            for k in 1..8 {
                for s in 1..6 {
                    for p in 0..5 {
                        for d in 1..4 {
                            for ceil in [false, true] {
                                if ceil && (p > k / 2 || d > 1) {
                                    continue;
                                }
                                assert_eq!(
                                    out_len(i, k, s, p, d, ceil),
                                    windows(i, k, s, p, d, ceil),
                                    "out_len({i}, k{k}, s{s}, p{p}, d{d}, ceil={ceil})"
                                );
                            }
                        }
                    }
                }
            }
        }
        for ceil in [false, true] {
            assert_eq!(out_len(5, 0, 1, 0, 1, ceil), None, "no kernel");
            assert_eq!(out_len(5, 1, 0, 0, 1, ceil), None, "stride 0");
            assert_eq!(out_len(5, 1, 1, 0, 0, ceil), None, "dilation 0");
            assert_eq!(out_len(usize::MAX, 1, 1, 0, 1, ceil), Some(usize::MAX));
            assert_eq!(out_len(usize::MAX, 1, 1, 1, 1, ceil), None, "too long");
            assert_eq!(out_len(3, usize::MAX, 1, 0, usize::MAX, ceil), None);
        }
    }

    #[test]
    fn out_len_matches_the_shared_table() {
        for &(i, k, s, p, d, ceil, want) in CASES {
            assert_eq!(
                out_len(i, k, s, p, d, ceil),
                want,
                "out_len({i}, k{k}, s{s}, p{p}, d{d}, ceil={ceil})"
            );
        }
    }
}
