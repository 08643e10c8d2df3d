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
#[derive(Debug, Default)]
struct CallClock {
    /// The thread's CPU time when the call started (when calls are
    /// demoted at all).
    cpu_at_start: Option<Duration>,
    /// CPU time after which the call is demoted.
    demote_after: Duration,
    /// Ticks the call may still run after its current epoch deadline.
    ticks_left: u64,
    /// Whether the call runs demoted already.
    demoted: bool,
}

impl CallClock {
    /// What to do at an epoch deadline: keep checking every tick until the
    /// call has used `demote_after` of CPU time, then demote it and let it
    /// run to its wall-clock deadline.
    fn at_deadline(&mut self) -> UpdateDeadline {
        if self.ticks_left == 0 {
            return UpdateDeadline::Interrupt;
        }
        if self.demoted || self.cpu_at_start.is_none() {
            return UpdateDeadline::Continue(std::mem::take(&mut self.ticks_left));
        }
        if !self.ran_long() {
            self.ticks_left -= 1;
            return UpdateDeadline::Continue(1);
        }
        self.demoted = true;
        threads::demote_current_thread();
        UpdateDeadline::Continue(std::mem::take(&mut self.ticks_left))
    }

    /// Whether the call has used `demote_after` of CPU time.
    fn ran_long(&self) -> bool {
        self.cpu_at_start
            .is_some_and(|start| thread_cpu_time().saturating_sub(start) >= self.demote_after)
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
        let checks_cpu = demotes && !suspect;
        store.data_mut().call = CallClock {
            cpu_at_start: demotes.then(thread_cpu_time),
            demote_after: limits.demote_after,
            ticks_left: if checks_cpu { deadline - demote } else { 0 },
            demoted: suspect,
        };
        store.set_epoch_deadline(if checks_cpu { demote } else { deadline });
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
    /// however many ticks pass; one that computes for `demote_after` is
    /// demoted and then runs to its deadline.
    #[test]
    fn demotion_counts_the_calls_cpu_time_not_the_ticks() {
        let mut clock = CallClock {
            cpu_at_start: Some(thread_cpu_time()),
            demote_after: Duration::from_millis(20),
            ticks_left: 100,
            demoted: false,
        };
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(10));
            assert!(matches!(clock.at_deadline(), UpdateDeadline::Continue(1)));
        }
        assert!(!clock.demoted, "a waiting call was demoted");
        let spin = thread_cpu_time();
        while thread_cpu_time() - spin < Duration::from_millis(25) {
            std::hint::black_box(0u64);
        }
        assert!(matches!(clock.at_deadline(), UpdateDeadline::Continue(95)));
        assert!(clock.demoted);
        assert!(matches!(clock.at_deadline(), UpdateDeadline::Interrupt));
    }
}
