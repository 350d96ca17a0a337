//! `Model::from_safetensors` on arbitrary bytes: never a panic, an abort or an allocation out of
//! proportion to the file; a file it accepts round-trips through `to_safetensors`.
//!
//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run load_weights fuzz/corpus/load_weights fuzz/seeds/load_weights`
//! (see docs/reliability.md).

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use cnn::{cnn, Model};
use libfuzzer_sys::fuzz_target;

cnn! {
    /// Every kind of key: conv weight and bias, the five batch-norm entries, linear weight and bias.
    struct Small {
        input(2, 4, 4)
        conv(2 -> 3, k3) bn relu fc(2)
    }
}

/// Live bytes and their peak since the last reset (libFuzzer runs inputs on one thread).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static WORST: AtomicUsize = AtomicUsize::new(0);

fn grow(size: usize) {
    let live = LIVE.fetch_add(size, Relaxed) + size;
    PEAK.fetch_max(live, Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counters
// are plain atomics and never allocate.
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
        // Old and new blocks may both exist while the data moves.
        grow(new_size);
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: forwarded contract of `GlobalAlloc::realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The bound `tests/test_hostile_weights.rs` asserts, see docs/reliability.md.
fn bound(len: usize) -> usize {
    64 * len + 64 * 1024
}

fuzz_target!(|data: &[u8]| {
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let loaded = Small::from_safetensors(data);
    let peak = PEAK.load(Relaxed) - before;
    assert!(
        peak <= bound(data.len()),
        "peak {peak} bytes for a file of {} bytes",
        data.len()
    );
    // The peak per byte of file, in hundredths, reported when a new worst is seen; files under
    // 256 bytes are left out, where the fixed cost of the key table dominates.
    let ratio = peak * 100 / data.len().max(1);
    if data.len() >= 256 && ratio > WORST.fetch_max(ratio, Relaxed) {
        eprintln!(
            "new worst: peak {peak} bytes for a file of {} bytes",
            data.len()
        );
    }
    if let Ok(net) = loaded {
        let saved = net.to_safetensors();
        let again = Small::from_safetensors(&saved).expect("a saved file loads");
        assert_eq!(again.to_safetensors(), saved);
    }
});
