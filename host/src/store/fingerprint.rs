//! Fingerprints of write requests, stored with their idempotency key so a
//! retry (same fingerprint) is told from a reuse (different fingerprint).

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::LogId;

/// sha256 over what makes a request what it is: the operation, the log, the
/// reducer (for creates) and the events, each length-prefixed so no two
/// requests share an encoding. The expected index is left out on purpose:
/// a retry whose expectation went stale is still the same request.
pub(crate) fn fingerprint(
    operation: &str,
    log_id: Option<LogId>,
    reducer: &str,
    events: &[Value],
) -> Vec<u8> {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(operation.as_bytes());
    field(log_id.map(|id| id.as_uuid()).unwrap_or_default().as_bytes());
    field(reducer.as_bytes());
    for event in events {
        field(event.to_string().as_bytes());
    }
    hash.finalize().to_vec()
}
