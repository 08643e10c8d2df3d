//! The eventlogs host.
//!
//! Layout: `runtime` runs reducers — sandboxed WebAssembly components that
//! fold a log's events into an aggregate — and knows nothing about where
//! events are stored. Storage, caching, the log manager and the HTTP API
//! build on it and live in their own modules.

#![deny(missing_docs)]

pub mod runtime;
