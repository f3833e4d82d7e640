//! Checked, bounded reads of guest memory: the only way the walkers touch it.
//!
//! Guest memory is hostile input. Every read checks that the address is 8-aligned and inside guest
//! RAM (vm-memory returns an error, never panics, for the rest), and every step of a walk spends
//! one unit of a per-event budget, so no structure the guest lays out can make a check run forever.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use thiserror::Error;
use vm_memory::{
    ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    VolatileMemory, VolatileSlice,
};

/// A set of guest addresses, hashed by one multiply with a per-process random key: SipHash would
/// cost more than the walk step it guards, and the random key keeps a guest from choosing
/// addresses that collide.
pub(crate) type AddrSet = HashSet<u64, AddrHashState>;

/// Builds [`AddrHasher`]s with the process's key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AddrHashState(u64);

impl Default for AddrHashState {
    fn default() -> Self {
        static KEY: OnceLock<u64> = OnceLock::new();
        Self(*KEY.get_or_init(|| RandomState::new().hash_one(0x9E37_79B9_7F4A_7C15u64) | 1))
    }
}

impl BuildHasher for AddrHashState {
    type Hasher = AddrHasher;
    fn build_hasher(&self) -> AddrHasher {
        AddrHasher {
            key: self.0,
            state: 0,
        }
    }
}

/// Multiply-rotate hashing of `u64` keys.
pub(crate) struct AddrHasher {
    key: u64,
    state: u64,
}

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.state
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.state = (self.state ^ v).wrapping_mul(self.key).rotate_left(26);
    }
}

/// Bytes in a page-table page.
const PAGE_BYTES: u64 = 4096;

/// Steps one event's walks may take in all; it also bounds what a walk collects (the sets of
/// structures seen, ~16 MiB at most). A sane guest needs far fewer: the most any event took is
/// the sum of the VMAs and tables it met, ~1,100 steps at 1,000 VMAs and ~8,100 at 8,000 in
/// probe-bench (the report's `max_steps`), so 65,530 VMAs fit about 15 times over.
pub(crate) const STEP_BUDGET: u64 = 1 << 20;

/// Walk errors one event keeps; later ones are counted (see [`WalkErrors`]).
pub(crate) const MAX_EVENT_ERRORS: usize = 32;

/// How many steps pass between two looks at the run's stop flag.
const STOP_POLL: u64 = 1024;

/// Why a guest structure could not be walked; each names the structure and its address.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub(crate) enum WalkError {
    /// A link or field pointed outside guest RAM or was misaligned.
    #[error("{what} {addr:#x}: not an 8-aligned address inside guest RAM")]
    BadAddress {
        /// The structure the address was meant to hold.
        what: &'static str,
        /// The address.
        addr: u64,
    },
    /// A structure was reached twice.
    #[error("{what} {addr:#x}: reached twice, its links form a cycle")]
    Cycle {
        /// The structure.
        what: &'static str,
        /// Its address.
        addr: u64,
    },
    /// A back link disagreed with the way the walk came (`next->prev`, `parent`, owner).
    #[error("{what} {addr:#x}: {link} is {found:#x}, expected {expected:#x}")]
    BrokenLink {
        /// The structure.
        what: &'static str,
        /// Its address.
        addr: u64,
        /// The field.
        link: &'static str,
        /// What it holds.
        found: u64,
        /// What the walk implies.
        expected: u64,
    },
    /// A count or field is impossible.
    #[error("{what} {addr:#x}: {detail}")]
    Insane {
        /// The structure.
        what: &'static str,
        /// Its address.
        addr: u64,
        /// What is wrong.
        detail: String,
    },
    /// The event's step budget ran out.
    #[error("{what} {addr:#x}: walk stopped, the budget of {STEP_BUDGET} steps is spent")]
    Budget {
        /// The structure the walk was at.
        what: &'static str,
        /// Its address.
        addr: u64,
    },
    /// The run is stopping (the watchdog fired, or the outcome is known): the walk gave up.
    #[error("{what} {addr:#x}: walk cut short, the run is stopping")]
    Stopped {
        /// The structure the walk was at.
        what: &'static str,
        /// Its address.
        addr: u64,
    },
}

impl WalkError {
    /// Whether the walk ended because it may take no more steps (budget spent, run stopping):
    /// every later step of the same event fails the same way.
    fn ends_walk(&self) -> bool {
        matches!(self, WalkError::Budget { .. } | WalkError::Stopped { .. })
    }
}

/// The walk errors of one event, bounded whatever the guest laid out: the first
/// [`MAX_EVENT_ERRORS`] kept, the rest counted, and the end of the walk (budget spent, run
/// stopping) kept apart and told once, first.
#[derive(Debug, Default)]
pub(crate) struct WalkErrors {
    ended: Option<WalkError>,
    kept: Vec<WalkError>,
    more: u64,
}

impl WalkErrors {
    /// Records `e`.
    pub(crate) fn push(&mut self, e: WalkError) {
        if e.ends_walk() {
            self.ended.get_or_insert(e);
        } else if self.kept.len() < MAX_EVENT_ERRORS {
            self.kept.push(e);
        } else {
            self.more += 1;
        }
    }

    /// Records every error of `other`.
    pub(crate) fn append(&mut self, other: &mut WalkErrors) {
        if let Some(e) = other.ended.take() {
            self.push(e);
        }
        for e in other.kept.drain(..) {
            self.push(e);
        }
        self.more += std::mem::take(&mut other.more);
    }

    /// Whether nothing went wrong.
    pub(crate) fn is_empty(&self) -> bool {
        self.ended.is_none() && self.kept.is_empty() && self.more == 0
    }

    /// One line for the end of the walk, one per kept error, then one counting the rest.
    pub(crate) fn into_lines(self) -> impl Iterator<Item = String> {
        let more = (self.more > 0).then(|| {
            format!(
                "{} more walk errors in the same event not listed",
                self.more
            )
        });
        let ended = self.ended.map(|e| e.to_string());
        ended
            .into_iter()
            .chain(self.kept.into_iter().map(|e| e.to_string()))
            .chain(more)
    }
}

/// A view of guest memory for one event's walks, with its step budget.
pub(crate) struct GuestView<'a> {
    mem: &'a GuestMemoryMmap,
    /// Each region's first guest address and its memory, looked up once per view.
    regions: Vec<(u64, VolatileSlice<'a, ()>)>,
    steps_left: u64,
    /// The run's stop flag: once set, the next poll ends the walk.
    stop: Option<&'a AtomicBool>,
    /// The poll saw the flag set: every later step fails.
    stopped: bool,
}

impl<'a> GuestView<'a> {
    /// A view with a fresh budget of [`STEP_BUDGET`] steps.
    pub(crate) fn new(mem: &'a GuestMemoryMmap) -> Self {
        let regions = mem
            .iter()
            .filter_map(|r| Some((r.start_addr().0, r.as_volatile_slice().ok()?)))
            .collect();
        Self {
            mem,
            regions,
            steps_left: STEP_BUDGET,
            stop: None,
            stopped: false,
        }
    }

    /// The same view, giving up its walks soon after `stop` is set (the run's watchdog).
    pub(crate) fn stopping_on(self, stop: &'a AtomicBool) -> Self {
        Self {
            stop: Some(stop),
            ..self
        }
    }

    /// Spends one step of the budget on `what` at `addr`.
    pub(crate) fn step(&mut self, what: &'static str, addr: u64) -> Result<(), WalkError> {
        if self.stopped {
            return Err(WalkError::Stopped { what, addr });
        }
        self.steps_left = self
            .steps_left
            .checked_sub(1)
            .ok_or(WalkError::Budget { what, addr })?;
        if self.steps_left.is_multiple_of(STOP_POLL)
            && self.stop.is_some_and(|s| s.load(Ordering::Relaxed))
        {
            self.stopped = true;
            return Err(WalkError::Stopped { what, addr });
        }
        Ok(())
    }

    /// Whether the walk may take no more steps (budget spent, run stopping): loops over what a
    /// walk collected stop here.
    pub(crate) fn spent(&self) -> bool {
        self.steps_left == 0 || self.stopped
    }

    /// Steps spent so far.
    pub(crate) fn steps_spent(&self) -> u64 {
        STEP_BUDGET - self.steps_left
    }

    /// Frames of guest RAM (an upper bound on any sane per-frame count).
    pub(crate) fn ram_frames(&self) -> u64 {
        self.mem.last_addr().0 / mm_core::addr::PAGE_SIZE + 1
    }

    /// Alignment and overflow; vm-memory itself refuses ranges outside guest RAM.
    fn check(&self, what: &'static str, addr: u64, len: u64) -> Result<(), WalkError> {
        if addr.is_multiple_of(8) && addr.checked_add(len).is_some() {
            Ok(())
        } else {
            Err(WalkError::BadAddress { what, addr })
        }
    }

    /// The `N` words at `addr` (a structure `what`).
    pub(crate) fn words<const N: usize>(
        &self,
        what: &'static str,
        addr: u64,
    ) -> Result<[u64; N], WalkError>
    where
        [u64; N]: ByteValued,
    {
        self.check(what, addr, (N * 8) as u64)?;
        // The fast path: one region holds the whole structure.
        for (start, slice) in &self.regions {
            if let Some(off) = addr.checked_sub(*start) {
                if let Ok(r) = slice.get_ref::<[u64; N]>(off as usize) {
                    return Ok(r.load());
                }
            }
        }
        self.mem
            .read_obj::<[u64; N]>(GuestAddress(addr))
            .map_err(|_| WalkError::BadAddress { what, addr })
    }

    /// The word at `addr`.
    pub(crate) fn word(&self, what: &'static str, addr: u64) -> Result<u64, WalkError> {
        self.words::<1>(what, addr).map(|[w]| w)
    }

    /// The bytes at `addr` into `buf` (`addr` 8-aligned).
    pub(crate) fn bytes(
        &self,
        what: &'static str,
        addr: u64,
        buf: &mut [u8],
    ) -> Result<(), WalkError> {
        self.check(what, addr, buf.len() as u64)?;
        self.mem
            .read_slice(buf, GuestAddress(addr))
            .map_err(|_| WalkError::BadAddress { what, addr })
    }

    /// The `len` bytes at `addr` (a structure `what`) as one slice of a region, after the checks
    /// every access makes: the fast path of every multi-word access.
    fn slice(
        &self,
        what: &'static str,
        addr: u64,
        len: u64,
    ) -> Result<VolatileSlice<'a, ()>, WalkError> {
        self.check(what, addr, len)?;
        self.regions
            .iter()
            .find_map(|(start, slice)| {
                let off = addr.checked_sub(*start)?;
                slice.subslice(off as usize, len as usize).ok()
            })
            .ok_or(WalkError::BadAddress { what, addr })
    }

    /// The words at `addr` into `buf` (`addr` 8-aligned), eight bytes at a time: what a large
    /// read (the whole mem_map) needs to be fast.
    pub(crate) fn read_words(
        &self,
        what: &'static str,
        addr: u64,
        buf: &mut [u64],
    ) -> Result<(), WalkError> {
        self.slice(what, addr, buf.len() as u64 * 8)?.copy_to(buf);
        Ok(())
    }

    /// Calls `f` with each of the 512 entries of the page table at `frame` (index, value), read in
    /// place: no copy of the table, which matters where every cache line is cold (a check right
    /// after the guest ran).
    pub(crate) fn for_each_entry(
        &self,
        frame: u64,
        mut f: impl FnMut(usize, u64),
    ) -> Result<(), WalkError> {
        let table = self.slice("page table", frame, PAGE_BYTES)?;
        for i in 0..512 {
            let entry = table
                .get_ref::<u64>(i * 8)
                .map_err(|_| WalkError::BadAddress {
                    what: "page table",
                    addr: frame,
                })?;
            f(i, entry.load());
        }
        Ok(())
    }

    /// The 512 entries of the page table at `frame`.
    pub(crate) fn table(&self, frame: u64) -> Result<[u64; 512], WalkError> {
        let mut entries = [0u64; 512];
        self.read_words("page table", frame, &mut entries)?;
        Ok(entries)
    }

    /// Writes `words` at `addr` (8-aligned), eight bytes at a time.
    pub(crate) fn write_words(
        &self,
        what: &'static str,
        addr: u64,
        words: &[u64],
    ) -> Result<(), WalkError> {
        self.slice(what, addr, words.len() as u64 * 8)?
            .copy_from(words);
        Ok(())
    }
}
