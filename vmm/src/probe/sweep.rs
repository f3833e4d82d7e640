//! P6, the sweep: every mm's page tables walked from its PGD and held against the mem_map, so a
//! table lost, leaked, misdescribed or miscounted shows even when no event was ever about it.
//!
//! The mms are found from the mem_map itself: every frame whose `Page` says it is a PGD names its
//! `MmStruct` (the ptdesc, `mm_core::phys::TableDesc`), whose `pgd` must point back to it. Then:
//! - every table reachable from a PGD's user half is a frame marked page table whose descriptor
//!   names that mm, its level and the first address its entry maps, reached exactly once;
//! - every frame marked page table is a live mm's PGD, reachable from it, or unhooked and waiting
//!   in an mmu_gather (the engine's unhooked set): nothing lost;
//! - every table below a PGD meets a VMA of its mm (`free_pgtables` frees the rest): nothing
//!   leaked;
//! - `nr_ptes` and `pgtables_bytes` equal the tables counted, and (unless racing walkers may be
//!   changing them) `anon_rss` and `file_rss` the leaves that hold a frame;
//! - every leaf that holds a frame lies in a VMA, is no more writable than it, and maps a page
//!   rmap can find from that VMA: its `Page` names the VMA's anon_vma (or its file's mapping)
//!   and the page offset the VMA gives the address.
//!
//! The sweep is only sound where no mm operation is half done: the guest's `Quiescent` points.
//! [`leftovers`] is the part that holds at any PGD free: no other table names that mm any more.
//!
//! A full sweep reads the whole mem_map ([`MemMapCopy`]): it finds the mms from their PGDs and
//! every frame marked page table, reached or not. A light sweep ([`LivePages`](super::mem_map::LivePages)) reads only the
//! `Page`s of what it reaches, from the mms it is given: its cost follows the tables, not RAM;
//! the caller finds what was lost by comparing with what the last sweep reached.

use std::collections::HashMap;

use mm_core::addr::PAGE_SIZE;
use mm_core::mm::VmFlags;
use mm_core::paging::{Level, PageTableEntry, PteFlags};
use mm_core::phys::{PageFlags, TableDesc, PAGE_MAPPING_ANON};

use super::guest_mem::{AddrSet, GuestView, WalkError, WalkErrors};
use super::layout::{self, word};
use super::mem_map::{MemMapCopy, Pages};
use super::pgtable::{is_poison, user_entries};

/// Something the sweep found wrong about one table (or one mm, `frame` being its PGD).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Finding {
    /// The mm.
    pub mm: u64,
    /// The table's level (1 = PTE table … 4 = PGD).
    pub level: u8,
    /// The table's frame.
    pub frame: u64,
    /// The first address it maps.
    pub start: u64,
    /// What kind of finding (one word: a table lost, leaked, ... or the counter's name), so a
    /// finding that stays true is reported once.
    pub kind: &'static str,
    /// What is wrong.
    pub detail: String,
}

/// What one sweep saw.
#[derive(Default)]
pub(crate) struct Outcome {
    /// Broken rules.
    pub findings: Vec<Finding>,
    /// Structures that could not be read.
    pub errors: WalkErrors,
    /// Every table reached, with where it hangs (mm, level, base).
    pub reached: HashMap<u64, TableDesc>,
    /// Mms swept.
    pub mms: u64,
    /// Every present PTE-level leaf reached (at most [`MAX_LEAVES`]), for the leaf flush check.
    pub leaves: Vec<Leaf>,
    /// More leaves were present than [`MAX_LEAVES`]: the list is partial.
    pub leaves_overflow: bool,
    /// The mms whose walk completed.
    pub mms_done: Vec<u64>,
}

impl Outcome {
    /// Whether every structure could be read.
    pub(crate) fn errors_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Leaves a sweep remembers at most (24 bytes each, 12 MiB).
pub(crate) const MAX_LEAVES: usize = 1 << 19;

/// A present PTE the sweep found: in mm `mm`, mapping `va`, holding `bits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Leaf {
    /// The mm (first: leaves sort by mm, then address).
    pub mm: u64,
    /// The address it maps.
    pub va: u64,
    /// The entry.
    pub bits: u64,
}

/// Sweeps the mms whose PGDs are `pgds` (frame and descriptor), reading `Page`s from `pages`.
/// `index(mm, start, end)` proposes the VMAs meeting a range (each is read and verified in guest
/// memory), so the cost follows the tables, not the VMAs; without one, each mm's VMA list is
/// walked. `rss`: compare the rss counters and the pages' rmap too.
pub(crate) fn sweep(
    view: &mut GuestView<'_>,
    pages: &dyn Pages,
    pgds: &[(u64, TableDesc)],
    index: Option<&dyn Fn(u64, u64, u64) -> Vec<u64>>,
    rss: bool,
) -> Outcome {
    let mut out = Outcome::default();
    for &(pgd, desc) in pgds {
        if view.spent() {
            break;
        }
        out.mms += 1;
        if let Err(e) = sweep_mm(view, pages, pgd, desc, index, rss, &mut out) {
            out.errors.push(e);
        }
    }
    out
}

/// The PGDs a full copy of the mem_map names, the kernel's own aside.
pub(crate) fn pgds_of(copy: &MemMapCopy, kernel_pgd: u64) -> Vec<(u64, TableDesc)> {
    copy.tables()
        .filter(|&(f, d)| d.level == Level::Pgd as u64 && f != kernel_pgd)
        .collect()
}

/// The frames `copy` marks page table below a PGD that the sweep did not reach and no mmu_gather
/// holds (`in_flight`): lost.
pub(crate) fn lost(
    copy: &MemMapCopy,
    reached: &HashMap<u64, TableDesc>,
    in_flight: &dyn Fn(u64) -> bool,
) -> Vec<Finding> {
    copy.tables()
        .filter(|&(frame, d)| {
            d.level != Level::Pgd as u64 && !reached.contains_key(&frame) && !in_flight(frame)
        })
        .map(|(frame, desc)| Finding {
            mm: desc.mm,
            level: desc.level as u8,
            frame,
            start: desc.base,
            kind: "lost",
            detail: "lost: its Page says page table, but no PGD reaches it and no mmu_gather \
                     holds it (unhooked and never freed)"
                .to_string(),
        })
        .collect()
}

/// The tables of `mm` other than its PGD `pgd` still marked page table: at the PGD's free, every
/// one of them is leaked.
pub(crate) fn leftovers(copy: &MemMapCopy, mm: u64, pgd: u64) -> Vec<Finding> {
    copy.tables()
        .filter(|&(frame, d)| d.mm == mm && frame != pgd)
        .map(|(frame, d)| Finding {
            mm,
            level: d.level as u8,
            frame,
            start: d.base,
            kind: "leaked",
            detail: "leaked: still marked page table of this mm when its PGD was freed".to_string(),
        })
        .collect()
}

/// Counts of one mm's walk.
#[derive(Default)]
struct Counted {
    ptes: u64,
    tables: u64,
    anon: u64,
    file: u64,
}

fn sweep_mm(
    view: &mut GuestView<'_>,
    copy: &dyn Pages,
    pgd: u64,
    desc: TableDesc,
    index: Option<&dyn Fn(u64, u64, u64) -> Vec<u64>>,
    rss: bool,
    out: &mut Outcome,
) -> Result<(), WalkError> {
    let mm = desc.mm;
    let finding = |level: u8, frame: u64, start: u64, kind: &'static str, detail: String| Finding {
        mm,
        level,
        frame,
        start,
        kind,
        detail,
    };
    let head = view.words::<{ layout::mm::WORDS }>("mm_struct", mm)?;
    if head[word(layout::mm::PGD)] != pgd {
        let detail = format!(
            "its Page says PGD of mm {mm:#x}, whose pgd is {:#x}: a PGD its mm left behind",
            head[word(layout::mm::PGD)]
        );
        out.findings.push(finding(4, pgd, 0, "orphan PGD", detail));
        return Ok(());
    }
    out.reached.insert(pgd, desc);
    let mut vmas = match index {
        Some(index) => VmaLookup::Index {
            index,
            cache: HashMap::new(),
        },
        None => VmaLookup::List(vmas_of(view, mm, head[word(layout::mm::MMAP)])?),
    };
    let mut counted = Counted::default();
    let mut stack = vec![(pgd, Level::Pgd, 0u64)];
    while let Some((table, level, base)) = stack.pop() {
        view.step("page table", table)?;
        let entries = view.table(table)?;
        // The VMAs a PTE table's leaves may lie in, looked up once per table.
        let near = if level == Level::Pte {
            vmas.meeting(view, mm, base, base.wrapping_add(level.table_span()))?
        } else {
            Vec::new()
        };
        let range = user_entries(level);
        for i in range {
            let value = entries[i];
            if value == 0 {
                continue;
            }
            if i != 0 && is_poison(value) {
                let detail = format!(
                    "use after free: reachable, but entry {i} holds the poison of a freed table \
                     ({value:#x})"
                );
                out.findings
                    .push(finding(level as u8, table, base, "poison", detail));
                break;
            }
            let e = PageTableEntry::from_bits(value);
            let va = base.wrapping_add(i as u64 * level.entry_span());
            let Some(lower) = level.lower() else {
                if e.is_present() {
                    if out.leaves.len() < MAX_LEAVES {
                        out.leaves.push(Leaf {
                            mm,
                            va,
                            bits: value,
                        });
                    } else {
                        out.leaves_overflow = true;
                    }
                }
                if !e.holds_frame() {
                    continue;
                }
                let page = copy.page(e.frame().0);
                if page.0.contains(PageFlags::ZERO) {
                    // The zero page: in no rss and no rmap, and never writable.
                    if e.flags().contains(PteFlags::WRITABLE) {
                        let detail = format!("the zero page is mapped writable at {va:#x}");
                        out.findings
                            .push(finding(level as u8, table, base, "wrong leaf", detail));
                    }
                    continue;
                }
                if page.0.contains(PageFlags::ANON) {
                    counted.anon += 1;
                } else {
                    counted.file += 1;
                }
                let wrong = match first_meeting(&near, va, va + PAGE_SIZE) {
                    None => Some(format!("a PTE maps {va:#x}, where the mm has no VMA")),
                    Some(v) if rss => v.wrong_leaf(va, e, page),
                    Some(_) => None,
                };
                if let Some(detail) = wrong {
                    out.findings
                        .push(finding(level as u8, table, base, "wrong leaf", detail));
                }
                continue;
            };
            if !e.is_present() || e.flags().contains(PteFlags::HUGE) {
                continue;
            }
            let child = e.frame().0;
            let hangs = TableDesc {
                mm,
                level: lower as u64,
                base: va,
            };
            match copy.table_desc(child) {
                None => {
                    let detail = format!(
                        "entry {i} of level-{} table {table:#x} points to it, but its Page does \
                         not say page table (flags {:#x})",
                        level as u8,
                        copy.flags(child).0
                    );
                    out.findings
                        .push(finding(lower as u8, child, va, "unmarked", detail));
                    continue;
                }
                Some(d) if d != hangs => {
                    let detail = format!(
                        "its Page describes a level-{} table of mm {:#x} from {:#x}, but it hangs \
                         at entry {i} of level-{} table {table:#x}",
                        d.level, d.mm, d.base, level as u8
                    );
                    out.findings
                        .push(finding(lower as u8, child, va, "misdescribed", detail));
                }
                Some(_) => {}
            }
            if let Some(before) = out.reached.insert(child, hangs) {
                let detail = format!(
                    "reached twice: also from mm {:#x} at level {} from {:#x}",
                    before.mm, before.level, before.base
                );
                out.findings
                    .push(finding(lower as u8, child, va, "reached twice", detail));
                continue;
            }
            counted.tables += 1;
            if lower == Level::Pte {
                counted.ptes += 1;
            }
            let end = va.wrapping_add(lower.table_span());
            if vmas.meeting(view, mm, va, end)?.is_empty() {
                let detail = format!(
                    "leaked: maps [{va:#x}, {end:#x}), where the mm has no VMA (free_pgtables \
                     should have freed it)"
                );
                out.findings
                    .push(finding(lower as u8, child, va, "no VMA", detail));
            }
            stack.push((child, lower, va));
        }
    }
    let mut counters = vec![
        ("nr_ptes", layout::mm::NR_PTES, counted.ptes),
        (
            "pgtables_bytes",
            layout::mm::PGTABLES_BYTES,
            counted.tables * PAGE_SIZE,
        ),
    ];
    if rss {
        counters.push(("anon_rss", layout::mm::ANON_RSS, counted.anon));
        counters.push(("file_rss", layout::mm::FILE_RSS, counted.file));
    }
    for (name, off, counted) in counters {
        let recorded = head[word(off)];
        if recorded != counted {
            let detail = format!("{name} is {recorded}, its page tables hold {counted}");
            out.findings.push(finding(4, pgd, 0, name, detail));
        }
    }
    out.mms_done.push(mm);
    Ok(())
}

/// What the sweep needs of one VMA.
#[derive(Clone, Copy, Debug)]
struct VmaView {
    start: u64,
    end: u64,
    flags: u64,
    pgoff: u64,
    /// `AnonVma` address, 0 for none.
    anon: u64,
    /// The file's `AddressSpace`, 0 for anonymous memory.
    mapping: u64,
}

impl VmaView {
    /// Why a leaf at `va` mapping a frame with `page` (flags, mapping, index) and entry `e` is
    /// not what rmap and this VMA expect, if it is not.
    fn wrong_leaf(
        &self,
        va: u64,
        e: PageTableEntry,
        page: (PageFlags, u64, u64),
    ) -> Option<String> {
        let (flags, mapping, index) = page;
        // The guest wrote `start` and `pgoff`: wrap rather than trust them.
        let linear = (va.wrapping_sub(self.start) >> 12).wrapping_add(self.pgoff);
        if e.flags().contains(PteFlags::WRITABLE) && !VmFlags(self.flags).contains(VmFlags::WRITE) {
            return Some(format!("the PTE for {va:#x} is writable, its VMA is not"));
        }
        let owner = if flags.contains(PageFlags::ANON) {
            self.anon | PAGE_MAPPING_ANON
        } else {
            self.mapping
        };
        (owner == 0 || mapping != owner || index != linear).then(|| {
            format!(
                "the page at {va:#x} ({:#x}) names mapping {mapping:#x} index {index}; its VMA's \
                 rmap needs {owner:#x} index {linear}: rmap cannot find it",
                e.frame().0
            )
        })
    }
}

/// `mm`'s VMAs, from its list (`mmap`, then `vm_next`), sorted by start.
fn vmas_of(view: &mut GuestView<'_>, mm: u64, first: u64) -> Result<Vec<VmaView>, WalkError> {
    let mut out = Vec::new();
    let mut seen = AddrSet::default();
    let mut vma = first;
    while vma != 0 {
        if !seen.insert(vma) {
            return Err(WalkError::Cycle {
                what: "vma",
                addr: vma,
            });
        }
        let Some(v) = read_vma(view, vma, mm)? else {
            let found = view.word("vma", vma.wrapping_add(layout::vma::VM_MM as u64))?;
            return Err(WalkError::BrokenLink {
                what: "vma",
                addr: vma,
                link: "vm_mm",
                found,
                expected: mm,
            });
        };
        out.push(v);
        vma = view.word("vma", vma.wrapping_add(layout::vma::VM_NEXT as u64))?;
    }
    out.sort_unstable_by_key(|v| v.start);
    Ok(out)
}

/// The VMA of `vmas` (sorted, non-overlapping) first meeting `[start, end)`; `end` 0 is the top.
fn first_meeting(vmas: &[VmaView], start: u64, end: u64) -> Option<&VmaView> {
    let end = if end == 0 { u64::MAX } else { end };
    let i = vmas.partition_point(|v| v.end <= start);
    vmas.get(i).filter(|v| v.start < end)
}

/// Whether a VMA of `vmas` meets `[start, end)`.
#[cfg(test)]
fn meets(vmas: &[VmaView], start: u64, end: u64) -> bool {
    first_meeting(vmas, start, end).is_some()
}

/// Where one mm's sweep finds its VMAs.
enum VmaLookup<'a> {
    /// The VMA index proposes, guest memory confirms (each VMA read once).
    Index {
        index: &'a dyn Fn(u64, u64, u64) -> Vec<u64>,
        cache: HashMap<u64, Option<VmaView>>,
    },
    /// The mm's whole list, read up front.
    List(Vec<VmaView>),
}

impl VmaLookup<'_> {
    /// The VMAs of `mm` meeting `[start, end)`, sorted by start.
    fn meeting(
        &mut self,
        view: &mut GuestView<'_>,
        mm: u64,
        start: u64,
        end: u64,
    ) -> Result<Vec<VmaView>, WalkError> {
        let top = if end == 0 { u64::MAX } else { end };
        let meets = |v: &VmaView| v.start < top && start < v.end;
        match self {
            VmaLookup::List(list) => Ok(list.iter().filter(|v| meets(v)).copied().collect()),
            VmaLookup::Index { index, cache } => {
                let mut out = Vec::new();
                for vma in index(mm, start, end) {
                    let v = match cache.get(&vma) {
                        Some(v) => *v,
                        None => {
                            let v = read_vma(view, vma, mm)?;
                            cache.insert(vma, v);
                            v
                        }
                    };
                    out.extend(v.filter(|v| meets(v)));
                }
                out.sort_unstable_by_key(|v| v.start);
                Ok(out)
            }
        }
    }
}

/// The VMA at `vma` as the sweep needs it; `None` if it is no VMA of `mm` (the index is the
/// guest's word, the `Vma` is checked).
fn read_vma(view: &mut GuestView<'_>, vma: u64, mm: u64) -> Result<Option<VmaView>, WalkError> {
    view.step("vma", vma)?;
    let w = view.words::<VMA_WORDS>("vma", vma)?;
    if w[word(layout::vma::VM_MM)] != mm {
        return Ok(None);
    }
    let mapping = match w[word(layout::vma::VM_FILE)] {
        0 => 0,
        f => view.word("file", f.wrapping_add(layout::file::F_MAPPING as u64))?,
    };
    Ok(Some(VmaView {
        start: w[word(layout::vma::VM_START)],
        end: w[word(layout::vma::VM_END)],
        flags: w[word(layout::vma::VM_FLAGS)],
        pgoff: w[word(layout::vma::VM_PGOFF)],
        anon: w[word(layout::vma::ANON_VMA)],
        mapping,
    }))
}

/// Words of a `Vma` the sweep reads (through `anon_vma`).
const VMA_WORDS: usize = layout::vma::ANON_VMA / 8 + 1;
const _: () = assert!(layout::vma::VM_NEXT < VMA_WORDS * 8 && layout::vma::VM_FILE < VMA_WORDS * 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vma_meets_a_span_only_if_their_ranges_overlap() {
        let v = |start, end| VmaView {
            start,
            end,
            flags: 0,
            pgoff: 0,
            anon: 0,
            mapping: 0,
        };
        let vmas = [v(0x1000, 0x3000), v(0x10_0000, 0x20_0000)];
        assert!(meets(&vmas, 0x2000, 0x5000));
        assert!(!meets(&vmas, 0x3000, 0x10_0000));
        assert!(meets(&vmas, 0x1f_f000, 0));
        assert!(!meets(&vmas, 0x20_0000, 0));
        assert!(!meets(&[], 0, 0));
    }
}
