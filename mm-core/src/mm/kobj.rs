//! `KPtr<T>`: a handle to a kernel object (`Vma`, `AnonVma`, `File`, `AddressSpace`, `MmStruct`)
//! that lives at a fixed address, so intrusive links between objects can be plain addresses the host
//! reads from guest memory.
//!
//! Ownership rule (Invariant 7): an object is freed only by the one path that owns its last link
//! (`remove_vma` for a VMA, the last `anon_vma_unlink` for an anon_vma, the last `fput`/`iput`), after
//! it has been unlinked from every structure that could lead to it. Until then every handle and every
//! link address to it is valid, which is what makes `get` and `from_addr` sound to use.

use alloc::boxed::Box;
use core::fmt;
use core::ptr::NonNull;

/// A handle to a heap-allocated kernel object at a stable address.
pub struct KPtr<T>(NonNull<T>);

impl<T> Clone for KPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for KPtr<T> {}
impl<T> PartialEq for KPtr<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<T> Eq for KPtr<T> {}
impl<T> fmt::Debug for KPtr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KPtr({:#x})", self.addr())
    }
}

impl<T> KPtr<T> {
    /// Moves `value` to the heap and returns its handle.
    pub(crate) fn alloc(value: T) -> Self {
        Self(NonNull::from(Box::leak(Box::new(value))))
    }

    /// Frees the object.
    ///
    /// # Safety
    /// 1. The object was unlinked from every structure that records its address (Invariant 7);
    /// 2. no handle to it is used afterwards.
    pub(crate) unsafe fn free(self) {
        // SAFETY: (1)+(2) from the caller; the pointer came from Box::leak in `alloc`.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) })
    }

    /// The object. Kernel objects mutate only through `U64Cell`s and locks, so shared access is all
    /// anyone needs.
    pub fn get<'a>(self) -> &'a T {
        // SAFETY: Invariant 7: the object is live while a handle to it is in use, and it is never
        // accessed through `&mut`.
        unsafe { self.0.as_ref() }
    }

    /// The object's address, as stored in intrusive links.
    pub fn addr(self) -> u64 {
        self.0.as_ptr() as u64
    }

    /// The handle stored as `addr` in an intrusive link written by mm-core (0 = none).
    pub(crate) fn from_addr(addr: u64) -> Option<Self> {
        NonNull::new(addr as *mut T).map(Self)
    }
}

/// The address of an optional handle (0 for none), for storing in a link field.
pub(crate) fn addr_of<T>(p: Option<KPtr<T>>) -> u64 {
    p.map_or(0, KPtr::addr)
}
