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
use std::fmt;

use mm_core::addr::{TASK_SIZE, USER_BASE};
use mm_core::phys::PageFlags;
use vm_memory::GuestMemoryMmap;

use mm_core::phys::TableDesc;

use super::coverage::{self, Coverage, VmaKind};
use super::guest_mem::{GuestView, WalkError};
use super::index::VmaIndex;
use super::layout::{self, page, word};
use super::pgtable::{self, ParentEntry, StaleTable};
use super::rmap::{RmapWalk, VmaFilter};
use super::sweep::{self, LivePages, MemMapCopy};
use super::{ProbeEvent, TableSpan, UnlinkKind};
use mm_core::abi::FreePath;

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
    /// Every violation.
    pub violations: Vec<Violation>,
    /// Guest structures that could not be walked (corrupt, cyclic, out of range).
    pub errors: Vec<String>,
}

/// Distinct walk errors kept in the summary; later ones are counted in one last line.
const MAX_ERRORS: usize = 256;

/// Every this-many-th sweep (and every one with `--thorough`) reads the whole mem_map (~1 ms for
/// 256 MiB of RAM here); the others are light (see [`Probe::sweep`]).
const FULL_SWEEP_EVERY: u64 = 64;

/// TLB flushes remembered per mm for P3 (the newest ones; see [`Probe::flushed_since`]).
const FLUSH_LOG: usize = 4096;

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

/// The findings of one `TableFreeing`, before they become violations.
#[derive(Default)]
struct Findings {
    p1: Vec<VmaInfo>,
    p2: Vec<String>,
    p4: Vec<String>,
    p3: Option<String>,
    p5: Vec<String>,
    p6: Vec<sweep::Finding>,
    errors: Vec<WalkError>,
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
        }
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
                self.freed.remove(&span.frame);
                self.unhooked.insert(span.frame, Unhooked { seq });
                Vec::new()
            }
            ProbeEvent::TlbFlushed { mm, start, end } => {
                let log = self.flushes.entry(mm).or_default();
                if log.len() == FLUSH_LOG {
                    log.pop_front();
                }
                log.push_back(Flush { seq, start, end });
                Vec::new()
            }
            ProbeEvent::TableFreed { frame, claim, path } => {
                let (span, findings) = self.table_freed(seq, frame, claim);
                self.count_free(&span, path);
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
                        "the guest's validate_mm found {count} broken invariant(s), first: {}",
                        text.escape_debug()
                    ),
                };
                self.summary.violations.push(violation.clone());
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
        self.index.range(mm, vma, start, end);
    }

    /// Drops `vma` from the index (the guest's `VmaFreed` event).
    pub fn vma_freed(&mut self, vma: u64) {
        self.index.freed(vma);
    }

    /// What the last `TableFreeing` cost.
    pub fn last_cost(&self) -> Cost {
        self.last_cost
    }

    /// Counts a checked free in its coverage cell: the level its descriptor gives, the lowest
    /// table above it still holding entries.
    fn count_free(&mut self, span: &TableSpan, path: FreePath) {
        if !(1..=4).contains(&span.level) {
            return;
        }
        let kept = if span.level == 4 {
            Ok(0)
        } else {
            let mem = self.mem.clone();
            let mut view = GuestView::new(&mem);
            view.word("mm_struct", span.mm.wrapping_add(layout::mm::PGD as u64))
                .and_then(|pgd| coverage::kept_level(&mut view, pgd, span.level, span.start))
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

    /// The free of page-table frame `frame`: P5 on the announcement, then P1–P4 on the span the
    /// table's descriptor gives (the announced one if the descriptor gives none), poison, and at a
    /// PGD the leftovers check. Returns the span checked.
    fn table_freed(
        &mut self,
        seq: u64,
        frame: u64,
        claim: Option<TableSpan>,
    ) -> (TableSpan, Findings) {
        let mut f = Findings::default();
        let mem = self.mem.clone();
        let view = GuestView::new(&mem);
        let desc = match self.roots.map(|r| self.desc_of(&view, &r, frame)) {
            Some(Ok(desc)) => desc,
            Some(Err(e)) => {
                f.errors.push(e);
                None
            }
            None => None,
        };
        let own = desc.and_then(|d| {
            let (start, end) = sweep::span_of(&d)?;
            Some(TableSpan {
                mm: d.mm,
                level: d.level as u8,
                frame,
                start,
                end,
            })
        });
        let swept = self.swept.remove(&frame);
        self.reported.retain(|&(_, f)| f != frame);
        self.p5(frame, desc, own, claim, swept, &mut f);
        let Some(span) = own.or(claim) else {
            f.errors.push(WalkError::Insane {
                what: "freed table",
                addr: frame,
                detail: "reported freed as a page table, but neither its Page nor the mmu_gather \
                         describes one"
                    .to_string(),
            });
            let span = TableSpan {
                mm: 0,
                level: 0,
                frame,
                start: 0,
                end: 0,
            };
            return (span, f);
        };
        self.table_freeing(seq, &span, &mut f);
        if span.level == 4 {
            self.summary.checks[Check::P6.index()] += 1;
            if let Some(copy) = self.read_mem_map(&mut GuestView::new(&mem), &mut f) {
                f.p6.extend(sweep::leftovers(&copy, span.mm, frame));
                self.mem_map_buf = copy.into_buffer();
            }
        }
        (span, f)
    }

    /// P5: a PTE, PMD or PUD table goes back only as the mmu_gather announced it, and the
    /// announcement (mm, level, frame, span) is what the table's descriptor says; the descriptor is
    /// where the last sweep found the table hanging.
    fn p5(
        &mut self,
        frame: u64,
        desc: Option<TableDesc>,
        own: Option<TableSpan>,
        claim: Option<TableSpan>,
        swept: Option<TableDesc>,
        f: &mut Findings,
    ) {
        self.summary.checks[Check::P5.index()] += 1;
        let describe = |s: &TableSpan| {
            format!(
                "a level-{} table of mm {:#x} mapping [{:#x}, {:#x})",
                s.level, s.mm, s.start, s.end
            )
        };
        match (desc, own) {
            (None, _) => f.p5.push("its Page does not say page table".to_string()),
            (Some(d), None) => f.p5.push(format!(
                "its Page describes no table a PGD can hold (level {}, base {:#x})",
                d.level, d.base
            )),
            (Some(_), Some(_)) => {}
        }
        match (claim, own) {
            (Some(c), _) if c.frame != frame => f.p5.push(format!(
                "the mmu_gather announced the free of frame {:#x}, not this one",
                c.frame
            )),
            (Some(c), Some(o))
                if (c.mm, c.level, c.start, c.end) != (o.mm, o.level, o.start, o.end) =>
            {
                f.p5.push(format!(
                    "the mmu_gather announced {}, its Page describes {}",
                    describe(&c),
                    describe(&o)
                ))
            }
            (None, Some(o)) if o.level < 4 => f.p5.push(
                "freed behind the mmu_gather's back: no announcement since its previous free"
                    .to_string(),
            ),
            _ => {}
        }
        if let (Some(was), Some(d)) = (swept, desc) {
            if was != d {
                f.p5.push(format!(
                    "the last sweep found it as a level-{} table of mm {:#x} from {:#x}, its Page \
                     now says level {} of mm {:#x} from {:#x}",
                    was.level, was.mm, was.base, d.level, d.mm, d.base
                ));
            }
        }
    }

    /// The descriptor in `frame`'s `Page`, if it says allocated page table.
    fn desc_of(
        &self,
        view: &GuestView<'_>,
        r: &Roots,
        frame: u64,
    ) -> Result<Option<TableDesc>, WalkError> {
        Ok(self.page_words(view, r, frame)?.and_then(|w| {
            sweep::desc_of(
                PageFlags(w[word(page::FLAGS)]),
                w[word(page::MAPPING)],
                w[word(page::INDEX)],
            )
        }))
    }

    /// Reads the whole mem_map (for P6), reusing the last copy's buffer.
    fn read_mem_map(&mut self, view: &mut GuestView<'_>, f: &mut Findings) -> Option<MemMapCopy> {
        let r = self.roots?;
        let buf = std::mem::take(&mut self.mem_map_buf);
        match MemMapCopy::read(view, r.mem_map, r.mem_map_len, buf) {
            Ok(copy) => Some(copy),
            Err(e) => {
                f.errors.push(e);
                None
            }
        }
    }

    /// P6 at a quiescent point: sweeps every mm (module `sweep`) and remembers where each table
    /// hangs, for P5 and the next sweep. The first sweep, every [`FULL_SWEEP_EVERY`]th and every
    /// one with `--thorough` read the whole mem_map, to find every frame marked page table; the
    /// others are light: they walk the mms known (from the last sweep and the VMA index) and
    /// compare with what the last sweep reached. (A table lost between two light sweeps is found
    /// at its mm's PGD free at the latest.)
    fn sweep(&mut self, rip: &mut dyn FnMut() -> u64) -> Vec<Violation> {
        let Some(r) = self.roots else {
            return Vec::new();
        };
        self.summary.checks[Check::P6.index()] += 1;
        self.summary.sweeps += 1;
        let full = self.thorough || self.summary.sweeps % FULL_SWEEP_EVERY == 1;
        let mem = self.mem.clone();
        let mut view = GuestView::new(&mem);
        let live_view = GuestView::new(&mem);
        let live = LivePages::new(&live_view, r.mem_map, r.mem_map_len);
        let mut f = Findings::default();
        let copy = if full {
            match self.read_mem_map(&mut view, &mut f) {
                Some(copy) => Some(copy),
                None => return self.violations(&TableSpan::default(), f, rip),
            }
        } else {
            None
        };
        let pgds = match &copy {
            Some(copy) => sweep::pgds_of(copy, r.kernel_pgd),
            None => self.known_pgds(&view, &live, r.kernel_pgd),
        };
        let pages: &dyn sweep::Pages = match &copy {
            Some(copy) => copy,
            None => &live,
        };
        let index = &self.index;
        let meeting = |mm, start, end| index.meeting(mm, start, end);
        let proposer: Option<&dyn Fn(u64, u64, u64) -> Vec<u64>> =
            self.index.active.then_some(&meeting);
        let mut outcome = sweep::sweep(&mut view, pages, &pgds, proposer, !self.rss_racy);
        let unhooked = &self.unhooked;
        let in_flight = |frame| unhooked.contains_key(&frame);
        if let Some(copy) = &copy {
            outcome
                .findings
                .extend(sweep::lost(copy, &outcome.reached, &in_flight));
        }
        // A table the last sweep found that this one did not reach, with no TableFreed since: if
        // it is still a page table of that mm and no gather holds it, it is lost (the full sweep
        // above says so already); if it is not, it went back to the allocator unchecked.
        for (&frame, was) in &self.swept {
            if outcome.reached.contains_key(&frame) || in_flight(frame) {
                continue;
            }
            let (kind, detail) = if pages.table_desc(frame) == Some(*was) {
                if copy.is_some() {
                    continue;
                }
                (
                    "lost",
                    "lost: its Page says page table, but no PGD reaches it and no mmu_gather \
                     holds it (unhooked and never freed)",
                )
            } else {
                (
                    "freed unreported",
                    "freed unreported: the last sweep found it as a table of this mm, and no \
                     free of it was reported since (the allocator's report was skipped)",
                )
            };
            outcome.findings.push(sweep::Finding {
                mm: was.mm,
                level: was.level as u8,
                frame,
                start: was.base,
                kind,
                detail: detail.to_string(),
            });
        }
        if let Some(copy) = copy {
            self.mem_map_buf = copy.into_buffer();
        }
        self.swept = outcome.reached;
        f.errors.extend(outcome.errors);
        let mut out = self.violations(&TableSpan::default(), f, rip);
        let at = if outcome.findings.is_empty() {
            0
        } else {
            rip()
        };
        for finding in outcome.findings {
            if !self.reported.insert((finding.kind, finding.frame)) {
                continue;
            }
            let level = finding.level.clamp(1, 4);
            let span = level_span(level);
            let v = Violation {
                check: Check::P6,
                mm: finding.mm,
                level: finding.level,
                frame: finding.frame,
                start: finding.start,
                end: finding.start.wrapping_add(span),
                vma: None,
                rip: at,
                detail: finding.detail,
            };
            self.summary.violations.push(v.clone());
            out.push(v);
        }
        out
    }

    /// The PGDs of the mms a light sweep walks: those the last sweep found and those the VMA
    /// index knows, each read from its `MmStruct` and kept if its `Page` says PGD of that mm.
    fn known_pgds(
        &self,
        view: &GuestView<'_>,
        pages: &dyn sweep::Pages,
        kernel_pgd: u64,
    ) -> Vec<(u64, TableDesc)> {
        let mut mms: Vec<u64> = self
            .swept
            .values()
            .filter(|d| d.level == 4)
            .map(|d| d.mm)
            .chain(self.index.mms())
            .collect();
        mms.sort_unstable();
        mms.dedup();
        mms.into_iter()
            .filter_map(|mm| {
                let pgd = view
                    .word("mm_struct", mm.wrapping_add(layout::mm::PGD as u64))
                    .ok()?;
                let desc = pages.table_desc(pgd)?;
                (pgd != kernel_pgd && desc.mm == mm && desc.level == 4).then_some((pgd, desc))
            })
            .collect()
    }

    /// Runs P1–P4 for `span` and poisons its frame.
    fn table_freeing(&mut self, seq: u64, span: &TableSpan, f: &mut Findings) {
        // A span ending at the top of the address space wraps to 0.
        let end = if span.end <= span.start {
            u64::MAX
        } else {
            span.end
        };
        let mem = self.mem.clone();
        let mut view = GuestView::new(&mem);
        let mut cost = self.p1(&mut view, span, end, f);
        let stale = self.p2(&mut view, span, f);
        if span.level < 4 {
            self.p3(span, end, f);
        }
        self.p4(&view, seq, span, stale, f);
        cost.steps = view.steps_spent();
        self.last_cost = cost;
    }

    /// P1: rmap must not reach a VMA of this mm meeting the span. With the index, the default mode
    /// checks only the VMAs it proposes; `--thorough` (and a guest that reports no VMA ranges)
    /// walks every structure too.
    fn p1(
        &mut self,
        view: &mut GuestView<'_>,
        span: &TableSpan,
        end: u64,
        f: &mut Findings,
    ) -> Cost {
        self.summary.checks[0] += 1;
        let filter = VmaFilter {
            mm: span.mm,
            start: span.start,
            end,
        };
        let mut cost = Cost::default();
        let mut walk = RmapWalk::new(view, filter);
        if self.thorough || !self.index.active {
            if let Some(r) = self.roots {
                walk.walk_roots(r.roots);
                if self.thorough {
                    walk.walk_mem_map(r.mem_map, r.mem_map_len);
                }
            }
        }
        if self.index.active {
            for v in self.index.meeting(span.mm, span.start, end) {
                cost.candidates += 1;
                walk.candidate(v);
            }
        }
        cost.anon_vmas = walk.anon_vmas;
        cost.mappings = walk.mappings;
        cost.vmas = walk.vmas;
        f.p1 = std::mem::take(&mut walk.found);
        f.errors.append(&mut walk.errors);
        cost
    }

    /// P2: the parent entry (thorough: any entry of the mm) no longer points to the frame. Also
    /// P4's "freed while still mapped" for thorough. Returns the poisoned tables the walks met.
    fn p2(
        &mut self,
        view: &mut GuestView<'_>,
        span: &TableSpan,
        f: &mut Findings,
    ) -> Vec<StaleTable> {
        let mut stale = Vec::new();
        let pgd = match view.word("mm_struct", span.mm.wrapping_add(layout::mm::PGD as u64)) {
            Ok(pgd) => pgd,
            Err(e) => {
                f.errors.push(e);
                return stale;
            }
        };
        let mut parent = None;
        if span.level < 4 {
            self.summary.checks[1] += 1;
            match pgtable::parent_entry(view, pgd, span.level, span.start) {
                Ok(Some(ParentEntry::Entry {
                    table,
                    index,
                    value,
                })) if pgtable::points_to(value, span.frame) => {
                    parent = Some((table, index));
                    f.p2.push(format!(
                        "parent entry {index} of table {table:#x} still points to the frame \
                         ({value:#x})"
                    ));
                }
                Ok(Some(ParentEntry::Stale(s))) => stale.push(s),
                Ok(_) => {}
                Err(e) => f.errors.push(e),
            }
        }
        if !self.thorough {
            return stale;
        }
        match pgtable::references(view, pgd, span.frame) {
            Ok(scan) => {
                for r in &scan.references {
                    if parent != Some((r.table, r.index)) {
                        f.p2.push(format!(
                            "entry {} of level-{} table {:#x} still points to the frame",
                            r.index, r.level, r.table
                        ));
                    }
                }
                if let n @ 1.. = scan.references.len() {
                    let entries = if n == 1 { "entry" } else { "entries" };
                    f.p4.push(format!(
                        "freed while still mapped: {n} {entries} of the mm point to it"
                    ));
                }
                stale.extend(scan.stale);
            }
            Err(e) => f.errors.push(e),
        }
        stale
    }

    /// P3: a covering flush between the unhook (or, unknown, the previous free) and now.
    fn p3(&mut self, span: &TableSpan, end: u64, f: &mut Findings) {
        self.summary.checks[2] += 1;
        let unhooked = self.unhooked.remove(&span.frame).map(|u| u.seq);
        let previous_free = self.freed.get(&span.frame).map(|fr| fr.seq);
        let since = unhooked.or(previous_free).unwrap_or(0);
        if self.flushed_since(span.mm, since, span.start, end) {
            return;
        }
        f.p3 = Some(match (unhooked, previous_free) {
            (Some(at), _) => {
                format!(
                    "no TLB flush covering the span between its unhook (event {at}) and the free"
                )
            }
            (None, Some(at)) => format!(
                "no TableUnhooked seen and no TLB flush covering the span since its previous free \
                 (event {at})"
            ),
            (None, None) => {
                "no TableUnhooked seen and no TLB flush covering the span since the run began"
                    .to_string()
            }
        });
    }

    /// P4: not freed twice, not freed while mapped, no walk through a freed table; then poison.
    fn p4(
        &mut self,
        view: &GuestView<'_>,
        seq: u64,
        span: &TableSpan,
        stale: Vec<StaleTable>,
        f: &mut Findings,
    ) {
        self.summary.checks[3] += 1;
        if let Some(prev) = self.freed.get(&span.frame) {
            if !prev.poisoned || pgtable::poison_intact(view, span.frame, prev.level) {
                f.p4.push(format!(
                    "double free: already freed at event {} with no TableUnhooked since",
                    prev.seq
                ));
            }
        }
        let mut data_page = false;
        if let Some(r) = self.roots {
            match self.page_of(view, &r, span.frame) {
                Ok(Some([flags, mapcount])) => {
                    let flags = PageFlags(flags);
                    if !flags.contains(PageFlags::PAGETABLE) {
                        f.p4.push(format!(
                            "its Page is not a live page-table page (flags {:#x})",
                            flags.0
                        ));
                    }
                    if mapcount != 0 {
                        f.p4.push(format!(
                            "freed while mapped: its Page has mapcount {mapcount}"
                        ));
                    }
                    data_page = mapcount != 0
                        || flags.contains(PageFlags::ANON)
                        || flags.contains(PageFlags::PAGECACHE);
                }
                Ok(None) => {}
                Err(e) => f.errors.push(e),
            }
        }
        // What a freed table still maps goes with it: leaf pages mapped through nothing, lower
        // tables no walk reaches (free_pgd_range frees only emptied tables).
        if !data_page && span.frame != kernel_pgd_of(&self.roots) {
            match view.table(span.frame) {
                Ok(entries) => {
                    let live: Vec<(usize, u64)> = entries
                        .iter()
                        .copied()
                        .enumerate()
                        .filter(|&(_, e)| !pgtable::is_poison(e) && pgtable::holds_something(e))
                        .filter(|&(i, _)| span.level != 4 || pgtable::is_user_pgd_index(i))
                        .collect();
                    if let Some(&(i, e)) = live.first() {
                        f.p4.push(format!(
                            "freed while it still maps: {} live entr{} (entry {i} holds {e:#x})",
                            live.len(),
                            if live.len() == 1 { "y" } else { "ies" }
                        ));
                    }
                }
                Err(e) => f.errors.push(e),
            }
        }
        for s in stale {
            f.p4.push(format!(
                "use after free: a walk of the mm's tables went through table {:#x}, poisoned when \
                 freed as level {} (entry {} holds {:#x})",
                s.table,
                s.value & 0xF,
                s.index,
                s.value
            ));
        }
        let kernel_pgd = self.roots.map_or(0, |r| r.kernel_pgd);
        let poisoned = !data_page
            && span.frame != kernel_pgd
            && match pgtable::poison_table(view, span.frame, span.level) {
                Ok(()) => true,
                Err(e) => {
                    f.errors.push(e);
                    false
                }
            };
        let level = span.level;
        self.freed.insert(
            span.frame,
            Freed {
                seq,
                level,
                poisoned,
            },
        );
    }

    /// `[flags, mapcount]` of the `Page` describing `frame`, if the mem_map has one.
    fn page_of(
        &self,
        view: &GuestView<'_>,
        r: &Roots,
        frame: u64,
    ) -> Result<Option<[u64; 2]>, WalkError> {
        Ok(self
            .page_words(view, r, frame)?
            .map(|w| [w[word(page::FLAGS)], w[word(page::MAPCOUNT)]]))
    }

    /// The words of the `Page` describing `frame`, if the mem_map has one.
    fn page_words(
        &self,
        view: &GuestView<'_>,
        r: &Roots,
        frame: u64,
    ) -> Result<Option<[u64; page::SIZE / 8]>, WalkError> {
        let pfn = frame / mm_core::addr::PAGE_SIZE;
        if pfn >= r.mem_map_len {
            return Ok(None);
        }
        let addr = pfn
            .checked_mul(page::SIZE as u64)
            .and_then(|o| r.mem_map.checked_add(o))
            .ok_or(WalkError::BadAddress {
                what: "mem_map",
                addr: r.mem_map,
            })?;
        Ok(Some(view.words::<{ page::SIZE / 8 }>("Page", addr)?))
    }

    /// Whether a flush of `mm` covering `[start, end)` arrived after event `since`. Only the newest
    /// [`FLUSH_LOG`] flushes per mm are kept; an older covering flush is not seen.
    fn flushed_since(&self, mm: u64, since: u64, start: u64, end: u64) -> bool {
        self.flushes.get(&mm).is_some_and(|log| {
            log.iter()
                .rev()
                .take_while(|fl| fl.seq > since)
                .any(|fl| fl.covers(start, end))
        })
    }

    /// Turns findings into violations (calling `rip` once if there are any) and records errors.
    fn violations(
        &mut self,
        span: &TableSpan,
        f: Findings,
        rip: &mut dyn FnMut() -> u64,
    ) -> Vec<Violation> {
        for e in f.errors {
            self.error(e.to_string());
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
            self.summary.violations.extend(out.iter().cloned());
        }
        out
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
