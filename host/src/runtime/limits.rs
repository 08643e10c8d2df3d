//! The bounds every reducer call runs under.

use std::time::Duration;

/// Configurable bounds on reducers. The defaults suit aggregates of up to a
/// few megabytes folded in batches of about a thousand events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time one call into a reducer (one batch, one state
    /// hand-over) may take before it is interrupted.
    pub call_timeout: Duration,
    /// How much CPU time one call uses at normal CPU priority; past this
    /// (checked every tick) it continues at the lowest, so calls that run
    /// long, such as a reducer looping until its deadline, give way to
    /// short ones. Counted in the call thread's CPU time, not wall-clock
    /// time: a short call preempted on a busy machine is not demoted. The
    /// count starts at the first tick the call sees (a call that sees none
    /// reads no clock), so a call is demoted up to one tick late.
    pub demote_after: Duration,
    /// How often the deadline clock ticks; a runaway call is stopped within
    /// `call_timeout` plus one tick.
    pub epoch_tick: Duration,
    /// Most linear memory one reducer instance may use, in bytes.
    pub memory_bytes: usize,
    /// Most WebAssembly stack one call may use, in bytes. Calls must run on
    /// host threads with more native stack than this plus some headroom
    /// (tokio's blocking threads and Rust's spawned threads have 2 MiB).
    pub wasm_stack_bytes: usize,
    /// Largest aggregate JSON a reducer may return, in bytes.
    pub output_bytes: usize,
    /// How much of a reducer's stdout and stderr is kept for diagnostics
    /// (panic messages); the rest is discarded.
    pub diagnostics_bytes: usize,
    /// Largest component accepted by [`crate::runtime::Runtime::load`].
    pub component_bytes: usize,
    /// Most reducer instances alive at once across the runtime; further
    /// folds fail with an instantiation error until one finishes.
    pub max_instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(1),
            demote_after: Duration::from_millis(20),
            epoch_tick: Duration::from_millis(10),
            memory_bytes: 64 << 20,
            wasm_stack_bytes: 512 << 10,
            output_bytes: 4 << 20,
            diagnostics_bytes: 16 << 10,
            component_bytes: 16 << 20,
            max_instances: 256,
        }
    }
}

impl Limits {
    /// The call deadline in epoch ticks, rounded up, at least one.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        self.ticks(self.call_timeout)
    }

    /// When a call is demoted, in epoch ticks (at least one, at most the
    /// deadline).
    pub(crate) fn demote_ticks(&self) -> u64 {
        self.ticks(self.demote_after).min(self.deadline_ticks())
    }

    fn ticks(&self, duration: Duration) -> u64 {
        let tick = self.epoch_tick.as_nanos().max(1);
        duration.as_nanos().div_ceil(tick).max(1) as u64
    }
}
