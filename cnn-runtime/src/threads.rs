//! How many threads `forward_batch` may use.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

static OVERRIDE: AtomicUsize = AtomicUsize::new(0);

/// The thread count `forward_batch` splits a batch over: the value of [`set_num_threads`] if
/// called, else the environment variable `CNN_NUM_THREADS` (read once), else all cores
/// (`std::thread::available_parallelism`).
pub fn num_threads() -> usize {
    match OVERRIDE.load(Ordering::Relaxed) {
        0 => default_threads(),
        n => n,
    }
}

/// Sets the thread count for every later `forward_batch` call in this process; `0` restores the
/// default of [`num_threads`].
pub fn set_num_threads(threads: usize) {
    OVERRIDE.store(threads, Ordering::Relaxed);
}

fn default_threads() -> usize {
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        std::env::var("CNN_NUM_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}
