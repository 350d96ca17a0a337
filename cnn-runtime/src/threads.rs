//! How many threads `forward_batch` may use.

//!
//! Without `std` there are no threads: [`for_each`] runs the items one after the other.

#[cfg(feature = "std")]
use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(feature = "std")]
use std::sync::{Arc, Mutex, OnceLock};

#[cfg(feature = "std")]
static OVERRIDE: AtomicUsize = AtomicUsize::new(0);

#[cfg(feature = "std")]
/// The thread count `forward_batch` splits a batch over: the value of [`set_num_threads`] if
/// called, else the environment variable `CNN_NUM_THREADS` (read once), else all cores
/// (`std::thread::available_parallelism`).
pub fn num_threads() -> usize {
    match OVERRIDE.load(Ordering::Relaxed) {
        0 => default_threads(),
        n => n,
    }
}

#[cfg(feature = "std")]
/// Sets the thread count for every later `forward_batch` call in this process; `0` restores the
/// default of [`num_threads`]. The crate's tests that set it hold `threads::count_lock` (test
/// builds only) first.
pub fn set_num_threads(threads: usize) {
    OVERRIDE.store(threads, Ordering::Relaxed);
}

#[cfg(feature = "std")]
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

#[cfg(feature = "std")]
/// The worker pool of `threads` threads that batches and large layers split over, built on
/// first use and rebuilt when the thread count changes (`None` if the operating system refuses
/// to start the threads). Its threads live as long as the process (or until the count changes),
/// so their thread-local buffers stay warm between calls.
fn pool(threads: usize) -> Option<Arc<rayon::ThreadPool>> {
    static POOL: Mutex<Option<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(None);
    let mut slot = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((n, pool)) = slot.as_ref() {
        if *n == threads {
            return Some(Arc::clone(pool));
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("cnn-worker-{i}"))
        .build()
        .ok()
        .map(Arc::new)?;
    *slot = Some((threads, Arc::clone(&pool)));
    Some(pool)
}

#[cfg(feature = "std")]
/// Runs `f` on a worker of the pool of `threads` threads, where [`for_each`] spreads work over
/// the pool; on the calling thread (where it runs one item after the other) if the pool cannot
/// be started.
/// In the crate's tests, a level forced with `simd::testing::with_isa` follows `f`.
pub(crate) fn install<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    #[cfg(test)]
    let f = {
        let forced = crate::simd::testing::forced();
        move || crate::simd::testing::with_forced(forced, f)
    };
    match pool(threads) {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

#[cfg(feature = "std")]
/// Runs `f(i, item)` for every item: spread over the workers of the current pool when
/// `threads > 1` (the caller's share of the threads) and the caller is one of them, the last
/// item on the calling worker; otherwise one after the other. Returns when all calls have
/// finished; a panic in any call is propagated.
pub(crate) fn for_each<T, I, F>(threads: usize, items: I, f: F)
where
    T: Send,
    I: IntoIterator<Item = T>,
    I::IntoIter: Send,
    F: Fn(usize, T) + Sync,
{
    let mut items = items.into_iter().enumerate().peekable();
    if threads <= 1 || rayon::current_thread_index().is_none() {
        items.for_each(|(i, item)| f(i, item));
        return;
    }
    // In the crate's tests, a level forced with `simd::testing::with_isa` follows the items.
    #[cfg(test)]
    let forced = crate::simd::testing::forced();
    #[cfg(test)]
    SPREAD.set(SPREAD.get() + 1);
    rayon::scope(|scope| {
        let f = &f;
        while let Some((i, item)) = items.next() {
            if items.peek().is_none() {
                f(i, item);
            } else {
                #[cfg(test)]
                scope.spawn(move |_| crate::simd::testing::with_forced(forced, || f(i, item)));
                #[cfg(not(test))]
                scope.spawn(move |_| f(i, item));
            }
        }
    });
}

#[cfg(test)]
thread_local! {
    /// Calls of [`for_each`] on this thread that shared their items out over the pool.
    static SPREAD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Test hook: how many calls of [`for_each`] on this thread shared their items out over the
/// pool since the last call (then 0 again), so that a test can check that a layer large enough
/// to split over threads did, and a small one did not.
#[cfg(test)]
pub(crate) fn take_spread() -> usize {
    SPREAD.replace(0)
}

/// Serialises the crate's tests that set the global thread count with [`set_num_threads`]:
/// each holds the guard while it sets, relies on and restores the count (a poisoned lock is
/// taken over: the test that panicked restored nothing, so the count is reset).
#[cfg(test)]
pub(crate) fn count_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| {
        set_num_threads(0);
        e.into_inner()
    })
}

/// Without `std`: runs `f(i, item)` for every item, one after the other (`threads` is 1 in
/// every call there).
#[cfg(not(feature = "std"))]
pub(crate) fn for_each<T, I, F>(_threads: usize, items: I, f: F)
where
    I: IntoIterator<Item = T>,
    F: Fn(usize, T),
{
    items
        .into_iter()
        .enumerate()
        .for_each(|(i, item)| f(i, item));
}
