//! Seeding: a BEFORE snapshot becomes VMAs, files become mm-core file objects.

use alloc::format;
use alloc::string::{String, ToString};
use mm_core::addr::{PAGE_SHIFT, TASK_SIZE, USER_BASE};
use mm_core::mm::{iput, Access, AddressSpace, File, FilePtr, MapFlags, Prot};
use mm_core::VirtAddr;

use super::hidden::VM_ACCOUNT;
use super::{FileInfo, ReplayError, Replayer};
use crate::maps::MapsLine;

/// How maps names a shared anonymous mapping's shmem file.
pub(super) const SHMEM_NAME: &str = "/dev/zero (deleted)";

/// How original addresses become mm-core's (see the module doc): addresses below `split` get
/// `low` added, the others stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Shift {
    /// First original address that stays as it is.
    pub(super) split: u64,
    /// What is added below `split`.
    pub(super) low: u64,
}

impl Shift {
    /// Addresses used as they are.
    pub(super) const NONE: Shift = Shift {
        split: u64::MAX,
        low: 0,
    };

    /// mm-core's address for original address `a`.
    pub(super) fn to_mm(self, a: u64) -> u64 {
        if a < self.split {
            a.wrapping_add(self.low)
        } else {
            a
        }
    }

    /// The original address of mm-core's address `m` (the inverse of [`Shift::to_mm`]).
    pub(super) fn to_linux(self, m: u64) -> u64 {
        if m < self.split.saturating_add(self.low) {
            m.wrapping_sub(self.low)
        } else {
            m
        }
    }
}

/// The shift that puts every user mapping in `[USER_BASE, TASK_SIZE)` (see the module doc):
/// none, one offset for all, or — for a non-PIE program, low executable and heap, high libraries
/// and stack — `USER_BASE` added to the low part alone.
pub(super) fn choose_shift(user: &[&MapsLine]) -> Result<Shift, ReplayError> {
    let (Some(lo), Some(hi)) = (
        user.iter().map(|l| l.start).min(),
        user.iter().map(|l| l.end).max(),
    ) else {
        return Ok(Shift::NONE);
    };
    if lo >= USER_BASE.0 {
        return Ok(Shift::NONE);
    }
    let low = USER_BASE.0 - lo;
    if hi.checked_add(low).is_some_and(|e| e <= TASK_SIZE.0) {
        return Ok(Shift {
            split: u64::MAX,
            low,
        });
    }
    // Two parts: below USER_BASE moves up by USER_BASE into [USER_BASE, 2 * USER_BASE), which
    // must be free; the rest stays.
    let (base, top) = (USER_BASE.0, 2 * USER_BASE.0);
    let apart = user
        .iter()
        .all(|l| l.end <= base || (l.start >= top && l.end <= TASK_SIZE.0));
    if apart {
        Ok(Shift {
            split: base,
            low: base,
        })
    } else {
        Err(ReplayError::DoesNotFit { start: lo, end: hi })
    }
}

pub(super) fn prot_of(perms: [bool; 4]) -> Prot {
    let bit = |on: bool, p: Prot| if on { p.0 } else { 0 };
    Prot(bit(perms[0], Prot::READ) | bit(perms[1], Prot::WRITE) | bit(perms[2], Prot::EXEC))
}

/// Whether mm-core would merge `b` into `a` if both were mapped as they look.
pub(super) fn would_merge(a: &MapsLine, b: &MapsLine) -> bool {
    let backing = if a.is_anonymous() || b.is_anonymous() {
        a.is_anonymous() && b.is_anonymous()
    } else {
        a.path == b.path && a.inode == b.inode && a.offset + (a.end - a.start) == b.offset
    };
    a.end == b.start && a.perms == b.perms && backing
}

impl Replayer<'_, '_> {
    /// The file object for (path, inode), created on first use.
    pub(super) fn file(&mut self, path: &str, inode: u64, dev: &str) -> Result<FilePtr, String> {
        if let Some((f, _)) = self
            .files
            .iter()
            .find(|(_, i)| i.path == path && i.inode == inode)
        {
            return Ok(*f);
        }
        self.new_file(path, inode, dev)
    }

    /// The shmem file a shared anonymous mapping gets (`shmem_zero_setup`): a new one each time,
    /// named as maps names it; its inode is unknown until printing (`print.rs`).
    pub(super) fn shmem_file(&mut self) -> Result<FilePtr, String> {
        self.new_file(SHMEM_NAME, 0, "00:01")
    }

    /// A new file object for (path, inode).
    fn new_file(&mut self, path: &str, inode: u64, dev: &str) -> Result<FilePtr, String> {
        let mapping = AddressSpace::create(self.k, 1 << 36).map_err(|e| e.to_string())?;
        let file = File::open(self.k, mapping, None).map_err(|e| e.to_string());
        iput(self.k, mapping);
        let file = file?;
        let info = FileInfo {
            path: path.to_string(),
            inode,
            dev: dev.to_string(),
        };
        self.files.push((file, info));
        Ok(file)
    }

    /// The file a trace names by path: the snapshot's, else one with the hint's inode.
    pub(super) fn file_by_path(&mut self, path: &str) -> Result<FilePtr, String> {
        if let Some((f, _)) = self.files.iter().find(|(_, i)| i.path == path) {
            return Ok(*f);
        }
        let hint = self.hints.iter().find(|l| l.path == path);
        let (inode, dev) = hint.map_or((0, "00:00".to_string()), |l| (l.inode, l.dev.clone()));
        self.file(path, inode, &dev)
    }

    /// Installs one snapshot line. An `isolate`d line (one Linux kept apart from an equal-looking
    /// neighbour, for a reason maps does not show, such as `VM_ACCOUNT` or distinct anon_vmas) is
    /// mapped writable with a temporary permission its neighbours lack, written once so it gets an
    /// anon_vma of its own, then given its real permission: mm-core never merges VMAs with
    /// different anon_vmas.
    pub(super) fn seed(&mut self, l: &MapsLine, isolate: bool) -> Result<(), String> {
        /// A `vm_flags` bit Linux does not use, set on an isolated line only while it faults.
        const ISOLATING: u64 = 1 << 62;
        let pseudo = l.is_special() || l.path == "[stack]";
        let file = if l.is_anonymous() && !pseudo {
            None
        } else {
            Some(self.file(&l.path, l.inode, &l.dev)?)
        };
        let mut flags = MapFlags::FIXED.union(if l.perms[3] && file.is_some() {
            MapFlags::SHARED
        } else {
            MapFlags::PRIVATE
        });
        if file.is_none() {
            flags = flags.union(MapFlags::ANONYMOUS);
        }
        let at = VirtAddr(self.shift.to_mm(l.start));
        let prot = prot_of(l.perms);
        // Write-only and write+exec: permissions no real snapshot line next to this one has.
        let temp = if prot == Prot::WRITE {
            Prot(Prot::WRITE.0 | Prot::EXEC.0)
        } else {
            Prot::WRITE
        };
        let len = l.end - l.start;
        let first = if isolate { temp } else { prot };
        self.mm
            .mmap(self.k, at, len, first, flags, file, l.offset >> PAGE_SHIFT)
            .map_err(|e| e.to_string())?;
        if isolate {
            // A bit no neighbour has while the fault runs: mm-core, as Linux, reuses a
            // neighbour's anon_vma when the flags differ only in the access bits.
            let vma = self.mm.vma_at(at).ok_or("isolated line not mapped")?;
            let v = vma.get();
            v.vm_flags.set(v.vm_flags.get() | ISOLATING);
            let fault = self.mm.handle_mm_fault(self.k, at, Access::Write);
            v.vm_flags.set(v.vm_flags.get() & !ISOLATING);
            fault.map_err(|e| format!("isolating fault: {e}"))?;
            self.mm
                .mprotect(self.k, at, len, prot)
                .map_err(|e| e.to_string())?;
        }
        // The snapshot cannot say which VMAs Linux accounted; private writable ones almost always
        // are (the exceptions were mapped MAP_NORESERVE). Lines stay apart, so set it in place.
        if l.perms[1] && !l.perms[3] {
            if let Some(v) = self.mm.vma_at(at) {
                let v = v.get();
                v.vm_flags.set(v.vm_flags.get() | VM_ACCOUNT);
            }
        }
        self.touch(at, VirtAddr(at.0 + len));
        if l.path == "[heap]" {
            self.mm.set_brk_base(at);
            self.mm
                .raw()
                .brk
                .set(self.shift.to_mm(l.start) + (l.end - l.start));
        }
        Ok(())
    }
}
