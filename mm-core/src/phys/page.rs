//! The per-frame metadata array ("struct page", Linux's `mem_map`).
//!
//! One [`Page`] per frame, `#[repr(C)]` and all `u64`, so the host can find a frame's owner from raw
//! guest memory the way rmap does: `mapping` points to an `AnonVma` (low bit
//! [`PAGE_MAPPING_ANON`] set) or to an `AddressSpace`, and `index` is the page offset in it.
//!
//! A page-table frame is described the way Linux's `struct ptdesc` overlays `struct page`: its
//! `mapping` holds the owning `MmStruct` (`pt_mm`), its `index` the first address the table maps,
//! and its flags the table's level ([`PageFlags::table_level`]). So the host can check the free of
//! a table nobody reported, from the frame alone (see [`TableDesc`]).

use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::addr::{Pfn, PhysAddr};
use crate::cell::U64Cell;

/// Set in [`Page::mapping`] when it points to an `AnonVma` rather than an `AddressSpace`.
pub const PAGE_MAPPING_ANON: u64 = 1;

/// Page flag bits (Linux's `PG_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PageFlags(pub u64);

impl PageFlags {
    /// The frame is allocated.
    pub const ALLOCATED: Self = Self(1 << 0);
    /// The frame is a page-table page.
    pub const PAGETABLE: Self = Self(1 << 1);
    /// The frame is an anonymous user page.
    pub const ANON: Self = Self(1 << 2);
    /// The frame is in a file's page cache.
    pub const PAGECACHE: Self = Self(1 << 3);
    /// The shared zero page: mapped read-only wherever never-written private anonymous memory is
    /// read, never counted in rss, never in rmap, never freed (Linux's `ZERO_PAGE`).
    pub const ZERO: Self = Self(1 << 4);

    /// Where a page-table frame keeps its level (1 = PTE table … 4 = PGD).
    pub const TABLE_LEVEL_SHIFT: u32 = 8;
    /// The bits of [`PageFlags::TABLE_LEVEL_SHIFT`].
    pub const TABLE_LEVEL_MASK: u64 = 0xf << Self::TABLE_LEVEL_SHIFT;

    /// Whether all bits of `other` are set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The level recorded for a page-table frame (0 when none is).
    pub const fn table_level(self) -> u64 {
        (self.0 & Self::TABLE_LEVEL_MASK) >> Self::TABLE_LEVEL_SHIFT
    }
}

/// What a page-table frame's metadata says about it (Linux's `ptdesc`): whose table it is, its
/// level and the first address it maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableDesc {
    /// Address of the owning `MmStruct`.
    pub mm: u64,
    /// 1 = PTE table, 2 = PMD, 3 = PUD, 4 = PGD.
    pub level: u64,
    /// First address the table maps (0 for a PGD).
    pub base: u64,
}

/// Metadata of one frame.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Page {
    /// [`PageFlags`] bits.
    pub flags: U64Cell,
    /// References: one per page-table mapping plus one for the page cache.
    pub refcount: U64Cell,
    /// Page-table entries mapping the frame.
    pub mapcount: U64Cell,
    /// `AnonVma` address | [`PAGE_MAPPING_ANON`], or `AddressSpace` address, or 0.
    pub mapping: U64Cell,
    /// Page offset within `mapping` (anon: the linear page index of the VMA it was faulted in).
    pub index: U64Cell,
}

impl Page {
    /// The flags.
    pub fn page_flags(&self) -> PageFlags {
        PageFlags(self.flags.get())
    }
    /// Whether the frame is an allocated page-table page.
    pub fn is_table(&self) -> bool {
        self.page_flags().contains(PageFlags::PAGETABLE)
    }

    /// Records that the frame is a page table of `desc.mm` at `desc.level` mapping from
    /// `desc.base`; the frame must be allocated as [`PageFlags::PAGETABLE`] already.
    pub fn set_table(&self, desc: TableDesc) {
        let flags = self.flags.get() & !PageFlags::TABLE_LEVEL_MASK;
        self.flags.set(
            flags | (desc.level << PageFlags::TABLE_LEVEL_SHIFT) & PageFlags::TABLE_LEVEL_MASK,
        );
        self.mapping.set(desc.mm);
        self.index.set(desc.base);
    }

    /// The table descriptor of a page-table frame; `None` for any other frame.
    pub fn table_desc(&self) -> Option<TableDesc> {
        let flags = self.page_flags();
        flags.contains(PageFlags::PAGETABLE).then(|| TableDesc {
            mm: self.mapping.get(),
            level: flags.table_level(),
            base: self.index.get(),
        })
    }

    /// Resets the metadata to a freshly allocated frame of kind `flags`.
    pub fn reset(&self, flags: PageFlags) {
        self.flags.set(flags.0);
        self.refcount.set(0);
        self.mapcount.set(0);
        self.mapping.set(0);
        self.index.set(0);
    }
}

/// The metadata array for a contiguous range of frames starting at `base`.
#[derive(Clone, Copy)]
pub struct MemMap<'a> {
    pages: NonNull<Page>,
    base: Pfn,
    len: u64,
    _life: PhantomData<&'a [Page]>,
}

impl<'a> MemMap<'a> {
    /// A metadata array backed by `pages`, describing the frames from `base` on.
    pub fn from_slice(pages: &'a [Page], base: Pfn) -> Self {
        Self {
            pages: NonNull::from(pages).cast(),
            base,
            len: pages.len() as u64,
            _life: PhantomData,
        }
    }

    /// A metadata array at `ptr` (the guest places it in its own RAM, where the host can read it).
    ///
    /// # Safety
    /// 1. `ptr` points to `len` initialised `Page`s valid for reads for `'a`;
    /// 2. nothing else creates `&mut` references to them during `'a`.
    pub unsafe fn from_raw(ptr: NonNull<Page>, base: Pfn, len: u64) -> Self {
        Self {
            pages: ptr,
            base,
            len,
            _life: PhantomData,
        }
    }

    /// The metadata of `frame`; `None` if the frame is outside the array.
    pub fn get(&self, frame: PhysAddr) -> Option<&'a Page> {
        let pfn = frame.pfn();
        let i = pfn.0.checked_sub(self.base.0)?;
        if i >= self.len {
            return None;
        }
        // SAFETY: (1) i < len, so the element lies inside the array the constructor vouched for for
        // 'a; (2) only shared references are ever made, and Page mutates through U64Cell.
        Some(unsafe { self.pages.add(i as usize).as_ref() })
    }

    /// The metadata of `frame`; panics if mm-core was handed a frame outside the array, which is a
    /// broken allocator, not a user error.
    pub fn page(&self, frame: PhysAddr) -> &'a Page {
        match self.get(frame) {
            Some(p) => p,
            None => panic!("frame {frame} outside mem_map"),
        }
    }

    /// Address of the first `Page` (published to the host).
    pub fn base_ptr(&self) -> *const Page {
        self.pages.as_ptr()
    }

    /// The frame number of the first entry.
    pub fn base_pfn(&self) -> Pfn {
        self.base
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the array is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn page_metadata_is_five_u64s_with_no_padding() {
        assert_eq!(core::mem::size_of::<Page>(), 40);
        assert_eq!(core::mem::align_of::<Page>(), 8);
    }

    #[test]
    fn a_table_frame_describes_its_mm_level_and_base_and_a_data_page_describes_none() {
        let page = Page::default();
        page.reset(PageFlags(PageFlags::ALLOCATED.0 | PageFlags::PAGETABLE.0));
        let desc = TableDesc {
            mm: 0x5000,
            level: 2,
            base: 1 << 30,
        };
        page.set_table(desc);
        assert_eq!(page.table_desc(), Some(desc));
        assert!(page.page_flags().contains(PageFlags::ALLOCATED));
        page.reset(PageFlags(PageFlags::ALLOCATED.0 | PageFlags::ANON.0));
        assert_eq!(page.table_desc(), None);
    }

    #[test]
    fn mem_map_finds_frames_inside_and_refuses_frames_outside() {
        let pages: Vec<Page> = (0..4).map(|_| Page::default()).collect();
        let map = MemMap::from_slice(&pages, Pfn(10));
        assert!(map.get(Pfn(9).addr()).is_none());
        assert!(map.get(Pfn(14).addr()).is_none());
        map.page(Pfn(13).addr()).refcount.set(3);
        assert_eq!(pages[3].refcount.get(), 3);
    }
}
