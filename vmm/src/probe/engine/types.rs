//! What the engine reports: the checks, a violation and the VMA it is about, a run's summary, and
//! what one check cost.

use std::fmt;

use super::super::coverage::Coverage;
use super::super::UnlinkKind;

/// The four checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Check {
    /// No VMA meeting the freed span is reachable through rmap.
    P1,
    /// The parent entry (thorough: every entry of the mm) no longer points to the frame.
    P2,
    /// A TLB flush covering the span happened between the unhook and the free.
    P3,
    /// Not freed twice, not freed while mapped.
    P4,
    /// The free is what the mmu_gather announced, and the announcement matches the table's own
    /// descriptor and where the last sweep found it.
    P5,
    /// The sweep: no table lost, leaked, misdescribed or miscounted.
    P6,
    /// The guest's own `validate_mm`.
    P7,
}

impl Check {
    /// Every check, in order (the index of a check's count in [`Summary::checks`]).
    pub const ALL: [Check; 7] = [
        Check::P1,
        Check::P2,
        Check::P3,
        Check::P4,
        Check::P5,
        Check::P6,
        Check::P7,
    ];

    /// The check's index in [`Check::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// The VMA a violation is about, as read from guest memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmaInfo {
    /// Guest address of the `Vma`.
    pub addr: u64,
    /// Its range.
    pub start: u64,
    /// End of its range.
    pub end: u64,
    /// `vm_flags`.
    pub flags: u64,
    /// Where it was still reachable from.
    pub via: UnlinkKind,
}

/// A broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which check.
    pub check: Check,
    /// Guest address of the `MmStruct`.
    pub mm: u64,
    /// Level of the table being freed (1 = PTE table … 4 = PGD).
    pub level: u8,
    /// Its frame.
    pub frame: u64,
    /// The span it maps.
    pub start: u64,
    /// End of the span.
    pub end: u64,
    /// The offending VMA, when there is one.
    pub vma: Option<VmaInfo>,
    /// Guest RIP at the event.
    pub rip: u64,
    /// What exactly was wrong.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level =
            ["?", "PTE table", "PMD table", "PUD table", "PGD"][usize::from(self.level.min(4))];
        if self.level == 0 {
            write!(f, "{}: {}: mm {:#x}", self.check, self.detail, self.mm)?;
        } else {
            write!(
                f,
                "{}: {}: mm {:#x}, {level} frame {:#x} mapping [{:#x}, {:#x})",
                self.check, self.detail, self.mm, self.frame, self.start, self.end
            )?;
        }
        if let Some(vma) = &self.vma {
            let kind = match vma.via {
                UnlinkKind::Anon => "anon",
                UnlinkKind::File => "file",
            };
            write!(
                f,
                "; VMA {:#x} [{:#x}, {:#x}) flags {:#x} still reachable via its {kind} rmap",
                vma.addr, vma.start, vma.end, vma.flags
            )?;
        }
        write!(f, "; guest RIP {:#x}", self.rip)
    }
}

/// What the probes saw over a run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Events received.
    pub events: u64,
    /// Checks run, per kind (P1..P7, [`Check::ALL`]'s order).
    pub checks: [u64; 7],
    /// Sweeps run (P6 at quiescent points).
    pub sweeps: u64,
    /// What the checks covered (module `coverage`).
    pub coverage: Coverage,
    /// The first [`MAX_VIOLATIONS`] violations; later ones are only counted.
    pub violations: Vec<Violation>,
    /// Violations found per check (P1..P7), the ones not kept included.
    pub violation_counts: [u64; 7],
    /// Guest structures that could not be walked (corrupt, cyclic, out of range).
    pub errors: Vec<String>,
    /// The most walk steps one event took (its budget is `guest_mem::STEP_BUDGET`).
    pub max_steps: u64,
}

/// Violations a run keeps in full (a guest breaking rules in a loop would otherwise grow the VMM
/// without bound); the rest are counted per check in [`Summary::violation_counts`].
pub const MAX_VIOLATIONS: usize = 1000;

impl Summary {
    /// Keeps `v` (up to [`MAX_VIOLATIONS`]) and counts it.
    pub(crate) fn record(&mut self, v: &Violation) {
        self.violation_counts[v.check.index()] += 1;
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(v.clone());
        }
    }

    /// Violations found, kept or not.
    pub fn violation_total(&self) -> u64 {
        self.violation_counts.iter().sum()
    }

    /// Violations found but not kept in [`Summary::violations`].
    pub fn violations_dropped(&self) -> u64 {
        self.violation_total() - self.violations.len() as u64
    }
}

/// How much the engine holds for the run, structure by structure: what a guest's events can grow,
/// each within its documented bound (docs/threat-model.md), reported so tests can check them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Violations kept (at most [`MAX_VIOLATIONS`]).
    pub violations: usize,
    /// Walk error lines kept.
    pub errors: usize,
    /// VMAs in the index.
    pub indexed_vmas: usize,
    /// Mms with a flush log.
    pub flush_mms: usize,
    /// Flushes logged over all mms.
    pub flushes: usize,
    /// Tables unhooked and not yet freed (at most one per frame of RAM).
    pub unhooked: usize,
    /// Tables freed and not unhooked since (at most one per frame of RAM).
    pub freed: usize,
    /// Tables the last sweep found (at most one per frame of RAM).
    pub swept: usize,
}

/// What the last `TableFreeing` cost, for benchmarks and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// anon_vmas whose VMA lists were walked.
    pub anon_vmas: u64,
    /// address_spaces whose i_mmap trees were walked.
    pub mappings: u64,
    /// Candidates the VMA index proposed (each verified in guest memory).
    pub candidates: u64,
    /// VMAs read (candidates, their anon_vma neighbours, and every VMA of a full walk).
    pub vmas: u64,
    /// Walk steps spent in all (structures and tables read).
    pub steps: u64,
}
