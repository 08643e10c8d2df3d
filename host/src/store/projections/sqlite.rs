//! Projections in the embedded SQLite file.

use async_trait::async_trait;

use super::{
    COLUMNS, INSERT, Projection, ProjectionRow, ProjectionState, ProjectionStore, REDEFINE,
    SAVE_STATE, STATE_COLUMNS, StateRow, projection_row, sqlite, state_row,
};
use crate::store::sqlite::SqliteStore;
use crate::store::write::unavailable;
use crate::store::{FeedFilter, StoreError};

#[async_trait]
impl ProjectionStore for SqliteStore {
    async fn put_projection(
        &self,
        name: &str,
        reducer: &str,
        filter: &FeedFilter,
        now: i64,
    ) -> Result<(Projection, bool), StoreError> {
        let mut tx = self.pool().begin().await.map_err(unavailable)?;
        let created = sqlx::query(sqlx::AssertSqlSafe(sqlite(INSERT)))
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
        let row: ProjectionRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM projections WHERE name = ?1"
        )))
        .bind(name)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut projection = projection_row(row);
        if projection.reducer != reducer || projection.filter != *filter {
            sqlx::query(sqlx::AssertSqlSafe(sqlite(REDEFINE)))
                .bind(name)
                .bind(reducer)
                .bind(filter.reducer.as_deref())
                .bind(filter.log_id.map(|l| l.as_uuid()))
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            sqlx::query("DELETE FROM projection_states WHERE name = ?1")
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
        let row: Option<ProjectionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM projections WHERE name = ?1"
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
        sqlx::query("DELETE FROM projections WHERE name = ?1")
            .bind(name)
            .execute(self.pool())
            .await
            .map(|done| done.rows_affected() > 0)
            .map_err(unavailable)
    }

    async fn projection_states(&self, name: &str) -> Result<Vec<ProjectionState>, StoreError> {
        let rows: Vec<StateRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {STATE_COLUMNS} FROM projection_states WHERE name = ?1 ORDER BY version"
        )))
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
        sqlx::query(sqlx::AssertSqlSafe(sqlite(SAVE_STATE)))
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
