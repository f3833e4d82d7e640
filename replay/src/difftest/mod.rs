//! Differential testing of mm-core against Linux (issue 12): seeded random sequences of memory
//! system calls run natively on the host kernel (by `vmm difftest`, in a child process) and
//! through mm-core ([`model`]); after every call the result, the region's maps and the residency
//! of its pages must be the same.
//!
//! Both sides run in one **region** of [`REGION_PAGES`] pages at [`REGION_START`], across a 2 MiB
//! boundary; everything else in user space is filled with `PROT_NONE` placeholders (natively
//! after the runner has set itself up, in mm-core before the first call), so a search for free
//! space (`mmap` without `MAP_FIXED`, `mremap` with `MREMAP_MAYMOVE`) can only land in the region,
//! top-down from its end, on both sides. The placeholders carry `VM_DONTCOPY` (`MADV_DONTFORK`)
//! on both sides, so a region VMA merges with one exactly when Linux's would; lines are clipped
//! to the region before they are compared.
//!
//! Modules: [`op`] (the calls and their text form), [`obs`] (what is compared after a call),
//! [`gen`] (the seeded generator), [`model`] (mm-core's side).

pub mod batch;
pub mod gen;
pub mod model;
pub mod obs;
pub mod op;

pub use obs::{Line, Obs};
pub use op::{fork_exits, Fd, Op};

/// First address of the region (16 TiB + 1.5 MiB: the region's middle is a 2 MiB boundary).
pub const REGION_START: u64 = (16 << 40) + (3 << 19);
/// The region's size in pages (1 MiB).
pub const REGION_PAGES: u64 = 256;
/// One past the region's last address.
pub const REGION_END: u64 = REGION_START + REGION_PAGES * 4096;
/// The sizes (pages) of the files a sequence maps; offsets run past their ends too.
pub const FILE_PAGES: [u64; 3] = [16, 48, 96];
