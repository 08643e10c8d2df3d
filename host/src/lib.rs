//! The eventlogs host.
//!
//! Layout: `runtime` runs reducers — sandboxed WebAssembly components that
//! fold a log's events into an aggregate — and knows nothing about where
//! events are stored. `store` keeps logs and events (PostgreSQL, or SQLite
//! embedded) and knows nothing about WebAssembly; `cache` keeps folded
//! aggregates (Redis, or in-process); `registry` holds the loaded reducer
//! versions by name; `log_manager` ties them together into create, append,
//! load and reduce; `log_id` names logs. The HTTP API builds on these.

#![deny(missing_docs)]

pub mod cache;
mod clock;
mod log_id;
pub mod log_manager;
pub mod registry;
pub mod runtime;
pub mod store;

pub use log_id::{LogId, ParseLogIdError};
