//! mm-core: a Linux-style memory manager over real x86_64 page tables.
//!
//! The same `no_std + alloc` crate runs inside the guest kernel on the real MMU and on the host under
//! plain `cargo test`, on simulated RAM.
//!
//! Modules:
//! - [`abi`]: the `#[repr(C)]` structures the guest publishes and the VMM reads (boot info, the
//!   guest→host call channel), with their magic and layout version.
//! - [`interval_tree`]: the augmented interval tree behind each file's `i_mmap`.
//! - [`lockdep`]: a lockdep-style checker that reports an inverted lock order naming both locks.
//! - [`sync`]: the locks (`mmap_sem`, anon_vma lock, `i_mmap_lock`, `page_table_lock`).
//! - [`addr`]: typed addresses (`PhysAddr`, `VirtAddr`, `Pfn`), page-table geometry, the user range.
//! - [`cell`]: `U64Cell`, the `u64` field with interior mutability every host-read struct is built of.
//! - [`phys`]: the frame allocator and phys→virt traits, the per-frame `Page` array, `SimRam`.
//! - [`paging`]: 4-level page tables, the `MmuGather`, `free_pgd_range` with floor/ceiling.
//! - [`mm`]: VMAs and address spaces: mmap/munmap/mprotect/mremap/madvise/brk/exit, faults,
//!   anon_vma, files, rmap, truncate, `validate_mm`.
//! - [`kernel`]: `Kernel`, the machine-wide context (allocator, phys access, TLB, hooks, variant).
//! - [`hooks`]: the probe events (VMA unlinked, table unhooked/freed, TLB flush, frame alloc/free).
//! - [`inject`]: fail-the-Nth-allocation fault injection.
//! - [`variant`]: the ordering variants (`correct` and the deliberately wrong ones).
//! - [`check`]: `OrderCheck`, the probes' P1/P3 ordering rules checked in-process from the hooks.
//!
//! # Lock order
//!
//! ```text
//! mmap_sem
//!   i_mmap_lock
//!     anon_vma lock
//!       page_table_lock / PTE lock
//! ```
//!
//! # Invariants
//!
//! 1. An mm's VMAs form one sorted, non-overlapping, doubly linked list from `MmStruct::mmap`; the
//!    find_vma index mirrors it exactly.
//! 2. `map_count`, `total_vm`, `locked_vm`, `nr_ptes`, `pgtables_bytes` and the rss counters equal
//!    what they count.
//! 3. Every VMA on an mm's list is on its anon_vma's list and in its file's i_mmap; a VMA leaves both
//!    before any page table under it is freed (the seed + "unlink vma before pagetables").
//! 4. A page-table page is unhooked, then the TLB is flushed for its span, then it is freed; data
//!    pages are freed only after the flush too.
//! 5. PGD entries outside `[USER_BASE, TASK_SIZE)` belong to the kernel: mm-core never frees them.
//! 6. Every frame reachable as a table from a PGD is an allocated frame marked `PAGETABLE`, reached
//!    exactly once; every frame marked `PAGETABLE` is an mm's PGD, reachable from it, or unhooked
//!    and waiting in an mmu_gather (nothing lost, nothing leaked).
//! 7. A kernel object (VMA, anon_vma, file, address_space, mm) is freed only after it is unlinked
//!    from every structure that records its address.
//! 8. A page-table frame's `Page` names its mm, level and the first address it maps
//!    ([`phys::TableDesc`], Linux's `ptdesc`), and they match where the table hangs.
//!
//! # Walkthrough
//!
//! An address space on simulated RAM: map, fault, unmap, tear down, and nothing is left.
//!
//! ```
//! use mm_core::mm::{Access, MapFlags, Mm, Prot};
//! use mm_core::paging::CountingTlb;
//! use mm_core::phys::SimRam;
//! use mm_core::{addr::USER_BASE, Kernel};
//!
//! let ram = SimRam::new(64);
//! let tlb = CountingTlb::default();
//! let k = Kernel::new(&ram, &ram, ram.mem_map(), &tlb); // guest: its allocator, DirectMap, NativeTlb
//! let mut mm = Mm::new(&k, None).expect("a PGD"); // guest: Some(kernel PGD) to share the kernel half
//! let flags = MapFlags::PRIVATE.union(MapFlags::ANONYMOUS);
//! let a = mm.mmap(&k, USER_BASE, 8192, Prot::RW, flags, None, 0).expect("mmap");
//! mm.handle_mm_fault(&k, a, Access::Write).expect("a zeroed page");
//! assert!(mm.validate_mm(&k).is_empty());
//! mm.munmap(&k, a, 8192).expect("munmap");
//! mm.destroy(&k); // exit_mmap, then the PGD
//! assert_eq!(ram.frames_in_use(), 0);
//! ```
#![no_std]
// `unsafe` lives in the low layer only — raw memory (`paging::table`, `phys`, `kernel`'s frame
// copies), object lifetimes (`mm::kobj`, the intrusive `interval_tree` and `mm::i_mmap`), locks
// (`sync`, `lockdep`) — plus the few points that free an object after unlinking it, each marked
// where it happens. Everything else is safe code.
#![deny(unsafe_code)]

extern crate alloc;

pub mod abi;
pub mod addr;
pub mod cell;
pub mod hooks;
pub mod inject;
#[allow(unsafe_code)]
pub mod interval_tree;
#[allow(unsafe_code)]
pub mod kernel;
#[allow(unsafe_code)]
pub mod lockdep;
pub mod mm;
pub mod paging;
#[allow(unsafe_code)]
pub mod phys;
pub mod rng;
#[allow(unsafe_code)]
pub mod sync;
pub mod uapi;
pub mod variant;

pub use addr::{Pfn, PhysAddr, VirtAddr};
pub use kernel::Kernel;
pub use variant::Variant;
pub mod check;
