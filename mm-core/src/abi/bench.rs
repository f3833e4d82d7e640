//! The mm workloads `vmm bench` times on every side — Linux's system calls, mm-core's host build
//! and mm-core in the guest — named once here, so the guest's timing marks and the host's rows agree.
//!
//! The guest marks each timed phase with a [`UcallCmd::BenchMark`](super::UcallCmd::BenchMark)
//! call: `args[0]` is the [`Workload`], `args[1]` is [`MARK_START`] or [`MARK_END`], and the end mark's
//! `args[2]` is how many units (operations, pages or VMAs) the phase did. The host times from one
//! mark to the next.

/// `args[1]` of the mark that opens a timed phase.
pub const MARK_START: u64 = 0;
/// `args[1]` of the mark that closes it.
pub const MARK_END: u64 = 1;

/// The six workloads of the mm-core goal table (issue 3), in display order.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    /// mmap 4 KiB anonymous, touch it, munmap it; per operation.
    MapTouchUnmap4K = 1,
    /// Touch every 4 KiB page of a fresh anonymous mapping; per page.
    TouchAnon = 2,
    /// munmap of that populated mapping; total.
    MunmapPopulated = 3,
    /// mmap FIXED + touch of one-page VMAs that cannot merge; per VMA.
    CreateVmas = 4,
    /// One munmap over many populated one-page VMAs; total.
    MunmapVmas = 5,
    /// ftruncate to 0 of a populated shared file mapping; total.
    TruncateShared = 6,
}

impl Workload {
    /// All six, in display order.
    pub const ALL: [Workload; 6] = [
        Workload::MapTouchUnmap4K,
        Workload::TouchAnon,
        Workload::MunmapPopulated,
        Workload::CreateVmas,
        Workload::MunmapVmas,
        Workload::TruncateShared,
    ];

    /// The workload a raw mark value names.
    pub fn from_raw(raw: u64) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| *w as u64 == raw)
    }

    /// A short stable name (JSON keys).
    pub fn name(self) -> &'static str {
        match self {
            Workload::MapTouchUnmap4K => "map_touch_unmap_4k",
            Workload::TouchAnon => "touch_anon",
            Workload::MunmapPopulated => "munmap_populated",
            Workload::CreateVmas => "create_vmas",
            Workload::MunmapVmas => "munmap_vmas",
            Workload::TruncateShared => "truncate_shared",
        }
    }

    /// True when the figure is per unit (operation, page, VMA); false when it is the whole
    /// phase's time.
    pub fn per_unit(self) -> bool {
        matches!(
            self,
            Workload::MapTouchUnmap4K | Workload::TouchAnon | Workload::CreateVmas
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_round_trips_through_its_raw_value() {
        for w in Workload::ALL {
            assert_eq!(Workload::from_raw(w as u64), Some(w));
        }
        assert_eq!(Workload::from_raw(0), None);
        assert_eq!(Workload::from_raw(7), None);
    }
}
