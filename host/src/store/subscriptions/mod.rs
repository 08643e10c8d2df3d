//! Named subscriptions to the feed: a filter and a checkpoint (the last
//! position the consumer acknowledged), kept in the same database as the
//! events so that every host process sees the same ones, and a consumer
//! that restarts resumes where it acknowledged (at-least-once delivery).

use async_trait::async_trait;
use uuid::Uuid;

use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::write::unavailable;
use super::{FeedFilter, StoreError};

/// A named subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Its name.
    pub name: String,
    /// Which events it delivers.
    pub filter: FeedFilter,
    /// The last position its consumer acknowledged; delivery resumes after
    /// it.
    pub position: u64,
    /// When it was created: microseconds since the Unix epoch, UTC.
    pub created_at: i64,
    /// When its filter or checkpoint last changed.
    pub updated_at: i64,
}

/// Storage of subscriptions.
#[async_trait]
pub trait SubscriptionStore: Send + Sync {
    /// Creates the subscription `name` with `filter` at position 0, or
    /// replaces an existing one's filter (keeping its checkpoint). The flag
    /// says whether it was created.
    async fn put_subscription(
        &self,
        name: &str,
        filter: &FeedFilter,
        now: i64,
    ) -> Result<(Subscription, bool), StoreError>;

    /// The subscription `name`, if there is one.
    async fn subscription(&self, name: &str) -> Result<Option<Subscription>, StoreError>;

    /// Every subscription, by name.
    async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError>;

    /// Moves the checkpoint of `name` to `position`; `None` if there is no
    /// such subscription.
    async fn checkpoint(
        &self,
        name: &str,
        position: u64,
        now: i64,
    ) -> Result<Option<Subscription>, StoreError>;

    /// Deletes `name`; whether it existed.
    async fn delete_subscription(&self, name: &str) -> Result<bool, StoreError>;
}

/// Columns of a subscription, in [`subscription_row`]'s order.
const COLUMNS: &str = "name, reducer, log_id, position, created_at, updated_at";

/// A `subscriptions` row.
type SubscriptionRow = (String, Option<String>, Option<Uuid>, i64, i64, i64);

fn subscription_row(
    (name, reducer, log_id, position, created_at, updated_at): SubscriptionRow,
) -> Subscription {
    Subscription {
        name,
        filter: FeedFilter {
            reducer,
            log_id: log_id.map(Into::into),
        },
        position: position as u64,
        created_at,
        updated_at,
    }
}

/// The one implementation of [`SubscriptionStore`], for a store type and
/// the function that turns this module's SQL (`$1` parameters) into its
/// dialect's.
macro_rules! subscription_store {
    ($store:ty, $dialect:expr) => {
        #[async_trait]
        impl SubscriptionStore for $store {
            async fn put_subscription(
                &self,
                name: &str,
                filter: &FeedFilter,
                now: i64,
            ) -> Result<(Subscription, bool), StoreError> {
                let mut tx = self.pool().begin().await.map_err(unavailable)?;
                let created = sqlx::query(sqlx::AssertSqlSafe($dialect(
                    "INSERT INTO subscriptions (name, reducer, log_id, position, created_at, updated_at)
                     VALUES ($1, $2, $3, 0, $4, $4) ON CONFLICT (name) DO NOTHING",
                )))
                .bind(name)
                .bind(filter.reducer.as_deref())
                .bind(filter.log_id.map(|l| l.as_uuid()))
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?
                .rows_affected()
                    > 0;
                let row: SubscriptionRow = sqlx::query_as(sqlx::AssertSqlSafe($dialect(&format!(
                    "UPDATE subscriptions SET reducer = $2, log_id = $3, updated_at = $4 WHERE name = $1
                     RETURNING {COLUMNS}"
                ))))
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
                let row: Option<SubscriptionRow> = sqlx::query_as(sqlx::AssertSqlSafe($dialect(&format!(
                    "SELECT {COLUMNS} FROM subscriptions WHERE name = $1"
                ))))
                .bind(name)
                .fetch_optional(self.pool())
                .await
                .map_err(unavailable)?;
                Ok(row.map(subscription_row))
            }

            async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
                let rows: Vec<SubscriptionRow> = sqlx::query_as(sqlx::AssertSqlSafe($dialect(&format!(
                    "SELECT {COLUMNS} FROM subscriptions ORDER BY name"
                ))))
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
                let row: Option<SubscriptionRow> = sqlx::query_as(sqlx::AssertSqlSafe($dialect(&format!(
                    "UPDATE subscriptions SET position = $2, updated_at = $3 WHERE name = $1
                     RETURNING {COLUMNS}"
                ))))
                .bind(name)
                .bind(i64::try_from(position).unwrap_or(i64::MAX))
                .bind(now)
                .fetch_optional(self.pool())
                .await
                .map_err(unavailable)?;
                Ok(row.map(subscription_row))
            }

            async fn delete_subscription(&self, name: &str) -> Result<bool, StoreError> {
                sqlx::query(sqlx::AssertSqlSafe($dialect(
                    "DELETE FROM subscriptions WHERE name = $1",
                )))
                    .bind(name)
                    .execute(self.pool())
                    .await
                    .map(|done| done.rows_affected() > 0)
                    .map_err(unavailable)
            }
        }
    };
}

subscription_store!(PostgresStore, String::from);
subscription_store!(SqliteStore, super::sqlite_sql);
