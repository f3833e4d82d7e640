//! Replay: seed an mm-core [`Mm`] from a maps snapshot, apply a trace, print the result — on the
//! host's simulated RAM ([`replay`]) or on any kernel and address space ([`Replayer`], which the
//! guest's `replay` scenario runs on real page tables).
//!
//! Addresses: mm-core's user space is `[USER_BASE, TASK_SIZE)` = [512 GiB, 128 TiB). A PIE program
//! on x86_64 (executable near `0x55..`, libraries and stack near `0x7f..`) already fits, so the
//! offset is 0 and addresses are used as they are. Otherwise every user address is shifted by one
//! fixed offset that moves the lowest mapping to `USER_BASE`, if the highest then still fits. A
//! non-PIE program (executable and heap from `0x400000`, libraries and stack near `0x7f..`) fits
//! neither way: its addresses below `USER_BASE` move up by `USER_BASE`, into `[USER_BASE,
//! 2 * USER_BASE)`, which such a layout leaves empty, and the rest stay (`seed::Shift`). The
//! output shifts back, so it always shows the original addresses. Mappings at or above `TASK_SIZE`
//! (`[vsyscall]`) are the kernel's: they are kept aside and printed as they were.
//!
//! Files: `-y` names a mapped file's path, not its inode, so every distinct (path, inode) of the
//! BEFORE snapshot is one mm-core file, and a path first seen in the trace takes its inode (and
//! device) from the `hints` snapshot, usually AFTER. The special mappings (`[vdso]`, `[vvar]`,
//! `[stack]`) are seeded as pseudo-files of their own, so that, as in Linux (`VM_SPECIAL`,
//! `VM_GROWSDOWN`), they never merge with their neighbours.
//!
//! Submodules: `seed` (snapshot → VMAs and files), `hidden` (the `vm_flags` maps does not show),
//! `madvise` and `mremap` (through mm-core's own, to Linux's results), `print` (VMAs → maps
//! lines).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use mm_core::addr::{PAGE_SHIFT, PAGE_SIZE, TASK_SIZE, USER_BASE};
use mm_core::mm::error::{EINVAL, ERRNO_NAMES};
use mm_core::mm::{Access, Errno, FilePtr, MapFlags, Mm, Prot, VmFlags};
use mm_core::paging::CountingTlb;
use mm_core::phys::SimRam;
use mm_core::{Kernel, PhysAddr, VirtAddr};

use crate::maps::MapsLine;
use crate::trace::{Call, Event, Outcome, Trace};

mod hidden;
mod madvise;
mod mremap;
mod print;
mod seed;
use seed::{choose_shift, would_merge, Shift};

/// Linux's `MAP_NORESERVE`.
const MAP_NORESERVE: u64 = 0x4000;
/// Linux's `MAP_STACK`.
const MAP_STACK: u64 = 0x2_0000;

/// Why a replay stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The BEFORE snapshot does not fit mm-core's user range, even shifted.
    #[error("the mappings {start:#x}..{end:#x} do not fit mm-core's user range, even shifted")]
    DoesNotFit {
        /// Lowest user address.
        start: u64,
        /// Highest user address.
        end: u64,
    },
    /// A BEFORE line could not be installed.
    #[error("seeding maps line {line}: {reason}")]
    Seed {
        /// 1-based index of the snapshot line.
        line: usize,
        /// What mm-core said.
        reason: String,
    },
    /// mm-core's result differs from what Linux returned.
    #[error("trace line {line}: {reason}")]
    Diverged {
        /// Trace line of the call.
        line: usize,
        /// How the results differ.
        reason: String,
    },
    /// mm-core's own checks failed after the replay (a bug in mm-core).
    #[error("validate_mm after the replay: {0}")]
    Invalid(String),
}

/// The outcome of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The final address space, in original addresses.
    pub maps: Vec<MapsLine>,
    /// Calls applied to mm-core.
    pub applied: usize,
    /// Calls not applied, or applied only in part, by reason.
    pub notes: BTreeMap<String, usize>,
    /// What was added to each address (for a non-PIE layout: to each below `USER_BASE`) to reach
    /// mm-core's range.
    pub offset: u64,
    /// Pages faulted in to build page tables ([`Options::touch`]; 0 otherwise).
    pub touched: usize,
}

/// How a replay runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Read-fault in the first and last page of every mapping the replay installs, so page tables
    /// are really built (and later freed) under it. Only pages whose fault cannot change a merge
    /// are touched: file pages, and anonymous pages of a VMA that already has an anon_vma (an
    /// anonymous fault gives a VMA its anon_vma, and VMAs with different anon_vmas never merge).
    pub touch: bool,
}

/// A file the replay knows: what to print for it.
struct FileInfo {
    path: String,
    inode: u64,
    dev: String,
}

/// One replay on a caller's kernel and address space: [`Replayer::run`] seeds and applies,
/// [`Replayer::finish`] tears the address space and its files down. The host's [`replay`] runs one
/// on simulated RAM; the guest's `replay` scenario runs one on real page tables.
pub struct Replayer<'k, 'a> {
    k: &'k Kernel<'a>,
    mm: Mm,
    shift: Shift,
    files: Vec<(FilePtr, FileInfo)>,
    hints: &'k [MapsLine],
    applied: usize,
    notes: BTreeMap<String, usize>,
    options: Options,
    touched: usize,
}

/// Replays `trace` on an address space seeded from `before`; `hints` (usually the AFTER snapshot)
/// supplies inodes and devices of files first mapped during the trace. Runs on the host, through
/// mm-core over simulated RAM.
pub fn replay(
    before: &[MapsLine],
    trace: &Trace,
    hints: &[MapsLine],
) -> Result<Replayed, ReplayError> {
    // Frames for page tables, the one page each isolated seed line gets (seed.rs), and what the
    // trace's locking and populating calls fault in (up to 32 MiB; beyond, such a call fails in
    // mm-core with EAGAIN or leaves pages out, and the compare says so).
    let populated: u64 = trace
        .events
        .iter()
        .map(|ev| match ev.call {
            Call::Mlock { len, .. } => len,
            Call::Mmap { len, flags, .. }
                if flags & (MapFlags::POPULATE.0 | MapFlags::LOCKED.0) != 0 =>
            {
                len
            }
            _ => 0,
        })
        .fold(0u64, u64::saturating_add);
    let extra = (populated >> PAGE_SHIFT).min(1 << 13) as usize;
    let ram = SimRam::new(64 + 8 * before.len() + extra);
    let tlb = CountingTlb::default();
    let k = Kernel::new(&ram, &ram, ram.mem_map(), &tlb);
    let mm = Mm::new(&k, None).map_err(|e| ReplayError::Seed {
        line: 0,
        reason: e.to_string(),
    })?;
    let mut r = Replayer::new(&k, mm, hints, Options::default());
    let result = r.run(before, trace);
    r.finish();
    result
}

impl<'k, 'a> Replayer<'k, 'a> {
    /// A replay into `mm` (empty, made on `k`); `hints` as for [`replay`].
    pub fn new(k: &'k Kernel<'a>, mm: Mm, hints: &'k [MapsLine], options: Options) -> Self {
        Replayer {
            k,
            mm,
            shift: Shift::NONE,
            files: Vec::new(),
            hints,
            applied: 0,
            notes: BTreeMap::new(),
            options,
            touched: 0,
        }
    }

    /// The address space's page-table root (for a caller that loads it while the replay runs).
    pub fn pgd(&self) -> PhysAddr {
        self.mm.raw().pgd()
    }

    /// Seeds the address space from `before`, applies `trace`, and returns the final address
    /// space; mm-core's own checks (`validate_mm`) must pass too. Call once.
    pub fn run(&mut self, before: &[MapsLine], trace: &Trace) -> Result<Replayed, ReplayError> {
        let (user, kernel): (Vec<&MapsLine>, Vec<&MapsLine>) =
            before.iter().partition(|l| l.end <= TASK_SIZE.0);
        self.shift = choose_shift(&user)?;
        self.seed_and_apply(&user, trace)?;
        let maps = self.print(&kernel);
        let violations = self.mm.validate_mm(self.k);
        if !violations.is_empty() {
            return Err(ReplayError::Invalid(format!("{violations:?}")));
        }
        Ok(Replayed {
            maps,
            applied: self.applied,
            notes: self.notes.clone(),
            offset: self.shift.low,
            touched: self.touched,
        })
    }

    /// Tears the address space down (`exit_mmap`), then drops the files.
    pub fn finish(self) {
        self.mm.destroy(self.k);
        for (f, _) in self.files {
            mm_core::mm::fput(self.k, f);
        }
    }
}

/// What the replay passes on of strace's `MAP_*` bits: all that changes the layout mm-core
/// models. `MAP_POPULATE` stays where its faults give the VMA an anon_vma in Linux too (private
/// writable memory) or none on either side (file pages); on read-only private anonymous memory
/// Linux maps its zero page and mm-core a page of its own, with an anon_vma, so there it goes.
fn map_flags(flags: u64, prot: u64) -> MapFlags {
    let mut kept = MapFlags::SHARED.0
        | MapFlags::PRIVATE.0
        | MapFlags::ANONYMOUS.0
        | MapFlags::LOCKED.0
        | MapFlags::GROWSDOWN.0
        | MapFlags::NORESERVE.0
        | MapFlags::STACK.0
        | MapFlags::POPULATE.0
        | MapFlags::NONBLOCK.0;
    let private_anon = flags & MapFlags::ANONYMOUS.0 != 0 && flags & MapFlags::TYPE.0 == 2;
    if private_anon && prot & Prot::WRITE.0 == 0 {
        kept &= !MapFlags::POPULATE.0;
    }
    MapFlags(flags & kept)
}

impl Replayer<'_, '_> {
    fn note(&mut self, why: &str) {
        *self.notes.entry(why.to_string()).or_default() += 1;
    }

    fn seed_and_apply(&mut self, user: &[&MapsLine], trace: &Trace) -> Result<(), ReplayError> {
        for (i, l) in user.iter().enumerate() {
            let isolate = (i > 0 && would_merge(user[i - 1], l))
                || user.get(i + 1).is_some_and(|n| would_merge(l, n));
            self.seed(l, isolate).map_err(|reason| ReplayError::Seed {
                line: i + 1,
                reason,
            })?;
        }
        let seeded = self.mm.vmas().count();
        if seeded != user.len() {
            return Err(ReplayError::Seed {
                line: 0,
                reason: format!(
                    "{} lines became {seeded} VMAs: mm-core merged neighbours Linux kept apart",
                    user.len()
                ),
            });
        }
        for ev in &trace.events {
            self.apply(ev).map_err(|reason| ReplayError::Diverged {
                line: ev.line,
                reason,
            })?;
        }
        Ok(())
    }

    /// Applies one call; `Err` says how mm-core's result differs from Linux's.
    fn apply(&mut self, ev: &Event) -> Result<(), String> {
        let shift = self.shift;
        let k = self.k;
        let linux = match &ev.outcome {
            Outcome::Ok(v) => Ok(*v),
            Outcome::Err(e) => Err(e.clone()),
        };
        match &ev.call {
            Call::Mmap {
                addr,
                len,
                prot,
                flags,
                fd,
                offset,
            } => {
                let mut mf = map_flags(*flags, *prot);
                let file = if mf.contains(MapFlags::ANONYMOUS) {
                    None
                } else {
                    let path = fd.path.as_deref().ok_or(
                        "a file mapping whose descriptor strace did not name (record with -y)",
                    )?;
                    Some(self.file_by_path(path)?)
                };
                if *flags & 0x10_0000 != 0 {
                    // MAP_FIXED_NOREPLACE fails rather than replace: checked below like a hint.
                    mf = MapFlags(mf.0 & !MapFlags::FIXED.0);
                }
                let prot = Prot(prot & 7);
                let Ok(ret) = linux else {
                    if flags & MapFlags::FIXED.0 != 0 {
                        self.note("failed MAP_FIXED mmap not replayed (it would unmap first)");
                        return Ok(());
                    }
                    let got = self.mm.mmap(
                        k,
                        VirtAddr(shift.to_mm(*addr)),
                        *len,
                        prot,
                        mf,
                        file,
                        offset >> PAGE_SHIFT,
                    );
                    match got {
                        Ok(at) => {
                            self.mm.munmap(k, at, *len).map_err(|e| e.to_string())?;
                            self.note("failed mmap succeeded in mm-core (undone)");
                        }
                        Err(e) => {
                            expect_same("mmap", Err(failure(e)), &ev.outcome)?;
                            self.applied += 1;
                        }
                    }
                    return Ok(());
                };
                let at = VirtAddr(shift.to_mm(ret));
                if *flags & MapFlags::FIXED.0 == 0 {
                    let end = at.0.saturating_add(*len);
                    let taken = at >= TASK_SIZE
                        || self
                            .mm
                            .find_vma(at)
                            .is_some_and(|v| v.get().start().0 < end);
                    if taken {
                        return Err(format!(
                            "Linux placed mmap at {ret:#x}, where mm-core has a mapping"
                        ));
                    }
                }
                // Shared anonymous memory is a shmem file of its own, from offset 0.
                let (file, mf, pgoff) = if mf.contains(MapFlags::SHARED) && file.is_none() {
                    let shmem = self.shmem_file()?;
                    (Some(shmem), MapFlags(mf.0 & !MapFlags::ANONYMOUS.0), 0)
                } else {
                    (file, mf, offset >> PAGE_SHIFT)
                };
                let got = self
                    .mm
                    .mmap(k, at, *len, prot, mf.union(MapFlags::FIXED), file, pgoff)
                    .map_err(|e| format!("mmap at {ret:#x} failed in mm-core: {e}"))?;
                if got != at {
                    return Err(format!(
                        "mmap returned {:#x}, Linux {ret:#x}",
                        shift.to_linux(got.0)
                    ));
                }
                let shared = mf.contains(MapFlags::SHARED) && file.is_some();
                let (noreserve, stack) = (flags & MAP_NORESERVE != 0, flags & MAP_STACK != 0);
                let bits = Self::mmap_hidden(shared, prot, noreserve, stack);
                let end = page_end(at, *len);
                if bits != 0 {
                    self.add_hidden(at, end, bits);
                }
                self.touch(at, end);
            }
            Call::Munmap { addr, len } => {
                let got = self.mm.munmap(k, VirtAddr(shift.to_mm(*addr)), *len);
                expect_same("munmap", got.map_err(failure), &ev.outcome)?;
            }
            Call::Mprotect { addr, len, prot } => {
                let got = self.mprotect(*addr, *len, *prot, &ev.outcome);
                expect_same("mprotect", got, &ev.outcome)?;
            }
            Call::Brk { addr } => return self.brk(*addr, linux),
            Call::Mremap { .. } => return self.mremap(&ev.call, linux),
            Call::Madvise { addr, len, advice } => {
                return self.madvise(*addr, *len, advice, &ev.outcome);
            }
            Call::Mlock { addr, len, flags } => {
                let got = self.mm.mlock(k, VirtAddr(shift.to_mm(*addr)), *len, *flags);
                expect_same("mlock", got.map_err(failure), &ev.outcome)?;
            }
            Call::Munlock { addr, len } => {
                let got = self.mm.munlock(k, VirtAddr(shift.to_mm(*addr)), *len);
                expect_same("munlock", got.map_err(failure), &ev.outcome)?;
            }
            Call::Mlockall { flags } => {
                let got = self.mm.mlockall(k, *flags);
                expect_same("mlockall", got.map_err(failure), &ev.outcome)?;
            }
            Call::Munlockall => {
                let got = self.mm.munlockall(k);
                expect_same("munlockall", got.map_err(failure), &ev.outcome)?;
            }
            Call::PkeyMprotect {
                addr,
                len,
                prot,
                pkey,
            } => {
                // This machine's CPUs have no protection keys: Linux refuses every key but -1,
                // which is plain mprotect.
                let got = if *pkey == -1 || *pkey == u32::MAX as i64 {
                    self.mprotect(*addr, *len, *prot, &ev.outcome)
                } else {
                    Err((EINVAL, String::from("no protection keys")))
                };
                expect_same("pkey_mprotect", got, &ev.outcome)?;
            }
            Call::Msync { addr, len, flags } => {
                let got = self.mm.msync(k, VirtAddr(shift.to_mm(*addr)), *len, *flags);
                expect_same("msync", got.map_err(failure), &ev.outcome)?;
            }
        }
        self.applied += 1;
        Ok(())
    }

    /// `mprotect` through mm-core's. A trace does not say which files were opened read-only; an
    /// `EACCES` from Linux for adding `PROT_WRITE` says a shared mapping in the range was of
    /// one, so every shared file mapping there that is not writable now is made one of a
    /// read-only file first (no `VM_MAYWRITE`), as Linux's mmap made it.
    fn mprotect(&mut self, addr: u64, len: u64, prot: u64, linux: &Outcome) -> Result<(), Failure> {
        let start = VirtAddr(self.shift.to_mm(addr));
        let refused = matches!(linux, Outcome::Err(e) if e == "EACCES");
        if refused && prot & Prot::WRITE.0 != 0 {
            for (s, _, flags) in self.pieces(start, page_end(start, len)) {
                let shared = flags & (VmFlags::SHARED.0 | VmFlags::MAYSHARE.0) != 0;
                let Some(vma) = self.mm.vma_at(s) else {
                    continue;
                };
                let v = vma.get();
                if shared && v.file().is_some() && flags & VmFlags::WRITE.0 == 0 {
                    let ro =
                        (flags & !(VmFlags::MAYWRITE.0 | VmFlags::SHARED.0)) | VmFlags::MAYSHARE.0;
                    v.vm_flags.set(ro);
                }
            }
        }
        self.mm
            .mprotect(self.k, start, len, Prot(prot))
            .map_err(failure)
    }

    fn brk(&mut self, addr: u64, linux: Result<u64, String>) -> Result<(), String> {
        let shift = self.shift;
        let Ok(ret) = linux else {
            self.note("failed brk (brk reports failure by its result, not an errno)");
            return Ok(());
        };
        let raw = self.mm.raw();
        if raw.start_brk.get() < USER_BASE.0 {
            // No heap in the snapshot: the first answer tells where it starts.
            self.mm.set_brk_base(VirtAddr(shift.to_mm(ret)));
        }
        if addr == 0 || addr != ret {
            // A query, or a refused move: Linux answered the current break.
            if self.mm.raw().brk.get() != shift.to_mm(ret) {
                self.note("brk resynchronised to the break Linux reported");
                self.mm.raw().brk.set(shift.to_mm(ret));
            }
            if addr == 0 {
                self.applied += 1;
            } else {
                self.note("brk refused by Linux not replayed");
            }
            return Ok(());
        }
        let old = VirtAddr(self.mm.raw().brk.get());
        let new = self
            .mm
            .brk(self.k, VirtAddr(shift.to_mm(addr)))
            .map_err(|e| format!("brk({addr:#x}) failed in mm-core: {e}"))?;
        self.brk_hidden(old, new);
        self.touch(page_end(old, 0), page_end(new, 0));
        self.applied += 1;
        Ok(())
    }
}

impl Replayer<'_, '_> {
    /// With [`Options::touch`], read-faults the first and the last page of `[start, end)` where
    /// that cannot change a merge (see [`Options::touch`]).
    fn touch(&mut self, start: VirtAddr, end: VirtAddr) {
        if !self.options.touch || end <= start || end > TASK_SIZE {
            return;
        }
        let last = VirtAddr((end.0 - 1) & !(PAGE_SIZE - 1));
        for at in [start, last] {
            let Some(vma) = self.mm.vma_at(at) else {
                continue;
            };
            let v = vma.get();
            let backed = v.file().is_some() || v.anon().is_some();
            if !backed || !v.flags().contains(VmFlags::READ) {
                continue;
            }
            if self.mm.handle_mm_fault(self.k, at, Access::Read).is_ok() {
                self.touched += 1;
            }
            if last == start {
                break;
            }
        }
    }
}

/// `start + len` rounded up to a page, saturating at the top of the address space (hostile
/// traces carry any numbers).
fn page_end(start: VirtAddr, len: u64) -> VirtAddr {
    VirtAddr(start.0.saturating_add(len).saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1))
}

/// An mm-core failure: its errno and its message.
type Failure = (i32, String);

/// `e` as a [`Failure`].
fn failure<E: Errno>(e: E) -> Failure {
    (e.errno(), e.to_string())
}

/// Linux's and mm-core's outcomes agree: both succeeded, or both failed with the same errno (when
/// strace named one mm-core knows).
fn expect_same(what: &str, got: Result<(), Failure>, linux: &Outcome) -> Result<(), String> {
    match (got, linux) {
        (Ok(()), Outcome::Ok(_)) => Ok(()),
        (Ok(()), Outcome::Err(name)) => Err(format!(
            "{what} failed in Linux ({name}) but succeeded in mm-core"
        )),
        (Err((_, e)), Outcome::Ok(_)) => Err(format!(
            "{what} succeeded in Linux but failed in mm-core: {e}"
        )),
        (Err((errno, e)), Outcome::Err(name)) => {
            let linux = ERRNO_NAMES.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            match linux {
                Some(l) if l != errno => {
                    let ours = ERRNO_NAMES
                        .iter()
                        .find(|(_, v)| *v == errno)
                        .map_or("an errno of its own", |(n, _)| n);
                    Err(format!(
                        "{what} failed with {name} in Linux, {ours} in mm-core: {e}"
                    ))
                }
                _ => Ok(()),
            }
        }
    }
}
