//! The guest side of the call channel (see `mm_core::abi::Ucall`).
//!
//! Each vCPU owns one call buffer; a call fills it and writes its physical address to the ucall
//! port, and the vCPU exits to the VMM. Only the header fields a call uses are written: clearing the
//! whole text would cost hundreds of emulated instructions on software KVM.

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use mm_core::abi::{Ucall, UcallCmd, MAX_VCPUS, UCALL_PORT, UCALL_TEXT_MAX};

struct Buffers([UnsafeCell<Ucall>; MAX_VCPUS]);

// SAFETY: vCPU `i` is the only one that touches `Buffers.0[i]` (see `with_buffer`).
unsafe impl Sync for Buffers {}

static BUFFERS: Buffers =
    Buffers([const { UnsafeCell::new(Ucall::new(UcallCmd::Sync, 0)) }; MAX_VCPUS]);

/// Fills this vCPU's buffer with `fill` and hands it to the host.
fn call(cpu: usize, cmd: UcallCmd, fill: impl FnOnce(&mut Ucall)) {
    let slot = &BUFFERS.0[cpu % MAX_VCPUS];
    // SAFETY: each vCPU uses only its own slot and makes one call at a time, so this is the only
    // reference to it until the call returns.
    let buf = unsafe { &mut *slot.get() };
    buf.cmd = cmd as u64;
    buf.cpu = cpu as u64;
    buf.args = [0; 6];
    buf.text_len = 0;
    fill(buf);
    // The kernel is linked and loaded below 4 GiB with physical = virtual, so the address fits the
    // 32-bit port write.
    let addr = slot.get() as u64 as u32;
    // SAFETY: the `out` only exits to the VMM, which reads the buffer; the asm has no `nomem`, so the
    // compiler finishes the writes above before it.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") UCALL_PORT, in("eax") addr, options(nostack))
    };
}

/// Reports that vCPU `cpu` reached `stage`.
pub fn sync(cpu: usize, stage: u64) {
    call(cpu, UcallCmd::Sync, |c| c.args[0] = stage);
}

/// Reports a probe event; the host checks guest memory before this returns.
pub fn probe(cpu: usize, cmd: UcallCmd, args: [u64; 6]) {
    call(cpu, cmd, |c| c.args = args);
}

/// Reports `cmd` with `args` and a short `text` (a lock class, a source file).
pub fn with_text(cpu: usize, cmd: UcallCmd, args: [u64; 6], text: &str) {
    call(cpu, cmd, |c| {
        c.args = args;
        c.push_text(text);
    });
}

/// Marks the start or end of a benchmark phase (`mm_core::abi::bench`); the host timestamps it.
pub fn bench_mark(cpu: usize, args: [u64; 3]) {
    call(cpu, UcallCmd::BenchMark, |c| {
        c.args = [args[0], args[1], args[2], 0, 0, 0]
    });
}

/// Ends the run with `verdict` (0 = success); the host stops the VM.
pub fn done(cpu: usize, verdict: u64) -> ! {
    call(cpu, UcallCmd::Done, |c| c.args[0] = verdict);
    crate::halt_forever()
}

/// Gives up with `message`, naming the source `file` and `line`.
pub fn abort(cpu: usize, message: &str, file: &str, line: u32) -> ! {
    abort_fmt(cpu, format_args!("{message}"), file, line)
}

/// Like [`abort`], with a formatted message.
pub fn abort_fmt(cpu: usize, message: fmt::Arguments<'_>, file: &str, line: u32) -> ! {
    call(cpu, UcallCmd::Abort, |c| {
        let mut text = Text(c);
        let _ = text.write_fmt(message);
        let message_len = text.0.text_len;
        text.0.push_text(file);
        c.args = [
            u64::from(line),
            message_len,
            c.text_len - message_len,
            0,
            0,
            0,
        ];
    });
    crate::halt_forever()
}

/// Reports a CPU exception the kernel cannot handle.
pub fn exception(cpu: usize, vector: u64, error_code: u64, cr2: u64, rip: u64) -> ! {
    call(cpu, UcallCmd::Exception, |c| {
        c.args = [vector, error_code, cr2, rip, 0, 0]
    });
    crate::halt_forever()
}

/// Formats into a call's text, dropping what does not fit.
struct Text<'a>(&'a mut Ucall);

impl Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Keep room so a long message still leaves space for the file name.
        let room = (UCALL_TEXT_MAX - 64).saturating_sub(self.0.text_len as usize);
        let mut end = s.len().min(room);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.0.push_text(&s[..end]);
        Ok(())
    }
}
