//! The mm-core side: the same workloads through mm-core's public API, on simulated RAM.
//!
//! Every workload starts from a fresh [`Mm`] and tears it down (untimed) with `destroy`, also when
//! it fails, so one skipped workload does not starve the next of frames. A touch is what the CPU
//! would do: `handle_mm_fault` for a write, then the MMU's walk to the PTE and the store through
//! the phys→virt access.

use std::fmt::Display;
use std::time::{Duration, Instant};

use mm_core::addr::{PAGE_SIZE, USER_BASE};
use mm_core::mm::truncate::vmtruncate;
use mm_core::mm::{fput, iput, Access, AddressSpace, File, MapFlags, Mm, Prot};
use mm_core::paging::walk;
use mm_core::{Kernel, VirtAddr};

use crate::workloads::{Skip, Workloads};

/// Private anonymous, placed by mm-core.
const ANON: MapFlags = MapFlags(MapFlags::PRIVATE.0 | MapFlags::ANONYMOUS.0);
/// Private anonymous at a fixed address.
const ANON_FIXED: MapFlags = MapFlags(ANON.0 | MapFlags::FIXED.0);
/// Where the many-VMA workloads start: 1 GiB into user space, clear of everything else.
const VMA_BASE: VirtAddr = VirtAddr(USER_BASE.0 + (1 << 30));

/// An mm-core error as a skip line.
fn failed(what: &str, e: impl Display) -> Skip {
    Skip(format!("{what}: {e}"))
}

/// The mm-core side: one kernel over the simulated RAM, shared by all workloads.
pub struct MmCore<'a> {
    k: Kernel<'a>,
}

impl<'a> MmCore<'a> {
    /// The mm-core side running in `k`.
    pub fn new(k: Kernel<'a>) -> Self {
        MmCore { k }
    }

    /// Runs `body` on a fresh address space, then destroys it (untimed), whatever `body` returned.
    fn with_mm<T>(
        &self,
        body: impl FnOnce(&Kernel<'a>, &mut Mm) -> Result<T, Skip>,
    ) -> Result<T, Skip> {
        let mut mm = Mm::new(&self.k, None).map_err(|e| failed("Mm::new", e))?;
        let r = body(&self.k, &mut mm);
        mm.destroy(&self.k);
        r
    }

    /// Maps `pages` anonymous pages and touches each, then times `Mm::fork` (the child is
    /// destroyed untimed).
    pub fn fork_populated(&mut self, pages: u64) -> Result<Duration, Skip> {
        self.with_mm(|k, mm| {
            let va = mm
                .mmap(k, VirtAddr(0), pages * PAGE_SIZE, Prot::RW, ANON, None, 0)
                .map_err(|e| failed("mmap of the big mapping", e))?;
            for i in 0..pages {
                touch(k, mm, va + i * PAGE_SIZE)?;
            }
            time_fork(k, mm)
        })
    }

    /// Creates `n` separate populated one-page VMAs, then times `Mm::fork`.
    pub fn fork_vmas(&mut self, n: u64) -> Result<Duration, Skip> {
        self.with_mm(|k, mm| {
            map_separate_vmas(k, mm, n)?;
            time_fork(k, mm)
        })
    }

    /// Creates `n` separate populated VMAs, then times `exit_mmap` (mm-core only: Linux's exit
    /// cannot be timed from inside the process).
    pub fn exit_vmas(&mut self, n: u64) -> Result<Duration, Skip> {
        self.with_mm(|k, mm| {
            map_separate_vmas(k, mm, n)?;
            let t = Instant::now();
            mm.exit_mmap(k);
            Ok(t.elapsed())
        })
    }
}

/// Times one `Mm::fork` of `mm`; the child is destroyed untimed.
fn time_fork(k: &Kernel<'_>, mm: &Mm) -> Result<Duration, Skip> {
    let t = Instant::now();
    let child = mm.fork(k, None).map_err(|e| failed("fork", e))?;
    let d = t.elapsed();
    child.destroy(k);
    Ok(d)
}

/// A write access to `va` as the CPU makes it: fault, walk to the PTE, store one byte.
fn touch(k: &Kernel<'_>, mm: &mut Mm, va: VirtAddr) -> Result<(), Skip> {
    mm.handle_mm_fault(k, va, Access::Write)
        .map_err(|e| failed(&format!("handle_mm_fault at {va}"), e))?;
    // The MMU's walk. mm-core has no public "read this PTE" (PteSlot::read is crate-private), so
    // this goes through the public leaf iterator over the one page.
    let mut frame = None;
    walk::for_each_leaf(k, mm.raw().pgd(), va, va + PAGE_SIZE, &mut |_, _, e| {
        frame = Some(e.frame())
    });
    let frame = frame.ok_or_else(|| Skip(format!("no PTE at {va} after the fault")))?;
    k.write_byte(frame, 0, 1);
    Ok(())
}

/// Maps `n` one-page anonymous VMAs at every other page from [`VMA_BASE`] (the gaps keep them
/// from merging) and touches each.
fn map_separate_vmas(k: &Kernel<'_>, mm: &mut Mm, n: u64) -> Result<(), Skip> {
    for i in 0..n {
        let va = VMA_BASE + 2 * i * PAGE_SIZE;
        mm.mmap(k, va, PAGE_SIZE, Prot::RW, ANON_FIXED, None, 0)
            .map_err(|e| failed(&format!("mmap FIXED of VMA {i}"), e))?;
        touch(k, mm, va)?;
    }
    Ok(())
}

impl Workloads for MmCore<'_> {
    fn map_touch_unmap_4k(&mut self, ops: u64) -> Result<Duration, Skip> {
        self.with_mm(|k, mm| {
            let t = Instant::now();
            for _ in 0..ops {
                let va = mm
                    .mmap(k, VirtAddr(0), PAGE_SIZE, Prot::RW, ANON, None, 0)
                    .map_err(|e| failed("mmap 4 KiB", e))?;
                touch(k, mm, va)?;
                mm.munmap(k, va, PAGE_SIZE)
                    .map_err(|e| failed("munmap 4 KiB", e))?;
            }
            Ok(t.elapsed())
        })
    }

    fn touch_then_munmap(&mut self, pages: u64) -> Result<(Duration, Duration), Skip> {
        self.with_mm(|k, mm| {
            let len = pages * PAGE_SIZE;
            let va = mm
                .mmap(k, VirtAddr(0), len, Prot::RW, ANON, None, 0)
                .map_err(|e| failed("mmap of the big mapping", e))?;
            let t = Instant::now();
            for i in 0..pages {
                touch(k, mm, va + i * PAGE_SIZE)?;
            }
            let touched = t.elapsed();
            let t = Instant::now();
            mm.munmap(k, va, len)
                .map_err(|e| failed("munmap of the big mapping", e))?;
            Ok((touched, t.elapsed()))
        })
    }

    fn create_vmas(&mut self, n: u64) -> Result<Duration, Skip> {
        self.with_mm(|k, mm| {
            let t = Instant::now();
            map_separate_vmas(k, mm, n)?;
            Ok(t.elapsed())
        })
    }

    fn munmap_vmas(&mut self, n: u64) -> Result<Duration, Skip> {
        self.with_mm(|k, mm| {
            map_separate_vmas(k, mm, n)?;
            let t = Instant::now();
            mm.munmap(k, VMA_BASE, 2 * n * PAGE_SIZE)
                .map_err(|e| failed("munmap of the VMAs", e))?;
            Ok(t.elapsed())
        })
    }

    fn truncate_shared(&mut self, pages: u64) -> Result<Duration, Skip> {
        let k = &self.k;
        let mapping = AddressSpace::create(k, pages).map_err(|e| failed("AddressSpace", e))?;
        let file = match File::open(k, mapping, None) {
            Ok(f) => f,
            Err(e) => {
                iput(k, mapping);
                return Err(failed("File::open", e));
            }
        };
        let r = self.with_mm(|k, mm| {
            let shared = MapFlags(MapFlags::SHARED.0);
            let va = mm
                .mmap(
                    k,
                    VirtAddr(0),
                    pages * PAGE_SIZE,
                    Prot::RW,
                    shared,
                    Some(file),
                    0,
                )
                .map_err(|e| failed("mmap of the shared file", e))?;
            for i in 0..pages {
                touch(k, mm, va + i * PAGE_SIZE)?;
            }
            let t = Instant::now();
            vmtruncate(k, mapping, 0);
            Ok(t.elapsed())
        });
        // The mm's VMA dropped its file reference in `destroy`; these are the opener's and the
        // creator's.
        fput(k, file);
        iput(k, mapping);
        r
    }
}
