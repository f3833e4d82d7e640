//! The boot page tables: an identity map of RAM in 2 MiB pages, nothing else.
//!
//! Addresses beyond RAM stay unmapped, so a wild pointer in the guest kernel faults instead of
//! reading nothing. The guest builds its own tables for user address spaces later.

use super::layout::{LARGE_PAGE_SIZE, MAX_RAM, PAGE_SIZE, PDPT_START, PD_START, PML4_START};
use mm_core::paging::PteFlags;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

/// Flags of the boot tables' upper entries: a present, writable table.
const TABLE: PteFlags = PteFlags::PRESENT.union(PteFlags::WRITABLE);
/// Flags of their PD entries: a present, writable 2 MiB page.
const LARGE_PAGE: PteFlags = TABLE.union(PteFlags::HUGE);

/// Bytes one page-directory page maps.
const PD_SPAN: u64 = 512 * LARGE_PAGE_SIZE;

/// Writes the identity map of `[0, ram_size)` and returns the CR3 value.
///
/// `ram_size` is a multiple of 2 MiB and at most [`MAX_RAM`] (the CLI checks both).
pub fn write_boot_page_tables(
    mem: &GuestMemoryMmap,
    ram_size: u64,
) -> Result<u64, GuestMemoryError> {
    debug_assert!(ram_size.is_multiple_of(LARGE_PAGE_SIZE) && ram_size <= MAX_RAM);
    mem.write_obj(PDPT_START.0 | TABLE.bits(), PML4_START)?;
    for pd in 0..ram_size.div_ceil(PD_SPAN) {
        let pd_addr = PD_START.0 + pd * PAGE_SIZE;
        mem.write_obj(pd_addr | TABLE.bits(), GuestAddress(PDPT_START.0 + pd * 8))?;
    }
    for page in 0..ram_size / LARGE_PAGE_SIZE {
        let entry = (page * LARGE_PAGE_SIZE) | LARGE_PAGE.bits();
        mem.write_obj(entry, GuestAddress(PD_START.0 + page * 8))?;
    }
    Ok(PML4_START.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(mem: &GuestMemoryMmap, va: u64) -> Option<u64> {
        let present = |e: u64| e & PteFlags::PRESENT.bits() != 0;
        let pml4e: u64 = mem
            .read_obj(GuestAddress(PML4_START.0 + ((va >> 39) & 511) * 8))
            .ok()?;
        if !present(pml4e) {
            return None;
        }
        let pdpte: u64 = mem
            .read_obj(GuestAddress((pml4e & !0xfff) + ((va >> 30) & 511) * 8))
            .ok()?;
        if !present(pdpte) {
            return None;
        }
        let pde: u64 = mem
            .read_obj(GuestAddress((pdpte & !0xfff) + ((va >> 21) & 511) * 8))
            .ok()?;
        (present(pde) && pde & PteFlags::HUGE.bits() != 0)
            .then(|| (pde & !0x1f_ffff) + (va & 0x1f_ffff))
    }

    #[test]
    fn every_byte_of_ram_maps_to_itself_and_nothing_beyond() {
        let ram = 1536u64 << 20;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), ram as usize)]).unwrap();
        write_boot_page_tables(&mem, ram).unwrap();
        for va in [0, 0x1234_5678 % ram, (1 << 30) + 0x1000, ram - 1] {
            assert_eq!(walk(&mem, va), Some(va), "{va:#x}");
        }
        assert_eq!(walk(&mem, ram), None);
        assert_eq!(walk(&mem, 4 << 30), None);
    }
}
