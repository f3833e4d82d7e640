//! `AnonVma`: the reverse map of anonymous pages — the list of VMAs that may map them.
//!
//! An anonymous page's `mapping` points here (with [`PAGE_MAPPING_ANON`] set), so rmap finds every
//! VMA that could map the page by walking `head` → `Vma::anon_vma_next`.

use crate::cell::U64Cell;
use crate::hooks::{UnlinkKind, VmaUnlinkEvent};
use crate::kernel::Kernel;
use crate::lockdep::ANON_VMA_LOCK;
use crate::mm::kobj::{addr_of, list_add, list_del, KPtr, ListLink};
use crate::mm::lock::MmSpinLock;
use crate::mm::vma::{VmFlags, Vma, VmaPtr};
use crate::phys::{AllocKind, PAGE_MAPPING_ANON};

/// Handle to an [`AnonVma`].
pub type AnonVmaPtr = KPtr<AnonVma>;

/// A reverse-map anchor for anonymous pages (Linux's `anon_vma`).
#[repr(C)]
#[derive(Debug)]
pub struct AnonVma {
    /// First VMA on the list (0 = empty).
    pub head: U64Cell,
    /// VMAs on the list.
    pub nr_vmas: U64Cell,
    /// Links on the kernel's registry of all anon_vmas (`KernelRoots::anon_vmas`).
    pub all: ListLink,
    /// Protects the list (kernel-private; not part of the host ABI).
    pub lock: MmSpinLock,
}

impl Default for AnonVma {
    fn default() -> Self {
        Self {
            head: U64Cell::new(0),
            nr_vmas: U64Cell::new(0),
            all: ListLink::default(),
            lock: MmSpinLock::new(&ANON_VMA_LOCK),
        }
    }
}

impl AnonVma {
    /// The VMAs on the list.
    pub fn vmas(&self) -> impl Iterator<Item = VmaPtr> {
        core::iter::successors(KPtr::from_addr(self.head.get()), |v: &VmaPtr| {
            KPtr::from_addr(v.get().anon_vma_next.get())
        })
    }
}

/// The value a page's `mapping` holds when it belongs to `anon`.
pub fn anon_mapping_value(anon: AnonVmaPtr) -> u64 {
    anon.addr() | PAGE_MAPPING_ANON
}

/// Makes sure `vma` has an anon_vma before its first anonymous page (Linux's `anon_vma_prepare`);
/// `false` when the allocation fails.
pub(crate) fn anon_vma_prepare(k: &Kernel<'_>, vma: VmaPtr) -> bool {
    if vma.get().anon().is_some() {
        return true;
    }
    // Reuse a neighbour's anon_vma where the two could ever become one VMA (Linux's
    // `find_mergeable_anon_vma`: the next VMA first, then the previous; flags equal but for the
    // access bits, which mprotect can still make equal; same file; contiguous offsets), so a later
    // merge of the two stays possible.
    let v = vma.get();
    // A neighbour copied by fork lends nothing (Linux's `reusable_anon_vma` wants a singular
    // chain).
    let compatible = |a: &Vma, b: &Vma| {
        let differ = (a.flags().0 ^ b.flags().0) & !VmFlags::ACCESS.0;
        let neither_forked = a.anon_lineage.get() == 0 && b.anon_lineage.get() == 0;
        neither_forked
            && a.end() == b.start()
            && a.file() == b.file()
            && differ == 0
            && b.pgoff() == a.pgoff() + a.pages()
    };
    let from_next = v
        .next()
        .filter(|n| compatible(v, n.get()))
        .and_then(|n| n.get().anon());
    let neighbour = from_next.or_else(|| {
        v.prev()
            .filter(|p| compatible(p.get(), v))
            .and_then(|p| p.get().anon())
    });
    let anon = match neighbour {
        Some(a) => a,
        None => {
            if !k.may_alloc(AllocKind::AnonVma) {
                return false;
            }
            let a = k.alloc_anon_vma();
            let roots = k.roots();
            list_add(&roots.anon_vmas, a, |x: &AnonVma| &x.all);
            roots.nr_anon_vmas.add(1);
            a
        }
    };
    v.anon_vma.set(anon.addr());
    anon_vma_link(k, vma);
    true
}

/// Puts `vma` on its anon_vma's list (after a split or a copy), if it has one.
pub(crate) fn anon_vma_link(k: &Kernel<'_>, vma: VmaPtr) {
    let v = vma.get();
    let Some(anon) = v.anon() else { return };
    let a = anon.get();
    let _guard = a.lock.lock(k);
    let head: Option<VmaPtr> = KPtr::from_addr(a.head.get());
    v.anon_vma_prev.set(0);
    v.anon_vma_next.set(addr_of(head));
    if let Some(h) = head {
        h.get().anon_vma_prev.set(vma.addr());
    }
    a.head.set(vma.addr());
    a.nr_vmas.add(1);
}

/// Takes `vma` off its anon_vma's list, hiding it from rmap, and frees the anon_vma with its last
/// VMA. Idempotent: the VMA forgets its anon_vma.
pub fn anon_vma_unlink(k: &Kernel<'_>, vma: VmaPtr) {
    let v = vma.get();
    let Some(anon) = v.anon() else { return };
    let a = anon.get();
    let guard = a.lock.lock(k);
    let prev: Option<VmaPtr> = KPtr::from_addr(v.anon_vma_prev.get());
    let next: Option<VmaPtr> = KPtr::from_addr(v.anon_vma_next.get());
    match prev {
        Some(p) => p.get().anon_vma_next.set(addr_of(next)),
        None => a.head.set(addr_of(next)),
    }
    if let Some(n) = next {
        n.get().anon_vma_prev.set(addr_of(prev));
    }
    v.anon_vma_next.set(0);
    v.anon_vma_prev.set(0);
    v.anon_vma.set(0);
    v.anon_lineage.set(0);
    let empty = a.nr_vmas.sub(1) == 0;
    k.hooks().vma_unlinked(
        k,
        &VmaUnlinkEvent {
            mm: v.vm_mm.get(),
            vma: vma.addr(),
            start: v.start(),
            end: v.end(),
            kind: UnlinkKind::Anon,
        },
    );
    drop(guard);
    if empty {
        let roots = k.roots();
        list_del(&roots.anon_vmas, anon, |x: &AnonVma| &x.all);
        roots.nr_anon_vmas.sub(1);
        // Invariant 7: the list is empty, and no page points here any more because a page's
        // mapping is cleared when its last anonymous mapping goes (page_remove_rmap).
        k.free_anon_vma(anon);
    }
}
