//! The one system-call table. Ring 3 raises `int3` with the number in rax and arguments in rdi,
//! rsi, rdx, r10, r8, r9 (Linux's x86_64 registers and numbers); the result comes back in rax, a
//! negative errno on failure.

use crate::cpu::trap::TrapFrame;
use crate::cpu::user::{exit_to_kernel, Exit};
use crate::kernel::mm::kernel;
use crate::kernel::process::{self, current, mapped_pages, reclaim, report_invalid};
use mm_core::abi::{BootInfo, FreePath};
use mm_core::mm::error::{EBADF, EINVAL, ENOSYS};
use mm_core::mm::{Advice, MapFlags, MremapFlags, Prot};
use mm_core::VirtAddr;

/// The system-call numbers this kernel serves: Linux's, and this kernel's own from 500 up.
pub mod nr {
    /// `exit(status)`.
    pub const EXIT: u64 = 60;
    /// `getcpu()`: this kernel's variant returns the vCPU index.
    pub const GETCPU: u64 = 309;
    /// `mmap(addr, len, prot, flags, fd, offset)`.
    pub const MMAP: u64 = 9;
    /// `mprotect(addr, len, prot)`.
    pub const MPROTECT: u64 = 10;
    /// `munmap(addr, len)`.
    pub const MUNMAP: u64 = 11;
    /// `brk(addr)`.
    pub const BRK: u64 = 12;
    /// `mremap(old, old_len, new_len, flags, new_addr)`.
    pub const MREMAP: u64 = 25;
    /// `madvise(addr, len, advice)`.
    pub const MADVISE: u64 = 28;
    /// This kernel's `set_brk_base(addr)`: places the heap's start (and the break) at `addr`, as
    /// exec does after loading a program; returns 0.
    pub const SET_BRK_BASE: u64 = 503;
    /// `ftruncate(fd, length)`.
    pub const FTRUNCATE: u64 = 77;
    /// This kernel's `reclaim(addr, len)`: runs `page_referenced` and `try_to_unmap` on every
    /// page mapped in the range, as reclaim would; returns how many were unmapped.
    pub const RECLAIM: u64 = 500;
    /// This kernel's `race_start(addr, len)`: hands every page mapped in the range to the walkers
    /// a scenario registered (`process::set_walkers`) and joins their race; returns how many
    /// pages (ENOSYS when no walkers are registered).
    pub const RACE_START: u64 = 502;
    /// This kernel's `bench_mark(workload, phase, units)`: passes a benchmark phase mark to the
    /// host (`mm_core::abi::bench`); returns 0.
    pub const BENCH_MARK: u64 = 501;
}

/// Serves the system call in `frame`.
pub fn dispatch(frame: &mut TrapFrame) {
    frame.rax = match frame.rax {
        nr::EXIT => exit_to_kernel(Exit::Code(frame.rdi)),
        nr::GETCPU => crate::cpu::percpu::this_cpu() as u64,
        _ => mm_syscall(frame).unwrap_or(errno(ENOSYS)),
    };
}

/// Serves the memory system calls of the current process; `None` for numbers it does not know.
fn mm_syscall(frame: &TrapFrame) -> Option<u64> {
    let p = current()?;
    let k = kernel();
    let (a0, a1, a2) = (frame.rdi, frame.rsi, frame.rdx);
    let _path = crate::host::probes::path(path_of(frame));
    let result: Result<u64, i32> = match frame.rax {
        nr::MMAP => {
            let file = match frame.r8 as i64 {
                -1 => None,
                fd => match usize::try_from(fd).ok().and_then(|fd| p.files.get(fd)) {
                    Some(f) => Some(*f),
                    None => return Some(errno(EBADF)),
                },
            };
            if !frame.r9.is_multiple_of(4096) {
                return Some(errno(EINVAL));
            }
            let (prot, flags) = (Prot(a2), MapFlags(frame.r10));
            p.mm.mmap(k, VirtAddr(a0), a1, prot, flags, file, frame.r9 / 4096)
                .map(|va| va.0)
                .map_err(|e| e.errno())
        }
        nr::MUNMAP => {
            p.mm.munmap(k, VirtAddr(a0), a1)
                .map(|()| 0)
                .map_err(|e| e.errno())
        }
        nr::MPROTECT => {
            p.mm.mprotect(k, VirtAddr(a0), a1, Prot(a2))
                .map(|()| 0)
                .map_err(|e| e.errno())
        }
        nr::BRK => {
            p.mm.brk(k, VirtAddr(a0))
                .map(|va| va.0)
                .map_err(|e| e.errno())
        }
        nr::MREMAP => {
            let flags = MremapFlags(frame.r10);
            p.mm.mremap(k, VirtAddr(a0), a1, a2, flags, VirtAddr(frame.r8))
                .map(|va| va.0)
                .map_err(|e| e.errno())
        }
        nr::MADVISE => {
            p.mm.madvise(k, VirtAddr(a0), a1, Advice(a2))
                .map(|()| 0)
                .map_err(|e| e.errno())
        }
        nr::SET_BRK_BASE => {
            p.mm.set_brk_base(VirtAddr(a0));
            Ok(0)
        }
        nr::FTRUNCATE => match usize::try_from(a0).ok().and_then(|fd| p.files.get(fd)) {
            Some(f) => {
                mm_core::mm::truncate::vmtruncate(k, f.get().mapping(), a1.div_ceil(4096));
                Ok(0)
            }
            None => Err(EBADF),
        },
        nr::RECLAIM => Ok(reclaim(p, a0, a1)),
        nr::RACE_START => match process::walkers() {
            Some(walkers) => Ok((walkers.start)(
                p.mm.raw().pgd().0,
                &mapped_pages(p, a0, a1),
            )),
            None => Err(ENOSYS),
        },
        nr::BENCH_MARK => {
            let mark = mm_core::abi::Call::BenchMark {
                workload: a0,
                phase: a1,
                units: a2,
            };
            crate::host::ucall::call(crate::cpu::percpu::this_cpu(), mark);
            Ok(0)
        }
        _ => return None,
    };
    p.syscalls += 1;
    if crate::host::probes::flag(BootInfo::THOROUGH) {
        // The VMA invariants only: the host's sweep checks the page tables at this same point,
        // natively, and the whole of validate_mm runs at exit.
        report_invalid(&p.mm, p.mm.validate_vmas(kernel()));
    }
    crate::host::probes::quiescent(p.mm.raw().addr());
    Some(result.unwrap_or_else(errno))
}

/// The operation a system call is, for the host's coverage matrix.
fn path_of(frame: &TrapFrame) -> FreePath {
    match frame.rax {
        nr::MUNMAP => FreePath::Munmap,
        nr::MMAP if MapFlags(frame.r10).contains(MapFlags::FIXED) => FreePath::MmapFixed,
        nr::MREMAP => FreePath::Mremap,
        nr::BRK => FreePath::Brk,
        nr::FTRUNCATE => FreePath::Truncate,
        nr::MADVISE => FreePath::Madvise,
        _ => FreePath::Other,
    }
}

/// `-e` in rax's two's complement, as Linux returns errors.
fn errno(e: i32) -> u64 {
    i64::from(e).wrapping_neg() as u64
}
