//! TLB shootdown across vCPUs: mm-core's flushes reach every vCPU that has the address space
//! loaded, by IPI through the local APIC, before mm-core goes on to free page tables.
//!
//! Each vCPU publishes the page-table root it has in CR3 ([`switch_to`]); a flush of an mm flushes
//! this vCPU (`NativeTlb`) and posts a request to every other vCPU whose CR3 is that mm's root,
//! sends it the shootdown IPI, and waits until each has acknowledged — so when `MmuGather` frees
//! the tables after the flush, no CPU can still cache a path into them. The race scenarios' walkers
//! keep the racing process's root loaded the way a Linux kernel thread borrows the last mm (lazy
//! TLB), so they are real targets; before that root itself is freed, [`leave_lazy`] makes them
//! switch to the kernel's.
//!
//! The walkers also read user memory through [`read_user`], which keeps a software model of this
//! vCPU's paging-structure cache: the PTE table last used for a 2 MiB region, dropped exactly when
//! the hardware's would be (any flush on this vCPU, a CR3 load). This machine's KVM shadows the
//! guest's page tables and drops a shadow entry as soon as the guest clears it, so the real cache
//! can never hold a path into a freed table here; the model keeps one the way hardware KVM's MMU
//! would, so a table freed before the shootdown that should have dropped that path is touched — and
//! caught by the VMM's quarantine.
//!
//! A waiting initiator opens interrupt windows, so two vCPUs flushing each other both get answered,
//! and reports the wait to the host's race scheduler as a busy "lock", so a held target gets to run.

use crate::cpu::{apic, percpu};
use crate::host::race;
use crate::kernel::mm::{kernel_pgd, read_cr3, write_cr3};
use core::sync::atomic::{fence, AtomicU64, Ordering};
use mm_core::abi::{Call, PoisonReport, MAX_VCPUS};
use mm_core::paging::{NativeTlb, TlbFlush};
use mm_core::{PhysAddr, VirtAddr};

/// What each vCPU has in CR3 (0: the kernel's root).
static LOADED: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];

/// `end` of a request that asks the target to leave the mm instead of flushing a range.
const LEAVE: u64 = u64::MAX;

/// One initiator's request to one target: posted by bumping `posted`, answered by copying it
/// into `done`. An initiator waits for the answer before posting again, so a slot has one writer.
struct Request {
    pgd: AtomicU64,
    start: AtomicU64,
    end: AtomicU64,
    posted: AtomicU64,
    done: AtomicU64,
}

impl Request {
    const fn new() -> Self {
        Request {
            pgd: AtomicU64::new(0),
            start: AtomicU64::new(0),
            end: AtomicU64::new(0),
            posted: AtomicU64::new(0),
            done: AtomicU64::new(0),
        }
    }
}

/// `REQUESTS[target][initiator]`.
static REQUESTS: [[Request; MAX_VCPUS]; MAX_VCPUS] =
    [const { [const { Request::new() }; MAX_VCPUS] }; MAX_VCPUS];

/// Loads `pgd` (the kernel's root or an mm's) on this vCPU, telling shootdowns first: a flush that
/// reads [`LOADED`] after changing page tables either sees this vCPU or is over before the load.
pub fn switch_to(pgd: u64) {
    let cpu = percpu::this_cpu();
    let tracked = if pgd == kernel_pgd().0 { 0 } else { pgd };
    LOADED[cpu].store(tracked, Ordering::SeqCst);
    write_cr3(pgd);
    forget_walks(cpu);
}

/// One vCPU's modelled paging-structure cache entry: the PTE table (`table`) that maps the 2 MiB
/// region `region` (`NO_REGION`: empty).
struct WalkCache {
    region: AtomicU64,
    table: AtomicU64,
}

const NO_REGION: u64 = u64::MAX;

static WALK_CACHE: [WalkCache; MAX_VCPUS] = [const {
    WalkCache {
        region: AtomicU64::new(NO_REGION),
        table: AtomicU64::new(0),
    }
}; MAX_VCPUS];

/// Drops vCPU `cpu`'s modelled paging-structure cache (what a flush does to the real one).
fn forget_walks(cpu: usize) {
    WALK_CACHE[cpu].region.store(NO_REGION, Ordering::Relaxed);
}

/// Reads the word at user address `va` of the loaded address space as this vCPU's MMU would: the
/// PTE comes from the table the modelled paging-structure cache holds for the region (or from a
/// walk from CR3, which fills it), then the word through the real MMU (`user::read_user`). `None`
/// when the page is not mapped.
pub fn read_user(va: u64) -> Option<u64> {
    let cpu = percpu::this_cpu();
    let cache = &WALK_CACHE[cpu];
    let region = va >> 21;
    let index = ((va >> 12) & 511) as usize;
    let table = if cache.region.load(Ordering::Relaxed) == region {
        cache.table.load(Ordering::Relaxed)
    } else {
        let k = crate::kernel::mm::kernel();
        let slot = mm_core::paging::walk::lookup(k, PhysAddr(read_cr3() & !0xfff), VirtAddr(va))?;
        cache.table.store(slot.table.0, Ordering::Relaxed);
        cache.region.store(region, Ordering::Relaxed);
        slot.table.0
    };
    // SAFETY: `table` is a page-table frame of the loaded mm, reached through the identity map —
    // or, if a shootdown that should have dropped it never came, a freed one: reading it is the
    // use after free the VMM's quarantine is there to catch, and the load touches nothing else.
    let entry = unsafe { core::ptr::read_volatile((table as *const u64).add(index)) };
    let entry = mm_core::paging::PageTableEntry::from_bits(entry);
    if entry.is_poison() {
        let hit = PoisonReport {
            table,
            index: index as u64,
            value: entry.bits(),
            va,
            ..PoisonReport::default()
        };
        crate::host::ucall::call_with_text(cpu, Call::PoisonHit(hit), "a cached page walk");
        return None;
    }
    if !entry.is_present() {
        return None;
    }
    crate::cpu::user::read_user(va)
}

/// The shootdown `TlbFlush` mm-core runs with in the guest.
pub struct GuestTlb;

impl TlbFlush for GuestTlb {
    fn flush_range(&self, pgd: PhysAddr, start: VirtAddr, end: VirtAddr) {
        NativeTlb.flush_range(pgd, start, end);
        forget_walks(percpu::this_cpu());
        shoot_down(pgd.0, start.0, end.0);
    }
}

/// Makes every other vCPU with `pgd` loaded switch to the kernel's root, and waits: the caller is
/// about to free that root.
pub fn leave_lazy(pgd: u64) {
    shoot_down(pgd, 0, LEAVE);
}

/// Posts `[start, end)` of `pgd` (or [`LEAVE`]) to every other vCPU that has `pgd` loaded, IPIs
/// them and waits for every answer.
fn shoot_down(pgd: u64, start: u64, end: u64) {
    if !apic::available() {
        return;
    }
    let me = percpu::this_cpu();
    // The page-table changes being flushed are written before LOADED is read (pairs with the
    // SeqCst store in `switch_to`).
    fence(Ordering::SeqCst);
    let mut waiting = [None; MAX_VCPUS];
    for (cpu, loaded) in LOADED.iter().enumerate() {
        if cpu == me || loaded.load(Ordering::SeqCst) != pgd {
            continue;
        }
        let r = &REQUESTS[cpu][me];
        r.pgd.store(pgd, Ordering::Relaxed);
        r.start.store(start, Ordering::Relaxed);
        r.end.store(end, Ordering::Relaxed);
        let seq = r.posted.load(Ordering::Relaxed) + 1;
        r.posted.store(seq, Ordering::Release);
        apic::send_tlb_ipi(cpu);
        waiting[cpu] = Some(seq);
    }
    for (cpu, seq) in waiting.iter().enumerate() {
        let Some(seq) = *seq else { continue };
        while REQUESTS[cpu][me].done.load(Ordering::Acquire) != seq {
            race::contended(me, "tlb shootdown");
            core::hint::spin_loop();
        }
    }
}

/// Shootdown requests each vCPU answered.
static ANSWERED: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];

/// How many shootdown requests vCPU `cpu` has answered.
pub fn answered(cpu: usize) -> u64 {
    ANSWERED[cpu].load(Ordering::Relaxed)
}

/// The shootdown IPI: answers every request posted to this vCPU.
pub fn handle_ipi() {
    let me = percpu::this_cpu();
    let cr3 = read_cr3() & !0xfff;
    for r in &REQUESTS[me] {
        let posted = r.posted.load(Ordering::Acquire);
        if posted == r.done.load(Ordering::Relaxed) {
            continue;
        }
        let pgd = r.pgd.load(Ordering::Relaxed);
        let (start, end) = (
            r.start.load(Ordering::Relaxed),
            r.end.load(Ordering::Relaxed),
        );
        if cr3 == pgd {
            if end == LEAVE {
                switch_to(kernel_pgd().0);
            } else {
                NativeTlb.flush_range(PhysAddr(pgd), VirtAddr(start), VirtAddr(end));
                forget_walks(me);
            }
        }
        r.done.store(posted, Ordering::Release);
        ANSWERED[me].fetch_add(1, Ordering::Relaxed);
    }
    race::irq_point(me);
}
