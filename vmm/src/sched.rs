//! The race scheduler: host-controlled interleaving of racing vCPUs (issue 5).
//!
//! A vCPU joins a race with `RaceEnter` and leaves with `RaceLeave` (see `guest/src/race.rs`).
//! While it races, every call it makes — a probe event, a walker point, a busy lock — stops it in
//! its vCPU thread here. Unless the run is free ([`Mode::Free`], all racers run at once), exactly
//! one racer runs at a time: once every racer is stopped at a point, the scheduler picks the next
//! one and lets it run to its next point. The sequence of picks is the *schedule*; it is printed
//! as a string (`0*3.1.0*12`: vCPU 0 for three points, vCPU 1 for one, …) that
//! `--schedule` replays exactly, since between points each racer runs alone.
//!
//! Seeded picks ([`Mode::Seeded`]) favour the racer that ran last (runs of several points) and
//! sometimes *park* a walker that has just descended to a PTE table without its lock: it stays
//! stopped while the others run, which is the window a wrong unmap order needs to free that table
//! under it. A racer that found a lock busy (or waits for its TLB shootdown to be answered) is not
//! picked again until another racer has run; when the racers only ever stop at busy locks, round
//! after round, that is a deadlock and the run fails with it.

use mm_core::rng::Rng;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// `WalkerPoint::RmapPte`: a walker holds a PTE table it has not locked yet.
const POINT_RMAP_PTE: u64 = 2;
/// Picks in a row that all end at a busy lock before the race counts as deadlocked (each racer
/// retries its lock many times over).
const DEADLOCK_PICKS: u64 = 256;
/// Picks a long-parked walker sits out (unless nobody else can run): more than a race scenario's
/// whole munmap or exit takes.
const LONG_PARK: u64 = 1024;
/// Longest delay a free-running racer gets at a point.
pub const MAX_FREE_DELAY: Duration = Duration::from_micros(200);
/// How often a waiting vCPU thread looks at the run's stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

/// How racers are interleaved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// All racers run at once (real concurrency; nothing is replayable). At one point in eight
    /// the VMM delays the racer by up to [`MAX_FREE_DELAY`], at random from this seed, so seeds
    /// shift the timing.
    Free(u64),
    /// One at a time, picked by a generator seeded with this value.
    Seeded(u64),
    /// One at a time, in this order; after its end, the lowest waiting vCPU.
    Replay(Schedule),
}

/// A sequence of picks: which vCPU ran to its next point, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule(pub Vec<u8>);

/// Why a schedule string could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad schedule '{text}': {why} (expected runs like 0*3.1.0*12)")]
pub struct ScheduleParseError {
    text: String,
    why: String,
}

/// Most picks a schedule may hold (a byte each): a `--schedule` asking for more is refused rather
/// than allocated.
pub const MAX_SCHEDULE_PICKS: usize = 1 << 24;

impl Schedule {
    /// The highest vCPU index the schedule picks, if any.
    pub fn highest_cpu(&self) -> Option<u8> {
        self.0.iter().copied().max()
    }
}

impl std::str::FromStr for Schedule {
    type Err = ScheduleParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why: String| ScheduleParseError {
            text: text.chars().take(40).collect(),
            why,
        };
        let mut picks = Vec::new();
        for run in text.split('.').filter(|r| !r.is_empty()) {
            let (cpu, count) = run.split_once('*').unwrap_or((run, "1"));
            let cpu: u8 = cpu
                .parse()
                .map_err(|_| err(format!("'{cpu}' is not a vCPU index")))?;
            let count: usize = count
                .parse()
                .ok()
                .filter(|&n| n > 0 && n <= MAX_SCHEDULE_PICKS)
                .ok_or_else(|| err(format!("'{count}' is not a run length")))?;
            if picks.len() + count > MAX_SCHEDULE_PICKS {
                return Err(err(format!("more than {MAX_SCHEDULE_PICKS} picks in all")));
            }
            picks.extend(std::iter::repeat_n(cpu, count));
        }
        Ok(Schedule(picks))
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for run in self.0.chunk_by(|a, b| a == b) {
            if !first {
                f.write_str(".")?;
            }
            first = false;
            match run.len() {
                1 => write!(f, "{}", run[0])?,
                n => write!(f, "{}*{n}", run[0])?,
            }
        }
        Ok(())
    }
}

/// Longest schedule shown whole on the console; `--report` JSON always holds the whole string.
const SHOWN_MAX: usize = 600;

/// `schedule` for the console: whole when short, else its start and a pointer to `--report`.
pub fn abbreviate(schedule: &str) -> String {
    if schedule.len() <= SHOWN_MAX {
        return schedule.to_string();
    }
    let mut cut = SHOWN_MAX;
    while !schedule.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}… ({} characters; --report FILE writes it whole)",
        &schedule[..cut],
        schedule.len()
    )
}

/// Why a race could not go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SchedError {
    /// Every racer is waiting for a lock another racer holds.
    #[error("deadlock: every racing vCPU waits for a lock ({0})")]
    Deadlock(String),
    /// The replayed schedule picks a vCPU that is not waiting to run.
    #[error("the schedule diverged at pick {pick}: vCPU {cpu} is not waiting at a point")]
    Diverged {
        /// Index of the pick.
        pick: usize,
        /// The vCPU it names.
        cpu: u8,
    },
    /// The race went on past the picks a schedule may hold, so it could not be replayed.
    #[error("the race made more than {MAX_SCHEDULE_PICKS} picks: too long a schedule to record")]
    TooLong,
}

/// What one racer is doing.
#[derive(Clone, Debug, Default)]
struct Racer {
    joined: bool,
    /// Stopped at a point, waiting to be picked.
    waiting: bool,
    /// The kind of point it stopped at (a walker point kind, or 0).
    point: u64,
    /// The lock class it found busy, when it stopped for that (cleared when another racer runs).
    blocked_on: Option<String>,
    /// The last lock class it found busy (for the deadlock report).
    last_blocked: Option<String>,
    /// Picks left before a parked racer may run again (it runs sooner when nobody else can).
    parked: u64,
}

struct State {
    racers: Vec<Racer>,
    /// How many vCPUs the race has (the first `RaceEnter` says).
    expected: usize,
    /// Picking has begun (every expected racer joined once).
    started: bool,
    running: Option<usize>,
    last: Option<usize>,
    rng: Rng,
    picks: Vec<u8>,
    replay: Option<(Vec<u8>, usize)>,
    error: Option<SchedError>,
    /// Picks in a row whose racer stopped at a busy lock.
    stuck: u64,
}

/// The scheduler one run's vCPU threads share.
pub struct Scheduler {
    free: bool,
    state: Mutex<State>,
    turn: Condvar,
}

impl Scheduler {
    /// A scheduler for `vcpus` vCPUs in `mode`.
    pub fn new(vcpus: usize, mode: Mode) -> Scheduler {
        let (free, rng, replay) = match mode {
            Mode::Free(seed) => (true, seed, None),
            Mode::Seeded(seed) => (false, seed, None),
            Mode::Replay(s) => (false, 0, Some((s.0, 0))),
        };
        Scheduler {
            free,
            state: Mutex::new(State {
                racers: vec![Racer::default(); vcpus],
                expected: 0,
                started: false,
                running: None,
                last: None,
                rng: Rng::new(rng),
                picks: Vec::new(),
                replay,
                error: None,
                stuck: 0,
            }),
            turn: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `cpu` is racing (its calls are scheduling points).
    pub fn racing(&self, cpu: usize) -> bool {
        self.lock().racers.get(cpu).is_some_and(|r| r.joined)
    }

    /// The picks made so far.
    pub fn schedule(&self) -> Schedule {
        Schedule(self.lock().picks.clone())
    }

    /// `cpu` joins a race of `racers` vCPUs and waits for its first turn.
    pub fn enter(&self, cpu: usize, racers: u64, stop: &AtomicBool) -> Result<(), SchedError> {
        if self.free {
            self.lock().racers[cpu].joined = true;
            return Ok(());
        }
        {
            let mut s = self.lock();
            let expected = usize::try_from(racers).unwrap_or(usize::MAX);
            s.expected = s.expected.max(expected.min(s.racers.len()));
            s.racers[cpu].joined = true;
        }
        self.wait_turn(cpu, 0, None, stop)
    }

    /// `cpu` leaves the race; the others go on without it.
    pub fn leave(&self, cpu: usize) {
        let mut s = self.lock();
        s.racers[cpu] = Racer::default();
        if s.running == Some(cpu) {
            s.running = None;
        }
        self.pick_if_ready(&mut s);
    }

    /// `cpu` reached a point of `kind` (`blocked_on`: the busy lock that stopped it) and waits
    /// until it is picked again. A no-op for a vCPU that is not racing.
    pub fn point(
        &self,
        cpu: usize,
        kind: u64,
        blocked_on: Option<String>,
        stop: &AtomicBool,
    ) -> Result<(), SchedError> {
        if !self.racing(cpu) {
            return Ok(());
        }
        if self.free {
            let delay = {
                let mut s = self.lock();
                (s.rng.below(8) == 0).then(|| {
                    let max = MAX_FREE_DELAY.as_micros() as u64;
                    Duration::from_micros(1 + s.rng.below(max))
                })
            };
            if let Some(delay) = delay {
                std::thread::sleep(delay);
            }
            return Ok(());
        }
        self.wait_turn(cpu, kind, blocked_on, stop)
    }

    fn wait_turn(
        &self,
        cpu: usize,
        kind: u64,
        blocked_on: Option<String>,
        stop: &AtomicBool,
    ) -> Result<(), SchedError> {
        let mut s = self.lock();
        s.stuck = if blocked_on.is_some() { s.stuck + 1 } else { 0 };
        // Whatever this racer did since it was picked (released a lock, answered a shootdown)
        // may let the others go on: they get to try again.
        for r in &mut s.racers {
            r.blocked_on = None;
        }
        {
            let r = &mut s.racers[cpu];
            r.waiting = true;
            r.point = kind;
            if blocked_on.is_some() {
                r.last_blocked.clone_from(&blocked_on);
            }
            r.blocked_on = blocked_on;
        }
        if s.running == Some(cpu) {
            s.running = None;
        }
        self.pick_if_ready(&mut s);
        loop {
            if let Some(e) = &s.error {
                return Err(e.clone());
            }
            if !s.racers[cpu].waiting {
                return Ok(());
            }
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
            s = self
                .turn
                .wait_timeout(s, STOP_POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Picks the next racer once nobody runs and every racer is stopped at a point.
    fn pick_if_ready(&self, s: &mut State) {
        let joined = s.racers.iter().filter(|r| r.joined).count();
        if !s.started {
            if s.expected == 0 || joined < s.expected {
                return;
            }
            s.started = true;
        }
        if s.running.is_some() || s.error.is_some() || joined == 0 {
            return;
        }
        if s.racers.iter().any(|r| r.joined && !r.waiting) {
            return;
        }
        match self.choose(s) {
            Ok(cpu) => {
                s.picks.push(cpu as u8);
                s.last = Some(cpu);
                s.running = Some(cpu);
                let r = &mut s.racers[cpu];
                r.waiting = false;
                r.blocked_on = None;
            }
            Err(e) => s.error = Some(e),
        }
        self.turn.notify_all();
    }

    fn choose(&self, s: &mut State) -> Result<usize, SchedError> {
        // The recorded schedule is host memory a guest racing for ever would grow without bound.
        if s.picks.len() >= MAX_SCHEDULE_PICKS {
            return Err(SchedError::TooLong);
        }
        let waiting: BTreeSet<usize> = (0..s.racers.len())
            .filter(|&i| s.racers[i].joined && s.racers[i].waiting)
            .collect();
        let eligible: Vec<usize> = waiting
            .iter()
            .copied()
            .filter(|&i| s.racers[i].blocked_on.is_none())
            .collect();
        if let Some((picks, next)) = &mut s.replay {
            if let Some(&cpu) = picks.get(*next) {
                let pick = *next;
                *next += 1;
                if !eligible.contains(&(cpu as usize)) {
                    return Err(SchedError::Diverged { pick, cpu });
                }
                return Ok(cpu as usize);
            }
        }
        if eligible.is_empty() || s.stuck > DEADLOCK_PICKS {
            let locks: Vec<String> = waiting
                .iter()
                .filter_map(|&i| {
                    let class = s.racers[i].last_blocked.as_deref()?;
                    Some(format!("vCPU {i} on {class}"))
                })
                .collect();
            return Err(SchedError::Deadlock(locks.join(", ")));
        }
        if s.replay.is_some() {
            return Ok(eligible[0]);
        }
        // Seeded: parked racers run only when nobody else can.
        for r in &mut s.racers {
            r.parked = r.parked.saturating_sub(1);
        }
        let unparked: Vec<usize> = eligible
            .iter()
            .copied()
            .filter(|&i| s.racers[i].parked == 0)
            .collect();
        // A parked racer run only because nobody else can (to answer a shootdown, say) stays
        // parked: it stops again at its next point and the others go on.
        let fallback = unparked.is_empty();
        let pool = if fallback { &eligible } else { &unparked };
        let stay = s.last.filter(|l| pool.contains(l));
        let cpu = match stay {
            Some(last) if s.rng.below(4) != 0 => last,
            _ => pool[s.rng.below(pool.len() as u64) as usize],
        };
        if !fallback {
            s.racers[cpu].parked = 0;
        }
        // A walker about to read a PTE table it has not locked: sometimes let it wait there while
        // the others run, briefly or long enough for a whole munmap or exit. Never for good: with
        // three racers or more, one that never blocks would starve it (and whoever waits on it).
        if s.racers[cpu].point == POINT_RMAP_PTE && eligible.len() > 1 {
            match s.rng.below(8) {
                0 => s.racers[cpu].parked = LONG_PARK,
                1 | 2 => s.racers[cpu].parked = 1 + s.rng.below(64),
                _ => return Ok(cpu),
            }
            let others: Vec<usize> = eligible.iter().copied().filter(|&i| i != cpu).collect();
            return Ok(others[s.rng.below(others.len() as u64) as usize]);
        }
        Ok(cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn schedules_print_as_runs_and_parse_back() {
        let s = Schedule(vec![0, 0, 0, 1, 0, 2, 2]);
        assert_eq!(s.to_string(), "0*3.1.0.2*2");
        assert_eq!("0*3.1.0.2*2".parse::<Schedule>(), Ok(s));
        assert_eq!("".parse::<Schedule>(), Ok(Schedule::default()));
        let err = "0*3.x".parse::<Schedule>().unwrap_err().to_string();
        assert!(err.contains("'x' is not a vCPU index"), "{err}");
        assert!("1*0".parse::<Schedule>().is_err());
        // Runs that each fit but together ask for gigabytes are refused, not allocated.
        let huge = vec!["0*16777216"; 300].join(".");
        let err = huge.parse::<Schedule>().unwrap_err().to_string();
        assert!(err.contains("more than 16777216 picks"), "{err}");
        assert_eq!(
            "0*3.2.1".parse::<Schedule>().unwrap().highest_cpu(),
            Some(2)
        );
    }

    /// Runs `racers` threads, each making `points` points, under `mode`; returns the picks and
    /// the order in which the points ran.
    fn race(mode: Mode, racers: usize, points: usize) -> (Schedule, Vec<usize>) {
        let sched = Arc::new(Scheduler::new(racers, mode));
        let order = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..racers)
            .map(|cpu| {
                let (sched, order, stop) = (sched.clone(), order.clone(), stop.clone());
                std::thread::spawn(move || {
                    sched.enter(cpu, racers as u64, &stop).unwrap();
                    for _ in 0..points {
                        order.lock().unwrap().push(cpu);
                        sched.point(cpu, 0, None, &stop).unwrap();
                    }
                    order.lock().unwrap().push(cpu);
                    sched.leave(cpu);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let order = order.lock().unwrap().clone();
        (sched.schedule(), order)
    }

    #[test]
    fn one_racer_runs_at_a_time_and_a_schedule_replays_exactly() {
        let (schedule, order) = race(Mode::Seeded(7), 3, 20);
        assert_eq!(order.len(), 3 * 21);
        // Every segment between two picks belongs to the picked racer alone.
        assert_eq!(
            &order[..schedule.0.len()],
            &schedule.0.iter().map(|&c| c as usize).collect::<Vec<_>>()[..]
        );
        let (again, replayed) = race(Mode::Replay(schedule.clone()), 3, 20);
        assert_eq!(again, schedule);
        assert_eq!(replayed, order);
        let (other, _) = race(Mode::Seeded(8), 3, 20);
        assert_ne!(other, schedule, "another seed, another interleaving");
    }

    #[test]
    fn a_racer_waiting_for_a_lock_is_not_picked_before_another_has_run() {
        let sched = Scheduler::new(2, Mode::Seeded(1));
        {
            let mut s = sched.lock();
            s.expected = 2;
            s.started = true;
            for (i, r) in s.racers.iter_mut().enumerate() {
                r.joined = true;
                r.waiting = true;
                r.blocked_on = (i == 0).then(|| "anon_vma lock".to_string());
            }
        }
        sched.pick_if_ready(&mut sched.lock());
        assert_eq!(sched.schedule().0, vec![1], "only vCPU 1 can run");
    }

    #[test]
    fn racers_that_only_ever_find_their_locks_busy_are_a_deadlock() {
        let sched = Arc::new(Scheduler::new(2, Mode::Seeded(1)));
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = [(0, "anon_vma lock"), (1, "page_table_lock")]
            .into_iter()
            .map(|(cpu, class)| {
                let (sched, stop) = (sched.clone(), stop.clone());
                std::thread::spawn(move || {
                    sched.enter(cpu, 2, &stop).unwrap();
                    loop {
                        if let Err(e) = sched.point(cpu, 0, Some(class.into()), &stop) {
                            return e;
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            assert_eq!(
                t.join().unwrap(),
                SchedError::Deadlock("vCPU 0 on anon_vma lock, vCPU 1 on page_table_lock".into())
            );
        }
    }

    #[test]
    fn a_replay_that_names_a_racer_not_waiting_diverges() {
        let sched = Scheduler::new(2, Mode::Replay(Schedule(vec![1])));
        {
            let mut s = sched.lock();
            s.expected = 1;
            s.racers[0].joined = true;
            s.racers[0].waiting = true;
        }
        sched.pick_if_ready(&mut sched.lock());
        assert_eq!(
            sched.lock().error,
            Some(SchedError::Diverged { pick: 0, cpu: 1 })
        );
    }
}
