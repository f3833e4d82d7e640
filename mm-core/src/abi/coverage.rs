//! What the coverage matrix of a run is indexed by: the mm operation (the "path") under which a
//! page-table page was freed or a VMA left rmap. The guest tags each event with its path; the
//! host derives every other coordinate (level, the table shared with a neighbour, the VMA's kind)
//! from guest memory itself.

/// The operation under way when a page table was freed (or a VMA unlinked).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FreePath {
    /// Anything else (a kernel-side workload, no process).
    Other = 0,
    /// `munmap`.
    Munmap = 1,
    /// `mmap(MAP_FIXED)` over an existing mapping (its old pages and tables go).
    MmapFixed = 2,
    /// `mremap`: a move leaves the old range, a shrink its tail.
    Mremap = 3,
    /// `brk` lowering the break.
    Brk = 4,
    /// `exit_mmap` and the PGD's free at process exit.
    Exit = 5,
    /// `ftruncate` (Linux frees no page tables there; neither does mm-core).
    Truncate = 6,
    /// `madvise` (Linux frees no page tables there; neither does mm-core).
    Madvise = 7,
}

impl FreePath {
    /// Every path, in table order.
    pub const ALL: [FreePath; 8] = [
        FreePath::Other,
        FreePath::Munmap,
        FreePath::MmapFixed,
        FreePath::Mremap,
        FreePath::Brk,
        FreePath::Exit,
        FreePath::Truncate,
        FreePath::Madvise,
    ];

    /// The name used in tables and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            FreePath::Other => "other",
            FreePath::Munmap => "munmap",
            FreePath::MmapFixed => "mmap-fixed",
            FreePath::Mremap => "mremap",
            FreePath::Brk => "brk",
            FreePath::Exit => "exit",
            FreePath::Truncate => "truncate",
            FreePath::Madvise => "madvise",
        }
    }

    /// The path a raw tag names (`Other` for an unknown one).
    pub fn from_raw(raw: u64) -> FreePath {
        Self::ALL
            .into_iter()
            .find(|p| *p as u64 == raw)
            .unwrap_or(FreePath::Other)
    }
}

/// How `ProbeTableFreeing` packs the announcement's level and the path into one argument.
pub(crate) const fn pack_level_path(level: u64, path: FreePath) -> u64 {
    (level & 0xff) | (path as u64) << 8
}

/// The (level, path) [`pack_level_path`] packed.
pub(crate) fn unpack_level_path(word: u64) -> (u64, FreePath) {
    (word & 0xff, FreePath::from_raw(word >> 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_and_a_path_round_trip_through_one_word() {
        for path in FreePath::ALL {
            for level in 0..=4 {
                assert_eq!(
                    unpack_level_path(pack_level_path(level, path)),
                    (level, path)
                );
            }
        }
        assert_eq!(FreePath::from_raw(99), FreePath::Other);
    }
}
