//! Probe events as the guest reports them (see `mm_core::abi::UcallCmd::Probe*`).

use mm_core::abi::coverage::unpack_level_path;
use mm_core::abi::{FreePath, Ucall, UcallCmd};

/// Which rmap structure a VMA left (the guest's `mm_core::hooks::UnlinkKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnlinkKind {
    /// Its anon_vma's list.
    Anon,
    /// Its file's i_mmap tree.
    File,
}

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

/// One event from the guest's memory manager.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// The guest's `validate_mm` found broken invariants.
    MmInvalid {
        /// Guest address of the `MmStruct`.
        mm: u64,
        /// How many.
        count: u64,
        /// The first, as the guest describes it.
        first: String,
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

impl ProbeEvent {
    /// The free of `span`'s table as a correct guest reports it: the allocator's report, carrying
    /// the mmu_gather's announcement of exactly that span.
    pub fn announced_free(span: TableSpan) -> ProbeEvent {
        ProbeEvent::TableFreed {
            frame: span.frame,
            claim: Some(span),
            path: FreePath::Other,
        }
    }

    /// The event a probe call carries; `None` for other calls or an invalid level or kind.
    pub fn from_call(cmd: UcallCmd, call: &Ucall) -> Option<ProbeEvent> {
        let a = call.args;
        let span = || {
            let level = u8::try_from(a[1]).ok().filter(|l| (1..=4).contains(l))?;
            Some(TableSpan {
                mm: a[0],
                level,
                frame: a[2],
                start: a[3],
                end: a[4],
            })
        };
        Some(match cmd {
            UcallCmd::ProbeRoots => ProbeEvent::Roots {
                roots: a[0],
                mem_map: a[1],
                mem_map_len: a[2],
                kernel_pgd: a[3],
            },
            UcallCmd::ProbeVmaUnlinked => ProbeEvent::VmaUnlinked {
                mm: a[0],
                vma: a[1],
                start: a[2],
                end: a[3],
                kind: match a[4] {
                    1 => UnlinkKind::Anon,
                    2 => UnlinkKind::File,
                    _ => return None,
                },
                path: FreePath::from_raw(a[5]),
            },
            UcallCmd::ProbeTableUnhooked => ProbeEvent::TableUnhooked(span()?),
            UcallCmd::ProbeTableFreeing => {
                let (level, path) = unpack_level_path(a[2]);
                ProbeEvent::TableFreed {
                    frame: a[0],
                    claim: match level {
                        0 => None,
                        level => Some(TableSpan {
                            mm: a[1],
                            level: u8::try_from(level).ok().filter(|l| (1..=4).contains(l))?,
                            frame: a[3],
                            start: a[4],
                            end: a[5],
                        }),
                    },
                    path,
                }
            }
            UcallCmd::ProbeQuiescent => ProbeEvent::Quiescent { mm: a[0] },
            UcallCmd::ProbeMmInvalid => ProbeEvent::MmInvalid {
                mm: a[0],
                count: a[1],
                first: String::from_utf8_lossy(call.text()).into_owned(),
            },
            UcallCmd::ProbeTlbFlushed => ProbeEvent::TlbFlushed {
                mm: a[0],
                start: a[1],
                end: a[2],
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
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PTE table of mm 0x5000 at frame 0x9000 mapping the first 2 MiB of PGD entry 1.
    fn span() -> TableSpan {
        TableSpan {
            mm: 0x5000,
            level: 1,
            frame: 0x9000,
            start: 1 << 39,
            end: (1 << 39) + (2 << 20),
        }
    }

    #[test]
    fn a_table_event_decodes_and_a_bad_level_is_refused() {
        let mut call = Ucall::new(UcallCmd::ProbeTableUnhooked, 0);
        call.args = [0x5000, 1, 0x9000, 1 << 39, (1 << 39) + (2 << 20), 0];
        let expected = span();
        assert_eq!(
            ProbeEvent::from_call(UcallCmd::ProbeTableUnhooked, &call),
            Some(ProbeEvent::TableUnhooked(expected))
        );
        call.args[1] = 9;
        assert_eq!(
            ProbeEvent::from_call(UcallCmd::ProbeTableUnhooked, &call),
            None
        );
        assert_eq!(ProbeEvent::from_call(UcallCmd::Sync, &call), None);
    }

    #[test]
    fn a_table_free_decodes_with_its_claim_or_without_one() {
        let mut call = Ucall::new(UcallCmd::ProbeTableFreeing, 0);
        call.args = [0x9000, 0x5000, 1, 0x9000, 1 << 39, (1 << 39) + (2 << 20)];
        let claim = span();
        assert_eq!(
            ProbeEvent::from_call(UcallCmd::ProbeTableFreeing, &call),
            Some(ProbeEvent::TableFreed {
                frame: 0x9000,
                claim: Some(claim),
                path: FreePath::Other,
            })
        );
        call.args[1..].fill(0);
        assert_eq!(
            ProbeEvent::from_call(UcallCmd::ProbeTableFreeing, &call),
            Some(ProbeEvent::TableFreed {
                frame: 0x9000,
                claim: None,
                path: FreePath::Other,
            })
        );
        call.args[2] = mm_core::abi::coverage::pack_level_path(1, FreePath::Mremap);
        assert!(matches!(
            ProbeEvent::from_call(UcallCmd::ProbeTableFreeing, &call),
            Some(ProbeEvent::TableFreed {
                path: FreePath::Mremap,
                ..
            })
        ));
        call.args[2] = 7;
        assert_eq!(
            ProbeEvent::from_call(UcallCmd::ProbeTableFreeing, &call),
            None,
            "a claim of level 7 is refused"
        );
    }
}
