//! Steady state allocates nothing: after its first call, `forward_into` with a `Workspace`
//! makes zero heap allocations, and so does a training step (`train_step`) once a first one
//! has run, counted by a global allocator wrapper.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cnn::ndarray::{Array2, Array4};
use cnn::{cnn, Loss, Model, Train, Workspace};

struct Counting;

thread_local! {
    /// Whether this thread's allocations are being counted, and how many there were: per
    /// thread, so that the test harness's own allocations (its "running for over 60 seconds"
    /// notice, say) never land in a count. The code measured runs on the calling thread.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

/// Counts one allocation if this thread is counting.
fn count() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
    }
}

/// Starts counting this thread's allocations from zero.
fn start_counting() {
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
}

/// Stops counting; returns how many allocations there were.
fn stop_counting() -> usize {
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every call forwards to `System` with the same arguments; the wrapper only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` came from `System` with `layout`, as the caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is global: each test holds this lock from its first line, so that one test's
/// allocations (building a network, say) never land in another's count.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

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
    let _turn = serial();
    let net = Mixed::seeded(7);
    let x = Array4::from_shape_fn((11, 3, 16, 16), |(n, c, h, w)| {
        ((n + c * 3 + h * 5 + w * 7) % 13) as f32 / 6.0 - 1.0
    });
    let mut out = Array2::<f32>::zeros((11, 10));
    let mut ws = Workspace::new(Mixed::WORKSPACE);
    net.forward_into(x.view(), out.view_mut(), &mut ws).unwrap();
    let first = out.clone();

    start_counting();
    for _ in 0..3 {
        net.forward_into(x.view(), out.view_mut(), &mut ws).unwrap();
    }
    let allocations = stop_counting();
    assert_eq!(allocations, 0, "allocations in steady state");
    assert_eq!(out, first);
    assert_eq!(out, net.forward_batch(x.view()).unwrap());
}

cnn! {
    /// torchvision's ResNet-18: residual blocks with identity and projection shortcuts.
    struct Resnet18 {
        input(3, 224, 224)
        conv(3 -> 64, k7, s2, p3, nobias) bn relu maxpool(k3, s2, p1)
        residual { conv(64 -> 64, k3, p1, nobias) bn relu conv(64 -> 64, k3, p1, nobias) bn } relu
        residual { conv(64 -> 64, k3, p1, nobias) bn relu conv(64 -> 64, k3, p1, nobias) bn } relu
        residual(shortcut { conv(64 -> 128, k1, s2, nobias) bn }) {
            conv(64 -> 128, k3, s2, p1, nobias) bn relu conv(128 -> 128, k3, p1, nobias) bn
        } relu
        residual { conv(128 -> 128, k3, p1, nobias) bn relu conv(128 -> 128, k3, p1, nobias) bn } relu
        residual(shortcut { conv(128 -> 256, k1, s2, nobias) bn }) {
            conv(128 -> 256, k3, s2, p1, nobias) bn relu conv(256 -> 256, k3, p1, nobias) bn
        } relu
        residual { conv(256 -> 256, k3, p1, nobias) bn relu conv(256 -> 256, k3, p1, nobias) bn } relu
        residual(shortcut { conv(256 -> 512, k1, s2, nobias) bn }) {
            conv(256 -> 512, k3, s2, p1, nobias) bn relu conv(512 -> 512, k3, p1, nobias) bn
        } relu
        residual { conv(512 -> 512, k3, p1, nobias) bn relu conv(512 -> 512, k3, p1, nobias) bn } relu
        gap fc(1000)
    }

    /// Concat blocks nested three deep (a small U-Net with an Inception-style level), residuals
    /// inside branches, a transposed convolution and both upsampling modes.
    struct Branchy {
        input(3, 16, 16)
        conv(3 -> 4, k3, p1) relu
        concat {
            branch {}
            branch {
                maxpool(2) conv(4 -> 8, k3, p1) relu
                concat {
                    branch { conv(8 -> 4, k1) }
                    branch { residual { conv(8 -> 8, k3, p1) bn relu conv(8 -> 8, k1) } relu }
                    branch { maxpool(2) convtranspose(8 -> 4, k2, s2) }
                    branch {}
                }
                upsample(2)
            }
            branch { maxpool(4) upsample(scale_factor=4, mode=bilinear) }
        }
        conv(32 -> 2, k1)
    }
}

/// Runs `net` twice into one workspace, then counts the allocations of two more runs, and
/// checks that the workspace never grew past `M::WORKSPACE_BYTES`.
fn steady_state_allocates_nothing<M: Model>(
    net: &M,
    x: Array4<f32>,
    out_dims: cnn::ndarray::IxDyn,
) {
    let mut out = cnn::ndarray::ArrayD::<f32>::zeros(out_dims)
        .into_dimensionality::<M::Dim>()
        .unwrap();
    let mut ws = Workspace::new(M::WORKSPACE);
    let reserved = ws.capacity_bytes();
    assert_eq!(reserved, M::WORKSPACE_BYTES, "{}: reserved", M::NAME);
    net.forward_into(x.view(), out.view_mut(), &mut ws).unwrap();
    let first = out.clone();
    start_counting();
    for _ in 0..2 {
        net.forward_into(x.view(), out.view_mut(), &mut ws).unwrap();
    }
    let allocations = stop_counting();
    assert_eq!(allocations, 0, "{}: allocations", M::NAME);
    // The plan's sizes were enough: no buffer grew on any run.
    assert_eq!(ws.capacity_bytes(), reserved, "{}: workspace grew", M::NAME);
    assert_eq!(out, first);
    assert_eq!(
        out.into_dyn(),
        net.forward_batch(x.view()).unwrap().into_dyn()
    );
}

#[test]
fn resnet18_allocates_nothing_after_the_first_call() {
    let _turn = serial();
    let x = Array4::from_shape_fn((1, 3, 224, 224), |(_, c, h, w)| {
        ((c * 3 + h * 5 + w * 7) % 13) as f32 / 6.0 - 1.0
    });
    steady_state_allocates_nothing(&Resnet18::seeded(3), x, cnn::ndarray::IxDyn(&[1, 1000]));
}

#[test]
fn nested_branches_allocate_nothing_after_the_first_call() {
    let _turn = serial();
    // 11 samples: a full chunk of 8, then 3.
    let x = Array4::from_shape_fn((11, 3, 16, 16), |(n, c, h, w)| {
        ((n + c * 3 + h * 5 + w * 7) % 13) as f32 / 6.0 - 1.0
    });
    steady_state_allocates_nothing(
        &Branchy::seeded(5),
        x,
        cnn::ndarray::IxDyn(&[11, 2, 16, 16]),
    );
}

cnn! {
    /// A classifier with every kind of layer a training step runs: Winograd, direct and
    /// depthwise convolutions (whose kernel-layout weights are redone after each update), batch
    /// norm, a residual with a shortcut, a concat with an identity branch, a transposed
    /// convolution, upsampling, dropout and fc.
    struct TrainMix {
        input(3, 16, 16)
        conv(3 -> 16, k3, p1) bn relu conv(16 -> 16, k3, p1, g16) relu6
        residual(shortcut { conv(16 -> 24, k1, s2) bn }) {
            conv(16 -> 24, k3, s2, p1) bn relu conv(24 -> 24, k3, p1) bn
        } relu
        concat {
            branch {}
            branch { maxpool(2) convtranspose(24 -> 8, k2, s2) }
            branch { avgpool(2) upsample(scale_factor=2, mode=bilinear) }
        }
        conv(56 -> 32, k5, p2) silu gap dropout(0.3) fc(10)
    }
}

/// `train_step` with `opt`, twice to warm up, then twice counted.
fn training_allocates_nothing<O: cnn::optim::Optimizer>(mut opt: O, what: &str) {
    let mut net = TrainMix::seeded(11);
    let x = Array4::from_shape_fn((6, 3, 16, 16), |(n, c, h, w)| {
        ((n * 5 + c * 3 + h * 5 + w * 7) % 13) as f32 / 6.0 - 1.0
    });
    let y = cnn::ndarray::Array1::from(vec![0, 3, 9, 1, 1, 7]);
    for _ in 0..2 {
        net.train_step(x.view(), y.view(), Loss::CrossEntropy, &mut opt)
            .unwrap();
    }
    start_counting();
    let mut losses = [0.0; 2];
    for l in &mut losses {
        *l = net
            .train_step(x.view(), y.view(), Loss::CrossEntropy, &mut opt)
            .unwrap();
    }
    assert_eq!(stop_counting(), 0, "{what}: allocations");
    assert!(losses.iter().all(|l| l.is_finite()), "{what}: {losses:?}");
    // The buffers are exactly the compile-time layout's size for this batch.
    assert_eq!(
        net.train_buffer_bytes(),
        TrainMix::TRAIN_LAYOUT.bytes(6),
        "{what}: buffer bytes"
    );
}

#[test]
fn a_training_step_allocates_nothing_after_the_first() {
    let _turn = serial();
    // One thread: spreading work over the pool allocates the pool's job records.
    cnn::set_num_threads(1);
    training_allocates_nothing(
        cnn::optim::Sgd::new(0.01).momentum(0.9).weight_decay(1e-4),
        "SGD",
    );
    training_allocates_nothing(cnn::optim::Adam::adamw(1e-3), "AdamW");
    cnn::set_num_threads(0);
}
