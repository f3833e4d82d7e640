//! [`Probe`]: the probe engine. It keeps what the checks need across events (the roots, the VMA
//! index, which tables were unhooked or freed, recent TLB flushes, where the last sweep found each
//! table) and runs P1–P5 at every `TableFreed`, P6 at the guest's quiescent points.
//!
//! Protocol, per frame: `TableUnhooked` → `TlbFlushed` covering its span → `TableFreed`, which the
//! guest's frame allocator sends for every frame its `Page` calls a page table, carrying what the
//! mmu_gather announced. The span checked is the one the table's own descriptor gives (its
//! `Page`: mm, level, base), never the guest's word; P5 holds the announcement against it. The
//! rules the engine applies where the guest's events leave room:
//! - P3 without a seen unhook (a PGD, or an unhook the probes missed): the unhook is taken to be
//!   "unknown", as early as the previous free of that frame (or the start of the run), and a
//!   covering flush of that mm must have arrived since then.
//! - A PGD is freed by its mm's teardown, not through a gather: it needs no announcement, P2 and
//!   P3 do not apply (nothing points to it; no CPU may have it loaded, which `leave_lazy` ensures),
//!   and P6 checks that no other table of that mm is left.
//! - P4's double free is a second `TableFreed` with no `TableUnhooked` in between *and* the
//!   poison of the first free still intact (the guest zeroes every table it allocates, so a frame
//!   handed out again in between is a new table, not the same one freed twice).
//! - Poison: after the checks, entries 1..512 of the frame get [`pgtable::poison`]`(level)` =
//!   `0xDEAD_7AB1_E000_0000 | level`; entry 0 is the guest allocator's free-list link. A frame the
//!   guest's `Page` says is a data page (mapped or anonymous/page cache) is not poisoned, so a
//!   bogus free cannot corrupt user data. Any walk that meets the poison reports a use after free.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use mm_core::addr::{TASK_SIZE, USER_BASE};
use mm_core::phys::PageFlags;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};

use mm_core::phys::TableDesc;

use super::coverage::{self, VmaKind};
use super::guest_mem::{GuestView, WalkError, WalkErrors};
use super::index::VmaIndex;
use super::layout::{self, page, word};
use super::mem_map::{self, LivePages, MemMapCopy};
use super::pgtable::{self, ParentEntry, StaleTable};
use super::rmap::{RmapWalk, VmaFilter};
use super::sweep;
use super::{ProbeEvent, TableSpan, UnlinkKind};
use mm_core::abi::FreePath;

mod free;
mod leaves;
mod sweeping;
mod types;

pub use types::{Check, Cost, Held, Summary, Violation, VmaInfo, MAX_VIOLATIONS};

/// Distinct walk errors kept in the summary; later ones are counted in one last line.
const MAX_ERRORS: usize = 256;

/// Every this-many-th sweep (and every one with `--thorough`) reads the whole mem_map (~1 ms for
/// 256 MiB of RAM here); the others are light (see [`Probe::sweep`]).
const FULL_SWEEP_EVERY: u64 = 64;

/// TLB flushes remembered per mm for P3 (the newest ones; see [`Probe::flushed_since`]).
const FLUSH_LOG: usize = 4096;

/// Mms whose flushes are remembered (~100 KiB each at most): past it, the mm that flushed least
/// recently is forgotten. A sane guest has a few live mms; a mm's log goes with its PGD.
const FLUSH_MMS: usize = 64;

/// Where the guest's structures start (the `Roots` event).
#[derive(Clone, Copy, Debug)]
struct Roots {
    roots: u64,
    mem_map: u64,
    mem_map_len: u64,
    kernel_pgd: u64,
}

/// A table whose parent entry was cleared and which is not freed yet.
#[derive(Clone, Copy, Debug)]
struct Unhooked {
    seq: u64,
}

/// A table freed and not unhooked again since.
#[derive(Clone, Copy, Debug)]
struct Freed {
    seq: u64,
    level: u8,
    poisoned: bool,
}

/// A completed TLB flush.
#[derive(Clone, Copy, Debug)]
struct Flush {
    seq: u64,
    start: u64,
    end: u64,
}

impl Flush {
    fn covers(&self, start: u64, end: u64) -> bool {
        (self.start <= start && end <= self.end)
            || (self.start <= USER_BASE.0 && TASK_SIZE.0 <= self.end)
    }
}

/// The probe engine: state across events, and the checks.
pub struct Probe {
    mem: GuestMemoryMmap,
    thorough: bool,
    summary: Summary,
    roots: Option<Roots>,
    unhooked: HashMap<u64, Unhooked>,
    freed: HashMap<u64, Freed>,
    flushes: HashMap<u64, VecDeque<Flush>>,
    errors_seen: HashSet<String>,
    errors_dropped: u64,
    last_cost: Cost,
    index: VmaIndex,
    /// Where the last sweep found each table (frame → descriptor), until the table is freed.
    swept: HashMap<u64, TableDesc>,
    /// The mem_map copy's buffer, kept between sweeps.
    mem_map_buf: Vec<u64>,
    /// Walkers may change rss concurrently (free-running races): the sweep leaves rss alone.
    rss_racy: bool,
    /// P6 findings already reported, by kind and frame: a lost table stays lost, and is told once.
    reported: HashSet<(&'static str, u64)>,
    /// The run's stop flag: a walk in progress gives up once it is set (the watchdog).
    stop: Arc<AtomicBool>,
    /// The present leaves the last complete sweep found (P3 for leaves, module `leaves`).
    leaves: Option<leaves::LeafSnapshot>,
}

/// The findings of one `TableFreeing`, before they become violations.
#[derive(Default)]
struct Findings {
    p1: Vec<VmaInfo>,
    p2: Vec<String>,
    p4: Vec<String>,
    p3: Option<String>,
    p5: Vec<String>,
    p6: Vec<sweep::Finding>,
    errors: WalkErrors,
}

/// The kernel's page-table root, once the roots are known (0 before).
fn kernel_pgd_of(roots: &Option<Roots>) -> u64 {
    roots.map_or(0, |r| r.kernel_pgd)
}

/// What a table of `level` (1..=4) spans.
fn level_span(level: u8) -> u64 {
    1u64 << (12 + 9 * u32::from(level.clamp(1, 4)))
}

impl Probe {
    /// An engine reading guest memory through `mem`; `thorough` widens P1 and P2 (module doc).
    pub fn new(mem: GuestMemoryMmap, thorough: bool) -> Probe {
        Probe {
            mem,
            thorough,
            summary: Summary::default(),
            roots: None,
            unhooked: HashMap::new(),
            freed: HashMap::new(),
            flushes: HashMap::new(),
            errors_seen: HashSet::new(),
            errors_dropped: 0,
            last_cost: Cost::default(),
            index: VmaIndex::default(),
            swept: HashMap::new(),
            mem_map_buf: Vec::new(),
            rss_racy: false,
            reported: HashSet::new(),
            stop: Arc::default(),
            leaves: None,
        }
    }

    /// Makes walks give up soon after `stop` is set, so a run stopped by its watchdog is not held
    /// up by a check of whatever the guest laid out.
    pub fn set_stop(&mut self, stop: Arc<AtomicBool>) {
        self.stop = stop;
    }

    /// Tells the sweep that other vCPUs may change rss while it reads (`--free-run` races).
    pub fn set_rss_racy(&mut self, racy: bool) {
        self.rss_racy = racy;
    }

    /// Takes one event from vCPU `cpu` with the text of its call (`MmInvalid`'s finding); `rip`
    /// reads the guest RIP (only called for a violation). Returns the violations this event
    /// revealed.
    pub fn handle(
        &mut self,
        _cpu: usize,
        event: &ProbeEvent,
        text: &str,
        rip: &mut dyn FnMut() -> u64,
    ) -> Vec<Violation> {
        self.summary.events += 1;
        let seq = self.summary.events;
        match *event {
            ProbeEvent::Roots {
                roots,
                mem_map,
                mem_map_len,
                kernel_pgd,
                ..
            } => {
                self.roots = Some(Roots {
                    roots,
                    mem_map,
                    mem_map_len,
                    kernel_pgd,
                });
                Vec::new()
            }
            ProbeEvent::VmaUnlinked { vma, path, .. } => {
                self.count_unlink(vma, path);
                Vec::new()
            }
            ProbeEvent::VmaRange {
                mm,
                vma,
                start,
                end,
            } => {
                self.vma_range(mm, vma, start, end);
                Vec::new()
            }
            ProbeEvent::VmaFreed { vma, .. } => {
                self.vma_freed(vma);
                Vec::new()
            }
            ProbeEvent::TableUnhooked(span) => {
                if self.ram_frame("TableUnhooked", span.frame) {
                    self.freed.remove(&span.frame);
                    self.unhooked.insert(span.frame, Unhooked { seq });
                }
                Vec::new()
            }
            ProbeEvent::TlbFlushed { mm, start, end } => {
                self.flushed(seq, mm, start, end);
                Vec::new()
            }
            ProbeEvent::TableFreed { frame, claim, path } => {
                if !self.ram_frame("TableFreed", frame) {
                    return Vec::new();
                }
                // One view of guest memory for the whole check: every read of it is cold here.
                let (mem, stop) = (self.mem.clone(), self.stop.clone());
                let mut view = GuestView::new(&mem).stopping_on(&stop);
                let (span, findings) = self.table_freed(&mut view, seq, frame, claim);
                self.count_free(&mut view, &span, path);
                self.summary.max_steps = self.summary.max_steps.max(view.steps_spent());
                self.violations(&span, findings, rip)
            }
            ProbeEvent::Quiescent { .. } => self.sweep(rip),
            ProbeEvent::MmInvalid { mm, count } => {
                self.summary.checks[Check::P7.index()] += 1;
                let violation = Violation {
                    check: Check::P7,
                    mm,
                    level: 0,
                    frame: 0,
                    start: 0,
                    end: 0,
                    vma: None,
                    rip: rip(),
                    detail: format!(
                        "the guest's validate_mm found {count} broken invariant(s), first: {text}"
                    ),
                };
                self.summary.record(&violation);
                vec![violation]
            }
        }
    }

    /// What the probes saw so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Indexes `vma` of `mm` as covering `[start, end)` (the guest's `VmaRange` event: a VMA linked
    /// or its range changed).
    pub fn vma_range(&mut self, mm: u64, vma: u64, start: u64, end: u64) {
        let was = self.index.overflowed;
        self.index.range(mm, vma, start, end);
        if self.index.overflowed && !was {
            log::warn!(
                "probes: the guest reported more than {} live VMAs; P1 walks the rmap \
                 registries from now on instead of the VMA index",
                super::index::MAX_INDEXED_VMAS
            );
        }
    }

    /// Drops `vma` from the index (the guest's `VmaFreed` event).
    pub fn vma_freed(&mut self, vma: u64) {
        self.index.freed(vma);
    }

    /// How much the engine holds now, per structure.
    pub fn held(&self) -> Held {
        Held {
            violations: self.summary.violations.len(),
            errors: self.summary.errors.len(),
            indexed_vmas: self.index.len(),
            flush_mms: self.flushes.len(),
            flushes: self.flushes.values().map(VecDeque::len).sum(),
            unhooked: self.unhooked.len(),
            freed: self.freed.len(),
            swept: self.swept.len(),
        }
    }

    /// What the last `TableFreeing` cost.
    pub fn last_cost(&self) -> Cost {
        self.last_cost
    }

    /// Counts a checked free in its coverage cell: the level its descriptor gives, the lowest
    /// table above it still holding entries.
    fn count_free(&mut self, view: &mut GuestView<'_>, span: &TableSpan, path: FreePath) {
        // A walk that may take no more steps has said so once already.
        if !(1..=4).contains(&span.level) || view.spent() {
            return;
        }
        let kept = if span.level == 4 {
            Ok(0)
        } else {
            view.word("mm_struct", span.mm.wrapping_add(layout::mm::PGD as u64))
                .and_then(|pgd| coverage::kept_level(view, pgd, span.level, span.start))
        };
        match kept {
            Ok(kept) => {
                let cell = (path, span.level, kept);
                *self.summary.coverage.frees.entry(cell).or_default() += 1;
            }
            Err(e) => self.error(e.to_string()),
        }
    }

    /// Counts a VMA leaving rmap under `path` by its kind, read from the `Vma`.
    fn count_unlink(&mut self, vma: u64, path: FreePath) {
        let view = GuestView::new(&self.mem);
        let flags = view.word("vma", vma.wrapping_add(layout::vma::VM_FLAGS as u64));
        let file = view.word("vma", vma.wrapping_add(layout::vma::VM_FILE as u64));
        match flags.and_then(|flags| Ok((flags, file?))) {
            Ok((flags, file)) => {
                let cell = (path, VmaKind::of(flags, file));
                *self.summary.coverage.unlinks.entry(cell).or_default() += 1;
            }
            Err(e) => self.error(e.to_string()),
        }
    }

    /// Turns findings into violations (calling `rip` once if there are any) and records errors.
    fn violations(
        &mut self,
        span: &TableSpan,
        f: Findings,
        rip: &mut dyn FnMut() -> u64,
    ) -> Vec<Violation> {
        for line in f.errors.into_lines() {
            self.error(line);
        }
        let mut out = Vec::new();
        let base = |check, vma, detail| Violation {
            check,
            mm: span.mm,
            level: span.level,
            frame: span.frame,
            start: span.start,
            end: span.end,
            vma,
            rip: 0,
            detail,
        };
        for v in f.p1 {
            let kind = match v.via {
                UnlinkKind::Anon => "anon_vma list",
                UnlinkKind::File => "i_mmap tree",
            };
            let detail = format!("a VMA meeting the freed span is still on its {kind}");
            out.push(base(Check::P1, Some(v), detail));
        }
        if !f.p2.is_empty() {
            out.push(base(Check::P2, None, f.p2.join("; ")));
        }
        if let Some(d) = f.p3 {
            out.push(base(Check::P3, None, d));
        }
        if !f.p4.is_empty() {
            out.push(base(Check::P4, None, f.p4.join("; ")));
        }
        if !f.p5.is_empty() {
            out.push(base(Check::P5, None, f.p5.join("; ")));
        }
        for finding in f.p6 {
            out.push(Violation {
                check: Check::P6,
                mm: finding.mm,
                level: finding.level,
                frame: finding.frame,
                start: finding.start,
                end: finding.start.wrapping_add(level_span(finding.level)),
                vma: None,
                rip: 0,
                detail: finding.detail,
            });
        }
        if !out.is_empty() {
            let at = rip();
            for v in &mut out {
                v.rip = at;
            }
            for v in &out {
                self.summary.record(v);
            }
        }
        out
    }

    /// Whether `frame` is a page-aligned frame of guest RAM; an event naming another is recorded
    /// as an error and ignored, so the per-frame maps stay bounded by RAM.
    fn ram_frame(&mut self, event: &str, frame: u64) -> bool {
        let ok = frame.is_multiple_of(mm_core::addr::PAGE_SIZE) && frame <= self.mem.last_addr().0;
        if !ok {
            self.error(format!(
                "{event} of frame {frame:#x}: not a page-aligned frame of guest RAM; ignored"
            ));
        }
        ok
    }

    /// Logs a completed TLB flush of `mm` for P3, within [`FLUSH_LOG`] per mm and [`FLUSH_MMS`]
    /// mms.
    fn flushed(&mut self, seq: u64, mm: u64, start: u64, end: u64) {
        if !self.flushes.contains_key(&mm) && self.flushes.len() >= FLUSH_MMS {
            let stalest = self
                .flushes
                .iter()
                .min_by_key(|(_, log)| log.back().map_or(0, |f| f.seq))
                .map(|(&mm, _)| mm);
            if let Some(stalest) = stalest {
                self.flushes.remove(&stalest);
            }
        }
        let log = self.flushes.entry(mm).or_default();
        if log.len() == FLUSH_LOG {
            log.pop_front();
        }
        log.push_back(Flush { seq, start, end });
    }

    /// Records a walk error once; past [`MAX_ERRORS`] distinct ones, only counts them.
    fn error(&mut self, line: String) {
        if self.errors_seen.contains(&line) {
            return;
        }
        if self.errors_seen.len() < MAX_ERRORS {
            self.errors_seen.insert(line.clone());
            self.summary.errors.push(line);
            return;
        }
        self.errors_dropped += 1;
        let note = format!(
            "{} further distinct walk errors not listed",
            self.errors_dropped
        );
        if self.errors_dropped == 1 {
            self.summary.errors.push(note);
        } else if let Some(last) = self.summary.errors.last_mut() {
            *last = note;
        }
    }
}
