//! The boot-info page: what the VMM tells the guest kernel before its first instruction.

use super::ABI_VERSION;

/// "MMBOOTIN" in little-endian ASCII: marks a valid [`BootInfo`].
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"MMBOOTIN");

/// Longest scenario name the boot info carries, in bytes.
pub const SCENARIO_NAME_MAX: usize = 48;

/// Written by the VMM at `layout::BOOT_INFO` and handed to every vCPU in `rdi`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    /// [`BOOT_INFO_MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`] of the VMM that wrote this page.
    pub abi_version: u64,
    /// Guest RAM size in bytes; RAM is one range starting at guest-physical 0.
    pub ram_size: u64,
    /// Number of vCPUs the VMM runs; each enters the kernel with its index in `rsi`.
    pub vcpus: u64,
    /// First byte of RAM that nothing else uses: the frame allocator's (4 KiB aligned).
    pub free_start: u64,
    /// End (exclusive) of the RAM free for the frame allocator.
    pub free_end: u64,
    /// Base of the per-CPU stacks; vCPU `i` owns `[base + i*size, base + (i+1)*size)`.
    pub stacks_base: u64,
    /// Size of one per-CPU stack in bytes.
    pub stack_size: u64,
    /// The seed the user gave (`--seed`), for scenarios that make random choices.
    pub seed: u64,
    /// Guest log level: 0 off, 1 error, 2 warn, 3 info, 4 debug, 5 trace (as `log::LevelFilter`).
    pub log_level: u64,
    /// The mm-core ordering variant to run (`Variant::as_u64`; 0 = `correct`).
    pub variant: u64,
    /// Workload size for scenarios that take one (`--scale`; `probe-bench`: VMAs), 0 = default.
    pub scale: u64,
    /// `--inject`: the allocation of each scenario process that fails (1-based; 0 = none).
    pub inject_nth: u64,
    /// `--inject`: the `AllocKind` counted (`AllocKind as u64`), 0 = every kind.
    pub inject_kind: u64,
    /// Length in bytes of the scenario name in [`BootInfo::scenario`].
    pub scenario_len: u64,
    /// The scenario to run, UTF-8, not NUL-terminated.
    pub scenario: [u8; SCENARIO_NAME_MAX],
    /// Guest-physical address of the scenario's input (`replay`: the op stream of
    /// `abi::replay`), outside the frame allocator's range; 0 = none.
    pub input_gpa: u64,
    /// Bytes of input.
    pub input_len: u64,
    /// Guest-physical address of a buffer the scenario may write its result to, for the VMM to
    /// read after the run (`replay`: the final address space); 0 = none.
    pub output_gpa: u64,
    /// Bytes of the output buffer.
    pub output_len: u64,
    /// Send `ProbeQuiescent` at every this-many-th quiescent point (end of an mm system call or
    /// fault, end of a process); 0 = never.
    pub sweep_every: u64,
    /// Probe mode flags ([`BootInfo::THOROUGH`]).
    pub probe_flags: u64,
}

impl BootInfo {
    /// [`BootInfo::probe_flags`] bit: the run is `--thorough`; the guest also runs `validate_mm`
    /// after every mm system call and reports what it finds.
    pub const THOROUGH: u64 = 1 << 0;
    /// [`BootInfo::probe_flags`] bit: run `validate_mm` at every process exit (campaigns).
    pub const VALIDATE_AT_EXIT: u64 = 1 << 1;
}

impl BootInfo {
    /// A boot info for `scenario`, with every other field zero; `None` when the name is too long.
    pub fn new(scenario: &str) -> Option<Self> {
        let bytes = scenario.as_bytes();
        if bytes.len() > SCENARIO_NAME_MAX {
            return None;
        }
        let mut name = [0u8; SCENARIO_NAME_MAX];
        name[..bytes.len()].copy_from_slice(bytes);
        Some(BootInfo {
            magic: BOOT_INFO_MAGIC,
            abi_version: ABI_VERSION,
            ram_size: 0,
            vcpus: 0,
            free_start: 0,
            free_end: 0,
            stacks_base: 0,
            stack_size: 0,
            seed: 0,
            log_level: 0,
            variant: 0,
            scale: 0,
            inject_nth: 0,
            inject_kind: 0,
            scenario_len: bytes.len() as u64,
            scenario: name,
            input_gpa: 0,
            input_len: 0,
            output_gpa: 0,
            output_len: 0,
            sweep_every: 0,
            probe_flags: 0,
        })
    }

    /// The scenario name, or `None` when the length or the bytes are not a valid name.
    pub fn scenario(&self) -> Option<&str> {
        let len = usize::try_from(self.scenario_len).ok()?;
        core::str::from_utf8(self.scenario.get(..len)?).ok()
    }

    /// True when the magic and the layout version match this build.
    pub fn is_valid(&self) -> bool {
        self.magic == BOOT_INFO_MAGIC && self.abi_version == ABI_VERSION
    }
}

const _: () = assert!(core::mem::size_of::<BootInfo>() == 21 * 8 + SCENARIO_NAME_MAX);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_name_round_trips() {
        let info = BootInfo::new("hello").unwrap();
        assert!(info.is_valid());
        assert_eq!(info.scenario(), Some("hello"));
    }

    #[test]
    fn too_long_or_corrupt_names_are_refused() {
        assert!(BootInfo::new(&"x".repeat(SCENARIO_NAME_MAX + 1)).is_none());
        let mut info = BootInfo::new("ok").unwrap();
        info.scenario_len = 1000;
        assert_eq!(info.scenario(), None);
    }
}
