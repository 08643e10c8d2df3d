//! The eventlogs host.
//!
//! Layout: `runtime` runs reducers — sandboxed WebAssembly components that
//! fold a log's events into an aggregate — and knows nothing about where
//! events are stored. `store` keeps logs and events (PostgreSQL, or SQLite
//! embedded) and knows nothing about WebAssembly; `cache` keeps folded
//! aggregates (Redis, or in-process); `registry` deploys reducer versions
//! into the store's catalog and keeps them compiled, following activations
//! made by other processes; `log_manager` ties them together into
//! validated writes, loads, reductions and guarded deploys, and is the only
//! door `http` uses; `feed` follows every log's events live, in position
//! order. `log_id` names logs, `version` names reducer versions
//! and `payload` is an event's JSON, kept exactly as sent. `http` is the
//! API over them, `config` the daemon's settings and `daemon` puts
//! everything together.

#![deny(missing_docs)]

pub mod cache;
mod clock;
pub mod config;
pub mod daemon;
pub mod feed;
pub mod http;
mod log_id;
pub mod log_manager;
pub mod payload;
pub mod registry;
pub mod runtime;
pub mod store;
mod version;

pub use log_id::{LogId, ParseLogIdError};
pub use version::{ParseVersionError, Version};
