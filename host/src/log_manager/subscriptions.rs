//! Named subscriptions: a filter over the feed and a checkpoint kept in the
//! database, so that a consumer that restarts (in any process) resumes
//! after the last position it acknowledged.

use super::{LogError, LogManager};
use crate::clock::now_micros;
use crate::store::{FeedFilter, FeedPage, Subscription};

/// Longest subscription name.
const NAME_MAX: usize = 128;

/// Why a subscription operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// Not 1 to 128 characters of `[A-Za-z0-9._-]`.
    #[error("a subscription name is 1 to {NAME_MAX} characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
    InvalidName,
    /// There is no subscription of this name.
    #[error("no subscription named {0:?}")]
    NotFound(String),
    /// A checkpoint past the last stored event would skip events stored
    /// later.
    #[error("position {position} is past the feed's last position {head}")]
    BeyondFeed {
        /// The position asked for.
        position: u64,
        /// The feed's last position.
        head: u64,
    },
}

impl LogManager {
    /// Creates the subscription `name` (checkpoint 0) or replaces its
    /// filter, keeping its checkpoint; whether it was created.
    pub async fn put_subscription(
        &self,
        name: &str,
        filter: &FeedFilter,
    ) -> Result<(Subscription, bool), LogError> {
        check_name(name)?;
        Ok(self
            .store
            .put_subscription(name, filter, now_micros())
            .await?)
    }

    /// The subscription `name`.
    pub async fn subscription(&self, name: &str) -> Result<Subscription, LogError> {
        check_name(name)?;
        self.store
            .subscription(name)
            .await?
            .ok_or_else(|| SubscriptionError::NotFound(name.into()).into())
    }

    /// Every subscription, by name.
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, LogError> {
        Ok(self.store.subscriptions().await?)
    }

    /// The subscription and up to `limit` of its events after its
    /// checkpoint. Reading moves nothing: the consumer acknowledges with
    /// [`LogManager::checkpoint`].
    pub async fn subscription_events(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<(Subscription, FeedPage), LogError> {
        let subscription = self.subscription(name).await?;
        let page = self
            .feed_page(subscription.position, &subscription.filter, limit)
            .await?;
        Ok((subscription, page))
    }

    /// Moves the checkpoint of `name` to `position`, which may not be past
    /// the feed's last position.
    pub async fn checkpoint(&self, name: &str, position: u64) -> Result<Subscription, LogError> {
        check_name(name)?;
        let head = self.store.feed_head().await?;
        if position > head {
            return Err(SubscriptionError::BeyondFeed { position, head }.into());
        }
        self.store
            .checkpoint(name, position, now_micros())
            .await?
            .ok_or_else(|| SubscriptionError::NotFound(name.into()).into())
    }

    /// Deletes the subscription `name`.
    pub async fn delete_subscription(&self, name: &str) -> Result<(), LogError> {
        check_name(name)?;
        if self.store.delete_subscription(name).await? {
            Ok(())
        } else {
            Err(SubscriptionError::NotFound(name.into()).into())
        }
    }
}

/// Whether `name` is 1 to `max` characters of `[A-Za-z0-9._-]` (safe in
/// a URL path and in metrics labels).
pub(super) fn is_plain_name(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_name(name: &str) -> Result<(), SubscriptionError> {
    if is_plain_name(name, NAME_MAX) {
        Ok(())
    } else {
        Err(SubscriptionError::InvalidName)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_plain() {
        assert!(check_name("orders-projection.v2_1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(&"a".repeat(129)).is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("é").is_err());
    }
}
