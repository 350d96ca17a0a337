//! The bf16 GEMM against an f64 reference over awkward shapes, every path against every other
//! bit for bit, and the rounding by hand.

use super::*;
use crate::simd::testing::take_ran_bf16;
use crate::simd::Chain;
use crate::test_util::{chain_sum, rand_vec};

/// Every bf16 path this CPU runs, loudly naming the ones it cannot.
fn paths() -> Vec<Bf16Path> {
    let mut run = Vec::new();
    if crate::simd::amx_available() {
        run.push(Bf16Path::Amx);
    } else {
        eprintln!("SKIPPED: the `amx` bf16 GEMM is not tested: this CPU lacks AMX-BF16 or the permission to use it");
    }
    if crate::simd::bf16_dot_available() {
        run.push(Bf16Path::Dot);
    } else {
        eprintln!("SKIPPED: the `avx512bf16` bf16 GEMM is not tested: this CPU lacks AVX512_BF16");
    }
    for level in Isa::ALL {
        if level.available() {
            run.push(Bf16Path::Fma(level));
        } else {
            eprintln!(
                "SKIPPED: the `{}` bf16 GEMM is not tested: this CPU lacks it",
                level.name()
            );
        }
    }
    run
}

/// `(m, k, n)`: empty matrices, odd `k`, every row remainder of the 6-row tiles, columns short
/// of, equal to and past a panel, and the shapes of Winograd's and the benchmark nets' GEMMs.
const MKNS: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (0, 4, 4),
    (4, 0, 7),
    (5, 7, 0),
    (7, 3, 17),
    (6, 2, 64),
    (13, 33, 65),
    (2, 64, 130),
    (11, 17, 9),
    (48, 64, 64),
    (40, 128, 100),
    (1, 300, 3),
    (25, 96, 192),
    (16, 32, 16),
    (17, 31, 33),
    (33, 65, 97),
    (64, 96, 128),
    (40, 30, 100),
];

/// C of pairs `ap` (`[m, ⌈k/2⌉]`) by packed `bp` in `chain`'s order, by hand.
fn chain_gemm(chain: Chain, (m, k, n): (usize, usize, usize), ap: &[u32], bp: &[u32]) -> Vec<f32> {
    let k2 = pairs(k);
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let b = |p: usize| bp[(j / NR * k2 + p) * NR + j % NR];
            c[i * n + j] = chain_sum(chain, k2, |p| ap[i * k2 + p], b);
        }
    }
    c
}

/// `Σ_p a[i, p]·B(p, j)` in f64 over the operands rounded to bf16 (`round`) or as they are, and
/// the sum of the terms' magnitudes.
fn reference(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    round: bool,
) -> (Vec<f64>, Vec<f64>) {
    let r = |x: f32| {
        if round {
            round_bf16(x) as f64
        } else {
            x as f64
        }
    };
    let mut want = vec![0.0; m * n];
    let mut mag = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            for p in 0..k {
                let t = r(a[i * k + p]) * r(b[p * n + j]);
                want[i * n + j] += t;
                mag[i * n + j] += t.abs();
            }
        }
    }
    (want, mag)
}

fn run(
    path: Bf16Path,
    (m, k, n): (usize, usize, usize),
    a: &[u32],
    b: B<'_>,
    c: &mut [f32],
    acc: bool,
) {
    run_lda(path, (m, k, n), (a, pairs(k)), b, c, acc);
}

/// [`run`] with A's rows `lda` pairs apart.
fn run_lda(
    path: Bf16Path,
    (m, k, n): (usize, usize, usize),
    (a, lda): (&[u32], usize),
    b: B<'_>,
    c: &mut [f32],
    acc: bool,
) {
    gemm_on(
        path,
        Gemm {
            m,
            k,
            n,
            a,
            b,
            lda,
            ldc: n,
            accumulate: acc,
            post: None,
        },
        c,
    );
}

#[test]
fn rounds_to_nearest_even_and_keeps_specials() {
    let one = 1.0f32;
    // Halfway between 1 and 1 + 2⁻⁷: ties to the even 1.
    assert_eq!(to_bf16(one + 2f32.powi(-8)), 0x3f80);
    // Halfway between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶: ties to the even one above.
    assert_eq!(to_bf16(one + 3.0 * 2f32.powi(-8)), 0x3f82);
    // Just past halfway rounds up, just short rounds down.
    assert_eq!(to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
    assert_eq!(to_bf16(f32::from_bits(0x3f80_7fff)), 0x3f80);
    assert_eq!(to_bf16(-2.5), 0xc020);
    assert_eq!(to_bf16(f32::MAX), 0x7f80, "past the largest bf16: infinity");
    assert_eq!(to_bf16(f32::NEG_INFINITY), 0xff80);
    assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    // A NaN whose payload sits in the low half only must not become infinity.
    assert!(from_bf16(to_bf16(f32::from_bits(0x7f80_0001))).is_nan());
    assert_eq!(to_bf16(1e-39), 0x0000, "subnormals flush to zero");
    assert_eq!(to_bf16(-1e-39), 0x8000);
    assert_eq!(
        to_bf16(f32::MIN_POSITIVE),
        0x0080,
        "the smallest normal stays"
    );
    assert_eq!(round_bf16(3.0), 3.0);
    assert_eq!(pair(1.0, -2.0), 0xc000_3f80);
}

/// The vector conversion (`Simd::store_bf16` behind `convert`) gives `to_bf16`'s bits at every
/// bf16 path (so every token's conversion, `vcvtneps2bf16` included): every rounding case (below, at and past the halfway point, even and odd), NaNs
/// with payloads high and low, infinities, overflow, subnormals and zeros of each sign, and
/// random bit patterns, at every position of a vector and in the scalar tail.
#[test]
fn the_vector_conversion_gives_the_scalar_bits_at_every_level() {
    let mut bits: Vec<u32> = vec![
        0x3f80_8000,
        0x3f81_8000,
        0x3f80_7fff,
        0x3f80_8001,
        0x3f81_7fff,
        0x3f81_8001,
        0x7f80_0000,
        0xff80_0000,
        0x7f80_0001,
        0xff80_0001,
        0x7fc0_0000,
        0x7fff_ffff,
        0xffff_ffff,
        0x7f7f_ffff,
        0xff7f_ffff,
        0x7f7f_8000,
        0x0000_0001,
        0x8000_0001,
        0x007f_ffff,
        0x807f_ffff,
        0x0080_0000,
        0x8080_0000,
        0x0000_0000,
        0x8000_0000,
        0x0080_8000,
        0x0081_8000,
        0x4049_0fdb,
        0xc049_0fdb,
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    bits.extend((0..4000).map(|_| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 32) as u32
    }));
    let x: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
    let want: Vec<u16> = x.iter().map(|&v| to_bf16(v)).collect();
    crate::simd::testing::each_bf16_path(|level| {
        // Every offset, so that each special value meets every lane and the tail.
        for start in 0..17 {
            let mut got = vec![0xdead_u16; x.len() - start + 1];
            convert(&x[start..], &mut got);
            for (i, (&g, &w)) in got.iter().zip(&want[start..]).enumerate() {
                assert_eq!(
                    g,
                    w,
                    "{:#010x} at {}: {g:#06x}, want {w:#06x}",
                    bits[start + i],
                    level.name()
                );
            }
            assert_eq!(*got.last().unwrap(), 0xdead, "past the input: untouched");
        }
    });
}

/// `pack_b` at every level, rows contiguous (the vector path) or not, against `pair` element
/// by element: odd `k` (the last pair's odd half zero), columns off the vector width and the
/// panel, and the specials of the conversion.
#[test]
fn packing_gives_the_scalar_pairs_at_every_level() {
    for (k, n) in [(1, 1), (3, 17), (4, 64), (5, 70), (8, 129), (7, 15)] {
        let mut b = rand_vec(k * n, (k * 131 + n) as u64);
        let specials = [f32::NAN, -0.0, 1e-39, f32::MAX, f32::from_bits(0x3f80_8000)];
        for (x, s) in b.iter_mut().step_by(7).zip(specials.iter().cycle()) {
            *x = *s;
        }
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        crate::simd::testing::each_bf16_path(|level| {
            for (src, strides) in [(&b, (n, 1)), (&bt, (1, k))] {
                let mut got = vec![u32::MAX; packed_len(k, n)];
                pack_b(k, n, src, strides, &mut got);
                for (i, &g) in got.iter().enumerate() {
                    let (jp, p, jj) = (i / (pairs(k) * NR), i / NR % pairs(k), i % NR);
                    let j = jp * NR + jj;
                    let at = |r: usize| b[r * n + j];
                    let want = if j >= n {
                        0
                    } else {
                        pair(at(2 * p), if 2 * p + 1 < k { at(2 * p + 1) } else { 0.0 })
                    };
                    assert_eq!(
                        g,
                        want,
                        "k {k}, n {n}, strides {strides:?} at {}: pair {p} of column {j}",
                        level.name()
                    );
                }
            }
        });
    }
}

#[test]
fn pairs_pad_an_odd_row_with_zero() {
    let src = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let mut dst = [u32::MAX; 4];
    pairs_into(&src, 2, 3, &mut dst);
    assert_eq!(
        dst,
        [
            pair(1.0, 2.0),
            pair(3.0, 0.0),
            pair(4.0, 5.0),
            pair(6.0, 0.0)
        ]
    );
    assert_eq!(packed_len(3, 65), 2 * 128);
    let mut packed = vec![u32::MAX; packed_len(3, 2)];
    // B = [[1, 2], [3, 4], [5, 6]]
    pack_b(3, 2, &src, (2, 1), &mut packed);
    assert_eq!(&packed[..3], &[pair(1.0, 3.0), pair(2.0, 4.0), 0]);
    assert_eq!(&packed[NR..NR + 3], &[pair(5.0, 0.0), pair(6.0, 0.0), 0]);
    assert!(packed[2..NR]
        .iter()
        .chain(&packed[NR + 2..])
        .all(|&p| p == 0));
}

/// A's pairs `ap` (`[m, k₂]`) placed as the tiles read them in place, from a cache line's start
/// with rows a whole number of tiles apart (`lda` a multiple of 16, NaN pairs between `k₂` and
/// `lda`, which no product may read), or off a line with `lda = k₂` (copied first). Returns the
/// buffer, A's start in it and `lda`.
fn placed(ap: &[u32], (m, k): (usize, usize), in_place: bool) -> (Vec<u32>, usize, usize) {
    use crate::store::{to_line, LINE};
    let k2 = pairs(k);
    let lda = if in_place { k2.div_ceil(16) * 16 } else { k2 };
    let mut buf = vec![0x7fc0_7fc0; m * lda + LINE];
    let start = (0..LINE)
        .find(|&o| (to_line(&buf[o..]) == 0) == in_place)
        .unwrap();
    for (i, row) in ap.chunks_exact(k2.max(1)).take(m).enumerate() {
        buf[start + i * lda..][..k2].copy_from_slice(&row[..k2]);
    }
    (buf, start, lda)
}

#[test]
fn matches_the_f64_reference_on_every_path_bit_identically() {
    let all = paths();
    for (seed, &(m, k, n)) in MKNS.iter().enumerate() {
        let s = seed as u64 * 7;
        // Values of different sizes, so that the rounding of the sums matters.
        let a: Vec<f32> = rand_vec(m * k, s).iter().map(|v| v * 3.0).collect();
        let b = rand_vec(k * n, s + 1);
        let c0: Vec<f32> = rand_vec(m * n, s + 2);
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut ap = vec![0; m * pairs(k)];
        pairs_into(&a, m, k, &mut ap);
        let mut bp = vec![0; packed_len(k, n)];
        pack_b(k, n, &b, (n, 1), &mut bp);
        let (want, mag) = reference((m, k, n), &a, &b, true);
        let (exact, _) = reference((m, k, n), &a, &b, false);
        // Panels written on demand (here copied from the packed B).
        let fill = |j0: usize, panel: &mut [u32]| {
            let k2 = pairs(k);
            panel.copy_from_slice(&bp[j0 / NR * k2 * NR..(j0 / NR + 1) * k2 * NR]);
        };
        let by_hand = |chain| chain_gemm(chain, (m, k, n), &ap, &bp);
        let (pairs_want, tiles_want) = (by_hand(Chain::Pairs), by_hand(Chain::Tiles));
        for &path in &all {
            let sources = [
                ("packed", B::Packed(&bp)),
                ("f32", B::F32(&b, (n, 1))),
                ("f32 transposed", B::F32(&bt, (1, k))),
                ("filled", B::Fill(&fill)),
            ];
            // A on cache lines (read in place by the tiles) and off them (copied).
            for ((what, src), in_place) in sources.into_iter().flat_map(|s| [(s, true), (s, false)])
            {
                let (buf, start, lda) = placed(&ap, (m, k), in_place);
                let a = (&buf[start..], lda);
                let what = format!(
                    "{what}, A {}",
                    if in_place { "on lines" } else { "off lines" }
                );
                let mut c = vec![f32::NAN; m * n];
                run_lda(path, (m, k, n), a, src, &mut c, false);
                assert_eq!(
                    take_ran_bf16(),
                    if m * n * k == 0 { vec![] } else { vec![path] }
                );
                let at = format!("{m}x{k}x{n} B {what} on {}", path.name());
                for i in 0..m * n {
                    // f32 accumulation of exact products: k roundings of at most 2⁻²⁴ each.
                    let tol = 1e-6 * (1.0 + k as f64 / 8.0) * (1.0 + mag[i]);
                    assert!(
                        (c[i] as f64 - want[i]).abs() <= tol,
                        "{at}: c[{i}] = {}, f64 of the bf16 operands {}",
                        c[i],
                        want[i]
                    );
                    // Against the unrounded operands: two roundings of 2⁻⁹ per product.
                    assert!((c[i] as f64 - exact[i]).abs() <= (1.0 + mag[i]) * 2f64.powi(-7));
                }
                let by_hand = match path.chain() {
                    Chain::Pairs => &pairs_want,
                    Chain::Tiles => &tiles_want,
                };
                for (i, (x, y)) in c.iter().zip(by_hand).enumerate() {
                    assert_eq!(
                        x.to_bits(),
                        y.to_bits(),
                        "{at}: c[{i}] = {x}, its chain by hand {y}"
                    );
                }
                let mut acc = c0.clone();
                run_lda(path, (m, k, n), a, src, &mut acc, true);
                take_ran_bf16();
                for i in 0..m * n {
                    assert_eq!(acc[i], c0[i] + c[i], "{at}: accumulate at {i}");
                }
            }
        }
    }
}

#[test]
fn a_row_does_not_depend_on_the_rows_computed_with_it() {
    let (m, k, n) = (13, 40, 70);
    let a = rand_vec(m * k, 3);
    let b = rand_vec(k * n, 4);
    let mut ap = vec![0; m * pairs(k)];
    pairs_into(&a, m, k, &mut ap);
    let mut whole = vec![0.0; m * n];
    gemm(m, k, n, &ap, B::F32(&b, (n, 1)), &mut whole, false);
    for i in 0..m {
        let mut row = vec![0.0; n];
        gemm(
            1,
            k,
            n,
            &ap[i * pairs(k)..],
            B::F32(&b, (n, 1)),
            &mut row,
            false,
        );
        assert_eq!(row, whole[i * n..(i + 1) * n], "row {i}");
    }
}

#[test]
#[should_panic(expected = "bf16 gemm operand too short")]
fn a_short_c_is_refused() {
    let ap = vec![0; 4];
    let bp = vec![0; packed_len(2, 3)];
    gemm(4, 2, 3, &ap, B::Packed(&bp), &mut [0.0; 11], false);
}

#[test]
#[should_panic(expected = "bf16 packed B too short")]
fn a_short_packed_b_is_refused() {
    let ap = vec![0; 4];
    let bp = vec![0; packed_len(2, 3) - 1];
    gemm(4, 2, 3, &ap, B::Packed(&bp), &mut [0.0; 12], false);
}

/// With A's rows `lda > ⌈k/2⌉` pairs and C's `ldc > n` values apart, every path writes the
/// dense result's rows (and accumulates onto them), and leaves the values between rows alone;
/// `k = 0` zeroes only the rows.
#[test]
fn strided_a_and_c_give_the_dense_rows_and_nothing_between() {
    for &(m, k, n) in &[
        (7, 33, 70),
        (13, 0, 5),
        (1, 4, 64),
        (6, 9, 17),
        (37, 40, 70),
        (33, 64, 33),
        (35, 24, 40),
    ] {
        let (k2, ldc) = (pairs(k), n + 5);
        let lda = k2 + 3;
        let a = rand_vec(m * k, 21);
        let b = rand_vec(k * n, 22);
        let mut ap = vec![0; m * k2];
        pairs_into(&a, m, k, &mut ap);
        // The same pairs with garbage (NaN pairs) between the rows.
        let mut sa = vec![0x7fc0_7fc0; m * lda];
        for i in 0..m {
            sa[i * lda..i * lda + k2].copy_from_slice(&ap[i * k2..(i + 1) * k2]);
        }
        let c0 = rand_vec(m * ldc, 23);
        for &path in &paths() {
            let mut dense = vec![f32::NAN; m * n];
            run(path, (m, k, n), &ap, B::F32(&b, (n, 1)), &mut dense, false);
            for acc in [false, true] {
                let mut c = c0.clone();
                let g = Gemm {
                    m,
                    k,
                    n,
                    a: &sa,
                    b: B::F32(&b, (n, 1)),
                    lda,
                    ldc,
                    accumulate: acc,
                    post: None,
                };
                gemm_on(path, g, &mut c[..(m - 1) * ldc + n]);
                for i in 0..m {
                    for j in 0..ldc {
                        let (got, before) = (c[i * ldc + j], c0[i * ldc + j]);
                        let want = match (j < n, acc) {
                            (false, _) => before,
                            (true, false) => dense[i * n + j],
                            (true, true) => before + dense[i * n + j],
                        };
                        assert_eq!(
                            got,
                            want,
                            "{m}x{k}x{n} on {}, accumulate {acc}: ({i}, {j})",
                            path.name()
                        );
                    }
                }
            }
        }
    }
    take_ran_bf16();
}

#[test]
#[should_panic(expected = "bf16 gemm stride shorter than its rows")]
fn a_c_stride_shorter_than_a_row_is_refused() {
    let ap = vec![0; 4];
    let bp = vec![0; packed_len(2, 3)];
    gemm_strided(
        4,
        2,
        3,
        (&ap, 1),
        B::Packed(&bp),
        (&mut [0.0; 12], 2),
        false,
    );
}

#[test]
#[should_panic(expected = "bf16 gemm stride shorter than its rows")]
fn an_a_stride_shorter_than_a_row_is_refused() {
    let ap = vec![0; 8];
    let bp = vec![0; packed_len(4, 3)];
    gemm_strided(
        4,
        4,
        3,
        (&ap, 1),
        B::Packed(&bp),
        (&mut [0.0; 12], 3),
        false,
    );
}

/// The row epilogue in registers gives the bits of the GEMM followed by the convolutions'
/// separate pass (`PostOp::apply`), on every path, for every combination of bias, affine and
/// ReLU (absent steps as `−0`, `1`, `−0`), with NaN rows, rows summing to zero, partial tiles
/// and strips, and `k = 0`.
#[test]
fn the_row_epilogue_gives_the_bits_of_the_separate_pass() {
    use crate::ops::conv::PostOp;
    for &(m, k, n) in &[
        (13, 33, 70),
        (7, 0, 5),
        (1, 4, 64),
        (6, 9, 17),
        (8, 147, 130),
        (37, 20, 70),
    ] {
        let k2 = pairs(k);
        let mut a = rand_vec(m * k, 31);
        if m > 2 && k > 0 {
            a[k..2 * k].fill(0.0); // row 1 sums to +0
            a[2 * k] = f32::NAN; // row 2 is NaN
        }
        let b = rand_vec(k * n, 32);
        let mut ap = vec![0; m * k2];
        pairs_into(&a, m, k, &mut ap);
        let bias = rand_vec(m, 33);
        let (scale, shift) = (rand_vec(m, 34), rand_vec(m, 35));
        for &path in &paths() {
            let mut plain = vec![f32::NAN; m * n];
            run(path, (m, k, n), &ap, B::F32(&b, (n, 1)), &mut plain, false);
            for form in 0..8 {
                let (with_bias, affine, relu) = (form & 1 != 0, form & 2 != 0, form & 4 != 0);
                let posts: Vec<PostOp> = (0..m)
                    .map(|i| PostOp {
                        bias: with_bias.then_some(bias[i]),
                        affine: affine.then_some((scale[i], shift[i])),
                        relu,
                        act: None,
                    })
                    .collect();
                let coef: Vec<[f32; 3]> = posts.iter().map(PostOp::row_coef).collect();
                let mut want = plain.clone();
                for (post, row) in posts.iter().zip(want.chunks_exact_mut(n.max(1))) {
                    post.apply(row);
                }
                let mut got = vec![f32::NAN; m * n];
                let g = Gemm {
                    m,
                    k,
                    n,
                    a: &ap,
                    b: B::F32(&b, (n, 1)),
                    lda: k2,
                    ldc: n,
                    accumulate: false,
                    post: Some(RowPost { coef: &coef, relu }),
                };
                gemm_on(path, g, &mut got);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{m}x{k}x{n} on {}, form {form}",
                    path.name()
                );
            }
        }
    }
    take_ran_bf16();
}

/// With `k = 0` the row epilogue sees sums of `+0`: a negative scale and a `−0` shift give
/// `−0`, which ReLU keeps (PyTorch's `x < 0 ? 0 : x`, as `PostOp::apply`), and a bias of 1 with
/// scale −1 gives −1, which ReLU floors; every path.
#[test]
fn the_row_epilogue_of_empty_sums_keeps_the_separate_pass_bits() {
    use crate::ops::conv::PostOp;
    let coef: [[f32; 3]; 3] = [[-0.0, -1.0, -0.0], [1.0, -1.0, -0.0], [2.0, 3.0, 0.5]];
    for relu in [false, true] {
        let mut want = vec![0.0f32; 3 * 4];
        for (row, c) in want.chunks_exact_mut(4).zip(&coef) {
            let bias = (c[0].to_bits() != (-0.0f32).to_bits()).then_some(c[0]);
            PostOp {
                bias,
                affine: Some((c[1], c[2])),
                relu,
                act: None,
            }
            .apply(row);
        }
        for &path in &paths() {
            let mut got = vec![f32::NAN; 3 * 4];
            let g = Gemm {
                m: 3,
                k: 0,
                n: 4,
                a: &[],
                b: B::F32(&[], (4, 1)),
                lda: 0,
                ldc: 4,
                accumulate: false,
                post: Some(RowPost { coef: &coef, relu }),
            };
            gemm_on(path, g, &mut got);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "relu {relu} on {}", path.name());
        }
    }
}

#[test]
#[should_panic(expected = "bf16 gemm row epilogue too short, or with accumulation")]
fn a_row_epilogue_with_accumulation_is_refused() {
    let post = RowPost {
        coef: &[[0.0, 1.0, 0.0]; 4],
        relu: false,
    };
    let g = Gemm {
        m: 4,
        k: 2,
        n: 3,
        a: &[0; 4],
        b: B::F32(&[0.0; 6], (3, 1)),
        lda: 1,
        ldc: 3,
        accumulate: true,
        post: Some(post),
    };
    gemm_on(Bf16Path::Fma(Isa::Baseline), g, &mut [0.0; 12]);
}

#[test]
#[should_panic(expected = "bf16 gemm row epilogue too short, or with accumulation")]
fn a_short_row_epilogue_is_refused() {
    let ap = vec![0; 4];
    let post = RowPost {
        coef: &[[0.0, 1.0, 0.0]; 3],
        relu: false,
    };
    gemm_post(
        4,
        2,
        3,
        &ap,
        B::F32(&[0.0; 6], (3, 1)),
        &mut [0.0; 12],
        post,
    );
}

/// The tile chain by hand is `tdpbf16ps`'s on the values where orders of rounding and flushes
/// show: products and sums below the smallest normal (flushed), cancellations, signed zeros,
/// infinities and NaN, over 1 to 3 blocks of pairs (the AMX path; skipped loudly without it).
#[test]
fn the_tiles_chain_by_hand_is_the_amx_tiles_on_special_values() {
    if !crate::simd::amx_available() {
        eprintln!("SKIPPED: the `amx` bf16 GEMM's special values are not tested: this CPU lacks AMX-BF16 or the permission to use it");
        return;
    }
    let specials = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        3.0e-20,
        -2.0e-20,
        1.0e-19,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE * 1.5,
        1.0e30,
        -3.0e30,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        2.0f32.powi(-8),
        1.0 + 2.0f32.powi(-7),
    ];
    // Near the smallest normal: products below it, and sums that cancel to below it.
    let tiny = [
        3.0e-20,
        -2.0e-20,
        1.0e-19,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE * 1.5,
        1.0,
        -1.0,
        0.0,
    ];
    let mut seed = 7u64;
    let mut pick = |from: &[f32]| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        from[(seed >> 33) as usize % from.len()]
    };
    let finite: Vec<f32> = specials.iter().copied().filter(|x| x.is_finite()).collect();
    for &(m, k, n) in &[(17, 20, 19), (5, 64, 40), (33, 70, 65), (3, 2, 3)] {
        for from in [&tiny[..], &finite, &specials] {
            let a: Vec<f32> = (0..m * k).map(|_| pick(from)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| pick(from)).collect();
            let mut ap = vec![0; m * pairs(k)];
            pairs_into(&a, m, k, &mut ap);
            let mut bp = vec![0; packed_len(k, n)];
            pack_b(k, n, &b, (n, 1), &mut bp);
            let want = chain_gemm(Chain::Tiles, (m, k, n), &ap, &bp);
            let mut c = vec![f32::NAN; m * n];
            run(Bf16Path::Amx, (m, k, n), &ap, B::Packed(&bp), &mut c, false);
            assert_eq!(take_ran_bf16(), vec![Bf16Path::Amx]);
            for (i, (x, y)) in c.iter().zip(&want).enumerate() {
                assert!(
                    x.to_bits() == y.to_bits() || x.is_nan() && y.is_nan(),
                    "{m}x{k}x{n}: c[{i}] = {x:e}, by hand {y:e}"
                );
            }
        }
    }
}
