//! The packed batch of events handed to a reducer in one call.

use super::lowering::{EventMeta, PackedBatch};

/// Consecutive events of one log, packed as the contract's `event-batch`:
/// one buffer of concatenated JSON payloads plus a fixed-size entry per
/// event, so handing a batch to a reducer costs two copies, not one
/// allocation per event. Reuse one batch across calls with
/// [`EventBatch::clear`] to keep the host free of per-batch allocation too.
#[derive(Debug, Clone)]
pub struct EventBatch {
    inner: PackedBatch,
}

/// The payload buffer would pass 4 GiB, which the contract's 32-bit offsets
/// cannot address. Split the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event batch payloads would exceed 4 GiB; split the batch")]
pub struct BatchFull;

impl Default for EventBatch {
    fn default() -> Self {
        Self::with_capacity(0, 0)
    }
}

impl EventBatch {
    /// An empty batch with room for `events` events and `payload_bytes`
    /// bytes of JSON.
    pub fn with_capacity(events: usize, payload_bytes: usize) -> Self {
        Self {
            inner: PackedBatch {
                events: Vec::with_capacity(events),
                payloads: Vec::with_capacity(payload_bytes),
            },
        }
    }

    /// Appends one event: its index in the log, when it was recorded
    /// (microseconds since the Unix epoch, UTC) and its JSON payload.
    pub fn push(&mut self, index: u64, recorded_at: i64, payload: &[u8]) -> Result<(), BatchFull> {
        let offset = u32::try_from(self.inner.payloads.len()).map_err(|_| BatchFull)?;
        let len = u32::try_from(payload.len()).map_err(|_| BatchFull)?;
        offset.checked_add(len).ok_or(BatchFull)?;
        self.inner.payloads.extend_from_slice(payload);
        self.inner.events.push(EventMeta {
            index,
            recorded_at,
            offset,
            len,
        });
        Ok(())
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.inner.events.clear();
        self.inner.payloads.clear();
    }

    /// How many events the batch holds.
    pub fn len(&self) -> usize {
        self.inner.events.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.inner.events.is_empty()
    }

    /// Total bytes of JSON payload in the batch.
    pub fn payload_bytes(&self) -> usize {
        self.inner.payloads.len()
    }

    /// The index of the last event, if any.
    pub fn last_index(&self) -> Option<u64> {
        self.inner.events.last().map(|e| e.index)
    }

    pub(crate) fn packed(&self) -> &PackedBatch {
        &self.inner
    }
}
