//! Host probes: at every page-table free the vCPU stops and the VMM walks the guest's own
//! structures through vm-memory to check the ordering rule of "mm: unlink_file_vma, remove_vma".
//!
//! - [`event`]: the probe events the guest reports.
//! - [`engine`]: [`Probe`], which keeps the state the checks need across events and runs them.
//!
//! The checks, at each `TableFreeing` (mm, level, frame, span):
//! - P1: no VMA of that mm whose range meets the span is reachable from any anon_vma or any
//!   i_mmap tree (default: from the kernel's roots; `--thorough`: also from every frame's `Page`
//!   metadata, as rmap itself would start);
//! - P2: the parent entry no longer points to the frame (`--thorough`: no entry of that mm does);
//! - P3: a TLB flush covering the span happened after the unhook and before the free;
//! - P4: the frame is not freed twice nor while still mapped; the VMM poisons it once checked.
//!
//! Guest memory is hostile input: every walk is bounded, detects cycles and validates links, and a
//! corrupt structure becomes a reported error, never a panic or a hang.
pub mod engine;
pub mod event;

pub use engine::{Check, Probe, Summary, Violation, VmaInfo};
pub use event::{ProbeEvent, TableSpan, UnlinkKind};
