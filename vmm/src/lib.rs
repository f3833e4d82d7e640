//! vmm: a tiny KVM VMM that boots the bare-metal guest kernel in long mode and runs its scenarios.
//!
//! The flow of one run ([`run::run`]): [`vstate::vm::Vm::new`] opens KVM, creates the VM with an
//! in-kernel irqchip, allocates guest RAM ([`vstate::memory`]), loads the kernel ELF ([`loader`]),
//! writes the GDT, boot page tables and boot info ([`arch::x86_64`]); [`vstate::vcpu::Vcpu`] puts each
//! vCPU straight into long mode; one thread per vCPU runs it, handing every KVM exit to
//! [`vstate::exit::handle_exit`]; the guest talks back through the call channel ([`ucall`]) and the
//! COM1 console ([`devices::serial`]).
//!
//! Modules:
//! - [`arch`]: guest-physical layout, GDT, boot page tables, long-mode registers,
//!   exception names.
//! - [`vstate`]: the VM, its memory, the vCPUs and the meaning of each exit.
//! - [`devices`]: the COM1 console (rust-vmm's `vm-superio` 16550).
//! - [`ucall`]: the host side of the guest→host call channel.
//! - [`inject`]: the `--inject` fault-injection spec.
//! - [`loader`]: checks and loads the kernel ELF.
//! - [`probe`]: the host probes that check the guest's page-table frees against its rmap structures.
//! - [`quarantine`]: revoking the guest's access to freshly freed page-table frames.
//! - [`sched`]: the race scheduler: host-controlled interleaving of racing vCPUs.
//! - [`calls`]: what the VMM does with each guest call (probe checks, quarantine, races), without KVM.
//! - [`run`]: one run, from VM creation to outcome, with the watchdog.
//! - [`timing`]: exit timing for the probe benchmark.
//! - [`replay`]: `vmm replay` in the guest: the op stream in, the final address space out.
//! - [`report`]: the probes' end-of-run summary and JSON report.
//! - [`trace_events`]: `--trace-events`: the run as Chrome trace-event JSON (Perfetto), a track per
//!   vCPU.
//! - [`out_file`]: output files checked before the run and written atomically.
//! - [`in_file`]: input files checked from their metadata and read through a size limit.
//! - [`cli`]: command-line parsing.
//! - [`bench`]: `vmm bench`: boot, probe cost, mm workloads (host and guest) against Linux,
//!   scaling and campaign throughput, each against its anchor.
//! - [`campaign`]: one scenario over many seeds in parallel `vmm run` children, sharded and merged.
//! - [`progress`]: progress on stderr for campaign and bench: a bar on a terminal, else plain lines.

// `unsafe` only where the VMM meets KVM and the host OS (`vstate`, `quarantine`: memory slots,
// thread signals) and where guest bytes become a structure (`ucall`: `ByteValued`).
#![deny(unsafe_code)]

pub mod arch;
pub mod bench;
pub mod calls;
pub mod campaign;
pub mod cli;
pub mod devices;
pub mod difftest;
pub mod guest_text;
pub mod in_file;
pub mod inject;
pub mod loader;
pub mod out_file;
pub mod probe;
pub mod progress;
#[allow(unsafe_code)]
pub mod quarantine;
pub mod replay;
pub mod report;
pub mod run;
pub mod sched;
pub mod timing;
pub mod trace_events;
#[allow(unsafe_code)]
pub mod ucall;
#[allow(unsafe_code)]
pub mod vstate;

/// Process exit codes.
pub mod exit_code {
    /// The guest reported success.
    pub const SUCCESS: u8 = 0;
    /// The guest failed (abort, panic, exception, triple fault, KVM error, watchdog) or the host
    /// cannot run it (no KVM).
    pub const FAILURE: u8 = 1;
    /// The command line or an input file is wrong.
    pub const USAGE: u8 = 2;
}
