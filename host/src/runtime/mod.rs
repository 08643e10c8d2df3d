//! The sandboxed WebAssembly runtime for reducers.
//!
//! One [`Runtime`] owns the wasmtime engine, the linker that satisfies a
//! reducer's imports while granting nothing, and the epoch ticker that
//! enforces call deadlines. [`Runtime::load`] validates uploaded bytes and
//! compiles them once into a [`Reducer`] (one per version, the sha256 of the
//! bytes). Every reduction gets a fresh store through [`Reducer::start`] or
//! [`Reducer::resume`], folds [`EventBatch`]es, and ends with
//! [`Fold::finish`]. A trapped store is discarded, never reused.
//!
//! Files: `limits` (the configurable bounds), `engine` (wasmtime set-up),
//! `epoch` (the deadline ticker), `sandbox` (per-store state: WASI with no
//! capabilities, memory limiter, captured stderr), `output` (the bounded
//! pipe behind stdout/stderr), `validate` (admission of uploaded bytes),
//! `reducer` (compiled versions and folds), `threads` (the threads calls run
//! on, and how a long call gives way), `checks` (appends' checks run
//! together on a call thread), `inline` (checks run on the asking thread),
//! `batch` (the packed event batch),
//! `error` (typed failures), `bindings` (the generated WIT bindings).
//! Versions (content hashes) live in the crate's `version` module.

mod batch;
mod bindings;
mod checks;
mod conduct;
mod engine;
mod epoch;
mod error;
mod inline;
mod limits;
#[allow(
    unsafe_code,
    reason = "implements wasmtime's lowering traits by hand; see the module"
)]
mod lowering;
mod output;
mod reducer;
mod sandbox;
mod threads;
mod validate;

use std::sync::Arc;

pub use crate::version::Version;
pub use batch::EventBatch;
pub use checks::Checked;
pub use error::{FailureKind, InvalidComponent, ReducerError, RuntimeError};
pub use inline::allow_inline_calls;
pub use limits::Limits;
pub use reducer::{CachingPolicy, Fold, Folded, Reducer};

/// Runs reducers: compiles them once per version and executes folds in
/// fresh, bounded sandboxes. Cheap to clone; clones share one engine.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<engine::Shared>,
}

impl Runtime {
    /// A runtime enforcing `limits` on every reducer it runs.
    ///
    /// Starts one background thread that advances the engine's epoch every
    /// `limits.epoch_tick`; it stops when the last clone of the runtime and
    /// of every [`Reducer`] it loaded is dropped.
    pub fn new(limits: Limits) -> Result<Self, RuntimeError> {
        Ok(Self {
            shared: Arc::new(engine::Shared::new(limits)?),
        })
    }

    /// The limits this runtime enforces.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// Runs `call`, which enters reducers (starts, resumes, folds,
    /// finishes), on the runtime's call threads: off the async executor,
    /// and at the lowest CPU priority once one of its guest calls outlives
    /// `limits.demote_after`. Panics if `call` panicked.
    pub fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send + 'static {
        self.shared.threads.run(call)
    }

    /// How many instances every version together keeps idle for inline
    /// checks.
    pub fn idle_inline_instances(&self) -> usize {
        self.shared
            .inline_idle
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many reducer calls ran long enough to be moved to the lowest
    /// CPU priority since the runtime started.
    pub fn demoted_calls(&self) -> usize {
        self.shared.threads.demoted()
    }

    /// Validates `bytes` as a reducer component and compiles it.
    ///
    /// Checks, in order: the size cap, that the bytes compile, that every
    /// import is on the allowlist, that the component exports the
    /// `eventlogs:reducer/reducer@0.2.0` interface with the expected types,
    /// and that a fresh aggregate can be created and serialised. Compiling
    /// takes milliseconds to a second for large components, so call it off
    /// the async executor.
    pub fn load(&self, bytes: &[u8]) -> Result<Reducer, InvalidComponent> {
        validate::load(&self.shared, bytes)
    }
}
