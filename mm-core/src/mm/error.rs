//! One error enum per operation; each variant names the step that failed and maps to Linux's errno.

use core::fmt;

/// Linux's `EINVAL`.
pub const EINVAL: i32 = 22;
/// Linux's `ENOMEM`.
pub const ENOMEM: i32 = 12;
/// Linux's `EFAULT`.
pub const EFAULT: i32 = 14;
/// Linux's `EBADF`.
pub const EBADF: i32 = 9;
/// Linux's `ENOSYS`.
pub const ENOSYS: i32 = 38;

macro_rules! error_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => ($errno:expr, $msg:expr)),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($(#[$vm])* $v),* }
        impl $name {
            /// The errno Linux returns for this failure.
            pub const fn errno(self) -> i32 { match self { $($name::$v => $errno),* } }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($name::$v => $msg),* })
            }
        }
    };
}

error_enum!(
    /// Why creating an address space failed.
    MmNewError {
        /// No frame for the PGD.
        PgdAlloc => (ENOMEM, "no memory for the page-table root"),
    }
);

error_enum!(
    /// Why `mmap` failed.
    MmapError {
        /// Zero length, unaligned or non-user fixed address, bad prot/flags, or a missing file.
        Invalid => (EINVAL, "invalid mmap arguments"),
        /// The length overflows the user address space.
        TooLarge => (ENOMEM, "mapping larger than user space"),
        /// No gap large enough.
        NoSpace => (ENOMEM, "no free range of that size"),
        /// The mm already has `max_map_count` VMAs.
        MapCount => (ENOMEM, "max_map_count reached"),
        /// A VMA allocation failed.
        VmaAlloc => (ENOMEM, "no memory for a VMA"),
        /// Unmapping what `MAP_FIXED` replaces failed.
        Unmap => (ENOMEM, "could not unmap the range MAP_FIXED replaces"),
        /// No memory for a shared anonymous mapping's file.
        ShmemAlloc => (ENOMEM, "no memory for the shared anonymous memory's file"),
    }
);

error_enum!(
    /// Why `munmap` failed.
    MunmapError {
        /// Unaligned start, zero length, or outside user space.
        Invalid => (EINVAL, "invalid munmap range"),
        /// Splitting a VMA would exceed `max_map_count`.
        MapCount => (ENOMEM, "max_map_count reached while splitting"),
        /// A VMA allocation for a split failed.
        VmaAlloc => (ENOMEM, "no memory for a split VMA"),
    }
);

error_enum!(
    /// Why `mprotect` failed.
    MprotectError {
        /// Unaligned start, unknown prot bits, or outside user space.
        Invalid => (EINVAL, "invalid mprotect arguments"),
        /// Part of the range is not mapped.
        NotMapped => (ENOMEM, "range not fully mapped"),
        /// Splitting a VMA would exceed `max_map_count`.
        MapCount => (ENOMEM, "max_map_count reached while splitting"),
        /// A VMA allocation for a split failed.
        VmaAlloc => (ENOMEM, "no memory for a split VMA"),
    }
);

error_enum!(
    /// Why `madvise` failed (the mapped parts before the failure may have the advice).
    MadviseError {
        /// Unaligned start, unknown advice, outside user space, or advice the VMA refuses
        /// (`MADV_WIPEONFORK` on a file or shared mapping, `MADV_DONTNEED` on locked pages, ...).
        Invalid => (EINVAL, "invalid madvise arguments"),
        /// Part of the range is not mapped (the mapped parts got the advice).
        NotMapped => (ENOMEM, "range not fully mapped"),
        /// Splitting a VMA would exceed `max_map_count`.
        MapCount => (ENOMEM, "max_map_count reached while splitting"),
        /// A VMA allocation for a split failed.
        VmaAlloc => (ENOMEM, "no memory for a split VMA"),
    }
);

error_enum!(
    /// Why `mremap` failed.
    MremapError {
        /// Unaligned or out-of-range addresses, zero lengths, unknown flags, `FIXED` without
        /// `MAYMOVE`, overlapping ranges, or `MREMAP_DONTUNMAP` (not supported).
        Invalid => (EINVAL, "invalid mremap arguments"),
        /// The old range is not inside one mapping.
        NotMapped => (EFAULT, "old range not inside one mapping"),
        /// No room to grow in place without `MAYMOVE`, no free range to move to, or no memory.
        NoMemory => (ENOMEM, "cannot grow or move the mapping"),
    }
);

error_enum!(
    /// Why `brk` failed (the break stays where it was).
    BrkError {
        /// Below the start of the heap or outside user space.
        Invalid => (EINVAL, "break outside the heap"),
        /// The new heap would overlap another mapping.
        Overlap => (ENOMEM, "heap would overlap a mapping"),
        /// Growing or shrinking the heap VMA failed.
        NoMemory => (ENOMEM, "no memory to move the break"),
    }
);

error_enum!(
    /// Why a page fault could not be resolved (the user gets a signal, or the kernel an OOM).
    FaultError {
        /// No VMA covers the address: SIGSEGV (`SEGV_MAPERR`).
        MapErr => (14, "no mapping at the address"),
        /// The VMA forbids the access: SIGSEGV (`SEGV_ACCERR`).
        AccErr => (14, "access not permitted by the mapping"),
        /// A file page beyond the end of the file: SIGBUS.
        Sigbus => (7, "file page beyond end of file"),
        /// A page, page table or anon_vma allocation failed.
        Oom => (ENOMEM, "out of memory"),
    }
);

error_enum!(
    /// Why creating a file failed.
    FileError {
        /// No memory for the file or its address_space.
        NoMemory => (ENOMEM, "no memory for the file"),
    }
);
