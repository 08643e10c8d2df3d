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
            limiter: Limiter {
                memory_bytes: shared.limits.memory_bytes,
                refused_memory: false,
            },
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

/// Refuses growth past the memory cap and remembers that it did, so the
/// trap that follows is reported as memory exhaustion.
struct Limiter {
    memory_bytes: usize,
    refused_memory: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.refused_memory = true;
            return Ok(false);
        }
        Ok(true)
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
