//! Projections: a reducer run over the feed instead of one log. The
//! definition (reducer name and filter) and, per reducer version, the
//! aggregate folded so far and the feed position it is current through,
//! kept in the database so that every host process serves and advances the
//! same state.

use async_trait::async_trait;
use uuid::Uuid;

use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::write::unavailable;
use super::{FeedFilter, StoreError};
use crate::Version;

/// A projection's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// Its name.
    pub name: String,
    /// The reducer name whose active version folds it.
    pub reducer: String,
    /// Which events of the feed it folds.
    pub filter: FeedFilter,
    /// When it was created: microseconds since the Unix epoch, UTC.
    pub created_at: i64,
    /// When its definition last changed; states are saved only for the
    /// definition they were folded under.
    pub updated_at: i64,
}

/// What one reducer version folded of a projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionState {
    /// The version that folded it.
    pub version: Version,
    /// Every matching event up to this feed position is folded.
    pub position: u64,
    /// How many events were folded.
    pub events: u64,
    /// The aggregate's JSON.
    pub aggregate: String,
    /// Whether this state once reached the end of the feed (a version that
    /// has not is still being built).
    pub caught_up: bool,
    /// When it was saved: microseconds since the Unix epoch, UTC.
    pub updated_at: i64,
}

/// Storage of projections.
#[async_trait]
pub trait ProjectionStore: Send + Sync {
    /// Creates the projection `name`, or redefines it (its states are
    /// dropped if the reducer or filter changed). The flag says whether it
    /// was created.
    async fn put_projection(
        &self,
        name: &str,
        reducer: &str,
        filter: &FeedFilter,
        now: i64,
    ) -> Result<(Projection, bool), StoreError>;

    /// The projection `name`, if there is one.
    async fn projection(&self, name: &str) -> Result<Option<Projection>, StoreError>;

    /// Every projection, by name.
    async fn projections(&self) -> Result<Vec<Projection>, StoreError>;

    /// Deletes `name` and its states; whether it existed.
    async fn delete_projection(&self, name: &str) -> Result<bool, StoreError>;

    /// The saved states of `name`, one per version.
    async fn projection_states(&self, name: &str) -> Result<Vec<ProjectionState>, StoreError>;

    /// Saves `state` for the definition stamped `defined_at`, unless the
    /// saved state of its version is as far or further (or the definition
    /// changed); whether it was saved.
    async fn save_projection_state(
        &self,
        name: &str,
        defined_at: i64,
        state: &ProjectionState,
    ) -> Result<bool, StoreError>;
}

/// Columns of a projection, in [`projection_row`]'s order.
const COLUMNS: &str = "name, reducer, filter_reducer, filter_log_id, created_at, updated_at";

/// Columns of a state, in [`state_row`]'s order.
const STATE_COLUMNS: &str = "version, position, events, aggregate, caught_up, updated_at";

/// A `projections` row.
type ProjectionRow = (String, String, Option<String>, Option<Uuid>, i64, i64);

/// A `projection_states` row.
type StateRow = (String, i64, i64, String, bool, i64);

fn projection_row(
    (name, reducer, filter_reducer, filter_log_id, created_at, updated_at): ProjectionRow,
) -> Projection {
    Projection {
        name,
        reducer,
        filter: FeedFilter {
            reducer: filter_reducer,
            log_id: filter_log_id.map(Into::into),
        },
        created_at,
        updated_at,
    }
}

fn state_row(
    (version, position, events, aggregate, caught_up, updated_at): StateRow,
) -> Result<ProjectionState, StoreError> {
    Ok(ProjectionState {
        version: version.parse().map_err(|_| {
            StoreError::Unavailable(format!("corrupt projection version {version:?}"))
        })?,
        position: position as u64,
        events: events as u64,
        aggregate,
        caught_up,
        updated_at,
    })
}

/// Creates a projection unless one of the name exists.
const INSERT: &str = "INSERT INTO projections
         (name, reducer, filter_reducer, filter_log_id, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (name) DO NOTHING";

/// Redefines a projection.
const REDEFINE: &str = "UPDATE projections
     SET reducer = $2, filter_reducer = $3, filter_log_id = $4, updated_at = $5
     WHERE name = $1";

/// Saves a state if it is further than the saved one of its version, for
/// the definition stamped `$8` only.
const SAVE_STATE: &str = "INSERT INTO projection_states
         (name, version, position, events, aggregate, caught_up, updated_at)
     SELECT $1, $2, $3, $4, $5, $6, $7
     WHERE EXISTS (SELECT 1 FROM projections WHERE name = $1 AND updated_at = $8)
     ON CONFLICT (name, version) DO UPDATE
         SET position = excluded.position, events = excluded.events,
             aggregate = excluded.aggregate, caught_up = excluded.caught_up,
             updated_at = excluded.updated_at
         WHERE projection_states.position < excluded.position
            OR (projection_states.position = excluded.position
                AND NOT projection_states.caught_up AND excluded.caught_up)";

/// The one implementation of [`ProjectionStore`], for a store type, the
/// function that turns this module's SQL (`$1` parameters) into its
/// dialect's, and the clause that locks a row read for update.
macro_rules! projection_store {
    ($store:ty, $dialect:expr, $lock:expr) => {
        #[async_trait]
        impl ProjectionStore for $store {
            async fn put_projection(
                &self,
                name: &str,
                reducer: &str,
                filter: &FeedFilter,
                now: i64,
            ) -> Result<(Projection, bool), StoreError> {
                let mut tx = self.pool().begin().await.map_err(unavailable)?;
                let created = sqlx::query(sqlx::AssertSqlSafe($dialect(INSERT)))
                    .bind(name)
                    .bind(reducer)
                    .bind(filter.reducer.as_deref())
                    .bind(filter.log_id.map(|l| l.as_uuid()))
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?
                    .rows_affected()
                    > 0;
                let row: ProjectionRow = sqlx::query_as(sqlx::AssertSqlSafe($dialect(&format!(
                    "SELECT {COLUMNS} FROM projections WHERE name = $1{}",
                    $lock
                ))))
                .bind(name)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
                let mut projection = projection_row(row);
                if projection.reducer != reducer || projection.filter != *filter {
                    sqlx::query(sqlx::AssertSqlSafe($dialect(REDEFINE)))
                        .bind(name)
                        .bind(reducer)
                        .bind(filter.reducer.as_deref())
                        .bind(filter.log_id.map(|l| l.as_uuid()))
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                    sqlx::query(sqlx::AssertSqlSafe($dialect(
                        "DELETE FROM projection_states WHERE name = $1",
                    )))
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                    projection.reducer = reducer.into();
                    projection.filter = filter.clone();
                    projection.updated_at = now;
                }
                tx.commit().await.map_err(unavailable)?;
                Ok((projection, created))
            }

            async fn projection(&self, name: &str) -> Result<Option<Projection>, StoreError> {
                let row: Option<ProjectionRow> = sqlx::query_as(sqlx::AssertSqlSafe($dialect(
                    &format!("SELECT {COLUMNS} FROM projections WHERE name = $1"),
                )))
                .bind(name)
                .fetch_optional(self.pool())
                .await
                .map_err(unavailable)?;
                Ok(row.map(projection_row))
            }

            async fn projections(&self) -> Result<Vec<Projection>, StoreError> {
                let rows: Vec<ProjectionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM projections ORDER BY name"
                )))
                .fetch_all(self.pool())
                .await
                .map_err(unavailable)?;
                Ok(rows.into_iter().map(projection_row).collect())
            }

            async fn delete_projection(&self, name: &str) -> Result<bool, StoreError> {
                // Its states go with it (ON DELETE CASCADE).
                sqlx::query(sqlx::AssertSqlSafe($dialect(
                    "DELETE FROM projections WHERE name = $1",
                )))
                .bind(name)
                .execute(self.pool())
                .await
                .map(|done| done.rows_affected() > 0)
                .map_err(unavailable)
            }

            async fn projection_states(
                &self,
                name: &str,
            ) -> Result<Vec<ProjectionState>, StoreError> {
                let rows: Vec<StateRow> = sqlx::query_as(sqlx::AssertSqlSafe($dialect(&format!(
                    "SELECT {STATE_COLUMNS} FROM projection_states WHERE name = $1 ORDER BY version"
                ))))
                .bind(name)
                .fetch_all(self.pool())
                .await
                .map_err(unavailable)?;
                rows.into_iter().map(state_row).collect()
            }

            async fn save_projection_state(
                &self,
                name: &str,
                defined_at: i64,
                state: &ProjectionState,
            ) -> Result<bool, StoreError> {
                sqlx::query(sqlx::AssertSqlSafe($dialect(SAVE_STATE)))
                    .bind(name)
                    .bind(state.version.to_string())
                    .bind(i64::try_from(state.position).unwrap_or(i64::MAX))
                    .bind(i64::try_from(state.events).unwrap_or(i64::MAX))
                    .bind(&state.aggregate)
                    .bind(state.caught_up)
                    .bind(state.updated_at)
                    .bind(defined_at)
                    .execute(self.pool())
                    .await
                    .map(|done| done.rows_affected() > 0)
                    .map_err(unavailable)
            }
        }
    };
}

projection_store!(PostgresStore, String::from, " FOR UPDATE");
// SQLite's write transaction (begun by the insert) already excludes others.
projection_store!(SqliteStore, super::sqlite_sql, "");
