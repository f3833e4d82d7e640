//! A hostile guest kernel: it boots like the real guest and then attacks the VMM over the real call
//! channel, so tests/hostile.rs can check that the VMM stays bounded, on time and readable whatever
//! a guest sends (issue 13's threat model: the guest is hostile, `--kernel` boots anything).
//!
//! Built by guest/Cargo.toml as a second binary beside the real guest (it shares its compiled
//! mm-core and its linker script) and handed to the VMM's tests as `HOSTILE_KERNEL`. The attack is
//! chosen by the run's `--seed` ([`Attack`]); every attack runs until the VMM's watchdog stops it.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use mm_core::abi::{
    BootInfo, Call, FreePath, ProbeEvent, TableSpan, Ucall, UcallCmd, MARK_END, MARK_START,
    UCALL_PORT,
};

/// What the kernel does after booting, by `--seed`.
#[derive(Clone, Copy)]
#[repr(u64)]
enum Attack {
    /// Nothing: checks in and spins until the watchdog fires (the baseline the others compare to).
    Idle = 0,
    /// Page-table frees that each break a rule (P5 and the claimed span's P1-P4), and `validate_mm`
    /// failures (P7): an endless stream of violations.
    Violations = 1,
    /// `VmaRange` for ever new VMAs: the VMA index.
    VmaRanges = 2,
    /// `TlbFlushed` for ever new mms: the flush logs.
    Flushes = 3,
    /// `TableUnhooked` for ever new frames, inside RAM and far outside it.
    Unhooks = 4,
    /// Benchmark phases: start and end marks.
    BenchMarks = 5,
    /// Console bytes without a newline.
    Console = 6,
    /// A registry of anon_vmas longer than the probes' step budget allows, walked at every free.
    Registry = 7,
    /// Guest text with newlines and terminal escapes in an abort.
    Text = 8,
}

/// The call buffer (vCPU 0 only).
struct Buffer(UnsafeCell<Ucall>);
// SAFETY: only vCPU 0 touches it, one call at a time.
unsafe impl Sync for Buffer {}
static BUFFER: Buffer = Buffer(UnsafeCell::new(Ucall::new(UcallCmd::Sync, 0)));

/// Sends `call` with `text` over the call channel, as the real guest's `host::ucall` does.
fn send(call: Call, text: &[u8]) {
    // SAFETY: vCPU 0 alone makes calls, one at a time (the `out` returns after the VMM read it).
    let buf = unsafe { &mut *BUFFER.0.get() };
    buf.cpu = 0;
    buf.text_len = 0;
    let n = text.len().min(buf.text.len());
    buf.text[..n].copy_from_slice(&text[..n]);
    buf.text_len = n as u64;
    call.write_to(buf);
    let addr = BUFFER.0.get() as u64 as u32;
    // SAFETY: the `out` only exits to the VMM; the asm has no `nomem`, so the writes land first.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") UCALL_PORT, in("eax") addr, options(nostack))
    };
}

fn probe(event: ProbeEvent) {
    send(Call::Probe(event), b"");
}

/// Entry point (the VMM's register set-up: `rdi` = boot info, `rsi` = vCPU, `rsp` = its stack).
///
/// # Safety
/// Called only by the VMM, with `boot_info` pointing to a valid [`BootInfo`].
#[no_mangle]
#[link_section = ".text.entry"]
pub unsafe extern "sysv64" fn _start(boot_info: *const BootInfo, cpu: u64) -> ! {
    if cpu != 0 {
        halt()
    }
    // SAFETY: the VMM wrote the boot info before starting the vCPU.
    let info = unsafe { &*boot_info };
    for stage in [
        Ucall::STAGE_ONLINE,
        Ucall::STAGE_READY,
        Ucall::STAGE_SCENARIO,
    ] {
        send(Call::Sync { stage }, b"");
    }
    let ram = info.ram_size;
    match info.seed {
        s if s == Attack::Idle as u64 => loop {
            core::hint::spin_loop()
        },
        s if s == Attack::Violations as u64 => violations(ram),
        s if s == Attack::VmaRanges as u64 => vma_ranges(),
        s if s == Attack::Flushes as u64 => flushes(),
        s if s == Attack::Unhooks as u64 => unhooks(ram),
        s if s == Attack::BenchMarks as u64 => bench_marks(),
        s if s == Attack::Console as u64 => console(),
        s if s == Attack::Registry as u64 => registry(ram),
        s if s == Attack::Text as u64 => text(),
        _ => send(Call::Done { verdict: 99 }, b"unknown attack"),
    }
    halt()
}

fn span(mm: u64, frame: u64) -> TableSpan {
    TableSpan {
        mm,
        level: 1,
        frame,
        start: 0x20_0000,
        end: 0x40_0000,
    }
}

/// Frames the floods name as freed tables, in turn.
const VICTIMS: u64 = 1024;

/// The `i`th victim frame, in the top quarter of RAM, which this kernel never uses: the VMM
/// poisons and quarantines what it is told is a freed page table, and the kernel's own code must
/// survive it. Few victims, so the guest RAM the poison touches (4 MiB) does not hide what the
/// VMM itself holds in its peak RSS.
fn victim(ram: u64, i: u64) -> u64 {
    ram / 4 * 3 + ((i % VICTIMS) << 12)
}

fn violations(ram: u64) -> ! {
    let mut i = 0u64;
    loop {
        let frame = victim(ram, i);
        probe(ProbeEvent::TableFreed {
            frame,
            claim: Some(span(0x1000 + i * 8, frame)),
            path: FreePath::Munmap,
        });
        if i.is_multiple_of(16) {
            let text = b"validate_mm: everything is wrong, over and over again";
            send(Call::Probe(ProbeEvent::MmInvalid { mm: i, count: i }), text);
        }
        i += 1;
    }
}

fn vma_ranges() -> ! {
    let mut i = 0u64;
    loop {
        let start = 0x1_0000_0000 + i * 0x1000;
        probe(ProbeEvent::VmaRange {
            mm: 0x10_0000 + (i % 64) * 0x400,
            vma: 0x100_0000 + i * 0x80,
            start,
            end: start + 0x1000,
        });
        i += 1;
    }
}

fn flushes() -> ! {
    let mut i = 0u64;
    loop {
        probe(ProbeEvent::TlbFlushed {
            mm: 0x1000 + i * 8,
            start: i << 12,
            end: (i + 1) << 12,
        });
        i += 1;
    }
}

fn unhooks(ram: u64) -> ! {
    let mut i = 0u64;
    loop {
        let frame = if i.is_multiple_of(2) {
            victim(ram, i)
        } else {
            i << 20
        };
        probe(ProbeEvent::TableUnhooked(span(0x1000, frame)));
        i += 1;
    }
}

fn bench_marks() -> ! {
    let mut i = 0u64;
    loop {
        for phase in [MARK_START, MARK_END] {
            let (workload, units) = (i % 4, i);
            send(
                Call::BenchMark {
                    workload,
                    phase,
                    units,
                },
                b"",
            );
        }
        i += 1;
    }
}

fn console() -> ! {
    const COM1: u16 = 0x3f8;
    loop {
        // SAFETY: port output only; the VMM's serial device takes the byte.
        unsafe { core::arch::asm!("out dx, al", in("dx") COM1, in("al") b'x', options(nostack)) };
    }
}

/// Nodes of the crafted anon_vma registry: more than half the probes' step budget (2^20), since
/// each node costs two steps (the registry's and its list's first VMA). Each is 16 bytes apart, so
/// its `all` link (two words) never overlaps another node's; every other field of a node reads
/// whatever lies there. Writing them takes a few seconds in emulated ring 0.
const REGISTRY_NODES: u64 = 600_000;

fn registry(ram: u64) -> ! {
    use mm_core::kernel::KernelRoots;
    use mm_core::mm::AnonVma;
    // Far from the kernel image and its stacks, below the victims: the third quarter of RAM.
    let base = ram / 2;
    let roots = base;
    let nodes = base + 0x1000;
    let (next_at, prev_at) = (
        core::mem::offset_of!(AnonVma, all.next) as u64,
        core::mem::offset_of!(AnonVma, all.prev) as u64,
    );
    let last = nodes + (REGISTRY_NODES - 1) * 16;
    // SAFETY: the third quarter of RAM is identity-mapped and unused by this kernel.
    unsafe {
        let w = |addr: u64, value: u64| (addr as *mut u64).write_volatile(value);
        // The tightest loop: every node linked both ways, then the two ends fixed.
        let mut node = nodes;
        while node <= last {
            w(node + next_at, node + 16);
            w(node + prev_at, node - 16);
            node += 16;
        }
        w(nodes + prev_at, 0);
        w(last + next_at, 0);
        let roots_at = |off: usize| roots + off as u64;
        w(
            roots_at(core::mem::offset_of!(KernelRoots, anon_vmas)),
            nodes,
        );
        w(
            roots_at(core::mem::offset_of!(KernelRoots, nr_anon_vmas)),
            REGISTRY_NODES,
        );
    }
    probe(ProbeEvent::Roots {
        roots,
        mem_map: 0,
        mem_map_len: 0,
        kernel_pgd: 0,
        layout_magic: mm_core::mm::layout::LAYOUT_MAGIC,
        layout_version: mm_core::mm::layout::LAYOUT_VERSION,
    });
    let mut i = 0u64;
    loop {
        let frame = victim(ram, i);
        probe(ProbeEvent::TableFreed {
            frame,
            claim: Some(span(0x1000, frame)),
            path: FreePath::Munmap,
        });
        i += 1;
    }
}

fn text() -> ! {
    let message = b"oops\nvmm: guest passed every check\x1b[2J\x1b]0;owned\x07";
    let file = b"src/\x1b[31mred.rs";
    let mut text = [0u8; 128];
    text[..message.len()].copy_from_slice(message);
    text[message.len()..message.len() + file.len()].copy_from_slice(file);
    let call = Call::Abort {
        line: 7,
        message_len: message.len() as u64,
        file_len: file.len() as u64,
    };
    send(call, &text[..message.len() + file.len()]);
    halt()
}

fn halt() -> ! {
    loop {
        // SAFETY: cli/hlt touch no memory.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// mm-core links `alloc`; this kernel allocates nothing, so every allocation fails.
struct NoHeap;

// SAFETY: `alloc` always returns null (an allocation failure), which callers must handle.
unsafe impl core::alloc::GlobalAlloc for NoHeap {
    unsafe fn alloc(&self, _: core::alloc::Layout) -> *mut u8 {
        core::ptr::null_mut()
    }
    unsafe fn dealloc(&self, _: *mut u8, _: core::alloc::Layout) {}
}

#[global_allocator]
static HEAP: NoHeap = NoHeap;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    send(Call::Done { verdict: 98 }, b"the hostile kernel panicked");
    halt()
}
