//! Steady state allocates nothing: after its first call, `forward_into` with a `Workspace`
//! makes zero heap allocations, counted by a global allocator wrapper.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cnn::ndarray::{Array2, Array4};
use cnn::{cnn, Model, Workspace};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to `System` with the same arguments; the wrapper only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `System` with `layout`, as the caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

cnn! {
    /// im2col + GEMM, Winograd, depthwise, fused batch norm, pooling, a 1x1 conv and fc.
    struct Mixed {
        input(3, 16, 16)
        conv(3 -> 16, k3, s2, p1) bn relu conv(16 -> 16, k3, p1) bn relu
        conv(16 -> 16, k3, p1, g16) relu maxpool(2) conv(16 -> 32, k1) gap fc(10)
    }
}

#[test]
fn forward_into_allocates_nothing_after_the_first_call() {
    let net = Mixed::seeded(7);
    let x = Array4::from_shape_fn((11, 3, 16, 16), |(n, c, h, w)| {
        ((n + c * 3 + h * 5 + w * 7) % 13) as f32 / 6.0 - 1.0
    });
    let mut out = Array2::<f32>::zeros((11, 10));
    let mut ws = Workspace::new(Mixed::WORKSPACE);
    net.forward_into(x.view(), out.view_mut(), &mut ws).unwrap();
    let first = out.clone();

    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        net.forward_into(x.view(), out.view_mut(), &mut ws).unwrap();
    }
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "allocations in steady state"
    );
    assert_eq!(out, first);
    assert_eq!(out, net.forward_batch(x.view()).unwrap());
}
