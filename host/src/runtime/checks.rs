//! Appends checked together: concurrent appends to logs of one reducer
//! version are validated in one reducer instance, one after the other,
//! rather than each in a fresh instance on a thread of its own.
//!
//! Each check resumes its log's aggregate from JSON, folds the new events
//! into it and serialises the result, exactly as a check alone would; the
//! aggregate is then dropped and the next check resumes its own in the
//! same instance. What this saves per append is what a profile of
//! validated appends showed costing more than the reducer's own work:
//! setting up and resetting an instance slot, and two thread hand-offs.
//!
//! Like group commit, it never delays a check: a check queued while none
//! runs starts a round at once on a pool thread, and checks queued while a
//! round runs make the next round. Between rounds the thread keeps its
//! instance for up to [`LINGER`], blocked, so that the next check (the
//! same clients' next appends, typically) neither waits for a thread nor
//! sets up and resets an instance slot; an instance serves at most
//! [`MAX_USES`] checks. A trap discards the instance; a check that
//! trapped in an instance others used before is run again alone in a fresh
//! one, so its outcome is the one it would have had alone. Versions whose
//! recent folds ran long or trapped, and rounds on a thread that was
//! demoted, do not batch: each of their checks runs alone, in parallel.
//!
//! Before any of that, a check runs on the caller's own thread if that
//! thread allows it (`inline`), and comes here only if it did not finish
//! there within one epoch tick.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::batch::EventBatch;
use super::error::ReducerError;
use super::inline::InlineChecks;
use super::reducer::{Folded, Instance, Reducer};
use super::threads;

/// Most checks taken into one round.
const MAX_ROUND: usize = 64;

/// How long a round's thread keeps its instance, waiting for the next
/// check, once none waits.
const LINGER: Duration = Duration::from_millis(2);

/// Most checks one instance serves before a fresh one replaces it, which
/// bounds how far a guest's heap can drift from a fresh instance's.
pub(crate) const MAX_USES: u32 = 1024;

/// How one check ended.
#[derive(Debug)]
pub enum Checked {
    /// The events were folded: the aggregate after them.
    Folded(Folded),
    /// The reducer refused an event, or misbehaved folding them.
    Refused(ReducerError),
    /// The aggregate given could not be resumed (it is not this version's
    /// state), or no instance could be had.
    Unresumable(ReducerError),
}

/// The checks of one reducer version waiting for a round, and its
/// instances for checks run inline.
pub(crate) struct CheckQueue {
    queue: Mutex<Queue>,
    /// Signalled when a check is queued, for a round's thread lingering.
    arrived: Condvar,
    /// Checks that ran in an instance an earlier check had used.
    shared: AtomicU64,
    /// What checks run inline keep (see `inline`).
    pub(super) inline: InlineChecks,
}

impl CheckQueue {
    /// An empty queue, whose inline instances count in `idle_in_all`.
    pub(crate) fn new(idle_in_all: Arc<AtomicUsize>) -> Self {
        Self {
            queue: Mutex::default(),
            arrived: Condvar::new(),
            shared: AtomicU64::new(0),
            inline: InlineChecks::new(idle_in_all),
        }
    }
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Job>,
    /// Whether a round is queued or running (it takes what waits next).
    running: bool,
}

struct Job {
    state: Vec<u8>,
    batch: EventBatch,
    done: oneshot::Sender<Checked>,
}

impl Reducer {
    /// Resumes the aggregate `state` (JSON this version serialised), folds
    /// `batch` into it and serialises the result, together with other
    /// checks of this version queued meanwhile; see the module
    /// documentation. On a thread that allows it, the check runs inline
    /// first (see `inline`). Panics if the check's thread panicked.
    pub async fn check(&self, state: Vec<u8>, batch: EventBatch) -> Checked {
        if self.suspect() {
            let reducer = self.clone();
            return self
                .run_on_pool(move || reducer.check_alone(&state, &batch))
                .await;
        }
        if let Some(checked) = self.check_inline(&state, &batch) {
            return checked;
        }
        let (done, answer) = oneshot::channel();
        let start = {
            let mut queue = self.checks.queue.lock().expect("check queue poisoned");
            queue.waiting.push_back(Job { state, batch, done });
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            self.start_round();
        } else {
            self.checks.arrived.notify_one();
        }
        answer.await.expect("reducer check thread panicked")
    }

    /// How many checks of this version ran in an instance that an earlier
    /// check had used (and so saved setting one up).
    pub fn checks_sharing_an_instance(&self) -> u64 {
        self.checks.shared.load(Ordering::Relaxed)
    }

    /// Queues a round on a pool thread.
    fn start_round(&self) {
        let reducer = self.clone();
        // The call is queued at once; its answer is not needed.
        drop(self.run_on_pool(move || reducer.run_rounds()));
    }

    /// Runs rounds until no check waits, in one instance while it serves.
    fn run_rounds(&self) {
        // Should a check panic, the checks still waiting are dropped (their
        // callers see the panic) and the next check starts a new round.
        let guard = Stopped(self);
        let mut warm: Option<(Instance, u32)> = None;
        loop {
            let round: Vec<Job> = {
                let mut queue = self.checks.queue.lock().expect("check queue poisoned");
                if queue.waiting.is_empty() && warm.is_some() {
                    queue = self
                        .checks
                        .arrived
                        .wait_timeout_while(queue, LINGER, |queue| queue.waiting.is_empty())
                        .expect("check queue poisoned")
                        .0;
                }
                if queue.waiting.is_empty() {
                    queue.running = false;
                    std::mem::forget(guard);
                    return;
                }
                let take = queue.waiting.len().min(MAX_ROUND);
                queue.waiting.drain(..take).collect()
            };
            let left = self.run_round(round, &mut warm);
            if !left.is_empty() || threads::current_thread_demoted() {
                // This thread now runs at the lowest priority and ends
                // after this call: what is left goes to a fresh one.
                let mut queue = self.checks.queue.lock().expect("check queue poisoned");
                for job in left.into_iter().rev() {
                    queue.waiting.push_front(job);
                }
                drop(queue);
                std::mem::forget(guard);
                self.start_round();
                return;
            }
        }
    }

    /// Runs `round` in the `warm` instance (or fresh ones), as long as this
    /// thread is not demoted; the checks it did not run. Leaves in `warm`
    /// the instance that can serve the next check, with its uses.
    fn run_round(&self, round: Vec<Job>, warm: &mut Option<(Instance, u32)>) -> Vec<Job> {
        let mut jobs = round.into_iter();
        for job in jobs.by_ref() {
            let (instance, uses) = match warm.take() {
                Some((instance, uses)) if uses < MAX_USES => (Some(instance), uses),
                _ => (None, 0),
            };
            let (checked, kept) = self.check_in(instance, &job.state, &job.batch);
            *warm = kept.map(|instance| (instance, uses + 1));
            let _ = job.done.send(checked);
            if threads::current_thread_demoted() {
                break;
            }
        }
        jobs.collect()
    }

    /// One check alone, in a fresh instance.
    fn check_alone(&self, state: &[u8], batch: &EventBatch) -> Checked {
        self.check_in(None, state, batch).0
    }

    /// One check in `instance` (or a fresh one): its outcome, and the
    /// instance if it can serve the next. A trap in a used instance is
    /// retried in a fresh one.
    fn check_in(
        &self,
        instance: Option<Instance>,
        state: &[u8],
        batch: &EventBatch,
    ) -> (Checked, Option<Instance>) {
        let used = instance.is_some();
        let mut fold = match self.resume_in(instance, state, false) {
            Ok(fold) => fold,
            Err(error) if used && error.kind.is_trap() => return self.check_in(None, state, batch),
            Err(error) => return (Checked::Unresumable(error), None),
        };
        let outcome = fold.apply(batch).and_then(|()| fold.finish_in_place());
        if used && !outcome.as_ref().is_err_and(|e| e.kind.is_trap()) {
            self.checks.shared.fetch_add(1, Ordering::Relaxed);
        }
        match outcome {
            Ok(folded) => (Checked::Folded(folded), fold.into_instance()),
            Err(error) if used && error.kind.is_trap() => {
                drop(fold);
                self.check_in(None, state, batch)
            }
            Err(error) => (Checked::Refused(error), fold.into_instance()),
        }
    }

    fn run_on_pool<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send + 'static {
        self.shared().threads.run(call)
    }
}

/// Ends a round that panicked: drops what waits and lets the next check
/// start a new round.
struct Stopped<'a>(&'a Reducer);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        if let Ok(mut queue) = self.0.checks.queue.lock() {
            queue.waiting.clear();
            queue.running = false;
        }
    }
}
