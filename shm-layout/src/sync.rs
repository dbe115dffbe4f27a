//! The atomics and slot cells the ring protocol uses: std's, or loom's under
//! `cfg(loom)` so that the real producer and consumer run under the model
//! checker (crossbeam's `primitive` pattern).
//!
//! Under loom two things differ, both invisible to the normal build: a
//! ring's control block lives beside the segment rather than in it (loom's
//! atomics are not plain words), and every slot access is announced to a
//! loom cell, so a slot read not ordered after its write is reported.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

/// Announces slot accesses to loom; zero-sized and empty in a normal build.
#[cfg(not(loom))]
#[derive(Clone, Copy)]
pub(crate) struct SlotCells<'a>(std::marker::PhantomData<&'a ()>);

#[cfg(not(loom))]
impl SlotCells<'_> {
    pub(crate) fn new() -> Self {
        SlotCells(std::marker::PhantomData)
    }
    #[inline(always)]
    pub(crate) fn write(&self, _slot: usize) {}
    #[inline(always)]
    pub(crate) fn read(&self, _slot: usize) {}
}

/// One loom cell per slot of a ring.
#[cfg(loom)]
#[derive(Clone, Copy)]
pub(crate) struct SlotCells<'a>(&'a [loom::cell::UnsafeCell<()>]);

#[cfg(loom)]
impl<'a> SlotCells<'a> {
    pub(crate) fn new(cells: &'a [loom::cell::UnsafeCell<()>]) -> Self {
        SlotCells(cells)
    }
    /// The producer writes slot `slot`: loom checks every earlier read and
    /// write of it happened before.
    pub(crate) fn write(&self, slot: usize) {
        self.0[slot].with_mut(|_| ());
    }
    /// The consumer reads slot `slot`: loom checks its last write happened
    /// before.
    pub(crate) fn read(&self, slot: usize) {
        self.0[slot].with(|_| ());
    }
}
