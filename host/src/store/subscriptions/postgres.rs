//! Subscriptions on PostgreSQL.

use async_trait::async_trait;
use uuid::Uuid;

use super::{COLUMNS, Subscription, SubscriptionRow, SubscriptionStore, subscription_row};
use crate::store::postgres::PostgresStore;
use crate::store::write::unavailable;
use crate::store::{FeedFilter, StoreError};

/// A subscription row and whether the statement inserted it.
type Created = (String, Option<String>, Option<Uuid>, i64, i64, i64, bool);

#[async_trait]
impl SubscriptionStore for PostgresStore {
    async fn put_subscription(
        &self,
        name: &str,
        filter: &FeedFilter,
        now: i64,
    ) -> Result<(Subscription, bool), StoreError> {
        // `xmax = 0`: the row was inserted, not updated, by this statement.
        let row: Created = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO subscriptions (name, reducer, log_id, position, created_at, updated_at)
             VALUES ($1, $2, $3, 0, $4, $4)
             ON CONFLICT (name) DO UPDATE
                 SET reducer = excluded.reducer, log_id = excluded.log_id, updated_at = excluded.updated_at
             RETURNING {COLUMNS}, xmax = 0"
        )))
        .bind(name)
        .bind(filter.reducer.as_deref())
        .bind(filter.log_id.map(|l| l.as_uuid()))
        .bind(now)
        .fetch_one(self.pool())
        .await
        .map_err(unavailable)?;
        let (name, reducer, log_id, position, created_at, updated_at, created) = row;
        let row = (name, reducer, log_id, position, created_at, updated_at);
        Ok((subscription_row(row), created))
    }

    async fn subscription(&self, name: &str) -> Result<Option<Subscription>, StoreError> {
        let row: Option<SubscriptionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM subscriptions WHERE name = $1"
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
            "UPDATE subscriptions SET position = $2, updated_at = $3 WHERE name = $1
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
        sqlx::query("DELETE FROM subscriptions WHERE name = $1")
            .bind(name)
            .execute(self.pool())
            .await
            .map(|done| done.rows_affected() > 0)
            .map_err(unavailable)
    }
}
