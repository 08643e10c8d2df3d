//! Named subscriptions to the feed: a filter and a checkpoint (the last
//! position the consumer acknowledged), kept in the same database as the
//! events so that every host process sees the same ones, and a consumer
//! that restarts resumes where it acknowledged (at-least-once delivery).

mod postgres;
mod sqlite;

use async_trait::async_trait;
use uuid::Uuid;

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
