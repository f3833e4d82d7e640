//! P6 at the guest's quiescent points: the engine's side of the sweep (module `sweep` walks the
//! tables): which mms to walk, the mem_map read, and the findings reported once each.

use super::*;

impl Probe {
    /// Reads the whole mem_map (for P6), reusing the last copy's buffer.
    pub(super) fn read_mem_map(
        &mut self,
        view: &mut GuestView<'_>,
        f: &mut Findings,
    ) -> Option<MemMapCopy> {
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
    pub(super) fn sweep(&mut self, rip: &mut dyn FnMut() -> u64) -> Vec<Violation> {
        let Some(r) = self.roots else {
            return Vec::new();
        };
        self.summary.checks[Check::P6.index()] += 1;
        self.summary.sweeps += 1;
        let full = self.thorough || self.summary.sweeps % FULL_SWEEP_EVERY == 1;
        let (mem, stop) = (self.mem.clone(), self.stop.clone());
        let mut view = GuestView::new(&mem).stopping_on(&stop);
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
        let pages: &dyn mem_map::Pages = match &copy {
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
        let unflushed = self.leaf_flushes(self.summary.events, &mut outcome);
        self.swept = outcome.reached;
        self.summary.max_steps = self.summary.max_steps.max(view.steps_spent());
        f.errors.append(&mut outcome.errors);
        let mut out = self.violations(&TableSpan::default(), f, rip);
        let at = if outcome.findings.is_empty() && unflushed.is_empty() {
            0
        } else {
            rip()
        };
        for mut v in unflushed {
            v.rip = at;
            self.summary.record(&v);
            out.push(v);
        }
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
            self.summary.record(&v);
            out.push(v);
        }
        out
    }

    /// The PGDs of the mms a light sweep walks: those the last sweep found and those the VMA
    /// index knows, each read from its `MmStruct` and kept if its `Page` says PGD of that mm.
    fn known_pgds(
        &self,
        view: &GuestView<'_>,
        pages: &dyn mem_map::Pages,
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
}
