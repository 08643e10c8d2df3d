//! Typed failures of a fold.

use std::fmt;

/// Why a fold stopped. Mirrors the contract's `reducer-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoldError {
    /// The payload of event `index` did not decode into the event type.
    UndecodableEvent {
        /// The event's index in its log.
        index: u64,
        /// The decoder's explanation.
        message: String,
    },
    /// [`crate::Aggregate::validate`] refused event `index`.
    RejectedEvent {
        /// The event's index in its log.
        index: u64,
        /// The reducer's reason.
        message: String,
    },
    /// A serialised aggregate did not decode.
    UndecodableState(String),
    /// The aggregate could not be serialised.
    UnserializableState(String),
    /// A batch entry points outside the payload buffer.
    InvalidBatch(String),
}

impl fmt::Display for FoldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UndecodableEvent { index, message } => {
                write!(f, "event {index} does not decode: {message}")
            }
            Self::RejectedEvent { index, message } => {
                write!(f, "event {index} rejected: {message}")
            }
            Self::UndecodableState(message) => write!(f, "state does not decode: {message}"),
            Self::UnserializableState(message) => {
                write!(f, "state does not serialise: {message}")
            }
            Self::InvalidBatch(message) => write!(f, "invalid batch: {message}"),
        }
    }
}

impl std::error::Error for FoldError {}
