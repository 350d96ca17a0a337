//! Depthwise convolution (`groups = c_in = c_out`): one filter per `[H, W]` plane, summed in
//! registers, [`ROWS`] output rows × [`LANES`] output columns at a time.

use crate::gemm::Simd;
use crate::ops::activation::{activation, Activation};
use crate::ops::conv2d::{Conv2dParams, Epilogue};

/// Output columns one register block holds per row.
pub(crate) const LANES: usize = 16;
/// Output rows one register block holds: independent accumulator chains, and taps of
/// neighbouring rows that read the same input row share its load.
const ROWS: usize = 4;

/// Scratch elements [`depthwise`] needs: one zero-padded input plane split into `SW` column
/// phases, `[H + 2·PH, SW, phase_row]`, so that every tap reads contiguous values.
pub(crate) const fn scratch_len(p: &Conv2dParams) -> usize {
    (p.in_hw[0] + 2 * p.padding[0]) * p.stride[1] * phase_row(p)
}

/// Length of one phase row: the output width, the kernel's reach and one block of slack.
const fn phase_row(p: &Conv2dParams) -> usize {
    p.out_hw[1] + (p.kernel[1] - 1) * p.dilation[1] / p.stride[1] + LANES
}

/// Depthwise convolution of `k` consecutive (sample, channel) planes, the first of them plane
/// `first_plane` of the batch, followed by `epilogue`:
/// `out[i, y, x] = act((bias[c] + Σ_{a,b} weight[c, 0, a, b] · input[i, y·SH − PH + a·DH, x·SW − PW + b·DW]) · scale[c] + shift[c])`
/// with `c = (first_plane + i) mod c_out`, zero outside the input. Each output is rounded
/// exactly as by the convolution alone followed by [`conv2d::apply`](super::conv2d::apply), and
/// does not depend on how the batch is split into calls.
///
/// + `input`: `[k, H, W]` row-major, planes `first_plane..first_plane + k` of `[N·C, H, W]`
/// + `weight`: `[c_out, 1, KH, KW]` row-major (PyTorch's layout)
/// + `bias`: `[c_out]`, or `None`
/// + `epilogue`: its slices `[c_out]`
/// + `out`: `[k, OH, OW]` row-major, overwritten; its length sets `k`
/// + `scratch`: grown to [`scratch_len`] if shorter, never shrunk
///
/// # Panics
/// If `p` is not depthwise, `out` is not a whole number of planes, or a slice is shorter than
/// the layout above.
#[allow(clippy::too_many_arguments)] // the kernel's arguments plus the plane range
pub(crate) fn depthwise(
    p: &Conv2dParams,
    first_plane: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let (hw_in, hw_out) = (p.in_hw[0] * p.in_hw[1], p.out_hw[0] * p.out_hw[1]);
    assert!(
        p.is_depthwise(),
        "depthwise called on a grouped convolution"
    );
    if hw_out == 0 {
        return;
    }
    assert!(
        out.len().is_multiple_of(hw_out),
        "depthwise output is not whole planes"
    );
    let k = out.len() / hw_out;
    assert!(input.len() >= k * hw_in, "depthwise input too short");
    assert!(
        weight.len() >= p.c_out * p.kernel[0] * p.kernel[1],
        "depthwise weight too short"
    );
    if let Some(b) = bias {
        assert!(b.len() >= p.c_out, "depthwise bias too short");
    }
    if let Some((scale, shift)) = epilogue.affine {
        assert!(
            scale.len() >= p.c_out && shift.len() >= p.c_out,
            "depthwise epilogue too short"
        );
    }
    let len = scratch_len(p);
    if scratch.len() < len {
        scratch.resize(len, 0.0);
    }
    planes(
        p,
        first_plane,
        &input[..k * hw_in],
        weight,
        bias,
        epilogue,
        out,
        &mut scratch[..len],
    );
}

/// The per-plane constants of the register blocks.
struct Geometry {
    kh: usize,
    kw: usize,
    sh: usize,
    dh: usize,
    sw: usize,
    dw: usize,
    w_out: usize,
    /// [`phase_row`].
    row: usize,
    /// Distance between padded rows in the scratch plane, `SW · phase_row`.
    rs: usize,
    /// [`Geometry::start`] of the first [`MAX_KW`] tap columns.
    starts: [usize; MAX_KW],
}

impl Geometry {
    /// Where tap column `b` starts in a padded row: phase `(b·DW) mod SW`, index `(b·DW) / SW`.
    #[inline(always)]
    fn start(&self, b: usize) -> usize {
        (b * self.dw % self.sw) * self.row + b * self.dw / self.sw
    }
}

/// Kernel widths up to this read their tap offsets from [`Geometry::starts`].
const MAX_KW: usize = 16;

/// What happens to a channel's sums before they are stored: `(sum + bias) · scale + shift`,
/// floored at `floor` (see [`finish`]).
#[derive(Clone, Copy)]
struct Post {
    bias: f32,
    scale: f32,
    shift: f32,
    /// 0 for ReLU, −∞ otherwise.
    floor: f32,
}

/// [`depthwise`] after its checks; `phases` is exactly [`scratch_len`] long. Runs on the best
/// instruction set: FMA register blocks of `zmm` or `ymm` vectors, or plain Rust (one multiply
/// and one add per tap) on the baseline.
#[allow(clippy::too_many_arguments)] // `depthwise`'s arguments
fn planes(
    p: &Conv2dParams,
    first_plane: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    out: &mut [f32],
    phases: &mut [f32],
) {
    crate::simd::with_simd!(S => {
        // SAFETY: `with_simd!` runs this body only where the CPU has `S`'s features.
        unsafe { run::<S>(p, first_plane, input, weight, bias, epilogue, out, phases) }
    }, (
        p: &Conv2dParams,
        first_plane: usize,
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        epilogue: Epilogue<'_>,
        out: &mut [f32],
        phases: &mut [f32],
    ))
}

/// [`planes`] with `S` vectors; [`Scalar`](crate::gemm::Scalar) (one lane) selects the plain-Rust blocks.
///
/// # Safety
/// The CPU has `S`'s features.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // `depthwise`'s arguments
unsafe fn run<S: Simd>(
    p: &Conv2dParams,
    first_plane: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    out: &mut [f32],
    phases: &mut [f32],
) {
    let [kh, kw] = p.kernel;
    let [h_in, w_in] = p.in_hw;
    let [h_out, w_out] = p.out_hw;
    let (ph, pw) = (p.padding[0], p.padding[1]);
    let (sw, dw) = (p.stride[1], p.dilation[1]);
    let row = phase_row(p);
    let mut g = Geometry {
        kh,
        kw,
        sh: p.stride[0],
        dh: p.dilation[0],
        sw,
        dw,
        w_out,
        row,
        rs: sw * row,
        starts: [0; MAX_KW],
    };
    for b in 0..kw.min(MAX_KW) {
        g.starts[b] = g.start(b);
    }
    // The padding is the same for every plane: zero it once, then copy only the inside.
    phases.fill(0.0);
    // LOOP over (sample, channel) planes
    for (i, y) in out.chunks_exact_mut(h_out * w_out).enumerate() {
        let x = &input[i * h_in * w_in..(i + 1) * h_in * w_in];
        let c = (first_plane + i) % p.c_out;
        // LOOP over input rows: padded row PH + iy holds input row iy.
        for (iy, src) in x.chunks_exact(w_in.max(1)).enumerate() {
            let dst = &mut phases[(ph + iy) * g.rs..(ph + iy + 1) * g.rs];
            match (S::LANES > 1, sw) {
                (true, 1) => {
                    let m = src.len().min(row.saturating_sub(pw));
                    let at = pw.min(row);
                    // SAFETY: the caller guarantees `S`'s features.
                    unsafe { copy::<S>(&src[..m], &mut dst[at..at + m]) };
                }
                _ => copy_row(src, dst, row, sw, pw),
            }
        }
        let taps = &weight[c * kh * kw..(c + 1) * kh * kw];
        let (scale, shift) = epilogue
            .affine
            .map_or((1.0, 0.0), |(scale, shift)| (scale[c], shift[c]));
        let relu = epilogue.act == Some(Activation::Relu);
        let post = Post {
            bias: bias.map_or(0.0, |b| b[c]),
            scale,
            shift,
            floor: if relu { 0.0 } else { f32::NEG_INFINITY },
        };
        let phases = &*phases;
        if S::LANES == 1 {
            if kh == 3 && kw == 3 {
                plane::<3, 3>(&g, phases, taps, post, y);
            } else {
                plane::<0, 0>(&g, phases, taps, post, y);
            }
        } else {
            // SAFETY: the caller guarantees `S`'s features.
            unsafe { simd_plane::<S>(&g, phases, taps, post, y) };
        }
        // The other activations, while the plane is in cache.
        match epilogue.act {
            None | Some(Activation::Relu) => {}
            Some(act) => activation(act, y),
        }
    }
}

/// `dst = src`, `S::LANES` floats at a time (a plain loop would become a call of `memcpy`).
///
/// # Safety
/// The CPU has `S`'s features.
#[inline(always)]
unsafe fn copy<S: Simd>(src: &[f32], dst: &mut [f32]) {
    let mut src = src.chunks_exact(S::LANES);
    let mut dst = dst.chunks_exact_mut(S::LANES);
    for (s, d) in src.by_ref().zip(dst.by_ref()) {
        // SAFETY: `S`'s features; `s` and `d` hold `S::LANES` floats each.
        unsafe { S::store(d.as_mut_ptr(), S::load(s.as_ptr())) };
    }
    for (d, &s) in dst.into_remainder().iter_mut().zip(src.remainder()) {
        *d = s;
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

/// All output rows of one plane, [`ROWS`] at a time. `KH`, `KW` fix the kernel size at
/// compile time (so the tap loops unroll); 0 reads it from `g`.
#[inline(always)]
fn plane<const KH: usize, const KW: usize>(
    g: &Geometry,
    phases: &[f32],
    taps: &[f32],
    post: Post,
    y: &mut [f32],
) {
    let done = y.len() / (ROWS * g.w_out) * ROWS;
    let mut blocks = y.chunks_exact_mut(ROWS * g.w_out);
    // LOOP over blocks of ROWS output rows
    for (b, rows) in blocks.by_ref().enumerate() {
        row_block::<ROWS, KH, KW>(g, phases, taps, post, b * ROWS, rows);
    }
    // LOOP over the remaining output rows
    for (r, rows) in blocks
        .into_remainder()
        .chunks_exact_mut(g.w_out)
        .enumerate()
    {
        row_block::<1, KH, KW>(g, phases, taps, post, done + r, rows);
    }
}

/// Output rows `oy..oy + R` of one plane into `y: [R, OW]`: the taps in the order `a, b` (the
/// kernel row, then column), then the bias, then [`Post`].
#[inline(always)]
fn row_block<const R: usize, const KH: usize, const KW: usize>(
    g: &Geometry,
    phases: &[f32],
    taps: &[f32],
    post: Post,
    oy: usize,
    y: &mut [f32],
) {
    let kh = if KH > 0 { KH } else { g.kh };
    let kw = if KW > 0 { KW } else { g.kw };
    let start = |b: usize| if b < MAX_KW { g.starts[b] } else { g.start(b) };
    // LOOP over blocks of LANES output columns
    for x0 in (0..g.w_out).step_by(LANES) {
        let mut acc = [[0.0f32; LANES]; R];
        // LOOP over kernel rows
        for a in 0..kh {
            // LOOP over kernel columns
            for b in 0..kw {
                let t = taps[a * kw + b];
                let s = start(b) + x0;
                // LOOP over the block's output rows
                #[allow(clippy::needless_range_loop)] // an index loop over a constant range unrolls
                for r in 0..R {
                    let at = ((oy + r) * g.sh + a * g.dh) * g.rs + s;
                    // `phase_row` leaves LANES of slack after the last block's first column.
                    let v: &[f32; LANES] =
                        phases[at..at + LANES].try_into().expect("LANES elements");
                    for (acc, &v) in acc[r].iter_mut().zip(v) {
                        *acc += t * v;
                    }
                }
            }
        }
        // LOOP over the block's output rows
        #[allow(clippy::needless_range_loop)]
        for r in 0..R {
            let acc = &mut acc[r];
            finish(acc, post);
            let out = &mut y[r * g.w_out + x0..(r + 1) * g.w_out];
            if let Some(out) = out.first_chunk_mut::<LANES>() {
                *out = *acc;
            } else {
                // Through a copy: indexing `acc` at run time would keep every accumulator in
                // memory instead of registers.
                let last = *acc;
                let len = out.len();
                out.copy_from_slice(&last[..len]);
            }
        }
    }
}

/// Most output columns one SIMD register block covers (two vectors of up to LANES).
const MAX_COLS: usize = 2 * LANES;

/// [`plane`] on `S` vectors with fused multiply-adds: blocks of [`ROWS`] output rows × one or
/// two vectors of columns, summed in registers. The 3×3 kernels with stride 1 or 2 (MobileNet's)
/// get their own blocks, unrolled, with each input vector loaded once for all the block's rows
/// that use it.
///
/// # Safety
/// The CPU has `S`'s features.
#[inline(always)]
unsafe fn simd_plane<S: Simd>(
    g: &Geometry,
    phases: &[f32],
    taps: &[f32],
    post: Post,
    y: &mut [f32],
) {
    let two = g.w_out > S::LANES;
    // SAFETY: the caller guarantees `S`'s features, all each arm needs.
    unsafe {
        match (g.kh, g.kw, g.sh, g.dh, two) {
            (3, 3, 1, 1, true) => merged_plane::<S, 3, 3, 1, 2>(g, phases, taps, post, y),
            (3, 3, 1, 1, false) => merged_plane::<S, 3, 3, 1, 1>(g, phases, taps, post, y),
            (3, 3, 2, 1, true) => merged_plane::<S, 3, 3, 2, 2>(g, phases, taps, post, y),
            (3, 3, 2, 1, false) => merged_plane::<S, 3, 3, 2, 1>(g, phases, taps, post, y),
            (.., true) => general_plane::<S, 2>(g, phases, taps, post, y),
            (.., false) => general_plane::<S, 1>(g, phases, taps, post, y),
        }
    }
}

/// [`Post`] in `S` vectors: `[bias, scale, shift, floor]`.
///
/// # Safety
/// The CPU has `S`'s features.
#[inline(always)]
unsafe fn post_vectors<S: Simd>(post: &Post) -> [S::V; 4] {
    // SAFETY: `S`'s features; each splat reads one float of `post`.
    unsafe {
        [
            S::splat(&post.bias),
            S::splat(&post.scale),
            S::splat(&post.shift),
            S::splat(&post.floor),
        ]
    }
}

/// Checks, once per plane, what every block's loads rely on: a block of `cols ≤ OW + LANES`
/// columns from any `x0 ≤ OW + LANES − cols`, shifted by any tap column's start (at most the
/// kernel's reach into a phase), stays inside its phase row, so inside `rs` floats of its padded
/// row. Rows are checked per block by slicing the row window.
fn check_columns(g: &Geometry, cols: usize) {
    let reach = (g.kw - 1) * g.dw / g.sw;
    assert!(
        cols <= MAX_COLS && cols <= g.w_out + LANES && g.w_out + reach + LANES <= g.row,
        "depthwise block wider than its phase row"
    );
}

/// `v = max(floor, (v + bias) · scale + shift)`: [`finish`] on vectors, the same roundings.
///
/// # Safety
/// The CPU has `S`'s features.
#[inline(always)]
unsafe fn finish_vector<S: Simd>(v: S::V, e: &[S::V; 4]) -> S::V {
    // SAFETY: `S`'s features. `max(floor, v)` is `v` when `floor` is −∞ (NaN included) and
    // `activation`'s ReLU when it is 0.
    unsafe { S::max(e[3], S::add(S::mul(S::add(v, e[0]), e[1]), e[2])) }
}

/// Writes `R` rows of `V` finished vectors to `y: [R, OW]` from column `x0`, through a buffer
/// where a row has fewer than `V·LANES` columns left.
///
/// # Safety
/// The CPU has `S`'s features; `V·S::LANES ≤ MAX_COLS`.
#[inline(always)]
unsafe fn store_rows<S: Simd, const R: usize, const V: usize>(
    acc: &[[S::V; V]; R],
    e: &[S::V; 4],
    w_out: usize,
    x0: usize,
    y: &mut [f32],
) {
    let cols = V * S::LANES;
    // LOOP over the block's output rows
    for (r, acc) in acc.iter().enumerate() {
        let dst = &mut y[r * w_out + x0..(r + 1) * w_out];
        if dst.len() >= cols {
            for (v, &a) in acc.iter().enumerate() {
                // SAFETY: `S`'s features; `dst` holds `V·LANES` floats, so LANES from
                // `v·LANES` are writable.
                unsafe { S::store(dst.as_mut_ptr().add(v * S::LANES), finish_vector::<S>(a, e)) };
            }
        } else {
            let mut tmp = [0.0f32; MAX_COLS];
            for (v, &a) in acc.iter().enumerate() {
                // SAFETY: `S`'s features; `tmp` holds MAX_COLS ≥ V·LANES floats.
                unsafe { S::store(tmp.as_mut_ptr().add(v * S::LANES), finish_vector::<S>(a, e)) };
            }
            let len = dst.len();
            dst.copy_from_slice(&tmp[..len]);
        }
    }
}

/// [`simd_plane`] for a `KH×KW` kernel of vertical stride `SH`, no vertical dilation, `V`
/// vectors per row: the taps stay in registers.
///
/// # Safety
/// The CPU has `S`'s features.
#[inline(always)]
unsafe fn merged_plane<
    S: Simd,
    const KH: usize,
    const KW: usize,
    const SH: usize,
    const V: usize,
>(
    g: &Geometry,
    phases: &[f32],
    taps: &[f32],
    post: Post,
    y: &mut [f32],
) {
    check_columns(g, V * S::LANES);
    let taps = &taps[..KH * KW];
    // SAFETY: `S`'s features; each splat reads one float of `taps`.
    let w: [[S::V; KW]; KH] =
        std::array::from_fn(|a| std::array::from_fn(|b| unsafe { S::splat(&taps[a * KW + b]) }));
    // SAFETY: `S`'s features.
    let e = unsafe { post_vectors::<S>(&post) };
    let done = y.len() / (ROWS * g.w_out) * ROWS;
    let mut blocks = y.chunks_exact_mut(ROWS * g.w_out);
    // LOOP over blocks of ROWS output rows
    for (b, rows) in blocks.by_ref().enumerate() {
        // SAFETY: `S`'s features; the columns are checked above.
        unsafe { merged_block::<S, ROWS, KH, KW, SH, V>(g, phases, &w, &e, b * ROWS, rows) };
    }
    // LOOP over the remaining output rows
    for (r, rows) in blocks
        .into_remainder()
        .chunks_exact_mut(g.w_out)
        .enumerate()
    {
        // SAFETY: as above.
        unsafe { merged_block::<S, 1, KH, KW, SH, V>(g, phases, &w, &e, done + r, rows) };
    }
}

/// Output rows `oy..oy + R` into `y: [R, OW]`, `V` vectors of columns at a time. Input row `j`
/// of the window is loaded once per tap column and multiplied into every output row `r` that
/// reads it, with kernel row `j − r·SH`.
///
/// # Safety
/// The CPU has `S`'s features; [`check_columns`] passed for `V·S::LANES` columns.
#[inline(always)]
unsafe fn merged_block<
    S: Simd,
    const R: usize,
    const KH: usize,
    const KW: usize,
    const SH: usize,
    const V: usize,
>(
    g: &Geometry,
    phases: &[f32],
    w: &[[S::V; KW]; KH],
    e: &[S::V; 4],
    oy: usize,
    y: &mut [f32],
) {
    let cols = V * S::LANES;
    let window = (R - 1) * SH + KH;
    let win = &phases[oy * SH * g.rs..(oy * SH + window) * g.rs];
    // LOOP over blocks of V vectors of output columns
    for x0 in (0..g.w_out).step_by(cols) {
        // The last block ends at most LANES past the output row (the slack): it may redo
        // columns of the block before, with the same bits.
        let x0 = x0.min(g.w_out + LANES - cols);
        // SAFETY: `S`'s features.
        let mut acc = [[unsafe { S::zero() }; V]; R];
        // LOOP over the window's input rows
        for j in 0..window {
            // LOOP over kernel columns
            #[allow(clippy::needless_range_loop)] // `b` also picks the tap's start
            for b in 0..KW {
                // SAFETY: `S`'s features. The loads stay in row `j < window` of `win`, at most
                // `start(b) + x0 + V·LANES ≤ rs` floats into it (`check_columns`, and
                // `x0 ≤ OW + LANES − V·LANES`).
                let x: [S::V; V] = std::array::from_fn(|v| unsafe {
                    S::load(win.as_ptr().add(j * g.rs + g.starts[b] + x0 + v * S::LANES))
                });
                // LOOP over the block's output rows that read input row `j`
                for (r, acc) in acc.iter_mut().enumerate() {
                    if j >= r * SH && j - r * SH < KH {
                        let t = w[j - r * SH][b];
                        for (a, &x) in acc.iter_mut().zip(&x) {
                            // SAFETY: `S`'s features.
                            *a = unsafe { S::fmadd(t, x, *a) };
                        }
                    }
                }
            }
        }
        // SAFETY: `S`'s features; `check_columns` bounds V·LANES by MAX_COLS.
        unsafe { store_rows::<S, R, V>(&acc, e, g.w_out, x0, y) };
    }
}

/// [`simd_plane`] for any kernel, stride and dilation: each tap loads its own vectors and
/// broadcasts its weight.
///
/// # Safety
/// The CPU has `S`'s features.
#[inline(always)]
unsafe fn general_plane<S: Simd, const V: usize>(
    g: &Geometry,
    phases: &[f32],
    taps: &[f32],
    post: Post,
    y: &mut [f32],
) {
    check_columns(g, V * S::LANES);
    // SAFETY: `S`'s features.
    let e = unsafe { post_vectors::<S>(&post) };
    let done = y.len() / (ROWS * g.w_out) * ROWS;
    let mut blocks = y.chunks_exact_mut(ROWS * g.w_out);
    // LOOP over blocks of ROWS output rows
    for (b, rows) in blocks.by_ref().enumerate() {
        // SAFETY: `S`'s features; the columns are checked above.
        unsafe { general_block::<S, ROWS, V>(g, phases, taps, &e, b * ROWS, rows) };
    }
    // LOOP over the remaining output rows
    for (r, rows) in blocks
        .into_remainder()
        .chunks_exact_mut(g.w_out)
        .enumerate()
    {
        // SAFETY: as above.
        unsafe { general_block::<S, 1, V>(g, phases, taps, &e, done + r, rows) };
    }
}

/// Output rows `oy..oy + R` into `y: [R, OW]`, taps in the order `a, b` for each row.
///
/// # Safety
/// The CPU has `S`'s features; [`check_columns`] passed for `V·S::LANES` columns.
#[inline(always)]
unsafe fn general_block<S: Simd, const R: usize, const V: usize>(
    g: &Geometry,
    phases: &[f32],
    taps: &[f32],
    e: &[S::V; 4],
    oy: usize,
    y: &mut [f32],
) {
    let cols = V * S::LANES;
    let window = (R - 1) * g.sh + (g.kh - 1) * g.dh + 1;
    let win = &phases[oy * g.sh * g.rs..(oy * g.sh + window) * g.rs];
    let taps = &taps[..g.kh * g.kw];
    let start = |b: usize| if b < MAX_KW { g.starts[b] } else { g.start(b) };
    // LOOP over blocks of V vectors of output columns
    for x0 in (0..g.w_out).step_by(cols) {
        // The last block ends at most LANES past the output row (the slack): it may redo
        // columns of the block before, with the same bits.
        let x0 = x0.min(g.w_out + LANES - cols);
        // SAFETY: `S`'s features.
        let mut acc = [[unsafe { S::zero() }; V]; R];
        // LOOP over the block's output rows
        for (r, acc) in acc.iter_mut().enumerate() {
            // LOOP over kernel rows, then columns
            for a in 0..g.kh {
                let j = r * g.sh + a * g.dh;
                for (b, t) in taps[a * g.kw..(a + 1) * g.kw].iter().enumerate() {
                    // SAFETY: `S`'s features; `t` is a reference to one float.
                    let t = unsafe { S::splat(t) };
                    let at = j * g.rs + start(b) + x0;
                    for (v, a) in acc.iter_mut().enumerate() {
                        // SAFETY: `S`'s features. The load stays in row `j < window` of `win`,
                        // at most `start(b) + x0 + V·LANES ≤ rs` floats into it
                        // (`check_columns`, and `x0 ≤ OW + LANES − V·LANES`).
                        *a = unsafe {
                            S::fmadd(t, S::load(win.as_ptr().add(at + v * S::LANES)), *a)
                        };
                    }
                }
            }
        }
        // SAFETY: `S`'s features; `check_columns` bounds V·LANES by MAX_COLS.
        unsafe { store_rows::<S, R, V>(&acc, e, g.w_out, x0, y) };
    }
}

/// Adds the bias, then applies the epilogue's affine part and ReLU, branch-free so that the
/// loop over a block's rows unrolls. An affine `(1, 0)` and a floor of −∞ change no bits: the
/// sum starts at +0, so it is never −0.
#[inline(always)]
fn finish(acc: &mut [f32; LANES], post: Post) {
    for v in acc.iter_mut() {
        *v += post.bias;
        *v = *v * post.scale + post.shift;
        // `activation`'s ReLU when the floor is 0, else nothing (no value is below −∞, NaN stays).
        *v = if *v < post.floor { 0.0 } else { *v };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv2d::apply;
    use crate::ops::conv2d::tests::naive;
    use crate::shape::out_len;
    use crate::test_util::{assert_close, rand_vec};

    /// `(channels, kernel, stride, padding, dilation, [h, w], n, bias)`.
    type Case = (
        usize,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        usize,
        bool,
    );

    /// Mobile's two layers, then strides 1–3, paddings 0–4, dilations, kernels 1–7 and 2×4,
    /// 3×17, widths 1 to 48 around the 16 lanes (and 38, 40, 41, whose last block of two vectors
    /// overlaps the one before), and row counts off the 4-row blocks.
    const CASES: &[Case] = &[
        (32, [3, 3], [1, 1], [1, 1], [1, 1], [32, 32], 1, true),
        (64, [3, 3], [2, 2], [1, 1], [1, 1], [32, 32], 2, true),
        (3, [3, 3], [1, 1], [1, 1], [1, 1], [7, 5], 2, false),
        (3, [3, 3], [2, 2], [1, 1], [1, 1], [9, 17], 3, true),
        (2, [3, 3], [2, 2], [0, 0], [1, 1], [8, 33], 1, true),
        (2, [3, 3], [2, 2], [2, 3], [1, 1], [6, 21], 2, false),
        (4, [3, 3], [1, 1], [0, 0], [1, 1], [3, 3], 3, true),
        (2, [3, 3], [3, 3], [1, 1], [1, 1], [10, 40], 2, true),
        (3, [3, 3], [1, 2], [1, 1], [2, 2], [11, 19], 1, true),
        (4, [3, 5], [2, 1], [1, 2], [2, 1], [7, 5], 3, true),
        (2, [1, 1], [1, 1], [0, 0], [1, 1], [5, 31], 2, true),
        (2, [1, 1], [2, 2], [1, 1], [1, 1], [5, 6], 1, false),
        (5, [5, 5], [1, 1], [2, 2], [1, 1], [9, 23], 2, true),
        (5, [5, 5], [2, 2], [2, 2], [1, 1], [13, 35], 1, false),
        (2, [7, 7], [1, 1], [3, 3], [1, 1], [8, 48], 1, true),
        (2, [7, 7], [2, 2], [3, 3], [1, 1], [15, 15], 2, true),
        (3, [7, 7], [3, 3], [3, 3], [1, 1], [20, 20], 1, true),
        (6, [3, 3], [3, 2], [0, 2], [2, 2], [9, 8], 2, true),
        (3, [3, 3], [2, 2], [4, 4], [1, 1], [2, 3], 1, true),
        (3, [1, 1], [2, 2], [1, 1], [1, 1], [1, 1], 1, false),
        (2, [2, 4], [1, 3], [1, 2], [1, 1], [4, 10], 2, true),
        (2, [3, 17], [1, 1], [1, 8], [1, 1], [5, 20], 1, true),
        (2, [3, 3], [1, 1], [1, 1], [1, 1], [17, 1], 2, true),
        (3, [3, 3], [1, 1], [1, 1], [1, 1], [6, 40], 2, true),
        (2, [5, 5], [1, 1], [2, 2], [1, 1], [5, 41], 1, true),
        (2, [3, 3], [2, 2], [1, 1], [1, 1], [7, 75], 1, false),
    ];

    fn params(c: &Case) -> Conv2dParams {
        let &(ch, kernel, stride, padding, dilation, in_hw, _, _) = c;
        let axis = |a: usize| {
            out_len(
                in_hw[a],
                kernel[a],
                stride[a],
                padding[a],
                dilation[a],
                false,
            )
            .expect("the case fits its input")
        };
        Conv2dParams {
            c_in: ch,
            c_out: ch,
            groups: ch,
            kernel,
            stride,
            padding,
            dilation,
            in_hw,
            out_hw: [axis(0), axis(1)],
        }
    }

    /// Inputs of case `i`: `[x, weight, bias, scale, shift]`.
    fn data(i: usize, p: &Conv2dParams, n: usize) -> [Vec<f32>; 5] {
        let seed = i as u64 * 10;
        let k = p.kernel[0] * p.kernel[1];
        [
            rand_vec(n * p.in_len(), seed),
            rand_vec(p.c_out * k, seed + 1),
            rand_vec(p.c_out, seed + 2),
            rand_vec(p.c_out, seed + 3),
            rand_vec(p.c_out, seed + 4),
        ]
    }

    /// All `n` samples in one call, with scratch of the wrong size and NaN-filled output.
    fn run(
        p: &Conv2dParams,
        n: usize,
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        e: Epilogue<'_>,
    ) -> Vec<f32> {
        let mut out = vec![f32::NAN; n * p.out_len()];
        let mut scratch = vec![f32::NAN; 5];
        depthwise(p, 0, x, w, b, e, &mut out, &mut scratch);
        assert_eq!(scratch.len(), scratch_len(p));
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn matches_direct_convolution_over_awkward_shapes() {
        for (i, case) in CASES.iter().enumerate() {
            let p = params(case);
            let (n, has_bias) = (case.6, case.7);
            let [x, w, b, _, _] = data(i, &p, n);
            let bias = has_bias.then_some(&b[..]);
            let got = run(&p, n, &x, &w, bias, Epilogue::default());
            assert_close(&got, &naive(&p, n, &x, &w, bias), 1e-5);
        }
    }

    #[test]
    fn fused_epilogue_equals_applying_it_afterwards_bit_for_bit() {
        let acts = [
            None,
            Some(Activation::Relu),
            Some(Activation::LeakyRelu(0.1)),
            Some(Activation::Gelu),
            Some(Activation::Sigmoid),
        ];
        for (i, case) in CASES.iter().enumerate() {
            let p = params(case);
            let (n, has_bias) = (case.6, case.7);
            let [x, w, b, scale, shift] = data(i, &p, n);
            let bias = has_bias.then_some(&b[..]);
            let plain = run(&p, n, &x, &w, bias, Epilogue::default());
            for affine in [None, Some((&scale[..], &shift[..]))] {
                for act in acts {
                    let e = Epilogue { affine, act };
                    let mut want = plain.clone();
                    let hw = p.out_hw[0] * p.out_hw[1];
                    for sample in want.chunks_exact_mut(p.out_len()) {
                        apply(e, 0, sample.chunks_exact_mut(hw));
                    }
                    let got = run(&p, n, &x, &w, bias, e);
                    assert_eq!(bits(&got), bits(&want), "{case:?} {act:?}");
                }
            }
        }
    }

    #[test]
    fn plane_ranges_give_the_bits_of_one_call() {
        for (i, case) in CASES.iter().enumerate() {
            let p = params(case);
            let (n, has_bias) = (case.6, case.7);
            let [x, w, b, scale, shift] = data(i, &p, n);
            let e = Epilogue {
                affine: Some((&scale, &shift)),
                act: Some(Activation::Relu),
            };
            let bias = has_bias.then_some(&b[..]);
            let whole = run(&p, n, &x, &w, bias, e);
            let (hw_in, hw_out) = (p.in_hw[0] * p.in_hw[1], p.out_hw[0] * p.out_hw[1]);
            let planes = n * p.c_out;
            for split in [1, planes / 2, planes - 1] {
                let mut out = vec![f32::NAN; whole.len()];
                let (lo, hi) = out.split_at_mut(split * hw_out);
                let mut scratch = Vec::new();
                let (x_lo, x_hi) = x.split_at(split * hw_in);
                depthwise(&p, 0, x_lo, &w, bias, e, lo, &mut scratch);
                depthwise(&p, split, x_hi, &w, bias, e, hi, &mut scratch);
                assert_eq!(bits(&out), bits(&whole), "{case:?} split at plane {split}");
            }
        }
    }

    #[test]
    fn an_empty_range_writes_nothing_and_a_short_input_panics() {
        let p = params(&CASES[0]);
        let none = Epilogue::default();
        let w = rand_vec(p.c_out * 9, 1);
        depthwise(&p, 3, &[], &w, None, none, &mut [], &mut Vec::new());
        let short = std::panic::catch_unwind(|| {
            let mut out = vec![0.0; p.out_hw[0] * p.out_hw[1]];
            depthwise(&p, 0, &[0.0; 10], &w, None, none, &mut out, &mut Vec::new());
        });
        assert!(short.is_err(), "a short input must panic");
    }
}
