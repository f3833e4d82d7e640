//! The seeded generator: each call is drawn with the region's current maps in view (mm-core's,
//! which equal Linux's up to the first divergence), so its addresses fall on and around VMA
//! boundaries as often as anywhere.

use mm_core::rng::Rng;

use super::obs::Line;
use super::op::{Fd, Op};
use super::{FILE_PAGES, REGION_END, REGION_PAGES, REGION_START};

const PAGE: u64 = 4096;

/// Linux's `MAP_*`, `MADV_*`, `MREMAP_*` and `MS_*` values the generator draws from.
pub mod linux {
    /// `MAP_SHARED`.
    pub const MAP_SHARED: u64 = 0x1;
    /// `MAP_PRIVATE`.
    pub const MAP_PRIVATE: u64 = 0x2;
    /// `MAP_SHARED_VALIDATE`.
    pub const MAP_SHARED_VALIDATE: u64 = 0x3;
    /// `MAP_FIXED`.
    pub const MAP_FIXED: u64 = 0x10;
    /// `MAP_ANONYMOUS`.
    pub const MAP_ANONYMOUS: u64 = 0x20;
    /// `MAP_GROWSDOWN`.
    pub const MAP_GROWSDOWN: u64 = 0x100;
    /// `MAP_LOCKED`.
    pub const MAP_LOCKED: u64 = 0x2000;
    /// `MAP_NORESERVE`.
    pub const MAP_NORESERVE: u64 = 0x4000;
    /// `MAP_POPULATE`.
    pub const MAP_POPULATE: u64 = 0x8000;
    /// `MAP_STACK`.
    pub const MAP_STACK: u64 = 0x2_0000;
    /// `MAP_FIXED_NOREPLACE`.
    pub const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
    /// `MREMAP_MAYMOVE`.
    pub const MREMAP_MAYMOVE: u64 = 1;
    /// `MREMAP_FIXED`.
    pub const MREMAP_FIXED: u64 = 2;
    /// `MREMAP_DONTUNMAP`.
    pub const MREMAP_DONTUNMAP: u64 = 4;
    /// `MLOCK_ONFAULT`.
    pub const MLOCK_ONFAULT: u64 = 1;
    /// `MS_ASYNC`.
    pub const MS_ASYNC: u64 = 1;
    /// `MS_INVALIDATE`.
    pub const MS_INVALIDATE: u64 = 2;
    /// `MS_SYNC`.
    pub const MS_SYNC: u64 = 4;
    /// The advice values drawn: every one this kernel accepts that does not depend on swap,
    /// KSM, hugetlb or privileges (see docs/difftest.md), plus a few it refuses.
    pub const ADVICE: [u64; 19] = [
        0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22,
    ];
}
use linux::*;

/// Which call classes a sequence draws.
#[derive(Clone, Copy, Debug)]
pub struct Classes {
    /// `mlock2` / `munlock`.
    pub lock: bool,
    /// `MAP_GROWSDOWN`.
    pub growsdown: bool,
    /// `fork` and the child's exit (off by default: on, every seed draws a different
    /// sequence).
    pub fork: bool,
}

impl Default for Classes {
    fn default() -> Self {
        Classes {
            lock: true,
            growsdown: true,
            fork: false,
        }
    }
}

/// How deep a sequence's forks nest at most.
const MAX_FORK_DEPTH: u32 = 2;

/// Draws calls for one seed.
pub struct Gen {
    rng: Rng,
    classes: Classes,
    /// Children alive: forks not yet ended by an exit.
    depth: u32,
}

impl Gen {
    /// The generator of `seed`.
    pub fn new(seed: u64, classes: Classes) -> Gen {
        Gen {
            rng: Rng::new(seed),
            classes,
            depth: 0,
        }
    }

    fn pct(&mut self, p: u64) -> bool {
        self.rng.below(100) < p
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.rng.below(xs.len() as u64) as usize]
    }

    /// A page-aligned address: a VMA boundary of `maps` (moved by up to two pages) half the time,
    /// else any page of the region; now and then unaligned.
    fn addr(&mut self, maps: &[Line]) -> u64 {
        let mut a = if !maps.is_empty() && self.pct(55) {
            let l = &maps[self.rng.below(maps.len() as u64) as usize];
            let base = if self.pct(50) { l.start } else { l.end };
            let delta = self.rng.below(5) as i64 - 2;
            base.wrapping_add_signed(delta * PAGE as i64)
        } else {
            REGION_START + self.rng.below(REGION_PAGES) * PAGE
        };
        a = a.clamp(REGION_START, REGION_END - PAGE);
        if self.pct(3) {
            a += 1 + self.rng.below(PAGE - 1);
        }
        a
    }

    /// A length: mostly 1-16 pages, sometimes up to 48, now and then unaligned or 0.
    fn len(&mut self) -> u64 {
        let pages = if self.pct(80) {
            1 + self.rng.below(16)
        } else {
            1 + self.rng.below(48)
        };
        match self.rng.below(100) {
            0..=1 => 0,
            2..=5 => pages * PAGE - 1 - self.rng.below(PAGE - 1),
            _ => pages * PAGE,
        }
    }

    /// A length that keeps `[addr, addr + len)` inside the region.
    fn len_at(&mut self, addr: u64) -> u64 {
        self.len().min(REGION_END - (addr & !(PAGE - 1)))
    }

    fn prot(&mut self) -> u64 {
        self.pick(&[0, 1, 1, 3, 3, 3, 5, 7, 2, 4])
    }

    /// The next call, with the region's current `maps` in view.
    pub fn next(&mut self, maps: &[Line]) -> Op {
        if self.classes.fork {
            match self.rng.below(100) {
                0..=2 if self.depth < MAX_FORK_DEPTH => {
                    self.depth += 1;
                    return Op::Fork;
                }
                3..=4 if self.depth > 0 => {
                    self.depth -= 1;
                    return Op::Exit;
                }
                _ => {}
            }
        }
        match self.rng.below(100) {
            0..=29 => self.mmap(maps),
            30..=41 => {
                let addr = self.addr(maps);
                Op::Munmap {
                    addr,
                    len: self.len_at(addr),
                }
            }
            42..=55 => {
                let addr = self.addr(maps);
                Op::Mprotect {
                    addr,
                    len: self.len_at(addr),
                    prot: self.prot(),
                }
            }
            56..=63 => self.mremap(maps),
            64..=72 => {
                let addr = self.addr(maps);
                Op::Madvise {
                    addr,
                    len: self.len_at(addr),
                    advice: self.pick(&ADVICE),
                }
            }
            73..=77 if self.classes.lock => {
                let addr = self.addr(maps);
                let len = self.len_at(addr);
                if self.pct(40) {
                    Op::Munlock { addr, len }
                } else {
                    let flags = if self.pct(30) { MLOCK_ONFAULT } else { 0 };
                    Op::Mlock { addr, len, flags }
                }
            }
            78..=80 => {
                let addr = self.addr(maps);
                Op::Msync {
                    addr,
                    len: self.len_at(addr),
                    flags: self.pick(&[MS_ASYNC, MS_SYNC, MS_INVALIDATE, MS_ASYNC | MS_SYNC, 0]),
                }
            }
            _ => Op::Touch {
                addr: self.addr(maps) & !(PAGE - 1),
                write: self.pct(50),
            },
        }
    }

    fn mmap(&mut self, maps: &[Line]) -> Op {
        let kind = self.rng.below(100);
        let anon = kind < 55;
        let shared = matches!(kind, 45..=54 | 80..=99);
        let mut flags = if shared {
            if self.pct(10) {
                MAP_SHARED_VALIDATE
            } else {
                MAP_SHARED
            }
        } else {
            MAP_PRIVATE
        };
        if anon {
            flags |= MAP_ANONYMOUS;
        }
        let mode = self.rng.below(100);
        let addr = match mode {
            0..=24 => 0,
            25..=44 => self.addr(maps),
            45..=84 => {
                flags |= MAP_FIXED;
                self.addr(maps)
            }
            _ => {
                flags |= MAP_FIXED_NOREPLACE;
                self.addr(maps)
            }
        };
        for (p, bit) in [
            (8, MAP_NORESERVE),
            (6, MAP_POPULATE),
            (4, MAP_LOCKED),
            (3, MAP_STACK),
        ] {
            if self.pct(p) {
                flags |= bit;
            }
        }
        if self.classes.growsdown && anon && self.pct(4) {
            flags |= MAP_GROWSDOWN;
        }
        let len = if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
            self.len_at(addr)
        } else {
            self.len()
        };
        let fd = (!anon).then(|| Fd {
            file: self.rng.below(FILE_PAGES.len() as u64) as usize,
            read_only: self.pct(15),
        });
        let off = if anon {
            0
        } else if self.pct(3) {
            0x800
        } else {
            self.rng.below(40) * PAGE
        };
        Op::Mmap {
            addr,
            len,
            prot: self.prot(),
            flags,
            fd,
            off,
        }
    }

    fn mremap(&mut self, maps: &[Line]) -> Op {
        let old = self.addr(maps);
        let old_len = self.len_at(old);
        let new_len = if self.pct(10) { 0 } else { self.len() };
        let (flags, new_addr) = match self.rng.below(100) {
            0..=29 => (0, 0),
            30..=64 => (MREMAP_MAYMOVE, 0),
            65..=89 => (MREMAP_MAYMOVE | MREMAP_FIXED, self.addr(maps)),
            90..=95 => (MREMAP_MAYMOVE | MREMAP_DONTUNMAP, 0),
            _ => (
                self.pick(&[MREMAP_FIXED, 8, MREMAP_DONTUNMAP]),
                self.addr(maps),
            ),
        };
        let new_len = if flags & MREMAP_FIXED != 0 {
            new_len.min(REGION_END.saturating_sub(new_addr & !(PAGE - 1)))
        } else {
            new_len
        };
        Op::Mremap {
            old,
            old_len,
            new_len,
            flags,
            new_addr,
        }
    }
}
