//! The engine against hand-laid guest memory: a [`Fake`] guest puts mm-core's structures at
//! chosen addresses (offsets from mm-core's own types), then events are fed to a [`Probe`].

mod checks;
mod cost;
mod hostile;
mod index;
// Builds mm-core's intrusive tree in host memory to read its layout back: the one test with `unsafe`.
#[allow(unsafe_code)]
mod layout;
mod sweep;

use core::mem::{offset_of, size_of};

use mm_core::abi::FreePath;
use mm_core::addr::USER_BASE;
use mm_core::interval_tree::IntervalNode;
use mm_core::kernel::KernelRoots;
use mm_core::mm::layout::{LAYOUT_MAGIC, LAYOUT_VERSION};
use mm_core::mm::{AddressSpace, AnonVma, File, MmStruct, Vma};
use mm_core::paging::{Level, PageTableEntry, PteFlags};
use mm_core::phys::{Page, PageFlags, PAGE_MAPPING_ANON};
use mm_core::PhysAddr;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::engine::Probe;
use super::layout::{node, tree_root};
use super::Violation;
use super::{ProbeEvent, TableSpan};

/// Guest RAM of the fake guest.
const RAM: u64 = 64 << 20;
/// Where the `KernelRoots` live.
const ROOTS: u64 = 0x1000;
/// Where the mem_map lives (one `Page` per frame of `RAM`).
const MEM_MAP: u64 = 0x10_0000;
/// Kernel objects are bump-allocated from here.
const HEAP: u64 = 0x20_0000;
/// Frames (tables, data pages) are bump-allocated from here.
const FRAMES: u64 = 0x300_0000;
/// The guest RIP the tests' vCPU reports.
const RIP: u64 = 0xffff_ffff_8000_1234;
/// `VmFlags` the fake VMAs carry (read | write).
const FLAGS: u64 = 0x3;

/// An mm of the fake guest.
#[derive(Clone, Copy, Debug)]
struct Mm {
    addr: u64,
    pgd: u64,
}

/// A guest laid out by hand.
struct Fake {
    mem: GuestMemoryMmap,
    heap: u64,
    next_frame: u64,
    /// Every VMA made: mm, address, start, end (what `VmaRange` events report).
    vmas: Vec<(u64, u64, u64, u64)>,
}

impl Fake {
    fn new() -> Self {
        let mem =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).expect("test RAM");
        Self {
            mem,
            heap: HEAP,
            next_frame: FRAMES,
            vmas: Vec::new(),
        }
    }

    fn w(&self, addr: u64, v: u64) {
        self.mem
            .write_obj(v, GuestAddress(addr))
            .expect("test write inside RAM");
    }

    fn r(&self, addr: u64) -> u64 {
        self.mem
            .read_obj(GuestAddress(addr))
            .expect("test read inside RAM")
    }

    fn alloc(&mut self, bytes: usize) -> u64 {
        let a = self.heap;
        self.heap += (bytes as u64).next_multiple_of(16);
        a
    }

    fn page(&self, frame: u64) -> u64 {
        MEM_MAP + frame / 4096 * size_of::<Page>() as u64
    }

    fn frame(&mut self, flags: PageFlags) -> u64 {
        let f = self.next_frame;
        self.next_frame += 4096;
        self.w(self.page(f) + offset_of!(Page, flags) as u64, flags.0);
        f
    }

    /// A page-table frame whose `Page` describes it as `mm`'s table of `level` from `base`.
    fn table_frame(&mut self, mm: u64, level: Level, base: u64) -> u64 {
        let f = self.frame(PageFlags(PageFlags::ALLOCATED.0 | PageFlags::PAGETABLE.0));
        self.describe(f, mm, level as u64, base);
        f
    }

    /// Writes a table descriptor (mm, level, base) into `frame`'s `Page`, as `Page::set_table`.
    fn describe(&self, frame: u64, mm: u64, level: u64, base: u64) {
        let p = self.page(frame);
        let flags = self.r(p + offset_of!(Page, flags) as u64) & !PageFlags::TABLE_LEVEL_MASK;
        let level = level << PageFlags::TABLE_LEVEL_SHIFT;
        self.w(p + offset_of!(Page, flags) as u64, flags | level);
        self.w(p + offset_of!(Page, mapping) as u64, mm);
        self.w(p + offset_of!(Page, index) as u64, base);
    }

    fn mm(&mut self) -> Mm {
        let addr = self.alloc(size_of::<MmStruct>());
        let pgd = self.table_frame(addr, Level::Pgd, 0);
        self.w(addr + offset_of!(MmStruct, pgd) as u64, pgd);
        Mm { addr, pgd }
    }

    fn entry_addr(table: u64, level: Level, va: u64) -> u64 {
        table + ((va >> level.entry_shift()) & 511) * 8
    }

    /// The table of `level` mapping `va` in `mm`, creating every table down to it.
    fn ensure_table(&mut self, mm: Mm, level: Level, va: u64) -> u64 {
        let (mut table, mut at) = (mm.pgd, Level::Pgd);
        while at != level {
            let slot = Self::entry_addr(table, at, va);
            let e = PageTableEntry::from_bits(self.r(slot));
            let next = if e.is_present() {
                e.frame().0
            } else {
                let lower = at.lower().expect("above the target level");
                let t = self.table_frame(mm.addr, lower, va & !(lower.table_span() - 1));
                self.w(
                    slot,
                    PageTableEntry::new(PhysAddr(t), PteFlags::TABLE).bits(),
                );
                t
            };
            (table, at) = (next, at.lower().expect("above the target level"));
        }
        table
    }

    /// The address of the entry pointing to the table of `level` mapping `va`.
    fn parent_slot(&mut self, mm: Mm, level: Level, va: u64) -> u64 {
        let above = match level {
            Level::Pte => Level::Pmd,
            Level::Pmd => Level::Pud,
            Level::Pud => Level::Pgd,
            Level::Pgd => panic!("a PGD has no parent"),
        };
        let parent = self.ensure_table(mm, above, va);
        Self::entry_addr(parent, above, va)
    }

    /// Clears the entry pointing to the table of `level` mapping `va`, as `free_pgd_range` does.
    fn unhook(&mut self, mm: Mm, level: Level, va: u64) {
        let slot = self.parent_slot(mm, level, va);
        self.w(slot, 0);
    }

    fn vma(&mut self, mm: Mm, start: u64, end: u64) -> u64 {
        let v = self.alloc(size_of::<Vma>());
        self.w(v + offset_of!(Vma, vm_mm) as u64, mm.addr);
        self.w(v + offset_of!(Vma, vm_start) as u64, start);
        self.w(v + offset_of!(Vma, vm_end) as u64, end);
        self.w(v + offset_of!(Vma, vm_flags) as u64, FLAGS);
        self.vmas.push((mm.addr, v, start, end));
        v
    }

    /// Gives `vma` a file whose mapping is `m` (what `file_link` needs for the index's check).
    fn set_file(&mut self, vma: u64, m: u64) {
        let f = self.alloc(size_of::<File>());
        self.w(f + offset_of!(File, f_mapping) as u64, m);
        self.w(vma + offset_of!(Vma, vm_file) as u64, f);
    }

    /// Pushes `obj` (its `ListLink` at `link`) on the registry at `head`, counted at `count`.
    fn register(&self, head: u64, count: u64, obj: u64, link: usize) {
        let first = self.r(head);
        self.w(obj + link as u64, first);
        self.w(obj + link as u64 + 8, 0);
        if first != 0 {
            self.w(first + link as u64 + 8, obj);
        }
        self.w(head, obj);
        self.w(count, self.r(count) + 1);
    }

    fn anon_vma_unregistered(&mut self) -> u64 {
        self.alloc(size_of::<AnonVma>())
    }

    fn anon_vma(&mut self) -> u64 {
        let av = self.anon_vma_unregistered();
        self.register(
            ROOTS + offset_of!(KernelRoots, anon_vmas) as u64,
            ROOTS + offset_of!(KernelRoots, nr_anon_vmas) as u64,
            av,
            offset_of!(AnonVma, all),
        );
        av
    }

    fn mapping(&mut self) -> u64 {
        let m = self.alloc(size_of::<AddressSpace>());
        self.register(
            ROOTS + offset_of!(KernelRoots, mappings) as u64,
            ROOTS + offset_of!(KernelRoots, nr_mappings) as u64,
            m,
            offset_of!(AddressSpace, all),
        );
        m
    }

    /// Puts `vma` at the front of `av`'s list (Linux's `anon_vma_link`).
    fn anon_link(&self, av: u64, vma: u64) {
        let head = av + offset_of!(AnonVma, head) as u64;
        let first = self.r(head);
        self.w(vma + offset_of!(Vma, anon_vma) as u64, av);
        self.w(vma + offset_of!(Vma, anon_vma_next) as u64, first);
        self.w(vma + offset_of!(Vma, anon_vma_prev) as u64, 0);
        if first != 0 {
            self.w(first + offset_of!(Vma, anon_vma_prev) as u64, vma);
        }
        self.w(head, vma);
        let nr = av + offset_of!(AnonVma, nr_vmas) as u64;
        self.w(nr, self.r(nr) + 1);
    }

    /// Inserts `vma` into `m`'s i_mmap at page offset `pgoff` (a plain, unbalanced search tree:
    /// the probes check links and colours, not balance).
    fn file_link(&mut self, m: u64, vma: u64, pgoff: u64) {
        self.set_file(vma, m);
        let shared = offset_of!(Vma, shared) as u64;
        let nd = vma + shared;
        let f = |off: usize| nd + off as u64;
        let root = m + offset_of!(AddressSpace, i_mmap) as u64 + tree_root::ROOT as u64;
        let count = m + offset_of!(AddressSpace, i_mmap) as u64 + tree_root::COUNT as u64;
        self.w(vma + offset_of!(Vma, vm_pgoff) as u64, pgoff);
        self.w(f(node::LEFT), 0);
        self.w(f(node::RIGHT), 0);
        self.w(f(node::COLOR), IntervalNode::BLACK);
        let (mut parent, mut slot) = (0, root);
        while self.r(slot) != 0 {
            parent = self.r(slot);
            let pstart = self.r(parent - shared + offset_of!(Vma, vm_pgoff) as u64);
            slot = parent
                + if pgoff < pstart {
                    node::LEFT
                } else {
                    node::RIGHT
                } as u64;
        }
        self.w(f(node::PARENT), parent);
        self.w(slot, nd);
        self.w(count, self.r(count) + 1);
    }

    /// A data page mapped once, whose `Page::mapping` names `av`.
    fn anon_page(&mut self, av: u64) -> u64 {
        let f = self.frame(PageFlags(PageFlags::ALLOCATED.0 | PageFlags::ANON.0));
        let p = self.page(f);
        self.w(p + offset_of!(Page, mapping) as u64, av | PAGE_MAPPING_ANON);
        self.w(p + offset_of!(Page, mapcount) as u64, 1);
        f
    }

    /// A probe that has seen the `Roots` event and a `VmaRange` for every VMA made, so the default
    /// mode checks the index's candidates instead of walking everything.
    fn probe_indexed(&self, thorough: bool) -> Probe {
        let mut p = self.probe(thorough);
        for &(mm, vma, start, end) in &self.vmas {
            let ev = ProbeEvent::VmaRange {
                mm,
                vma,
                start,
                end,
            };
            assert!(p.handle(0, &ev, "", &mut || RIP).is_empty());
        }
        p
    }

    /// A probe that has seen the `Roots` event.
    fn probe(&self, thorough: bool) -> Probe {
        let mut p = Probe::new(self.mem.clone(), thorough);
        let roots = ProbeEvent::Roots {
            roots: ROOTS,
            mem_map: MEM_MAP,
            mem_map_len: RAM / 4096,
            kernel_pgd: 0x2000,
            layout_magic: LAYOUT_MAGIC,
            layout_version: LAYOUT_VERSION,
        };
        assert!(p.handle(0, &roots, "", &mut || RIP).is_empty());
        p
    }
}

/// The span of the table of `level` mapping `va`.
fn span(mm: Mm, level: Level, frame: u64, va: u64) -> TableSpan {
    let start = va & !(level.table_span() - 1);
    TableSpan {
        mm: mm.addr,
        level: level as u8,
        frame,
        start,
        end: start + level.table_span(),
    }
}

/// Feeds `events`, returning every violation.
fn feed(p: &mut Probe, events: &[ProbeEvent]) -> Vec<Violation> {
    events
        .iter()
        .flat_map(|e| p.handle(0, e, "", &mut || RIP))
        .collect()
}

/// The free of `span`'s table as a correct guest reports it: the allocator's report, carrying the
/// mmu_gather's announcement of exactly that span.
fn announced_free(span: TableSpan) -> ProbeEvent {
    ProbeEvent::TableFreed {
        frame: span.frame,
        claim: Some(span),
        path: FreePath::Other,
    }
}

/// The protocol of a correct free: unhook, flush the span, free.
fn correct_free(s: TableSpan) -> [ProbeEvent; 3] {
    [
        ProbeEvent::TableUnhooked(s),
        ProbeEvent::TlbFlushed {
            mm: s.mm,
            start: s.start,
            end: s.end,
        },
        announced_free(s),
    ]
}

/// An mm with one VMA at `USER_BASE` (on nothing yet) and its PTE table, unhooked in memory.
fn unhooked_pte_table(f: &mut Fake) -> (Mm, u64, TableSpan) {
    let mm = f.mm();
    let va = USER_BASE.0;
    let vma = f.vma(mm, va, va + 0x4000);
    let table = f.ensure_table(mm, Level::Pte, va);
    f.unhook(mm, Level::Pte, va);
    (mm, vma, span(mm, Level::Pte, table, va))
}
