//! A subset of a 16550 UART on COM1: enough for a guest that only transmits.
//!
//! Bytes written to the transmit register go to the console sink as they come; the line status
//! register always says "ready to send", so the guest never needs to poll. The last few complete
//! lines are kept for failure reports.

use std::collections::VecDeque;
use std::io::Write;

/// First I/O port of COM1.
pub const COM1_BASE: u16 = 0x3f8;
/// Number of ports the UART decodes.
pub const COM1_PORTS: u16 = 8;

/// Register offsets from [`COM1_BASE`].
const THR: u16 = 0; // transmit holding (write, DLAB = 0)
const IER: u16 = 1;
const LCR: u16 = 3;
const LSR: u16 = 5;
const MSR: u16 = 6;
const SCR: u16 = 7;
/// Line control: divisor latch access.
const LCR_DLAB: u8 = 0x80;
/// Line status: transmit holding register and transmitter empty.
const LSR_THR_EMPTY: u8 = 0x20;
const LSR_TX_IDLE: u8 = 0x40;
/// Modem status: data carrier detect, data set ready, clear to send.
const MSR_READY: u8 = 0xb0;

/// How many finished console lines a failure report can show.
pub const TAIL_LINES: usize = 12;

/// The UART and where its output goes.
pub struct Serial {
    sink: Box<dyn Write + Send>,
    lcr: u8,
    ier: u8,
    scratch: u8,
    line: Vec<u8>,
    tail: VecDeque<String>,
}

impl Serial {
    /// A UART whose transmitted bytes go to `sink`.
    pub fn new(sink: Box<dyn Write + Send>) -> Self {
        Serial {
            sink,
            lcr: 0,
            ier: 0,
            scratch: 0,
            line: Vec::new(),
            tail: VecDeque::new(),
        }
    }

    /// True when `port` belongs to this UART.
    pub fn decodes(port: u16) -> bool {
        (COM1_BASE..COM1_BASE + COM1_PORTS).contains(&port)
    }

    /// A guest `out` (or `rep outs`) of `data` to `port`.
    pub fn write(&mut self, port: u16, data: &[u8]) {
        let Some(&last) = data.last() else { return };
        match port - COM1_BASE {
            THR if self.lcr & LCR_DLAB == 0 => self.transmit(data),
            IER if self.lcr & LCR_DLAB == 0 => self.ier = last,
            LCR => self.lcr = last,
            SCR => self.scratch = last,
            // Divisor latch, FIFO and modem control: accepted and ignored.
            _ => {}
        }
    }

    /// A guest `in` from `port`.
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        let value = match port - COM1_BASE {
            IER if self.lcr & LCR_DLAB == 0 => self.ier,
            LCR => self.lcr,
            LSR => LSR_THR_EMPTY | LSR_TX_IDLE,
            MSR => MSR_READY,
            SCR => self.scratch,
            _ => 0,
        };
        data.fill(value);
    }

    fn transmit(&mut self, bytes: &[u8]) {
        // The console is best effort: a closed stdout must not stop the VM.
        let _ = self.sink.write_all(bytes);
        for &b in bytes {
            if b == b'\n' {
                let _ = self.sink.flush();
                let line = String::from_utf8_lossy(&self.line).into_owned();
                self.line.clear();
                if self.tail.len() == TAIL_LINES {
                    self.tail.pop_front();
                }
                self.tail.push_back(line);
            } else if b != b'\r' {
                self.line.push(b);
            }
        }
    }

    /// The last complete lines, oldest first, plus the unfinished one if any.
    pub fn tail(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.tail.iter().cloned().collect();
        if !self.line.is_empty() {
            lines.push(String::from_utf8_lossy(&self.line).into_owned());
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmitted_bytes_reach_the_sink_and_the_tail() {
        let sink = Shared::default();
        let mut uart = Serial::new(Box::new(sink.clone()));
        uart.write(COM1_BASE, b"hello\nwor");
        uart.write(COM1_BASE, b"ld");
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\nworld");
        assert_eq!(uart.tail(), vec!["hello".to_string(), "world".to_string()]);
    }

    #[test]
    fn divisor_latch_writes_are_not_transmitted() {
        let sink = Shared::default();
        let mut uart = Serial::new(Box::new(sink.clone()));
        uart.write(COM1_BASE + LCR, &[LCR_DLAB]);
        uart.write(COM1_BASE, &[1]);
        uart.write(COM1_BASE + LCR, &[3]);
        uart.write(COM1_BASE, b"x");
        assert_eq!(&*sink.0.lock().unwrap(), b"x");
    }

    #[test]
    fn line_status_always_reports_ready_to_send() {
        let mut uart = Serial::new(Box::new(std::io::sink()));
        let mut lsr = [0u8];
        uart.read(COM1_BASE + LSR, &mut lsr);
        assert_eq!(lsr[0] & LSR_THR_EMPTY, LSR_THR_EMPTY);
    }

    #[test]
    fn the_tail_keeps_only_the_last_lines() {
        let mut uart = Serial::new(Box::new(std::io::sink()));
        for i in 0..TAIL_LINES + 5 {
            uart.write(COM1_BASE, format!("line {i}\n").as_bytes());
        }
        let tail = uart.tail();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.last().unwrap(), &format!("line {}", TAIL_LINES + 4));
    }
}
