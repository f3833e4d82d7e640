//! The guest's mem_map (its `Page` array) as the sweep and the checks read it: whole
//! ([`MemMapCopy`]) or one `Page` at a time from live memory ([`LivePages`]), and the page-table
//! descriptor (`mm_core::phys::TableDesc`) a `Page` holds.

use mm_core::addr::{PAGE_SIZE, TASK_SIZE, USER_BASE};
use mm_core::paging::Level;
use mm_core::phys::{PageFlags, TableDesc};

use super::guest_mem::{GuestView, WalkError};
use super::layout::{page, word};

/// The guest's mem_map, read in one go.
pub(crate) struct MemMapCopy {
    words: Vec<u64>,
    len: u64,
}

impl MemMapCopy {
    /// Reads `len` `Page`s at `mem_map` (capped at the frames of RAM), reusing `buf`'s memory.
    pub(crate) fn read(
        view: &mut GuestView<'_>,
        mem_map: u64,
        len: u64,
        mut buf: Vec<u64>,
    ) -> Result<MemMapCopy, WalkError> {
        let len = len.min(view.ram_frames());
        view.step("mem_map", mem_map)?;
        buf.resize(len as usize * PAGE_WORDS, 0);
        view.read_words("mem_map", mem_map, &mut buf)?;
        Ok(MemMapCopy { words: buf, len })
    }

    /// Gives the buffer back for the next read.
    pub(crate) fn into_buffer(self) -> Vec<u64> {
        self.words
    }

    /// The flags, mapping and index of `frame`'s `Page` (all empty outside the mem_map).
    pub(crate) fn page(&self, frame: u64) -> (PageFlags, u64, u64) {
        let pfn = frame / PAGE_SIZE;
        if pfn >= self.len {
            return (PageFlags(0), 0, 0);
        }
        let p = &self.words[pfn as usize * PAGE_WORDS..][..PAGE_WORDS];
        (
            PageFlags(p[word(page::FLAGS)]),
            p[word(page::MAPPING)],
            p[word(page::INDEX)],
        )
    }

    /// Every frame marked page table, with its descriptor.
    pub(crate) fn tables(&self) -> impl Iterator<Item = (u64, TableDesc)> + '_ {
        (0..self.len).filter_map(|pfn| Some((pfn * PAGE_SIZE, self.table_desc(pfn * PAGE_SIZE)?)))
    }
}

/// Words in one `Page`.
const PAGE_WORDS: usize = page::SIZE / 8;

/// Where the sweep reads `Page`s from.
pub(crate) trait Pages {
    /// The flags, mapping and index of `frame`'s `Page` (all empty outside the mem_map).
    fn page(&self, frame: u64) -> (PageFlags, u64, u64);

    /// The flags of `frame`'s `Page`.
    fn flags(&self, frame: u64) -> PageFlags {
        self.page(frame).0
    }

    /// The descriptor of `frame` if its `Page` says allocated page table.
    fn table_desc(&self, frame: u64) -> Option<TableDesc> {
        let (flags, mapping, index) = self.page(frame);
        desc_of(flags, mapping, index)
    }
}

impl Pages for MemMapCopy {
    fn page(&self, frame: u64) -> (PageFlags, u64, u64) {
        MemMapCopy::page(self, frame)
    }
}

/// `Page`s read from guest memory one at a time, as the sweep reaches them.
pub(crate) struct LivePages<'a> {
    view: &'a GuestView<'a>,
    mem_map: u64,
    len: u64,
}

impl<'a> LivePages<'a> {
    /// The `len` `Page`s at `mem_map`, through `view`.
    pub(crate) fn new(view: &'a GuestView<'a>, mem_map: u64, len: u64) -> Self {
        Self { view, mem_map, len }
    }
}

impl Pages for LivePages<'_> {
    fn page(&self, frame: u64) -> (PageFlags, u64, u64) {
        let pfn = frame / PAGE_SIZE;
        let addr = pfn
            .checked_mul(page::SIZE as u64)
            .and_then(|o| self.mem_map.checked_add(o));
        match addr.filter(|_| pfn < self.len) {
            Some(addr) => match self.view.words::<{ page::SIZE / 8 }>("Page", addr) {
                Ok(w) => (
                    PageFlags(w[word(page::FLAGS)]),
                    w[word(page::MAPPING)],
                    w[word(page::INDEX)],
                ),
                Err(_) => (PageFlags(0), 0, 0),
            },
            None => (PageFlags(0), 0, 0),
        }
    }
}

/// The descriptor a `Page`'s raw fields give, if it says allocated page table.
pub(crate) fn desc_of(flags: PageFlags, mapping: u64, index: u64) -> Option<TableDesc> {
    let table = PageFlags(PageFlags::ALLOCATED.0 | PageFlags::PAGETABLE.0);
    flags.contains(table).then(|| TableDesc {
        mm: mapping,
        level: flags.table_level(),
        base: index,
    })
}

/// The span `[start, end)` of user addresses a table of `desc` maps, if the descriptor is one a
/// table can have (level 1..=4, base aligned to the level; a PGD maps all of user space). `end`
/// is 0 for a span reaching the top of the address space.
pub(crate) fn span_of(desc: &TableDesc) -> Option<(u64, u64)> {
    let level = level_of(desc.level)?;
    if level == Level::Pgd {
        return (desc.base == 0).then_some((USER_BASE.0, TASK_SIZE.0));
    }
    let span = level.table_span();
    (desc.base.is_multiple_of(span)).then_some((desc.base, desc.base.wrapping_add(span)))
}

fn level_of(level: u64) -> Option<Level> {
    Some(match level {
        1 => Level::Pte,
        2 => Level::Pmd,
        3 => Level::Pud,
        4 => Level::Pgd,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_gives_a_span_only_when_its_level_and_base_fit() {
        let d = |level, base| TableDesc { mm: 1, level, base };
        assert_eq!(span_of(&d(1, 2 << 20)), Some((2 << 20, 4 << 20)));
        assert_eq!(span_of(&d(1, 4096)), None);
        assert_eq!(span_of(&d(4, 0)), Some((USER_BASE.0, TASK_SIZE.0)));
        assert_eq!(span_of(&d(5, 0)), None);
        assert_eq!(span_of(&d(0, 0)), None);
    }
}
