//! The kernel: mm-core over real RAM and the real MMU, and the processes it serves.
//!
//! - [`frame`]: the physical frame allocator over the RAM the boot info names.
//! - [`heap`]: the kernel heap behind `alloc`.
//! - [`mm`]: mm-core's kernel context: frames, the identity map, TLB, hooks.
//! - [`tlb`]: TLB shootdown across vCPUs, the `TlbFlush` mm-core runs with.
//! - [`process`]: address spaces running ring-3 programs; their page faults.
//! - [`syscall`]: the one system-call table.
//! - [`programs`]: the ring-3 programs, among them the script interpreter workloads run on.
//!
//! Nothing here imports a scenario: a scenario that runs walkers beside a process registers
//! them with [`process::set_walkers`].
pub mod frame;
pub mod heap;
pub mod mm;
pub mod process;
pub mod programs;
pub mod syscall;
pub mod tlb;
