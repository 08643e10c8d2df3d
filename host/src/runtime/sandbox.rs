//! What one reducer instance's store holds: a WASI context that grants
//! nothing, a memory limiter that remembers why it refused, and the captured
//! output.

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

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
    /// Ticks the current call may run after it is demoted; zero once it
    /// has been.
    ticks_after_demotion: u64,
}

impl Sandbox {
    /// A fresh store for one reduction, with the runtime's limits applied.
    pub(crate) fn store(shared: &Shared) -> Store<Sandbox> {
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
            ticks_after_demotion: 0,
        };
        let mut store = Store::new(&shared.engine, sandbox);
        store.limiter(|s| &mut s.limiter);
        // The first deadline of a call demotes it, the second stops it.
        store.epoch_deadline_callback(|mut store| {
            let left = std::mem::take(&mut store.data_mut().ticks_after_demotion);
            if left == 0 {
                return Ok(UpdateDeadline::Interrupt);
            }
            threads::demote_current_thread();
            Ok(UpdateDeadline::Continue(left))
        });
        store
    }

    /// Sets the deadlines of the next call into the guest: demoted after
    /// `demote_after`, stopped after `call_timeout`.
    pub(crate) fn arm(store: &mut Store<Sandbox>, shared: &Shared) {
        let (demote, deadline) = (shared.limits.demote_ticks(), shared.limits.deadline_ticks());
        store.data_mut().ticks_after_demotion = deadline - demote;
        store.set_epoch_deadline(if demote < deadline { demote } else { deadline });
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
}
