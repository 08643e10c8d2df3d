//! Fingerprints of write requests, stored with their idempotency key so a
//! retry (same fingerprint) is told from a reuse (different fingerprint).

use sha2::{Digest, Sha256};

use crate::LogId;
use crate::payload::Payload;

/// sha256 over what makes a request what it is: the operation, the log, the
/// reducer (for creates) and the events' exact text, each length-prefixed
/// so no two requests share an encoding.
pub(crate) fn fingerprint(
    operation: &str,
    log_id: Option<LogId>,
    reducer: &str,
    events: &[Payload],
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
        field(event.as_str().as_bytes());
    }
    hash.finalize().to_vec()
}
