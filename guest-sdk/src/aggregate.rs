//! The trait a reducer author implements.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::EventRecord;

/// The state of one log, folded from its events.
///
/// `Default` is the state of an empty log. `Serialize`/`Deserialize` define
/// the aggregate's JSON, which clients read and the host caches; a cached
/// aggregate is only ever handed back to the same reducer version.
pub trait Aggregate: Default + Serialize + DeserializeOwned + 'static {
    /// The type each event's JSON payload decodes into.
    type Event: DeserializeOwned;

    /// Whether the host checks appended events with this reducer before
    /// storing them: each must decode into [`Aggregate::Event`] and pass
    /// [`Aggregate::validate`] against the aggregate at the log's end, or
    /// the append is refused and nothing is stored. Set it to `false` for a
    /// reducer that accepts any JSON, to spare the write path the fold.
    const VALIDATES: bool = true;

    /// Applies one event. Events are facts already recorded, so this cannot
    /// fail; to refuse an event, override [`Aggregate::validate`].
    fn apply(&mut self, record: &EventRecord<Self::Event>);

    /// Checks an event against the current state before it is applied.
    ///
    /// A refusal stops the fold and reaches the client as a typed error that
    /// names the event's index. The default accepts every event.
    fn validate(&self, record: &EventRecord<Self::Event>) -> Result<(), Rejection> {
        let _ = record;
        Ok(())
    }

    /// Whether the host may cache this state. The default always caches;
    /// decline for states that will rarely be loaded again (a closed
    /// payment), to keep the cache for live entities.
    fn caching_policy(&self) -> CachingPolicy {
        CachingPolicy::Cache
    }
}

/// Whether the host may cache an aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CachingPolicy {
    /// Cache it; later folds start from it.
    #[default]
    Cache,
    /// Do not cache it.
    Skip,
}

/// Why [`Aggregate::validate`] refused an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    message: String,
}

impl Rejection {
    /// A refusal with a human-readable reason, shown to the client.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The reason given.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
