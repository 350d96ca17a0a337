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
///
/// A batch of one chunk runs on the calling thread; from 2 M multiply-accumulates its layers
/// split among the other threads, which spin while work comes and for 2 ms after (using CPU
/// time) so that the next layer and the next call find them awake.
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
    pool_in(&POOL, threads, "cnn-worker")
}

#[cfg(feature = "std")]
/// The pool of `threads − 1` helpers that [`keep_warm`] keeps spinning for a caller that
/// runs outside the pools: the caller is the `threads`-th thread.
fn helpers(threads: usize) -> Option<Arc<rayon::ThreadPool>> {
    static HELPERS: Mutex<Option<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(None);
    pool_in(&HELPERS, threads - 1, "cnn-helper")
}

#[cfg(feature = "std")]
/// The pool of `threads` threads kept in `slot`, built on first use and rebuilt when the
/// thread count changes.
fn pool_in(
    slot: &Mutex<Option<(usize, Arc<rayon::ThreadPool>)>>,
    threads: usize,
    name: &'static str,
) -> Option<Arc<rayon::ThreadPool>> {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((n, pool)) = slot.as_ref() {
        if *n == threads {
            return Some(Arc::clone(pool));
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("{name}-{i}"))
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
/// In the crate's tests, a level forced with `simd::testing::with_isa` (and a refused bf16
/// path) follows `f`.
pub(crate) fn install<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    #[cfg(test)]
    let f = {
        let forced = crate::simd::testing::context();
        move || crate::simd::testing::with_context(forced, f)
    };
    match pool(threads) {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

#[cfg(feature = "std")]
/// How long the spinning helpers of [`keep_warm`] stay after the last call that asked for
/// them or the last work [`for_each`] gave them: ONNX Runtime's helpers spin too, for a
/// similar time.
const SPIN: std::time::Duration = std::time::Duration::from_millis(2);

#[cfg(feature = "std")]
/// The spinning helpers' state: until when they spin (nanoseconds after [`epoch`]), and how
/// many run, of the pool of how many threads.
static SPIN_UNTIL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
#[cfg(feature = "std")]
static SPINNING: Mutex<(usize, usize)> = Mutex::new((0, 0));

#[cfg(feature = "std")]
/// Nanoseconds since the first call.
fn epoch() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

#[cfg(feature = "std")]
/// Keeps `threads − 1` helpers (a pool of their own) spinning for [`SPIN`] from
/// now (and from each later [`for_each`] that gives them work), so that [`for_each`] called outside the pool (a forward pass of one small batch on the
/// calling thread) can hand them work at once: a sleeping worker takes tens of microseconds to
/// wake on a virtual machine, as long as a small layer takes. A spinning helper runs the work
/// the pool is given ([`rayon::yield_now`]) and spins between items; it stops when the time is
/// up. Returns whether helpers are spinning (not when the pool cannot be started).
pub(crate) fn keep_warm(threads: usize) -> bool {
    if threads < 2 {
        return false;
    }
    let mut spinning = SPINNING.lock().unwrap_or_else(|e| e.into_inner());
    if spinning.0 > 0 && spinning.1 != threads {
        // Helpers for another thread count still spin: they stop by themselves (checked
        // before the pool is fetched, which would rebuild it for this count).
        return false;
    }
    // A helper that read the old time just before may still stop: what the pool is then
    // given waits for its worker to pick it up, as on a pool that sleeps.
    SPIN_UNTIL.fetch_max(epoch() + SPIN.as_nanos() as u64, Ordering::Relaxed);
    if spinning.0 > 0 {
        return true;
    }
    let Some(pool) = helpers(threads) else {
        return false;
    };
    *spinning = (threads - 1, threads);
    for _ in 1..threads {
        pool.spawn(spin);
    }
    true
}

#[cfg(feature = "std")]
/// One spinning helper: runs the pool's pending work until [`SPIN_UNTIL`] has passed.
fn spin() {
    // LOOP until the time is up, reading the clock every 64 idle turns
    'spinning: loop {
        for _ in 0..64 {
            match rayon::yield_now() {
                Some(rayon::Yield::Executed) => {}
                Some(rayon::Yield::Idle) => std::hint::spin_loop(),
                None => break 'spinning,
            }
        }
        if epoch() > SPIN_UNTIL.load(Ordering::Relaxed) {
            break;
        }
    }
    let mut spinning = SPINNING.lock().unwrap_or_else(|e| e.into_inner());
    spinning.0 -= 1;
}

#[cfg(feature = "std")]
/// The pool whose helpers spin ([`keep_warm`]), if it has `threads` threads.
fn warm_pool(threads: usize) -> Option<Arc<rayon::ThreadPool>> {
    let spinning = *SPINNING.lock().unwrap_or_else(|e| e.into_inner());
    (spinning.0 > 0 && spinning.1 == threads)
        .then(|| helpers(threads))
        .flatten()
}

#[cfg(feature = "std")]
/// Runs `f(i, item)` for every item: spread over the workers of the current pool when
/// `threads > 1` (the caller's share of the threads) and the caller is one of them, or over
/// the spinning helpers of [`keep_warm`] when the caller is outside the pool; the last item on
/// the calling thread; otherwise one after the other. Returns when all calls have finished; a
/// panic in any call is propagated.
pub(crate) fn for_each<T, I, F>(threads: usize, items: I, f: F)
where
    T: Send,
    I: IntoIterator<Item = T>,
    I::IntoIter: Send,
    F: Fn(usize, T) + Sync,
{
    let items = items.into_iter().enumerate().peekable();
    if threads <= 1 {
        items.for_each(|(i, item)| f(i, item));
        return;
    }
    let warm = match rayon::current_thread_index() {
        Some(_) => None,
        None => match warm_pool(threads) {
            Some(pool) => Some(pool),
            None => {
                items.for_each(|(i, item)| f(i, item));
                return;
            }
        },
    };
    #[cfg(test)]
    SPREAD.set(SPREAD.get() + 1);
    let f = &f;
    match warm {
        Some(pool) => {
            // Work keeps the helpers spinning: a long pass does not outlast them.
            SPIN_UNTIL.fetch_max(epoch() + SPIN.as_nanos() as u64, Ordering::Relaxed);
            // The caller and `threads − 1` helpers take the items one at a time from a shared
            // queue (the caller, outside the pool, could not take back items it handed out,
            // as a worker does: it would wait while one helper ran them all). Then the caller
            // spins on a count of finished helpers rather than wait for them on a lock (and
            // be woken tens of microseconds late): the scope has nothing left to wait for.
            let queue = Mutex::new(items);
            let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).next();
            let run = || {
                while let Some((i, item)) = next() {
                    f(i, item);
                }
            };
            let done = AtomicUsize::new(0);
            // In the crate's tests, a level forced with `simd::testing::with_isa` (and a refused
            // bf16 path) follows.
            #[cfg(test)]
            let forced = crate::simd::testing::context();
            pool.in_place_scope(|scope| {
                let (run, done, f) = (&run, &done, &f);
                // Helper `h` starts with item `h` and the caller with item `threads − 1`, the
                // same share of a layer as of the layer before when the items are the threads'
                // equal parts (the usual case), so that each thread reads what it wrote.
                for _ in 1..threads {
                    let first = next();
                    let help = move || {
                        if let Some((i, item)) = first {
                            f(i, item);
                            run();
                        }
                    };
                    scope.spawn(move |_| {
                        let _finished = Finished(done);
                        #[cfg(test)]
                        crate::simd::testing::with_context(forced, help);
                        #[cfg(not(test))]
                        help();
                    });
                }
                run();
                while done.load(Ordering::Acquire) < threads - 1 {
                    std::hint::spin_loop();
                }
            })
        }
        None => {
            rayon::scope(|scope| {
                share(scope, items, f);
            });
        }
    }
}

#[cfg(feature = "std")]
/// Counts one finished helper when dropped: after its items' calls return or one unwinds, so
/// that a caller spinning on the count never waits for a helper whose item panicked.
struct Finished<'a>(&'a AtomicUsize);

#[cfg(feature = "std")]
impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

#[cfg(feature = "std")]
/// [`for_each`]'s items handed to `scope` (on a worker of the pool), the last one run by the
/// caller.
fn share<'s, T, F>(
    scope: &rayon::Scope<'s>,
    mut items: core::iter::Peekable<impl Iterator<Item = (usize, T)>>,
    f: &'s F,
) where
    T: Send + 's,
    F: Fn(usize, T) + Sync,
{
    // In the crate's tests, a level forced with `simd::testing::with_isa` (and a refused bf16
    // path) follows the items.
    #[cfg(test)]
    let forced = crate::simd::testing::context();
    while let Some((i, item)) = items.next() {
        if items.peek().is_none() {
            f(i, item);
        } else {
            #[cfg(test)]
            scope.spawn(move |_| crate::simd::testing::with_context(forced, || f(i, item)));
            #[cfg(not(test))]
            scope.spawn(move |_| f(i, item));
        }
    }
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

/// Test hook: serialises the tests that need helpers of their own size, and [`warm`]s for
/// `threads`. (Other tests start helpers for the default thread count too; these wait until
/// theirs are gone.)
#[cfg(test)]
pub(crate) fn warm_alone(threads: usize) -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    warm(threads);
    guard
}

/// Test hook: waits (up to 10 s) until helpers for `threads` spin, for [`SPIN`] from now.
#[cfg(test)]
pub(crate) fn warm(threads: usize) {
    let start = std::time::Instant::now();
    while !keep_warm(threads) {
        assert!(
            start.elapsed().as_secs() < 10,
            "other helpers spin for 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The helper count these tests use: the crate's other tests run batches on the default
    /// thread count (the machine's cores, often 2), whose helpers these must not meet.
    const THREADS: usize = 3;

    fn warm_alone() -> std::sync::MutexGuard<'static, ()> {
        super::warm_alone(THREADS)
    }

    fn warm() {
        super::warm(THREADS)
    }

    /// Waits (up to 5 s) until the helpers for [`THREADS`] stop, and says whether they did.
    fn helpers_stop() -> bool {
        let start = std::time::Instant::now();
        while warm_pool(THREADS).is_some() {
            if start.elapsed().as_secs() >= 5 {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }

    /// Outside the pool, `for_each` shares its items out only while helpers spin for that
    /// many threads: every item runs once, on a helper or the caller, and the caller waits
    /// for all of them; the helpers stop by themselves once `SPIN` has passed.
    #[test]
    fn items_go_to_spinning_helpers_only_while_they_spin() {
        let run = |threads: usize| {
            let ran: Vec<AtomicUsize> = (0..7).map(|_| AtomicUsize::new(0)).collect();
            let callers = AtomicUsize::new(0);
            let me = std::thread::current().id();
            take_spread();
            for_each(threads, 0..7, |i, item| {
                assert_eq!(i, item);
                // Slow enough that a spinning helper takes some of the items.
                std::thread::sleep(std::time::Duration::from_micros(200));
                ran[i].fetch_add(1, Ordering::Relaxed);
                if std::thread::current().id() == me {
                    callers.fetch_add(1, Ordering::Relaxed);
                }
            });
            let counts: Vec<usize> = ran.iter().map(|r| r.load(Ordering::Relaxed)).collect();
            assert_eq!(counts, vec![1; 7], "{threads} threads");
            (take_spread(), callers.load(Ordering::Relaxed))
        };
        let _lock = warm_alone();
        assert!(!keep_warm(1), "one thread needs no helper");
        assert!(warm_pool(THREADS + 1).is_none(), "helpers of another size");
        assert!(
            !keep_warm(THREADS + 1),
            "helpers of another size still spin"
        );
        assert_eq!(run(THREADS + 1), (0, 7), "no helper for 4 threads");
        // Again: SPIN may have passed.
        warm();
        let (spread, on_caller) = run(THREADS);
        assert_eq!(spread, 1, "shared out");
        assert!(on_caller < 7, "the helpers ran none of the items");
        assert!(helpers_stop(), "the helpers did not stop");
        assert_eq!(run(THREADS), (0, 7), "shared out after the helpers stopped");
    }

    /// Work shared out keeps the helpers spinning for `SPIN` from then, not from the call
    /// that started them: a pass longer than `SPIN` keeps its helpers to the end.
    #[test]
    fn work_keeps_the_helpers_spinning() {
        let _lock = warm_alone();
        // Tries until a pass finds the helpers still spinning (a stall of the test machine
        // longer than `SPIN` between the two steps would have stopped them).
        let checked = (0..20).any(|_| {
            warm();
            let started = SPIN_UNTIL.load(Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_micros(200));
            let before = epoch();
            take_spread();
            for_each(THREADS, 0..THREADS, |_, _| {});
            if take_spread() != 1 {
                return false;
            }
            let until = SPIN_UNTIL.load(Ordering::Relaxed);
            assert!(until > started, "the work did not extend the spin");
            assert!(until >= before + SPIN.as_nanos() as u64);
            true
        });
        assert!(checked, "the helpers never spun when given work");
        assert!(helpers_stop(), "the helpers did not stop");
    }

    /// `install` runs on a worker of the pool of that many threads, and the helpers of
    /// `keep_warm` are one fewer, the caller being the last.
    #[test]
    fn the_pools_have_their_sizes() {
        for threads in [2, 3] {
            let (on, size) = install(threads, || {
                (rayon::current_thread_index(), rayon::current_num_threads())
            });
            assert!(on.is_some(), "not on a worker");
            assert_eq!(size, threads);
        }
        let _lock = warm_alone();
        let helpers = helpers(THREADS).map(|p| p.current_num_threads());
        assert_eq!(helpers, Some(THREADS - 1));
    }

    /// A panic in an item a helper runs reaches the caller, which does not wait for it
    /// forever.
    #[test]
    fn a_panic_on_a_helper_reaches_the_caller() {
        let _lock = warm_alone();
        let me = std::thread::current().id();
        warm();
        let result = std::panic::catch_unwind(|| {
            for_each(THREADS, 0..3 * THREADS, |_, _| {
                std::thread::sleep(std::time::Duration::from_micros(200));
                if std::thread::current().id() != me {
                    panic!("helper item");
                }
            })
        });
        assert!(result.is_err(), "the helpers' panic was lost");
        assert!(helpers_stop(), "the helpers did not stop");
    }
}
