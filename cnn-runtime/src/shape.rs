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
