//! `validate_mm`: every invariant of an address space, checked, each breach reported.
//!
//! Checks (numbers refer to the crate root's Invariants): the VMA list is sorted, non-overlapping,
//! page-aligned, inside user space, doubly linked and mirrored by the find_vma index (1); map_count,
//! total_vm and locked_vm match the list (2); each VMA is on its anon_vma list and in its file's
//! i_mmap, and those structures hold no VMA of this mm that is not on its list (3); no leaf maps
//! outside a VMA or beyond its permissions, and rmap can find every mapped page (3); the table and
//! rss counters match the tables, and every table frame is marked as one (6).

use alloc::vec::Vec;
use core::fmt;

use crate::addr::{VirtAddr, PAGE_SIZE, TASK_SIZE, USER_BASE};
use crate::kernel::Kernel;
use crate::mm::anon::anon_mapping_value;
use crate::mm::file::is_in_i_mmap;
use crate::mm::mm_struct::Mm;
use crate::mm::vma::{VmFlags, VmaPtr};
use crate::paging::{walk, Level, PteFlags};
use crate::phys::{PageFlags, TableDesc};

/// One broken invariant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A VMA is empty, unaligned, or outside user space.
    VmaBounds {
        /// Address of the VMA.
        vma: u64,
        /// Its start.
        start: u64,
        /// Its end.
        end: u64,
    },
    /// A VMA starts before the previous one ends.
    VmaOrder {
        /// Address of the VMA.
        vma: u64,
        /// End of the previous VMA.
        prev_end: u64,
        /// Its start.
        start: u64,
    },
    /// `vm_prev` or `vm_mm` disagrees with the list.
    VmaLinks {
        /// Address of the VMA.
        vma: u64,
    },
    /// The find_vma index disagrees with the list.
    Index {
        /// Address of the VMA.
        vma: u64,
    },
    /// A counter disagrees with what it counts.
    Counter {
        /// Which counter.
        name: &'static str,
        /// What the mm records.
        recorded: u64,
        /// What validate_mm counted.
        counted: u64,
    },
    /// A VMA with an anon_vma is not on its list.
    AnonVmaMissing {
        /// Address of the VMA.
        vma: u64,
    },
    /// An anon_vma list holds a VMA of this mm that is not on the mm's list or points elsewhere.
    AnonVmaStray {
        /// Address of the anon_vma.
        anon_vma: u64,
        /// Address of the VMA.
        vma: u64,
    },
    /// A file VMA is not in its file's i_mmap.
    IMmapMissing {
        /// Address of the VMA.
        vma: u64,
    },
    /// An i_mmap tree breaks its own invariants (order, colours, augmentation).
    IMmapTree {
        /// Address of the address_space.
        mapping: u64,
        /// How many tree invariants are broken.
        problems: u64,
    },
    /// An i_mmap holds a VMA of this mm that is not on the mm's list.
    IMmapStray {
        /// Address of the address_space.
        mapping: u64,
        /// Address of the VMA.
        vma: u64,
    },
    /// A leaf maps an address no VMA covers.
    PteOutsideVma {
        /// The virtual address.
        va: u64,
    },
    /// A leaf grants more than its VMA allows.
    PteTooPermissive {
        /// The virtual address.
        va: u64,
        /// Address of the VMA.
        vma: u64,
    },
    /// A mapped page's metadata does not lead rmap back to this mapping.
    RmapUnreachable {
        /// The virtual address.
        va: u64,
        /// The frame.
        frame: u64,
    },
    /// A page-table frame is not marked as a page table.
    TableNotMarked {
        /// The frame.
        frame: u64,
    },
    /// A page-table frame's descriptor is not where it hangs (Invariant 8).
    TableMisdescribed {
        /// The frame.
        frame: u64,
        /// Its level and base as it hangs.
        hangs: (u64, u64),
        /// What its `Page` says: mm, level, base (`None`: no descriptor).
        says: Option<(u64, u64, u64)>,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Mm {
    /// Checks every invariant of this address space; an empty list means all hold.
    pub fn validate_mm(&self, k: &Kernel<'_>) -> Vec<Violation> {
        let mut out = self.validate_vmas(k);
        self.validate_tables(k, &mut out);
        out
    }

    /// The invariants of the VMAs alone (Invariants 1 and 3, and the VMA counters of 2): list,
    /// index, anon_vma lists and i_mmap trees, `map_count`, `total_vm`, `locked_vm`. It reads no
    /// page table, so its cost grows with the VMAs only (the guest runs it after every system
    /// call in `--thorough` runs).
    pub fn validate_vmas(&self, k: &Kernel<'_>) -> Vec<Violation> {
        let mut out = Vec::new();
        let raw = self.raw();
        let (mut count, mut total, mut locked) = (0u64, 0u64, 0u64);
        let mut prev: Option<VmaPtr> = None;
        let mut mappings = Vec::new();
        let mut anons = Vec::new();
        for vma in self.vmas() {
            let v = vma.get();
            let a = vma.addr();
            count += 1;
            total += v.pages();
            if v.flags().contains(VmFlags::LOCKED) {
                locked += v.pages();
            }
            let (s, e) = (v.start(), v.end());
            if s >= e
                || !s.is_aligned(PAGE_SIZE)
                || !e.is_aligned(PAGE_SIZE)
                || s < USER_BASE
                || e > TASK_SIZE
            {
                out.push(Violation::VmaBounds {
                    vma: a,
                    start: s.0,
                    end: e.0,
                });
            }
            if let Some(p) = prev {
                if p.get().end() > s {
                    out.push(Violation::VmaOrder {
                        vma: a,
                        prev_end: p.get().end().0,
                        start: s.0,
                    });
                }
            }
            if v.prev() != prev || v.vm_mm.get() != raw.addr() {
                out.push(Violation::VmaLinks { vma: a });
            }
            if self.index_get(e.0) != Some(vma) {
                out.push(Violation::Index { vma: a });
            }
            if let Some(anon) = v.anon() {
                if !anon.get().vmas().any(|x| x == vma) {
                    out.push(Violation::AnonVmaMissing { vma: a });
                }
                if !anons.contains(&anon) {
                    anons.push(anon);
                }
            }
            if let Some(file) = v.file() {
                if !is_in_i_mmap(k, vma) {
                    out.push(Violation::IMmapMissing { vma: a });
                }
                let m = file.get().mapping();
                if !mappings.contains(&m) {
                    mappings.push(m);
                }
            }
            prev = Some(vma);
            if count > raw.map_count.get() + 1 {
                break; // a cycle or a runaway list: the counter check below reports it
            }
        }
        let counters = [
            ("map_count", raw.map_count.get(), count),
            ("find_vma index", self.index_len() as u64, count),
            ("total_vm", raw.total_vm.get(), total),
            ("locked_vm", raw.locked_vm.get(), locked),
        ];
        let ours = |vma: VmaPtr| vma.get().vm_mm.get() == raw.addr();
        let listed = |vma: VmaPtr| self.index_get(vma.get().vm_end.get()) == Some(vma);
        for anon in &anons {
            for vma in anon.get().vmas().filter(|v| ours(*v)) {
                if !listed(vma) || vma.get().anon() != Some(*anon) {
                    out.push(Violation::AnonVmaStray {
                        anon_vma: anon.addr(),
                        vma: vma.addr(),
                    });
                }
            }
        }
        for m in &mappings {
            let problems = m.get().lock_i_mmap(k).violations() as u64;
            if problems != 0 {
                out.push(Violation::IMmapTree {
                    mapping: m.addr(),
                    problems,
                });
            }
            for vma in m
                .get()
                .lock_i_mmap(k)
                .vmas()
                .into_iter()
                .filter(|v| ours(*v))
            {
                if !listed(vma) {
                    out.push(Violation::IMmapStray {
                        mapping: m.addr(),
                        vma: vma.addr(),
                    });
                }
            }
        }
        counter_violations(counters, &mut out);
        out
    }

    /// The invariants of the page tables (Invariants 6 and 8, and the table and rss counters of
    /// 2): every leaf against its VMA and rmap, every table marked and described where it hangs.
    fn validate_tables(&self, k: &Kernel<'_>, out: &mut Vec<Violation>) {
        let raw = self.raw();
        let (anon_rss, file_rss) = self.validate_leaves(k, out);
        let (mut ptes, mut tables) = (0u64, 0u64);
        let mine = TableDesc {
            mm: raw.addr(),
            level: Level::Pgd as u64,
            base: 0,
        };
        if k.page(raw.pgd()).table_desc() != Some(mine) {
            let says = k
                .page(raw.pgd())
                .table_desc()
                .map(|d| (d.mm, d.level, d.base));
            out.push(Violation::TableMisdescribed {
                frame: raw.pgd().0,
                hangs: (mine.level, 0),
                says,
            });
        }
        walk::for_each_user_table(k, raw.pgd(), &mut |level, frame, start| {
            tables += 1;
            if level == Level::Pte {
                ptes += 1;
            }
            let page = k.page(frame);
            if !page.page_flags().contains(PageFlags::PAGETABLE) {
                out.push(Violation::TableNotMarked { frame: frame.0 });
                return;
            }
            let hangs = TableDesc {
                mm: raw.addr(),
                level: level as u64,
                base: start.0,
            };
            if page.table_desc() != Some(hangs) {
                out.push(Violation::TableMisdescribed {
                    frame: frame.0,
                    hangs: (hangs.level, hangs.base),
                    says: page.table_desc().map(|d| (d.mm, d.level, d.base)),
                });
            }
        });
        let counters = [
            ("anon_rss", raw.anon_rss.get(), anon_rss),
            ("file_rss", raw.file_rss.get(), file_rss),
            ("nr_ptes", raw.nr_ptes.get(), ptes),
            (
                "pgtables_bytes",
                raw.pgtables_bytes.get(),
                tables * PAGE_SIZE,
            ),
        ];
        counter_violations(counters, out);
    }

    /// Checks every leaf against its VMA and rmap; returns the (anon, file) pages counted.
    fn validate_leaves(&self, k: &Kernel<'_>, out: &mut Vec<Violation>) -> (u64, u64) {
        let (mut anon, mut file) = (0, 0);
        walk::for_each_leaf(
            k,
            self.raw().pgd(),
            USER_BASE,
            TASK_SIZE,
            &mut |va, _, e| {
                if !e.holds_frame() {
                    return;
                }
                let Some(vma) = self.vma_at(va) else {
                    out.push(Violation::PteOutsideVma { va: va.0 });
                    return;
                };
                let v = vma.get();
                let flags = v.flags();
                let f = e.flags();
                let too_wide = (f.contains(PteFlags::WRITABLE) && !flags.contains(VmFlags::WRITE))
                    || (f.contains(PteFlags::PRESENT)
                        && !f.contains(PteFlags::NO_EXECUTE)
                        && !flags.contains(VmFlags::EXEC))
                    || (f.contains(PteFlags::PRESENT) && flags.0 & VmFlags::ACCESS.0 == 0);
                if too_wide {
                    out.push(Violation::PteTooPermissive {
                        va: va.0,
                        vma: vma.addr(),
                    });
                }
                let page = k.page(e.frame());
                if page.page_flags().contains(PageFlags::ZERO) {
                    // Only ever read-only, in private anonymous memory; in no rmap and no rss.
                    if f.contains(PteFlags::WRITABLE) || v.file().is_some() {
                        out.push(Violation::PteTooPermissive {
                            va: va.0,
                            vma: vma.addr(),
                        });
                    }
                    return;
                }
                let index_ok = page.index.get() == v.linear_page_index(VirtAddr(va.0));
                let reachable = if page.page_flags().contains(PageFlags::ANON) {
                    anon += 1;
                    v.anon()
                        .is_some_and(|a| page.mapping.get() == anon_mapping_value(a))
                } else {
                    file += 1;
                    v.file()
                        .is_some_and(|fl| page.mapping.get() == fl.get().mapping().addr())
                };
                if !reachable || !index_ok || page.mapcount.get() == 0 {
                    out.push(Violation::RmapUnreachable {
                        va: va.0,
                        frame: e.frame().0,
                    });
                }
            },
        );
        (anon, file)
    }
}

/// A [`Violation::Counter`] for each (name, recorded, counted) that disagree.
fn counter_violations(
    counters: impl IntoIterator<Item = (&'static str, u64, u64)>,
    out: &mut Vec<Violation>,
) {
    for (name, recorded, counted) in counters {
        if recorded != counted {
            out.push(Violation::Counter {
                name,
                recorded,
                counted,
            });
        }
    }
}
