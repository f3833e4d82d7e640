//! Exit timing for the benchmarks: the bare exit round trip (ping exits), the host time spent
//! checking each page-table free, and the guest's benchmark phases (from one `BenchMark` call to
//! the next).

use mm_core::abi::{Workload, MARK_END, MARK_START};
use mm_core::rng::Rng;
use std::time::{Duration, Instant};

/// Check times kept for the median: every one up to this many, then a uniform sample of them all
/// (reservoir sampling), so a guest freeing tables for ever cannot grow the VMM.
pub const MAX_CHECK_SAMPLES: usize = 1 << 16;

/// Benchmark phases kept; later ones are counted in [`ExitTiming::phases_dropped`]. A benchmark
/// has a few dozen.
pub const MAX_PHASES: usize = 4096;

/// One benchmark phase the guest marked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase {
    /// The workload.
    pub workload: Workload,
    /// Units (operations, pages, VMAs) it did.
    pub units: u64,
    /// Host time from the start mark's exit to the end mark's exit.
    pub took: Duration,
}

/// What the vCPU threads measured.
#[derive(Clone, Debug, Default)]
pub struct ExitTiming {
    /// Ping exits seen.
    pub pings: u64,
    first_ping: Option<Instant>,
    last_ping: Option<Instant>,
    /// Page-table frees checked by the probes.
    pub checked_frees: u64,
    /// Host time spent in those checks.
    pub check_time: Duration,
    /// Check times: all of them up to [`MAX_CHECK_SAMPLES`], then a uniform sample.
    checks: Vec<Duration>,
    /// The slowest check.
    slowest: Option<Duration>,
    /// Picks which check times the sample keeps once it is full (fixed seed: runs repeat).
    sampler: Option<Rng>,
    /// Sweeps of every mm's page tables (P6 at the guest's quiescent points).
    pub sweeps: u64,
    /// Host time spent in those sweeps.
    pub sweep_time: Duration,
    /// Probe events of every kind handled (checked frees and sweeps included).
    pub probe_events: u64,
    /// The guest's benchmark phases, in order (the first [`MAX_PHASES`]).
    pub phases: Vec<Phase>,
    /// Phases past [`MAX_PHASES`], not kept.
    pub phases_dropped: u64,
    /// Marks that did not pair up (an end with no start, another workload's end, an unknown
    /// workload): none in a sound run.
    pub unpaired_marks: u64,
    open_phase: Option<(Workload, Instant)>,
}

impl ExitTiming {
    /// A ping exit arrived at `at`.
    pub fn ping(&mut self, at: Instant) {
        self.pings += 1;
        self.first_ping.get_or_insert(at);
        self.last_ping = Some(at);
    }

    /// The check of one page-table free took `took`.
    pub fn checked_free(&mut self, took: Duration) {
        self.checked_frees += 1;
        self.check_time += took;
        self.slowest = self.slowest.max(Some(took));
        if self.checks.len() < MAX_CHECK_SAMPLES {
            self.checks.push(took);
            return;
        }
        // Reservoir sampling: the n-th time replaces a kept one with probability SAMPLES / n.
        let rng = self.sampler.get_or_insert_with(|| Rng::new(0x5eed));
        let slot = rng.next_u64() % self.checked_frees;
        if let Some(kept) = self.checks.get_mut(slot as usize) {
            *kept = took;
        }
    }

    /// A sweep took `took`.
    pub fn swept(&mut self, took: Duration) {
        self.sweeps += 1;
        self.sweep_time += took;
    }

    /// A probe event of any kind was handled.
    pub fn probe_event(&mut self) {
        self.probe_events += 1;
    }

    /// Mean host time of one sweep.
    pub fn sweep_mean(&self) -> Option<Duration> {
        let n = u32::try_from(self.sweeps).ok().filter(|&n| n > 0)?;
        Some(self.sweep_time / n)
    }

    /// Check and sweep time together per checked free: what each free costs with the sweeps
    /// that run between frees charged to it.
    pub fn check_with_sweeps_per_free(&self) -> Option<Duration> {
        let frees = u32::try_from(self.checked_frees).ok().filter(|&n| n > 0)?;
        Some((self.check_time + self.sweep_time) / frees)
    }

    /// A benchmark mark arrived at `at`: a start opens a phase, the matching end closes it.
    pub fn bench_mark(&mut self, workload: u64, phase: u64, units: u64, at: Instant) {
        let workload = Workload::from_raw(workload);
        match (phase, workload, self.open_phase.take()) {
            (MARK_START, Some(w), open) => {
                self.unpaired_marks += u64::from(open.is_some());
                self.open_phase = Some((w, at));
            }
            (MARK_END, Some(w), Some((open, _)))
                if open == w && self.phases.len() >= MAX_PHASES =>
            {
                self.phases_dropped += 1;
            }
            (MARK_END, Some(w), Some((open, started))) if open == w => self.phases.push(Phase {
                workload: w,
                units,
                took: at - started,
            }),
            _ => self.unpaired_marks += 1,
        }
    }

    /// Mean time from one ping exit to the next: exit, VMM, re-entry and one guest loop turn.
    pub fn ping_round_trip(&self) -> Option<Duration> {
        let (first, last) = (self.first_ping?, self.last_ping?);
        let gaps = u32::try_from(self.pings.checked_sub(1)?)
            .ok()
            .filter(|&n| n > 0)?;
        Some((last - first) / gaps)
    }

    /// Mean host time spent checking one page-table free.
    pub fn check_per_free(&self) -> Option<Duration> {
        let frees = u32::try_from(self.checked_frees).ok().filter(|&n| n > 0)?;
        Some(self.check_time / frees)
    }

    /// Median host time of one check: the typical free, unswayed by the few frees of tables that
    /// span many VMAs (whose cost grows with those VMAs, as it should). Exact up to
    /// [`MAX_CHECK_SAMPLES`] checks, the median of a uniform sample past that.
    pub fn check_median(&self) -> Option<Duration> {
        let mut sorted = self.checks.clone();
        sorted.sort();
        sorted.get(sorted.len() / 2).copied()
    }

    /// Check times kept for the median (at most [`MAX_CHECK_SAMPLES`]).
    pub fn check_samples(&self) -> usize {
        self.checks.len()
    }

    /// The slowest check.
    pub fn check_max(&self) -> Option<Duration> {
        self.slowest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_round_trip_is_the_mean_gap_between_pings() {
        let mut t = ExitTiming::default();
        assert_eq!(t.ping_round_trip(), None);
        let start = Instant::now();
        for i in 0..5 {
            t.ping(start + Duration::from_micros(10 * i));
        }
        assert_eq!(t.ping_round_trip(), Some(Duration::from_micros(10)));
    }

    #[test]
    fn a_phase_runs_from_its_start_mark_to_its_end_mark() {
        let mut t = ExitTiming::default();
        let start = Instant::now();
        let w = Workload::TouchAnon as u64;
        t.bench_mark(w, MARK_START, 0, start);
        t.bench_mark(w, MARK_END, 64, start + Duration::from_millis(5));
        assert_eq!(
            t.phases,
            [Phase {
                workload: Workload::TouchAnon,
                units: 64,
                took: Duration::from_millis(5)
            }]
        );
        assert_eq!(t.unpaired_marks, 0);
    }

    #[test]
    fn marks_that_do_not_pair_up_are_counted_not_timed() {
        let mut t = ExitTiming::default();
        let now = Instant::now();
        t.bench_mark(Workload::CreateVmas as u64, MARK_END, 1, now);
        t.bench_mark(Workload::CreateVmas as u64, MARK_START, 0, now);
        t.bench_mark(Workload::MunmapVmas as u64, MARK_END, 1, now);
        t.bench_mark(99, MARK_START, 0, now);
        assert!(t.phases.is_empty());
        assert_eq!(t.unpaired_marks, 3);
    }

    #[test]
    fn the_check_cost_is_the_mean_per_free() {
        let mut t = ExitTiming::default();
        assert_eq!(t.check_per_free(), None);
        t.checked_free(Duration::from_micros(3));
        t.checked_free(Duration::from_micros(5));
        t.checked_free(Duration::from_micros(400));
        assert_eq!(t.check_per_free(), Some(Duration::from_micros(136)));
        assert_eq!(t.check_median(), Some(Duration::from_micros(5)));
        assert_eq!(t.check_max(), Some(Duration::from_micros(400)));
    }

    #[test]
    fn check_times_are_sampled_past_the_cap_and_phases_counted() {
        let mut t = ExitTiming::default();
        // Twice the cap: the first half fast, the second slow. A sample of them all holds both.
        for i in 0..2 * MAX_CHECK_SAMPLES as u64 {
            let us = if i < MAX_CHECK_SAMPLES as u64 { 1 } else { 100 };
            t.checked_free(Duration::from_micros(us));
        }
        assert_eq!(t.checks.len(), MAX_CHECK_SAMPLES);
        let slow = t.checks.iter().filter(|d| d.as_micros() == 100).count();
        let half = MAX_CHECK_SAMPLES / 2;
        assert!(
            slow.abs_diff(half) < half / 10,
            "{slow} slow samples of {MAX_CHECK_SAMPLES}"
        );
        assert_eq!(t.check_max(), Some(Duration::from_micros(100)));
        assert_eq!(t.checked_frees, 2 * MAX_CHECK_SAMPLES as u64);

        let w = Workload::TouchAnon as u64;
        let now = Instant::now();
        for _ in 0..MAX_PHASES + 5 {
            t.bench_mark(w, MARK_START, 0, now);
            t.bench_mark(w, MARK_END, 1, now);
        }
        assert_eq!((t.phases.len(), t.phases_dropped), (MAX_PHASES, 5));
    }
}
