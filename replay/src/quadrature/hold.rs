//! What a point's search holds while it runs: slots for pieces searched side by side, and the
//! dense buffers their orders fill.

use std::cell::{Cell, RefCell};
use std::ops::{Deref, DerefMut};
use std::task::Poll;

/// A piece's hold on one of its point's slots, given back when dropped.
pub(super) struct Slot<'a>(&'a Cell<usize>);

impl<'a> Slot<'a> {
    /// Waits for a free slot. Waiting asks for nothing: the pieces holding the slots have
    /// their requests open, and the next round of polling looks again.
    pub async fn take(slots: &'a Cell<usize>) -> Slot<'a> {
        std::future::poll_fn(|_| {
            if slots.get() == 0 {
                return Poll::Pending;
            }
            slots.set(slots.get() - 1);
            Poll::Ready(Slot(slots))
        })
        .await
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// Buffers given back, for the next order to reuse.
#[derive(Default)]
pub(super) struct Pool(RefCell<Vec<Vec<f64>>>);

impl Pool {
    /// A buffer of `len` zeros, reused when one was given back.
    pub fn zeroed(&self, len: usize) -> Buffer<'_> {
        let mut v = self.0.borrow_mut().pop().unwrap_or_default();
        v.clear();
        v.resize(len, 0.0);
        Buffer { v, pool: self }
    }
}

/// A buffer that goes back to its pool when dropped.
pub(super) struct Buffer<'a> {
    v: Vec<f64>,
    pool: &'a Pool,
}

impl Deref for Buffer<'_> {
    type Target = [f64];
    fn deref(&self) -> &[f64] {
        &self.v
    }
}

impl DerefMut for Buffer<'_> {
    fn deref_mut(&mut self) -> &mut [f64] {
        &mut self.v
    }
}

impl Drop for Buffer<'_> {
    fn drop(&mut self) {
        self.pool.0.borrow_mut().push(std::mem::take(&mut self.v));
    }
}
