//! The Winograd transforms: the filters' `U = G g Gᵀ` (in f64, once per layer), the inputs'
//! `Bᵀ d B` and the products' `Aᵀ m A`, the latter two on whole SIMD vectors of channels.

#[cfg(feature = "std")]
use std::vec::Vec;

use super::weight_len_for;
use crate::ops::conv::Conv2dParams;
use crate::simd::{Scalar, Simd};

/// `G` of F(m×m, 3×3) applied to the 3 values `g`, in f64: α values.
fn g_times(m: usize, [a, b, c]: [f64; 3]) -> [f64; 6] {
    if m == 2 {
        [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c, 0.0, 0.0]
    } else {
        [
            a / 4.0,
            -(a + b + c) / 6.0,
            -(a - b + c) / 6.0,
            a / 24.0 + b / 12.0 + c / 6.0,
            a / 24.0 - b / 12.0 + c / 6.0,
            c,
        ]
    }
}

/// [`transform_weights`](super::transform_weights) with output tiles of side `m`.
#[cfg(feature = "std")]
pub(super) fn transform_weights_for(m: usize, p: &Conv2dParams, weight: &[f32]) -> Vec<f32> {
    let mut u = Vec::new();
    transform_weights_into(m, p, weight, &mut u);
    u
}

/// [`transform_weights_for`] into `u` (resized; no allocation when it is already large enough).
#[cfg(feature = "std")]
pub(super) fn transform_weights_into(m: usize, p: &Conv2dParams, weight: &[f32], u: &mut Vec<f32>) {
    u.clear();
    u.resize(weight_len_for(m, p), 0.0);
    transform_weights_to(m, p, weight, u);
}

/// [`transform_weights_for`] into `u`, which holds at least [`weight_len_for`] values.
///
/// # Panics
/// If `u` or `weight` is shorter than its layout.
pub(super) fn transform_weights_to(m: usize, p: &Conv2dParams, weight: &[f32], u: &mut [f32]) {
    let (c_in, c_out, a) = (p.c_in, p.c_out, m + 2);
    let u = &mut u[..weight_len_for(m, p)];
    for o in 0..c_out {
        for c in 0..c_in {
            let g = &weight[(o * c_in + c) * 9..(o * c_in + c + 1) * 9];
            let g = |i: usize, j: usize| f64::from(g[i * 3 + j]);
            // G g: α×3, G applied to each column of the filter.
            let cols: [[f64; 6]; 3] =
                core::array::from_fn(|j| g_times(m, [g(0, j), g(1, j), g(2, j)]));
            for i in 0..a {
                // (G g) Gᵀ: G applied to row i of G g.
                let row = g_times(m, [cols[0][i], cols[1][i], cols[2][i]]);
                for (j, &v) in row.iter().take(a).enumerate() {
                    u[((i * a + j) * c_in + c) * c_out + o] = v as f32;
                }
            }
        }
    }
}

/// Runs `$body::<S, m>(args…, c0, c1)` over channels `0..$c`: whole vectors of the best
/// instruction set, then the remaining channels one at a time, each inside a function compiled
/// for that instruction set.
macro_rules! by_vectors {
    ($body:ident::<$m:literal>, $c:expr, ($($arg:ident: $ty:ty),*)) => {
        by_vectors!(with_simd, $body::<$m>, $c, ($($arg: $ty),*))
    };
    ($with:ident, $body:ident::<$m:literal>, $c:expr, ($($arg:ident: $ty:ty),*)) => {{
        let c: usize = $c;
        crate::simd::$with!(|s: S| {
            // Whole vectors (`S::LANES` is a power of two; 1 for `Scalar`).
            let whole = c & !(S::LANES - 1);
            $body::<S, $m>(s, $($arg,)* 0, whole);
            $body::<Scalar, $m>(Scalar, $($arg,)* whole, c);
        }, ($($arg: $ty,)* c: usize))
    }};
}

/// `[e(0), e(1), …, e(5)]` with `$i` bound to each index in turn: an array of six built from
/// its values, with no zero-filled scratch behind it (at AVX-512 the 6×6 tiles do not fit the
/// registers, and an array initialised then overwritten cost a `memset` per tile).
macro_rules! six {
    ($i:ident => $e:expr) => {
        [
            {
                let $i = 0;
                $e
            },
            {
                let $i = 1;
                $e
            },
            {
                let $i = 2;
                $e
            },
            {
                let $i = 3;
                $e
            },
            {
                let $i = 4;
                $e
            },
            {
                let $i = 5;
                $e
            },
        ]
    };
}

/// `Bᵀ d` for one column `d` of an α×α input tile (α = m + 2; entries past α unused).
#[inline(always)]
fn bt<S: Simd>(s: S, m: usize, d: [S::V; 6]) -> [S::V; 6] {
    if m == 2 {
        [
            s.sub(d[0], d[2]),
            s.add(d[1], d[2]),
            s.sub(d[2], d[1]),
            s.sub(d[1], d[3]),
            d[4],
            d[5],
        ]
    } else {
        let (four, five, two) = (s.splat(&4.0), s.splat(&5.0), s.splat(&2.0));
        // 4·d0 − 5·d2 + d4; ∓4·(d1 ± ...) etc., with shared terms.
        let t42 = s.sub(d[4], s.mul(four, d[2])); // d4 − 4·d2
        let t31 = s.sub(d[3], s.mul(four, d[1])); // d3 − 4·d1
        let u42 = s.sub(d[4], d[2]); // d4 − d2
        let u31 = s.mul(two, s.sub(d[3], d[1])); // 2·(d3 − d1)
        [
            s.add(s.sub(s.mul(four, d[0]), s.mul(five, d[2])), d[4]),
            s.add(t42, t31),
            s.sub(t42, t31),
            s.add(u42, u31),
            s.sub(u42, u31),
            s.add(s.sub(s.mul(four, d[1]), s.mul(five, d[3])), d[5]),
        ]
    }
}

/// `Aᵀ v` for one column `v` of α products (α = m + 2): m values (entries past m unused).
#[inline(always)]
fn at<S: Simd>(s: S, m: usize, v: [S::V; 6]) -> [S::V; 4] {
    if m == 2 {
        [
            s.add(s.add(v[0], v[1]), v[2]),
            s.sub(s.sub(v[1], v[2]), v[3]),
            v[0],
            v[0],
        ]
    } else {
        let (two, four, eight) = (s.splat(&2.0), s.splat(&4.0), s.splat(&8.0));
        let (s12, d12) = (s.add(v[1], v[2]), s.sub(v[1], v[2]));
        let (s34, d34) = (s.add(v[3], v[4]), s.sub(v[3], v[4]));
        [
            s.add(s.add(v[0], s12), s34),
            s.add(d12, s.mul(two, d34)),
            s.add(s12, s.mul(four, s34)),
            s.add(s.add(d12, s.mul(eight, d34)), v[5]),
        ]
    }
}

/// What the input transform writes: f32 values, or the bf16 halves the bf16 GEMM reads.
pub(super) trait Element: Copy {
    /// Writes the `LANES` values of `v` at `p`.
    ///
    /// # Safety
    /// `p` is valid for `LANES` writes.
    unsafe fn put<S: Simd>(s: S, p: *mut Self, v: S::V);
}

impl Element for f32 {
    #[inline(always)]
    unsafe fn put<S: Simd>(s: S, p: *mut f32, v: S::V) {
        // SAFETY: the caller's guarantee.
        unsafe { s.store(p, v) }
    }
}

impl Element for u16 {
    #[inline(always)]
    unsafe fn put<S: Simd>(s: S, p: *mut u16, v: S::V) {
        // SAFETY: the caller's guarantee.
        unsafe { s.store_bf16(p, v) }
    }
}

/// `V[t, ξ, c] = (Bᵀ d B)[ξ]` (tile-major: each tile's α² rows together) for the α×α tile `d` of channel `c` at tile `t` of tile rows
/// `ty0..ty1` (zero outside the input), from the channel-last input `xt: [H, W, C]`.
pub(super) fn transform_input(
    m: usize,
    p: &Conv2dParams,
    xt: &[f32],
    ty0: usize,
    ty1: usize,
    v: &mut [f32],
) {
    input_f32(m, p, xt, ty0, ty1, v, p.c_in)
}

/// [`transform_input`] rounded to bf16, each row of `C` values padded with a zero to an even
/// length (`v: [tiles, α², 2·⌈C/2⌉]`): the bf16 GEMM's pairs, written by the transform itself.
#[cfg(feature = "std")]
pub(super) fn transform_input_bf16(
    m: usize,
    p: &Conv2dParams,
    xt: &[f32],
    ty0: usize,
    ty1: usize,
    v: &mut [u16],
) {
    let row = 2 * crate::gemm::bf16::pairs(p.c_in);
    input_bf16(m, p, xt, ty0, ty1, v, row);
    if row > p.c_in {
        let rows = (m + 2) * (m + 2) * (ty1 - ty0) * p.out_hw[1].div_ceil(m);
        // LOOP over rows: the padding half of the last pair
        for r in v.chunks_exact_mut(row).take(rows) {
            r[p.c_in] = 0;
        }
    }
}

/// Defines `fn $name(m, p, xt, ty0, ty1, v: &mut [$t], row)`: [`transform_input`] into rows
/// of `row` ≥ C elements of `$t` (a function per element type: the dispatch's inner
/// functions cannot be generic over it).
macro_rules! transform_input_to {
    ($name:ident, $t:ty, $with:ident) => {
        fn $name(m: usize, p: &Conv2dParams, xt: &[f32], ty0: usize, ty1: usize, v: &mut [$t], row: usize) {
            if m == 2 {
                by_vectors!($with, input_tiles::<2>, p.c_in, (p: &Conv2dParams, xt: &[f32], ty0: usize, ty1: usize, v: &mut [$t], row: usize))
            } else {
                by_vectors!($with, input_tiles::<4>, p.c_in, (p: &Conv2dParams, xt: &[f32], ty0: usize, ty1: usize, v: &mut [$t], row: usize))
            }
        }
    };
}
transform_input_to!(input_f32, f32, with_simd);
// Rounding to bf16 with `vcvtneps2bf16` where the bf16 GEMM has `vdpbf16ps`.
#[cfg(feature = "std")]
transform_input_to!(input_bf16, u16, with_simd_bf16);

/// [`transform_input`] for channels `c0..c1`, `S::LANES` at a time (`c1 − c0` a multiple),
/// into rows of `row` elements.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // transform_input's arguments, the token and the channel range
fn input_tiles<S: Simd, const M: usize>(
    s: S,
    p: &Conv2dParams,
    xt: &[f32],
    ty0: usize,
    ty1: usize,
    v: &mut [impl Element],
    row: usize,
    c0: usize,
    c1: usize,
) {
    let [h, w] = p.in_hw;
    let [ph, pw] = p.padding;
    let (m, a) = (M, M + 2);
    let tw = p.out_hw[1].div_ceil(m);
    let c_in = p.c_in;
    let n = S::LANES;
    let zero = s.zero();
    // LOOP over tiles
    for ty in ty0..ty1 {
        for tx in 0..tw {
            let t = (ty - ty0) * tw + tx;
            // LOOP over vectors of channels
            for c in (c0..c1).step_by(n) {
                // bd[j] = Bᵀ d_j for column j of the tile d (zero outside the input and past α)
                let bd: [[S::V; 6]; 6] = six!(j => {
                    let ix = (m * tx + j).wrapping_sub(pw);
                    if j < a && ix < w {
                        bt(s, m, six!(i => {
                            let iy = (m * ty + i).wrapping_sub(ph);
                            if i < a && iy < h {
                                let at = (iy * w + ix) * c_in + c;
                                // SAFETY: the slice is bounds-checked to hold the LANES floats
                                // read.
                                unsafe { s.load(xt[at..at + n].as_ptr()) }
                            } else {
                                zero
                            }
                        }))
                    } else {
                        [zero; 6]
                    }
                });
                // LOOP over rows i of Bᵀ d: times B
                #[allow(clippy::needless_range_loop)] // `i` indexes inside `six!`
                for i in 0..a {
                    let r = bt(s, m, six!(j => bd[j][i]));
                    for (j, &val) in r.iter().enumerate().take(a) {
                        let at = ((t * a + i) * a + j) * row + c;
                        // SAFETY: the slice is bounds-checked to hold the LANES values written.
                        unsafe { Element::put(s, v[at..at + n].as_mut_ptr(), val) };
                    }
                }
            }
        }
    }
}

/// What [`transform_output`] applies to each value after its bias, in registers: the folded
/// batch norm `v·scale[o] + shift[o]` (two roundings), then PyTorch's ReLU (NaN stays NaN).
/// The channels' `PostOp` without its bias, with the same bits.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct OutPost<'a> {
    /// `(scale, shift)` per output channel.
    pub(super) affine: Option<(&'a [f32], &'a [f32])>,
    /// ReLU last.
    pub(super) relu: bool,
}

/// `yt[m·ty + i, m·tx + j, o] = post(bias[o] + (Aᵀ M A)[i, j])` with `M[ξ]` the products of
/// tile `t`, channel `o` at `prods[ξ·strides[0] + t·strides[1] + o]` (tile-major or
/// position-major), for the tiles of tile rows `ty0..ty1`, clipped to the output (`yt` is
/// channel-last `[OH, OW, c_out]` from output row `m·ty0` on).
#[allow(clippy::too_many_arguments)] // the transform's operands, the tile rows and the epilogue
pub(super) fn transform_output(
    m: usize,
    p: &Conv2dParams,
    (prods, strides): (&[f32], [usize; 2]),
    ty0: usize,
    ty1: usize,
    bias: Option<&[f32]>,
    post: OutPost<'_>,
    yt: &mut [f32],
) {
    if let Some((scale, shift)) = post.affine {
        assert!(
            scale.len() >= p.c_out && shift.len() >= p.c_out,
            "winograd epilogue too short"
        );
    }
    if m == 2 {
        by_vectors!(
            output_tiles::<2>,
            p.c_out,
            (p: &Conv2dParams, prods: &[f32], strides: [usize; 2], ty0: usize, ty1: usize, bias: Option<&[f32]>, post: OutPost<'_>, yt: &mut [f32])
        )
    } else {
        by_vectors!(
            output_tiles::<4>,
            p.c_out,
            (p: &Conv2dParams, prods: &[f32], strides: [usize; 2], ty0: usize, ty1: usize, bias: Option<&[f32]>, post: OutPost<'_>, yt: &mut [f32])
        )
    }
}

/// [`transform_output`] for channels `o0..o1`, `S::LANES` at a time (`o1 − o0` a multiple).
#[inline(always)]
#[allow(clippy::too_many_arguments)] // transform_output's arguments, the token and the channel range
fn output_tiles<S: Simd, const M: usize>(
    s: S,
    p: &Conv2dParams,
    prods: &[f32],
    strides: [usize; 2],
    ty0: usize,
    ty1: usize,
    bias: Option<&[f32]>,
    post: OutPost<'_>,
    yt: &mut [f32],
    o0: usize,
    o1: usize,
) {
    let [oh, ow] = p.out_hw;
    let (m, a) = (M, M + 2);
    let tw = ow.div_ceil(m);
    let c_out = p.c_out;
    let [xs, ts] = strides;
    let n = S::LANES;
    let zero = s.zero();
    // LOOP over tiles
    for ty in ty0..ty1 {
        for tx in 0..tw {
            let t = (ty - ty0) * tw + tx;
            // LOOP over vectors of output channels
            for o in (o0..o1).step_by(n) {
                let bv = match bias {
                    // SAFETY: the slice is bounds-checked to hold the LANES floats read.
                    Some(b) => unsafe { s.load(b[o..o + n].as_ptr()) },
                    None => zero,
                };
                // SAFETY: the slices are bounds-checked to hold the LANES floats read.
                let affine = post.affine.map(|(a, b)| unsafe {
                    (s.load(a[o..o + n].as_ptr()), s.load(b[o..o + n].as_ptr()))
                });
                // ae[j] = Aᵀ e_j for column j of the α×α products e (m values; zero past α)
                let ae: [[S::V; 4]; 6] = six!(j => {
                    if j < a {
                        at(s, m, six!(i => {
                            if i < a {
                                let at = (i * a + j) * xs + t * ts + o;
                                // SAFETY: the slice is bounds-checked to hold the LANES floats
                                // read.
                                unsafe { s.load(prods[at..at + n].as_ptr()) }
                            } else {
                                zero
                            }
                        }))
                    } else {
                        [zero; 4]
                    }
                });
                // LOOP over rows i of Aᵀ e: times A
                #[allow(clippy::needless_range_loop)] // `i` indexes inside `six!`
                for i in 0..m {
                    if m * ty + i >= oh {
                        break;
                    }
                    let oy = m * (ty - ty0) + i;
                    let r = at(s, m, six!(j => ae[j][i]));
                    for (j, &val) in r.iter().enumerate().take(m) {
                        let ox = m * tx + j;
                        if ox >= ow {
                            break;
                        }
                        let at = (oy * ow + ox) * c_out + o;
                        let mut val = s.add(bv, val);
                        if let Some((scale, shift)) = affine {
                            val = s.add(s.mul(val, scale), shift);
                        }
                        if post.relu {
                            val = s.max(zero, val);
                        }
                        // SAFETY: the slice is bounds-checked to hold the LANES floats written.
                        unsafe { s.store(yt[at..at + n].as_mut_ptr(), val) };
                    }
                }
            }
        }
    }
}
