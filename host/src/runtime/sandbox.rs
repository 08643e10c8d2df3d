//! What one reducer instance's store holds: a WASI context that grants
//! nothing, a memory limiter that remembers why it refused, and the captured
//! output.

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::engine::Shared;
use super::output::CapturedOutput;

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
        };
        let mut store = Store::new(&shared.engine, sandbox);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store
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
