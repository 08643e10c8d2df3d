//! A compiled reducer version, and one fold running in its own sandbox.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::ResourceAny;

use super::batch::EventBatch;
use super::bindings::{ReducerComponent, ReducerComponentPre, wit};
use super::checks::CheckQueue;
use super::conduct::Conduct;
use super::engine::Shared;
use super::error::{FailureKind, ReducerError};
use super::lowering::FoldLowering;
use super::sandbox::Sandbox;
use crate::Version;

/// One validated, compiled and pre-instantiated reducer version. Cheap to
/// clone; clones share the compiled code. A fold started from it keeps it
/// alive, so swapping the active version never disturbs folds in flight.
#[derive(Clone)]
pub struct Reducer {
    version: Version,
    pre: ReducerComponentPre<Sandbox>,
    shared: Arc<Shared>,
    validates: bool,
    /// How batches are handed to this version's `fold`.
    lowering: FoldLowering,
    /// How this version's calls have behaved lately.
    conduct: Arc<Conduct>,
    /// Checks of appends waiting to run together.
    pub(super) checks: Arc<CheckQueue>,
}

/// Whether an aggregate may be cached, as the reducer decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachingPolicy {
    /// Cache it.
    Cache,
    /// Do not cache it.
    Skip,
}

/// The end of a fold: the aggregate and its caching policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    /// The aggregate, as validated JSON text.
    pub json: String,
    /// Whether the reducer allows caching it.
    pub caching: CachingPolicy,
}

impl Reducer {
    pub(crate) fn new(
        version: Version,
        pre: ReducerComponentPre<Sandbox>,
        shared: Arc<Shared>,
        lowering: FoldLowering,
    ) -> Self {
        let checks = Arc::new(CheckQueue::new(shared.inline_idle.clone()));
        Self {
            version,
            pre,
            shared,
            validates: true,
            lowering,
            conduct: Arc::default(),
            checks,
        }
    }

    /// This reducer's version: the sha256 of its component bytes.
    pub fn version(&self) -> Version {
        self.version
    }

    /// How many calls of this version started at the lowest CPU priority
    /// because its previous calls all ran long or trapped.
    pub fn calls_started_demoted(&self) -> u64 {
        self.conduct.started_demoted()
    }

    /// Whether the reducer checks appended events before they are stored
    /// (the contract's `validates`).
    pub fn validates(&self) -> bool {
        self.validates
    }

    /// Asks the reducer whether it validates, in a fresh sandbox, and
    /// remembers the answer (called once, when the version is loaded).
    pub(crate) fn learn_validates(&mut self) -> Result<(), ReducerError> {
        let (mut store, bindings) = self.instantiate(false)?;
        self.validates = call(&mut store, &self.shared, self.version, |store| {
            bindings
                .eventlogs_reducer_reducer()
                .call_validates(store)
                .map(Ok)
        })?;
        Ok(())
    }

    /// Starts a fold from the initial aggregate of an empty log, in a fresh
    /// sandbox.
    pub fn start(&self) -> Result<Fold, ReducerError> {
        let (mut store, bindings) = self.instantiate(false)?;
        let aggregate = call(&mut store, &self.shared, self.version, |store| {
            bindings
                .eventlogs_reducer_reducer()
                .aggregate()
                .call_constructor(store)
                .map(Ok)
        })?;
        Ok(self.fold(store, bindings, aggregate))
    }

    /// Starts a fold from an aggregate this same version serialised before
    /// (a cached reduction), in a fresh sandbox.
    pub fn resume(&self, state: &[u8]) -> Result<Fold, ReducerError> {
        self.resume_in(None, state, false)
    }

    /// What every reducer of the runtime shares.
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Whether the version's last folds all ran long or trapped.
    pub(super) fn suspect(&self) -> bool {
        self.conduct.suspect()
    }

    /// Resumes `state` in `instance` (one a finished fold left, see
    /// [`Fold::into_instance`]), or in a fresh one, which gives way at the
    /// first epoch tick if `gives_way` (see `Sandbox::arm`).
    pub(super) fn resume_in(
        &self,
        instance: Option<Instance>,
        state: &[u8],
        gives_way: bool,
    ) -> Result<Fold, ReducerError> {
        let (mut store, bindings) = match instance {
            Some(Instance { store, bindings }) => (store, bindings),
            None => self.instantiate(gives_way)?,
        };
        let aggregate = call(&mut store, &self.shared, self.version, |store| {
            bindings
                .eventlogs_reducer_reducer()
                .aggregate()
                .call_from_json(store, state)
        })?;
        Ok(self.fold(store, bindings, aggregate))
    }

    fn instantiate(
        &self,
        gives_way: bool,
    ) -> Result<(Store<Sandbox>, ReducerComponent), ReducerError> {
        let mut store = Sandbox::store(&self.shared, &self.conduct, gives_way);
        Sandbox::arm(&mut store, &self.shared);
        match self.pre.instantiate(&mut store) {
            Ok(bindings) => Ok((store, bindings)),
            Err(error) => {
                let kind = if error.is::<wasmtime::Trap>() {
                    FailureKind::trapped(&error, store.data(), &self.shared.limits)
                } else if error.is::<wasmtime::PoolConcurrencyLimitError>() {
                    FailureKind::Instantiation(format!("{error:#}"))
                } else {
                    // The component itself asks for more than a reducer may
                    // have (memories, tables, core instances).
                    FailureKind::Trap(super::error::bounded(format!(
                        "cannot instantiate: {error:#}"
                    )))
                };
                Err(ReducerError {
                    version: self.version,
                    kind,
                })
            }
        }
    }

    fn fold(
        &self,
        store: Store<Sandbox>,
        bindings: ReducerComponent,
        aggregate: ResourceAny,
    ) -> Fold {
        Fold {
            version: self.version,
            shared: self.shared.clone(),
            store,
            bindings,
            aggregate,
            lowering: self.lowering,
            failed: None,
        }
    }
}

/// One fold in progress: an aggregate living inside a fresh reducer
/// instance. Feed it batches with [`Fold::apply`], then [`Fold::finish`].
/// After any failure the instance is never entered again: every later call
/// returns the first failure.
pub struct Fold {
    version: Version,
    shared: Arc<Shared>,
    store: Store<Sandbox>,
    bindings: ReducerComponent,
    aggregate: ResourceAny,
    lowering: FoldLowering,
    failed: Option<ReducerError>,
}

impl Fold {
    /// The reducer version folding.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The linear memory the reducer's instance has grown to, in bytes:
    /// the most it used so far (a WebAssembly memory never shrinks).
    pub fn memory_bytes(&self) -> usize {
        self.store.data().memory_used()
    }

    /// Folds the events of `batch` into the aggregate, in order.
    pub fn apply(&mut self, batch: &EventBatch) -> Result<(), ReducerError> {
        let lowering = self.lowering;
        self.guarded(|bindings, aggregate, store| {
            let fold = *bindings
                .eventlogs_reducer_reducer()
                .aggregate()
                .func_fold()
                .func();
            lowering.call(fold, store, aggregate, batch.packed())
        })
    }

    /// The aggregate as JSON, checked against the output cap and for
    /// validity.
    pub fn to_json(&mut self) -> Result<String, ReducerError> {
        let bytes = self.guarded(|bindings, aggregate, store| {
            bindings
                .eventlogs_reducer_reducer()
                .aggregate()
                .call_to_json(store, aggregate)
        })?;
        let limit = self.shared.limits.output_bytes;
        let checked = if bytes.len() > limit {
            Err(FailureKind::OutputTooLarge {
                size: bytes.len(),
                limit,
            })
        } else {
            String::from_utf8(bytes)
                .map_err(|e| FailureKind::InvalidOutput(e.to_string()))
                .and_then(
                    |json| match serde_json::from_str::<serde::de::IgnoredAny>(&json) {
                        Ok(_) => Ok(json),
                        Err(e) => Err(FailureKind::InvalidOutput(e.to_string())),
                    },
                )
        };
        checked.map_err(|kind| self.fail(kind))
    }

    /// Whether the reducer allows caching the aggregate as it is now.
    pub fn caching_policy(&mut self) -> Result<CachingPolicy, ReducerError> {
        let policy = self.guarded(|bindings, aggregate, store| {
            bindings
                .eventlogs_reducer_reducer()
                .aggregate()
                .call_caching_policy(store, aggregate)
                .map(Ok)
        })?;
        Ok(match policy {
            wit::CachingPolicy::Cache => CachingPolicy::Cache,
            wit::CachingPolicy::Skip => CachingPolicy::Skip,
        })
    }

    /// Ends the fold: the aggregate's JSON and its caching policy.
    pub fn finish(mut self) -> Result<Folded, ReducerError> {
        self.finish_in_place()
    }

    /// The aggregate's JSON and its caching policy, keeping the instance.
    pub(super) fn finish_in_place(&mut self) -> Result<Folded, ReducerError> {
        let json = self.to_json()?;
        let caching = self.caching_policy()?;
        Ok(Folded { json, caching })
    }

    /// Drops the aggregate and gives back the instance for another one;
    /// `None` if a call trapped (such an instance is never entered again)
    /// or the drop itself failed.
    pub(super) fn into_instance(mut self) -> Option<Instance> {
        if self.failed.as_ref().is_some_and(|e| e.kind.is_trap()) {
            return None;
        }
        let aggregate = self.aggregate;
        call(&mut self.store, &self.shared, self.version, |store| {
            aggregate.resource_drop(store).map(Ok)
        })
        .ok()?;
        Some(Instance {
            store: self.store,
            bindings: self.bindings,
        })
    }

    fn guarded<R>(
        &mut self,
        f: impl FnOnce(
            &ReducerComponent,
            ResourceAny,
            &mut Store<Sandbox>,
        ) -> wasmtime::Result<Result<R, wit::ReducerError>>,
    ) -> Result<R, ReducerError> {
        if let Some(failed) = &self.failed {
            return Err(failed.clone());
        }
        let (bindings, aggregate) = (&self.bindings, self.aggregate);
        let result = call(&mut self.store, &self.shared, self.version, |store| {
            f(bindings, aggregate, store)
        });
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    fn fail(&mut self, kind: FailureKind) -> ReducerError {
        let error = ReducerError {
            version: self.version,
            kind,
        };
        self.failed = Some(error.clone());
        error
    }
}

/// A reducer instance no aggregate lives in (any more).
pub(super) struct Instance {
    store: Store<Sandbox>,
    bindings: ReducerComponent,
}

/// Runs one call into the guest under a fresh deadline and sorts the
/// outcome into the reducer's own error and a trap.
fn call<R>(
    store: &mut Store<Sandbox>,
    shared: &Shared,
    version: Version,
    f: impl FnOnce(&mut Store<Sandbox>) -> wasmtime::Result<Result<R, wit::ReducerError>>,
) -> Result<R, ReducerError> {
    Sandbox::arm(store, shared);
    let outcome = f(store);
    store.data_mut().settle(outcome.is_err());
    let kind = match outcome {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(reported)) => FailureKind::reported(reported),
        Err(trap) => FailureKind::trapped(&trap, store.data(), &shared.limits),
    };
    if kind.is_trap() {
        tracing::debug!(%version, kind = kind.name(), "reducer trapped; discarding its instance");
    }
    Err(ReducerError { version, kind })
}
