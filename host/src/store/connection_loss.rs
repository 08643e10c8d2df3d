//! When did this process last lose a database connection?
//!
//! Pooled connections are handed out without a test (a round trip per
//! query otherwise), so after an outage every idle connection of every pool
//! is a broken socket that fails the next query given it: a 503 for each,
//! after the database is back. Instead, a lost connection noted here
//! (through [`super::write::unavailable`], the one place database errors
//! are translated) makes the pools replace every connection opened before
//! it, at its next acquire: whatever broke one connection may have broken
//! them all, and a needless reconnect costs a few milliseconds once.
//!
//! The note is per process, not per pool: an error does not say which pool
//! its connection came from, and several pools to one server fail together.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Microseconds from [`origin`] to the last lost connection, plus one;
/// zero when none was lost.
static LAST_LOSS: AtomicU64 = AtomicU64::new(0);

/// The instant the notes are counted from.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Notes `error` if it says a connection was lost: an I/O, TLS or protocol
/// failure, or the server ending the session (SQLSTATE class 08, or 57P01
/// to 57P03: shut down, crashed, not accepting connections).
pub(crate) fn note(error: &sqlx::Error) {
    if is_lost_connection(error) {
        let micros = origin().elapsed().as_micros() as u64 + 1;
        LAST_LOSS.fetch_max(micros, Ordering::Relaxed);
    }
}

/// Whether a connection of age `age` was opened before the last lost
/// connection, and so must not be reused.
pub(crate) fn predates_last_loss(age: Duration) -> bool {
    match LAST_LOSS.load(Ordering::Relaxed) {
        0 => false,
        micros => {
            let lost_at = origin() + Duration::from_micros(micros - 1);
            lost_at.elapsed() < age
        }
    }
}

/// Whether `error` means the connection it happened on is gone.
fn is_lost_connection(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections opened before a lost connection are not reused; those
    /// opened after it are, and errors about the data change nothing.
    #[test]
    fn connections_older_than_a_loss_are_replaced() {
        let refused = sqlx::Error::RowNotFound;
        note(&refused);
        note(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        // Opened an hour ago: before the loss.
        assert!(predates_last_loss(Duration::from_secs(3600)));
        // Opened just now: after it.
        std::thread::sleep(Duration::from_millis(2));
        assert!(!predates_last_loss(Duration::from_micros(500)));
        assert!(!is_lost_connection(&refused));
        assert!(is_lost_connection(&sqlx::Error::WorkerCrashed));
    }
}
