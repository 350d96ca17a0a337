//! The bf16 GEMM on AMX tiles (`tdpbf16ps`), on the operand layouts of the other paths.
//!
//! A tile holds 16 rows of 64 bytes. A's rows of pairs ([`super::pairs_into`]) are an A tile's
//! rows as they are (16 pairs per row, `lda` pairs apart), and a packed panel of B
//! ([`super::pack_b`]: `k₂` rows of [`NR`] pairs) holds four B tiles side by side in each block
//! of 16 rows (16 columns of pairs each, rows `NR` pairs apart): `tileloadd` reads both where they
//! lie. Only the tiles at an edge are copied, zero-padded, into per-thread buffers: A's last
//! block of rows when `m` is not a multiple of 16 (the rows past `m` may not exist) and the last
//! block of 16 pairs of every A and B tile when `k₂` is not a multiple of 16 (the pairs past
//! `k₂` must be zero on both sides, so that no NaN or infinity of a neighbouring row enters the
//! sum). Columns past `n` need nothing: they reach only columns of C that are not stored.
//!
//! A tile load whose rows do not start on 64-byte cache lines runs several times slower (on
//! Sapphire Rapids 6.5×: one tile per ~16 ns instead of ~2.5 ns, which caps a 2×2 block at a
//! third of the peak; `docs/benchmarks.md`). So the buffers the tiles read start on lines (the
//! scratch, the cached packed weights, the panels: [`crate::store::LINE`]), and an A whose start
//! or row stride is off the lines (a direct convolution's weights, `⌈C·KH·KW/2⌉` pairs a row) is
//! copied whole into tiles, which costs `m·k` against the product's `m·k·n`.
//!
//! C is computed in blocks of 2×2 tiles (32 rows, 32 columns) over the whole `k`: per block of
//! 16 pairs, two A tiles and two B tiles are loaded and four `tdpbf16ps` run, the tiles' own
//! configuration (tiles 0–3: C, 4–5: A, 6–7: B) loaded once per panel. With a single block of
//! pairs (`k₂ ≤ 16`: 1×1 convolutions of 32 channels, small stems) each tile gets one product,
//! so B's two tiles stay loaded while the row tiles go by, and consecutive row tiles alternate
//! between two sets of C and A tiles. A finished tile of a
//! plain product that lies whole inside C is stored straight to C; the others go to a buffer on
//! the stack and to C through AVX-512, where the row epilogue ([`super::RowPost`]) or the
//! accumulation into C is applied, as the other paths do in registers, and only the columns and
//! rows inside C are written.
//!
//! The sums' bits are `tdpbf16ps`'s (the tests' `Chain::Tiles`): per block of 16 pairs the
//! even and the odd products are summed in two chains from zero, then added to the tile. Rust
//! has no stable AMX intrinsics; the instructions are written in `asm!`, which the assembler
//! takes without the target feature.

use core::arch::asm;
use std::cell::Cell;
use std::vec::Vec;

use super::{pairs, Gemm, NR, PANEL};
use crate::simd::{Avx512, Simd};
use crate::store::{to_line, LINE};

/// Pairs of `k` in a tile row (64 bytes).
pub(crate) const KT: usize = 16;
/// Rows of a tile, and f32 columns of a C tile.
pub(crate) const T: usize = 16;
/// `u32` elements of a tile.
const TILE: usize = T * KT;

/// The operand of `ldtilecfg`: palette 1, eight tiles of 16 rows of 64 bytes.
#[repr(C, align(64))]
struct Config([u8; 64]);

/// Tiles 0–3: C (16 rows of 16 f32); 4–5: A (16 rows of 16 pairs); 6–7: B (16 rows of pairs
/// by 16 columns). All have the same shape.
static CONFIG: Config = {
    let mut c = [0u8; 64];
    c[0] = 1; // palette
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // bytes per row (a little-endian u16; 64 fits the low byte)
        c[48 + t] = T as u8; // rows
        t += 1;
    }
    Config(c)
};

/// Four C tiles as the block leaves them, 64-byte aligned for `tilestored`.
#[repr(C, align(64))]
pub(crate) struct CTiles(pub(crate) [[f32; T * T]; 4]);

/// The last block of 16 rows of a panel of B, zero past `k₂`.
#[repr(C, align(64))]
struct BTail([u32; KT * NR]);

thread_local! {
    /// A's edge tiles: per block of rows, the last block of pairs; then every block of pairs of
    /// the last block of rows.
    static EDGE: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
}

/// Where an A or B tile is read: its first element and its row stride in bytes.
#[derive(Clone, Copy)]
pub(crate) struct Src(pub(crate) *const u32, pub(crate) usize);

macro_rules! tile_load {
    ($tmm:literal, $src:expr) => {
        asm!(
            concat!("tileloadd ", $tmm, ", [{p} + {s}*1]"),
            p = in(reg) $src.0,
            s = in(reg) $src.1,
            options(nostack, readonly, preserves_flags)
        )
    };
}

macro_rules! tile_dot {
    ($c:literal, $a:literal, $b:literal) => {
        asm!(
            concat!("tdpbf16ps ", $c, ", ", $a, ", ", $b),
            options(nomem, nostack, preserves_flags)
        )
    };
}

macro_rules! tile_store {
    ($tmm:literal, $dst:expr, $stride:expr) => {
        asm!(
            concat!("tilestored [{p} + {s}*1], ", $tmm),
            p = in(reg) $dst,
            s = in(reg) $stride,
            options(nostack, preserves_flags)
        )
    };
}

/// [`super::gemm_on`]'s product on AMX tiles.
///
/// # Safety
/// [`crate::simd::amx_available`] (AMX-BF16 tiles this process may use, AVX-512 with
/// AVX512_BF16), and `g`'s operands and `c` passed `gemm_on`'s checks, with `m, n, k > 0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(super) unsafe fn gemm_amx(g: Gemm<'_>, c: &mut [f32]) {
    // SAFETY: the caller guarantees AVX-512.
    let s = unsafe { Avx512::new_unchecked() };
    let (m, k2, n) = (g.m, pairs(g.k), g.n);
    let (kb, mb) = (k2.div_ceil(KT), m.div_ceil(T));
    let (ktail, mtail) = (k2 % KT, m % T);

    // A is read in place where its tiles start on cache lines; with its start or its row
    // stride off the lines it is copied whole, tile by tile (a tile load from an address off a
    // line's start costs several times what the copy does).
    let copied = to_line(g.a) != 0 || !g.lda.is_multiple_of(KT);
    // A's copied tiles, from a line's start in the buffer.
    let mut edge = EDGE.take();
    edge.resize(if copied { mb * kb } else { mb + kb } * TILE + LINE - 1, 0);
    let skip = to_line(&edge);
    let (cols_at, rows_at) = (skip, skip + mb * TILE);
    if copied {
        // LOOP over row tiles, then blocks of pairs
        for ib in 0..mb {
            for b in 0..kb {
                let tile = &mut edge[skip + (ib * kb + b) * TILE..][..TILE];
                copy_tile(g.a, g.lda, (ib * T, m), (b * KT, k2), tile);
            }
        }
    } else if ktail != 0 {
        // LOOP over blocks of rows: the last block of pairs
        for ib in 0..mb {
            let tile = &mut edge[cols_at + ib * TILE..][..TILE];
            copy_tile(g.a, g.lda, (ib * T, m), ((kb - 1) * KT, k2), tile);
        }
    }
    if !copied && mtail != 0 {
        // LOOP over blocks of pairs: the last block of rows
        for b in 0..kb {
            let tile = &mut edge[rows_at + b * TILE..][..TILE];
            copy_tile(g.a, g.lda, ((mb - 1) * T, m), (b * KT, k2), tile);
        }
    }
    let edge_ptr = edge.as_ptr();
    // A's tile `(ib, b)`.
    let a_src = |ib: usize, b: usize| -> Src {
        if copied {
            Src(edge_ptr.wrapping_add(skip + (ib * kb + b) * TILE), 64)
        } else if mtail != 0 && ib == mb - 1 {
            Src(edge_ptr.wrapping_add(rows_at + b * TILE), 64)
        } else if ktail != 0 && b == kb - 1 {
            Src(edge_ptr.wrapping_add(cols_at + ib * TILE), 64)
        } else {
            Src(
                g.a.as_ptr().wrapping_add(ib * T * g.lda + b * KT),
                g.lda * 4,
            )
        }
    };

    let mut buf = PANEL.take();
    g.panel_room(&mut buf);
    let mut tail = BTail([0; KT * NR]);
    let mut out = CTiles([[0.0; T * T]; 4]);
    let c_ptr = c.as_mut_ptr();
    let plain = !g.accumulate && g.post.is_none();
    // LOOP over panels of B
    for jp in 0..n.div_ceil(NR) {
        let panel = g.panel(jp, &mut buf);
        if ktail != 0 {
            let last = &panel[(kb - 1) * KT * NR..];
            tail.0[..last.len()].copy_from_slice(last);
            tail.0[last.len()..].fill(0);
        }
        let (panel_ptr, tail_ptr) = (panel.as_ptr(), tail.0.as_ptr());
        // B's tile of columns `q·16..` of the panel, block `b`.
        let b_src = |q: usize, b: usize| -> Src {
            if ktail != 0 && b == kb - 1 {
                Src(tail_ptr.wrapping_add(q * T), NR * 4)
            } else {
                Src(panel_ptr.wrapping_add(b * KT * NR + q * T), NR * 4)
            }
        };
        // SAFETY: the caller's guarantee: the tiles may be used. Configured for each panel
        // because filling or packing it may have run another product.
        unsafe { configure() };
        let j_panel = jp * NR;
        let tiles_n = (n - j_panel).min(NR).div_ceil(T);
        if kb == 1 {
            // One block of pairs: B's two tiles stay loaded while the row tiles go by.
            // LOOP over pairs of column tiles
            for q in (0..tiles_n).step_by(2) {
                let two_cols = q + 1 < tiles_n;
                // LOOP over row tiles, the two sets of C tiles in turn
                for ib in 0..mb {
                    let set = ib % 2;
                    let to_c = |qq: usize| {
                        let whole = (ib + 1) * T <= m && j_panel + (qq + 1) * T <= n;
                        let ok = plain && qq < tiles_n && whole;
                        ok.then(|| c_ptr.wrapping_add(ib * T * g.ldc + j_panel + qq * T))
                    };
                    let dst = [to_c(q), to_c(q + 1)];
                    let [o0, o1, o2, o3] = &mut out.0;
                    let bufs = if set == 0 { [o0, o1] } else { [o2, o3] };
                    // SAFETY: as for the blocks below, with one row tile and `k₂ ≤ 16`; B's
                    // tiles are loaded by the first row tile (`ib == 0`).
                    unsafe {
                        short_row(
                            (ib == 0, set, two_cols),
                            a_src(ib, 0),
                            [b_src(q, 0), b_src(q + 1, 0)],
                            (bufs, dst, g.ldc * 4),
                        );
                    }
                    // LOOP over the two tiles left in the buffers: to C
                    for (j, qq) in [q, q + 1].into_iter().enumerate() {
                        if qq >= tiles_n || dst[j].is_some() {
                            continue;
                        }
                        let tile = &out.0[2 * set + j];
                        let (i0, j0) = (ib * T, j_panel + qq * T);
                        let (rows, cols) = (T.min(m - i0), T.min(n - j0));
                        // SAFETY: as below.
                        unsafe { finish(s, tile, (i0, rows), (j0, cols), c_ptr, &g) };
                    }
                }
            }
            continue;
        }
        // LOOP over blocks of two row tiles
        for ib in (0..mb).step_by(2) {
            let two_rows = ib + 1 < mb;
            // LOOP over blocks of two column tiles
            for q in (0..tiles_n).step_by(2) {
                let two_cols = q + 1 < tiles_n;
                // Whole tiles of a plain product go from the tiles straight to C.
                let to_c = |t: usize| {
                    let (r, qq) = (ib + t / 2, q + t % 2);
                    let whole = (r + 1) * T <= m && j_panel + (qq + 1) * T <= n;
                    let ok = plain && r < mb && qq < tiles_n && whole;
                    ok.then(|| c_ptr.wrapping_add(r * T * g.ldc + j_panel + qq * T))
                };
                let dst = [to_c(0), to_c(1), to_c(2), to_c(3)];
                // SAFETY: every source is inside its operand: A's direct tiles are whole blocks
                // of 16 rows `< m` and 16 pairs `≤ k₂ ≤ lda` (`gemm_on` checked A's length), the
                // edge tiles lie in `edge`; B's are 16 rows `≤ k₂` of the panel (`k₂·NR` pairs)
                // or of `tail`, columns `q·16 + 16 ≤ NR`; `out` holds four tiles; a tile stored
                // straight to C is 16 rows `≤ m` by 16 columns `≤ n` of it (`ldc` apart), which
                // `gemm_on` checked and `c` borrows uniquely. The tiles were configured above.
                unsafe {
                    block(
                        kb,
                        (two_rows, two_cols),
                        |b| [a_src(ib, b), a_src(ib + 1, b)],
                        |b| [b_src(q, b), b_src(q + 1, b)],
                        (&mut out, dst, g.ldc * 4),
                    );
                }
                // LOOP over the block's tiles left in `out`: to C
                for (t, tile) in out.0.iter().enumerate() {
                    let (r, qq) = (ib + t / 2, q + t % 2);
                    if r >= mb || qq >= tiles_n || dst[t].is_some() {
                        continue;
                    }
                    let (i0, j0) = (r * T, j_panel + qq * T);
                    let (rows, cols) = (T.min(m - i0), T.min(n - j0));
                    // SAFETY: rows `i0..i0 + rows ≤ m` of C (`ldc` apart), columns
                    // `j0..j0 + cols ≤ n` lie inside `c` (checked by `gemm_on`), borrowed
                    // uniquely; a row epilogue has `m` rows.
                    unsafe { finish(s, tile, (i0, rows), (j0, cols), c_ptr, &g) };
                }
            }
        }
    }
    // SAFETY: the tiles were configured above, by this function only.
    unsafe { release() };
    PANEL.set(buf);
    EDGE.set(edge);
}

/// Loads [`CONFIG`]: tiles 0–3 C, 4–5 A, 6–7 B, all 16 rows of 64 bytes, zeroed.
///
/// # Safety
/// [`crate::simd::amx_available`].
#[inline(always)]
pub(crate) unsafe fn configure() {
    // SAFETY: `CONFIG` is a valid palette-1 configuration of 64 aligned bytes, and the caller
    // vouches that this process may use the tiles.
    unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
}

/// Returns the tiles to their initial state (the operating system then need not save them).
///
/// # Safety
/// [`crate::simd::amx_available`]; no tile data still needed.
#[inline(always)]
pub(crate) unsafe fn release() {
    // SAFETY: the caller's guarantee.
    unsafe { asm!("tilerelease", options(nomem, nostack, preserves_flags)) };
}

/// Rows `r0..r_end` (at most 16 of them) and pairs `p0..p_end` (at most 16) of A (`lda` pairs
/// apart) into a tile of 16 rows of 16 pairs, zero elsewhere.
fn copy_tile(
    a: &[u32],
    lda: usize,
    (r0, r_end): (usize, usize),
    (p0, p_end): (usize, usize),
    tile: &mut [u32],
) {
    let (rows, len) = ((r_end - r0).min(T), (p_end - p0).min(KT));
    // LOOP over the tile's rows
    for (r, row) in tile.chunks_exact_mut(KT).enumerate() {
        if r < rows {
            let at = (r0 + r) * lda + p0;
            row[..len].copy_from_slice(&a[at..at + len]);
            row[len..].fill(0);
        } else {
            row.fill(0);
        }
    }
}

/// One block of C: tiles 0 (rows 0–15, columns 0–15), 1 (columns 16–31, with `two_cols`),
/// 2 and 3 (rows 16–31, with `two_rows`) summed over `kb` blocks of 16 pairs from A's tiles
/// `a(b)` and B's `b(b)`, then stored: tile `t` to `dst[t]` (16 rows `ldc` bytes apart) where
/// it is given, else to `out`.
///
/// # Safety
/// The tiles are configured with [`CONFIG`]; every source `a(b)` and `b(b)` a block uses
/// (the second ones only with `two_rows` / `two_cols`) is valid for 16 rows of 64 bytes at
/// its stride; every `dst` given for a tile the block computes is valid for 16 rows of 64
/// bytes, `ldc` apart, and borrowed by no one else.
#[inline(always)]
pub(crate) unsafe fn block(
    kb: usize,
    (two_rows, two_cols): (bool, bool),
    a: impl Fn(usize) -> [Src; 2],
    b: impl Fn(usize) -> [Src; 2],
    (out, dst, ldc): (&mut CTiles, [Option<*mut f32>; 4], usize),
) {
    // SAFETY: the caller configured the tiles and vouches for every source read.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nomem, nostack, preserves_flags)
        );
        // LOOP over blocks of 16 pairs
        for blk in 0..kb {
            let [a0, a1] = a(blk);
            let [b0, b1] = b(blk);
            tile_load!("tmm4", a0);
            tile_load!("tmm6", b0);
            tile_dot!("tmm0", "tmm4", "tmm6");
            if two_cols {
                tile_load!("tmm7", b1);
                tile_dot!("tmm1", "tmm4", "tmm7");
            }
            if two_rows {
                tile_load!("tmm5", a1);
                tile_dot!("tmm2", "tmm5", "tmm6");
                if two_cols {
                    tile_dot!("tmm3", "tmm5", "tmm7");
                }
            }
        }
        let o = &mut out.0;
        let at = |t: usize, o: &mut [f32; T * T]| match dst[t] {
            Some(p) => (p, ldc),
            None => (o.as_mut_ptr(), 64),
        };
        let (p, s) = at(0, &mut o[0]);
        tile_store!("tmm0", p, s);
        if two_cols {
            let (p, s) = at(1, &mut o[1]);
            tile_store!("tmm1", p, s);
        }
        if two_rows {
            let (p, s) = at(2, &mut o[2]);
            tile_store!("tmm2", p, s);
            if two_cols {
                let (p, s) = at(3, &mut o[3]);
                tile_store!("tmm3", p, s);
            }
        }
    }
}

/// One row tile of C by two column tiles over a single block of pairs (`k₂ ≤ 16`): B's tiles
/// in registers 6 and 7 (loaded when `load_b`, else kept from the last call), A's in 4 or 5
/// and C's in 0–1 or 2–3 (`set` 0 or 1, alternating row by row so that a row's products need
/// not wait for the last row's stores); stored to `dst[j]` where given, else to `bufs[j]`.
///
/// # Safety
/// The tiles are configured; `a`, and `b` (the second only with `two_cols`) when loaded, are
/// valid for 16 rows of 64 bytes at their stride; every `dst` given is valid for 16 rows of 64
/// bytes `ldc` apart and borrowed by no one else.
#[inline(always)]
unsafe fn short_row(
    (load_b, set, two_cols): (bool, usize, bool),
    a: Src,
    [b0, b1]: [Src; 2],
    (bufs, dst, ldc): ([&mut [f32; T * T]; 2], [Option<*mut f32>; 2], usize),
) {
    let [o0, o1] = bufs;
    let at = |j: usize, o: &mut [f32; T * T]| match dst[j] {
        Some(p) => (p, ldc),
        None => (o.as_mut_ptr(), 64),
    };
    // SAFETY: the caller configured the tiles and vouches for every source and destination.
    unsafe {
        if load_b {
            tile_load!("tmm6", b0);
            if two_cols {
                tile_load!("tmm7", b1);
            }
        }
        // One set's row: C tiles `$c0`, `$c1` from A tile `$a` by B's tiles 6 and 7.
        macro_rules! row {
            ($c0:literal, $c1:literal, $a:literal) => {{
                asm!(
                    concat!("tilezero ", $c0),
                    concat!("tilezero ", $c1),
                    options(nomem, nostack, preserves_flags)
                );
                tile_load!($a, a);
                tile_dot!($c0, $a, "tmm6");
                let (p, s) = at(0, o0);
                tile_store!($c0, p, s);
                if two_cols {
                    tile_dot!($c1, $a, "tmm7");
                    let (p, s) = at(1, o1);
                    tile_store!($c1, p, s);
                }
            }};
        }
        if set == 0 {
            row!("tmm0", "tmm1", "tmm4");
        } else {
            row!("tmm2", "tmm3", "tmm5");
        }
    }
}

/// A finished tile of sums into C's rows `i0..i0 + rows`, columns `j0..j0 + cols`: added to C
/// when the product accumulates, through the row epilogue when it has one (the steps and order
/// of the other paths' tiles), else as they are.
///
/// # Safety
/// Those rows and columns of C (`g.ldc` apart from `c`) are valid and borrowed by no one else;
/// a row epilogue has a triple for each of the rows.
#[inline(always)]
unsafe fn finish(
    s: Avx512,
    tile: &[f32; T * T],
    (i0, rows): (usize, usize),
    (j0, cols): (usize, usize),
    c: *mut f32,
    g: &Gemm<'_>,
) {
    let whole = cols == T;
    let mask = s.lanes(0, cols);
    // LOOP over the tile's rows
    for r in 0..rows {
        // SAFETY: `tile` holds 16 rows of 16 floats.
        let mut x = unsafe { s.load(tile.as_ptr().add(r * T)) };
        let at = c.wrapping_add((i0 + r) * g.ldc + j0);
        if g.accumulate {
            // SAFETY: the caller's: `cols` columns from `at` are C's.
            let old = unsafe {
                if whole {
                    s.load(at)
                } else {
                    s.load_masked(at, mask)
                }
            };
            x = s.add(old, x);
        }
        if let Some(post) = g.post {
            let [add, scale, shift] = post.coef[i0 + r];
            let (add, scale, shift) = (s.splat(&add), s.splat(&scale), s.splat(&shift));
            let y = s.add(s.mul(s.add(x, add), scale), shift);
            x = if post.relu { s.max(s.zero(), y) } else { y };
        }
        // SAFETY: as above.
        unsafe {
            if whole {
                s.store(at, x);
            } else {
                s.store_first(at, x, cols);
            }
        }
    }
}
