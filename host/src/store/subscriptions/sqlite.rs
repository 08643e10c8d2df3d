//! Subscriptions in the embedded SQLite file.

use async_trait::async_trait;

use super::{COLUMNS, Subscription, SubscriptionRow, SubscriptionStore, subscription_row};
use crate::store::sqlite::SqliteStore;
use crate::store::write::unavailable;
use crate::store::{FeedFilter, StoreError};

#[async_trait]
impl SubscriptionStore for SqliteStore {
    async fn put_subscription(
        &self,
        name: &str,
        filter: &FeedFilter,
        now: i64,
    ) -> Result<(Subscription, bool), StoreError> {
        let mut tx = self.pool().begin().await.map_err(unavailable)?;
        let created = sqlx::query(
            "INSERT INTO subscriptions (name, reducer, log_id, position, created_at, updated_at)
             VALUES (?1, ?2, ?3, 0, ?4, ?4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(filter.reducer.as_deref())
        .bind(filter.log_id.map(|l| l.as_uuid()))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected()
            > 0;
        let row: SubscriptionRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE subscriptions SET reducer = ?2, log_id = ?3, updated_at = ?4 WHERE name = ?1
             RETURNING {COLUMNS}"
        )))
        .bind(name)
        .bind(filter.reducer.as_deref())
        .bind(filter.log_id.map(|l| l.as_uuid()))
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok((subscription_row(row), created))
    }

    async fn subscription(&self, name: &str) -> Result<Option<Subscription>, StoreError> {
        let row: Option<SubscriptionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM subscriptions WHERE name = ?1"
        )))
        .bind(name)
        .fetch_optional(self.pool())
        .await
        .map_err(unavailable)?;
        Ok(row.map(subscription_row))
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let rows: Vec<SubscriptionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM subscriptions ORDER BY name"
        )))
        .fetch_all(self.pool())
        .await
        .map_err(unavailable)?;
        Ok(rows.into_iter().map(subscription_row).collect())
    }

    async fn checkpoint(
        &self,
        name: &str,
        position: u64,
        now: i64,
    ) -> Result<Option<Subscription>, StoreError> {
        let row: Option<SubscriptionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE subscriptions SET position = ?2, updated_at = ?3 WHERE name = ?1
             RETURNING {COLUMNS}"
        )))
        .bind(name)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(now)
        .fetch_optional(self.pool())
        .await
        .map_err(unavailable)?;
        Ok(row.map(subscription_row))
    }

    async fn delete_subscription(&self, name: &str) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM subscriptions WHERE name = ?1")
            .bind(name)
            .execute(self.pool())
            .await
            .map(|done| done.rows_affected() > 0)
            .map_err(unavailable)
    }
}
