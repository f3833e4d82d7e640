//! Linux's numbers for the memory system calls' arguments, as the raw words a program passes (the
//! guest's ring-3 scripts build their calls from these). Each is derived from mm-core's own flag
//! type, so there is one definition of every value.

use crate::mm::{Advice, MapFlags, MremapFlags, Prot};

/// `PROT_NONE`.
pub const PROT_NONE: u64 = Prot::NONE.0;
/// `PROT_READ`.
pub const PROT_READ: u64 = Prot::READ.0;
/// `PROT_WRITE`.
pub const PROT_WRITE: u64 = Prot::WRITE.0;
/// `PROT_EXEC`.
pub const PROT_EXEC: u64 = Prot::EXEC.0;
/// `PROT_READ | PROT_WRITE`, what most mappings take.
pub const PROT_RW: u64 = Prot::RW.0;

/// `MAP_SHARED`.
pub const MAP_SHARED: u64 = MapFlags::SHARED.0;
/// `MAP_PRIVATE`.
pub const MAP_PRIVATE: u64 = MapFlags::PRIVATE.0;
/// `MAP_FIXED`.
pub const MAP_FIXED: u64 = MapFlags::FIXED.0;
/// `MAP_ANONYMOUS`.
pub const MAP_ANONYMOUS: u64 = MapFlags::ANONYMOUS.0;

/// `MREMAP_MAYMOVE`.
pub const MREMAP_MAYMOVE: u64 = MremapFlags::MAYMOVE.0;
/// `MREMAP_FIXED`.
pub const MREMAP_FIXED: u64 = MremapFlags::FIXED.0;

/// `MADV_DONTNEED`.
pub const MADV_DONTNEED: u64 = Advice::DONTNEED.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_values_are_linuxs() {
        // From include/uapi/asm-generic/mman-common.h and linux/mman.h.
        assert_eq!((PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC), (0, 1, 2, 4));
        assert_eq!(
            (MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS),
            (0x1, 0x2, 0x10, 0x20)
        );
        assert_eq!((MREMAP_MAYMOVE, MREMAP_FIXED, MADV_DONTNEED), (1, 2, 4));
    }
}
