//! The eventlogs host.
//!
//! Layout: `runtime` runs reducers — sandboxed WebAssembly components that
//! fold a log's events into an aggregate — and knows nothing about where
//! events are stored. `store` keeps logs and events (PostgreSQL, or SQLite
//! embedded) and knows nothing about WebAssembly; `cache` keeps folded
//! aggregates (Redis, or in-process); `log_id` names logs. The log manager
//! and the HTTP API build on these.

#![deny(missing_docs)]

pub mod cache;
mod log_id;
pub mod runtime;
pub mod store;

pub use log_id::{LogId, ParseLogIdError};
