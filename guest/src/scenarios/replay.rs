//! `replay`: a real program's memory system calls, replayed through mm-core on real page tables.
//!
//! `vmm replay` puts the parsed replay in RAM as the op stream of `mm_core::abi::replay` (the boot
//! info's input buffer). This scenario decodes it and runs `mm_replay::replay::Replayer` — the
//! same seeding and call logic the host mode runs — on an address space of the guest's own
//! kernel, its page-table root loaded, touching pages so tables are built and later freed under
//! the host probes; then it tears the address space down (`exit_mmap`, more checked frees) and
//! writes the result to the output buffer for the VMM. Without an input (`vmm run --scenario
//! replay`) it replays a small built-in sample and checks the result itself.

use super::PASS;
use crate::kernel::frame;
use crate::kernel::mm::{kernel, kernel_pgd, kernel_template, write_cr3};
use mm_core::abi::BootInfo;
use mm_core::mm::Mm;
use mm_replay::replay::{Options, ReplayError, Replayed, Replayer};
use mm_replay::{maps, trace, wire};

/// The built-in sample: a mapping grows by MAP_FIXED next to an anonymous one (they merge), a file
/// is mapped and part of it made read-only (a split), then unmapped again.
const SAMPLE_BEFORE: &str = "\
7f0000000000-7f0000002000 rw-p 00000000 00:00 0
";
const SAMPLE_TRACE: &str = "\
7 mmap(0x7f0000002000, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS, -1, 0) = 0x7f0000002000
7 mmap(NULL, 16384, PROT_READ|PROT_WRITE, MAP_SHARED, 3</data/sample>, 0) = 0x7f0000100000
7 mprotect(0x7f0000101000, 4096, PROT_READ) = 0
7 munmap(0x7f0000103000, 4096) = 0
";
const SAMPLE_AFTER: &str = "\
7f0000000000-7f0000003000 rw-p 00000000 00:00 0
7f0000100000-7f0000101000 rw-s 00000000 00:01 42                         /data/sample
7f0000101000-7f0000102000 r--s 00001000 00:01 42                         /data/sample
7f0000102000-7f0000103000 rw-s 00002000 00:01 42                         /data/sample
";

/// Runs the replay the boot info carries, or the built-in sample.
pub fn replay(info: &BootInfo) -> u64 {
    let Some(input) = input(info) else {
        return sample();
    };
    let input = wire::decode_input(input)
        .unwrap_or_else(|e| panic!("replay: the VMM's op stream does not decode: {e}"));
    let result = run(&input.before, &input.trace, &input.hints);
    let bytes = wire::encode_result(&result);
    let Some(out) = output(info).filter(|o| o.len() >= bytes.len()) else {
        panic!(
            "replay: no output buffer for the {}-byte result",
            bytes.len()
        );
    };
    out[..bytes.len()].copy_from_slice(&bytes);
    match &result {
        Ok(r) => log::info!(
            "replay: {} of {} calls applied on real page tables, {} pages faulted in",
            r.applied,
            input.trace.events.len(),
            r.touched
        ),
        Err(e) => log::info!("replay: diverged from Linux: {e}"),
    }
    PASS
}

/// Replays on a fresh address space of the guest kernel, with its root loaded, and tears it down;
/// panics if a frame leaked or lockdep saw an inversion (mm-core bugs, not replay outcomes).
fn run(
    before: &[maps::MapsLine],
    t: &trace::Trace,
    hints: &[maps::MapsLine],
) -> Result<Replayed, ReplayError> {
    let k = kernel();
    let frames = frame::allocated();
    let mm = Mm::new(k, Some(kernel_template())).unwrap_or_else(|e| panic!("replay: no mm: {e:?}"));
    let mut r = Replayer::new(k, mm, hints, Options { touch: true });
    // Every mm shares the kernel half, so the kernel runs on as before; flushes now hit the
    // tables the replay builds.
    write_cr3(r.pgd().0);
    let result = r.run(before, t);
    write_cr3(kernel_pgd().0);
    r.finish();
    super::mm::assert_clean("replay", frames);
    result
}

/// The built-in sample, checked against its expected maps.
fn sample() -> u64 {
    let parse = |text| maps::parse_maps(text).unwrap_or_else(|e| panic!("sample: {e}"));
    let (before, after) = (parse(SAMPLE_BEFORE), parse(SAMPLE_AFTER));
    let t = trace::parse_trace(SAMPLE_TRACE).unwrap_or_else(|e| panic!("sample: {e}"));
    let out = run(&before, &t, &after).unwrap_or_else(|e| panic!("replay sample: {e}"));
    if let Err(m) = maps::compare(&out.maps, &after) {
        panic!("replay sample: {m}");
    }
    log::info!(
        "replay: built-in sample ({} calls) ended with the expected maps",
        t.events.len()
    );
    PASS
}

/// The boot info's input buffer, if any.
pub(super) fn input(info: &BootInfo) -> Option<&'static [u8]> {
    let len = usize::try_from(info.input_len).ok()?;
    (info.input_gpa != 0 && len > 0).then(|| {
        // SAFETY: the VMM wrote `input_len` bytes at `input_gpa`, in identity-mapped RAM outside
        // the frame allocator's range, and never changes them while the guest runs.
        unsafe { core::slice::from_raw_parts(info.input_gpa as *const u8, len) }
    })
}

/// The boot info's output buffer, if any.
pub(super) fn output(info: &BootInfo) -> Option<&'static mut [u8]> {
    let len = usize::try_from(info.output_len).ok()?;
    (info.output_gpa != 0 && len > 0).then(|| {
        // SAFETY: the VMM set `output_len` bytes aside at `output_gpa`, in identity-mapped RAM
        // outside the frame allocator's range and apart from the input; only this scenario, on
        // vCPU 0, writes it, once.
        unsafe { core::slice::from_raw_parts_mut(info.output_gpa as *mut u8, len) }
    })
}
