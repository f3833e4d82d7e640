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
/// Linux's `EACCES`.
pub const EACCES: i32 = 13;
/// Linux's `EEXIST`.
pub const EEXIST: i32 = 17;
/// Linux's `EOVERFLOW`.
pub const EOVERFLOW: i32 = 75;
/// Linux's `EOPNOTSUPP`.
pub const EOPNOTSUPP: i32 = 95;
/// Linux's `EBUSY`.
pub const EBUSY: i32 = 16;
/// Linux's `EAGAIN`.
pub const EAGAIN: i32 = 11;

/// The errno names and numbers of the errors mm-core's calls return (x86_64 values).
pub const ERRNO_NAMES: [(&str, i32); 14] = [
    ("EPERM", 1),
    ("EBADF", EBADF),
    ("EAGAIN", EAGAIN),
    ("ENOMEM", ENOMEM),
    ("EACCES", EACCES),
    ("EFAULT", EFAULT),
    ("EBUSY", EBUSY),
    ("EEXIST", EEXIST),
    ("ENODEV", 19),
    ("EINVAL", EINVAL),
    ("ETXTBSY", 26),
    ("ENOSYS", ENOSYS),
    ("EOVERFLOW", EOVERFLOW),
    ("EOPNOTSUPP", EOPNOTSUPP),
];

/// What every error of an operation says: its errno, and a message.
pub trait Errno: fmt::Display + Copy {
    /// The errno Linux returns for this failure.
    fn errno(self) -> i32;
}

macro_rules! error_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => ($errno:expr, $msg:expr)),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($(#[$vm])* $v),* }
        impl $name {
            /// The errno Linux returns for this failure.
            pub const fn errno(self) -> i32 { match self { $($name::$v => $errno),* } }
        }
        impl Errno for $name {
            fn errno(self) -> i32 { $name::errno(self) }
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
        /// Zero length, unaligned fixed address or offset, an unknown mapping type, or a
        /// growing file mapping.
        Invalid => (EINVAL, "invalid mmap arguments"),
        /// Not anonymous, and no file.
        BadFd => (EBADF, "no file to map"),
        /// A shared writable mapping of a file opened read-only.
        Access => (EACCES, "file not opened for writing"),
        /// `MAP_FIXED_NOREPLACE` over a mapping.
        Exists => (EEXIST, "MAP_FIXED_NOREPLACE range already mapped"),
        /// The file offset plus the length overflows.
        Overflow => (EOVERFLOW, "file offset overflows"),
        /// `MAP_SHARED_VALIDATE` with a flag the file does not support.
        NotSupported => (EOPNOTSUPP, "flag not supported with MAP_SHARED_VALIDATE"),
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
        /// Unaligned start, or unknown prot bits.
        Invalid => (EINVAL, "invalid mprotect arguments"),
        /// A permission the mapping may not have (`VM_MAY*`: a shared mapping of a read-only file).
        Access => (EACCES, "permission not allowed on the mapping"),
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
        /// `MADV_REMOVE` of a mapping that is not shared and writable.
        Access => (EACCES, "MADV_REMOVE needs a shared writable mapping"),
        /// `MADV_POPULATE_*` hit a page it could not fault in (beyond the end of a file).
        Fault => (EFAULT, "a page could not be faulted in"),
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

error_enum!(
    /// Why `mincore` failed.
    MincoreError {
        /// Unaligned start.
        Invalid => (EINVAL, "unaligned mincore start"),
        /// Part of the range is not mapped, or it leaves user space.
        NotMapped => (ENOMEM, "range not fully mapped"),
        /// The result vector is too short.
        Fault => (EFAULT, "result vector too short"),
    }
);

error_enum!(
    /// Why `mlock`, `mlock2` or `munlock` failed (the VMAs before the failure may be changed).
    MlockError {
        /// Unknown `mlock2` flags, or the range wraps.
        Invalid => (EINVAL, "invalid mlock arguments"),
        /// Part of the range is not mapped, or a page could not be faulted in.
        NotMapped => (ENOMEM, "range not fully mapped"),
        /// No memory to fault the pages in.
        Again => (EAGAIN, "could not lock the pages"),
        /// Splitting a VMA would exceed `max_map_count`, or its allocation failed.
        Split => (ENOMEM, "could not split a VMA"),
    }
);

error_enum!(
    /// Why `msync` failed.
    MsyncError {
        /// Unknown flags, `MS_ASYNC` with `MS_SYNC`, or an unaligned start.
        Invalid => (EINVAL, "invalid msync arguments"),
        /// Part of the range is not mapped.
        NotMapped => (ENOMEM, "range not fully mapped"),
        /// `MS_INVALIDATE` of locked pages.
        Busy => (EBUSY, "MS_INVALIDATE of locked pages"),
    }
);

error_enum!(
    /// Why `fork` could not copy the address space (the parent is left as it was).
    ForkError {
        /// No memory for the child's `mm` or its PGD.
        Mm => (ENOMEM, "no memory for the child's address space"),
        /// No memory for a VMA.
        Vma => (ENOMEM, "no memory for a VMA"),
        /// No memory for the child's page tables.
        Tables => (ENOMEM, "no memory for the child's page tables"),
    }
);
