//! The COM1 console and the `log` backend.
//!
//! The VMM's UART is always ready to send, so the kernel writes lines with one `rep outsb` to the
//! transmit register instead of polling the line status per byte: KVM hands the whole string to the
//! VMM in a single exit, which matters when each exit costs microseconds.

use core::fmt::{self, Write};
use log::{LevelFilter, Log, Metadata, Record};

/// COM1's transmit holding register.
const COM1_THR: u16 = 0x3f8;

/// Longest line sent in one exit; longer output is split.
const LINE_MAX: usize = 256;

/// Writes `bytes` to COM1.
pub fn write_bytes(bytes: &[u8]) {
    for chunk in bytes.chunks(LINE_MAX) {
        // SAFETY: `rep outsb` reads `rcx` bytes from `rsi`, which point into `chunk`; it writes no
        // memory. The direction flag is clear (the SysV ABI guarantees it between calls).
        unsafe {
            core::arch::asm!(
                "rep outsb",
                in("dx") COM1_THR,
                inout("rsi") chunk.as_ptr() => _,
                inout("rcx") chunk.len() => _,
                options(nostack, readonly, preserves_flags)
            );
        }
    }
}

/// A line buffer on the stack: formats into it, then sends it in one write.
struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Line {
            buf: [0; LINE_MAX],
            len: 0,
        }
    }

    fn flush(&mut self) {
        write_bytes(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == LINE_MAX {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

struct Console;

impl Log for Console {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = Line::new();
        // Writing to `Line` cannot fail.
        let _ = match record.level() {
            log::Level::Info => writeln!(line, "{}", record.args()),
            level => writeln!(line, "[{level}] {}", record.args()),
        };
        line.flush();
    }

    fn flush(&self) {}
}

static CONSOLE: Console = Console;

/// Routes `log` to the console at the level the VMM chose (0 off … 5 trace).
pub fn init(level: u64) {
    let filter = match level {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    // Only vCPU 0 calls this, once: the logger cannot already be set.
    let _ = log::set_logger(&CONSOLE);
    log::set_max_level(filter);
}
