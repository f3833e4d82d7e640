//! COM1: rust-vmm's 16550 UART (`vm_superio::Serial`, as in Firecracker and Cloud Hypervisor)
//! behind a console that keeps the last lines.
//!
//! The device owns the registers: divisor latch, IER/IIR/LCR/MCR/MSR/scratch, and a line status
//! that always says "ready to send", so the guest never needs to poll. Its interrupt line is not
//! wired ([`NoInterrupt`]): the guest only transmits and takes no serial interrupts.
//!
//! The device writes and flushes its output one byte at a time. A guest line is one `rep outsb`
//! (one exit) and stderr is unbuffered, so [`Console`] collects the bytes of one guest access and
//! hands them to the sink in one write at the end of the access, flushing at line ends; it keeps the
//! last [`TAIL_LINES`] complete lines for failure reports.

use crate::guest_text;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{self, Write};
use vm_superio::serial::NoEvents;
use vm_superio::Trigger;

/// First I/O port of COM1.
pub const COM1_BASE: u16 = 0x3f8;
/// Number of ports the UART decodes.
pub const COM1_PORTS: u16 = 8;

/// How many finished console lines a failure report can show.
pub const TAIL_LINES: usize = 12;
/// Longest line kept for those reports: a guest that never sends a newline cannot grow the VMM's
/// memory, its line is cut here (the console itself still gets every byte).
pub const MAX_LINE: usize = 4096;
/// Ends each piece of a line cut at [`MAX_LINE`], so a report never passes a piece off as a line.
pub const CUT_MARK: &str = " [cut at 4096 bytes, the line goes on]";

/// The UART and where its output goes.
pub struct Serial {
    uart: vm_superio::Serial<NoInterrupt, NoEvents, Console>,
}

impl Serial {
    /// A UART whose transmitted bytes go to `sink`.
    pub fn new(sink: Box<dyn Write + Send>) -> Self {
        Serial {
            uart: vm_superio::Serial::new(NoInterrupt, Console::new(sink)),
        }
    }

    /// True when `port` belongs to this UART.
    pub fn decodes(port: u16) -> bool {
        (COM1_BASE..COM1_BASE + COM1_PORTS).contains(&port)
    }

    /// A guest `out` (or `rep outs`) of `data` to `port`; a port outside COM1 is ignored.
    pub fn write(&mut self, port: u16, data: &[u8]) {
        let Some(offset) = register(port) else { return };
        for &byte in data {
            // Neither the console nor the interrupt line can fail, so neither can the device.
            if let Err(e) = self.uart.write(offset, byte) {
                log::debug!("COM1: {e}");
            }
        }
        self.uart.writer_mut().end_access();
    }

    /// A guest `in` (or `rep ins`) from `port`; a port outside COM1 reads as zero.
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        match register(port) {
            Some(offset) => data.iter_mut().for_each(|b| *b = self.uart.read(offset)),
            None => data.fill(0),
        }
    }

    /// The last complete lines, oldest first, plus the unfinished one if any.
    pub fn tail(&self) -> Vec<String> {
        self.uart.writer().tail()
    }
}

/// The register offset of `port` within COM1.
fn register(port: u16) -> Option<u8> {
    Serial::decodes(port).then(|| (port - COM1_BASE) as u8)
}

/// COM1's interrupt line, connected to nothing: no interrupt controller pin is routed to it.
pub struct NoInterrupt;

impl Trigger for NoInterrupt {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// The device's output: the console sink, and the lines it has seen.
struct Console {
    sink: Box<dyn Write + Send>,
    /// Bytes of the guest access under way, not yet handed to the sink.
    access: Vec<u8>,
    /// The unfinished line.
    line: Vec<u8>,
    tail: VecDeque<String>,
}

impl Console {
    fn new(sink: Box<dyn Write + Send>) -> Self {
        Console {
            sink,
            access: Vec::new(),
            line: Vec::new(),
            tail: VecDeque::with_capacity(TAIL_LINES),
        }
    }

    /// Hands the access's bytes to the sink in one write and records the lines they finish.
    fn end_access(&mut self) {
        if self.access.is_empty() {
            return;
        }
        // The console is best effort: a closed stdout must not stop the VM.
        let _ = self.sink.write_all(&self.access);
        for i in 0..self.access.len() {
            match self.access[i] {
                b'\n' => {
                    let _ = self.sink.flush();
                    self.finish_line(false);
                }
                b'\r' => {}
                b => {
                    if self.line.len() == MAX_LINE {
                        self.finish_line(true);
                    }
                    self.line.push(b);
                }
            }
        }
        self.access.clear();
    }

    /// Moves the unfinished line to the tail; `cut`: it goes on, and is marked so.
    fn finish_line(&mut self, cut: bool) {
        let mut line = guest_text::printable(&self.line);
        if cut {
            line.push_str(CUT_MARK);
        }
        self.line.clear();
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    fn tail(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.tail.iter().cloned().collect();
        if !self.line.is_empty() {
            lines.push(guest_text::printable(&self.line));
        }
        lines
    }
}

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.access.extend_from_slice(buf);
        Ok(buf.len())
    }

    /// The device flushes after every byte; the sink is flushed per line, in `end_access`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Register offsets and bits of a 16550, as a guest driver knows them.
    const LCR: u16 = 3;
    const MCR: u16 = 4;
    const LSR: u16 = 5;
    const LCR_DLAB: u8 = 0x80;
    const MCR_LOOP: u8 = 0x10;
    const LSR_THR_EMPTY: u8 = 0x20;
    const LSR_TX_IDLE: u8 = 0x40;

    /// A sink that records what it was given, write by write.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Shared {
        fn bytes(&self) -> Vec<u8> {
            self.0.lock().unwrap().concat()
        }
    }

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_without_an_end_is_cut_and_escapes_cannot_reach_the_terminal() {
        let shared = Shared::default();
        let mut uart = Serial::new(Box::new(shared.clone()));
        // 10,000 bytes and no newline: the kept line stops at MAX_LINE, the console gets it all.
        for _ in 0..10 {
            uart.write(COM1_BASE, &[b'x'; 1000]);
        }
        let tail = uart.tail();
        let pieces: Vec<&str> = tail
            .iter()
            .map(|l| l.strip_suffix(CUT_MARK).unwrap_or(l))
            .collect();
        assert!(
            pieces.iter().all(|l| l.len() <= MAX_LINE),
            "{:?}",
            pieces.iter().map(|l| l.len()).collect::<Vec<_>>()
        );
        assert_eq!(pieces.iter().map(|l| l.len()).sum::<usize>(), 10_000);
        // The two full pieces say they were cut; the unfinished rest is shown as it is.
        assert_eq!(tail.iter().filter(|l| l.ends_with(CUT_MARK)).count(), 2);
        assert_eq!(shared.bytes().len(), 10_000);
        uart.write(COM1_BASE, b"\n");
        // A terminal escape and a bell are shown, not sent, in the VMM's own lines.
        for &b in b"\x1b[2Jgone\x07\n" {
            uart.write(COM1_BASE, &[b]);
        }
        let last = uart.tail().pop().unwrap();
        assert_eq!(last, "\\u{1b}[2Jgone\\u{7}");
    }

    #[test]
    fn transmitted_bytes_reach_the_sink_and_the_tail() {
        let sink = Shared::default();
        let mut uart = Serial::new(Box::new(sink.clone()));
        uart.write(COM1_BASE, b"hello\nwor");
        uart.write(COM1_BASE, b"ld");
        assert_eq!(sink.bytes(), b"hello\nworld");
        assert_eq!(uart.tail(), vec!["hello".to_string(), "world".to_string()]);
    }

    #[test]
    fn one_guest_access_is_one_write_to_the_sink() {
        let sink = Shared::default();
        let mut uart = Serial::new(Box::new(sink.clone()));
        uart.write(COM1_BASE, b"a whole line\n");
        uart.write(COM1_BASE, b"x");
        assert_eq!(
            *sink.0.lock().unwrap(),
            vec![b"a whole line\n".to_vec(), b"x".to_vec()]
        );
    }

    #[test]
    fn divisor_latch_writes_are_not_transmitted() {
        let sink = Shared::default();
        let mut uart = Serial::new(Box::new(sink.clone()));
        uart.write(COM1_BASE + LCR, &[LCR_DLAB]);
        uart.write(COM1_BASE, &[1]);
        uart.write(COM1_BASE + LCR, &[3]);
        uart.write(COM1_BASE, b"x");
        assert_eq!(sink.bytes(), b"x");
    }

    #[test]
    fn loopback_bytes_are_not_transmitted() {
        let sink = Shared::default();
        let mut uart = Serial::new(Box::new(sink.clone()));
        uart.write(COM1_BASE + MCR, &[MCR_LOOP]);
        uart.write(COM1_BASE, b"probe");
        uart.write(COM1_BASE + MCR, &[0]);
        uart.write(COM1_BASE, b"out\n");
        assert_eq!(sink.bytes(), b"out\n");
        assert_eq!(uart.tail(), vec!["out".to_string()]);
    }

    #[test]
    fn line_status_always_reports_ready_to_send() {
        let mut uart = Serial::new(Box::new(std::io::sink()));
        uart.write(COM1_BASE, b"busy?\n");
        let mut lsr = [0u8; 2];
        uart.read(COM1_BASE + LSR, &mut lsr);
        let ready = LSR_THR_EMPTY | LSR_TX_IDLE;
        assert_eq!(lsr.map(|b| b & ready), [ready; 2]);
    }

    #[test]
    fn the_tail_keeps_only_the_last_lines() {
        let mut uart = Serial::new(Box::new(std::io::sink()));
        for i in 0..TAIL_LINES + 5 {
            uart.write(COM1_BASE, format!("line {i}\n").as_bytes());
        }
        let tail = uart.tail();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.first().unwrap(), "line 5");
        assert_eq!(tail.last().unwrap(), &format!("line {}", TAIL_LINES + 4));
    }

    #[test]
    fn the_tail_drops_carriage_returns_and_replaces_bad_utf8() {
        let mut uart = Serial::new(Box::new(std::io::sink()));
        uart.write(COM1_BASE, b"crlf\r\nbad \xff byte\n");
        assert_eq!(
            uart.tail(),
            vec!["crlf".to_string(), "bad \u{fffd} byte".to_string()]
        );
    }

    #[test]
    fn ports_outside_com1_are_ignored() {
        let sink = Shared::default();
        let mut uart = Serial::new(Box::new(sink.clone()));
        uart.write(COM1_BASE + COM1_PORTS, b"x");
        let mut data = [0xaa];
        uart.read(COM1_BASE - 1, &mut data);
        assert_eq!((sink.bytes(), data), (Vec::new(), [0]));
    }
}
