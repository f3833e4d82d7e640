//! `U64Cell`: a `u64` field that can change behind a shared reference.
//!
//! Every structure the host probes read (`Vma`, `AnonVma`, `AddressSpace`, `Page`, `MmStruct`) is
//! built from these, so its layout is plain `u64`s (no padding surprises) while the kernel mutates it
//! through `&T`. Relaxed atomics compile to plain moves on x86_64; ordering between CPUs comes from the
//! locks, not from these cells.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// A `u64` with interior mutability and the layout of a `u64`.
#[repr(transparent)]
#[derive(Default)]
pub struct U64Cell(AtomicU64);

impl U64Cell {
    /// A cell holding `value`.
    pub const fn new(value: u64) -> Self {
        Self(AtomicU64::new(value))
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Replaces the value.
    #[inline]
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed)
    }

    /// Adds `delta` (wrapping) and returns the new value.
    #[inline]
    pub fn add(&self, delta: u64) -> u64 {
        self.0
            .fetch_add(delta, Ordering::Relaxed)
            .wrapping_add(delta)
    }

    /// Subtracts `delta` (wrapping) and returns the new value.
    #[inline]
    pub fn sub(&self, delta: u64) -> u64 {
        self.0
            .fetch_sub(delta, Ordering::Relaxed)
            .wrapping_sub(delta)
    }
}

impl fmt::Debug for U64Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_has_the_layout_of_a_u64_and_counts_both_ways() {
        assert_eq!(core::mem::size_of::<U64Cell>(), 8);
        assert_eq!(core::mem::align_of::<U64Cell>(), 8);
        let c = U64Cell::new(5);
        assert_eq!(c.add(3), 8);
        assert_eq!(c.sub(8), 0);
        c.set(7);
        assert_eq!(c.get(), 7);
    }
}
