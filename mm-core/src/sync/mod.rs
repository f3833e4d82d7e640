//! The memory manager's locks, spinning and lockdep-checked.
//!
//! # Lock order
//!
//! Outermost first; a lock may be taken only while every lock held sits above it (after the comment
//! at the top of Linux's `mm/rmap.c`, less the inode and page locks, which this crate lacks):
//!
//! ```text
//! mmap_sem                          RwSem in the mm: the VMA list and tree
//!   i_mmap_lock                     SpinLock in the address_space: the file's i_mmap interval tree
//!     anon_vma lock                 SpinLock in the anon_vma: the VMAs that share it
//!       page_table_lock / PTE lock  SpinLock in the mm, or one per page-table page
//! ```
//!
//! Each level is a class in [`crate::lockdep`] ([`MMAP_SEM`](crate::lockdep::MMAP_SEM),
//! [`I_MMAP_LOCK`](crate::lockdep::I_MMAP_LOCK), [`ANON_VMA_LOCK`](crate::lockdep::ANON_VMA_LOCK),
//! [`PAGE_TABLE_LOCK`](crate::lockdep::PAGE_TABLE_LOCK)), ranked in this order; taking one against
//! it is recorded by [`lockdep::LOCKDEP`](crate::lockdep::LOCKDEP). Two locks of one level (the old
//! and new PTE locks in `move_ptes`, two mms' `mmap_sem` in `dup_mmap`) need the `_nested` calls.
//!
//! [`SpinLock`] and [`RwSem`] report every acquire and release to lockdep; [`ArchSpinLock`] does
//! not (like Linux's `arch_spinlock_t`) and exists for lockdep's own bookkeeping. Guards are
//! `!Send`: a lock is released by the context that took it, which is what lockdep's per-context
//! stacks assume.

mod rwsem;
mod spinlock;

use core::marker::PhantomData;

pub use rwsem::{RwSem, RwSemReadGuard, RwSemWriteGuard};
pub use spinlock::{ArchSpinLock, ArchSpinLockGuard, SpinLock, SpinLockGuard};

/// Makes a guard `!Send` (and `!Sync`, given back where `T: Sync`).
type NotSend = PhantomData<*const ()>;

/// The address of a lock, which is how lockdep tells two locks of one class apart.
fn ptr_addr<T: ?Sized>(r: &T) -> usize {
    (r as *const T).cast::<u8>().addr()
}

#[cfg(test)]
mod tests;
