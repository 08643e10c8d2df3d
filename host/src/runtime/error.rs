//! Typed failures of the runtime: a reducer refused at load, a reducer call
//! that failed, and the runtime itself failing to start.
//!
//! A reducer reporting a bad event is data ([`FailureKind::is_trap`] is
//! false): the client sent something the reducer refuses. Everything else is
//! the reducer misbehaving, detected by the host, and its instance is
//! discarded.

use std::time::Duration;

use wasmtime::Trap;

use super::bindings::wit;
use super::sandbox::Sandbox;
use crate::Version;

/// The runtime could not be set up (an invalid engine configuration).
#[derive(Debug, thiserror::Error)]
#[error("cannot start the WebAssembly runtime: {0}")]
pub struct RuntimeError(String);

impl RuntimeError {
    pub(crate) fn engine(error: wasmtime::Error) -> Self {
        Self(format!("{error:#}"))
    }
}

/// Why uploaded bytes are not an acceptable reducer. Each variant's text is
/// safe to show to the operator who uploaded them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvalidComponent {
    /// Larger than [`super::Limits::component_bytes`].
    #[error("component is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// The upload's size.
        size: usize,
        /// The configured cap.
        limit: usize,
    },
    /// The bytes are not a WebAssembly component this host can compile.
    #[error("not a valid WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component imports interfaces reducers may not use (all of them
    /// are listed).
    #[error("component imports what reducers may not use: {}", .0.join(", "))]
    DisallowedImports(Vec<String>),
    /// The component does not export the reducer interface this host
    /// expects (another world, or another version of it).
    #[error("component does not export the eventlogs:reducer/reducer@0.2.0 interface: {0}")]
    WrongWorld(String),
    /// Creating and serialising a fresh aggregate failed.
    #[error("component failed its trial run: {0}")]
    InitFailed(#[source] ReducerError),
}

/// A reducer call failed. Names the reducer version and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reducer {version}: {kind}")]
pub struct ReducerError {
    /// The version that failed.
    pub version: Version,
    /// What went wrong.
    pub kind: FailureKind,
}

/// What went wrong in a reducer call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureKind {
    /// An event's payload did not decode into the reducer's event type.
    #[error("event {index} does not decode: {message}")]
    UndecodableEvent {
        /// The event's index in its log.
        index: u64,
        /// The reducer's explanation.
        message: String,
    },
    /// The reducer refused to apply an event.
    #[error("event {index} rejected: {message}")]
    RejectedEvent {
        /// The event's index in its log.
        index: u64,
        /// The reducer's reason.
        message: String,
    },
    /// A cached aggregate handed back to the reducer did not decode.
    #[error("stored aggregate does not decode: {0}")]
    UndecodableState(String),
    /// The reducer could not serialise its aggregate.
    #[error("aggregate does not serialise: {0}")]
    UnserializableState(String),
    /// The host built a malformed batch (a host bug).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// A call ran past its deadline and was interrupted.
    #[error("call exceeded its {0:?} deadline")]
    Timeout(Duration),
    /// The reducer asked for more linear memory than allowed.
    #[error("memory limit of {0} bytes exceeded")]
    OutOfMemory(usize),
    /// The reducer exhausted its WebAssembly stack.
    #[error("stack overflow (limit {0} bytes)")]
    StackOverflow(usize),
    /// The reducer panicked; the message is what it printed.
    #[error("panicked: {0}")]
    Panic(String),
    /// The aggregate JSON is larger than allowed.
    #[error("aggregate of {size} bytes exceeds the {limit}-byte output limit")]
    OutputTooLarge {
        /// The aggregate's size.
        size: usize,
        /// The configured cap.
        limit: usize,
    },
    /// The reducer returned an aggregate that is not JSON.
    #[error("returned an aggregate that is not valid JSON: {0}")]
    InvalidOutput(String),
    /// No instance could be created because every instance slot is busy
    /// (retryable: answered 503).
    #[error("cannot instantiate: {0}")]
    Instantiation(String),
    /// Any other trap (an invalid memory access, a division by zero, an
    /// explicit exit).
    #[error("trapped: {0}")]
    Trap(String),
}

impl FailureKind {
    /// True when the reducer misbehaved (its instance is discarded), false
    /// when it reported a problem with the data as a typed error.
    pub fn is_trap(&self) -> bool {
        !matches!(
            self,
            Self::UndecodableEvent { .. }
                | Self::RejectedEvent { .. }
                | Self::UndecodableState(_)
                | Self::UnserializableState(_)
                | Self::InvalidBatch(_)
        )
    }

    /// A short, stable name for the kind, for metrics and problem types.
    pub fn name(&self) -> &'static str {
        match self {
            Self::UndecodableEvent { .. } => "undecodable-event",
            Self::RejectedEvent { .. } => "rejected-event",
            Self::UndecodableState(_) => "undecodable-state",
            Self::UnserializableState(_) => "unserializable-state",
            Self::InvalidBatch(_) => "invalid-batch",
            Self::Timeout(_) => "timeout",
            Self::OutOfMemory(_) => "out-of-memory",
            Self::StackOverflow(_) => "stack-overflow",
            Self::Panic(_) => "panic",
            Self::OutputTooLarge { .. } => "output-too-large",
            Self::InvalidOutput(_) => "invalid-output",
            Self::Instantiation(_) => "instantiation",
            Self::Trap(_) => "trap",
        }
    }

    /// Translates the reducer's own typed error, its text cut to
    /// [`MAX_MESSAGE_BYTES`].
    pub(crate) fn reported(error: wit::ReducerError) -> Self {
        match error {
            wit::ReducerError::UndecodableEvent(e) => Self::UndecodableEvent {
                index: e.index,
                message: bounded(e.message),
            },
            wit::ReducerError::RejectedEvent(e) => Self::RejectedEvent {
                index: e.index,
                message: bounded(e.message),
            },
            wit::ReducerError::UndecodableState(m) => Self::UndecodableState(bounded(m)),
            wit::ReducerError::UnserializableState(m) => Self::UnserializableState(bounded(m)),
            wit::ReducerError::InvalidBatch(m) => Self::InvalidBatch(bounded(m)),
        }
    }

    /// Explains a trap, using what the sandbox observed during the call.
    pub(crate) fn trapped(
        error: &wasmtime::Error,
        sandbox: &Sandbox,
        limits: &super::Limits,
    ) -> Self {
        if sandbox.refused_memory() {
            return Self::OutOfMemory(limits.memory_bytes);
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => return Self::Timeout(limits.call_timeout),
            Some(Trap::StackOverflow) => return Self::StackOverflow(limits.wasm_stack_bytes),
            _ => {}
        }
        let output = sandbox.output();
        if let Some(at) = output.find("panicked at") {
            return Self::Panic(bounded(panic_message(&output[at..])));
        }
        if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return Self::Trap(format!("exited with status {}", exit.0));
        }
        Self::Trap(bounded(match error.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{error:#}"),
        }))
    }
}

/// The most bytes of text a reducer or the WebAssembly engine contributes to
/// one error: it reaches clients and log lines.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `text` cut to at most [`MAX_MESSAGE_BYTES`] (on a character boundary),
/// saying how much was cut.
pub(crate) fn bounded(mut text: String) -> String {
    if text.len() <= MAX_MESSAGE_BYTES {
        return text;
    }
    let total = text.len();
    let mut end = MAX_MESSAGE_BYTES - 40;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!("… ({} more bytes)", total - end));
    text
}

/// Rust prints `panicked at FILE:LINE:COL:\nMESSAGE`; keep the message and
/// the location, on one line.
fn panic_message(text: &str) -> String {
    let text = text.trim_start_matches("panicked at").trim();
    match text.split_once(":\n") {
        Some((location, message)) => {
            let message = message.lines().next().unwrap_or_default().trim();
            format!("{message} (at {location})")
        }
        None => text.lines().next().unwrap_or_default().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reducer_text_is_cut_to_a_kibibyte() {
        let long = "é".repeat(10_000);
        let kind = FailureKind::reported(wit::ReducerError::RejectedEvent(wit::EventError {
            index: 3,
            message: long.clone(),
        }));
        let FailureKind::RejectedEvent { message, .. } = kind else {
            panic!("{kind:?}")
        };
        assert!(message.len() <= MAX_MESSAGE_BYTES, "{}", message.len());
        assert!(message.ends_with("more bytes)"), "{message}");
        assert!(long.starts_with(message.split('…').next().unwrap()));
        assert_eq!(bounded("short".into()), "short");
    }

    #[test]
    fn panic_message_keeps_message_and_location() {
        let printed = "panicked at src/lib.rs:17:9:\ngrenade went off at event 3\nnote: run with `RUST_BACKTRACE=1`";
        assert_eq!(
            panic_message(printed),
            "grenade went off at event 3 (at src/lib.rs:17:9)"
        );
    }
}
