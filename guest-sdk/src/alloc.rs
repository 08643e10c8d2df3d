//! The reducer's allocator inside the sandbox: talc, with freed small blocks
//! handed out again first.
//!
//! Decoding an event allocates a few small values (its strings) and frees
//! them once the event is applied, so a fold allocates and frees the same
//! few sizes once per event. talc finds, splits and merges a block each
//! time; a free list per size class (16-byte steps up to 128 bytes) makes
//! that a pointer swap. Blocks on the lists stay there rather than merge
//! back into talc's free memory, so the memory kept aside is at most what
//! the fold once held in small blocks at the same time.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;

/// Size classes are multiples of this, which is also their alignment.
const STEP: usize = 16;
/// How many size classes: blocks up to `STEP * CLASSES` bytes.
const CLASSES: usize = 8;

/// An allocator (talc in the sandbox) behind one free list per small size
/// class.
pub struct FoldAllocator<A> {
    inner: A,
    /// The first free block of each class; each free block begins with a
    /// pointer to the next.
    free: UnsafeCell<[*mut u8; CLASSES]>,
}

// SAFETY: WebAssembly without the atomics feature runs one thread, so the
// free lists are never touched concurrently.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl<A: Sync> Sync for FoldAllocator<A> {}

impl<A> FoldAllocator<A> {
    /// `inner`, with empty free lists in front.
    pub const fn new(inner: A) -> Self {
        Self {
            inner,
            free: UnsafeCell::new([ptr::null_mut(); CLASSES]),
        }
    }

    /// The size class of `layout`, if it is small.
    fn class(layout: Layout) -> Option<usize> {
        (layout.size() <= STEP * CLASSES && layout.align() <= STEP)
            .then(|| layout.size().saturating_sub(1) / STEP)
    }

    /// The layout of a block of `class` in the inner allocator.
    fn block(class: usize) -> Layout {
        // SAFETY: the size is a small multiple of the alignment, a power of
        // two.
        unsafe { Layout::from_size_align_unchecked((class + 1) * STEP, STEP) }
    }
}

// SAFETY: small blocks come from the inner allocator with their class's
// layout, which is at least as large and as aligned as asked, and go back
// only to the list of the class they were allocated for (the layout at
// `dealloc` is the one at `alloc`); everything else is the inner
// allocator's.
unsafe impl<A: GlobalAlloc> GlobalAlloc for FoldAllocator<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = Self::class(layout) else {
            return unsafe { self.inner.alloc(layout) };
        };
        // SAFETY: single-threaded (see `Sync`), and no reference to the lists
        // outlives this call.
        let free = unsafe { &mut *self.free.get() };
        let head = free[class];
        if head.is_null() {
            return unsafe { self.inner.alloc(Self::block(class)) };
        }
        // SAFETY: a free block's first word is the next free block.
        free[class] = unsafe { head.cast::<*mut u8>().read() };
        head
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(class) = Self::class(layout) else {
            return unsafe { self.inner.dealloc(ptr, layout) };
        };
        // SAFETY: as in `alloc`; the block is at least one aligned pointer
        // large and no longer in use.
        let free = unsafe { &mut *self.free.get() };
        unsafe { ptr.cast::<*mut u8>().write(free[class]) };
        free[class] = ptr;
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to the
        // alignment, does not overflow.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (Self::class(layout), Self::class(new_layout)) {
            (None, None) => unsafe { self.inner.realloc(ptr, layout, new_size) },
            (Some(old), Some(new)) if old == new => ptr,
            _ => {
                let moved = unsafe { self.alloc(new_layout) };
                if !moved.is_null() {
                    unsafe {
                        ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    /// A small deterministic generator, so the test needs no dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self, below: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % below as u64) as usize
        }
    }

    /// Blocks of every size class and beyond, allocated, grown, shrunk and
    /// freed in a random order: each keeps its contents and its alignment,
    /// no two live blocks overlap, and freed small blocks are reused.
    #[test]
    fn blocks_keep_their_bytes_and_never_overlap() {
        let allocator = FoldAllocator::new(System);
        let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
        // (pointer, layout, fill byte) of each live block.
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        let mut reused = 0;
        let mut freed = std::collections::HashSet::new();
        for step in 0..20_000u32 {
            let fill = step as u8;
            match random.next(4) {
                0 | 1 => {
                    let size = 1 + random.next(300);
                    let layout = Layout::from_size_align(size, 1 << random.next(6)).unwrap();
                    let block = unsafe { allocator.alloc(layout) };
                    assert!(!block.is_null());
                    assert_eq!(block as usize % layout.align(), 0);
                    reused += usize::from(freed.contains(&(block as usize)));
                    unsafe { block.write_bytes(fill, size) };
                    live.push((block, layout, fill));
                }
                2 if !live.is_empty() => {
                    let (block, layout, fill) = live.swap_remove(random.next(live.len()));
                    let bytes = unsafe { std::slice::from_raw_parts(block, layout.size()) };
                    assert!(bytes.iter().all(|&b| b == fill));
                    unsafe { allocator.dealloc(block, layout) };
                    freed.insert(block as usize);
                }
                3 if !live.is_empty() => {
                    let at = random.next(live.len());
                    let (block, layout, old_fill) = live[at];
                    let new_size = 1 + random.next(300);
                    let moved = unsafe { allocator.realloc(block, layout, new_size) };
                    assert!(!moved.is_null());
                    assert_eq!(moved as usize % layout.align(), 0);
                    let kept = layout.size().min(new_size);
                    let bytes = unsafe { std::slice::from_raw_parts(moved, kept) };
                    assert!(bytes.iter().all(|&b| b == old_fill));
                    unsafe { moved.write_bytes(fill, new_size) };
                    let layout = Layout::from_size_align(new_size, layout.align()).unwrap();
                    live[at] = (moved, layout, fill);
                }
                _ => {}
            }
            if step % 64 != 0 {
                continue;
            }
            let mut spans: Vec<(usize, usize)> = live
                .iter()
                .map(|&(block, layout, _)| (block as usize, block as usize + layout.size()))
                .collect();
            spans.sort_unstable();
            assert!(
                spans.windows(2).all(|w| w[0].1 <= w[1].0),
                "live blocks overlap"
            );
        }
        assert!(
            reused > 1_000,
            "freed small blocks were reused {reused} times"
        );
        for (block, layout, _) in live {
            unsafe { allocator.dealloc(block, layout) };
        }
    }
}
