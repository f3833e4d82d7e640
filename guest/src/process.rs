//! Processes: a fresh address space, a [`Script`] copied into it, the script interpreter run in
//! ring 3, and the system calls and page faults it raises served by mm-core.
//!
//! One process runs at a time, on vCPU 0 (see `mm`); [`CURRENT`] is the process the trap handlers
//! serve.

use crate::mm::{kernel, kernel_pgd, read_cr3};
use crate::programs::{self, Script};
use crate::tlb;
use crate::trap::TrapFrame;
use crate::user::{self, Exit};
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use mm_core::abi::{BootInfo, FreePath};
use mm_core::mm::{Access, Advice, FilePtr, MapFlags, Mm, MremapFlags, Prot};
use mm_core::paging::PageTableEntry;
use mm_core::VirtAddr;

/// Where a process's script is mapped: the first user page table (`USER_BASE`).
pub const SCRIPT_BASE: u64 = mm_core::addr::USER_BASE.0;

/// Page-fault error-code bits.
const PF_WRITE: u64 = 1 << 1;
const PF_USER: u64 = 1 << 2;
const PF_FETCH: u64 = 1 << 4;

/// Linux system-call numbers this kernel serves (besides `exit` and `getcpu`, in `syscall`).
pub mod nr {
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
    /// This kernel's `race_start(addr, len)` (race scenarios only): hands every page mapped in the
    /// range to the walkers on the other vCPUs and joins the race; returns how many pages.
    pub const RACE_START: u64 = 502;
    /// This kernel's `bench_mark(workload, phase, units)`: passes a benchmark phase mark to the
    /// host (`mm_core::abi::bench`); returns 0.
    pub const BENCH_MARK: u64 = 501;
}

const EBADF: i64 = 9;
const EINVAL: i64 = 22;

/// A running process.
pub struct Process {
    /// Its address space.
    pub mm: Mm,
    /// Open files: descriptor `i` is `files[i]`.
    pub files: Vec<FilePtr>,
    /// Page faults served.
    pub faults: u64,
    /// System calls served.
    pub syscalls: u64,
}

struct Current(UnsafeCell<Option<Process>>);
// SAFETY: only vCPU 0 runs processes (module doc).
unsafe impl Sync for Current {}
static CURRENT: Current = Current(UnsafeCell::new(None));

fn current() -> Option<&'static mut Process> {
    // SAFETY: vCPU 0 alone; the trap handlers run with interrupts off, nested in the code that set
    // CURRENT, and never keep the reference past their return.
    unsafe { (*CURRENT.0.get()).as_mut() }
}

/// What a finished process leaves behind for the scenario to check.
pub struct Finished {
    /// How it ended.
    pub exit: Exit,
    /// Page faults served.
    pub faults: u64,
    /// System calls served.
    pub syscalls: u64,
}

/// Why a process could not start.
#[derive(Debug)]
pub enum SpawnError {
    /// No memory for the address space.
    NoMemory,
    /// The script could not be mapped (the errno mmap gave).
    ScriptMap(i32),
}

impl core::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SpawnError::NoMemory => write!(f, "no memory for a new address space"),
            SpawnError::ScriptMap(errno) => {
                write!(f, "mapping the script failed with errno {errno}")
            }
        }
    }
}

/// Runs `script` as a new process with `files` as its descriptors (the process takes those
/// references and drops them at exit), tears it down, and reports how it went.
pub fn run(script: &Script, files: Vec<FilePtr>) -> Result<Finished, SpawnError> {
    let k = kernel();
    // A process that never starts still owns its descriptors: drop them on the way out.
    let drop_files = |files: Vec<FilePtr>| files.into_iter().for_each(|f| mm_core::mm::fput(k, f));
    let mut mm = match Mm::new(k, Some(kernel_pgd())) {
        Ok(mm) => mm,
        Err(_) => {
            drop_files(files);
            return Err(SpawnError::NoMemory);
        }
    };
    let words = script.words();
    let len = (words.len() as u64 * 8).next_multiple_of(4096);
    let rw_private = MapFlags::PRIVATE
        .union(MapFlags::ANONYMOUS)
        .union(MapFlags::FIXED);
    if let Err(e) = mm.mmap(k, VirtAddr(SCRIPT_BASE), len, Prot::RW, rw_private, None, 0) {
        mm.destroy(k);
        drop_files(files);
        return Err(SpawnError::ScriptMap(e.errno()));
    }
    // Fault the script's pages in first, so a failure (out of memory) is an error here rather than
    // a kernel page fault during the copy, as copy_to_user returns -EFAULT.
    for page in (0..len).step_by(4096) {
        if mm
            .handle_mm_fault(k, VirtAddr(SCRIPT_BASE + page), Access::Write)
            .is_err()
        {
            mm.destroy(k);
            drop_files(files);
            return Err(SpawnError::NoMemory);
        }
    }
    let pgd = mm.raw().pgd().0;
    // SAFETY: vCPU 0 alone; no process is running.
    unsafe {
        *CURRENT.0.get() = Some(Process {
            mm,
            files,
            faults: 0,
            syscalls: 0,
        })
    };
    tlb::switch_to(pgd);
    for (i, word) in words.iter().enumerate() {
        // SAFETY: the script VMA is mapped read-write at SCRIPT_BASE in the loaded address space,
        // its pages faulted in above.
        unsafe { core::ptr::write_volatile((SCRIPT_BASE as *mut u64).add(i), *word) };
    }
    let exit = user::enter_user(0, programs::script(), 0, SCRIPT_BASE);
    tlb::switch_to(kernel_pgd().0);
    // SAFETY: the process has exited; nothing refers to CURRENT any more.
    let mut process = unsafe { (*CURRENT.0.get()).take() }.expect("the running process");
    let finished = Finished {
        exit,
        faults: process.faults,
        syscalls: process.syscalls,
    };
    drop_files(process.files);
    if crate::probes::flag(BootInfo::THOROUGH | BootInfo::VALIDATE_AT_EXIT)
        && !crate::scenarios::race::racing()
    {
        report_invalid(&process.mm, process.mm.validate_mm(k));
    }
    // Other vCPUs may still have the root loaded (walkers borrowing the mm): unmap everything
    // first, with shootdowns, then make them leave before the root itself is freed.
    let exit = crate::probes::path(FreePath::Exit);
    process.mm.exit_mmap(k);
    tlb::leave_lazy(pgd);
    process.mm.destroy(k);
    drop(exit);
    crate::probes::quiescent(0);
    Ok(finished)
}

/// A page fault at `addr` (from ring 3, or from the kernel touching user memory for the process):
/// true when mm-core mapped the page and the access may be retried.
pub fn handle_fault(addr: u64, error_code: u64) -> bool {
    // The process runs on vCPU 0; another vCPU with its root loaded (a walker) may not fault
    // pages into it.
    if crate::percpu::this_cpu() != 0 {
        return false;
    }
    let Some(p) = current() else { return false };
    if read_cr3() != p.mm.raw().pgd().0 || !VirtAddr(addr).is_user() {
        return false;
    }
    let access = if error_code & PF_FETCH != 0 {
        Access::Exec
    } else if error_code & PF_WRITE != 0 {
        Access::Write
    } else {
        Access::Read
    };
    p.faults += 1;
    let handled =
        p.mm.handle_mm_fault(kernel(), VirtAddr(addr), access)
            .is_ok();
    // A fault from ring 3 interrupted no mm operation; one the kernel took touching user memory
    // might have.
    if error_code & PF_USER != 0 {
        crate::probes::quiescent(p.mm.raw().addr());
    }
    if !handled && error_code & PF_USER == 0 {
        log::warn!("kernel access to user address {addr:#x} failed");
    }
    handled
}

/// Serves the memory system calls of the current process; `None` for numbers it does not know.
pub fn syscall(frame: &TrapFrame) -> Option<u64> {
    let p = current()?;
    let k = kernel();
    let (a0, a1, a2) = (frame.rdi, frame.rsi, frame.rdx);
    let _path = crate::probes::path(path_of(frame));
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
            None => Err(EBADF as i32),
        },
        nr::RECLAIM => Ok(reclaim(p, a0, a1)),
        nr::RACE_START => Ok(crate::scenarios::race::start(
            p.mm.raw().pgd().0,
            &mapped_pages(p, a0, a1),
        )),
        nr::BENCH_MARK => {
            let mark = mm_core::abi::Call::BenchMark {
                workload: a0,
                phase: a1,
                units: a2,
            };
            crate::ucall::call(crate::percpu::this_cpu(), mark);
            Ok(0)
        }
        _ => return None,
    };
    p.syscalls += 1;
    if crate::probes::flag(BootInfo::THOROUGH) {
        // The VMA invariants only: the host's sweep checks the page tables at this same point,
        // natively, and the whole of validate_mm runs at exit.
        report_invalid(&p.mm, p.mm.validate_vmas(kernel()));
    }
    crate::probes::quiescent(p.mm.raw().addr());
    Some(result.unwrap_or_else(|e| errno(i64::from(e))))
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

/// Reports what a validation of `mm` found to the host, which counts it as a violation (P7).
/// Nothing is reported while walkers race on other vCPUs: they change rss and PTEs under their
/// own locks.
fn report_invalid(mm: &Mm, found: Vec<mm_core::mm::validate::Violation>) {
    if crate::scenarios::race::racing() {
        return;
    }
    if let Some(first) = found.first() {
        let text = alloc::format!("{first:?}");
        crate::probes::mm_invalid(mm.raw().addr(), found.len() as u64, &text);
    }
}

/// The pages mapped in `[addr, addr + len)` of the current process: (address, frame).
fn mapped_pages(p: &Process, addr: u64, len: u64) -> Vec<(u64, u64)> {
    let k = kernel();
    let pgd = p.mm.raw().pgd();
    (addr..addr.saturating_add(len))
        .step_by(4096)
        .filter_map(|va| {
            let slot = mm_core::paging::walk::lookup(k, pgd, VirtAddr(va))?;
            // SAFETY: the slot names an entry of a live page table of the loaded mm, in
            // identity-mapped RAM.
            let pte = PageTableEntry::from_bits(unsafe {
                core::ptr::read_volatile((slot.table.0 as *const u64).add(slot.index))
            });
            pte.is_present().then(|| (va, pte.frame().0))
        })
        .collect()
}

/// Reclaim-style rmap walks over `[addr, addr + len)`: for every mapped page, `page_referenced`
/// then `try_to_unmap`, which walk the page tables of every VMA rmap finds for that page.
fn reclaim(p: &mut Process, addr: u64, len: u64) -> u64 {
    let k = kernel();
    let pgd = p.mm.raw().pgd();
    let mut unmapped = 0;
    for va in (addr..addr.saturating_add(len)).step_by(4096) {
        let Some(slot) = mm_core::paging::walk::lookup(k, pgd, VirtAddr(va)) else {
            continue;
        };
        // SAFETY: the slot names an entry of a live page table of the loaded mm, in
        // identity-mapped RAM.
        let pte = PageTableEntry::from_bits(unsafe {
            core::ptr::read_volatile((slot.table.0 as *const u64).add(slot.index))
        });
        if !pte.is_present() {
            continue;
        }
        let frame = pte.frame();
        mm_core::mm::rmap::page_referenced(k, frame);
        if mm_core::mm::rmap::try_to_unmap(k, frame) {
            unmapped += 1;
        }
    }
    unmapped
}

fn errno(e: i64) -> u64 {
    (-e) as u64
}
