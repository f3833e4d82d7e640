//! `mlock`, `mlock2`, `munlock` and `msync`, and populating a range (`MAP_POPULATE`, `MAP_LOCKED`,
//! `mlock`), with Linux's checks, order and errnos.

use crate::addr::{VirtAddr, PAGE_SIZE};
use crate::kernel::Kernel;
use crate::mm::error::{MlockError, MsyncError};
use crate::mm::fault::Access;
use crate::mm::mm_struct::Mm;
use crate::mm::vma::VmFlags;

/// `MLOCK_ONFAULT`.
pub const MLOCK_ONFAULT: u64 = 1;
/// `MCL_CURRENT`: lock every mapping now.
pub const MCL_CURRENT: u64 = 1;
/// `MCL_FUTURE`: lock every mapping made from now on.
pub const MCL_FUTURE: u64 = 2;
/// `MCL_ONFAULT`: with either, lock pages as they are faulted in.
pub const MCL_ONFAULT: u64 = 4;
/// `MS_ASYNC`.
pub const MS_ASYNC: u64 = 1;
/// `MS_INVALIDATE`.
pub const MS_INVALIDATE: u64 = 2;
/// `MS_SYNC`.
pub const MS_SYNC: u64 = 4;

/// Why populating stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PopulateError {
    /// A page could not be faulted in (no access, beyond the end of a file).
    Fault,
    /// No memory.
    NoMemory,
}

impl Mm {
    /// `mlock2(start, len, flags)` (`mlock` is `flags` 0): sets `VM_LOCKED` (and
    /// `VM_LOCKONFAULT` with `MLOCK_ONFAULT`) on the range, VMA by VMA, then faults its pages in.
    pub fn mlock(
        &mut self,
        k: &Kernel<'_>,
        start: VirtAddr,
        len: u64,
        flags: u64,
    ) -> Result<(), MlockError> {
        if flags & !MLOCK_ONFAULT != 0 {
            return Err(MlockError::Invalid);
        }
        let mut lock = VmFlags::LOCKED;
        if flags & MLOCK_ONFAULT != 0 {
            lock = lock.union(VmFlags::LOCKONFAULT);
        }
        let (start, end) = lock_range(start, len)?;
        self.apply_lock_flags(k, start, end, lock)?;
        // `__mm_populate` without ignoring errors; `__mlock_posix_error_return` turns EFAULT
        // into ENOMEM and ENOMEM into EAGAIN.
        self.populate(k, start, end, false).map_err(|e| match e {
            PopulateError::Fault => MlockError::NotMapped,
            PopulateError::NoMemory => MlockError::Again,
        })
    }

    /// `munlock(start, len)`: clears `VM_LOCKED` and `VM_LOCKONFAULT` on the range.
    pub fn munlock(&mut self, k: &Kernel<'_>, start: VirtAddr, len: u64) -> Result<(), MlockError> {
        let (start, end) = lock_range(start, len)?;
        self.apply_lock_flags(k, start, end, VmFlags(0))
    }

    /// `mlockall(flags)` (Linux's `apply_mlockall_flags`): `MCL_FUTURE` makes later mappings
    /// locked; `MCL_CURRENT` locks every VMA now (but the kernel's special ones) and faults their
    /// pages in, ignoring pages that cannot be.
    pub fn mlockall(&mut self, k: &Kernel<'_>, flags: u64) -> Result<(), MlockError> {
        let known = MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT;
        if flags == 0 || flags & !known != 0 || flags == MCL_ONFAULT {
            return Err(MlockError::Invalid);
        }
        self.lock_all(k, flags)
    }

    /// `munlockall()`: unlocks every VMA and stops locking new ones.
    pub fn munlockall(&mut self, k: &Kernel<'_>) -> Result<(), MlockError> {
        self.lock_all(k, 0)
    }

    fn lock_all(&mut self, k: &Kernel<'_>, flags: u64) -> Result<(), MlockError> {
        let mask = VmFlags::LOCKED.0 | VmFlags::LOCKONFAULT.0;
        let onfault = if flags & MCL_ONFAULT != 0 {
            VmFlags::LOCKONFAULT.0
        } else {
            0
        };
        let mut def = self.def_flags().0 & !mask;
        if flags & MCL_FUTURE != 0 {
            def |= VmFlags::LOCKED.0 | onfault;
        }
        self.set_def_flags(VmFlags(def));
        if flags & MCL_FUTURE != 0 && flags & MCL_CURRENT == 0 {
            return Ok(());
        }
        let lock = if flags & MCL_CURRENT != 0 {
            VmFlags(VmFlags::LOCKED.0 | onfault)
        } else {
            VmFlags(0)
        };
        let mut at = crate::addr::USER_BASE;
        while let Some(vma) = self.find_vma(at) {
            let (start, end) = (vma.get().start(), vma.get().end());
            self.apply_lock_flags(k, start, end, lock)?;
            at = end;
            if end >= crate::addr::TASK_SIZE {
                break;
            }
        }
        if flags & MCL_CURRENT != 0 {
            let _ = self.populate(k, crate::addr::USER_BASE, crate::addr::TASK_SIZE, true);
        }
        Ok(())
    }

    /// Linux's `apply_vma_lock_flags`: the VMA holding `start` first (none is `ENOMEM`), then
    /// each following one while they are contiguous; a hole is `ENOMEM` after the pieces before
    /// it have changed.
    fn apply_lock_flags(
        &mut self,
        k: &Kernel<'_>,
        start: VirtAddr,
        end: VirtAddr,
        lock: VmFlags,
    ) -> Result<(), MlockError> {
        if start == end {
            return Ok(());
        }
        let mask = VmFlags::LOCKED.0 | VmFlags::LOCKONFAULT.0;
        let mut at = start;
        while at < end {
            let vma = self.vma_at(at).ok_or(MlockError::NotMapped)?;
            let old = vma.get().flags();
            let new = VmFlags((old.0 & !mask) | lock.0);
            let piece_end = vma.get().end().min(end);
            if new != old {
                self.modify_flags(k, vma, at, piece_end, new, |_, _, _| {})
                    .map_err(|_| MlockError::Split)?;
                let pages = (piece_end - at) / PAGE_SIZE;
                let raw = self.raw();
                match (old.contains(VmFlags::LOCKED), new.contains(VmFlags::LOCKED)) {
                    (false, true) => {
                        raw.locked_vm.add(pages);
                    }
                    (true, false) => raw.locked_vm.set(raw.locked_vm.get().saturating_sub(pages)),
                    _ => {}
                }
            }
            at = piece_end;
        }
        Ok(())
    }

    /// Faults in the pages of `[start, end)` as Linux's `__mm_populate` does: VMA by VMA; none
    /// for a `VM_LOCKONFAULT` VMA; a write fault where the VMA is private and writable (breaking
    /// copy-on-write), else a read fault, even where only write or exec is allowed; a VMA without
    /// any access fails. With `ignore_errors` a failing VMA is skipped; without, the first
    /// failure ends it.
    pub(crate) fn populate(
        &mut self,
        k: &Kernel<'_>,
        start: VirtAddr,
        end: VirtAddr,
        ignore_errors: bool,
    ) -> Result<(), PopulateError> {
        let mut at = start;
        while at < end {
            let Some(vma) = self.find_vma(at).filter(|v| v.get().start() < end) else {
                break;
            };
            let v = vma.get();
            at = at.max(v.start());
            let vma_end = v.end().min(end);
            let flags = v.flags();
            let result = if flags.contains(VmFlags::LOCKONFAULT) {
                Ok(())
            } else if flags.0 & VmFlags::ACCESS.0 == 0 {
                Err(PopulateError::Fault)
            } else {
                let cow = flags.contains(VmFlags::WRITE) && !flags.contains(VmFlags::SHARED);
                let access = if cow { Access::Write } else { Access::Read };
                let mut r = Ok(());
                let mut page = at;
                while page < vma_end {
                    if let Err(e) = self.handle_mm_fault(k, page, access) {
                        r = Err(match e {
                            crate::mm::FaultError::Oom => PopulateError::NoMemory,
                            _ => PopulateError::Fault,
                        });
                        break;
                    }
                    page = page + PAGE_SIZE;
                }
                r
            };
            if let Err(e) = result {
                if !ignore_errors {
                    return Err(e);
                }
            }
            at = vma_end;
        }
        Ok(())
    }

    /// `msync(start, len, flags)` (Linux's `sys_msync`). mm-core's files live in memory only, so
    /// there is nothing to write back: what it checks is the arguments and that the range is
    /// mapped (holes are `ENOMEM`, at once for plain `MS_ASYNC`).
    pub fn msync(
        &self,
        _k: &Kernel<'_>,
        start: VirtAddr,
        len: u64,
        flags: u64,
    ) -> Result<(), MsyncError> {
        if flags & !(MS_ASYNC | MS_INVALIDATE | MS_SYNC) != 0
            || !start.is_aligned(PAGE_SIZE)
            || (flags & MS_ASYNC != 0 && flags & MS_SYNC != 0)
        {
            return Err(MsyncError::Invalid);
        }
        let len = len
            .checked_add(PAGE_SIZE - 1)
            .ok_or(MsyncError::NotMapped)?
            & !(PAGE_SIZE - 1);
        let end = start.0.checked_add(len).ok_or(MsyncError::NotMapped)?;
        if end == start.0 {
            return Ok(());
        }
        let mut unmapped = false;
        let mut at = start;
        loop {
            let vma = self.find_vma(at).ok_or(MsyncError::NotMapped)?;
            let v = vma.get();
            if at < v.start() {
                if flags == MS_ASYNC {
                    return Err(MsyncError::NotMapped);
                }
                at = v.start();
                if at.0 >= end {
                    return Err(MsyncError::NotMapped);
                }
                unmapped = true;
            }
            if flags & MS_INVALIDATE != 0 && v.flags().contains(VmFlags::LOCKED) {
                return Err(MsyncError::Busy);
            }
            at = v.end();
            if at.0 >= end {
                break;
            }
        }
        if unmapped {
            Err(MsyncError::NotMapped)
        } else {
            Ok(())
        }
    }
}

/// `do_mlock`'s range: the length grows by the start's offset in its page and is rounded up, the
/// start rounded down.
fn lock_range(start: VirtAddr, len: u64) -> Result<(VirtAddr, VirtAddr), MlockError> {
    let offset = start.0 & (PAGE_SIZE - 1);
    let len = len
        .checked_add(offset)
        .and_then(|l| l.checked_add(PAGE_SIZE - 1))
        .ok_or(MlockError::Invalid)?
        & !(PAGE_SIZE - 1);
    let start = start.align_down(PAGE_SIZE);
    let end = start.0.checked_add(len).ok_or(MlockError::Invalid)?;
    Ok((start, VirtAddr(end)))
}
