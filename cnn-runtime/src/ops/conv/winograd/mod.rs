//! 3×3 stride-1 convolution by Winograd's minimal filtering F(m×m, 3×3): each m×m output tile
//! comes from an α×α input tile (α = m + 2) with α² multiplications per (input, output) channel
//! pair instead of 9m², as α² GEMMs over all tiles. F(4×4, 3×3) (36 products for 16 outputs,
//! 4× fewer multiplies than direct) runs layers whose outputs are at least
//! `tuning::WINOGRAD_F4_MIN_SIDE` (12) on
//! a side; smaller ones use F(2×2, 3×3) (16 for 4, 2.25×), whose tiles waste less at the edges.
//!
//! `Y = Aᵀ [Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)] A` with `d` an input tile and `g` a filter:
//!
//! - F(2×2): `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`, `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`,
//!   `Aᵀ = [1 1 1 0; 0 1 −1 −1]`.
//! - F(4×4) (Lavin & Gray's points 0, ±1, ±2): `Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0;
//!   0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1]`,
//!   `G = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1⁄24 1⁄12 ⅙; 1⁄24 −1⁄12 ⅙; 0 0 1]`,
//!   `Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]`.
//!
//! The transforms (`transform.rs`) are written out term by term, without multiplications by
//! zero; this file holds the sizes, the tile choice and the driver.

mod transform;

use self::transform::{transform_input, transform_output, OutPost};
#[cfg(feature = "std")]
use self::transform::{transform_weights_for, transform_weights_into};
use super::{Conv2dParams, Epilogue, Layout};
use crate::ops::activation::{activation, Activation};
use crate::store::Scratch;
use crate::tuning::{
    winograd_block_bytes, winograd_out_tile, MIN_MACS_PER_SPLIT, WINOGRAD_MIN_BLOCK_TILES,
    WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_SIDE, WINOGRAD_MIN_TILES_PER_BLOCK,
};
#[cfg(feature = "std")]
use std::vec::Vec;

/// Whether `p` runs with Winograd ([`Algorithm::Winograd`](super::Algorithm::Winograd)): a 3×3 kernel,
/// stride 1, no dilation, one group, and enough channels and tiles for the transforms to pay.
pub const fn applies(p: &Conv2dParams) -> bool {
    p.kernel[0] == 3
        && p.kernel[1] == 3
        && p.stride[0] == 1
        && p.stride[1] == 1
        && p.dilation[0] == 1
        && p.dilation[1] == 1
        && p.groups == 1
        && p.c_in >= WINOGRAD_MIN_CHANNELS
        && p.c_out >= WINOGRAD_MIN_CHANNELS
        && p.out_hw[0] >= WINOGRAD_MIN_SIDE
        && p.out_hw[1] >= WINOGRAD_MIN_SIDE
}

/// The output tile side m of `p`, 4 or 2 (see `tuning::winograd_out_tile`).
pub const fn out_tile(p: &Conv2dParams) -> usize {
    winograd_out_tile(p.out_hw)
}

/// Products per tile: α² with α = m + 2.
const fn positions(m: usize) -> usize {
    (m + 2) * (m + 2)
}

/// Scratch elements for one sample: the transformed input `[T, α², c_in]`, the products
/// `[T, α², c_out]` (or `[α², T, c_out]`), and channel-last copies of the input
/// `[H, W, c_in]` and output `[OH, OW, c_out]`.
pub const fn scratch_len(p: &Conv2dParams) -> usize {
    scratch_len_for(out_tile(p), p)
}

/// Output tiles of one sample, with output tiles of side `m`.
const fn tiles_for(m: usize, p: &Conv2dParams) -> usize {
    p.out_hw[0].div_ceil(m) * p.out_hw[1].div_ceil(m)
}

/// [`scratch_len`] with output tiles of side `m`.
const fn scratch_len_for(m: usize, p: &Conv2dParams) -> usize {
    positions(m) * tiles_for(m, p) * (p.c_in + p.c_out)
        + p.in_hw[0] * p.in_hw[1] * p.c_in
        + p.out_hw[0] * p.out_hw[1] * p.c_out
}

/// Elements of the transformed weights, `[α², c_in, c_out]`, with output tiles of side `m`.
pub(super) const fn weight_len_for(m: usize, p: &Conv2dParams) -> usize {
    positions(m) * p.c_in * p.c_out
}

/// `U = G g Gᵀ` for every filter (computed in f64), laid out `[α², c_in, c_out]` (the GEMMs'
/// B operands), for the tile size [`out_tile`] picks.
///
/// + `weight`: `[c_out, c_in, 3, 3]` (PyTorch's layout)
#[cfg(feature = "std")]
pub fn transform_weights(p: &Conv2dParams, weight: &[f32]) -> Vec<f32> {
    transform_weights_for(out_tile(p), p, weight)
}

/// Elements of [`transform_weights`]' result, `[α², c_in, c_out]`.
pub const fn weight_len(p: &Conv2dParams) -> usize {
    weight_len_for(out_tile(p), p)
}

/// [`transform_weights`] into `u`, which holds at least [`weight_len`] values.
///
/// # Panics
/// If `u` or `weight` is shorter than its layout.
pub(crate) fn transform_weights_to(p: &Conv2dParams, weight: &[f32], u: &mut [f32]) {
    transform::transform_weights_to(out_tile(p), p, weight, u)
}

/// [`transform_weights`] into `u`, reusing its allocation (training updates the weights every
/// step).
#[cfg(feature = "std")]
pub(crate) fn transform_weights_in_place(p: &Conv2dParams, weight: &[f32], u: &mut Vec<f32>) {
    transform_weights_into(out_tile(p), p, weight, u)
}

/// The convolution of [`im2col::conv2d`](super::im2col::conv2d) for a `p` where
/// [`applies`] holds, with transformed weights `u` from [`transform_weights`].
///
/// Each sample goes channel-last, then through blocks of whole tile rows: input transform,
/// the α² GEMMs and the output transform of one block run back to back while its data is in
/// cache. With `threads > 1` (on a worker of the pool) the blocks are shared out, and so are
/// the layout changes; a layer with too few tiles per thread splits the GEMMs instead.
///
/// # Panics
/// If a slice is shorter than its layout.
#[allow(clippy::too_many_arguments)] // the convolution's arguments plus the epilogue
pub fn conv2d(
    p: &Conv2dParams,
    n: usize,
    input: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut (impl Scratch + ?Sized),
) {
    let layouts = [Layout::ChannelsFirst; 2];
    let u = (u, None);
    conv2d_in(
        p, n, input, u, bias, epilogue, threads, out, scratch, layouts,
    )
}

/// [`conv2d`] (f32) or [`conv2d_bf16`] (with `u16`) with the input and the output each in
/// `layouts` (`[input, output]`): a channel-last input (`[n, H·W, C]`) is read as it is, and a
/// channel-last output written straight from the output transform, with no layout change.
///
/// # Panics
/// If a slice is shorter than its layout, or the output is channel-last with a residual
/// (laid out channels-first).
#[allow(clippy::too_many_arguments)] // conv2d's arguments and the layouts
pub(crate) fn conv2d_in(
    p: &Conv2dParams,
    n: usize,
    input: &[f32],
    (u, u16): (&[f32], Option<&[u32]>),
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut (impl Scratch + ?Sized),
    layouts: [Layout; 2],
) {
    let u = match u16 {
        #[cfg(feature = "std")]
        Some(u16) => U::Bf16(u16),
        _ => U::F32(u),
    };
    conv2d_with(
        out_tile(p),
        p,
        n,
        (input, u),
        bias,
        epilogue,
        threads,
        out,
        scratch,
        layouts,
    )
}

/// [`conv2d`] in bf16: `u16` is [`transform_weights`]' `U`, each position's `[c_in, c_out]`
/// packed by `gemm::bf16::pack_b`, one after another; the transformed input is rounded to
/// bf16 for the α² GEMMs, which sum in f32. The transforms and the epilogue stay f32.
#[cfg(feature = "std")]
#[allow(clippy::too_many_arguments)] // the convolution's arguments plus the epilogue
pub(crate) fn conv2d_bf16(
    p: &Conv2dParams,
    n: usize,
    input: &[f32],
    u16: &[u32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut (impl Scratch + ?Sized),
) {
    let layouts = [Layout::ChannelsFirst; 2];
    let u = (&[][..], Some(u16));
    conv2d_in(
        p, n, input, u, bias, epilogue, threads, out, scratch, layouts,
    )
}

/// The transformed weights, as the α² GEMMs read them.
#[derive(Clone, Copy)]
enum U<'a> {
    /// `[α², c_in, c_out]` f32.
    F32(&'a [f32]),
    /// Each position's `[c_in, c_out]` packed for the bf16 GEMM, one after another.
    #[cfg(feature = "std")]
    Bf16(&'a [u32]),
}

impl U<'_> {
    /// Whether the weights hold `xis` positions of `c_in × c_out`.
    fn covers(self, xis: usize, c_in: usize, c_out: usize) -> bool {
        match self {
            U::F32(u) => u.len() >= xis * c_in * c_out,
            #[cfg(feature = "std")]
            U::Bf16(u) => u.len() >= xis * crate::gemm::bf16::packed_len(c_in, c_out),
        }
    }

    /// f32 elements of scratch per row (tile) of the transformed input `V`: `c_in` values, or
    /// in bf16 ⌈`c_in`/2⌉ pairs.
    fn v_row(self, c_in: usize) -> usize {
        match self {
            U::F32(_) => c_in,
            #[cfg(feature = "std")]
            U::Bf16(_) => crate::gemm::bf16::pairs(c_in),
        }
    }

    /// The transformed input `V: [tiles, α², ·]` of tile rows `ty0..ty1`, in f32 or, for the
    /// bf16 GEMM, as its pairs (rounded by the transform itself).
    #[allow(clippy::too_many_arguments)] // transform_input's arguments
    fn transform_input(
        self,
        m_t: usize,
        p: &Conv2dParams,
        xt: &[f32],
        ty0: usize,
        ty1: usize,
        v: &mut [f32],
    ) {
        match self {
            U::F32(_) => transform_input(m_t, p, xt, ty0, ty1, v),
            #[cfg(feature = "std")]
            U::Bf16(_) => {
                use crate::gemm::bf16;
                let halves = bf16::halves_mut(bf16::f32_as_pairs_mut(v));
                transform::transform_input_bf16(m_t, p, xt, ty0, ty1, halves)
            }
        }
    }

    /// `M[ξ] (rows × c_out) = V[ξ] (rows × c_in) · U[ξ] (c_in × c_out)`, `v` holding every
    /// position's `V` as [`U::transform_input`] wrote it (tile-major, `[rows, α², ·]`) and
    /// `m_xi` starting at `M[ξ]`'s first row, its rows `ldc` apart.
    #[allow(clippy::too_many_arguments)] // the GEMM's sizes and operands
    fn gemm(
        self,
        xi: usize,
        [rows, c_in, c_out]: [usize; 3],
        xis: usize,
        v: &[f32],
        (m_xi, ldc): (&mut [f32], usize),
    ) {
        let row = self.v_row(c_in);
        let (v_xi, lda) = (&v[xi * row..], xis * row);
        match self {
            U::F32(u) => {
                let u_xi = &u[xi * c_in * c_out..(xi + 1) * c_in * c_out];
                let (a, c) = ((v_xi, lda), (m_xi, ldc));
                crate::gemm::sgemm_strided(rows, c_in, c_out, a, u_xi, c, false);
            }
            #[cfg(feature = "std")]
            U::Bf16(u) => {
                use crate::gemm::bf16;
                let per = bf16::packed_len(c_in, c_out);
                let b = bf16::B::Packed(&u[xi * per..(xi + 1) * per]);
                let (a, c) = ((bf16::f32_as_pairs(v_xi), lda), (m_xi, ldc));
                bf16::gemm_strided(rows, c_in, c_out, a, b, c, false)
            }
        }
    }

    /// The α² GEMMs of a block of `rows` tiles into `m` laid out tile-major, `[rows, α², c_out]`
    /// (each tile's products contiguous for the output transform); returns the layout's
    /// strides `[ξ, tile]` for [`transform_output`].
    fn gemms(
        self,
        [rows, c_in, c_out]: [usize; 3],
        xis: usize,
        v: &[f32],
        m: &mut [f32],
    ) -> [usize; 2] {
        // LOOP over the α² tile positions: V[ξ] (rows × C) · U[ξ] (C × O)
        for xi in 0..xis {
            let m_xi = (&mut m[xi * c_out..], xis * c_out);
            self.gemm(xi, [rows, c_in, c_out], xis, v, m_xi);
        }
        [c_out, xis * c_out]
    }
}

/// Tile rows per block of a layer with `[th, tw]` tiles of `xis` positions and `channels`
/// input plus output channels: the block's transformed input and products (f32) fit `budget`
/// bytes, with at least [`WINOGRAD_MIN_BLOCK_TILES`] tiles (GEMMs too short otherwise) and at
/// most the layer; with threads, every thread gets a block.
fn block_rows(
    xis: usize,
    [th, tw]: [usize; 2],
    channels: usize,
    threads: usize,
    budget: usize,
) -> usize {
    let row_bytes = xis * tw * channels * core::mem::size_of::<f32>();
    let rows = (budget / row_bytes)
        .max(WINOGRAD_MIN_BLOCK_TILES.div_ceil(tw))
        .clamp(1, th);
    if threads > 1 {
        rows.min(th.div_ceil(threads))
    } else {
        rows
    }
}

/// The epilogue's work [`transform_output`] does in registers (the folded batch norm, and
/// ReLU unless a residual comes first), and the activation left to the finished rows when
/// there is no residual (any but ReLU; with a residual, `Epilogue::after` does the rest).
fn split_epilogue(epilogue: Epilogue<'_>) -> (OutPost<'_>, Option<Activation>) {
    let relu = epilogue.residual.is_none() && epilogue.act == Some(Activation::Relu);
    let rest = epilogue
        .act
        .filter(|&a| a != Activation::Relu && epilogue.residual.is_none());
    let post = OutPost {
        affine: epilogue.affine,
        relu,
    };
    (post, rest)
}

/// [`conv2d_in`] with output tiles of side `m` (2 or 4) and `u` transformed for them.
#[allow(clippy::too_many_arguments)] // conv2d's arguments and the tile size
fn conv2d_with(
    m_t: usize,
    p: &Conv2dParams,
    n: usize,
    (input, u): (&[f32], U<'_>),
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut (impl Scratch + ?Sized),
    layouts: [Layout; 2],
) {
    let [in_last, out_last] = layouts.map(|l| l == Layout::ChannelsLast);
    assert!(
        !out_last || epilogue.residual.is_none(),
        "winograd: a residual is added to channels-first output only"
    );
    let (post, left) = split_epilogue(epilogue);
    let (c_in, c_out, xis) = (p.c_in, p.c_out, positions(m_t));
    let ([h, w], [oh, ow]) = (p.in_hw, p.out_hw);
    let (th, tw) = (oh.div_ceil(m_t), ow.div_ceil(m_t));
    let t = th * tw;
    let len = scratch_len_for(m_t, p);
    epilogue.check(c_out, n * p.out_len());
    assert!(u.covers(xis, c_in, c_out), "winograd weights too short");
    assert!(input.len() >= n * p.in_len(), "winograd input too short");
    assert!(out.len() >= n * p.out_len(), "winograd output too short");
    let (vm, rest) = scratch.at_least(len)[..len].split_at_mut(xis * t * (c_in + c_out));
    // V then M, exactly: a longer M would give the last block more products than its tiles.
    let v_row = u.v_row(c_in);
    let vm = &mut vm[..xis * t * (v_row + c_out)];
    let (xt, yt) = rest.split_at_mut(h * w * c_in);
    let big = t * c_in * c_out * xis >= MIN_MACS_PER_SPLIT;
    let threads = if big { threads.max(1) } else { 1 };
    let l2 = crate::cache::caches().l2;
    let rows = block_rows(
        xis,
        [th, tw],
        c_in + c_out,
        threads,
        winograd_block_bytes(l2),
    );
    let split_tiles = threads == 1 || rows * tw >= WINOGRAD_MIN_TILES_PER_BLOCK;
    let (v_block, m_block) = (xis * rows * tw * v_row, xis * rows * tw * c_out);
    // LOOP over samples
    for (s, (x, y)) in input
        .chunks_exact(p.in_len())
        .zip(out.chunks_exact_mut(p.out_len()))
        .take(n)
        .enumerate()
    {
        if threads == 1 {
            let (v, m) = vm.split_at_mut(xis * t * v_row);
            let bufs = [v, m, xt, yt];
            one_thread(m_t, p, (x, s), u, rows, bias, epilogue, y, bufs, layouts);
            continue;
        }
        if !in_last {
            // LOOP over blocks of input rows: to channel-last
            let in_rows = h.div_ceil(threads);
            let xt_rows = xt.chunks_mut(in_rows * w * c_in);
            crate::threads::for_each(threads, xt_rows, |i, xt_part| {
                to_channels_last(x, h * w, c_in, i * in_rows * w, xt_part);
            });
        }
        let xt: &[f32] = if in_last { x } else { xt };
        // Channel-last output goes straight to `y`; otherwise through `yt`, then to `y`.
        let (yt, y) = if out_last {
            (y, None)
        } else {
            (&mut *yt, Some(y))
        };
        if split_tiles {
            // LOOP over blocks of tile rows, shared out over threads
            let (vs, ms) = vm.split_at_mut(xis * t * v_row);
            let blocks = vs
                .chunks_mut(v_block)
                .zip(ms.chunks_mut(m_block))
                .zip(yt.chunks_mut(m_t * rows * ow * c_out));
            crate::threads::for_each(threads, blocks, |b, ((v, m), yt_part)| {
                let (ty0, ty1) = (b * rows, ((b + 1) * rows).min(th));
                let tb = (ty1 - ty0) * tw;
                u.transform_input(m_t, p, xt, ty0, ty1, v);
                let strides = u.gemms([tb, c_in, c_out], xis, v, m);
                transform_output(m_t, p, (m, strides), ty0, ty1, bias, post, yt_part);
                if let (true, Some(act)) = (out_last, left) {
                    activation(act, yt_part);
                }
            });
        } else {
            // Few tiles: one block, its GEMMs split over threads.
            let (v, m) = vm.split_at_mut(xis * t * v_row);
            u.transform_input(m_t, p, xt, 0, th, v);
            let per = xis.div_ceil(threads.min(xis));
            let parts = m.chunks_mut(per * t * c_out);
            crate::threads::for_each(threads, parts, |b, part| {
                // LOOP over this thread's tile positions, into M laid out `[α², t, c_out]`
                for (i, m_xi) in part.chunks_exact_mut(t * c_out).enumerate() {
                    u.gemm(b * per + i, [t, c_in, c_out], xis, v, (m_xi, c_out));
                }
            });
            transform_output(m_t, p, (m, [t * c_out, c_out]), 0, th, bias, post, yt);
            if let (true, Some(act)) = (out_last, left) {
                activation(act, yt);
            }
        }
        let Some(y) = y else {
            continue;
        };
        // LOOP over blocks of output channels: to channels-first, then the rest of the
        // epilogue
        let per = c_out.div_ceil(threads);
        let planes = y.chunks_mut(per * oh * ow);
        let yt = &*yt;
        crate::threads::for_each(threads, planes, |i, y_part| {
            to_channels_first(yt, c_out, i * per, y_part);
            let first = i * per;
            for (o, plane) in y_part.chunks_exact_mut(oh * ow).enumerate() {
                finish_rows(epilogue, left, s * c_out + first + o, plane);
            }
        });
    }
}

/// The epilogue's work left on a finished output plane `plane` of the batch once
/// [`transform_output`] did its part ([`split_epilogue`]): the residual and the activation,
/// or the activation `rest`.
fn finish_rows(epilogue: Epilogue<'_>, rest: Option<Activation>, plane: usize, row: &mut [f32]) {
    if epilogue.residual.is_some() {
        epilogue.after(plane, row);
    } else if let Some(act) = rest {
        activation(act, row);
    }
}

/// [`conv2d_with`] of one sample on one thread: `x` is sample `sample` of the batch (which
/// picks its residual planes) and `y` its output `[c_out, OH·OW]`. Each block of tile rows
/// works in the same (first) part of `v`, `m` and `yt`, so they stay in cache from block to
/// block; the input rows a block reads go channel-last just before its input transform, and
/// its output goes channels-first, with the epilogue, right after its output transform, while
/// both are still in cache (not in passes over the whole sample).
#[allow(clippy::too_many_arguments)] // conv2d_with's arguments, split into their parts
fn one_thread(
    m_t: usize,
    p: &Conv2dParams,
    (x, sample): (&[f32], usize),
    u: U<'_>,
    rows: usize,
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    y: &mut [f32],
    [v, m, xt, yt]: [&mut [f32]; 4],
    layouts: [Layout; 2],
) {
    let (c_in, c_out, xis) = (p.c_in, p.c_out, positions(m_t));
    let ([h, w], [oh, ow]) = (p.in_hw, p.out_hw);
    let (th, tw, hw) = (oh.div_ceil(m_t), ow.div_ceil(m_t), oh * ow);
    let [in_last, out_last] = layouts.map(|l| l == Layout::ChannelsLast);
    let (post, left) = split_epilogue(epilogue);
    // Input rows already channel-last.
    let mut ready = if in_last { h } else { 0 };
    // LOOP over blocks of tile rows
    for ty0 in (0..th).step_by(rows) {
        let ty1 = (ty0 + rows).min(th);
        // The block's tiles read input rows up to m·ty1 + 1 − PH.
        let need = (m_t * ty1 + 2).saturating_sub(p.padding[0]).min(h);
        if need > ready {
            to_channels_last(
                x,
                h * w,
                c_in,
                ready * w,
                &mut xt[ready * w * c_in..need * w * c_in],
            );
            ready = need;
        }
        let tb = (ty1 - ty0) * tw;
        let m = &mut m[..xis * tb * c_out];
        let xt: &[f32] = if in_last { x } else { xt };
        u.transform_input(m_t, p, xt, ty0, ty1, v);
        // LOOP over the α² tile positions: V[ξ] (tb × C) · U[ξ] (C × O)
        let strides = u.gemms([tb, c_in, c_out], xis, v, m);
        let (oy0, oy1) = (m_t * ty0, (m_t * ty1).min(oh));
        let band = (oy1 - oy0) * ow;
        if out_last {
            let y = &mut y[oy0 * ow * c_out..oy1 * ow * c_out];
            transform_output(m_t, p, (m, strides), ty0, ty1, bias, post, y);
            if let Some(act) = left {
                activation(act, y);
            }
            continue;
        }
        let yt = &mut yt[..band * c_out];
        transform_output(m_t, p, (m, strides), ty0, ty1, bias, post, yt);
        crate::transpose::transpose(band, c_out, yt, c_out, &mut y[oy0 * ow..], hw);
        if let Some(act) = left {
            // LOOP over output channels: the activation on the block's rows of each plane
            for o in 0..c_out {
                let at = o * hw + oy0 * ow;
                activation(act, &mut y[at..at + band]);
            }
        }
    }
    if epilogue.residual.is_some() {
        // LOOP over output channels: the residual and the activation, on whole planes
        for (o, plane) in y.chunks_exact_mut(hw).take(c_out).enumerate() {
            epilogue.after(sample * c_out + o, plane);
        }
    }
}

/// Positions `first..first + xt.len() / C` of `[C, H·W]` (`hw` = H·W) into `xt: [·, C]`.
fn to_channels_last(x: &[f32], hw: usize, c: usize, first: usize, xt: &mut [f32]) {
    let len = xt.len() / c;
    crate::transpose::transpose(c, len, &x[first..], hw, xt, c);
}

/// Channels `first..` of `yt: [H·W, C]` into `y: [·, H·W]` (as many channels as `y` holds).
fn to_channels_first(yt: &[f32], c: usize, first: usize, y: &mut [f32]) {
    let hw = yt.len() / c;
    let channels = y.len() / hw;
    crate::transpose::transpose(hw, channels, &yt[first..], c, y, hw);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv::tests::{assert_close_mag, naive64, reference_epilogue, ACTS};
    use crate::shape::out_len;
    use crate::test_util::rand_vec;

    /// `[n, C, H·W]` as `[n, H·W, C]`.
    fn channels_last(x: &[f32], n: usize, c: usize) -> Vec<f32> {
        let hw = x.len() / n.max(1) / c;
        let mut y = vec![0.0; x.len()];
        for s in 0..n {
            for ch in 0..c {
                for i in 0..hw {
                    y[(s * hw + i) * c + ch] = x[(s * c + ch) * hw + i];
                }
            }
        }
        y
    }

    /// A channel-last output with a residual is refused: the residual is channels-first.
    #[test]
    #[should_panic(expected = "winograd: a residual is added to channels-first output only")]
    fn a_channel_last_output_with_a_residual_is_refused() {
        let p = small(16);
        let r = vec![0.0; p.out_len()];
        let epilogue = Epilogue {
            residual: Some(&r),
            ..Epilogue::default()
        };
        let u = transform_weights(&p, &vec![0.0; p.c_out * p.fan_in()]);
        let x = vec![0.0; p.in_len()];
        let mut y = vec![0.0; p.out_len()];
        let layouts = [Layout::ChannelsFirst, Layout::ChannelsLast];
        let u = (&u[..], None);
        conv2d_in(
            &p,
            1,
            &x,
            u,
            None,
            epilogue,
            1,
            &mut y,
            &mut Vec::new(),
            layouts,
        );
    }

    /// A block's transformed data fits the budget unless the minimum of tiles needs more; it
    /// holds at least that minimum (or the whole layer), and with threads each gets a block.
    #[test]
    fn blocks_of_tiles_fit_the_cache_budget() {
        let f32s = core::mem::size_of::<f32>();
        // (xis, [th, tw], channels, threads, budget, rows)
        for (xis, tiles, channels, threads, budget, want) in [
            // vgg's 64 + 64 channels at 32×32 (F(4×4), 8×8 tiles, 144 KiB a row): in 1 MiB
            // 7 rows; in 512 KiB the minimum of 48 tiles, 6 rows; with 2 threads 4 each.
            (36, [8, 8], 128, 1, 1 << 20, 7),
            (36, [8, 8], 128, 1, 512 << 10, 6),
            (36, [8, 8], 128, 2, 512 << 10, 4),
            // Wide channels: one row would overflow, the minimum of 48 tiles wins.
            (36, [30, 16], 1024, 1, 512 << 10, 3),
            // Small layers: the whole layer.
            (16, [3, 4], 32, 1, 512 << 10, 3),
            (16, [3, 4], 32, 4, 512 << 10, 1),
        ] {
            let rows = block_rows(xis, tiles, channels, threads, budget);
            assert_eq!(
                rows, want,
                "{xis} positions, {tiles:?} tiles, {channels} channels"
            );
            let [th, tw] = tiles;
            let bytes = rows * xis * tw * channels * f32s;
            let minimum = WINOGRAD_MIN_BLOCK_TILES.div_ceil(tw).min(th);
            assert!(
                bytes <= budget || rows <= minimum,
                "{rows} rows: {bytes} bytes"
            );
            assert!((1..=th).contains(&rows));
            assert!(threads <= 1 || rows <= th.div_ceil(threads));
        }
    }

    #[test]
    fn the_tile_size_follows_the_output_size() {
        let p = |side| Conv2dParams {
            c_in: 16,
            c_out: 16,
            groups: 1,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            in_hw: [side, side],
            out_hw: [side, side],
        };
        assert_eq!(out_tile(&p(8)), 2);
        assert_eq!(out_tile(&p(crate::tuning::WINOGRAD_F4_MIN_SIDE)), 4);
        assert_eq!(tiles_for(out_tile(&p(13)), &p(13)), 16);
        assert_eq!(weight_len_for(out_tile(&p(32)), &p(32)), 36 * 16 * 16);
        assert_eq!(
            transform_weights(&p(32), &vec![0.5; 16 * 16 * 9]).len(),
            weight_len_for(4, &p(32))
        );
    }

    /// A 3×3 convolution of `c_in → 4` channels on 4×4.
    fn small(c_in: usize) -> Conv2dParams {
        Conv2dParams {
            c_in,
            c_out: 4,
            groups: 1,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            in_hw: [4, 4],
            out_hw: [4, 4],
        }
    }

    /// Weights one value short of `positions × c_in × c_out` are refused before any work
    /// (and the sum `positions + c_in·c_out` is not the bound).
    #[test]
    #[should_panic(expected = "winograd weights too short")]
    fn weights_one_value_short_are_refused() {
        let p = small(4);
        let (m_t, n) = (out_tile(&p), 1);
        let u = vec![0.0; weight_len_for(m_t, &p) - 1];
        let input = vec![1.0; p.in_len()];
        let mut out = vec![0.0; p.out_len()];
        let e = Epilogue::default();
        conv2d(&p, n, &input, &u, None, e, 1, &mut out, &mut Vec::new());
    }

    /// In bf16: one `u32` short of `positions × packed_len(c_in, c_out)`.
    #[test]
    #[cfg(feature = "std")]
    #[should_panic(expected = "winograd weights too short")]
    fn bf16_weights_one_pair_short_are_refused() {
        let p = small(5);
        let xis = positions(out_tile(&p));
        let u = vec![0; xis * crate::gemm::bf16::packed_len(5, 4) - 1];
        let input = vec![1.0; p.in_len()];
        let mut out = vec![0.0; p.out_len()];
        let e = Epilogue::default();
        conv2d_bf16(&p, 1, &input, &u, None, e, 1, &mut out, &mut Vec::new());
    }

    #[test]
    fn matches_the_f64_definition_over_awkward_shapes_with_every_epilogue() {
        // (c_in, c_out, padding, [h, w], n, bias)
        let cases = [
            (16, 16, [1, 1], [8, 8], 1, true),
            (16, 24, [1, 1], [7, 9], 2, false),
            (20, 16, [0, 0], [9, 6], 1, true),
            (16, 32, [2, 1], [5, 5], 3, true),
            (17, 19, [1, 0], [4, 11], 1, true),
            (64, 64, [1, 1], [16, 16], 1, true),
            // Several blocks of tile rows, the last one shorter.
            (32, 32, [1, 1], [40, 36], 1, true),
            // Enough work to split over threads, too few tiles: the 16 GEMMs are split.
            (128, 128, [1, 1], [8, 8], 1, false),
            // F(4×4)'s own sizes: edges of 1, 2 and 3 outputs past the last whole tile.
            (16, 16, [1, 1], [13, 14], 1, true),
            (24, 17, [1, 1], [15, 12], 2, true),
            (64, 64, [1, 1], [32, 32], 1, true),
        ];
        for (seed, &(c_in, c_out, padding, [h, w], n, bias)) in cases.iter().enumerate() {
            let out_hw = [
                out_len(h, 3, 1, padding[0], 1, false).unwrap(),
                out_len(w, 3, 1, padding[1], 1, false).unwrap(),
            ];
            let p = Conv2dParams {
                c_in,
                c_out,
                groups: 1,
                kernel: [3, 3],
                stride: [1, 1],
                padding,
                dilation: [1, 1],
                in_hw: [h, w],
                out_hw,
            };
            assert!(applies(&p));
            let s = seed as u64 * 10;
            let x = rand_vec(n * p.in_len(), s);
            let wt = rand_vec(p.c_out * p.fan_in(), s + 1);
            let b = rand_vec(c_out, s + 2);
            let (scale, shift) = (rand_vec(c_out, s + 3), rand_vec(c_out, s + 4));
            let r: Vec<f32> = rand_vec(n * p.out_len(), s + 5)
                .iter()
                .map(|v| 4.0 * v)
                .collect();
            let bias = bias.then_some(&b[..]);
            // The f64 definition, not another kernel: the same GEMM and epilogue on both sides
            // would hide their errors.
            let (y, mag) = naive64(&p, n, &x, &wt, bias);
            let hw = p.out_hw[0] * p.out_hw[1];
            // Every epilogue form over the table (the epilogue is one code path after the
            // output transform): the batch norm on every other case, the residual on every
            // third, the activations in turn.
            let affine = (seed % 2 == 0).then_some((&scale[..], &shift[..]));
            let residual = (seed % 3 == 1).then_some(&r[..]);
            let act = ACTS[seed % ACTS.len()];
            let epilogue = Epilogue {
                affine,
                act,
                residual,
            };
            let (want, size) = reference_epilogue(&y, &mag, c_out, hw, affine, residual, act);
            // The cases with 32 or more channels also split over threads (blocks or GEMMs).
            let threads: &[usize] = if c_in >= 32 { &[1, 2, 3] } else { &[1] };
            for m in [2, 4] {
                let u = transform_weights_for(m, &p, &wt);
                // F(4×4)'s larger transform constants cost about 8× F(2×2)'s rounding error,
                // relative to the size of each output's terms (measured up to about 1e-6).
                let tol = if m == 4 { 1e-5 } else { 2e-6 };
                crate::simd::testing::each_level(|level| {
                    for &threads in threads {
                        let run = |x: &[f32], layouts| {
                            let mut got = vec![f32::NAN; n * p.out_len()];
                            crate::threads::install(threads, || {
                                conv2d_with(
                                    m,
                                    &p,
                                    n,
                                    (x, U::F32(&u)),
                                    bias,
                                    epilogue,
                                    threads,
                                    &mut got,
                                    &mut Vec::new(),
                                    layouts,
                                )
                            });
                            got
                        };
                        let first = [Layout::ChannelsFirst; 2];
                        let got = run(&x, first);
                        let what = format!(
                            "F({m}) {p:?} at {}, {threads} threads, {epilogue:?}",
                            level.name()
                        );
                        assert_close_mag(&got, &want, &size, tol, &what);
                        // Channel-last input, output or both: the same bits, laid out so.
                        let x_last = channels_last(&x, n, c_in);
                        let got_last = channels_last(&got, n, c_out);
                        let (cf, cl) = (Layout::ChannelsFirst, Layout::ChannelsLast);
                        for layouts in [[cl, cf], [cf, cl], [cl, cl]] {
                            if layouts[1] == cl && residual.is_some() {
                                continue;
                            }
                            let input = if layouts[0] == cl { &x_last } else { &x };
                            let want = if layouts[1] == cl { &got_last } else { &got };
                            let bits =
                                |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                            assert_eq!(
                                bits(&run(input, layouts)),
                                bits(want),
                                "{what}: {layouts:?}"
                            );
                        }
                    }
                });
            }
        }
    }
}
