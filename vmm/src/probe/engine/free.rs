//! The checks at a page-table free: P5 on the guest's announcement against the table's own
//! descriptor, then P1 (no VMA reachable by rmap meets the span), P2 (unhooked), P3 (flushed after
//! the unhook), P4 (not freed twice nor while it maps something) and the poison.

use super::*;

impl Probe {
    /// The free of page-table frame `frame`: P5 on the announcement, then P1–P4 on the span the
    /// table's descriptor gives (the announced one if the descriptor gives none), poison, and at a
    /// PGD the leftovers check. Returns the span checked.
    pub(super) fn table_freed(
        &mut self,
        view: &mut GuestView<'_>,
        seq: u64,
        frame: u64,
        claim: Option<TableSpan>,
    ) -> (TableSpan, Findings) {
        let mut f = Findings::default();
        let desc = match self.roots.map(|r| self.desc_of(view, &r, frame)) {
            Some(Ok(desc)) => desc,
            Some(Err(e)) => {
                f.errors.push(e);
                None
            }
            None => None,
        };
        let own = desc.and_then(|d| {
            let (start, end) = mem_map::span_of(&d)?;
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
        self.table_freeing(view, seq, &span, &mut f);
        if span.level == 4 {
            // The mm is gone: its flushes can cover nothing any more, and its leaves are not
            // compared with those of a new mm that takes its address.
            self.flushes.remove(&span.mm);
            if let Some(leaves) = &mut self.leaves {
                leaves.mm_gone(span.mm);
            }
            self.summary.checks[Check::P6.index()] += 1;
            if let Some(copy) = self.read_mem_map(view, &mut f) {
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
            mem_map::desc_of(
                PageFlags(w[word(page::FLAGS)]),
                w[word(page::MAPPING)],
                w[word(page::INDEX)],
            )
        }))
    }

    /// Runs P1–P4 for `span` and poisons its frame.
    fn table_freeing(
        &mut self,
        view: &mut GuestView<'_>,
        seq: u64,
        span: &TableSpan,
        f: &mut Findings,
    ) {
        // A span ending at the top of the address space wraps to 0.
        let end = if span.end <= span.start {
            u64::MAX
        } else {
            span.end
        };
        let steps_before = view.steps_spent();
        let mut cost = self.p1(view, span, end, f);
        let stale = self.p2(view, span, f);
        if span.level < 4 {
            self.p3(span, end, f);
        }
        self.p4(view, seq, span, stale, f);
        cost.steps = view.steps_spent() - steps_before;
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
            let (mut live, mut first) = (0usize, None);
            let scanned = view.for_each_entry(span.frame, |i, e| {
                if !pgtable::is_poison(e)
                    && pgtable::holds_something(e)
                    && (span.level != 4 || pgtable::is_user_pgd_index(i))
                {
                    live += 1;
                    first.get_or_insert((i, e));
                }
            });
            match (scanned, first) {
                (Ok(()), Some((i, e))) => f.p4.push(format!(
                    "freed while it still maps: {live} live entr{} (entry {i} holds {e:#x})",
                    if live == 1 { "y" } else { "ies" }
                )),
                (Ok(()), None) => {}
                (Err(e), _) => f.errors.push(e),
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
    pub(super) fn flushed_since(&self, mm: u64, since: u64, start: u64, end: u64) -> bool {
        self.flushes.get(&mm).is_some_and(|log| {
            log.iter()
                .rev()
                .take_while(|fl| fl.seq > since)
                .any(|fl| fl.covers(start, end))
        })
    }
}
