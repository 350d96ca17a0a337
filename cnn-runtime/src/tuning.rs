//! Every tuning threshold of the runtime: when work is split over threads, how a batch is
//! chunked, and which convolution algorithm and Winograd tile a layer gets. The values were
//! measured on the benchmark machines named next to them; the kernels' own register and cache
//! block sizes stay with the kernels (`gemm::x86`, `ops::conv::direct::R`).

// ---- Batches (`exec.rs`) ----

/// Samples one worker pushes through the network at a time: large enough for efficient GEMMs,
/// small enough that the activations of the widest layer stay in cache-sized buffers and memory
/// does not grow with the batch.
pub(crate) const CHUNK: usize = 8;

/// Multiply-accumulates of a single-chunk call below which `run_batch` stays on the calling
/// thread rather than hand the chunk to the worker pool. Measured: `mobile` (5.5 M) at batch 1
/// took 0.23 ms through the pool against 0.18 ms on the caller; `vgg` (150 M) gains from it.
pub(crate) const POOL_MIN_MACS: usize = 20_000_000;

/// Input elements below which a pooling layer stays on one thread (output elements, for an
/// upsampling).
pub(crate) const POOL_MIN_SPLIT: usize = 1 << 17;

// ---- Splitting one convolution over threads ----

/// Multiply-accumulates below which a thread costs more than it saves, for the im2col and
/// transposed (per group) and Winograd (per sample) convolutions.
pub(crate) const MIN_MACS_PER_SPLIT: usize = 4 << 20;

/// Output channels (per group) below which an im2col or transposed convolution is not split
/// across threads.
pub(crate) const MIN_ROWS_PER_THREAD: usize = 8;

/// Multiply-accumulates below which a direct convolution stays on one thread: its blocks of 8
/// channels are cheaper to hand out than the im2col GEMM's rows.
pub(crate) const DIRECT_MIN_MACS_PER_SPLIT: usize = 1 << 20;
/// Multiply-accumulates (of the whole batch) below which a depthwise convolution stays on one
/// thread. Its planes are independent and cheap to hand out, as the direct kernel's blocks.
pub(crate) const DEPTHWISE_MIN_MACS_PER_SPLIT: usize = 1 << 18;

// ---- Choice of algorithm (`ops::conv::Conv2dParams::algorithm`) ----

/// Most input channels the direct kernel takes: beyond that im2col + GEMM (or Winograd) has
/// enough work per im2col element.
pub(crate) const DIRECT_MAX_C_IN: usize = 8;

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

/// Bytes of transformed input and products per block of tile rows: about half of L2.
pub(crate) const WINOGRAD_BLOCK_BYTES: usize = 512 << 10;

/// Tiles a block has at least (when the sample has them), however wide the channels: fewer
/// rows make the GEMMs too short to pay for streaming their B operands.
pub(crate) const WINOGRAD_MIN_BLOCK_TILES: usize = 48;

/// Tiles below which a block is too short a GEMM for a thread of its own.
pub(crate) const WINOGRAD_MIN_TILES_PER_BLOCK: usize = 32;
