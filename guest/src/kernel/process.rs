//! Processes: a fresh address space, a [`Script`] copied into it, the script interpreter run in
//! ring 3, and the system calls and page faults it raises served by mm-core.
//!
//! One process runs at a time, on vCPU 0 (see `mm`); [`CURRENT`] is the process the trap handlers
//! serve.

use crate::cpu::user::{self, Exit};
use crate::kernel::mm::{kernel, kernel_pgd, kernel_template, read_cr3};
use crate::kernel::programs::{self, Script};
use crate::kernel::tlb;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicPtr, Ordering};
use mm_core::abi::{BootInfo, FreePath};
use mm_core::mm::{Access, FilePtr, MapFlags, Mm, Prot};
use mm_core::paging::PageTableEntry;
use mm_core::VirtAddr;

/// Where a process's script is mapped: the first user page table (`USER_BASE`).
pub const SCRIPT_BASE: u64 = mm_core::addr::USER_BASE.0;

/// Page-fault error-code bits.
const PF_WRITE: u64 = 1 << 1;
const PF_USER: u64 = 1 << 2;
const PF_FETCH: u64 = 1 << 4;

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

/// Walkers a scenario runs on other vCPUs beside the process (the race scenarios): the kernel
/// hands them the process's pages at `race_start`, and while they run it checks nothing their
/// unlocked reads of counters and PTEs could make look wrong.
pub struct Walkers {
    /// `race_start`: the process's root and its mapped pages (address, frame) go to the walkers;
    /// returns how many pages they got.
    pub start: fn(pgd: u64, mapped: &[(u64, u64)]) -> u64,
    /// Whether they may be running now.
    pub running: fn() -> bool,
}

static WALKERS: AtomicPtr<Walkers> = AtomicPtr::new(core::ptr::null_mut());

/// Registers the walkers `race_start` starts (`None`: no scenario runs any; `race_start` then
/// fails with ENOSYS).
pub fn set_walkers(walkers: Option<&'static Walkers>) {
    let ptr = walkers.map_or(core::ptr::null_mut(), |w| core::ptr::from_ref(w).cast_mut());
    WALKERS.store(ptr, Ordering::Release);
}

/// The registered walkers.
pub(super) fn walkers() -> Option<&'static Walkers> {
    // SAFETY: `set_walkers` stores only null or a `&'static Walkers`, never written through.
    unsafe { WALKERS.load(Ordering::Acquire).as_ref() }
}

/// Whether registered walkers may be running on other vCPUs.
pub fn walkers_running() -> bool {
    walkers().is_some_and(|w| (w.running)())
}

struct Current(UnsafeCell<Option<Process>>);
// SAFETY: only vCPU 0 runs processes (module doc).
unsafe impl Sync for Current {}
static CURRENT: Current = Current(UnsafeCell::new(None));

/// The process vCPU 0 runs, while a trap handler serves it.
pub(super) fn current() -> Option<&'static mut Process> {
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
    let mut mm = match Mm::new(k, Some(kernel_template())) {
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
    if crate::host::probes::flag(BootInfo::THOROUGH | BootInfo::VALIDATE_AT_EXIT)
        && !walkers_running()
    {
        report_invalid(&process.mm, process.mm.validate_mm(k));
    }
    // Other vCPUs may still have the root loaded (walkers borrowing the mm): unmap everything
    // first, with shootdowns, then make them leave before the root itself is freed.
    let exit = crate::host::probes::path(FreePath::Exit);
    process.mm.exit_mmap(k);
    tlb::leave_lazy(pgd);
    process.mm.destroy(k);
    drop(exit);
    crate::host::probes::quiescent(0);
    Ok(finished)
}

/// A page fault at `addr` (from ring 3, or from the kernel touching user memory for the process):
/// true when mm-core mapped the page and the access may be retried.
pub fn handle_fault(addr: u64, error_code: u64) -> bool {
    // The process runs on vCPU 0; another vCPU with its root loaded (a walker) may not fault
    // pages into it.
    if crate::cpu::percpu::this_cpu() != 0 {
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
        crate::host::probes::quiescent(p.mm.raw().addr());
    }
    if !handled && error_code & PF_USER == 0 {
        log::warn!("kernel access to user address {addr:#x} failed");
    }
    handled
}

/// Reports what a validation of `mm` found to the host, which counts it as a violation (P7).
/// Nothing is reported while walkers race on other vCPUs: they change rss and PTEs under their
/// own locks.
pub(super) fn report_invalid(mm: &Mm, found: Vec<mm_core::mm::validate::Violation>) {
    if walkers_running() {
        return;
    }
    if let Some(first) = found.first() {
        let text = alloc::format!("{first:?}");
        crate::host::probes::mm_invalid(mm.raw().addr(), found.len() as u64, &text);
    }
}

/// The pages mapped in `[addr, addr + len)` of the current process: (address, frame).
pub(super) fn mapped_pages(p: &Process, addr: u64, len: u64) -> Vec<(u64, u64)> {
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
pub(super) fn reclaim(p: &mut Process, addr: u64, len: u64) -> u64 {
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
