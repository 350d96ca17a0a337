//! Peak memory of `forward_batch` on the vgg benchmark network, for a batch of N images given on
//! the command line (default 64). Prints the input, output and weight sizes and the most heap
//! the call held at once; run it under `/usr/bin/time -v` for the peak RSS:
//!
//! ```text
//! cargo build --release --bin memory
//! /usr/bin/time -v target/release/memory 4096
//! ```
//!
//! (`target/` is `$CARGO_TARGET_DIR` if set.) Figures are in docs/reliability.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use cnn::ndarray::Array4;
use cnn::Model;
use cnn_bench::Vgg;

/// Live heap bytes and their peak, over every thread.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(size: usize) {
    let live = LIVE.fetch_add(size, Relaxed) + size;
    PEAK.fetch_max(live, Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counters
// are atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: forwarded contract of `GlobalAlloc::alloc`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: forwarded contract of `GlobalAlloc::alloc_zeroed`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: forwarded contract of `GlobalAlloc::dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grow(new_size);
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: forwarded contract of `GlobalAlloc::realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const MB: f64 = 1024.0 * 1024.0;

fn main() {
    let n: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().expect("usage: memory [N]"),
        None => 64,
    };
    let net = Vgg::seeded(0);
    let weights = LIVE.load(Relaxed);
    let x = Array4::from_shape_fn((n, 3, 32, 32), |(i, c, y, x)| {
        ((i * 131 + c * 31 + y * 7 + x) % 255) as f32 / 127.5 - 1.0
    });
    let input = n * 3 * 32 * 32 * 4;
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let out = net
        .forward_batch(x.view())
        .expect("the input has the declared shape");
    let held = PEAK.load(Relaxed) - before;
    let output = out.len() * 4;
    let checksum: f64 = out.iter().map(|&v| v as f64).sum();
    println!(
        "N = {n}, {} threads: input {:.2} MiB, output {:.3} MiB, weights {:.2} MiB",
        cnn::num_threads(),
        input as f64 / MB,
        output as f64 / MB,
        weights as f64 / MB
    );
    println!(
        "forward_batch held at most {:.2} MiB of heap beyond the input: the output and {:.2} MiB \
         of working buffers; checksum {checksum:.6}",
        held as f64 / MB,
        held.saturating_sub(output) as f64 / MB
    );
}
