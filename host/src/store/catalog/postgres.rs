//! The reducer catalog on PostgreSQL, announcing activations with `NOTIFY`.

use async_trait::async_trait;

use super::{
    ACTIVATION_CHANNEL, Activation, ReducerCatalog, StoredVersion, activation_row, version_row,
};
use crate::Version;
use crate::store::StoreError;
use crate::store::hints::{Hints, Notifications};
use crate::store::postgres::PostgresStore;
use crate::store::write::unavailable;

/// Columns of a stored version, in [`version_row`]'s order.
const VERSION_COLUMNS: &str = "name, version, length(bytes)::bigint,
    (extract(epoch FROM created_at) * 1000000)::bigint";

/// Columns of an activation, in [`activation_row`]'s order.
const ACTIVATION_COLUMNS: &str = "name, active_version, generation,
    (extract(epoch FROM activated_at) * 1000000)::bigint";

#[async_trait]
impl ReducerCatalog for PostgresStore {
    async fn put_version(
        &self,
        name: &str,
        bytes: &[u8],
    ) -> Result<(StoredVersion, bool), StoreError> {
        let version = Version::of(bytes).to_string();
        let inserted = sqlx::query(
            "INSERT INTO reducer_versions (name, version, bytes) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(&version)
        .bind(bytes)
        .execute(self.pool())
        .await
        .map_err(unavailable)?
        .rows_affected()
            > 0;
        let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM reducer_versions WHERE name = $1 AND version = $2"
        )))
        .bind(name)
        .bind(&version)
        .fetch_one(self.pool())
        .await
        .map_err(unavailable)?;
        Ok((version_row(row)?, inserted))
    }

    async fn version_bytes(
        &self,
        name: &str,
        version: Version,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar("SELECT bytes FROM reducer_versions WHERE name = $1 AND version = $2")
            .bind(name)
            .bind(version.to_string())
            .fetch_optional(self.pool())
            .await
            .map_err(unavailable)
    }

    async fn versions(&self, name: &str) -> Result<Vec<StoredVersion>, StoreError> {
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM reducer_versions WHERE name = $1
             ORDER BY created_at, version"
        )))
        .bind(name)
        .fetch_all(self.pool())
        .await
        .map_err(unavailable)?;
        rows.into_iter().map(version_row).collect()
    }

    async fn activate(
        &self,
        name: &str,
        version: Version,
    ) -> Result<Option<Activation>, StoreError> {
        let mut tx = self.pool().begin().await.map_err(unavailable)?;
        let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO reducers (name, active_version, generation)
             SELECT name, version, nextval('reducer_activation_generation')
             FROM reducer_versions WHERE name = $1 AND version = $2
             ON CONFLICT (name) DO UPDATE SET
                 active_version = excluded.active_version,
                 generation = excluded.generation,
                 activated_at = clock_timestamp()
             RETURNING {ACTIVATION_COLUMNS}"
        )))
        .bind(name)
        .bind(version.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(row) = row else { return Ok(None) };
        // Delivered to listeners when the transaction commits, never before.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(ACTIVATION_CHANNEL)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        activation_row(row).map(Some)
    }

    async fn activations(&self) -> Result<Vec<Activation>, StoreError> {
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ACTIVATION_COLUMNS} FROM reducers ORDER BY name"
        )))
        .fetch_all(self.pool())
        .await
        .map_err(unavailable)?;
        rows.into_iter().map(activation_row).collect()
    }

    async fn activation_feed(&self) -> Result<Box<dyn Hints>, StoreError> {
        Ok(Box::new(
            Notifications::listen(self.pool(), ACTIVATION_CHANNEL).await?,
        ))
    }
}
