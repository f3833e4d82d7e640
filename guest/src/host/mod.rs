//! The channel to the host: everything the guest tells the VMM, defined in `mm_core::abi`.
//!
//! - [`ucall`]: the guest side of the guest→host call channel.
//! - [`console`]: the COM1 console and the `log` backend.
//! - [`probes`]: mm-core's ordering events, reported to the host's probes.
//! - [`race`]: racing vCPUs, the guest side of the host's race scheduler.
pub mod console;
pub mod probes;
pub mod race;
pub mod ucall;
