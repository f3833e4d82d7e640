//! Exit timing for the probe benchmark: the bare exit round trip (ping exits) and the host time
//! spent checking each page-table free.

use std::time::{Duration, Instant};

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
    /// Each check's time, in order.
    checks: Vec<Duration>,
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
        self.checks.push(took);
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
    /// span many VMAs (whose cost grows with those VMAs, as it should).
    pub fn check_median(&self) -> Option<Duration> {
        let mut sorted = self.checks.clone();
        sorted.sort();
        sorted.get(sorted.len() / 2).copied()
    }

    /// The slowest check.
    pub fn check_max(&self) -> Option<Duration> {
        self.checks.iter().max().copied()
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
}
