//! The guest→host call channel, in the style of KVM selftests' `ucall`.
//!
//! The guest fills a [`Ucall`] in its own memory and writes the structure's guest-physical address
//! (below 4 GiB) as a 32-bit `out` to [`UCALL_PORT`]. The vCPU exits; the VMM reads the structure
//! through its view of guest memory, acts on it and resumes the vCPU (or stops the VM). One call is in
//! flight per vCPU at a time, so a per-CPU buffer is enough.

/// I/O port the guest writes a [`Ucall`]'s address to.
pub const UCALL_PORT: u16 = 0x0510;

/// I/O port of the bare exit: the host does nothing but count and time it (the anchor the probe
/// benchmark measures event costs against).
pub const PING_PORT: u16 = 0x0511;

/// Bytes of free text a call carries (messages, file names).
pub const UCALL_TEXT_MAX: usize = 432;

/// What a [`Ucall`] asks of the host. Values from `0x100` up are the probe events.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UcallCmd {
    /// The vCPU reached a stage: `args[0]` is the stage number ([`Ucall::STAGE_ONLINE`], …).
    Sync = 1,
    /// The run is over: `args[0]` is 0 for success, any other value a failure code; the text
    /// may say why.
    Done = 2,
    /// The guest gave up: the text is the message followed by the file name; `args[0]` is the line,
    /// `args[1]` the message length and `args[2]` the file-name length.
    Abort = 3,
    /// A CPU exception reached the guest's IDT: `args` are vector, error code, CR2 and RIP.
    Exception = 4,
    /// A benchmark phase starts or ends: `args` are the `Workload`, `MARK_START` or `MARK_END`, and
    /// (at the end) the units done; the host times from one mark to the next (see `abi::bench`).
    BenchMark = 5,
    /// The memory manager is up: `args` are the address of its `KernelRoots`, the address and
    /// length (in entries) of its `Page` array, the kernel's page-table root, and
    /// `mm::layout::LAYOUT_MAGIC` and `LAYOUT_VERSION`, which the VMM checks before reading any
    /// of those structures.
    ProbeRoots = 0x100,
    /// A VMA left rmap's reach: `args` are mm, VMA, start, end, the `UnlinkKind` and the
    /// `FreePath` under way.
    ProbeVmaUnlinked = 0x101,
    /// A page-table page was unhooked from its parent: `args` are mm, level (1 = PTE table …
    /// 4 = PGD), frame, start and end of the span it maps.
    ProbeTableUnhooked = 0x102,
    /// A page-table frame is going back to the allocator. The guest's frame allocator sends it for
    /// every frame whose `Page` says page table, whatever path freed it, with the `Page` still
    /// intact: `args[0]` is the frame; `args[1..6]` what the mmu_gather announced for the free it
    /// did last (mm, level, frame, start, end; level 0: none since its previous free), the level
    /// packed with the `FreePath` under way (see `abi::Call`, which defines the encoding). The vCPU waits while
    /// the host checks the ordering rule against the table's own descriptor.
    ProbeTableFreeing = 0x103,
    /// A TLB flush of `[start, end)` in an mm completed: `args` are mm, start and end.
    ProbeTlbFlushed = 0x104,
    /// A VMA was linked with this range, or its range changed: `args` are mm, VMA, start, end.
    ProbeVmaRange = 0x105,
    /// A VMA is about to be freed: `args` are mm and VMA.
    ProbeVmaFreed = 0x106,
    /// No mm operation is under way on this vCPU (a system call, a fault or a process teardown is
    /// done): the host may sweep every mm's page tables now. `args[0]` is the current mm (0: none).
    /// Sent every `BootInfo::sweep_every`-th such point.
    ProbeQuiescent = 0x107,
    /// `validate_mm` found broken invariants (`--thorough` after every mm system call, and at
    /// process exit when asked): `args` are the mm and how many; the text describes the first.
    ProbeMmInvalid = 0x108,
    /// This vCPU joins a race: from here until its `RaceLeave` every call it makes is a point where
    /// the host's scheduler may hold it and run another racer. `args[0]` is how many vCPUs race
    /// (the scheduler starts choosing once all have joined).
    RaceEnter = 0x120,
    /// This vCPU leaves the race.
    RaceLeave = 0x121,
    /// A racer reached a scheduling point: `args[0]` is the [`SchedPointKind`] value (a
    /// `hooks::WalkerPoint` value for points inside mm-core's walkers).
    SchedPoint = 0x122,
    /// A racer found a spinlock busy and will retry when resumed; the text is the lock class.
    LockContended = 0x123,
    /// A walker met a freed page table's poison: `args` are the table, the entry index, the
    /// poisoned value, the virtual address walked, the walker's RIP and the source line; the text
    /// is the source file.
    PoisonHit = 0x124,
}

/// Scheduling points a racer reports besides mm-core's walker points (`hooks::WalkerPoint`,
/// values 1..=3).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedPointKind {
    /// A walker loop starts its next step.
    WalkerStep = 0x10,
    /// An interrupt handler (the TLB-shootdown IPI) is done.
    AfterInterrupt = 0x11,
}

impl UcallCmd {
    /// The command for a raw value, if it names one.
    pub fn from_raw(raw: u64) -> Option<Self> {
        Some(match raw {
            1 => UcallCmd::Sync,
            2 => UcallCmd::Done,
            3 => UcallCmd::Abort,
            4 => UcallCmd::Exception,
            5 => UcallCmd::BenchMark,
            0x100 => UcallCmd::ProbeRoots,
            0x101 => UcallCmd::ProbeVmaUnlinked,
            0x102 => UcallCmd::ProbeTableUnhooked,
            0x103 => UcallCmd::ProbeTableFreeing,
            0x104 => UcallCmd::ProbeTlbFlushed,
            0x105 => UcallCmd::ProbeVmaRange,
            0x106 => UcallCmd::ProbeVmaFreed,
            0x107 => UcallCmd::ProbeQuiescent,
            0x108 => UcallCmd::ProbeMmInvalid,
            0x120 => UcallCmd::RaceEnter,
            0x121 => UcallCmd::RaceLeave,
            0x122 => UcallCmd::SchedPoint,
            0x123 => UcallCmd::LockContended,
            0x124 => UcallCmd::PoisonHit,
            _ => return None,
        })
    }
}

/// One call from the guest to the host.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Ucall {
    /// A [`UcallCmd`] as its raw value.
    pub cmd: u64,
    /// Index of the calling vCPU.
    pub cpu: u64,
    /// Arguments; their meaning depends on `cmd`.
    pub args: [u64; 6],
    /// How many bytes of `text` are used.
    pub text_len: u64,
    /// Free text, UTF-8.
    pub text: [u8; UCALL_TEXT_MAX],
}

impl Ucall {
    /// `Sync` stage: the vCPU entered the kernel and checked in.
    pub const STAGE_ONLINE: u64 = 1;
    /// `Sync` stage: the kernel is initialised (IDT, frame allocator, heap) and about to run the
    /// scenario; the VMM's boot time ends here.
    pub const STAGE_READY: u64 = 2;
    /// `Sync` stage: this vCPU entered the scenario.
    pub const STAGE_SCENARIO: u64 = 3;

    /// An empty call of kind `cmd` from `cpu`.
    pub const fn new(cmd: UcallCmd, cpu: u64) -> Self {
        Ucall {
            cmd: cmd as u64,
            cpu,
            args: [0; 6],
            text_len: 0,
            text: [0; UCALL_TEXT_MAX],
        }
    }

    /// Appends as much of `s` as fits to the text; returns how many bytes were taken.
    pub fn push_text(&mut self, s: &str) -> usize {
        let used = (self.text_len as usize).min(UCALL_TEXT_MAX);
        let take = s.len().min(UCALL_TEXT_MAX - used);
        self.text[used..used + take].copy_from_slice(&s.as_bytes()[..take]);
        self.text_len = (used + take) as u64;
        take
    }

    /// The used text, with invalid UTF-8 or an out-of-range length made harmless.
    pub fn text(&self) -> &[u8] {
        &self.text[..(self.text_len as usize).min(UCALL_TEXT_MAX)]
    }
}

const _: () = assert!(core::mem::size_of::<Ucall>() == 9 * 8 + UCALL_TEXT_MAX);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_truncated_to_the_buffer() {
        let mut call = Ucall::new(UcallCmd::Abort, 0);
        let long = "y".repeat(UCALL_TEXT_MAX + 10);
        assert_eq!(call.push_text("ab"), 2);
        assert_eq!(call.push_text(&long), UCALL_TEXT_MAX - 2);
        assert_eq!(call.text().len(), UCALL_TEXT_MAX);
    }

    #[test]
    fn a_hostile_length_does_not_overrun() {
        let mut call = Ucall::new(UcallCmd::Done, 1);
        call.text_len = u64::MAX;
        assert_eq!(call.text().len(), UCALL_TEXT_MAX);
    }

    #[test]
    fn unknown_commands_are_refused() {
        assert_eq!(UcallCmd::from_raw(2), Some(UcallCmd::Done));
        assert_eq!(UcallCmd::from_raw(0), None);
        assert_eq!(UcallCmd::from_raw(0x103), Some(UcallCmd::ProbeTableFreeing));
        assert_eq!(UcallCmd::from_raw(0x1ff), None);
    }
}
