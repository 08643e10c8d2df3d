//! The threads reducer calls run on, and how a long call gives way.
//!
//! Reducer calls are CPU-bound and synchronous, so they run off the async
//! executor, on threads of a [`CallThreads`] pool. A call still running
//! after the runtime's `demote_after` is moved to the lowest CPU priority
//! (`SCHED_IDLE`, nice 19) for the rest of it, by the epoch callback on its own thread:
//! a reducer that loops until its deadline then takes CPU time only when
//! short calls, the HTTP server and the databases leave some. A process
//! without `CAP_SYS_NICE` cannot raise a thread's priority again, so a
//! demoted thread leaves the pool at once (a fresh thread, started before
//! the demotion so that it does not inherit it, takes its place when one
//! is needed) and ends after its call.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

/// How long an idle thread waits for a call before it ends.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Most threads running reducer calls at once; further calls queue.
const MAX_THREADS: usize = 512;

/// The nice value a long call continues at.
const DEMOTED_NICE: i32 = 19;

/// A queued call; it calls its argument once the call has returned and
/// before its caller learns the result, so that a caller's next call never
/// finds this one still counted as pending.
type Job = Box<dyn FnOnce(&dyn Fn()) + Send>;

thread_local! {
    /// The pool this thread works for, if any (only pool threads may be
    /// demoted: they end after the call).
    static POOL: RefCell<Option<Arc<Inner>>> = const { RefCell::new(None) };
    /// Whether this thread was demoted.
    static DEMOTED: Cell<bool> = const { Cell::new(false) };
}

/// A pool of threads for reducer calls, growing on demand up to
/// [`MAX_THREADS`] and shrinking when idle.
pub(crate) struct CallThreads {
    inner: Arc<Inner>,
}

struct Inner {
    /// Calls waiting for a thread. A mutex and a condition variable rather
    /// than a lock-free channel: an idle thread sleeps at once instead of
    /// spinning and yielding first, which on a machine of two busy cores
    /// took more CPU than the reducer calls (`sched_yield` in a profile of
    /// validated appends).
    queue: Mutex<VecDeque<Job>>,
    /// Signalled when a call is queued.
    queued: Condvar,
    /// Calls queued, or running on a thread that was not demoted.
    pending: AtomicUsize,
    /// Threads alive and not demoted.
    threads: AtomicUsize,
    stack_bytes: usize,
    demoted: AtomicUsize,
}

impl CallThreads {
    /// A pool whose threads have `stack_bytes` of native stack.
    pub(crate) fn new(stack_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                queue: Mutex::default(),
                queued: Condvar::new(),
                pending: AtomicUsize::new(0),
                threads: AtomicUsize::new(0),
                stack_bytes,
                demoted: AtomicUsize::new(0),
            }),
        }
    }

    /// Runs `call` on a pool thread; its result. Panics if `call` panicked,
    /// as `spawn_blocking(..).await.expect(..)` would.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send + 'static {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |finished| {
            let result = call();
            finished();
            let _ = done.send(result);
        });
        // Counted before it is queued: a thread may take and finish it
        // before `send` returns, and the count must never drop below zero
        // (it would look like a huge backlog and start threads for it).
        self.inner.pending.fetch_add(1, Ordering::SeqCst);
        self.inner
            .queue
            .lock()
            .expect("reducer call queue poisoned")
            .push_back(job);
        self.inner.queued.notify_one();
        Inner::grow(&self.inner);
        async move { answer.await.expect("reducer call thread panicked") }
    }

    /// Threads alive and not demoted.
    #[cfg(test)]
    fn threads(&self) -> usize {
        self.inner.threads.load(Ordering::SeqCst)
    }

    /// How many calls were demoted since the pool was made.
    pub(crate) fn demoted(&self) -> usize {
        self.inner.demoted.load(Ordering::Relaxed)
    }
}

impl Inner {
    /// Starts threads until every pending call has one (or the cap).
    fn grow(inner: &Arc<Inner>) {
        loop {
            let threads = inner.threads.load(Ordering::SeqCst);
            let pending = inner.pending.load(Ordering::SeqCst);
            if threads >= pending || threads >= MAX_THREADS {
                return;
            }
            if inner
                .threads
                .compare_exchange(threads, threads + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                let worker = inner.clone();
                std::thread::Builder::new()
                    .name("eventlogs-reducer".into())
                    .stack_size(inner.stack_bytes)
                    .spawn(move || worker.work())
                    .expect("spawning a reducer call thread");
                return;
            }
        }
    }

    /// The next queued call, or `None` once none came for `KEEP_ALIVE`.
    fn next_job(&self) -> Option<Job> {
        let queue = self.queue.lock().expect("reducer call queue poisoned");
        let (mut queue, _) = self
            .queued
            .wait_timeout_while(queue, KEEP_ALIVE, |queue| queue.is_empty())
            .expect("reducer call queue poisoned");
        queue.pop_front()
    }

    fn work(self: Arc<Self>) {
        POOL.set(Some(self.clone()));
        loop {
            match self.next_job() {
                Some(job) => {
                    // A panicking call ends this thread; its caller sees the
                    // panic through the dropped answer.
                    let guard = Leaving(&self);
                    job(&|| {
                        // A demoted thread is already out of the counts.
                        if !DEMOTED.get() {
                            self.pending.fetch_sub(1, Ordering::SeqCst);
                        }
                    });
                    std::mem::forget(guard);
                    if DEMOTED.get() {
                        return;
                    }
                }
                None => {
                    self.threads.fetch_sub(1, Ordering::SeqCst);
                    // A call queued just now still gets a thread.
                    Self::grow(&self);
                    return;
                }
            }
        }
    }

    /// Takes the current thread out of the counts, with its call.
    fn leave(inner: &Arc<Inner>) {
        inner.threads.fetch_sub(1, Ordering::SeqCst);
        inner.pending.fetch_sub(1, Ordering::SeqCst);
        Self::grow(inner);
    }
}

/// Keeps the counts right when a call panics and ends its thread.
struct Leaving<'a>(&'a Arc<Inner>);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        if !DEMOTED.get() {
            Inner::leave(self.0);
        }
    }
}

/// Whether the current thread was demoted (it ends after its call).
pub(crate) fn current_thread_demoted() -> bool {
    DEMOTED.get()
}

/// Moves the current thread to the lowest CPU priority for the rest of its
/// life, if it is a pool thread (which ends after its call). Called from
/// the epoch callback when a call outlives `demote_after`.
pub(crate) fn demote_current_thread() {
    let Some(pool) = POOL.with_borrow(Clone::clone) else {
        return;
    };
    if DEMOTED.get() {
        return;
    }
    DEMOTED.set(true);
    pool.demoted.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("eventlogs_reducer_calls_demoted_total").increment(1);
    // Any thread this pool needs now is started before the priority drops:
    // a thread inherits its creator's.
    Inner::leave(&pool);
    // Linux applies a process priority given a thread id to that thread
    // alone.
    let this_thread = Some(rustix::thread::gettid());
    // The policy first: setting it resets the nice value.
    idle_policy_for_this_thread();
    if let Err(error) = rustix::process::setpriority_process(this_thread, DEMOTED_NICE) {
        tracing::debug!(%error, "could not lower a long reducer call's priority");
    }
}

/// Puts the current thread under `SCHED_IDLE`: it then runs only on a core
/// no other thread wants, and any other thread that wakes takes the core
/// from it at once. Nice 19 alone is not enough since the kernel's EEVDF
/// scheduler lets a running thread finish its slice (a few milliseconds)
/// before a woken one preempts it: with an endless-loop reducer demoted
/// that way, requests of well-behaved reducers waited that long at every
/// wake-up (their p99 doubled beside it in the benchmark).
fn idle_policy_for_this_thread() {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    let set = set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        idle,
    );
    if let Err(error) = set {
        tracing::debug!(?error, "could not move a long reducer call to SCHED_IDLE");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
    }

    fn policy_of_this_thread() -> thread_priority::unix::ThreadSchedulePolicy {
        thread_priority::unix::thread_schedule_policy().unwrap()
    }

    fn normal(
        policy: thread_priority::unix::NormalThreadSchedulePolicy,
    ) -> thread_priority::unix::ThreadSchedulePolicy {
        thread_priority::unix::ThreadSchedulePolicy::Normal(policy)
    }

    #[tokio::test]
    async fn a_demoted_thread_is_replaced_and_others_keep_their_priority() {
        let base = nice_of_this_thread();
        let pool = CallThreads::new(2 << 20);
        let demoted = pool
            .run(|| {
                demote_current_thread();
                (
                    std::thread::current().id(),
                    nice_of_this_thread(),
                    policy_of_this_thread(),
                )
            })
            .await;
        assert_eq!(demoted.1, DEMOTED_NICE);
        assert_eq!(
            demoted.2,
            normal(thread_priority::unix::NormalThreadSchedulePolicy::Idle),
            "a demoted thread runs under SCHED_IDLE"
        );
        assert_eq!(pool.demoted(), 1);
        for _ in 0..20 {
            let (id, nice, policy) = pool
                .run(|| {
                    (
                        std::thread::current().id(),
                        nice_of_this_thread(),
                        policy_of_this_thread(),
                    )
                })
                .await;
            assert_ne!(id, demoted.0, "a demoted thread ran another call");
            assert_eq!(nice, base);
            assert_eq!(
                policy,
                normal(thread_priority::unix::NormalThreadSchedulePolicy::Other)
            );
        }
    }

    #[tokio::test]
    async fn many_calls_at_once_all_finish_and_outside_threads_are_never_demoted() {
        let base = nice_of_this_thread();
        let pool = CallThreads::new(2 << 20);
        let calls: Vec<_> = (0..200u64).map(|i| pool.run(move || i * 2)).collect();
        let mut total = 0u64;
        for call in calls {
            total += call.await;
        }
        assert_eq!(total, (0..200u64).map(|i| i * 2).sum::<u64>());
        // Not a pool thread: nothing happens.
        demote_current_thread();
        assert_eq!(nice_of_this_thread(), base);
    }

    /// The pool never has more threads than calls were in flight at once,
    /// however quickly calls finish (a call finishing before it was
    /// counted once made the pool believe in a huge backlog).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_pool_grows_only_to_the_calls_in_flight() {
        let pool = Arc::new(CallThreads::new(2 << 20));
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    for i in 0..20_000u64 {
                        assert_eq!(pool.run(move || i + 1).await, i + 1);
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
        assert!(
            pool.threads() <= 4,
            "{} threads for 4 callers",
            pool.threads()
        );
    }

    #[tokio::test]
    async fn a_panicking_call_panics_its_caller_and_the_pool_carries_on() {
        let pool = CallThreads::new(2 << 20);
        let panicked = tokio::spawn(pool.run(|| -> u32 { panic!("boom") })).await;
        assert!(panicked.is_err());
        assert_eq!(pool.run(|| 7).await, 7);
    }
}
