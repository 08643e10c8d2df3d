//! Checks of appends run inline: on the thread of the request that asks,
//! rather than handed to a call thread and awaited.
//!
//! A check resumes an aggregate, folds an event or a few and serialises
//! the result: tens of microseconds. Handing it to a call thread costs two
//! wake-ups, and on a machine whose cores are busy (the database, the
//! cache and the clients share them) each wake-up is a wait for the other
//! thread to be scheduled. A thread that was declared fit for it
//! ([`super::allow_inline_calls`]: enough native stack) runs the check
//! itself, in a store that gives way at the first epoch tick (see
//! `Sandbox::arm`), so an async worker is never held longer than one tick.
//! A guest that calls WASI's output functions (it prints, or panics) makes
//! them block on the async runtime, which panics on a thread that drives
//! it: that panic is caught (and not printed), and counts as a trap.
//! A check that was interrupted, or trapped, is run again the usual way
//! (`checks`), under the full deadlines, in a fresh instance: its outcome
//! is the one it would have had there, and only that run counts towards
//! the version's conduct. A version whose inline check took more CPU time
//! than [`BUDGET`], or trapped or panicked inline, runs its next
//! [`SKIP_AFTER_SLOW`] checks the usual way (a short check that the tick
//! happened to interrupt, since it may come right after the call starts,
//! does not count).
//!
//! Instances that served a check inline are kept for the next one, a few
//! per version ([`IDLE_PER_VERSION`]) and a few in the whole runtime
//! ([`IDLE_IN_ALL`]), since each holds a slot of the instance pool.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use super::batch::EventBatch;
use super::checks::{Checked, MAX_USES};
use super::error::FailureKind;
use super::reducer::{Instance, Reducer};
use super::sandbox::thread_cpu_time;
use super::threads;

/// Most CPU time an inline check should take (counted on its thread, so a
/// check the scheduler preempted is not slow); a version whose checks take
/// longer runs its next ones on call threads.
const BUDGET: Duration = Duration::from_millis(1);

/// Checks run on call threads after an inline one overran [`BUDGET`].
const SKIP_AFTER_SLOW: u32 = 256;

/// Idle instances one version keeps for inline checks.
const IDLE_PER_VERSION: usize = 2;

/// Idle instances kept for inline checks across the runtime.
pub(crate) const IDLE_IN_ALL: usize = 8;

/// Native stack an inline call needs beyond the WebAssembly stack: the
/// frames of the async task that makes it (a request's handler, hyper,
/// tokio) and of the host functions the guest calls.
const HEADROOM: usize = 1 << 20;

thread_local! {
    /// The native stack this thread was declared to have, if it may run
    /// checks inline (see [`allow_inline_calls`]).
    static STACK: Cell<usize> = const { Cell::new(0) };
    /// Whether this thread is in an inline check, whose panics are caught
    /// and not printed.
    static IN_CHECK: Cell<bool> = const { Cell::new(false) };
}

/// Declares that the current thread has `stack_bytes` of native stack and
/// may run checks of appends itself, instead of handing them to a call
/// thread and waiting (see the module documentation). For the async
/// runtime's worker threads, from its `on_thread_start`. The first call
/// also wraps the process's panic hook, so that the panics of inline checks
/// (which are caught) are not printed.
pub fn allow_inline_calls(stack_bytes: usize) {
    static QUIET: Once = Once::new();
    QUIET.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_CHECK.get() {
                previous(info);
            }
        }));
    });
    STACK.set(stack_bytes);
}

/// Whether the current thread may run a check that uses up to
/// `wasm_stack_bytes` of WebAssembly stack itself.
fn allowed(wasm_stack_bytes: usize) -> bool {
    !threads::current_thread_demoted() && STACK.get() >= wasm_stack_bytes.saturating_add(HEADROOM)
}

/// Runs `check`, catching (without printing) a panic: `None` then.
fn catching<R>(check: impl FnOnce() -> R) -> Option<R> {
    IN_CHECK.set(true);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(check));
    IN_CHECK.set(false);
    outcome
        .map_err(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::debug!(%message, "an inline check panicked; running it on a call thread");
        })
        .ok()
}

/// One version's instances and record for inline checks.
pub(crate) struct InlineChecks {
    /// Instances between checks, with the checks each has served.
    idle: Mutex<Vec<(Instance, u32)>>,
    /// Idle instances of the whole runtime (this version's included).
    idle_in_all: Arc<AtomicUsize>,
    /// Checks still to run on call threads after a slow inline one.
    skip: AtomicU32,
    /// Checks that ended inline.
    ran: AtomicU64,
}

impl InlineChecks {
    /// A version's record, counting its idle instances in `idle_in_all`.
    pub(crate) fn new(idle_in_all: Arc<AtomicUsize>) -> Self {
        Self {
            idle: Mutex::default(),
            idle_in_all,
            skip: AtomicU32::new(0),
            ran: AtomicU64::new(0),
        }
    }

    /// An idle instance and its uses, if one is kept.
    fn take(&self) -> Option<(Instance, u32)> {
        let taken = self.idle.lock().expect("inline instances poisoned").pop();
        if taken.is_some() {
            self.idle_in_all.fetch_sub(1, Ordering::Relaxed);
        }
        taken
    }

    /// Keeps `instance` for the next check, if there is room for it.
    fn keep(&self, instance: Instance, uses: u32) {
        if uses >= MAX_USES {
            return;
        }
        let mut idle = self.idle.lock().expect("inline instances poisoned");
        if idle.len() >= IDLE_PER_VERSION {
            return;
        }
        let room = self
            .idle_in_all
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < IDLE_IN_ALL).then_some(n + 1)
            });
        if room.is_ok() {
            idle.push((instance, uses));
        }
    }

    /// Whether the next check may run inline (counting it down if not).
    fn turn(&self) -> bool {
        self.skip
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_err()
    }
}

impl Drop for InlineChecks {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().map_or(0, |idle| idle.len());
        self.idle_in_all.fetch_sub(idle, Ordering::Relaxed);
    }
}

impl Reducer {
    /// Runs the check on this thread if it may (see the module
    /// documentation): its outcome, or `None` to run it on a call thread.
    pub(super) fn check_inline(&self, state: &[u8], batch: &EventBatch) -> Option<Checked> {
        let inline = &self.checks.inline;
        if !allowed(self.shared().limits.wasm_stack_bytes) || !inline.turn() {
            return None;
        }
        let started = thread_cpu_time();
        let (instance, uses) = match inline.take() {
            Some((instance, uses)) => (Some(instance), uses),
            None => (None, 0),
        };
        let checked = catching(|| self.check_giving_way(instance, uses, state, batch))
            .unwrap_or(Err(Fallback::Failed));
        let slow = thread_cpu_time().saturating_sub(started) > BUDGET;
        // A short check the tick happened to interrupt (the tick may come
        // right after the call starts) says nothing about the next one.
        if slow || matches!(checked, Err(Fallback::Failed)) {
            inline.skip.store(SKIP_AFTER_SLOW, Ordering::Relaxed);
        }
        let checked = checked.ok()?;
        inline.ran.fetch_add(1, Ordering::Relaxed);
        Some(checked)
    }

    /// How many instances this version keeps idle for inline checks.
    pub fn idle_inline_instances(&self) -> usize {
        self.checks
            .inline
            .idle
            .lock()
            .expect("inline instances poisoned")
            .len()
    }

    /// How many checks of this version ran inline, on the thread of the
    /// request that asked.
    pub fn checks_run_inline(&self) -> u64 {
        self.checks.inline.ran.load(Ordering::Relaxed)
    }

    /// The check in `instance` (or a fresh one) giving way at the first
    /// tick; why not, if any call trapped or was interrupted.
    fn check_giving_way(
        &self,
        instance: Option<Instance>,
        uses: u32,
        state: &[u8],
        batch: &EventBatch,
    ) -> Result<Checked, Fallback> {
        let mut fold = match self.resume_in(instance, state, true) {
            Ok(fold) => fold,
            Err(error) if error.kind.is_trap() => return Err(Fallback::of(&error.kind)),
            Err(error) => return Ok(Checked::Unresumable(error)),
        };
        let outcome = fold.apply(batch).and_then(|()| fold.finish_in_place());
        let checked = match outcome {
            Ok(folded) => Checked::Folded(folded),
            Err(error) if error.kind.is_trap() => return Err(Fallback::of(&error.kind)),
            Err(refused) => Checked::Refused(refused),
        };
        if let Some(instance) = fold.into_instance() {
            self.checks.inline.keep(instance, uses + 1);
        }
        Ok(checked)
    }
}

/// Why a check did not end inline.
enum Fallback {
    /// The epoch tick interrupted it.
    Interrupted,
    /// It trapped, or panicked.
    Failed,
}

impl Fallback {
    fn of(kind: &FailureKind) -> Self {
        match kind {
            FailureKind::Timeout(_) => Self::Interrupted,
            _ => Self::Failed,
        }
    }
}
