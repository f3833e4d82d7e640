//! What a campaign covers: the seed range (`A..B` or `A`) and the shard (`K/N`, or `auto/N` with K
//! the job engine's task index) a runner takes.

use super::task_index::task_index;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Seeds `start` up to but not including `end`, like Rust's `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedRange {
    /// First seed.
    pub start: u64,
    /// One past the last seed.
    pub end: u64,
}

impl SeedRange {
    /// Parses `A..B` (A up to B-1) or a single seed `A`; an empty range is an error.
    pub fn parse(s: &str) -> Result<SeedRange, String> {
        let number = |part: &str| {
            part.trim()
                .parse::<u64>()
                .map_err(|_| format!("'{part}' is not a seed (expected A..B or A)"))
        };
        let range = match s.split_once("..") {
            None => {
                let start = number(s)?;
                let end = start
                    .checked_add(1)
                    .ok_or_else(|| "seed too large".to_string())?;
                SeedRange { start, end }
            }
            Some((a, b)) => SeedRange {
                start: number(a)?,
                end: number(b)?,
            },
        };
        if range.end <= range.start {
            return Err(format!(
                "{}..{} is empty (A..B runs A up to B-1, so B must be more than A)",
                range.start, range.end
            ));
        }
        Ok(range)
    }

    /// The seeds of this range that `shard` takes, in order, worked out rather than filtered: a
    /// shard of a 2^64-seed range costs no more to hold or to start than one of ten seeds.
    pub fn seeds(self, shard: Option<Shard>) -> Seeds {
        let shard = shard.unwrap_or(Shard::WHOLE);
        let len = shard.count_in(self);
        // The first seed at or after `start` that the shard takes; `count - (r - index)` cannot
        // overflow where `count + index - r` could.
        let r = self.start % shard.count;
        let offset = if shard.index >= r {
            shard.index - r
        } else {
            shard.count - (r - shard.index)
        };
        Seeds {
            // With no seed to take (`len == 0`) the first one is never read.
            next: self.start.wrapping_add(offset),
            step: shard.count,
            len,
        }
    }

    /// How many seeds the range holds (none for a backwards range, which only a crafted file
    /// can hold).
    pub fn len(self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Never true: [`SeedRange::parse`] refuses empty ranges.
    pub fn is_empty(self) -> bool {
        self.end <= self.start
    }
}

/// The seeds a shard takes from a range: `len` seeds from `next`, `step` apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seeds {
    /// The next seed (meaningless when `len` is 0).
    next: u64,
    /// The shard count: the distance between two seeds of one shard.
    step: u64,
    /// Seeds left.
    len: u64,
}

impl Seeds {
    /// How many seeds are left.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when no seed is left.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`th seed left (0-based), without walking the ones before it.
    pub fn get(&self, i: u64) -> Option<u64> {
        // Below `len`, the seed is below the range's end, so the arithmetic cannot overflow.
        (i < self.len).then(|| self.next + i * self.step)
    }
}

impl Iterator for Seeds {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        self.nth(0)
    }

    fn nth(&mut self, n: usize) -> Option<u64> {
        let seed = self.get(n as u64)?;
        self.len -= n as u64 + 1;
        if self.len > 0 {
            self.next = seed + self.step;
        }
        Some(seed)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let len = usize::try_from(self.len).ok();
        (len.unwrap_or(usize::MAX), len)
    }
}

/// Hands the seeds of a campaign to its workers, each seed to exactly one: a position in
/// [`Seeds`] that only moves forward, so the workers share no list of seeds.
#[derive(Debug)]
pub struct SeedCursor {
    seeds: Seeds,
    taken: AtomicU64,
}

impl SeedCursor {
    /// A cursor at the first of `seeds`.
    pub fn new(seeds: Seeds) -> SeedCursor {
        SeedCursor {
            seeds,
            taken: AtomicU64::new(0),
        }
    }

    /// How many seeds there are in all, taken or not.
    pub fn total(&self) -> u64 {
        self.seeds.len()
    }

    /// The next seed nobody has taken yet; `None` once all are taken. The position stops at the
    /// end instead of wrapping, however many times workers ask past it.
    pub fn take(&self) -> Option<u64> {
        let total = self.seeds.len();
        let i = self
            .taken
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |i| {
                (i < total).then_some(i + 1)
            })
            .ok()?;
        self.seeds.get(i)
    }
}

impl fmt::Display for SeedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// Shard `index` of `count`: the seeds with `seed % count == index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// K, from 0 to `count - 1`.
    pub index: u64,
    /// N, at least 1.
    pub count: u64,
}

impl Shard {
    /// Shard 0 of 1: every seed.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Parses `K/N` with 1 ≤ N and 0 ≤ K < N.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not a shard (expected K/N, e.g. 0/4)"))?;
        let number = |part: &str| {
            part.trim()
                .parse::<u64>()
                .map_err(|_| format!("'{part}' is not a number (expected K/N, e.g. 0/4)"))
        };
        let (index, count) = (number(k)?, number(n)?);
        if count == 0 {
            return Err("N must be at least 1 in K/N".into());
        }
        if index >= count {
            return Err(format!(
                "shard {index}/{count}: K must be less than N (0 to {})",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// True when this shard runs `seed`.
    pub fn takes(self, seed: u64) -> bool {
        seed % self.count == self.index
    }

    /// How many seeds of `range` this shard runs, counted without visiting them: those below
    /// `end` less those below `start`.
    pub fn count_in(self, range: SeedRange) -> u64 {
        // Below `n`, the seeds with `seed % count == index` are one per whole `count` seeds, and
        // one more when the last, partial block reaches past `index`.
        let below = |n: u64| n / self.count + u64::from(n % self.count > self.index);
        below(range.end).saturating_sub(below(range.start))
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What `--shard` says: a shard, or `auto/N` with K to be read from the job engine's task index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardArg {
    /// `K/N`.
    Fixed(Shard),
    /// `auto/N`: K is the task index ([`super::task_index`]).
    Auto {
        /// N, at least 1.
        count: u64,
    },
}

/// The K of `auto/N`.
const AUTO: &str = "auto";

impl ShardArg {
    /// Parses `K/N` (as [`Shard::parse`]) or `auto/N` with 1 ≤ N.
    pub fn parse(s: &str) -> Result<ShardArg, String> {
        let Some((AUTO, n)) = s.split_once('/').map(|(k, n)| (k.trim(), n)) else {
            return Shard::parse(s).map(ShardArg::Fixed);
        };
        match n.trim().parse::<u64>() {
            Ok(0) => Err("N must be at least 1 in auto/N".into()),
            Ok(count) => Ok(ShardArg::Auto { count }),
            Err(_) => Err(format!(
                "'{n}' is not a number (expected auto/N, e.g. auto/4)"
            )),
        }
    }

    /// The shard to run: `K/N` as given; for `auto/N`, K is the task index read through `env` (a
    /// variable lookup), which must be below N.
    pub fn resolve(self, env: impl Fn(&str) -> Option<String>) -> Result<Shard, String> {
        let count = match self {
            ShardArg::Fixed(shard) => return Ok(shard),
            ShardArg::Auto { count } => count,
        };
        let task = task_index(env).map_err(|e| format!("--shard {self}: {e}"))?;
        if task.index >= count {
            return Err(format!(
                "--shard {self}: {task} is not below {count} (run {count} tasks, indices 0 to {})",
                count - 1
            ));
        }
        log::info!("--shard {self}: shard {}/{count}, {task}", task.index);
        Ok(Shard {
            index: task.index,
            count,
        })
    }
}

impl fmt::Display for ShardArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardArg::Fixed(shard) => shard.fmt(f),
            ShardArg::Auto { count } => write!(f, "{AUTO}/{count}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_runs_from_a_up_to_b_minus_one() {
        let r = SeedRange::parse("3..7").unwrap();
        assert_eq!(r.seeds(None).collect::<Vec<_>>(), [3, 4, 5, 6]);
        assert_eq!(r.len(), 4);
        assert_eq!(r.to_string(), "3..7");
    }

    #[test]
    fn a_single_seed_is_a_range_of_one() {
        let r = SeedRange::parse("42").unwrap();
        assert_eq!(r, SeedRange { start: 42, end: 43 });
        assert_eq!(r.seeds(None).collect::<Vec<_>>(), [42]);
    }

    #[test]
    fn empty_backwards_and_malformed_ranges_are_refused() {
        for bad in [
            "5..3",
            "3..3",
            "..4",
            "1..",
            "a..b",
            "",
            "-1..2",
            "18446744073709551615",
        ] {
            assert!(SeedRange::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(SeedRange::parse("5..3")
            .unwrap_err()
            .contains("5..3 is empty"));
    }

    #[test]
    fn shards_need_k_below_n_and_n_at_least_one() {
        assert_eq!(Shard::parse("1/4"), Ok(Shard { index: 1, count: 4 }));
        assert_eq!(Shard::parse("0/1"), Ok(Shard { index: 0, count: 1 }));
        for bad in ["3/2", "2/2", "0/0", "1", "a/2", "1/b", "-1/2"] {
            assert!(Shard::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_shards_of_a_range_partition_it() {
        let r = SeedRange::parse("0..10").unwrap();
        let a: Vec<u64> = r.seeds(Some(Shard { index: 0, count: 3 })).collect();
        let b: Vec<u64> = r.seeds(Some(Shard { index: 1, count: 3 })).collect();
        let c: Vec<u64> = r.seeds(Some(Shard { index: 2, count: 3 })).collect();
        assert_eq!(a, [0, 3, 6, 9]);
        assert_eq!(b, [1, 4, 7]);
        assert_eq!(c, [2, 5, 8]);
    }

    #[test]
    fn a_shards_seeds_and_their_count_agree_with_filtering_every_seed() {
        for start in 0..12 {
            for end in start + 1..30 {
                let range = SeedRange { start, end };
                for count in 1..8 {
                    for index in 0..count {
                        let shard = Shard { index, count };
                        let filtered: Vec<u64> = (start..end).filter(|&s| shard.takes(s)).collect();
                        let seeds = range.seeds(Some(shard));
                        assert_eq!(seeds.len(), filtered.len() as u64, "{range} {shard}");
                        assert_eq!(shard.count_in(range), filtered.len() as u64);
                        assert_eq!(seeds.collect::<Vec<_>>(), filtered, "{range} {shard}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_u64_seed_is_a_range_whose_seeds_are_counted_and_reached_without_walking_it() {
        // Walking (or collecting) 2^64 - 1 seeds would never end; each line here is arithmetic.
        let all = SeedRange {
            start: 0,
            end: u64::MAX,
        };
        assert_eq!(all.seeds(None).len(), u64::MAX);
        let shard = Shard { index: 3, count: 7 };
        let mut seeds = all.seeds(Some(shard));
        // u64::MAX is 7 * (u64::MAX / 7) + 1: one seed of residue 0 past the last whole block.
        assert_eq!(seeds.len(), u64::MAX / 7);
        assert_eq!(seeds.by_ref().take(3).collect::<Vec<_>>(), [3, 10, 17]);
        let last = seeds.get(seeds.len() - 1).unwrap();
        assert!(shard.takes(last) && u64::MAX - last <= 7, "{last}");
        assert_eq!(seeds.get(seeds.len()), None);
        let huge = Shard {
            index: u64::MAX - 2,
            count: u64::MAX - 1,
        };
        assert_eq!(all.seeds(Some(huge)).collect::<Vec<_>>(), [u64::MAX - 2]);
        let top = SeedRange {
            start: u64::MAX - 3,
            end: u64::MAX,
        };
        let odd = Shard { index: 1, count: 2 };
        assert_eq!(top.seeds(Some(odd)).collect::<Vec<_>>(), [u64::MAX - 2]);
    }

    #[test]
    fn a_cursor_hands_each_seed_to_one_worker_and_stops_at_the_end() {
        let range = SeedRange {
            start: 5,
            end: 4005,
        };
        let cursor = SeedCursor::new(range.seeds(Some(Shard { index: 1, count: 3 })));
        assert_eq!(cursor.total(), 1333);
        let mut taken: Vec<u64> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| std::iter::from_fn(|| cursor.take()).collect::<Vec<_>>()))
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        taken.sort_unstable();
        assert_eq!(
            taken,
            range
                .seeds(Some(Shard { index: 1, count: 3 }))
                .collect::<Vec<_>>()
        );
        assert_eq!(cursor.take(), None);
        let all = SeedCursor::new(
            SeedRange {
                start: 0,
                end: u64::MAX,
            }
            .seeds(None),
        );
        assert_eq!([all.take(), all.take()], [Some(0), Some(1)]);
    }

    #[test]
    fn auto_takes_n_and_leaves_k_to_the_task_index() {
        assert_eq!(ShardArg::parse("auto/4"), Ok(ShardArg::Auto { count: 4 }));
        assert_eq!(
            ShardArg::parse("1/4"),
            Ok(ShardArg::Fixed(Shard { index: 1, count: 4 }))
        );
        assert_eq!(ShardArg::Auto { count: 4 }.to_string(), "auto/4");
        for bad in ["auto/0", "auto/", "auto/x", "auto", "AUTO/4", "3/2"] {
            assert!(ShardArg::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn auto_resolves_to_the_engines_index_below_n() {
        let auto = ShardArg::Auto { count: 4 };
        let seq = |v: &'static str| move |name: &str| (name == "PARALLEL_SEQ").then(|| v.into());
        assert_eq!(auto.resolve(seq("4")), Ok(Shard { index: 3, count: 4 }));
        let e = auto.resolve(seq("5")).unwrap_err();
        assert!(
            e.starts_with("--shard auto/4: task index 4 from PARALLEL_SEQ=5 - 1 is not below 4"),
            "{e}"
        );
        let e = auto.resolve(|_| None).unwrap_err();
        assert!(e.starts_with("--shard auto/4: no task index"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn a_fixed_shard_ignores_the_environment() {
        let fixed = ShardArg::Fixed(Shard { index: 1, count: 2 });
        let env = |_: &str| Some("7".to_string());
        assert_eq!(fixed.resolve(env), Ok(Shard { index: 1, count: 2 }));
    }
}
