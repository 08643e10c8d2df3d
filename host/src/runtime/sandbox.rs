//! What one reducer instance's store holds: a WASI context that grants
//! nothing, a memory limiter that remembers why it refused, and the captured
//! output.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::conduct::Conduct;
use super::engine::Shared;
use super::output::CapturedOutput;
use super::threads;

/// Most table elements (function references) one instance may hold.
const TABLE_ELEMENTS: usize = 100_000;

/// Most core instances, linear memories and tables one reducer may create
/// (the pooling allocator is sized with the same numbers). A Rust reducer
/// uses a handful of each.
pub(crate) const MAX_CORE_INSTANCES: usize = 32;
pub(crate) const MAX_MEMORIES: usize = 4;
pub(crate) const MAX_TABLES: usize = 32;

/// Per-store state of one reducer instance.
pub(crate) struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    output: CapturedOutput,
    /// The current call's progress towards demotion and its deadline.
    call: CallClock,
    /// The version's record, which this store's fold adds to.
    conduct: Arc<Conduct>,
    /// Whether any call of this fold trapped or ran long; `None` before
    /// the first call.
    misbehaved: Option<bool>,
    /// Whether this store's calls give way at the first epoch tick (calls
    /// made inline, off the call threads; see [`Sandbox::arm`]).
    gives_way: bool,
}

/// A fold adds to its version's record once, when it ends: a reduction is
/// several calls (create or resume the aggregate, fold batches, serialise),
/// and only the fold as a whole says whether the version behaves.
impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(bad) = self.misbehaved {
            self.conduct.settle(bad);
        }
    }
}

/// When the current call is demoted and when it is stopped. The deadline
/// is wall-clock time; demotion counts the CPU time the call's thread used,
/// so a short call that the scheduler preempted on a busy machine is never
/// mistaken for a long one.
///
/// The CPU time is counted from the first epoch tick the call sees, not
/// from its start: reading a thread's CPU time is a system call (Linux
/// answers it outside the vDSO), and most calls last microseconds and see
/// no tick, so they make none. A call is therefore demoted once it has used
/// `demote_after` of CPU time after its first tick: up to one tick later
/// than counted from its start, never earlier.
#[derive(Debug, Default)]
struct CallClock {
    /// The thread's CPU time at the first tick the call saw, if it saw one
    /// and calls are demoted at all.
    cpu_at_first_tick: Option<Duration>,
    /// CPU time after which the call is demoted.
    demote_after: Duration,
    /// Ticks the call may still run after its current epoch deadline.
    ticks_left: u64,
    /// Whether the call runs demoted already.
    demoted: bool,
}

impl CallClock {
    /// What to do at an epoch deadline: note the CPU time at the first
    /// tick, then keep checking every tick until the call has used
    /// `demote_after` of CPU time since, then demote it and let it run to
    /// its wall-clock deadline.
    fn at_deadline(&mut self) -> UpdateDeadline {
        if self.ticks_left == 0 {
            return UpdateDeadline::Interrupt;
        }
        if self.cpu_at_first_tick.is_none() {
            self.cpu_at_first_tick = Some(thread_cpu_time());
            return self.next_deadline();
        }
        if self.demoted || !self.ran_long() {
            return self.next_deadline();
        }
        self.demoted = true;
        threads::demote_current_thread();
        UpdateDeadline::Continue(std::mem::take(&mut self.ticks_left))
    }

    /// The deadline after a tick that did not demote the call: the
    /// next tick while it may still be demoted, else its wall-clock one.
    fn next_deadline(&mut self) -> UpdateDeadline {
        if self.demoted {
            return UpdateDeadline::Continue(std::mem::take(&mut self.ticks_left));
        }
        self.ticks_left -= 1;
        UpdateDeadline::Continue(1)
    }

    /// Whether the call has used `demote_after` of CPU time since its first
    /// tick (a call that saw no tick has not: it made no system call).
    fn ran_long(&self) -> bool {
        self.cpu_at_first_tick
            .is_some_and(|first| thread_cpu_time().saturating_sub(first) >= self.demote_after)
    }
}

/// CPU time the current thread has used.
pub(super) fn thread_cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

impl Sandbox {
    /// A fresh store for one reduction, with the runtime's limits applied;
    /// one whose calls give way at the first epoch tick if `gives_way`.
    pub(crate) fn store(
        shared: &Shared,
        conduct: &Arc<Conduct>,
        gives_way: bool,
    ) -> Store<Sandbox> {
        let output = CapturedOutput::new(shared.limits.diagnostics_bytes);
        let wasi = WasiCtx::builder()
            .stdout(output.clone())
            .stderr(output.clone())
            // HashMap seeds come from here; a fixed seed keeps folds
            // deterministic.
            .insecure_random_seed(0)
            .build();
        let sandbox = Sandbox {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(shared.limits.memory_bytes),
            output,
            call: CallClock::default(),
            conduct: conduct.clone(),
            misbehaved: None,
            gives_way,
        };
        let mut store = Store::new(&shared.engine, sandbox);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|mut store| Ok(store.data_mut().call.at_deadline()));
        store
    }

    /// Sets the deadlines of the next call into the guest: demoted once it
    /// has used `demote_after` of CPU time, stopped after `call_timeout` of
    /// wall-clock time.
    ///
    /// A store that gives way is instead interrupted at the next epoch tick
    /// (within `epoch_tick`): its calls run on a thread that must not be
    /// held long, and whoever made them runs them again on a call thread,
    /// under these deadlines, if they were interrupted.
    pub(crate) fn arm(store: &mut Store<Sandbox>, shared: &Shared) {
        if store.data().gives_way {
            store.data_mut().call = CallClock::default();
            store.set_epoch_deadline(1);
            return;
        }
        let limits = &shared.limits;
        let (demote, deadline) = (limits.demote_ticks(), limits.deadline_ticks());
        let demotes = demote < deadline;
        // A version whose recent calls all ran long or trapped starts
        // demoted; it still runs to the same wall-clock deadline.
        let suspect = demotes && store.data().conduct.start_demoted();
        if suspect {
            threads::demote_current_thread();
        }
        // A call that is demoted, or may be, stops at its first tick to
        // note the CPU time (see `CallClock`); `deadline` is then at least 2.
        store.data_mut().call = CallClock {
            cpu_at_first_tick: None,
            demote_after: limits.demote_after,
            ticks_left: if demotes { deadline - 1 } else { 0 },
            demoted: suspect,
        };
        store.set_epoch_deadline(if demotes { 1 } else { deadline });
    }

    /// Notes how the call that just returned ended: badly if it trapped or
    /// used `demote_after` of CPU time. The fold's conduct goes to its
    /// version's record when the store is dropped.
    ///
    /// Calls that give way add nothing to the record: an interrupted one is
    /// run again on a call thread, which records how that run behaved.
    pub(crate) fn settle(&mut self, trapped: bool) {
        if self.gives_way {
            return;
        }
        let bad = trapped || self.call.ran_long();
        self.misbehaved = Some(self.misbehaved.unwrap_or(false) || bad);
    }

    /// Bytes of linear memory the instance has, all its memories together
    /// (memories only grow, so this is its peak).
    pub(crate) fn memory_used(&self) -> usize {
        self.limiter.used
    }

    /// Whether the instance asked for more memory than allowed.
    pub(crate) fn refused_memory(&self) -> bool {
        self.limiter.refused_memory
    }

    /// The kept start of the guest's stdout and stderr.
    pub(crate) fn output(&self) -> String {
        self.output.text()
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Refuses growth past the memory cap — counted over every linear memory
/// of the instance together, so a component with many memories gets no
/// more than one with one — and remembers that it did, so the trap that
/// follows is reported as memory exhaustion.
struct Limiter {
    memory_bytes: usize,
    /// Bytes of every memory of the store, together.
    used: usize,
    refused_memory: bool,
}

impl Limiter {
    fn new(memory_bytes: usize) -> Self {
        Self {
            memory_bytes,
            used: 0,
            refused_memory: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after = self.used.saturating_add(desired.saturating_sub(current));
        if after > self.memory_bytes {
            self.refused_memory = true;
            return Ok(false);
        }
        self.used = after;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two memories of 40 MiB each do not fit a 64 MiB cap together.
    #[test]
    fn the_memory_cap_counts_every_memory_together() {
        let mut limiter = Limiter::new(64 << 20);
        assert!(limiter.memory_growing(0, 40 << 20, None).unwrap());
        assert!(!limiter.memory_growing(0, 40 << 20, None).unwrap());
        assert!(limiter.refused_memory);
        assert!(limiter.memory_growing(0, 24 << 20, None).unwrap());
        assert!(!limiter.memory_growing(24 << 20, 25 << 20, None).unwrap());
    }

    /// A call that waits (as a preempted one does) keeps its priority
    /// however many ticks pass; one that computes for `demote_after` after
    /// its first tick is demoted and then runs to its deadline. What it
    /// computed before its first tick is not counted.
    #[test]
    fn demotion_counts_the_calls_cpu_time_from_its_first_tick() {
        let spin = |duration: Duration| {
            let started = thread_cpu_time();
            while thread_cpu_time() - started < duration {
                std::hint::black_box(0u64);
            }
        };
        let mut clock = CallClock {
            cpu_at_first_tick: None,
            demote_after: Duration::from_millis(20),
            ticks_left: 100,
            demoted: false,
        };
        spin(Duration::from_millis(25));
        assert!(matches!(clock.at_deadline(), UpdateDeadline::Continue(1)));
        assert!(!clock.demoted, "time before the first tick counted");
        assert!(!clock.ran_long());
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(10));
            assert!(matches!(clock.at_deadline(), UpdateDeadline::Continue(1)));
        }
        assert!(!clock.demoted, "a waiting call was demoted");
        spin(Duration::from_millis(25));
        assert!(matches!(clock.at_deadline(), UpdateDeadline::Continue(94)));
        assert!(clock.demoted);
        assert!(clock.ran_long());
        assert!(matches!(clock.at_deadline(), UpdateDeadline::Interrupt));
    }

    /// A call that starts demoted notes the CPU time at its first tick and
    /// then runs to its deadline: as many ticks in all as one that is not.
    #[test]
    fn a_call_started_demoted_keeps_its_deadline() {
        let mut clock = CallClock {
            cpu_at_first_tick: None,
            demote_after: Duration::from_millis(20),
            ticks_left: 9,
            demoted: true,
        };
        assert!(matches!(clock.at_deadline(), UpdateDeadline::Continue(9)));
        assert!(clock.cpu_at_first_tick.is_some());
        assert!(matches!(clock.at_deadline(), UpdateDeadline::Interrupt));
    }
}
