//! The reducer catalog in the embedded SQLite file. SQLite cannot notify
//! other processes, so the activation feed is a short poll.

use std::time::Duration;

use async_trait::async_trait;

use super::{Activation, ReducerCatalog, StoredVersion, activation_row, version_row};
use crate::Version;
use crate::clock::now_micros;
use crate::store::StoreError;
use crate::store::hints::{Hints, Poll};
use crate::store::sqlite::SqliteStore;
use crate::store::write::unavailable;

/// How often another process's activations are looked for.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

const VERSION_COLUMNS: &str = "name, version, length(bytes), created_at";
const ACTIVATION_COLUMNS: &str = "name, active_version, generation, activated_at";

#[async_trait]
impl ReducerCatalog for SqliteStore {
    async fn put_version(
        &self,
        name: &str,
        bytes: &[u8],
    ) -> Result<(StoredVersion, bool), StoreError> {
        let version = Version::of(bytes).to_string();
        let inserted = sqlx::query(
            "INSERT INTO reducer_versions (name, version, bytes, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(&version)
        .bind(bytes)
        .bind(now_micros())
        .execute(self.pool())
        .await
        .map_err(unavailable)?
        .rows_affected()
            > 0;
        let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM reducer_versions WHERE name = ? AND version = ?"
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
        sqlx::query_scalar("SELECT bytes FROM reducer_versions WHERE name = ? AND version = ?")
            .bind(name)
            .bind(version.to_string())
            .fetch_optional(self.pool())
            .await
            .map_err(unavailable)
    }

    async fn versions(&self, name: &str) -> Result<Vec<StoredVersion>, StoreError> {
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM reducer_versions WHERE name = ?
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
        // The write lock taken at BEGIN makes max(generation) + 1 unique.
        let mut tx = self
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO reducers (name, active_version, generation, activated_at)
             SELECT name, version, (SELECT coalesce(max(generation), 0) + 1 FROM reducers), ?
             FROM reducer_versions WHERE name = ? AND version = ?
             ON CONFLICT (name) DO UPDATE SET
                 active_version = excluded.active_version,
                 generation = excluded.generation,
                 activated_at = excluded.activated_at
             RETURNING {ACTIVATION_COLUMNS}"
        )))
        .bind(now_micros())
        .bind(name)
        .bind(version.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        row.map(activation_row).transpose()
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
        Ok(Box::new(Poll(POLL_INTERVAL)))
    }
}
