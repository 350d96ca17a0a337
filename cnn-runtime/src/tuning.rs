//! Every tuning threshold of the runtime: when work is split over threads, how a batch is
//! chunked, and which convolution algorithm and Winograd tile a layer gets. The values were
//! measured on the benchmark machines named next to them; the blocks that must fit a cache
//! are functions of the cache sizes CPUID reports ([`crate::cache`]), and the kernels' own
//! register blocks stay with the kernels (`gemm::x86`, `ops::conv::direct::R`).

// ---- Batches (`exec.rs`) ----

/// Samples one worker pushes through the network at a time: large enough for efficient GEMMs,
/// small enough that the activations of the widest layer stay in cache-sized buffers and memory
/// does not grow with the batch.
pub(crate) const CHUNK: usize = 8;

/// Samples per chunk for a network whose largest activation holds `activation` floats per
/// sample, on a CPU with a level-2 cache of `l2` bytes: as many as keep two activations of that
/// size for the whole chunk (a layer's input and output) within L2, from 1 to [`CHUNK`].
/// Measured on Zen 4 (1 MiB L2), batch 64, one thread, with one activation as the rule then:
/// stem224 (3.2 MB per sample) in bf16 265 → 226 ms with one sample per chunk instead of 8 (its
/// layers' outputs stop streaming through L3), f32 unchanged; tiny and lenet5 (tens of KiB per
/// sample) 5–15% slower with fewer than 8 (their classifiers' GEMMs get short). On Sapphire
/// Rapids (2 MiB L2, 2026-12-06), input and output: mobile (256 KiB per sample, 8 → 4 samples)
/// f32 5.4–5.5 → 4.8–4.9 ms, bf16 4.6 → 3.3 ms (its 1×1 and depthwise layers are bound by the
/// traffic of their activations); vgg (the same size) unchanged in both precisions at 4, 5–7%
/// slower at 2.
pub(crate) const fn chunk_samples(activation: usize, l2: usize) -> usize {
    // Input and output, four bytes a value.
    let bytes = activation.saturating_mul(8);
    if bytes == 0 {
        return CHUNK;
    }
    let fit = l2 / bytes;
    if fit < 1 {
        1
    } else if fit > CHUNK {
        CHUNK
    } else {
        fit
    }
}

/// Multiply-accumulates of a batch on the calling thread (a single chunk) from which
/// spare threads spin as helpers that its layers share out to (`threads::keep_warm`). Below,
/// splitting the layers costs more than it saves: each split layer leaves half its output in
/// the other core's cache for the next layer to fetch. Measured on Sapphire Rapids
/// (2026-12-06, two threads, batch 1): mobile (5.5 M) took 0.081 ms in f32 and 0.075 ms in bf16
/// with its layers split (from 2 M, as before), 0.074 and 0.048 ms on the calling thread alone;
/// vgg (150 M) gains from the split (1.04 → 0.64 ms in f32).
pub(crate) const WARM_MIN_MACS: usize = 6_000_000;

/// Input elements below which a pooling layer stays on one thread (output elements, for an
/// upsampling).
pub(crate) const POOL_MIN_SPLIT: usize = 1 << 17;

// ---- Splitting one convolution over threads ----

/// Multiply-accumulates below which a thread costs more than it saves, for the im2col and
/// transposed (per group) and Winograd (per sample) convolutions. 4 M before the spinning
/// helpers (`threads::keep_warm`): with them, mobile's 1×1 convolutions at batch 1 (2.1 M,
/// about 20 µs) gain from two threads.
pub(crate) const MIN_MACS_PER_SPLIT: usize = 1 << 20;

/// Output channels (per group) below which an im2col or transposed convolution is not split
/// across threads.
pub(crate) const MIN_ROWS_PER_THREAD: usize = 8;

/// Threads an im2col or transposed convolution's `rows` output channels (per group) go to:
/// at most `threads`, each with at least [`MIN_ROWS_PER_THREAD`] rows, at least one.
pub(crate) const fn row_parts(threads: usize, rows: usize) -> usize {
    let most = rows / MIN_ROWS_PER_THREAD;
    let parts = if threads < most { threads } else { most };
    if parts == 0 {
        1
    } else {
        parts
    }
}

/// Whether an im2col or transposed convolution of `macs` multiply-accumulates (per sample and
/// group) splits over `parts` threads (from [`row_parts`]): with two or more, from
/// [`MIN_MACS_PER_SPLIT`]. The values do not depend on it.
pub(crate) const fn splits(parts: usize, macs: usize) -> bool {
    parts > 1 && macs >= MIN_MACS_PER_SPLIT
}

/// Multiply-accumulates below which a direct convolution stays on one thread: its blocks of 8
/// channels are cheaper to hand out than the im2col GEMM's rows (mobile's 0.9 M stem splits).
pub(crate) const DIRECT_MIN_MACS_PER_SPLIT: usize = 1 << 19;
/// Multiply-accumulates (of the whole batch) below which a depthwise convolution stays on one
/// thread. Its planes are independent and cheap to hand out, as the direct kernel's blocks.
pub(crate) const DEPTHWISE_MIN_MACS_PER_SPLIT: usize = 1 << 17;

// ---- Choice of algorithm (`ops::conv::Conv2dParams::algorithm`) ----

/// Most input channels the direct kernel takes: beyond that im2col + GEMM (or Winograd) has
/// enough work per im2col element.
pub(crate) const DIRECT_MAX_C_IN: usize = 8;

/// Fewest taps (`C·KH·KW`) for which a direct convolution multiplies in bf16 (through the bf16
/// GEMM, its taps gathered per panel) rather than staying f32: a short `k` leaves the GEMM
/// little work per store. Measured on Zen 4 (2026-12-05, batch 64): stem224's 7×7 stem (147
/// taps) went from 44% to 34% of the network's bf16 time (GEMM and gathering); a 3×3 RGB stem
/// (27 taps) was slower in bf16 (vgg's from 4.4% to about 7%) until the epilogue moved into the
/// GEMM's registers (`bf16::RowPost`) and rounding to `vcvtneps2bf16`: since then mobile's
/// 3→32 stem in bf16 takes mobile from 6.73–7.04 to 6.50–6.68 ms (batch 64) and 0.102–0.104 to
/// 0.098–0.101 ms (batch 1), vgg's 3→64 43.7–44.2 to 43.2–44.7 ms.
pub(crate) const DIRECT_BF16_MIN_TAPS: usize = 27;

/// Fewest output channels (the bf16 GEMM's rows) for which a direct convolution multiplies in
/// bf16: with fewer, each panel of gathered taps serves too few rows. Measured on Zen 4
/// (2026-12-05, batch 64, one thread): lenet5's second convolution (150 taps to 16 channels
/// on 10×10) took lenet5 in bf16 from 0.81 ms (f32 direct) to 1.17 ms.
pub(crate) const DIRECT_BF16_MIN_C_OUT: usize = 32;

/// Fewest input and output channels for Winograd: below, the transforms cost more than the
/// multiplications they save.
pub(crate) const WINOGRAD_MIN_CHANNELS: usize = 16;

/// Fewest outputs on each side for Winograd.
pub(crate) const WINOGRAD_MIN_SIDE: usize = 4;

// ---- Winograd (`ops::conv::winograd`) ----

/// Output sides from which a layer uses F(4×4, 3×3) rather than F(2×2, 3×3).
pub(crate) const WINOGRAD_F4_MIN_SIDE: usize = 12;

/// The Winograd output tile side m for an output of `[OH, OW]`: 4 when both sides are at
/// least [`WINOGRAD_F4_MIN_SIDE`] (4× fewer multiplications than direct), else 2 (2.25×, but
/// less waste at the edges of small maps).
pub(crate) const fn winograd_out_tile(out_hw: [usize; 2]) -> usize {
    if out_hw[0] >= WINOGRAD_F4_MIN_SIDE && out_hw[1] >= WINOGRAD_F4_MIN_SIDE {
        4
    } else {
        2
    }
}

/// Bytes of transformed input and products per block of tile rows, for a level-2 cache of
/// `l2` bytes ([`crate::cache::caches`]): half of it (512 KiB on Zen 4's 1 MiB, measured
/// there against a quarter and three quarters), within 128 KiB to 4 MiB.
pub(crate) const fn winograd_block_bytes(l2: usize) -> usize {
    let half = l2 / 2;
    if half < 128 << 10 {
        128 << 10
    } else if half > 4 << 20 {
        4 << 20
    } else {
        half
    }
}

/// Columns of B the f32 GEMM packs at once (a multiple of `nr`), for a level-2 cache of `l2`
/// bytes and blocks of `kc` steps: the packed `kc × nc` block takes half of L2 (512 columns of
/// 256 steps on Zen 4's 1 MiB), between 2 and 64 micro-panels.
pub(crate) const fn gemm_nc(l2: usize, kc: usize, nr: usize) -> usize {
    let fit = l2 / 2 / (kc * 4) / nr * nr;
    if fit < 2 * nr {
        2 * nr
    } else if fit > 64 * nr {
        64 * nr
    } else {
        fit
    }
}

/// Tiles a block has at least (when the sample has them), however wide the channels: fewer
/// rows make the GEMMs too short to pay for streaming their B operands.
pub(crate) const WINOGRAD_MIN_BLOCK_TILES: usize = 48;

/// Tiles below which a block is too short a GEMM for a thread of its own.
pub(crate) const WINOGRAD_MIN_TILES_PER_BLOCK: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks by hand for a 1 MiB L2: stem224's 3.2 MB activations one sample at a time,
    /// vgg's and mobile's 256 KiB two, tiny's 64 KiB and anything smaller eight; with 2 MiB
    /// (Sapphire Rapids) and 4 MiB, four and eight of 256 KiB; nothing overflows.
    #[test]
    fn chunks_keep_an_input_and_an_output_of_the_chunk_in_l2() {
        let l2 = 1 << 20;
        assert_eq!(chunk_samples(64 * 112 * 112, l2), 1);
        assert_eq!(chunk_samples(64 * 32 * 32, l2), 2);
        assert_eq!(chunk_samples(64 * 32 * 32 + 1, l2), 1);
        assert_eq!(chunk_samples(32 * 32 * 32, l2), 4);
        assert_eq!(chunk_samples(16 * 32 * 32, l2), CHUNK);
        assert_eq!(chunk_samples(16 * 32 * 32 + 1, l2), CHUNK - 1);
        assert_eq!(chunk_samples(1, l2), CHUNK);
        assert_eq!(chunk_samples(0, l2), CHUNK);
        assert_eq!(chunk_samples(usize::MAX, l2), 1);
        assert_eq!(chunk_samples(usize::MAX / 5, l2), 1);
        assert_eq!(chunk_samples(64 * 32 * 32, 2 << 20), 4);
        assert_eq!(chunk_samples(64 * 32 * 32, 4 << 20), CHUNK);
    }

    #[test]
    fn convolutions_split_from_two_parts_and_enough_work() {
        assert!(splits(2, MIN_MACS_PER_SPLIT));
        assert!(splits(8, usize::MAX));
        assert!(!splits(2, MIN_MACS_PER_SPLIT - 1));
        assert!(!splits(1, usize::MAX));
        assert!(!splits(0, usize::MAX));
    }

    #[test]
    fn each_thread_gets_at_least_its_rows() {
        for (threads, rows, want) in [
            (4, 100, 4),
            (4, 20, 2),
            (2, 16, 2),
            (2, 15, 1),
            (3, 7, 1),
            (1, 64, 1),
            (0, 64, 1),
            (8, 0, 1),
        ] {
            let parts = row_parts(threads, rows);
            assert_eq!(parts, want, "{threads} threads, {rows} rows");
            assert!(parts == 1 || parts * MIN_ROWS_PER_THREAD <= rows);
        }
    }

    /// The cache-sized blocks over the L2 sizes of the machines seen (Ice Lake client's
    /// 512 KiB, Zen 4's 1 MiB, Ice Lake server's 1.25 MiB, Sapphire Rapids' 2 MiB) and past
    /// both ends: half of L2 where that is in range, the bounds elsewhere; the GEMM's block
    /// whole micro-panels that fit.
    #[test]
    fn cache_blocks_take_half_of_l2_within_their_bounds() {
        const KIB: usize = 1 << 10;
        for (l2, winograd) in [
            (64 * KIB, 128 * KIB),
            (512 * KIB, 256 * KIB),
            (1024 * KIB, 512 * KIB),
            (1280 * KIB, 640 * KIB),
            (2048 * KIB, 1024 * KIB),
            (32 << 20, 4 << 20),
        ] {
            assert_eq!(winograd_block_bytes(l2), winograd, "L2 {l2}");
            for (kc, nr) in [(256, 64), (256, 16), (100, 24)] {
                let nc = gemm_nc(l2, kc, nr);
                assert_eq!(nc % nr, 0, "L2 {l2}, nr {nr}: whole panels");
                assert!((2 * nr..=64 * nr).contains(&nc), "L2 {l2}, nr {nr}: {nc}");
                let fits = |cols: usize| kc * cols * 4 <= l2 / 2;
                assert!(nc == 2 * nr || fits(nc), "L2 {l2}, nr {nr}: {nc} too wide");
                assert!(
                    nc == 64 * nr || !fits(nc + nr),
                    "L2 {l2}, nr {nr}: {nc} too narrow"
                );
            }
        }
        // Zen 4, where the constants these replace were measured: unchanged.
        assert_eq!(gemm_nc(1 << 20, 256, 64), 512);
        assert_eq!(gemm_nc(1 << 20, 256, 16), 512);
    }
}
