//! The guest side of the call channel (see `mm_core::abi::Ucall`).
//!
//! Each vCPU owns one call buffer; a call fills it and writes its physical address to the ucall
//! port, and the vCPU exits to the VMM. Only the header fields a call uses are written: clearing the
//! whole text would cost hundreds of emulated instructions on software KVM.

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use mm_core::abi::{Call, Ucall, UcallCmd, MAX_VCPUS, UCALL_PORT, UCALL_TEXT_MAX};

struct Buffers([UnsafeCell<Ucall>; MAX_VCPUS]);

// SAFETY: vCPU `i` is the only one that touches `Buffers.0[i]` (see `with_buffer`).
unsafe impl Sync for Buffers {}

static BUFFERS: Buffers =
    Buffers([const { UnsafeCell::new(Ucall::new(UcallCmd::Sync, 0)) }; MAX_VCPUS]);

/// Writes `text` into this vCPU's buffer with `fill` (which returns the call that carries it) and
/// hands the call to the host.
fn send(cpu: usize, fill: impl FnOnce(&mut Ucall) -> Call) {
    let slot = &BUFFERS.0[cpu % MAX_VCPUS];
    // SAFETY: each vCPU uses only its own slot and makes one call at a time, so this is the only
    // reference to it until the call returns.
    let buf = unsafe { &mut *slot.get() };
    buf.cpu = cpu as u64;
    buf.text_len = 0;
    let call = fill(buf);
    call.write_to(buf);
    // The kernel is linked and loaded below 4 GiB with physical = virtual, so the address fits the
    // 32-bit port write.
    let addr = slot.get() as u64 as u32;
    // SAFETY: the `out` only exits to the VMM, which reads the buffer; the asm has no `nomem`, so the
    // compiler finishes the writes above before it.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") UCALL_PORT, in("eax") addr, options(nostack))
    };
}

/// Makes `call`; for probe and race calls the host checks or schedules before this returns.
pub fn call(cpu: usize, call: Call) {
    send(cpu, |_| call);
}

/// Makes `call` with a short `text` (a lock class, a source file, a finding).
pub fn call_with_text(cpu: usize, call: Call, text: &str) {
    send(cpu, |c| {
        c.push_text(text);
        call
    });
}

/// Reports that vCPU `cpu` reached `stage`.
pub fn sync(cpu: usize, stage: u64) {
    call(cpu, Call::Sync { stage });
}

/// Ends the run with `verdict` (0 = success); the host stops the VM.
pub fn done(cpu: usize, verdict: u64) -> ! {
    call(cpu, Call::Done { verdict });
    crate::halt_forever()
}

/// Gives up with `message`, naming the source `file` and `line`.
pub fn abort(cpu: usize, message: &str, file: &str, line: u32) -> ! {
    abort_fmt(cpu, format_args!("{message}"), file, line)
}

/// Like [`abort`], with a formatted message.
pub fn abort_fmt(cpu: usize, message: fmt::Arguments<'_>, file: &str, line: u32) -> ! {
    send(cpu, |c| {
        let mut text = Text(c);
        let _ = text.write_fmt(message);
        let message_len = text.0.text_len;
        text.0.push_text(file);
        Call::Abort {
            line: u64::from(line),
            message_len,
            file_len: c.text_len - message_len,
        }
    });
    crate::halt_forever()
}

/// Reports a CPU exception the kernel cannot handle.
pub fn exception(cpu: usize, vector: u64, error_code: u64, cr2: u64, rip: u64) -> ! {
    call(
        cpu,
        Call::Exception {
            vector,
            error_code,
            cr2,
            rip,
        },
    );
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
