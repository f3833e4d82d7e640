//! Checked, bounded reads of guest memory: the only way the walkers touch it.
//!
//! Guest memory is hostile input. Every read checks that the address is 8-aligned and inside guest
//! RAM (vm-memory returns an error, never panics, for the rest), and every step of a walk spends
//! one unit of a per-event budget, so no structure the guest lays out can make a check run forever.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher, RandomState};
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

/// Steps one event's walks may take in all. A sane guest needs far fewer: 65,530 VMAs in rmap,
/// a mem_map of a million frames and a few thousand page tables fit several times over.
/// Bytes in a page-table page.
const PAGE_BYTES: u64 = 4096;

pub(crate) const STEP_BUDGET: u64 = 1 << 22;

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
}

/// A view of guest memory for one event's walks, with its step budget.
pub(crate) struct GuestView<'a> {
    mem: &'a GuestMemoryMmap,
    /// Each region's first guest address and its memory, looked up once per view.
    regions: Vec<(u64, VolatileSlice<'a, ()>)>,
    steps_left: u64,
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
        }
    }

    /// Spends one step of the budget on `what` at `addr`.
    pub(crate) fn step(&mut self, what: &'static str, addr: u64) -> Result<(), WalkError> {
        self.steps_left = self
            .steps_left
            .checked_sub(1)
            .ok_or(WalkError::Budget { what, addr })?;
        Ok(())
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
