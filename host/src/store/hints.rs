//! Hints that another process may have changed something a process keeps
//! in memory: a reducer activation, new events in the feed. A hint carries
//! no data: the receiver rereads the database, so a hint lost or doubled
//! changes nothing but latency. PostgreSQL delivers a `NOTIFY` when the
//! changing transaction commits; SQLite cannot notify other processes, so
//! its hints are a short poll.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool};

use super::StoreError;
use super::write::unavailable;

/// A stream of hints.
#[async_trait]
pub trait Hints: Send {
    /// Waits for the next hint. An error means the hints lost their
    /// connection; the caller resynchronises and asks for new hints later.
    async fn changed(&mut self) -> Result<(), StoreError>;
}

/// Hints from `NOTIFY` on one PostgreSQL channel.
pub(crate) struct Notifications {
    listener: PgListener,
}

impl Notifications {
    /// Listens on `channel` with a connection of `pool`.
    pub(crate) async fn listen(pool: &PgPool, channel: &str) -> Result<Self, StoreError> {
        let mut listener = PgListener::connect_with(pool).await.map_err(unavailable)?;
        listener.listen(channel).await.map_err(unavailable)?;
        Ok(Self { listener })
    }
}

#[async_trait]
impl Hints for Notifications {
    async fn changed(&mut self) -> Result<(), StoreError> {
        // `Ok(None)`: the connection dropped and notifications may have been
        // missed; the caller rereads everything, which is what a hint asks.
        self.listener
            .try_recv()
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

/// A hint every interval.
pub(crate) struct Poll(pub(crate) Duration);

#[async_trait]
impl Hints for Poll {
    async fn changed(&mut self) -> Result<(), StoreError> {
        tokio::time::sleep(self.0).await;
        Ok(())
    }
}
