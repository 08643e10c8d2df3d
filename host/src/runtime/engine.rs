//! The wasmtime set-up shared by every reducer: one engine, one linker.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::sandbox::{MAX_CORE_INSTANCES, MAX_MEMORIES, MAX_TABLES};
use wasmtime::component::Linker;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy,
};

use super::epoch::Ticker;
use super::error::RuntimeError;
use super::limits::Limits;
use super::sandbox::Sandbox;
use super::threads::CallThreads;

/// What every reducer of one runtime shares.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<Sandbox>,
    pub(crate) limits: Limits,
    pub(crate) threads: CallThreads,
    /// Instances kept idle for inline checks, across every version (see
    /// `inline`).
    pub(crate) inline_idle: Arc<AtomicUsize>,
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
        // The wasm stack lives on the native one, with room for the host's
        // frames under it.
        let threads = CallThreads::new((limits.wasm_stack_bytes + (1 << 20)).max(2 << 20));
        Ok(Self {
            engine,
            linker,
            limits,
            threads,
            inline_idle: Arc::default(),
            _ticker: ticker,
        })
    }
}

/// How much of a memory slot stays resident between instances when only
/// its dirty pages are reset: a Rust reducer's shadow stack (1 MiB), data
/// and a working heap.
const KEEP_RESIDENT_SCANNED: usize = 4 << 20;

/// Whether the kernel has the PAGEMAP_SCAN ioctl (Linux 6.7 and later).
fn pagemap_scan_supported() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let (Some(major), Some(minor)) = (numbers.next(), numbers.next()) else {
        return false;
    };
    (major, minor) >= (6, 7)
}

fn config(limits: &Limits) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(limits.max_instances)
        .total_core_instances(limits.max_instances.saturating_mul(4))
        .total_memories(limits.max_instances.saturating_mul(2))
        .total_tables(limits.max_instances.saturating_mul(4))
        .max_memory_size(limits.memory_bytes)
        .max_core_instances_per_component(MAX_CORE_INSTANCES as u32)
        .max_memories_per_component(MAX_MEMORIES as u32)
        .max_tables_per_component(MAX_TABLES as u32)
        // A slot is reset for its next instance without returning its pages
        // to the kernel: `madvise` makes every core flush its TLB and the
        // next instance page-fault its stack and heap in again, which cost
        // more than the reducer call itself. With PAGEMAP_SCAN only the
        // pages the last instance dirtied are copied back, so a large
        // window is cheap; without it the window is `memset` whole, so it
        // stays small.
        .linear_memory_keep_resident(if pagemap_scan_supported() {
            KEEP_RESIDENT_SCANNED
        } else {
            64 << 10
        })
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(limits.wasm_stack_bytes)
        .wasm_component_model(true)
        // Reducers are synchronous; the concurrency machinery of the
        // component model only slows their calls down.
        .concurrency_support(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if std::env::var_os(PERF_MAP).is_some_and(|v| v == "1") {
        config.profiler(ProfilingStrategy::PerfMap);
    }
    config
}

/// With this environment variable set to `1`, wasmtime writes
/// `/tmp/perf-PID.map` naming every compiled reducer function, so that
/// `perf report` attributes the time spent inside reducers to their own
/// functions instead of to anonymous addresses.
const PERF_MAP: &str = "EVENTLOGS_PERF_MAP";
