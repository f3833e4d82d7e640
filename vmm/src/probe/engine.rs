//! [`Probe`]: the probe engine. (Being written: the walkers and checks land next.)

use super::event::{ProbeEvent, UnlinkKind};
use std::fmt;
use vm_memory::GuestMemoryMmap;

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
        write!(
            f,
            "{}: {}: mm {:#x}, {level} frame {:#x} mapping [{:#x}, {:#x})",
            self.check, self.detail, self.mm, self.frame, self.start, self.end
        )?;
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
    /// Checks run, per kind (P1..P4).
    pub checks: [u64; 4],
    /// Every violation.
    pub violations: Vec<Violation>,
    /// Guest structures that could not be walked (corrupt, cyclic, out of range).
    pub errors: Vec<String>,
}

/// The probe engine: state across events, and the checks.
pub struct Probe {
    #[allow(dead_code)]
    mem: GuestMemoryMmap,
    #[allow(dead_code)]
    thorough: bool,
    summary: Summary,
}

impl Probe {
    /// An engine reading guest memory through `mem`; `thorough` widens P1 and P2 (module doc).
    pub fn new(mem: GuestMemoryMmap, thorough: bool) -> Probe {
        Probe {
            mem,
            thorough,
            summary: Summary::default(),
        }
    }

    /// Takes one event from vCPU `cpu`; `rip` reads the guest RIP (only called for a violation).
    /// Returns the violations this event revealed.
    pub fn handle(
        &mut self,
        _cpu: usize,
        _event: &ProbeEvent,
        _rip: &mut dyn FnMut() -> u64,
    ) -> Vec<Violation> {
        self.summary.events += 1;
        Vec::new()
    }

    /// What the probes saw so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }
}
