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

/// 0 if every user mapping fits `[USER_BASE, TASK_SIZE)`, else the shift that moves the lowest to
/// `USER_BASE` (see the module doc).
pub(super) fn choose_offset(user: &[&MapsLine]) -> Result<u64, ReplayError> {
    let (Some(lo), Some(hi)) = (
        user.iter().map(|l| l.start).min(),
        user.iter().map(|l| l.end).max(),
    ) else {
        return Ok(0);
    };
    if lo >= USER_BASE.0 {
        return Ok(0);
    }
    let offset = USER_BASE.0 - lo;
    if hi.checked_add(offset).is_some_and(|e| e <= TASK_SIZE.0) {
        Ok(offset)
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
        let at = VirtAddr(l.start + self.offset);
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
            self.mm
                .handle_mm_fault(self.k, at, Access::Write)
                .map_err(|e| format!("isolating fault: {e}"))?;
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
            self.mm.raw().brk.set(l.end + self.offset);
        }
        Ok(())
    }
}
