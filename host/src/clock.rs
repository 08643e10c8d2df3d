//! The host's clock, in the unit every timestamp here uses.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in microseconds since the Unix epoch, UTC.
pub(crate) fn now_micros() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX)
}
