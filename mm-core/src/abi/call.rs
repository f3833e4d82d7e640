//! What each guest→host call means, defined once: the guest builds a [`Call`] and [`encode`]s it
//! into a [`Ucall`]'s command and arguments, the host [`decode`]s the same words back. Neither side
//! packs or unpacks arguments by position anywhere else. Free text (messages, file and lock-class
//! names, `validate_mm`'s finding) travels in the `Ucall`'s text, beside the arguments.
//!
//! [`encode`]: Call::encode
//! [`decode`]: Call::decode

use super::coverage::{pack_level_path, unpack_level_path, FreePath};
use super::ucall::{Ucall, UcallCmd};
use crate::hooks::{TableEvent, UnlinkKind};

/// A page-table page and the span of user addresses it maps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableSpan {
    /// Guest address of the `MmStruct`.
    pub mm: u64,
    /// 1 = PTE table, 2 = PMD, 3 = PUD, 4 = PGD.
    pub level: u8,
    /// Guest-physical address of the table's frame.
    pub frame: u64,
    /// First address it maps.
    pub start: u64,
    /// End (exclusive) of what it maps.
    pub end: u64,
}

impl From<&TableEvent> for TableSpan {
    fn from(ev: &TableEvent) -> Self {
        TableSpan {
            mm: ev.mm,
            level: ev.level as u8,
            frame: ev.frame.0,
            start: ev.start.0,
            end: ev.end.0,
        }
    }
}

/// One event from the guest's memory manager (the `Probe*` commands).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeEvent {
    /// Where the guest's structures start; sent once, before any other event.
    Roots {
        /// Guest address of `mm_core::kernel::KernelRoots`.
        roots: u64,
        /// Guest address of the `Page` array (entry `i` describes frame `i`).
        mem_map: u64,
        /// Entries in the `Page` array.
        mem_map_len: u64,
        /// The kernel's page-table root.
        kernel_pgd: u64,
        /// `mm::layout::LAYOUT_MAGIC` of the guest's mm-core.
        layout_magic: u64,
        /// `mm::layout::LAYOUT_VERSION` of the guest's mm-core.
        layout_version: u64,
    },
    /// A VMA was linked into its mm with this range, or its range changed.
    VmaRange {
        /// Guest address of the `MmStruct`.
        mm: u64,
        /// Guest address of the `Vma`.
        vma: u64,
        /// Its range now.
        start: u64,
        /// End of its range now.
        end: u64,
    },
    /// A VMA is about to be freed.
    VmaFreed {
        /// Guest address of the `MmStruct`.
        mm: u64,
        /// Guest address of the `Vma`.
        vma: u64,
    },
    /// A VMA left rmap's reach.
    VmaUnlinked {
        /// Guest address of the `MmStruct`.
        mm: u64,
        /// Guest address of the `Vma`.
        vma: u64,
        /// Its range.
        start: u64,
        /// End of its range.
        end: u64,
        /// What it left.
        kind: UnlinkKind,
        /// The operation under way.
        path: FreePath,
    },
    /// A table's parent entry was cleared.
    TableUnhooked(TableSpan),
    /// A page-table frame is going back to the allocator (the guest's allocator reports every
    /// frame its `Page` calls a page table): the rule is checked here, on the span the table's
    /// own descriptor gives.
    TableFreed {
        /// The frame.
        frame: u64,
        /// What the mmu_gather announced for its last free, if anything since the previous one.
        claim: Option<TableSpan>,
        /// The operation under way.
        path: FreePath,
    },
    /// No mm operation is under way on the reporting vCPU: the page tables may be swept.
    Quiescent {
        /// The current mm (0: none).
        mm: u64,
    },
    /// The guest's `validate_mm` found broken invariants; the call's text describes the first.
    MmInvalid {
        /// Guest address of the `MmStruct`.
        mm: u64,
        /// How many.
        count: u64,
    },
    /// A TLB flush of `[start, end)` in an mm completed.
    TlbFlushed {
        /// Guest address of the `MmStruct`.
        mm: u64,
        /// Start.
        start: u64,
        /// End (exclusive).
        end: u64,
    },
}

/// What a racing vCPU tells the host's scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaceCall {
    /// It joins a race of `racers` vCPUs.
    Enter {
        /// How many vCPUs race.
        racers: u64,
    },
    /// It leaves the race.
    Leave,
    /// It reached a scheduling point of this kind (a `hooks::WalkerPoint` or
    /// [`SchedPointKind`](super::SchedPointKind) value).
    Point {
        /// The kind.
        kind: u64,
    },
    /// It found a spinlock busy; the call's text is the lock class.
    Contended,
}

/// A walker met the poison of a freed page table; the call's text says which walker (mm-core's
/// source file, or the guest's name for a hardware or cached walk).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoisonReport {
    /// The freed table (guest-physical; 0 when the hardware walk does not say).
    pub table: u64,
    /// The entry read.
    pub index: u64,
    /// What it held.
    pub value: u64,
    /// The virtual address being walked.
    pub va: u64,
    /// The walker's RIP (0: not known).
    pub rip: u64,
    /// Source line of the read in the text's file (0: not a source location).
    pub line: u64,
}

/// One call from the guest to the host, by meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// The vCPU reached a stage ([`Ucall::STAGE_ONLINE`], …).
    Sync {
        /// The stage.
        stage: u64,
    },
    /// The run is over: 0 for success, any other value a failure code; the text may say why.
    Done {
        /// The guest's verdict.
        verdict: u64,
    },
    /// The guest gave up: the text is the message followed by the file name.
    Abort {
        /// Source line of the abort.
        line: u64,
        /// Bytes of the text that are the message.
        message_len: u64,
        /// Bytes after the message that are the file name.
        file_len: u64,
    },
    /// A CPU exception reached the guest's IDT.
    Exception {
        /// Exception vector.
        vector: u64,
        /// Error code (0 for vectors without one).
        error_code: u64,
        /// CR2 at the exception (the faulting address for #PF).
        cr2: u64,
        /// Where it happened.
        rip: u64,
    },
    /// A benchmark phase starts or ends (`abi::bench`).
    BenchMark {
        /// The `Workload`, as its raw value.
        workload: u64,
        /// `MARK_START` or `MARK_END`.
        phase: u64,
        /// At the end: the units (operations, pages, VMAs) the phase did.
        units: u64,
    },
    /// A probe event.
    Probe(ProbeEvent),
    /// A racer's call to the scheduler.
    Race(RaceCall),
    /// A walker read a freed page table.
    PoisonHit(PoisonReport),
}

/// A span's words in argument order: mm, level, frame, start, end.
fn span_words(s: &TableSpan) -> [u64; 5] {
    [s.mm, u64::from(s.level), s.frame, s.start, s.end]
}

/// The span of `words` (mm, level, frame, start, end); `None` for a level outside 1..=4.
fn span_of(words: &[u64]) -> Option<TableSpan> {
    let level = u8::try_from(words[1])
        .ok()
        .filter(|l| (1..=4).contains(l))?;
    Some(TableSpan {
        mm: words[0],
        level,
        frame: words[2],
        start: words[3],
        end: words[4],
    })
}

impl ProbeEvent {
    fn encode(&self) -> (UcallCmd, [u64; 6]) {
        match *self {
            ProbeEvent::Roots {
                roots,
                mem_map,
                mem_map_len,
                kernel_pgd,
                layout_magic,
                layout_version,
            } => (
                UcallCmd::ProbeRoots,
                [
                    roots,
                    mem_map,
                    mem_map_len,
                    kernel_pgd,
                    layout_magic,
                    layout_version,
                ],
            ),
            ProbeEvent::VmaRange {
                mm,
                vma,
                start,
                end,
            } => (UcallCmd::ProbeVmaRange, [mm, vma, start, end, 0, 0]),
            ProbeEvent::VmaFreed { mm, vma } => (UcallCmd::ProbeVmaFreed, [mm, vma, 0, 0, 0, 0]),
            ProbeEvent::VmaUnlinked {
                mm,
                vma,
                start,
                end,
                kind,
                path,
            } => (
                UcallCmd::ProbeVmaUnlinked,
                [mm, vma, start, end, kind as u64, path as u64],
            ),
            ProbeEvent::TableUnhooked(span) => {
                let [mm, level, frame, start, end] = span_words(&span);
                (
                    UcallCmd::ProbeTableUnhooked,
                    [mm, level, frame, start, end, 0],
                )
            }
            ProbeEvent::TableFreed { frame, claim, path } => {
                let [mm, level, claimed, start, end] = claim.as_ref().map_or([0; 5], span_words);
                let level = pack_level_path(level, path);
                (
                    UcallCmd::ProbeTableFreeing,
                    [frame, mm, level, claimed, start, end],
                )
            }
            ProbeEvent::Quiescent { mm } => (UcallCmd::ProbeQuiescent, [mm, 0, 0, 0, 0, 0]),
            ProbeEvent::MmInvalid { mm, count } => {
                (UcallCmd::ProbeMmInvalid, [mm, count, 0, 0, 0, 0])
            }
            ProbeEvent::TlbFlushed { mm, start, end } => {
                (UcallCmd::ProbeTlbFlushed, [mm, start, end, 0, 0, 0])
            }
        }
    }

    fn decode(cmd: UcallCmd, a: [u64; 6]) -> Option<ProbeEvent> {
        Some(match cmd {
            UcallCmd::ProbeRoots => ProbeEvent::Roots {
                roots: a[0],
                mem_map: a[1],
                mem_map_len: a[2],
                kernel_pgd: a[3],
                layout_magic: a[4],
                layout_version: a[5],
            },
            UcallCmd::ProbeVmaRange => ProbeEvent::VmaRange {
                mm: a[0],
                vma: a[1],
                start: a[2],
                end: a[3],
            },
            UcallCmd::ProbeVmaFreed => ProbeEvent::VmaFreed {
                mm: a[0],
                vma: a[1],
            },
            UcallCmd::ProbeVmaUnlinked => ProbeEvent::VmaUnlinked {
                mm: a[0],
                vma: a[1],
                start: a[2],
                end: a[3],
                kind: UnlinkKind::from_raw(a[4])?,
                path: FreePath::from_raw(a[5]),
            },
            UcallCmd::ProbeTableUnhooked => ProbeEvent::TableUnhooked(span_of(&a[..5])?),
            UcallCmd::ProbeTableFreeing => {
                let (level, path) = unpack_level_path(a[2]);
                let claim = match level {
                    0 => None,
                    level => Some(span_of(&[a[1], level, a[3], a[4], a[5]])?),
                };
                ProbeEvent::TableFreed {
                    frame: a[0],
                    claim,
                    path,
                }
            }
            UcallCmd::ProbeQuiescent => ProbeEvent::Quiescent { mm: a[0] },
            UcallCmd::ProbeMmInvalid => ProbeEvent::MmInvalid {
                mm: a[0],
                count: a[1],
            },
            UcallCmd::ProbeTlbFlushed => ProbeEvent::TlbFlushed {
                mm: a[0],
                start: a[1],
                end: a[2],
            },
            _ => return None,
        })
    }
}

impl Call {
    /// The command and arguments that carry this call.
    pub fn encode(&self) -> (UcallCmd, [u64; 6]) {
        match *self {
            Call::Sync { stage } => (UcallCmd::Sync, [stage, 0, 0, 0, 0, 0]),
            Call::Done { verdict } => (UcallCmd::Done, [verdict, 0, 0, 0, 0, 0]),
            Call::Abort {
                line,
                message_len,
                file_len,
            } => (UcallCmd::Abort, [line, message_len, file_len, 0, 0, 0]),
            Call::Exception {
                vector,
                error_code,
                cr2,
                rip,
            } => (UcallCmd::Exception, [vector, error_code, cr2, rip, 0, 0]),
            Call::BenchMark {
                workload,
                phase,
                units,
            } => (UcallCmd::BenchMark, [workload, phase, units, 0, 0, 0]),
            Call::Probe(event) => event.encode(),
            Call::Race(RaceCall::Enter { racers }) => {
                (UcallCmd::RaceEnter, [racers, 0, 0, 0, 0, 0])
            }
            Call::Race(RaceCall::Leave) => (UcallCmd::RaceLeave, [0; 6]),
            Call::Race(RaceCall::Point { kind }) => (UcallCmd::SchedPoint, [kind, 0, 0, 0, 0, 0]),
            Call::Race(RaceCall::Contended) => (UcallCmd::LockContended, [0; 6]),
            Call::PoisonHit(p) => (
                UcallCmd::PoisonHit,
                [p.table, p.index, p.value, p.va, p.rip, p.line],
            ),
        }
    }

    /// The call that `cmd` and `args` carry; `None` for an argument out of range (a table level
    /// outside 1..=4, an unknown unlink kind).
    pub fn decode(cmd: UcallCmd, a: [u64; 6]) -> Option<Call> {
        Some(match cmd {
            UcallCmd::Sync => Call::Sync { stage: a[0] },
            UcallCmd::Done => Call::Done { verdict: a[0] },
            UcallCmd::Abort => Call::Abort {
                line: a[0],
                message_len: a[1],
                file_len: a[2],
            },
            UcallCmd::Exception => Call::Exception {
                vector: a[0],
                error_code: a[1],
                cr2: a[2],
                rip: a[3],
            },
            UcallCmd::BenchMark => Call::BenchMark {
                workload: a[0],
                phase: a[1],
                units: a[2],
            },
            UcallCmd::RaceEnter => Call::Race(RaceCall::Enter { racers: a[0] }),
            UcallCmd::RaceLeave => Call::Race(RaceCall::Leave),
            UcallCmd::SchedPoint => Call::Race(RaceCall::Point { kind: a[0] }),
            UcallCmd::LockContended => Call::Race(RaceCall::Contended),
            UcallCmd::PoisonHit => Call::PoisonHit(PoisonReport {
                table: a[0],
                index: a[1],
                value: a[2],
                va: a[3],
                rip: a[4],
                line: a[5],
            }),
            probe => Call::Probe(ProbeEvent::decode(probe, a)?),
        })
    }

    /// This call in `ucall`'s command and arguments (its text is left as it is).
    pub fn write_to(&self, ucall: &mut Ucall) {
        let (cmd, args) = self.encode();
        ucall.cmd = cmd as u64;
        ucall.args = args;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PTE table of mm 0x5000 at frame 0x9000 mapping the first 2 MiB of PGD entry 1.
    const SPAN: TableSpan = TableSpan {
        mm: 0x5000,
        level: 1,
        frame: 0x9000,
        start: 1 << 39,
        end: (1 << 39) + (2 << 20),
    };

    /// One call of every command, with distinct values in every field.
    fn every_call() -> [Call; 20] {
        [
            Call::Sync { stage: 2 },
            Call::Done { verdict: 7 },
            Call::Abort {
                line: 42,
                message_len: 4,
                file_len: 8,
            },
            Call::Exception {
                vector: 14,
                error_code: 6,
                cr2: 0xdead_0000,
                rip: 0x20_1234,
            },
            Call::BenchMark {
                workload: 4,
                phase: 1,
                units: 256,
            },
            Call::Probe(ProbeEvent::Roots {
                roots: 0x1000,
                mem_map: 0x2000,
                mem_map_len: 16,
                kernel_pgd: 0x8000,
                layout_magic: 0x6d6d,
                layout_version: 3,
            }),
            Call::Probe(ProbeEvent::VmaRange {
                mm: 0x5000,
                vma: 0x6000,
                start: 0x40_0000,
                end: 0x40_2000,
            }),
            Call::Probe(ProbeEvent::VmaFreed {
                mm: 0x5000,
                vma: 0x6000,
            }),
            Call::Probe(ProbeEvent::VmaUnlinked {
                mm: 0x5000,
                vma: 0x6000,
                start: 0x40_0000,
                end: 0x40_2000,
                kind: UnlinkKind::File,
                path: FreePath::Mremap,
            }),
            Call::Probe(ProbeEvent::TableUnhooked(SPAN)),
            Call::Probe(ProbeEvent::TableFreed {
                frame: 0x9000,
                claim: Some(SPAN),
                path: FreePath::Exit,
            }),
            Call::Probe(ProbeEvent::TableFreed {
                frame: 0xa000,
                claim: None,
                path: FreePath::Brk,
            }),
            Call::Probe(ProbeEvent::Quiescent { mm: 0x5000 }),
            Call::Probe(ProbeEvent::MmInvalid {
                mm: 0x5000,
                count: 3,
            }),
            Call::Probe(ProbeEvent::TlbFlushed {
                mm: 0x5000,
                start: 0x40_0000,
                end: 0x40_1000,
            }),
            Call::Race(RaceCall::Enter { racers: 2 }),
            Call::Race(RaceCall::Leave),
            Call::Race(RaceCall::Point { kind: 0x10 }),
            Call::Race(RaceCall::Contended),
            Call::PoisonHit(PoisonReport {
                table: 0x9000,
                index: 5,
                value: 0x8000_0000_0000_0001,
                va: 0x40_5000,
                rip: 0x20_0000,
                line: 77,
            }),
        ]
    }

    #[test]
    fn every_call_round_trips_through_its_command_and_arguments() {
        let calls = every_call();
        for call in calls {
            let (cmd, args) = call.encode();
            assert_eq!(Call::decode(cmd, args), Some(call), "{cmd:?} {args:x?}");
            assert_eq!(UcallCmd::from_raw(cmd as u64), Some(cmd));
        }
        // Every command has its call: no command is left to positional code elsewhere.
        let mut cmds: [u64; 20] = calls.map(|c| c.encode().0 as u64);
        cmds.sort_unstable();
        let mut distinct = cmds.to_vec();
        distinct.dedup();
        assert_eq!(distinct.len(), 19, "ProbeTableFreeing appears twice");
    }

    #[test]
    fn a_call_written_to_a_ucall_decodes_from_it() {
        for call in every_call() {
            let mut ucall = Ucall::new(UcallCmd::Sync, 1);
            call.write_to(&mut ucall);
            let cmd = UcallCmd::from_raw(ucall.cmd).unwrap();
            assert_eq!(Call::decode(cmd, ucall.args), Some(call));
        }
    }

    #[test]
    fn table_levels_outside_one_to_four_and_unknown_kinds_are_refused() {
        let (cmd, mut args) = Call::Probe(ProbeEvent::TableUnhooked(SPAN)).encode();
        args[1] = 9;
        assert_eq!(Call::decode(cmd, args), None);
        args[1] = 0;
        assert_eq!(
            Call::decode(cmd, args),
            None,
            "an unhooked table has a level"
        );

        let freed = ProbeEvent::TableFreed {
            frame: 0x9000,
            claim: Some(SPAN),
            path: FreePath::Munmap,
        };
        let (cmd, mut args) = Call::Probe(freed).encode();
        args[2] = pack_level_path(7, FreePath::Munmap);
        assert_eq!(Call::decode(cmd, args), None, "a claim of level 7");

        let unlinked = ProbeEvent::VmaUnlinked {
            mm: 1,
            vma: 2,
            start: 0,
            end: 0x1000,
            kind: UnlinkKind::Anon,
            path: FreePath::Munmap,
        };
        let (cmd, mut args) = Call::Probe(unlinked).encode();
        args[4] = 3;
        assert_eq!(Call::decode(cmd, args), None, "unlink kind 3");
    }
}
