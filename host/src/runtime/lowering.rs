//! How a batch of events is written into a reducer's memory.
//!
//! The contract's `event-batch` is a `list<event-meta>` and one buffer of
//! payloads. wasmtime lowers a list of records record by record, looking up
//! the guest's memory again for every field: for a batch of small events
//! that was about a tenth of the whole fold (docs/reducer-contract.md,
//! "Measurements"). The host therefore lowers its own copies of the two
//! records: [`PackedBatch`] derived as usual, and [`EventMeta`] by hand, so
//! that a whole list of metadata is written in one pass over one borrowed
//! slice of memory. Both type-check against the contract like the generated
//! bindings; a component whose `fold` does not check is refused when it is
//! loaded ([`FoldLowering::check`]). The bytes written are the canonical
//! ABI's, so reducers see no difference.
//!
//! This implements traits wasmtime documents as internal (`Lower`,
//! `ComponentType`); the workspace pins wasmtime's exact version, and every
//! fold of the test suite goes through it (`host/tests/payment.rs` compares
//! folds in the sandbox with the native fold, batch by batch).

use std::mem::MaybeUninit;

use wasmtime::AsContextMut;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{ComponentType, Func, InstancePre, Lower, ResourceAny, TypedFunc};

use super::bindings::wit;

/// The contract's `event-batch`, as the host lowers it.
#[derive(Debug, Clone, ComponentType, Lower)]
#[component(record)]
pub(crate) struct PackedBatch {
    /// One entry per event, in log order.
    pub(crate) events: Vec<EventMeta>,
    /// The UTF-8 JSON payloads of all events, back to back.
    pub(crate) payloads: Vec<u8>,
}

/// The contract's `event-meta`: where one event sits inside a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventMeta {
    /// The event's 0-based position in its log.
    pub(crate) index: u64,
    /// When it was recorded: microseconds since the Unix epoch, UTC.
    pub(crate) recorded_at: i64,
    /// Byte offset of its payload inside the batch's payloads.
    pub(crate) offset: u32,
    /// Byte length of its payload.
    pub(crate) len: u32,
}

/// `event-meta` as wasmtime derives it: the type check, the ABI and the
/// lowering of a single record are this one's.
#[derive(Clone, Copy, ComponentType, Lower)]
#[component(record)]
pub(crate) struct DerivedMeta {
    index: u64,
    #[component(name = "recorded-at")]
    recorded_at: i64,
    offset: u32,
    len: u32,
}

impl From<EventMeta> for DerivedMeta {
    fn from(meta: EventMeta) -> Self {
        let EventMeta {
            index,
            recorded_at,
            offset,
            len,
        } = meta;
        Self {
            index,
            recorded_at,
            offset,
            len,
        }
    }
}

/// Bytes of one `event-meta` in the canonical ABI: `u64`, `s64`, `u32`,
/// `u32`, each at its natural alignment, so without padding.
const META_BYTES: usize = 24;
const _: () = assert!(DerivedMeta::SIZE32 == META_BYTES);

// SAFETY: every item is `DerivedMeta`'s, which wasmtime derives for the same
// record; `EventMeta` converts into it field for field.
unsafe impl ComponentType for EventMeta {
    type Lower = <DerivedMeta as ComponentType>::Lower;

    const ABI: CanonicalAbiInfo = DerivedMeta::ABI;

    const MAY_REQUIRE_REALLOC: bool = false;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        DerivedMeta::typecheck(ty, types)
    }
}

// SAFETY: a single record is lowered by `DerivedMeta`; a list is written as
// the canonical ABI lays it out (little-endian fields at offsets 0, 8, 16
// and 20 of each 24-byte element), through a bounds-checked slice.
unsafe impl Lower for EventMeta {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        DerivedMeta::from(*self).linear_lower_to_flat(cx, ty, dst)
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        DerivedMeta::from(*self).linear_lower_to_memory(cx, ty, offset)
    }

    fn linear_store_list_to_memory<T>(
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        offset: usize,
        items: &[Self],
    ) -> wasmtime::Result<()> {
        let bytes = items.len() * META_BYTES;
        let Some(dst) = cx.as_slice_mut().get_mut(offset..offset + bytes) else {
            wasmtime::bail!("event metadata would lie outside the reducer's memory");
        };
        for (slot, meta) in dst.chunks_exact_mut(META_BYTES).zip(items) {
            slot[0..8].copy_from_slice(&meta.index.to_le_bytes());
            slot[8..16].copy_from_slice(&meta.recorded_at.to_le_bytes());
            slot[16..20].copy_from_slice(&meta.offset.to_le_bytes());
            slot[20..24].copy_from_slice(&meta.len.to_le_bytes());
        }
        Ok(())
    }
}

type FoldParams<'a> = (ResourceAny, &'a PackedBatch);
type FoldResults = (Result<(), wit::ReducerError>,);

/// The interface whose `fold` is called this way.
const INTERFACE: &str = "eventlogs:reducer/reducer@0.2.0";
/// The export name of the aggregate's `fold` method.
const FOLD: &str = "[method]aggregate.fold";

/// Proof that a reducer version's `fold` export takes a batch as
/// [`PackedBatch`] lowers it. Only [`FoldLowering::check`] makes one, and a
/// [`Reducer`](super::Reducer) keeps the one made for its own component.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FoldLowering(());

impl FoldLowering {
    /// Type-checks the component's `fold` export against [`PackedBatch`],
    /// as the generated bindings check it against their own types, before
    /// anything is instantiated.
    pub(crate) fn check<T>(pre: &InstancePre<T>) -> wasmtime::Result<Self> {
        let component = pre.component();
        let Some((_, interface)) = component.get_export(None, INTERFACE) else {
            wasmtime::bail!("no export `{INTERFACE}` found");
        };
        let Some((ComponentItem::ComponentFunc(fold), _)) =
            component.get_export(Some(&interface), FOLD)
        else {
            wasmtime::bail!("no function `{FOLD}` found in `{INTERFACE}`");
        };
        fold.typecheck::<FoldParams<'_>, FoldResults>(&pre.instance_type())?;
        Ok(Self(()))
    }

    /// Calls `fold` (the export of an instance of the component this proof
    /// was made for) on `aggregate` with `batch`.
    pub(crate) fn call(
        self,
        fold: Func,
        store: impl AsContextMut,
        aggregate: ResourceAny,
        batch: &PackedBatch,
    ) -> wasmtime::Result<Result<(), wit::ReducerError>> {
        // SAFETY: `check` type-checked this component's `fold` against these
        // very parameter and result types (lifetimes aside, which the type
        // check does not see), as the generated bindings do before their own
        // unchecked calls.
        let typed = unsafe { TypedFunc::<FoldParams<'_>, FoldResults>::new_unchecked(fold) };
        let (result,) = typed.call(store, (aggregate, batch))?;
        Ok(result)
    }
}
