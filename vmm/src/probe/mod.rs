//! Host probes: at every page-table free the vCPU stops and the VMM walks the guest's own
//! structures through vm-memory to check the ordering rule of "mm: unlink_file_vma, remove_vma".
//!
//! The events come from the guest as `mm_core::abi::ProbeEvent`s, defined there once for both sides.
//!
//! - [`engine`]: [`Probe`], which keeps the state the checks need across events and runs them
//!   (its `free` module: P1–P5 at a table free; `sweeping`: P6 at quiescent points).
//! - `guest_mem`: checked, budgeted reads of guest memory (the only way the walkers touch it).
//! - `layout`: field offsets of the guest structures, from mm-core's own types.
//! - `index`: the VMAs of each mm, from the guest's `VmaRange`/`VmaFreed` events, so the default
//!   mode checks only the VMAs meeting a freed span.
//! - `rmap`: P1's walks of anon_vma lists and i_mmap trees, from the roots or from `Page`s, and
//!   the check of one index candidate.
//! - `sweep`, `mem_map`: P6's walk of every mm's tables, over the guest's `Page` array.
//! - `pgtable`: P2's and P4's page-table walks and the poison of freed tables.
//!
//! The checks, at each `TableFreeing` (mm, level, frame, span):
//! - P1: no VMA of that mm whose range meets the span is reachable from any anon_vma or any
//!   i_mmap tree (default: the VMAs the index proposes, each checked in guest memory, or, for a
//!   guest that reports no VMA ranges, every structure on the kernel's roots; `--thorough`: the
//!   roots and every frame's `Page` metadata, as rmap itself would start, plus the index);
//! - P2: the parent entry no longer points to the frame (`--thorough`: no entry of that mm does);
//! - P3: a TLB flush covering the span happened after the unhook and before the free;
//! - P4: the frame is not freed twice nor while still mapped; the VMM poisons it once checked.
//!
//! Guest memory is hostile input: every walk is bounded, detects cycles and validates links, and a
//! corrupt structure becomes a reported error, never a panic or a hang.
pub mod coverage;
pub mod engine;
mod guest_mem;
mod index;
mod layout;
mod mem_map;
mod pgtable;
mod rmap;
mod sweep;
#[cfg(test)]
mod tests;

pub use engine::{Check, Cost, Held, Probe, Summary, Violation, VmaInfo};
pub use mm_core::abi::{ProbeEvent, TableSpan};
pub use mm_core::hooks::UnlinkKind;
