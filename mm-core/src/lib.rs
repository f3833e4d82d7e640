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
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

pub mod abi;
pub mod interval_tree;
pub mod lockdep;
pub mod sync;
