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

use crate::cell::U64Cell;

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

    /// The object, borrowed for as long as this handle is: kernel objects mutate only through
    /// `U64Cell`s and locks, so shared access is all anyone needs.
    pub fn get(&self) -> &T {
        // SAFETY: Invariant 7: the object is live while a handle to it is in use, and it is never
        // accessed through `&mut`.
        unsafe { self.0.as_ref() }
    }

    /// A handle from a pointer the interval tree hands back (the object is live by Invariant 7).
    pub(crate) fn from_nonnull(p: NonNull<T>) -> Self {
        Self(p)
    }

    /// The raw pointer, with provenance over the whole object.
    pub(crate) fn as_nonnull(self) -> NonNull<T> {
        self.0
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

/// Links of an intrusive doubly linked list: addresses of the neighbours, 0 at either end.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ListLink {
    /// Next object (0 = last).
    pub next: U64Cell,
    /// Previous object (0 = first).
    pub prev: U64Cell,
}

/// Pushes `obj` (whose link `link` selects) at the front of the list headed by `head`.
pub(crate) fn list_add<T>(head: &U64Cell, obj: KPtr<T>, link: fn(&T) -> &ListLink) {
    let first: Option<KPtr<T>> = KPtr::from_addr(head.get());
    let l = link(obj.get());
    l.prev.set(0);
    l.next.set(addr_of(first));
    if let Some(f) = first {
        link(f.get()).prev.set(obj.addr());
    }
    head.set(obj.addr());
}

/// Removes `obj` from the list headed by `head`, clearing its links.
pub(crate) fn list_del<T>(head: &U64Cell, obj: KPtr<T>, link: fn(&T) -> &ListLink) {
    let l = link(obj.get());
    let prev: Option<KPtr<T>> = KPtr::from_addr(l.prev.get());
    let next: Option<KPtr<T>> = KPtr::from_addr(l.next.get());
    match prev {
        Some(p) => link(p.get()).next.set(addr_of(next)),
        None => head.set(addr_of(next)),
    }
    if let Some(n) = next {
        link(n.get()).prev.set(addr_of(prev));
    }
    l.next.set(0);
    l.prev.set(0);
}

/// Iterates the list headed by `head`.
pub(crate) fn list_iter<T>(
    head: &U64Cell,
    link: fn(&T) -> &ListLink,
) -> impl Iterator<Item = KPtr<T>> {
    core::iter::successors(KPtr::from_addr(head.get()), move |o: &KPtr<T>| {
        KPtr::from_addr(link(o.get()).next.get())
    })
}

/// The address of an optional handle (0 for none), for storing in a link field.
pub(crate) fn addr_of<T>(p: Option<KPtr<T>>) -> u64 {
    p.map_or(0, KPtr::addr)
}
