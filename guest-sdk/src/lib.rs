//! Write eventlogs reducers in plain Rust.
//!
//! A reducer folds a log's events into an aggregate. Implement [`Aggregate`]
//! for your state type and export it with [`export_reducer!`]:
//!
//! ```
//! use eventlogs_guest::{Aggregate, EventRecord};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! pub struct Tally { total: i64 }
//!
//! #[derive(Deserialize)]
//! pub enum TallyEvent { Added { amount: i64 } }
//!
//! impl Aggregate for Tally {
//!     type Event = TallyEvent;
//!     fn apply(&mut self, record: &EventRecord<TallyEvent>) {
//!         match record.event() {
//!             TallyEvent::Added { amount } => self.total += amount,
//!         }
//!     }
//! }
//!
//! eventlogs_guest::export_reducer!(Tally);
//! ```
//!
//! Built for `wasm32-wasip2`, the macro exports the `eventlogs:reducer`
//! world (its WIT travels in the crate, `wit/`). Built natively it only checks the
//! type, so the same `impl Aggregate` is unit-tested with plain `cargo test`,
//! using [`fold`] or [`fold_raw`] — the very code the component runs.
//!
//! Layout: `aggregate` holds the trait authors implement, `record` the event
//! wrapper they receive, `fold` the batch loop shared by native and
//! WebAssembly builds, `error` its typed failures, and `export` (WebAssembly
//! only) the generated bindings the macro hides.

mod aggregate;
#[cfg(any(
    test,
    all(
        target_arch = "wasm32",
        feature = "fast-alloc",
        not(target_feature = "atomics")
    )
))]
#[allow(
    unsafe_code,
    reason = "a global allocator is unsafe by definition; see the module"
)]
mod alloc;
mod error;
mod fold;
mod record;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod export;

pub use aggregate::{Aggregate, CachingPolicy, Rejection};
pub use error::FoldError;
pub use fold::{RawEvent, fold, fold_raw};
pub use record::EventRecord;

/// Exports an [`Aggregate`] as the reducer of this component.
///
/// Use it once, at the crate root of a `cdylib` built for `wasm32-wasip2`.
/// On other targets it only checks that the type implements [`Aggregate`].
#[cfg(not(target_arch = "wasm32"))]
#[macro_export]
macro_rules! export_reducer {
    ($aggregate:ty) => {
        const _: fn() = || {
            fn must_be_an_aggregate<A: $crate::Aggregate>() {}
            must_be_an_aggregate::<$aggregate>();
        };
    };
}
