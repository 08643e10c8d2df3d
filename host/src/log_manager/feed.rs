//! The feed through the log manager: pages of every log's events in
//! position order, and followers woken by this process's own writes.

use super::{LogError, LogManager};
use crate::feed::Follow;
use crate::store::{FeedFilter, FeedPage, StoreError, Write, Written};

impl LogManager {
    /// Stores a write and, if it stored events, wakes this process's feed
    /// followers.
    pub(super) async fn store_write(&self, write: Write) -> Result<Written, StoreError> {
        let written = self.store.write(write).await?;
        if let Written::Stored(_) = written {
            self.feed.stored();
        }
        Ok(written)
    }

    /// Up to `limit` events passing `filter` after position `after`, cut at
    /// the page byte budget (at least one event); see
    /// [`FeedPage::through`].
    pub async fn feed_page(
        &self,
        after: u64,
        filter: &FeedFilter,
        limit: u32,
    ) -> Result<FeedPage, LogError> {
        Ok(self
            .store
            .feed(after, filter, limit, self.options.page_bytes)
            .await?)
    }

    /// Follows the events passing `filter` after position `after`, live.
    pub fn follow(&self, after: u64, filter: FeedFilter) -> Follow {
        self.feed.follow(after, filter)
    }

    /// How many followers this process serves now.
    pub fn feed_followers(&self) -> usize {
        self.feed.followers()
    }

    /// Ends every follower (at shutdown).
    pub fn close_feed(&self) {
        self.feed.close();
    }
}
