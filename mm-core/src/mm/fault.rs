//! `handle_mm_fault`: resolving a page fault on a user address.

use crate::addr::{VirtAddr, PAGE_SIZE};
use crate::kernel::Kernel;
use crate::mm::anon::anon_vma_prepare;
use crate::mm::error::FaultError;
use crate::mm::mm_struct::Mm;
use crate::mm::rmap::{page_add_file_rmap, page_add_new_anon_rmap, page_remove_rmap};
use crate::mm::vma::{VmFlags, VmaPtr};
use crate::paging::walk::{pte_alloc, PteSlot};
use crate::paging::{PageTableEntry, PteFlags};
use crate::phys::{AllocKind, PageFlags};

/// The kind of access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
    /// An instruction fetch.
    Exec,
}

/// The leaf flags a VMA with `flags` gets; `writable` only where writes may go straight to the page.
pub(crate) fn leaf_flags(flags: VmFlags, writable: bool) -> PteFlags {
    if flags.0 & VmFlags::ACCESS.0 == 0 {
        return PteFlags::PROTNONE;
    }
    let mut f = PteFlags::PRESENT | PteFlags::USER;
    if writable && flags.contains(VmFlags::WRITE) {
        f = f | PteFlags::WRITABLE;
    }
    if !flags.contains(VmFlags::EXEC) {
        f = f | PteFlags::NO_EXECUTE;
    }
    f
}

impl Mm {
    /// Resolves a fault at `addr` for `access` (Linux's `handle_mm_fault`): checks the VMA's
    /// permissions, allocates page tables on demand, then maps a zeroed anonymous page, a page-cache
    /// page, or a private copy (copy-on-write).
    pub fn handle_mm_fault(
        &mut self,
        k: &Kernel<'_>,
        addr: VirtAddr,
        access: Access,
    ) -> Result<(), FaultError> {
        let vma = match self.vma_at(addr) {
            Some(v) => v,
            None => self.expand_stack(k, addr)?,
        };
        let flags = vma.get().flags();
        // x86 cannot map a page writable or executable but not readable: a read is allowed
        // wherever any access is (Linux's `access_error`).
        let allowed = match access {
            Access::Read => flags.0 & VmFlags::ACCESS.0 != 0,
            Access::Write => flags.contains(VmFlags::WRITE),
            Access::Exec => flags.contains(VmFlags::EXEC),
        };
        if !allowed {
            return Err(FaultError::AccErr);
        }
        let addr = addr.align_down(PAGE_SIZE);
        // anon_vma_prepare takes the anon_vma lock, which ranks above the page-table lock: do it
        // before taking that, whenever the fault may end with an anonymous page.
        let private = !flags.contains(VmFlags::SHARED);
        let anonymous = vma.get().file().is_none();
        // A read of never-written anonymous memory maps the zero page (Linux's
        // `do_anonymous_page`): no page of its own, and no anon_vma, so the VMA still merges with
        // anything an unfaulted one would.
        let zero = k
            .zero_page()
            .filter(|_| anonymous && access != Access::Write);
        let may_need_anon = (anonymous && zero.is_none()) || (access == Access::Write && private);
        if may_need_anon && !anon_vma_prepare(k, vma) {
            return Err(FaultError::Oom);
        }
        let raw = self.raw();
        let slot = pte_alloc(k, raw, addr).ok_or(FaultError::Oom)?;
        let _ptl = raw.page_table_lock.lock(k);
        let e = slot.read(k);
        if !e.holds_frame() {
            if let Some(zero) = zero {
                let f = leaf_flags(flags, false) | PteFlags::ACCESSED;
                slot.write(k, PageTableEntry::new(zero, f));
                return Ok(());
            }
            return self.do_no_page(k, vma, addr, slot, access);
        }
        if !e.is_present() {
            return Err(FaultError::AccErr);
        }
        if access == Access::Write && !e.flags().contains(PteFlags::WRITABLE) {
            return self.do_wp_page(k, vma, addr, slot, e);
        }
        let mut f = e.flags() | PteFlags::ACCESSED;
        if access == Access::Write {
            f = f | PteFlags::DIRTY;
        }
        slot.write(k, e.with_flags(f));
        Ok(())
    }

    /// A fault below a `VM_GROWSDOWN` mapping extends it down to the faulting page (Linux's
    /// `expand_downwards`), unless an accessible mapping that does not grow ends less than the
    /// stack guard gap below that page.
    fn expand_stack(&mut self, k: &Kernel<'_>, addr: VirtAddr) -> Result<VmaPtr, FaultError> {
        let vma = self
            .find_vma(addr)
            .filter(|v| v.get().flags().contains(VmFlags::GROWSDOWN))
            .ok_or(FaultError::MapErr)?;
        let addr = addr.align_down(PAGE_SIZE);
        if addr < crate::addr::USER_BASE {
            return Err(FaultError::MapErr);
        }
        let v = vma.get();
        if let Some(prev) = v.prev() {
            let p = prev.get();
            let stack = p.flags().contains(VmFlags::GROWSDOWN);
            let accessible = p.flags().0 & VmFlags::ACCESS.0 != 0;
            if !stack && accessible && addr - p.end() < crate::mm::mmap::STACK_GUARD_GAP {
                return Err(FaultError::MapErr);
            }
        }
        let grow = (v.start() - addr) >> crate::addr::PAGE_SHIFT;
        if grow > v.pgoff() {
            return Err(FaultError::MapErr);
        }
        if !anon_vma_prepare(k, vma) {
            return Err(FaultError::Oom);
        }
        {
            // rmap walkers read the range under the anon_vma lock.
            let anon = v.anon().ok_or(FaultError::Oom)?;
            let _lock = anon.get().lock.lock(k);
            v.vm_start.set(addr.0);
            v.vm_pgoff.set(v.pgoff() - grow);
        }
        let raw = self.raw();
        raw.total_vm.add(grow);
        if v.flags().contains(VmFlags::LOCKED) {
            raw.locked_vm.add(grow);
        }
        crate::mm::mmap::report_vma_range(k, vma);
        Ok(vma)
    }

    fn do_no_page(
        &self,
        k: &Kernel<'_>,
        vma: VmaPtr,
        addr: VirtAddr,
        slot: PteSlot,
        access: Access,
    ) -> Result<(), FaultError> {
        let v = vma.get();
        let index = v.linear_page_index(addr);
        let Some(file) = v.file() else {
            return self.map_new_anon(k, vma, addr, slot, None);
        };
        let mapping = file.get().mapping();
        let m = mapping.get();
        if index >= m.i_size_pages.get() {
            return Err(FaultError::Sigbus);
        }
        let frame = m.find_or_create_page(k, index).ok_or(FaultError::Oom)?;
        let shared = v.flags().contains(VmFlags::SHARED);
        if access == Access::Write && !shared {
            return self.map_new_anon(k, vma, addr, slot, Some(frame));
        }
        page_add_file_rmap(k, self.raw(), frame);
        let f = leaf_flags(v.flags(), shared) | PteFlags::ACCESSED;
        slot.write(k, PageTableEntry::new(frame, f));
        Ok(())
    }

    /// Maps a new anonymous page at `addr`: zeroed, or a copy of `copy_of`. The VMA already has its
    /// anon_vma (prepared before the page-table lock was taken).
    fn map_new_anon(
        &self,
        k: &Kernel<'_>,
        vma: VmaPtr,
        addr: VirtAddr,
        slot: PteSlot,
        copy_of: Option<crate::addr::PhysAddr>,
    ) -> Result<(), FaultError> {
        let v = vma.get();
        let Some(anon) = v.anon() else {
            panic!("anonymous fault in a VMA without an anon_vma");
        };
        let frame = k.alloc_frame(AllocKind::DataPage).ok_or(FaultError::Oom)?;
        if let Some(src) = copy_of {
            k.copy_frame(frame, src);
        }
        page_add_new_anon_rmap(k, self.raw(), frame, anon, v.linear_page_index(addr));
        let f = leaf_flags(v.flags(), true) | PteFlags::ACCESSED | PteFlags::DIRTY;
        slot.write(k, PageTableEntry::new(frame, f));
        Ok(())
    }

    /// A write to a present, write-protected page of a writable VMA (Linux's `do_wp_page`).
    fn do_wp_page(
        &self,
        k: &Kernel<'_>,
        vma: VmaPtr,
        addr: VirtAddr,
        slot: PteSlot,
        e: PageTableEntry,
    ) -> Result<(), FaultError> {
        let old = e.frame();
        let page = k.page(old);
        let v = vma.get();
        let reuse = v.flags().contains(VmFlags::SHARED)
            || (page.page_flags().contains(PageFlags::ANON) && page.mapcount.get() == 1);
        if reuse {
            let f = e.flags() | PteFlags::WRITABLE | PteFlags::ACCESSED | PteFlags::DIRTY;
            slot.write(k, e.with_flags(f));
            return Ok(());
        }
        if k.is_zero_page(old) {
            // A write to the zero page: a zeroed page of the VMA's own (its anon_vma is ready).
            slot.write(k, PageTableEntry::NONE);
            if let Err(err) = self.map_new_anon(k, vma, addr, slot, None) {
                slot.write(k, e);
                return Err(err);
            }
            let raw = self.raw();
            k.flush_tlb_range(raw.addr(), raw.pgd(), addr, addr + PAGE_SIZE);
            return Ok(());
        }
        // Copy-on-write of a page-cache page in a private mapping.
        slot.write(k, PageTableEntry::NONE);
        if let Err(err) = self.map_new_anon(k, vma, addr, slot, Some(old)) {
            slot.write(k, e);
            return Err(err);
        }
        let raw = self.raw();
        k.flush_tlb_range(raw.addr(), raw.pgd(), addr, addr + PAGE_SIZE);
        page_remove_rmap(k, raw, old);
        k.put_page(old);
        Ok(())
    }
}
