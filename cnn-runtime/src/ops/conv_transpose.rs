//! 2-D transposed convolution (PyTorch's `nn.ConvTranspose2d`): the descriptor
//! ([`ConvTranspose2dParams`]) and its kernel, [`forward`].
//!
//! A transposed convolution scatters every input value into the output: input pixel `(i, j)` of
//! channel `c` adds `x[c, i, j] · w[c, o, ki, kj]` to output pixel
//! `(i·SH − PH + ki·DH, j·SW − PW + kj·DW)` of every channel `o` of its group. It is the
//! gradient of a convolution with respect to its input, and it is computed here the same way
//! as that gradient is, not by running the ordinary convolution over a zero-stuffed input
//! (which would multiply mostly zeros):
//!
//! 1. **GEMM.** For each sample and group, one SGEMM computes every product at once:
//!    `cols = Wᵀ · X`, `[C_out/G·KH·KW, H·W] = [C_in/G, C_out/G·KH·KW]ᵀ × [C_in/G, H·W]`. Row
//!    `(o·KH + ki)·KW + kj` of `cols` holds, for every input pixel, what it sends to channel `o`
//!    through tap `(ki, kj)`. The GEMM takes A row-major, so the weight is first transposed
//!    once per call into the scratch (`[G, C_out/G·KH·KW, C_in/G]`, as many elements as the
//!    weight: `1/(n·H·W)` of the GEMM's work).
//! 2. **col2im.** The output planes are zeroed and each row of `cols` is added into its channel
//!    at the positions above (rows of the output that fall outside `[0, OH)`, or columns outside
//!    `[0, OW)`, are cropped: that is the padding).
//! 3. **Epilogue.** Each output plane gets `bias[o]`, then the folded batch norm and activation
//!    ([`Epilogue::channel`], [`PostOp::apply`](super::conv::PostOp::apply)), as
//!    [`conv::forward`](super::conv::forward) does.
//!
//! A 1×1 kernel at stride 1 without padding and with `output_padding = 0` has nothing to
//! scatter: its GEMM writes the output planes directly.
//!
//! With `threads > 1` (on a worker of the pool), a large group splits its output channels
//! into blocks, one per thread; each block has its own rows of `cols` and of the transposed
//! weight, and the result is bit-identical to one thread.

use super::conv::Epilogue;
use crate::simd::multiversion;
use crate::store::Scratch;
use crate::tuning::{row_parts, splits};

/// Shape of a `ConvTranspose2d` layer, computed once by the `cnn!` macro and emitted as a
/// `const`.
///
/// PyTorch: `nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, output_padding, groups,
/// bias, dilation)`; pairs are `[H, W]`. Each output side is
/// `(in − 1)·stride − 2·padding + dilation·(kernel − 1) + output_padding + 1`, with
/// `output_padding < max(stride, dilation)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvTranspose2dParams {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Channel groups; divides `c_in` and `c_out`.
    pub groups: usize,
    /// Kernel `[KH, KW]`.
    pub kernel: [usize; 2],
    /// Stride `[SH, SW]`: the step between the output positions of neighbouring inputs.
    pub stride: [usize; 2],
    /// Rows and columns `[PH, PW]` cropped from each side of the full output.
    pub padding: [usize; 2],
    /// Rows and columns `[OPH, OPW]` added at the bottom and right of the output (reached only
    /// by the taps that land there).
    pub output_padding: [usize; 2],
    /// Dilation `[DH, DW]`.
    pub dilation: [usize; 2],
    /// Input `[H, W]`.
    pub in_hw: [usize; 2],
    /// Output `[OH, OW]`, from the formula above.
    pub out_hw: [usize; 2],
}

impl ConvTranspose2dParams {
    /// `[c_in, c_out / groups, KH, KW]`, the PyTorch weight shape (input channels first).
    pub const fn weight_shape(&self) -> [usize; 4] {
        [
            self.c_in,
            self.c_out / self.groups,
            self.kernel[0],
            self.kernel[1],
        ]
    }

    /// Elements of the weight, `c_in · c_out/groups · KH · KW`.
    pub const fn weight_len(&self) -> usize {
        self.c_in * self.taps_per_input()
    }

    /// `c_out / groups · KH · KW`: the GEMM's `m`, the outputs one input value feeds, and the
    /// `fan_in` PyTorch's initialisation computes from the weight's dimension 1.
    pub const fn taps_per_input(&self) -> usize {
        self.c_out / self.groups * self.kernel[0] * self.kernel[1]
    }

    /// Elements of one input sample, `c_in·H·W`.
    pub const fn in_len(&self) -> usize {
        self.c_in * self.in_hw[0] * self.in_hw[1]
    }

    /// Elements of one output sample, `c_out·OH·OW`.
    pub const fn out_len(&self) -> usize {
        self.c_out * self.out_hw[0] * self.out_hw[1]
    }

    /// Multiply-accumulates for one sample: every input value times `c_out/groups · KH · KW`
    /// weights.
    pub const fn macs(&self) -> usize {
        self.in_len() * self.taps_per_input()
    }

    /// Scratch elements [`forward`] needs: the transposed weight
    /// ([`weight_len`](Self::weight_len)) and, unless the kernel scatters nothing
    /// ([`writes_directly`](Self::writes_directly)), one group's `cols`,
    /// `c_out/groups · KH · KW · H · W`.
    pub const fn scratch_len(&self) -> usize {
        if self.writes_directly() {
            self.weight_len()
        } else {
            self.weight_len() + self.taps_per_input() * self.in_hw[0] * self.in_hw[1]
        }
    }

    /// A 1×1 kernel at stride 1, without padding or output padding, maps input pixel `(i, j)`
    /// to output pixel `(i, j)`: the GEMM's `cols` already is the output.
    pub const fn writes_directly(&self) -> bool {
        self.kernel[0] == 1
            && self.kernel[1] == 1
            && self.stride[0] == 1
            && self.stride[1] == 1
            && self.padding[0] == 0
            && self.padding[1] == 0
            && self.out_hw[0] == self.in_hw[0]
            && self.out_hw[1] == self.in_hw[1]
    }
}

/// `out[n, o, y, x] = epilogue(bias[o] + Σ weight[c, o mod C_out/G, ki, kj] · input[n, c, i, j])`
/// over the channels `c` of `o`'s group and every `(i, j, ki, kj)` with
/// `y = i·SH − PH + ki·DH` and `x = j·SW − PW + kj·DW`: PyTorch's `ConvTranspose2d`, by GEMM and
/// col2im (module docs). The epilogue rounds as the batch norm and activation kernels run
/// separately would. With `threads > 1` (on a worker of the pool) large groups split their
/// output channels over that many threads; the result does not change.
///
/// + `n`: the batch size
/// + `input`: `[n, c_in, H, W]` row-major
/// + `weight`: `[c_in, c_out/groups, KH, KW]` row-major (PyTorch's layout)
/// + `bias`: `[c_out]`, or `None`
/// + `epilogue`: its slices `[c_out]`
/// + `out`: `[n, c_out, OH, OW]` row-major, overwritten
/// + `scratch`: grown to `p.scratch_len()` if shorter, never shrunk
///
/// # Panics
/// If a slice is shorter than the layout above.
#[allow(clippy::too_many_arguments)] // the layer, the batch and its buffers
pub fn forward(
    p: &ConvTranspose2dParams,
    n: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut (impl Scratch + ?Sized),
) {
    let (in_len, out_len) = (p.in_len(), p.out_len());
    let (c_in_g, c_out_g) = (p.c_in / p.groups, p.c_out / p.groups);
    let taps = p.kernel[0] * p.kernel[1];
    let (m, k, n_cols) = (p.taps_per_input(), c_in_g, p.in_hw[0] * p.in_hw[1]);
    let plane = p.out_hw[0] * p.out_hw[1];
    assert!(
        input.len() >= n * in_len,
        "conv_transpose2d input too short"
    );
    assert!(
        weight.len() >= p.weight_len(),
        "conv_transpose2d weight too short"
    );
    assert!(
        out.len() >= n * out_len,
        "conv_transpose2d output too short"
    );
    if let Some(b) = bias {
        assert!(b.len() >= p.c_out, "conv_transpose2d bias too short");
    }
    epilogue.check(p.c_out, n * out_len);
    if n == 0 || plane == 0 || p.c_out == 0 {
        return;
    }
    let (wt, cols) = scratch
        .at_least(p.scratch_len())
        .split_at_mut(p.weight_len());
    let direct = p.writes_directly();

    // weight: (G, C/G, O/G·KH·KW) → wt: (G, O/G·KH·KW, C/G)
    // LOOP over groups
    if m * k > 0 {
        for (wg, wtg) in weight[..p.weight_len()]
            .chunks_exact(k * m)
            .zip(wt.chunks_exact_mut(m * k))
        {
            crate::transpose::dense(k, m, wg, wtg);
        }
    }

    // Output channels `first..` of group `g` of sample `s`: GEMM, col2im, bias and epilogue
    // (the residual and activation per plane, while it is in cache).
    let channels = |s: usize,
                    g: usize,
                    first: usize,
                    x: &[f32],
                    wt: &[f32],
                    cols: &mut [f32],
                    y: &mut [f32]| {
        let m = y.len() / plane * taps;
        if direct {
            // wt: (O/G, C/G)  x: (C/G, H·W)  out: (O/G, OH·OW = H·W)
            crate::gemm::sgemm(m, k, n_cols, wt, x, y, false);
        } else {
            let cols = &mut cols[..m * n_cols];
            // wt: (O/G·KH·KW, C/G)  x: (C/G, H·W)  cols: (O/G·KH·KW, H·W)
            crate::gemm::sgemm(m, k, n_cols, wt, x, cols, false);
            y.fill(0.0);
            // LOOP over output channels of the block
            for (yo, co) in y
                .chunks_exact_mut(plane)
                .zip(cols.chunks_exact(taps * n_cols))
            {
                col2im(p, co, yo);
            }
        }
        let c0 = g * c_out_g + first;
        for (o, row) in y.chunks_exact_mut(plane).enumerate() {
            epilogue.channel(bias, c0 + o).apply(row);
            epilogue.after(s * p.c_out + c0 + o, row);
        }
    };

    let parts = row_parts(threads, c_out_g);
    let split = splits(parts, m * k * n_cols);
    // LOOP over samples
    for s in 0..n {
        let x = &input[s * in_len..(s + 1) * in_len];
        let y = &mut out[s * out_len..(s + 1) * out_len];
        // LOOP over groups
        for g in 0..p.groups {
            let xg = &x[g * k * n_cols..(g + 1) * k * n_cols];
            let yg = &mut y[g * c_out_g * plane..(g + 1) * c_out_g * plane];
            let wtg = &wt[g * m * k..(g + 1) * m * k];
            if !split {
                channels(s, g, 0, xg, wtg, cols, yg);
                continue;
            }
            // LOOP over output-channel blocks, one per thread, each with its rows of `cols`.
            let per = c_out_g.div_ceil(parts);
            // A direct kernel has no `cols`: its blocks get empty slices.
            let cols_len = if direct { 0 } else { c_out_g * taps * n_cols };
            let cols_blocks = cols[..cols_len]
                .chunks_mut((per * taps * n_cols).max(1))
                .chain(core::iter::repeat_with(<&mut [f32]>::default));
            let blocks = yg
                .chunks_mut(per * plane)
                .zip(wtg.chunks((per * taps * k).max(1)))
                .zip(cols_blocks);
            crate::threads::for_each(parts, blocks, |i, ((y, wt), cols)| {
                channels(s, g, i * per, xg, wt, cols, y)
            });
        }
    }
}

multiversion! {
/// Adds the `cols` rows of one output channel, `[KH·KW, H·W]`, into its plane `y: [OH, OW]`:
/// `y[i·SH − PH + ki·DH, j·SW − PW + kj·DW] += cols[ki·KW + kj, i·W + j]`, dropping what falls
/// outside the plane.
fn col2im(p: &ConvTranspose2dParams, cols: &[f32], y: &mut [f32]) {
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.stride;
    let [ph, pw] = p.padding;
    let [dh, dw] = p.dilation;
    let [h_in, w_in] = p.in_hw;
    let [h_out, w_out] = p.out_hw;
    let mut rows = cols.chunks_exact(h_in * w_in);
    // LOOP over kernel rows
    for ki in 0..kh {
        // LOOP over kernel columns
        for kj in 0..kw {
            // The invariant is set up by `forward`: `cols` holds KH·KW rows per channel.
            let row = rows.next().expect("col2im: cols has a row per tap");
            let off_w = kj * dw;
            // Input columns whose tap lands inside the output: [lo, hi).
            let lo = pw.saturating_sub(off_w).div_ceil(sw).min(w_in);
            let hi = (w_out + pw).saturating_sub(off_w).div_ceil(sw).clamp(lo, w_in);
            // LOOP over input rows
            for (i, src) in row.chunks_exact(w_in).enumerate() {
                let oy = (i * sh + ki * dh).wrapping_sub(ph);
                if oy >= h_out || lo == hi {
                    continue;
                }
                let dst = &mut y[oy * w_out..(oy + 1) * w_out];
                let x0 = lo * sw + off_w - pw;
                if sw == 1 {
                    let dst = &mut dst[x0..x0 + (hi - lo)];
                    for (d, &v) in dst.iter_mut().zip(&src[lo..hi]) {
                        *d += v;
                    }
                } else {
                    // LOOP over input columns
                    for (d, &v) in dst[x0..].iter_mut().step_by(sw).zip(&src[lo..hi]) {
                        *d += v;
                    }
                }
            }
        }
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::activation::Activation;
    use crate::ops::conv::tests::{assert_close_mag, epilogue_forms, reference_epilogue};
    use crate::test_util::{assert_close, rand_vec};
    use crate::tuning::MIN_MACS_PER_SPLIT;

    /// `(c_in, c_out, groups, kernel, stride, padding, output_padding, dilation, [h, w], n,
    /// bias)`.
    type Case = (
        usize,
        usize,
        usize,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        usize,
        bool,
    );

    /// Strides 1–3, padding, output padding, dilation, groups 1, 2 and `c_in`, 1×1 and
    /// rectangular kernels, H ≠ W, 1×1 inputs, `c_out` not a multiple of 8, batches of 1 and 3.
    const CASES: &[Case] = &[
        (
            3,
            16,
            1,
            [3, 3],
            [1, 1],
            [1, 1],
            [0, 0],
            [1, 1],
            [8, 8],
            1,
            true,
        ),
        (
            4,
            6,
            1,
            [4, 4],
            [2, 2],
            [1, 1],
            [0, 0],
            [1, 1],
            [5, 5],
            3,
            true,
        ),
        (
            4,
            6,
            1,
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1],
            [1, 1],
            [5, 7],
            1,
            false,
        ),
        (
            5,
            7,
            1,
            [2, 3],
            [3, 2],
            [0, 1],
            [2, 1],
            [1, 1],
            [4, 6],
            3,
            true,
        ),
        (
            6,
            4,
            2,
            [3, 3],
            [2, 1],
            [1, 0],
            [1, 0],
            [2, 2],
            [6, 5],
            1,
            true,
        ),
        (
            6,
            9,
            3,
            [3, 2],
            [1, 3],
            [2, 1],
            [1, 2],
            [2, 1],
            [3, 7],
            3,
            false,
        ),
        (
            4,
            4,
            4,
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1],
            [1, 1],
            [6, 6],
            1,
            true,
        ),
        (
            5,
            5,
            5,
            [2, 4],
            [3, 1],
            [0, 2],
            [0, 0],
            [1, 2],
            [4, 9],
            3,
            true,
        ),
        (
            4,
            8,
            4,
            [3, 3],
            [1, 1],
            [0, 0],
            [0, 0],
            [1, 1],
            [5, 3],
            1,
            true,
        ),
        (
            8,
            6,
            1,
            [1, 1],
            [1, 1],
            [0, 0],
            [0, 0],
            [1, 1],
            [5, 7],
            3,
            true,
        ),
        (
            8,
            6,
            2,
            [1, 1],
            [2, 2],
            [0, 0],
            [1, 1],
            [1, 1],
            [4, 5],
            1,
            false,
        ),
        (
            6,
            6,
            3,
            [1, 1],
            [1, 1],
            [0, 0],
            [1, 2],
            [2, 3],
            [4, 4],
            1,
            true,
        ),
        (
            3,
            5,
            1,
            [1, 1],
            [3, 3],
            [1, 0],
            [2, 0],
            [1, 1],
            [5, 4],
            3,
            true,
        ),
        (
            2,
            3,
            1,
            [3, 3],
            [1, 1],
            [0, 0],
            [0, 0],
            [1, 1],
            [1, 1],
            3,
            true,
        ),
        (
            2,
            3,
            1,
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1],
            [1, 1],
            [1, 1],
            1,
            false,
        ),
        (
            3,
            2,
            1,
            [5, 5],
            [1, 1],
            [2, 2],
            [0, 0],
            [1, 1],
            [3, 3],
            1,
            true,
        ),
        (
            3,
            4,
            1,
            [3, 3],
            [1, 1],
            [2, 2],
            [0, 0],
            [1, 1],
            [4, 5],
            1,
            true,
        ),
        (
            2,
            3,
            1,
            [7, 5],
            [3, 2],
            [3, 2],
            [2, 1],
            [1, 3],
            [3, 4],
            3,
            true,
        ),
        (
            16,
            10,
            2,
            [4, 4],
            [2, 2],
            [1, 1],
            [0, 0],
            [1, 1],
            [9, 9],
            1,
            true,
        ),
        (
            1,
            1,
            1,
            [2, 2],
            [2, 2],
            [0, 0],
            [0, 0],
            [1, 1],
            [3, 2],
            1,
            false,
        ),
    ];

    /// PyTorch's output side, `(in − 1)·s − 2p + d·(k − 1) + op + 1`.
    fn side(i: usize, k: usize, s: usize, p: usize, op: usize, d: usize) -> usize {
        let full = (i - 1) * s + d * (k - 1) + op + 1;
        assert!(full > 2 * p && op < s.max(d), "the case must be valid");
        full - 2 * p
    }

    fn params(c: &Case) -> ConvTranspose2dParams {
        let &(c_in, c_out, groups, kernel, stride, padding, output_padding, dilation, in_hw, ..) =
            c;
        let axis = |a: usize| {
            side(
                in_hw[a],
                kernel[a],
                stride[a],
                padding[a],
                output_padding[a],
                dilation[a],
            )
        };
        ConvTranspose2dParams {
            c_in,
            c_out,
            groups,
            kernel,
            stride,
            padding,
            output_padding,
            dilation,
            in_hw,
            out_hw: [axis(0), axis(1)],
        }
    }

    /// The definition, in f64: every input value scattered through every tap,
    /// `out[o, i·s − p + ki·d, j·s − p + kj·d] += x[c, i, j] · w[c, o', ki, kj]`, plus bias.
    fn naive(
        p: &ConvTranspose2dParams,
        n: usize,
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
    ) -> Vec<f32> {
        naive64(p, n, x, w, b).0.iter().map(|&v| v as f32).collect()
    }

    /// [`naive`] in f64, and for each output the sum of the absolute values of its terms.
    fn naive64(
        p: &ConvTranspose2dParams,
        n: usize,
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
    ) -> (Vec<f64>, Vec<f64>) {
        let (c_in_g, c_out_g) = (p.c_in / p.groups, p.c_out / p.groups);
        let [kh, kw] = p.kernel;
        let [h, wd] = p.in_hw;
        let [oh, ow] = p.out_hw;
        let mut acc = vec![0.0f64; n * p.out_len()];
        let mut mag = vec![0.0f64; n * p.out_len()];
        for s in 0..n {
            for c in 0..p.c_in {
                let g = c / c_in_g;
                for i in 0..h {
                    for j in 0..wd {
                        let xv = x[((s * p.c_in + c) * h + i) * wd + j] as f64;
                        for oo in 0..c_out_g {
                            let o = g * c_out_g + oo;
                            for ki in 0..kh {
                                for kj in 0..kw {
                                    let y = (i * p.stride[0] + ki * p.dilation[0]) as isize
                                        - p.padding[0] as isize;
                                    let xo = (j * p.stride[1] + kj * p.dilation[1]) as isize
                                        - p.padding[1] as isize;
                                    if y < 0 || xo < 0 || y >= oh as isize || xo >= ow as isize {
                                        continue;
                                    }
                                    let wv = w[((c * c_out_g + oo) * kh + ki) * kw + kj] as f64;
                                    let at =
                                        ((s * p.c_out + o) * oh + y as usize) * ow + xo as usize;
                                    acc[at] += xv * wv;
                                    mag[at] += (xv * wv).abs();
                                }
                            }
                        }
                    }
                }
            }
        }
        for (i, (v, m)) in acc.iter_mut().zip(&mut mag).enumerate() {
            let b = b.map_or(0.0, |b| b[i / (oh * ow) % p.c_out] as f64);
            *v += b;
            *m += b.abs();
        }
        (acc, mag)
    }

    #[test]
    fn the_residual_is_added_after_the_batch_norm_and_before_the_activation() {
        // Every case of the table, then one large enough to split its channels over threads.
        let split = (
            32,
            40,
            1,
            [4, 4],
            [2, 2],
            [1, 1],
            [0, 0],
            [1, 1],
            [24, 24],
            1,
            true,
        );
        assert!(params(&split).macs() >= MIN_MACS_PER_SPLIT, "must be split");
        let cases = CASES
            .iter()
            .map(|c| (c, &[1][..]))
            .chain([(&split, &[2, 3][..])]);
        let all_levels = crate::simd::testing::levels();
        for (i, (case, threads)) in cases.enumerate() {
            let p = params(case);
            let n = case.9;
            let seed = 500 + i as u64 * 10;
            let x = rand_vec(n * p.in_len(), seed);
            let w = rand_vec(p.weight_len(), seed + 1);
            let b = rand_vec(p.c_out, seed + 2);
            let (scale, shift) = (rand_vec(p.c_out, seed + 3), rand_vec(p.c_out, seed + 4));
            let r: Vec<f32> = rand_vec(n * p.out_len(), seed + 5)
                .iter()
                .map(|v| 4.0 * v)
                .collect();
            let hw = p.out_hw[0] * p.out_hw[1];
            let big = threads.len() > 1;
            // The thread split does not depend on the level: the large case runs at the best.
            let levels = if big {
                &all_levels[..1]
            } else {
                &all_levels[..]
            };
            let ys = [Some(&b[..]), None].map(|bias| naive64(&p, n, &x, &w, bias));
            for (with_bias, affine, residual, act) in epilogue_forms(big) {
                let (y, mag) = &ys[usize::from(!with_bias)];
                let bias = with_bias.then_some(&b[..]);
                let affine = affine.then_some((&scale[..], &shift[..]));
                let residual = residual.then_some(&r[..]);
                let epilogue = Epilogue {
                    affine,
                    act,
                    residual,
                };
                let (want, size) = reference_epilogue(y, mag, p.c_out, hw, affine, residual, act);
                for &level in levels {
                    crate::simd::testing::with_isa(level, || {
                        for &threads in threads {
                            let mut out = vec![f32::NAN; n * p.out_len()];
                            let spread = crate::threads::install(threads, || {
                                // (Nothing left over from an earlier call on this worker.)
                                crate::threads::take_spread();
                                forward(
                                    &p,
                                    n,
                                    &x,
                                    &w,
                                    bias,
                                    epilogue,
                                    threads,
                                    &mut out,
                                    &mut Vec::new(),
                                );
                                crate::threads::take_spread()
                            });
                            // The large case is there for its split: it must happen.
                            assert_eq!(spread > 0, threads > 1, "{case:?}: {threads} threads");
                            let what = format!(
                                "{case:?} at {}, bias {}, bn {}, residual {}, {act:?}, \
                                 {threads} threads",
                                level.name(),
                                bias.is_some(),
                                affine.is_some(),
                                residual.is_some()
                            );
                            assert_close_mag(&out, &want, &size, 1e-6, &what);
                        }
                    });
                }
            }
        }
    }

    /// Runs [`forward`] on case `i` with `epilogue`, returning (ours, the reference).
    fn run_case(i: usize, act: Option<Activation>, affine: bool) -> (Vec<f32>, Vec<f32>) {
        let case = &CASES[i];
        let p = params(case);
        let (n, has_bias) = (case.9, case.10);
        let seed = i as u64 * 10;
        let x = rand_vec(n * p.in_len(), seed);
        let w = rand_vec(p.weight_len(), seed + 1);
        let b = rand_vec(p.c_out, seed + 2);
        let (scale, shift) = (rand_vec(p.c_out, seed + 3), rand_vec(p.c_out, seed + 4));
        let bias = has_bias.then_some(&b[..]);
        let epilogue = Epilogue {
            affine: affine.then_some((&scale[..], &shift[..])),
            act,
            residual: None,
        };
        let mut out = vec![f32::NAN; n * p.out_len()];
        let mut scratch = vec![f32::NAN; 3];
        forward(&p, n, &x, &w, bias, epilogue, 1, &mut out, &mut scratch);
        assert_eq!(
            scratch.len(),
            p.scratch_len() + crate::store::LINE - 1,
            "{case:?}"
        );
        let mut want = naive(&p, n, &x, &w, bias);
        let plane = p.out_hw[0] * p.out_hw[1];
        for (s, sample) in want.chunks_exact_mut(p.out_len()).enumerate() {
            epilogue.apply(0, s * p.c_out, sample.chunks_exact_mut(plane));
        }
        (out, want)
    }

    #[test]
    fn matches_the_definition_over_awkward_shapes() {
        for i in 0..CASES.len() {
            let (out, want) = run_case(i, None, false);
            assert_close(&out, &want, 1e-5);
        }
    }

    #[test]
    fn applies_the_epilogue_per_output_channel() {
        for i in 0..CASES.len() {
            let (out, want) = run_case(i, Some(Activation::Relu), true);
            assert_close(&out, &want, 1e-5);
            let (out, want) = run_case(i, Some(Activation::Sigmoid), i % 2 == 0);
            assert_close(&out, &want, 1e-5);
        }
    }

    #[test]
    fn descriptor_sizes() {
        let p = params(&CASES[4]);
        assert_eq!(p.weight_shape(), [6, 2, 3, 3]);
        assert_eq!(p.weight_len(), 6 * 2 * 9);
        assert_eq!(
            p.out_hw,
            [(6 - 1) * 2 - 2 + 2 * 2 + 1 + 1, 5 - 1 + 2 * 2 + 1]
        );
        assert_eq!(p.in_len(), 6 * 30);
        assert_eq!(p.out_len(), 4 * p.out_hw[0] * p.out_hw[1]);
        assert_eq!(p.macs(), 6 * 30 * 2 * 9);
        assert_eq!(p.scratch_len(), 108 + 2 * 9 * 30);
        assert!(!p.writes_directly());
        let q = params(&CASES[9]);
        assert!(q.writes_directly());
        assert_eq!(q.scratch_len(), q.weight_len());
        assert!(!params(&CASES[10]).writes_directly());
        assert!(!params(&CASES[11]).writes_directly(), "output padding");
    }

    #[test]
    fn scratch_is_grown_never_shrunk_and_reusable() {
        let p = params(&CASES[1]);
        let x = rand_vec(p.in_len(), 1);
        let w = rand_vec(p.weight_len(), 2);
        let e = Epilogue::default();
        let mut first = vec![0.0; p.out_len()];
        let mut scratch = Vec::new();
        forward(&p, 1, &x, &w, None, e, 1, &mut first, &mut scratch);
        assert_eq!(scratch.len(), p.scratch_len() + crate::store::LINE - 1);
        let mut second = vec![f32::NAN; p.out_len()];
        let mut big = vec![f32::NAN; p.scratch_len() + 100];
        forward(&p, 1, &x, &w, None, e, 1, &mut second, &mut big);
        assert_eq!(big.len(), p.scratch_len() + 100);
        assert_eq!(first, second);
    }

    /// No input channels: no products, every output value is its channel's bias (the weight
    /// transpose has nothing to do and must not be asked to).
    #[test]
    fn no_input_channels_gives_the_bias() {
        let p = params(&(
            0,
            2,
            1,
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1],
            [1, 1],
            [2, 3],
            1,
            true,
        ));
        let plane = p.out_hw[0] * p.out_hw[1];
        let mut out = vec![f32::NAN; 2 * plane];
        let e = Epilogue::default();
        let bias = [0.25, -4.0];
        forward(
            &p,
            1,
            &[],
            &[],
            Some(&bias),
            e,
            1,
            &mut out,
            &mut Vec::new(),
        );
        assert_eq!(&out[..plane], &vec![0.25; plane][..]);
        assert_eq!(&out[plane..], &vec![-4.0; plane][..]);
    }

    #[test]
    fn hand_computed_2x2_stride_2() {
        // x = [[1, 2], [3, 4]], w = [[1, 10], [100, 1000]], k2 s2: each input value stamps
        // x·w into its own 2×2 block, then bias 0.5.
        let p = params(&(
            1,
            1,
            1,
            [2, 2],
            [2, 2],
            [0, 0],
            [0, 0],
            [1, 1],
            [2, 2],
            1,
            true,
        ));
        assert_eq!(p.out_hw, [4, 4]);
        let mut out = vec![0.0; 16];
        let w = [1.0, 10.0, 100.0, 1000.0];
        let e = Epilogue::default();
        let x = [1.0, 2.0, 3.0, 4.0];
        forward(&p, 1, &x, &w, Some(&[0.5]), e, 1, &mut out, &mut Vec::new());
        #[rustfmt::skip]
        let want = [
            1.5, 10.5, 2.5, 20.5,
            100.5, 1000.5, 200.5, 2000.5,
            3.5, 30.5, 4.5, 40.5,
            300.5, 3000.5, 400.5, 4000.5,
        ];
        assert_eq!(out, want);
    }

    /// Produced by PyTorch 2.15:
    /// `m = nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, output_padding=1, bias=False)`,
    /// `m.weight.data = torch.arange(1., 10.).reshape(1, 1, 3, 3)`,
    /// `m(torch.tensor([[[[1., 2.], [3., 4.]]]]))`.
    #[test]
    fn pytorch_k3_s2_p1_output_padding_1() {
        let p = params(&(
            1,
            1,
            1,
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1],
            [1, 1],
            [2, 2],
            1,
            false,
        ));
        assert_eq!(p.out_hw, [4, 4]);
        let w: Vec<f32> = (1..10).map(|v| v as f32).collect();
        let mut out = vec![0.0; 16];
        let e = Epilogue::default();
        let x = [1.0, 2.0, 3.0, 4.0];
        forward(&p, 1, &x, &w, None, e, 1, &mut out, &mut Vec::new());
        assert_eq!(out, PYTORCH_K3_S2_P1_OP1);
    }

    /// Produced by PyTorch 2.15:
    /// `m = nn.ConvTranspose2d(4, 2, (2, 3), stride=(2, 1), padding=(1, 0), output_padding=(1, 0),
    /// groups=2, dilation=(1, 2))`, `m.weight.data = (torch.arange(24.) % 11 - 5).reshape(4, 1, 2, 3)`,
    /// `m.bias.data = torch.tensor([0.5, -1.0])`,
    /// `m((torch.arange(24.) % 7 - 3).reshape(1, 4, 2, 3))`: groups, a rectangular kernel, stride,
    /// padding, output padding and dilation that differ per axis, all at once (small integers, so
    /// every sum is exact).
    #[test]
    fn pytorch_grouped_rectangular_dilated() {
        let p = params(&(
            4,
            2,
            2,
            [2, 3],
            [2, 1],
            [1, 0],
            [1, 0],
            [1, 2],
            [2, 3],
            1,
            true,
        ));
        assert_eq!(p.out_hw, [3, 7]);
        let w: Vec<f32> = (0..24).map(|v| (v % 11 - 5) as f32).collect();
        let x: Vec<f32> = (0..24).map(|v| (v % 7 - 3) as f32).collect();
        let mut out = vec![0.0; 42];
        let e = Epilogue::default();
        forward(
            &p,
            1,
            &x,
            &w,
            Some(&[0.5, -1.0]),
            e,
            1,
            &mut out,
            &mut Vec::new(),
        );
        #[rustfmt::skip]
        let torch = [
            18.5, -7.5, 12.5, -12.5, -23.5, 15.5, 10.5,
            -0.5, -4.5, -10.5, -3.5, -8.5, -2.5, -2.5,
            -3.5, -1.5, -4.5, -0.5, 8.5, 0.5, -4.5,
            2.0, 6.0, 12.0, -11.0, -18.0, -6.0, -16.0,
            1.0, -1.0, -6.0, -4.0, -12.0, -7.0, -5.0,
            -14.0, -10.0, 9.0, 9.0, 14.0, 6.0, 3.0,
        ];
        assert_eq!(out, torch);
        assert_eq!(naive(&p, 1, &x, &w, Some(&[0.5, -1.0])), torch);
    }

    #[rustfmt::skip]
    const PYTORCH_K3_S2_P1_OP1: [f32; 16] = [
        5.0, 14.0, 10.0, 12.0,
        14.0, 36.0, 24.0, 30.0,
        15.0, 34.0, 20.0, 24.0,
        24.0, 55.0, 32.0, 36.0,
    ];

    #[test]
    fn splitting_output_channels_over_threads_changes_nothing() {
        for (c_in, c_out, groups, k, s) in [(32, 40, 1, 4, 2), (64, 66, 2, 3, 1), (32, 40, 1, 1, 1)]
        {
            let pad = usize::from(k == 3);
            let out_side = |i: usize| side(i, k, s, pad, 0, 1);
            let in_hw = if k == 1 { [64, 64] } else { [24, 24] };
            let p = ConvTranspose2dParams {
                c_in,
                c_out,
                groups,
                kernel: [k, k],
                stride: [s, s],
                padding: [pad, pad],
                output_padding: [0, 0],
                dilation: [1, 1],
                in_hw,
                out_hw: [out_side(in_hw[0]), out_side(in_hw[1])],
            };
            assert!(
                p.macs() / groups >= MIN_MACS_PER_SPLIT,
                "the case must be split"
            );
            let x = rand_vec(p.in_len(), 3);
            let w = rand_vec(p.weight_len(), 4);
            let b = rand_vec(p.c_out, 5);
            let (scale, shift) = (rand_vec(p.c_out, 6), rand_vec(p.c_out, 7));
            let epilogue = Epilogue {
                affine: Some((&scale, &shift)),
                act: Some(Activation::Relu),
                residual: None,
            };
            let run = |threads| {
                let mut out = vec![f32::NAN; p.out_len()];
                // On a worker of a pool of that many threads, as `run_batch` calls it.
                crate::threads::install(threads, || {
                    forward(
                        &p,
                        1,
                        &x,
                        &w,
                        Some(&b),
                        epilogue,
                        threads,
                        &mut out,
                        &mut Vec::new(),
                    )
                });
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            let one = run(1);
            for threads in [2, 3, 7] {
                assert_eq!(
                    run(threads),
                    one,
                    "{threads} threads, {groups} groups, k{k}"
                );
            }
        }
    }
}
