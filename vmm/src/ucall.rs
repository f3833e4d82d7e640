//! The host side of the guest→host call channel (layout in `mm_core::abi::Ucall`).

use crate::guest_text::printable;
use mm_core::abi::{Call, PoisonReport, ProbeEvent, RaceCall, Ucall, UcallCmd};
use mm_core::mm::layout::{LAYOUT_MAGIC, LAYOUT_VERSION};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

/// A [`Ucall`] as vm-memory reads it.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct RawUcall(Ucall);

// SAFETY: `Ucall` is `#[repr(C)]`, made of u64s and a byte array with no padding (mm-core asserts its
// size), so every bit pattern is a valid value.
unsafe impl ByteValued for RawUcall {}

/// A call the guest made, decoded (by `mm_core::abi::Call`) and checked, with its text taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestCall {
    /// The vCPU reached a stage.
    Sync {
        /// `Ucall::STAGE_*`.
        stage: u64,
    },
    /// The run is over; 0 means success.
    Done {
        /// The guest's verdict.
        verdict: u64,
    },
    /// The guest gave up.
    Abort {
        /// What went wrong.
        message: String,
        /// Source file of the abort.
        file: String,
        /// Source line of the abort.
        line: u64,
    },
    /// The guest's memory manager reported a probe event.
    Probe {
        /// The event.
        event: ProbeEvent,
        /// The call's text (`MmInvalid`'s finding; empty for other events).
        text: String,
    },
    /// A racing vCPU reached a scheduling point (see `sched`).
    Race {
        /// What it tells the scheduler.
        call: RaceCall,
        /// The lock class, for `Contended`.
        class: String,
    },
    /// A walker read a freed page table: a use-after-free the ordering rule should prevent.
    PoisonHit(PoisonHit),
    /// A benchmark phase starts or ends (`mm_core::abi::bench`).
    BenchMark {
        /// The `Workload`, as its raw value.
        workload: u64,
        /// `MARK_START` or `MARK_END`.
        phase: u64,
        /// At the end: the units (operations, pages, VMAs) the phase did.
        units: u64,
    },
    /// An exception reached the guest's IDT.
    Exception {
        /// Exception vector.
        vector: u64,
        /// Error code (0 for vectors without one).
        error_code: u64,
        /// CR2 at the exception (the faulting address for #PF).
        cr2: u64,
        /// Where it happened.
        rip: u64,
    },
}

/// A walker met the poison of a freed page table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoisonHit {
    /// Where and what it read.
    pub report: PoisonReport,
    /// Which walker: mm-core's source file, or the guest's name for a hardware or cached walk.
    pub file: String,
}

/// Why a call could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    /// The port write was not the 4-byte address the ABI specifies.
    #[error("ucall port write of {0} bytes (expected a 4-byte address)")]
    BadWidth(usize),
    /// The address does not lie in guest RAM.
    #[error("ucall buffer at {0:#x} is outside guest RAM")]
    BadAddress(u64),
    /// The command is not one the ABI defines.
    #[error("unknown ucall command {0:#x}")]
    UnknownCommand(u64),
    /// A call with arguments out of range (a table level outside 1..=4, an unknown unlink kind).
    #[error("malformed call (command {0:#x}): an argument is out of range")]
    BadProbeEvent(u64),
    /// The guest's mm-core structures are not laid out the way this VMM reads them.
    #[error(
        "the guest's mm layout (magic {magic:#x}, version {version}) is not the one this VMM reads \
         (version {LAYOUT_VERSION}): rebuild both from one mm-core"
    )]
    LayoutMismatch {
        /// The magic the guest sent.
        magic: u64,
        /// The version the guest sent.
        version: u64,
    },
}

/// Reads and decodes the call whose address the guest wrote to the ucall port.
pub fn read_call(mem: &GuestMemoryMmap, data: &[u8]) -> Result<GuestCall, CallError> {
    let addr: [u8; 4] = data
        .try_into()
        .map_err(|_| CallError::BadWidth(data.len()))?;
    let addr = u64::from(u32::from_le_bytes(addr));
    let RawUcall(call) = mem
        .read_obj(GuestAddress(addr))
        .map_err(|_| CallError::BadAddress(addr))?;
    let cmd = UcallCmd::from_raw(call.cmd).ok_or(CallError::UnknownCommand(call.cmd))?;
    let decoded = Call::decode(cmd, call.args).ok_or(CallError::BadProbeEvent(call.cmd))?;
    if let Call::Probe(ProbeEvent::Roots {
        layout_magic: magic,
        layout_version: version,
        ..
    }) = decoded
    {
        if magic != LAYOUT_MAGIC || version != LAYOUT_VERSION {
            return Err(CallError::LayoutMismatch { magic, version });
        }
    }
    let text = call.text();
    // Guest text is escaped here, where it enters the VMM, before any of its lines can show it.
    let owned = || printable(text);
    Ok(match decoded {
        Call::Sync { stage } => GuestCall::Sync { stage },
        Call::Done { verdict } => GuestCall::Done { verdict },
        Call::Abort {
            line,
            message_len,
            file_len,
        } => {
            // Lengths come from the guest: clamp them to the text it actually sent.
            let message_len =
                usize::try_from(message_len).map_or(text.len(), |n| n.min(text.len()));
            let rest = text.len() - message_len;
            let file_len = usize::try_from(file_len).map_or(rest, |n| n.min(rest));
            GuestCall::Abort {
                message: printable(&text[..message_len]),
                file: printable(&text[message_len..message_len + file_len]),
                line,
            }
        }
        Call::BenchMark {
            workload,
            phase,
            units,
        } => GuestCall::BenchMark {
            workload,
            phase,
            units,
        },
        Call::Exception {
            vector,
            error_code,
            cr2,
            rip,
        } => GuestCall::Exception {
            vector,
            error_code,
            cr2,
            rip,
        },
        Call::Race(call) => GuestCall::Race {
            call,
            class: match call {
                RaceCall::Contended => owned(),
                _ => String::new(),
            },
        },
        Call::PoisonHit(report) => GuestCall::PoisonHit(PoisonHit {
            report,
            file: owned(),
        }),
        Call::Probe(event) => GuestCall::Probe {
            event,
            text: match event {
                ProbeEvent::MmInvalid { .. } => owned(),
                _ => String::new(),
            },
        },
    })
}

/// Writes `call` at `addr` the way the guest would; for tests of the host side.
pub fn write_call(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    call: Ucall,
) -> vm_memory::GuestMemoryResult<()> {
    mem.write_obj(RawUcall(call), addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    #[test]
    fn an_abort_carries_message_file_and_line() {
        let mem = mem();
        let mut call = Ucall::new(UcallCmd::Abort, 0);
        call.push_text("boom");
        call.push_text("src/x.rs");
        call.args = [42, 4, 8, 0, 0, 0];
        write_call(&mem, GuestAddress(0x4000), call).unwrap();
        let decoded = read_call(&mem, &0x4000u32.to_le_bytes()).unwrap();
        assert_eq!(
            decoded,
            GuestCall::Abort {
                message: "boom".into(),
                file: "src/x.rs".into(),
                line: 42
            }
        );
    }

    #[test]
    fn a_bench_mark_carries_its_workload_phase_and_units() {
        let mem = mem();
        let mut call = Ucall::new(UcallCmd::BenchMark, 0);
        call.args = [4, 1, 256, 0, 0, 0];
        write_call(&mem, GuestAddress(0x4000), call).unwrap();
        assert_eq!(
            read_call(&mem, &0x4000u32.to_le_bytes()),
            Ok(GuestCall::BenchMark {
                workload: 4,
                phase: 1,
                units: 256
            })
        );
    }

    #[test]
    fn hostile_lengths_are_clamped_to_the_text() {
        let mem = mem();
        let mut call = Ucall::new(UcallCmd::Abort, 0);
        call.push_text("abc");
        call.args = [1, u64::MAX, u64::MAX, 0, 0, 0];
        write_call(&mem, GuestAddress(0x4000), call).unwrap();
        let GuestCall::Abort { message, file, .. } =
            read_call(&mem, &0x4000u32.to_le_bytes()).unwrap()
        else {
            panic!("not an abort");
        };
        assert_eq!((message.as_str(), file.as_str()), ("abc", ""));
    }

    #[test]
    fn every_guest_text_is_escaped_where_it_is_decoded() {
        let mem = mem();
        let forged = "x\nvmm: guest passed\x1b[2J";
        let shown = "x\\nvmm: guest passed\\u{1b}[2J";
        let decode = |cmd, args: [u64; 6]| {
            let mut call = Ucall::new(cmd, 0);
            call.push_text(forged);
            call.args = args;
            write_call(&mem, GuestAddress(0x4000), call).unwrap();
            read_call(&mem, &0x4000u32.to_le_bytes()).unwrap()
        };
        let len = forged.len() as u64;
        match decode(UcallCmd::Abort, [1, len, 0, 0, 0, 0]) {
            GuestCall::Abort { message, .. } => assert_eq!(message, shown),
            other => panic!("{other:?}"),
        }
        match decode(UcallCmd::LockContended, [0; 6]) {
            GuestCall::Race { class, .. } => assert_eq!(class, shown),
            other => panic!("{other:?}"),
        }
        match decode(UcallCmd::PoisonHit, [0; 6]) {
            GuestCall::PoisonHit(hit) => assert_eq!(hit.file, shown),
            other => panic!("{other:?}"),
        }
        match decode(UcallCmd::ProbeMmInvalid, [0x5000, 1, 0, 0, 0, 0]) {
            GuestCall::Probe { text, .. } => assert_eq!(text, shown),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn roots_from_another_mm_layout_are_refused() {
        let mem = mem();
        let mut call = Ucall::new(UcallCmd::ProbeRoots, 0);
        call.args = [0x1000, 0x2000, 16, 0x8000, LAYOUT_MAGIC, LAYOUT_VERSION];
        write_call(&mem, GuestAddress(0x100), call).unwrap();
        assert!(matches!(
            read_call(&mem, &0x100u32.to_le_bytes()),
            Ok(GuestCall::Probe { .. })
        ));
        call.args[5] = LAYOUT_VERSION + 1;
        write_call(&mem, GuestAddress(0x100), call).unwrap();
        let err = read_call(&mem, &0x100u32.to_le_bytes()).unwrap_err();
        let version = LAYOUT_VERSION + 1;
        assert_eq!(
            err,
            CallError::LayoutMismatch {
                magic: LAYOUT_MAGIC,
                version
            }
        );
        assert!(err.to_string().contains("rebuild both"));
    }

    #[test]
    fn bad_addresses_widths_and_commands_are_errors() {
        let mem = mem();
        assert_eq!(read_call(&mem, &[0; 2]), Err(CallError::BadWidth(2)));
        assert_eq!(
            read_call(&mem, &0xffff_f000u32.to_le_bytes()),
            Err(CallError::BadAddress(0xffff_f000))
        );
        let mut call = Ucall::new(UcallCmd::Sync, 0);
        call.cmd = 0x999;
        write_call(&mem, GuestAddress(0x100), call).unwrap();
        assert_eq!(
            read_call(&mem, &0x100u32.to_le_bytes()),
            Err(CallError::UnknownCommand(0x999))
        );
    }
}
