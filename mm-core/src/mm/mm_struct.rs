//! `MmStruct` (the `#[repr(C)]` head the host reads) and `Mm` (its owner, with the find_vma index).

use alloc::collections::BTreeMap;

use crate::addr::{PhysAddr, VirtAddr, PTRS_PER_TABLE, TASK_SIZE, TASK_UNMAPPED_BASE, USER_BASE};
use crate::cell::U64Cell;
use crate::kernel::Kernel;
use crate::lockdep::PAGE_TABLE_LOCK;
use crate::mm::error::MmNewError;
use crate::mm::file::vma_rekey_file;
use crate::mm::kobj::{addr_of, KPtr};
use crate::mm::lock::MmSpinLock;
use crate::mm::vma::{VmFlags, VmaPtr};
use crate::paging::table::{self, KernelPgd};
use crate::paging::Level;
use crate::phys::{AllocKind, TableDesc};

/// Linux's default `vm.max_map_count`.
pub const DEFAULT_MAX_MAP_COUNT: u64 = 65_530;

/// The part of an address space the host reads (Linux's `mm_struct`).
#[repr(C)]
#[derive(Debug)]
pub struct MmStruct {
    /// Physical address of the PML4.
    pub pgd: U64Cell,
    /// Address of the first `Vma` (0 = none); the list through `vm_next` is authoritative.
    pub mmap: U64Cell,
    /// Number of VMAs on the list.
    pub map_count: U64Cell,
    /// Pages mapped by all VMAs.
    pub total_vm: U64Cell,
    /// Pages mapped by `VM_LOCKED` VMAs.
    pub locked_vm: U64Cell,
    /// PTE tables allocated.
    pub nr_ptes: U64Cell,
    /// Bytes of PUD, PMD and PTE tables allocated (the PGD is not counted, as in Linux).
    pub pgtables_bytes: U64Cell,
    /// Anonymous pages mapped.
    pub anon_rss: U64Cell,
    /// File pages mapped.
    pub file_rss: U64Cell,
    /// Start of the heap.
    pub start_brk: U64Cell,
    /// Current break.
    pub brk: U64Cell,
    /// Limit on `map_count`.
    pub max_map_count: U64Cell,
    /// Where searches for free space start.
    pub mmap_base: U64Cell,
    /// Protects the page tables (kernel-private from here on; not part of the host ABI).
    pub page_table_lock: MmSpinLock,
}

impl Default for MmStruct {
    fn default() -> Self {
        let z = || U64Cell::new(0);
        Self {
            pgd: z(),
            mmap: z(),
            map_count: z(),
            total_vm: z(),
            locked_vm: z(),
            nr_ptes: z(),
            pgtables_bytes: z(),
            anon_rss: z(),
            file_rss: z(),
            start_brk: z(),
            brk: z(),
            max_map_count: z(),
            mmap_base: z(),
            page_table_lock: MmSpinLock::new(&PAGE_TABLE_LOCK),
        }
    }
}

impl MmStruct {
    /// The PML4's frame.
    pub fn pgd(&self) -> PhysAddr {
        PhysAddr(self.pgd.get())
    }
    /// This struct's address (what events and VMAs call "the mm").
    pub fn addr(&self) -> u64 {
        self as *const Self as u64
    }
}

/// An address space: the host-visible [`MmStruct`] plus the index that makes `find_vma` O(log n).
pub struct Mm {
    raw: KPtr<MmStruct>,
    /// VMAs keyed by `vm_end`; mirrors the `vm_next` list exactly (validate_mm checks it).
    index: BTreeMap<u64, VmaPtr>,
    /// Where the next search for free space starts (Linux's `free_area_cache`).
    free_area_cache: u64,
    /// Whether searches for free space go top-down from `mmap_base` (Linux's default layout on
    /// x86_64) rather than up from it (the legacy layout).
    top_down: bool,
    /// Flags every new mapping gets (`mm->def_flags`: `VM_LOCKED` after `mlockall(MCL_FUTURE)`).
    def_flags: VmFlags,
    exited: bool,
}

impl Mm {
    /// A new, empty address space. Its PGD copies every non-user entry of `kernel_pgd` (the kernel
    /// half and the identity map below [`USER_BASE`]) if given.
    pub fn new(k: &Kernel<'_>, kernel_pgd: Option<KernelPgd>) -> Result<Mm, MmNewError> {
        let pgd = k
            .alloc_frame(AllocKind::PageTable)
            .ok_or(MmNewError::PgdAlloc)?;
        if let Some(template) = kernel_pgd {
            let first = USER_BASE.table_index(Level::Pgd.entry_shift());
            let last = (TASK_SIZE - 1).table_index(Level::Pgd.entry_shift());
            for i in (0..PTRS_PER_TABLE).filter(|i| *i < first || *i > last) {
                table::write(k, pgd, i, template.entry(k, i));
            }
        }
        let raw = KPtr::alloc(MmStruct::default());
        let mm = raw.get();
        k.page(pgd).set_table(TableDesc {
            mm: mm.addr(),
            level: Level::Pgd as u64,
            base: 0,
        });
        mm.pgd.set(pgd.as_u64());
        mm.max_map_count.set(DEFAULT_MAX_MAP_COUNT);
        mm.mmap_base.set(TASK_UNMAPPED_BASE.0);
        Ok(Mm {
            raw,
            index: BTreeMap::new(),
            free_area_cache: TASK_UNMAPPED_BASE.0,
            top_down: false,
            def_flags: VmFlags(0),
            exited: false,
        })
    }

    /// The host-visible head.
    pub fn raw(&self) -> &MmStruct {
        self.raw.get()
    }

    /// Sets the start of the heap (and the break) — what exec does after loading a program.
    pub fn set_brk_base(&mut self, base: VirtAddr) {
        self.raw().start_brk.set(base.0);
        self.raw().brk.set(base.0);
    }

    /// Changes the `max_map_count` limit.
    pub fn set_max_map_count(&mut self, limit: u64) {
        self.raw().max_map_count.set(limit);
    }

    /// The first VMA.
    pub fn first_vma(&self) -> Option<VmaPtr> {
        KPtr::from_addr(self.raw().mmap.get())
    }

    /// Iterates the VMAs in address order.
    pub fn vmas(&self) -> impl Iterator<Item = VmaPtr> + '_ {
        core::iter::successors(self.first_vma(), |v| v.get().next())
    }

    /// The first VMA with `vm_end > addr` (Linux's `find_vma`), in O(log n).
    pub fn find_vma(&self, addr: VirtAddr) -> Option<VmaPtr> {
        // No VMA ends above the top of the address space.
        let above = addr.0.checked_add(1)?;
        self.index.range(above..).next().map(|(_, v)| *v)
    }

    /// The VMA containing `addr`.
    pub fn vma_at(&self, addr: VirtAddr) -> Option<VmaPtr> {
        self.find_vma(addr).filter(|v| v.get().contains(addr))
    }

    /// The last VMA with `vm_end <= addr`.
    pub fn find_vma_prev(&self, addr: VirtAddr) -> Option<VmaPtr> {
        self.index.range(..=addr.0).next_back().map(|(_, v)| *v)
    }

    /// Number of entries in the find_vma index (validate_mm compares it with the list).
    pub(crate) fn index_len(&self) -> usize {
        self.index.len()
    }

    /// The indexed VMA whose end is `end`.
    pub(crate) fn index_get(&self, end: u64) -> Option<VmaPtr> {
        self.index.get(&end).copied()
    }

    /// Links `vma` into the list after `prev` (at the head if `None`) and into the index.
    pub(crate) fn link_list(&mut self, vma: VmaPtr, prev: Option<VmaPtr>) {
        let v = vma.get();
        let next = match prev {
            Some(p) => p.get().next(),
            None => self.first_vma(),
        };
        v.vm_prev.set(addr_of(prev));
        v.vm_next.set(addr_of(next));
        match prev {
            Some(p) => p.get().vm_next.set(vma.addr()),
            None => self.raw().mmap.set(vma.addr()),
        }
        if let Some(n) = next {
            n.get().vm_prev.set(vma.addr());
        }
        self.index.insert(v.vm_end.get(), vma);
        self.raw().map_count.add(1);
    }

    /// Takes `vma` off the list and the index; its own links are left as they were.
    pub(crate) fn unlink_list(&mut self, vma: VmaPtr) {
        let v = vma.get();
        let (prev, next) = (v.prev(), v.next());
        match prev {
            Some(p) => p.get().vm_next.set(addr_of(next)),
            None => self.raw().mmap.set(addr_of(next)),
        }
        if let Some(n) = next {
            n.get().vm_prev.set(addr_of(prev));
        }
        let removed = self.index.remove(&v.vm_end.get());
        debug_assert_eq!(
            removed,
            Some(vma),
            "find_vma index out of step with the list"
        );
        self.raw().map_count.sub(1);
    }

    /// Moves `vma`'s end, keeping the index keyed right.
    pub(crate) fn set_vma_end(&mut self, k: &Kernel<'_>, vma: VmaPtr, end: VirtAddr) {
        let v = vma.get();
        self.index.remove(&v.vm_end.get());
        vma_rekey_file(k, vma, || v.vm_end.set(end.0));
        self.index.insert(end.0, vma);
        crate::mm::mmap::report_vma_range(k, vma);
    }

    /// Switches to the top-down layout (Linux's default on x86_64): free space is searched
    /// downwards from `base`.
    pub fn set_mmap_top_down(&mut self, base: VirtAddr) {
        self.raw().mmap_base.set(base.0);
        self.top_down = true;
    }

    pub(crate) fn def_flags(&self) -> VmFlags {
        self.def_flags
    }

    pub(crate) fn set_def_flags(&mut self, flags: VmFlags) {
        self.def_flags = flags;
    }

    pub(crate) fn top_down(&self) -> bool {
        self.top_down
    }

    /// The VMAs that end above `low`, lowest first.
    pub(crate) fn vmas_above(&self, low: u64) -> impl Iterator<Item = VmaPtr> + '_ {
        self.index.range(low.saturating_add(1)..).map(|(_, v)| *v)
    }

    /// The VMAs that start below `high`, highest first.
    pub(crate) fn vmas_below(&self, high: u64) -> impl Iterator<Item = Option<VmaPtr>> + '_ {
        self.index
            .values()
            .rev()
            .filter(move |v| v.get().start().0 < high)
            .map(|v| Some(*v))
    }

    /// Takes `parent`'s layout and search cache (a forked child's searches go where the parent's
    /// would).
    pub(crate) fn copy_search_state(&mut self, parent: &Mm) {
        self.top_down = parent.top_down;
        self.free_area_cache = parent.free_area_cache;
    }

    pub(crate) fn free_area_cache(&self) -> VirtAddr {
        VirtAddr(self.free_area_cache)
    }

    pub(crate) fn set_free_area_cache(&mut self, addr: VirtAddr) {
        self.free_area_cache = addr.0;
    }

    /// Forgets every VMA (exit_mmap has taken the list over).
    pub(crate) fn clear_list(&mut self) {
        self.index.clear();
        let raw = self.raw();
        raw.mmap.set(0);
        raw.map_count.set(0);
        raw.total_vm.set(0);
        raw.locked_vm.set(0);
    }

    /// Whether `exit_mmap` has run.
    pub fn has_exited(&self) -> bool {
        self.exited
    }

    pub(crate) fn mark_exited(&mut self) {
        self.exited = true;
    }

    /// Tears the address space down: `exit_mmap` if it has not run, then frees the PGD and the head.
    #[allow(unsafe_code)] // frees an object after its last unlink
    pub fn destroy(mut self, k: &Kernel<'_>) {
        if !self.exited {
            self.exit_mmap(k);
        }
        k.free_frame(self.raw().pgd(), AllocKind::PageTable);
        // SAFETY: after exit_mmap no VMA (hence no link) refers to the MmStruct, and `self` — the only
        // holder of the handle — is consumed here.
        unsafe { self.raw.free() };
        core::mem::forget(self);
    }
}

impl Drop for Mm {
    fn drop(&mut self) {
        // Without the Kernel the frames cannot be returned: an Mm dropped without `destroy` leaks,
        // which the tests' frame counts catch.
    }
}
