//! The Linux side: the workloads through native system calls (libc), in this process.
//!
//! A failing call becomes a [`Skip`] naming the call and its errno; mappings made before the failure
//! are unmapped by [`Region`]'s `Drop`, so a skipped workload leaves nothing behind.

use std::io;
use std::time::{Duration, Instant};

use crate::workloads::{Skip, Workloads};

const PAGE: usize = 4096;

/// The Linux side (stateless: every workload starts from fresh mappings).
#[derive(Default)]
pub struct Linux;

impl Linux {
    /// The Linux side.
    pub fn new() -> Self {
        Linux
    }

    /// The largest VMA count up to `n` that this process can still create under
    /// `vm.max_map_count`, keeping a margin for the allocator and the runtime.
    pub fn fit_map_count(&self, n: u64) -> Result<u64, Skip> {
        let read = |path: &str| {
            std::fs::read_to_string(path).map_err(|e| Skip(format!("reading {path}: {e}")))
        };
        let limit: u64 = read("/proc/sys/vm/max_map_count")?
            .trim()
            .parse()
            .map_err(|e| Skip(format!("parsing vm.max_map_count: {e}")))?;
        let existing = read("/proc/self/maps")?.lines().count() as u64;
        Ok(n.min(limit.saturating_sub(existing + 16)))
    }
}

/// The last OS error as a skip line: "`call`: errno N (text)".
fn os_error(call: &str) -> Skip {
    let e = io::Error::last_os_error();
    Skip(format!(
        "{call}: errno {} ({e})",
        e.raw_os_error().unwrap_or(0)
    ))
}

/// A range this side mapped; unmapped on drop unless [`Region::munmap`] already did it.
struct Region {
    addr: *mut u8,
    len: usize,
}

impl Region {
    /// A fresh private anonymous mapping of `len` bytes with `prot`.
    fn anon(len: usize, prot: i32) -> Result<Region, Skip> {
        // SAFETY: a new mapping chosen by the kernel (no MAP_FIXED) replaces nothing of ours.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os_error("mmap"));
        }
        Ok(Region {
            addr: p.cast(),
            len,
        })
    }

    /// A free range of `len` bytes: reserved, then released, so MAP_FIXED can fill it without
    /// replacing anything (this process is single-threaded while it does).
    fn free_range(len: usize) -> Result<*mut u8, Skip> {
        let r = Region::anon(len, libc::PROT_NONE)?;
        let addr = r.addr;
        r.munmap()?;
        Ok(addr)
    }

    /// Unmaps the region; the time the munmap call took.
    fn munmap(mut self) -> Result<Duration, Skip> {
        let (addr, len) = (self.addr, self.len);
        self.len = 0;
        let t = Instant::now();
        // SAFETY: [addr, addr + len) is a range this side mapped; nothing refers into it any more.
        let rc = unsafe { libc::munmap(addr.cast(), len) };
        let d = t.elapsed();
        if rc != 0 {
            return Err(os_error("munmap"));
        }
        Ok(d)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: as in `munmap`. A failure here only leaks address space.
            unsafe { libc::munmap(self.addr.cast(), self.len) };
        }
    }
}

/// Writes one byte at `p`, faulting the page in.
///
/// # Safety
/// `p` must point into a writable mapping of this process.
unsafe fn touch(p: *mut u8) {
    // SAFETY: the caller's contract; volatile so the store (and its fault) really happens.
    unsafe { p.write_volatile(1) }
}

/// Maps `n` one-page private anonymous VMAs at every other page from `base` (the gaps keep them
/// from merging) and touches each.
///
/// # Safety
/// `[base, base + 2n pages)` must be free address space this side owns.
unsafe fn map_separate_vmas(base: *mut u8, n: u64) -> Result<(), Skip> {
    for i in 0..n as usize {
        // SAFETY: the caller owns the range; each page lies inside it.
        let want = unsafe { base.add(2 * i * PAGE) };
        // SAFETY: MAP_FIXED inside a range the caller owns replaces nothing of anyone else's.
        let p = unsafe {
            libc::mmap(
                want.cast(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os_error(&format!("mmap FIXED of VMA {i}")));
        }
        // SAFETY: `want` was just mapped read/write.
        unsafe { touch(want) };
    }
    Ok(())
}

impl Workloads for Linux {
    fn map_touch_unmap_4k(&mut self, ops: u64) -> Result<Duration, Skip> {
        let t = Instant::now();
        for _ in 0..ops {
            // SAFETY: a new mapping the kernel places; it is touched and unmapped right here.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED {
                    return Err(os_error("mmap 4 KiB"));
                }
                touch(p.cast());
                if libc::munmap(p, PAGE) != 0 {
                    return Err(os_error("munmap 4 KiB"));
                }
            }
        }
        Ok(t.elapsed())
    }

    fn touch_then_munmap(&mut self, pages: u64) -> Result<(Duration, Duration), Skip> {
        let len = pages as usize * PAGE;
        let r = Region::anon(len, libc::PROT_READ | libc::PROT_WRITE)?;
        // SAFETY: advice on our own mapping; 4 KiB pages, as mm-core has no huge pages.
        if unsafe { libc::madvise(r.addr.cast(), len, libc::MADV_NOHUGEPAGE) } != 0 {
            return Err(os_error("madvise NOHUGEPAGE"));
        }
        let t = Instant::now();
        for i in 0..pages as usize {
            // SAFETY: page i lies inside the read/write mapping `r`.
            unsafe { touch(r.addr.add(i * PAGE)) };
        }
        let touched = t.elapsed();
        Ok((touched, r.munmap()?))
    }

    fn create_vmas(&mut self, n: u64) -> Result<Duration, Skip> {
        let len = 2 * n as usize * PAGE;
        let base = Region::free_range(len)?;
        let guard = Region { addr: base, len };
        let t = Instant::now();
        // SAFETY: `base` starts a free range of 2n pages that `guard` now owns.
        unsafe { map_separate_vmas(base, n)? };
        let d = t.elapsed();
        guard.munmap()?;
        Ok(d)
    }

    fn munmap_vmas(&mut self, n: u64) -> Result<Duration, Skip> {
        let len = 2 * n as usize * PAGE;
        let base = Region::free_range(len)?;
        let guard = Region { addr: base, len };
        // SAFETY: as in `create_vmas`.
        unsafe { map_separate_vmas(base, n)? };
        guard.munmap()
    }

    fn truncate_shared(&mut self, pages: u64) -> Result<Duration, Skip> {
        let len = pages as usize * PAGE;
        // SAFETY: a NUL-terminated name; the fd is closed below on every path.
        let fd = unsafe { libc::memfd_create(c"vs_linux".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(os_error("memfd_create"));
        }
        let r = truncate_memfd(fd, len);
        // SAFETY: fd is ours and used by nothing else.
        unsafe { libc::close(fd) };
        r
    }
}

/// Sizes memfd `fd` to `len`, maps it shared, touches every page, then times ftruncate to 0.
fn truncate_memfd(fd: i32, len: usize) -> Result<Duration, Skip> {
    // SAFETY: fd is a memfd this side created.
    if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
        return Err(os_error("ftruncate to 64 MiB"));
    }
    // SAFETY: a new shared mapping of our memfd, placed by the kernel.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(os_error("mmap of the memfd"));
    }
    let r = Region {
        addr: p.cast(),
        len,
    };
    for i in 0..len / PAGE {
        // SAFETY: page i lies inside the read/write shared mapping `r`, within the file's size.
        unsafe { touch(r.addr.add(i * PAGE)) };
    }
    let t = Instant::now();
    // SAFETY: as above; afterwards nothing reads the (now beyond-EOF) mapping.
    let rc = unsafe { libc::ftruncate(fd, 0) };
    let d = t.elapsed();
    if rc != 0 {
        return Err(os_error("ftruncate to 0"));
    }
    r.munmap()?;
    Ok(d)
}

impl Linux {
    /// Maps `pages` anonymous pages and touches each, then times one `fork()` (the child exits
    /// at once; its exit is not timed).
    pub fn fork_populated(&mut self, pages: u64) -> Result<Duration, Skip> {
        let r = Region::anon(pages as usize * PAGE, libc::PROT_READ | libc::PROT_WRITE)?;
        for i in 0..pages as usize {
            // SAFETY: page `i` of the read/write region just mapped.
            unsafe { touch(r.addr.add(i * PAGE)) };
        }
        let d = time_fork()?;
        r.munmap()?;
        Ok(d)
    }

    /// Creates `n` separate populated one-page VMAs, then times one `fork()`.
    pub fn fork_vmas(&mut self, n: u64) -> Result<Duration, Skip> {
        let len = 2 * n as usize * PAGE;
        let base = Region::free_range(len)?;
        let guard = Region { addr: base, len };
        // SAFETY: as in `create_vmas`.
        unsafe { map_separate_vmas(base, n)? };
        let d = time_fork()?;
        guard.munmap()?;
        Ok(d)
    }
}

/// Times `fork()` as the parent sees it return; the child `_exit`s at once and is reaped.
fn time_fork() -> Result<Duration, Skip> {
    let t = Instant::now();
    // SAFETY: the child only calls `_exit`, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    let d = t.elapsed();
    match pid {
        -1 => Err(os_error("fork")),
        0 => {
            // SAFETY: the child does nothing else.
            unsafe { libc::_exit(0) }
        }
        pid => {
            let mut status = 0;
            // SAFETY: reaps the child just made.
            if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
                return Err(os_error("waitpid"));
            }
            Ok(d)
        }
    }
}
