//! The WebAssembly glue behind [`crate::export_reducer!`]. Reducer authors
//! never use this module directly; it is public only so the macro can reach
//! it from the author's crate.

use std::cell::RefCell;
use std::marker::PhantomData;

use crate::{Aggregate, CachingPolicy, FoldError, RawEvent};

#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "reducer-component",
        default_bindings_module: "eventlogs_guest::export::bindings",
        pub_export_macro: true,
        export_macro_name: "export_reducer_component",
    });
}

use bindings::exports::eventlogs::reducer::reducer as wit;
use bindings::exports::eventlogs::reducer::reducer as wit_types;

pub use bindings::export_reducer_component;

#[cfg(all(feature = "fast-alloc", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: crate::alloc::FoldAllocator<talc::wasm::WasmDynamicTalc> =
    crate::alloc::FoldAllocator::new(talc::wasm::new_wasm_dynamic_allocator());
pub use wit::Guest;

/// The exported interface, implemented once for every [`Aggregate`].
pub struct Reducer<A>(PhantomData<A>);

impl<A: Aggregate> Guest for Reducer<A> {
    type Aggregate = GuestAggregate<A>;

    fn validates() -> bool {
        A::VALIDATES
    }
}

/// An aggregate held inside the component between calls.
pub struct GuestAggregate<A>(RefCell<A>);

impl<A: Aggregate> wit::GuestAggregate for GuestAggregate<A> {
    fn new() -> Self {
        Self(RefCell::new(A::default()))
    }

    fn from_json(state: Vec<u8>) -> Result<wit::Aggregate, wit_types::ReducerError> {
        let aggregate: A = serde_json::from_slice(&state)
            .map_err(|e| wit_types::ReducerError::UndecodableState(e.to_string()))?;
        Ok(wit::Aggregate::new(Self(RefCell::new(aggregate))))
    }

    fn fold(&self, batch: wit_types::EventBatch) -> Result<(), wit_types::ReducerError> {
        let payloads = &batch.payloads;
        let mut aggregate = self.0.borrow_mut();
        // One UTF-8 check for the whole buffer rather than one per event:
        // the payloads of a well-formed batch are each UTF-8, so their
        // concatenation is too, and a payload whose bounds fall on character
        // boundaries of a valid buffer is valid itself. When the buffer is
        // not valid, each event is checked on its own to find the culprit.
        let text = std::str::from_utf8(payloads).ok();
        for meta in &batch.events {
            let start = meta.offset as usize;
            let Some(end) = start
                .checked_add(meta.len as usize)
                .filter(|&end| end <= payloads.len())
            else {
                return Err(wit_types::ReducerError::InvalidBatch(format!(
                    "event {} lies outside the {} payload bytes",
                    meta.index,
                    payloads.len()
                )));
            };
            let folded = match text.and_then(|text| text.get(start..end)) {
                Some(payload) => {
                    crate::fold::apply(&mut *aggregate, meta.index, meta.recorded_at, payload)
                }
                None => crate::fold_raw(
                    &mut *aggregate,
                    [RawEvent {
                        index: meta.index,
                        recorded_at: meta.recorded_at,
                        payload: &payloads[start..end],
                    }],
                ),
            };
            folded.map_err(into_wit)?;
        }
        Ok(())
    }

    fn to_json(&self) -> Result<Vec<u8>, wit_types::ReducerError> {
        serde_json::to_vec(&*self.0.borrow())
            .map_err(|e| wit_types::ReducerError::UnserializableState(e.to_string()))
    }

    fn caching_policy(&self) -> wit_types::CachingPolicy {
        match self.0.borrow().caching_policy() {
            CachingPolicy::Cache => wit_types::CachingPolicy::Cache,
            CachingPolicy::Skip => wit_types::CachingPolicy::Skip,
        }
    }
}

fn into_wit(error: FoldError) -> wit_types::ReducerError {
    use wit_types::{EventError, ReducerError};
    match error {
        FoldError::UndecodableEvent { index, message } => {
            ReducerError::UndecodableEvent(EventError { index, message })
        }
        FoldError::RejectedEvent { index, message } => {
            ReducerError::RejectedEvent(EventError { index, message })
        }
        FoldError::UndecodableState(message) => ReducerError::UndecodableState(message),
        FoldError::UnserializableState(message) => ReducerError::UnserializableState(message),
        FoldError::InvalidBatch(message) => ReducerError::InvalidBatch(message),
    }
}

/// Exports an [`Aggregate`] as the reducer of this component.
///
/// Use it once, at the crate root of a `cdylib` built for `wasm32-wasip2`.
#[macro_export]
macro_rules! export_reducer {
    ($aggregate:ty) => {
        const _: () = {
            type __EventlogsReducer = $crate::export::Reducer<$aggregate>;
            $crate::export::export_reducer_component!(__EventlogsReducer);
        };
    };
}
