//! The guest/host ABI: structures both sides read, defined once here.
//!
//! Every structure is `#[repr(C)]` and built only from `u64`s and byte arrays, so its layout has no
//! padding and is the same for the guest (`x86_64-unknown-none`) and the host. [`ABI_VERSION`]
//! changes whenever a layout does; the VMM refuses a guest that publishes another version.

mod bench;
mod boot;
mod call;
pub mod coverage;
pub mod replay;
mod scenarios;
mod ucall;

pub use bench::{Workload, MARK_END, MARK_START};
pub use boot::{BootInfo, BOOT_INFO_MAGIC, SCENARIO_NAME_MAX};
pub use call::{Call, PoisonReport, ProbeEvent, RaceCall, TableSpan};
pub use coverage::FreePath;
pub use scenarios::{find_scenario, Expect, ScenarioInfo, DEFAULT_SCENARIO, SCENARIOS};
pub use ucall::{SchedPointKind, Ucall, UcallCmd, PING_PORT, UCALL_PORT, UCALL_TEXT_MAX};

/// Layout version of every structure in this module.
pub const ABI_VERSION: u64 = 5;

/// How many of the most recently freed page-table frames the host may revoke from the guest (its
/// quarantine); the guest's frame allocator leaves more than that many untouched after freeing.
pub const QUARANTINE_TABLES: usize = 8;

/// Most vCPUs a VM may have: the guest sizes its per-CPU tables by it.
pub const MAX_VCPUS: usize = 8;
