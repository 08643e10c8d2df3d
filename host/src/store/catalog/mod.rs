//! The reducer catalog: stored reducer versions and which one is active per
//! name, kept in the same database as the events.
//!
//! Versions are immutable rows keyed by `(name, sha256)` holding the
//! component's bytes, so every host process sees the same set and a restart
//! needs no files. An activation replaces the one active row of a name in a
//! single statement and takes the next `generation`, a number that orders
//! activations across processes. Its hints tell a process that
//! another one may have activated something: PostgreSQL delivers a
//! `NOTIFY` when the activating transaction commits; SQLite has no
//! notifications, so its feed is a short poll.

mod postgres;
mod sqlite;

use async_trait::async_trait;

use super::StoreError;
use super::hints::Hints;
use crate::Version;

/// The channel PostgreSQL activations are announced on.
pub const ACTIVATION_CHANNEL: &str = "eventlogs_reducer_activations";

/// One stored reducer version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// The reducer name it was deployed under.
    pub name: String,
    /// The sha256 of its bytes.
    pub version: Version,
    /// Its size in bytes.
    pub size: u64,
    /// When it was first stored: microseconds since the Unix epoch, UTC.
    pub created_at: i64,
}

/// The active version of one reducer name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// The reducer name.
    pub name: String,
    /// Its active version.
    pub version: Version,
    /// Orders activations: a later activation (of any name, in any process)
    /// has a larger generation.
    pub generation: i64,
    /// When it was activated: microseconds since the Unix epoch, UTC.
    pub activated_at: i64,
}

/// Storage of reducer versions and activations.
#[async_trait]
pub trait ReducerCatalog: Send + Sync {
    /// Stores `bytes` as a version of `name`. Storing the same bytes again
    /// changes nothing and returns the version as first stored. The flag
    /// says whether this call stored it.
    async fn put_version(
        &self,
        name: &str,
        bytes: &[u8],
    ) -> Result<(StoredVersion, bool), StoreError>;

    /// The bytes of a stored version, `None` if there is no such version.
    async fn version_bytes(
        &self,
        name: &str,
        version: Version,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// The stored versions of `name`, oldest first (none for an unknown name).
    async fn versions(&self, name: &str) -> Result<Vec<StoredVersion>, StoreError>;

    /// Makes a stored version the active one of `name`, atomically, and
    /// announces it to other processes. `None` if the version is not stored.
    async fn activate(
        &self,
        name: &str,
        version: Version,
    ) -> Result<Option<Activation>, StoreError>;

    /// The active version of every name.
    async fn activations(&self) -> Result<Vec<Activation>, StoreError>;

    /// Hints that activations may have changed: the receiver rereads
    /// [`ReducerCatalog::activations`].
    async fn activation_feed(&self) -> Result<Box<dyn Hints>, StoreError>;
}

/// A `reducer_versions` row: name, version, size, created_at.
type VersionRow = (String, String, i64, i64);

/// A `reducers` row: name, active version, generation, activated_at.
type ActivationRow = (String, String, i64, i64);

fn version_row((name, version, size, created_at): VersionRow) -> Result<StoredVersion, StoreError> {
    Ok(StoredVersion {
        version: parse_version(&version)?,
        name,
        size: size as u64,
        created_at,
    })
}

fn activation_row(
    (name, version, generation, activated_at): ActivationRow,
) -> Result<Activation, StoreError> {
    Ok(Activation {
        version: parse_version(&version)?,
        name,
        generation,
        activated_at,
    })
}

/// Parses a version column; the schema's check makes failure a corrupt
/// database, reported as unavailable rather than trusted.
fn parse_version(text: &str) -> Result<Version, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Unavailable(format!("corrupt reducer version {text:?}")))
}
