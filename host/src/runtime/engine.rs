//! The wasmtime set-up shared by every reducer: one engine, one linker.

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::epoch::Ticker;
use super::error::RuntimeError;
use super::limits::Limits;
use super::sandbox::Sandbox;

/// What every reducer of one runtime shares.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<Sandbox>,
    pub(crate) limits: Limits,
    _ticker: Ticker,
}

impl Shared {
    pub(crate) fn new(limits: Limits) -> Result<Self, RuntimeError> {
        let engine = Engine::new(&config(&limits)).map_err(RuntimeError::engine)?;
        let mut linker = Linker::new(&engine);
        // Rust's standard library imports a handful of WASI interfaces even
        // for pure code (panics print to stderr). They are satisfied here by
        // a context that grants nothing; validation refuses components that
        // import anything beyond the allowlist, so the rest of WASI linked
        // here is never reachable.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(RuntimeError::engine)?;
        let ticker = Ticker::start(&engine, limits.epoch_tick);
        Ok(Self {
            engine,
            linker,
            limits,
            _ticker: ticker,
        })
    }
}

fn config(limits: &Limits) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(limits.max_instances)
        .total_core_instances(limits.max_instances.saturating_mul(4))
        .total_memories(limits.max_instances.saturating_mul(2))
        .total_tables(limits.max_instances.saturating_mul(4))
        .max_memory_size(limits.memory_bytes)
        // Keep a little of each memory slot mapped so a new fold does not
        // page-fault its way through the first pages again.
        .linear_memory_keep_resident(64 << 10);

    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(limits.wasm_stack_bytes)
        .wasm_component_model(true)
        // Reducers are synchronous; the concurrency machinery of the
        // component model only slows their calls down.
        .concurrency_support(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}
