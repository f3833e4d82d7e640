//! The VM: KVM handle, in-kernel irqchip, guest RAM with the kernel, boot tables and boot info.

use super::memory::{create_guest_memory, MemoryError};
use crate::arch::x86_64::layout::{BOOT_INFO_START, KVM_TSS_ADDRESS, PAGE_SIZE, STACK_SIZE};
use crate::arch::x86_64::{paging, regs};
use crate::loader::{check_kernel, load_kernel, LoadError, LoadedKernel};
use kvm_ioctls::{Kvm, VmFd};
use mm_core::abi::{BootInfo, MAX_VCPUS};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

/// RAM left for the frame allocator at the very least, after kernel and stacks.
const MIN_FREE_RAM: u64 = 4 << 20;

/// What the VM is built from.
#[derive(Clone, Debug)]
pub struct VmConfig<'a> {
    /// Guest RAM in bytes (a multiple of 2 MiB within the layout's limits; the CLI checks).
    pub ram_size: u64,
    /// Number of vCPUs.
    pub vcpus: usize,
    /// Scenario the guest runs.
    pub scenario: &'a str,
    /// Seed for the scenario's random choices.
    pub seed: u64,
    /// Guest log level (0 off … 5 trace).
    pub log_level: u64,
    /// The mm-core ordering variant the guest follows.
    pub variant: mm_core::Variant,
    /// Workload size for scenarios that take one (0 = their default).
    pub scale: u64,
    /// Fault injection, if any.
    pub inject: Option<crate::inject::InjectSpec>,
    /// The kernel ELF image.
    pub kernel: &'a [u8],
    /// The scenario's input (`replay`: its op stream), placed at the top of RAM; empty = none.
    pub input: &'a [u8],
    /// Bytes of RAM to set aside, below the input, for the scenario's output; 0 = none.
    pub output_len: u64,
    /// What the guest reports for the probes beyond its events (`BootInfo::sweep_every`,
    /// `BootInfo::probe_flags`).
    pub probes: GuestProbes,
}

impl<'a> VmConfig<'a> {
    /// One vCPU running `scenario` of the guest kernel on `input`, with `output_len` bytes for
    /// its output, the default probes and the VMM's log level: the shape of the runs that carry
    /// data in and out (`vmm replay`, `vmm difftest --guest`).
    pub fn with_input(
        ram_size: u64,
        scenario: &'a str,
        variant: mm_core::Variant,
        input: &'a [u8],
        output_len: u64,
    ) -> VmConfig<'a> {
        VmConfig {
            ram_size,
            vcpus: 1,
            scenario,
            seed: 0,
            log_level: log::max_level() as u64,
            variant,
            scale: 0,
            inject: None,
            kernel: crate::loader::GUEST_KERNEL,
            input,
            output_len,
            probes: GuestProbes::DEFAULT,
        }
    }
}

/// The guest's part in the probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestProbes {
    /// Report every this-many-th quiescent point, where the VMM sweeps (0 = never).
    pub sweep_every: u64,
    /// `BootInfo::THOROUGH`, `BootInfo::VALIDATE_AT_EXIT`.
    pub flags: u64,
}

impl GuestProbes {
    /// The default: a sweep every [`GuestProbes::DEFAULT_SWEEP_EVERY`] quiescent points.
    pub const DEFAULT: GuestProbes = GuestProbes {
        sweep_every: Self::DEFAULT_SWEEP_EVERY,
        flags: 0,
    };
    /// Quiescent points (mm system calls, faults, process ends) between two sweeps by default.
    pub const DEFAULT_SWEEP_EVERY: u64 = 32;
}

/// Why the VM could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm is missing or not accessible.
    #[error(
        "cannot open /dev/kvm ({0}): this needs Linux with KVM; load kvm_intel or kvm_amd and give this user read-write access to /dev/kvm"
    )]
    OpenKvm(kvm_ioctls::Error),
    /// More vCPUs than KVM or the guest's tables allow.
    #[error("--vcpus {requested}: at most {max} vCPUs are allowed here")]
    TooManyVcpus {
        /// What the user asked for.
        requested: usize,
        /// What this host and the guest support.
        max: usize,
    },
    /// The boot-info scenario field cannot hold the name.
    #[error("scenario name '{0}' is too long")]
    ScenarioName(String),
    /// A KVM ioctl failed while building the VM.
    #[error("{step} failed: {source}")]
    Kvm {
        /// The step that failed.
        step: &'static str,
        /// KVM's error.
        source: kvm_ioctls::Error,
    },
    /// Guest RAM could not be set up.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The kernel image was refused.
    #[error(transparent)]
    Kernel(#[from] LoadError),
    /// The scenario's input and output buffers leave too little RAM.
    #[error(
        "the scenario's input ({input} bytes) and output buffer ({output} bytes) do not fit guest \
         RAM: {room} bytes ({} MiB) of its {} MiB are free after the kernel, the stacks and the \
         frame allocator's minimum",
        room >> 20,
        ram >> 20
    )]
    InputTooLarge {
        /// Input bytes.
        input: usize,
        /// Output bytes.
        output: u64,
        /// What the two could have had.
        room: u64,
        /// Guest RAM.
        ram: u64,
    },
    /// Writing a boot structure to guest RAM failed.
    #[error("writing {what} to guest memory failed: {source}")]
    Write {
        /// What was being written.
        what: &'static str,
        /// vm-memory's error.
        source: GuestMemoryError,
    },
}

/// The boot info as vm-memory writes it.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct RawBootInfo(BootInfo);

// SAFETY: `BootInfo` is `#[repr(C)]`, made of u64s and a byte array with no padding (mm-core asserts
// its size), so every bit pattern is a valid value.
unsafe impl ByteValued for RawBootInfo {}

/// A VM ready for its vCPUs.
pub struct Vm {
    /// The VM file descriptor.
    pub fd: VmFd,
    /// Guest RAM; dropped after `fd`, so KVM never sees a slot without its mapping.
    pub mem: GuestMemoryMmap,
    /// The KVM system handle (CPUID, limits).
    pub kvm: Kvm,
    /// Where the kernel landed.
    pub kernel: LoadedKernel,
    /// What the guest was told.
    pub boot_info: BootInfo,
    /// CR3 of the boot page tables.
    pub cr3: u64,
}

impl VmError {
    /// True when the error is the user's input (flags, kernel, scenario input), known before KVM
    /// is touched: a usage error (exit 2), not a failed run.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            VmError::TooManyVcpus { .. }
                | VmError::ScenarioName(_)
                | VmError::Kernel(_)
                | VmError::InputTooLarge { .. }
        )
    }
}

/// Where the scenario's input and output buffer go in guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ScenarioIo {
    /// The input's first byte, at the top of RAM.
    input_gpa: u64,
    /// The output buffer's, just below the input; the frame allocator ends here.
    output_gpa: u64,
}

/// Checks what [`Vm::new`] would refuse of `config` without opening KVM: the kernel image, and
/// that the scenario's input and output fit guest RAM. A caller with input to prepare (`vmm
/// replay`) learns before building anything that it is too big.
pub fn check(config: &VmConfig<'_>) -> Result<(), VmError> {
    layout(config).map(|_| ())
}

/// Where the scenario's I/O goes, once the kernel image passed its checks ([`check`]).
fn layout(config: &VmConfig<'_>) -> Result<Option<ScenarioIo>, VmError> {
    let stacks_room = config.vcpus as u64 * STACK_SIZE + MIN_FREE_RAM;
    let kernel = check_kernel(config.kernel, config.ram_size.saturating_sub(stacks_room))?;
    scenario_io(
        config,
        stacks_base(kernel.end) + config.vcpus as u64 * STACK_SIZE,
    )
}

/// Where the vCPUs' stacks start: the first page after the kernel image ending at `kernel_end`.
/// The frame allocator's range starts after them.
fn stacks_base(kernel_end: u64) -> u64 {
    kernel_end.next_multiple_of(PAGE_SIZE)
}

impl Vm {
    /// Opens KVM and builds a VM from `config`: RAM, irqchip, kernel, GDT, page tables, boot info.
    pub fn new(config: &VmConfig<'_>) -> Result<Vm, VmError> {
        // Bad input is reported before KVM is touched, so it reads the same on any host.
        let io = layout(config)?;
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let max = max_vcpus(&kvm);
        if config.vcpus == 0 || config.vcpus > max {
            return Err(VmError::TooManyVcpus {
                requested: config.vcpus,
                max,
            });
        }
        let mut boot_info = BootInfo::new(config.scenario)
            .ok_or_else(|| VmError::ScenarioName(config.scenario.into()))?;

        let kvm_step = |step| move |source| VmError::Kvm { step, source };
        let fd = kvm.create_vm().map_err(kvm_step("KVM_CREATE_VM"))?;
        if let Err(e) = fd.set_tss_address(KVM_TSS_ADDRESS as usize) {
            log::debug!("KVM_SET_TSS_ADDR: {e} (only needed on Intel hosts)");
        }
        fd.create_irq_chip()
            .map_err(kvm_step("KVM_CREATE_IRQCHIP"))?;
        let mem = create_guest_memory(&fd, config.ram_size)?;

        let stacks_room = config.vcpus as u64 * STACK_SIZE + MIN_FREE_RAM;
        let kernel = load_kernel(
            &mem,
            config.kernel,
            config.ram_size.saturating_sub(stacks_room),
        )?;
        let write = |what| move |source| VmError::Write { what, source };
        regs::write_gdt(&mem).map_err(write("the GDT"))?;
        let cr3 = paging::write_boot_page_tables(&mem, config.ram_size)
            .map_err(write("the boot page tables"))?;

        let stacks_base = stacks_base(kernel.end);
        boot_info.ram_size = config.ram_size;
        boot_info.vcpus = config.vcpus as u64;
        boot_info.stacks_base = stacks_base;
        boot_info.stack_size = STACK_SIZE;
        boot_info.free_start = stacks_base + config.vcpus as u64 * STACK_SIZE;
        boot_info.free_end = config.ram_size;
        if let Some(io) = io {
            place_scenario_io(&mem, config, io, &mut boot_info)?;
        }
        boot_info.seed = config.seed;
        boot_info.log_level = config.log_level;
        boot_info.variant = config.variant.as_u64();
        boot_info.scale = config.scale;
        boot_info.sweep_every = config.probes.sweep_every;
        boot_info.probe_flags = config.probes.flags;
        if let Some(spec) = config.inject {
            boot_info.inject_nth = spec.nth_for(config.seed);
            boot_info.inject_kind = spec.kind.map_or(0, |k| k as u64);
        }
        mem.write_obj(RawBootInfo(boot_info), BOOT_INFO_START)
            .map_err(write("the boot info"))?;

        Ok(Vm {
            fd,
            mem,
            kvm,
            kernel,
            boot_info,
            cr3,
        })
    }

    /// Top of vCPU `index`'s stack.
    pub fn stack_top(&self, index: usize) -> u64 {
        self.boot_info.stacks_base + (index as u64 + 1) * self.boot_info.stack_size
    }
}

/// Places the scenario's input at the top of RAM and its output buffer just below, taking both
/// from the frame allocator's range (`free_start` up to the end of RAM), which must keep
/// [`MIN_FREE_RAM`]; `None` when there is neither.
fn scenario_io(config: &VmConfig<'_>, free_start: u64) -> Result<Option<ScenarioIo>, VmError> {
    if config.input.is_empty() && config.output_len == 0 {
        return Ok(None);
    }
    let too_large = || VmError::InputTooLarge {
        input: config.input.len(),
        output: config.output_len,
        room: config
            .ram_size
            .saturating_sub(free_start.saturating_add(MIN_FREE_RAM)),
        ram: config.ram_size,
    };
    // Page-rounded sizes, checked: a size near 2^64 must not wrap into one that fits.
    let pages = |len: u64| len.checked_next_multiple_of(PAGE_SIZE);
    let input_gpa = pages(config.input.len() as u64)
        .and_then(|len| config.ram_size.checked_sub(len))
        .ok_or_else(too_large)?;
    let output_gpa = pages(config.output_len)
        .and_then(|len| input_gpa.checked_sub(len))
        .ok_or_else(too_large)?;
    if output_gpa < free_start.saturating_add(MIN_FREE_RAM) {
        return Err(too_large());
    }
    Ok(Some(ScenarioIo {
        input_gpa,
        output_gpa,
    }))
}

/// Writes the scenario's input where [`scenario_io`] placed it and tells the guest where both
/// buffers are, ending the frame allocator's range below them.
fn place_scenario_io(
    mem: &GuestMemoryMmap,
    config: &VmConfig<'_>,
    io: ScenarioIo,
    boot_info: &mut BootInfo,
) -> Result<(), VmError> {
    mem.write_slice(config.input, GuestAddress(io.input_gpa))
        .map_err(|source| VmError::Write {
            what: "the scenario input",
            source,
        })?;
    let input_len = config.input.len() as u64;
    boot_info.input_gpa = if input_len > 0 { io.input_gpa } else { 0 };
    boot_info.input_len = input_len;
    boot_info.output_gpa = if config.output_len > 0 {
        io.output_gpa
    } else {
        0
    };
    boot_info.output_len = config.output_len;
    boot_info.free_end = io.output_gpa;
    Ok(())
}

/// The most vCPUs a VM may have here: KVM's limit, capped by the guest's per-CPU tables.
pub fn max_vcpus(kvm: &Kvm) -> usize {
    kvm.get_max_vcpus().min(MAX_VCPUS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::DEFAULT_RAM;
    use crate::loader::GUEST_KERNEL;

    fn config<'a>(input: &'a [u8], output_len: u64) -> VmConfig<'a> {
        VmConfig {
            ram_size: DEFAULT_RAM,
            vcpus: 1,
            scenario: "replay",
            seed: 0,
            log_level: 0,
            variant: mm_core::Variant::Correct,
            scale: 0,
            inject: None,
            kernel: GUEST_KERNEL,
            input,
            output_len,
            probes: GuestProbes::DEFAULT,
        }
    }

    #[test]
    fn scenario_io_that_fits_goes_at_the_top_of_ram_and_the_check_needs_no_kvm() {
        let input = [1u8; 5000];
        assert!(check(&config(&input, 1 << 20)).is_ok());
        let free_start = 4 << 20;
        let io = scenario_io(&config(&input, 1 << 20), free_start).unwrap();
        assert_eq!(
            io,
            Some(ScenarioIo {
                input_gpa: DEFAULT_RAM - 2 * PAGE_SIZE,
                output_gpa: DEFAULT_RAM - 2 * PAGE_SIZE - (1 << 20),
            })
        );
        assert_eq!(scenario_io(&config(&[], 0), free_start).unwrap(), None);
    }

    #[test]
    fn scenario_io_too_big_for_guest_ram_is_bad_input_known_before_kvm() {
        let input = vec![0u8; 100 << 20];
        let err = check(&config(&input, 200 << 20)).unwrap_err();
        assert!(
            matches!(err, VmError::InputTooLarge { input: i, ram, .. } if i == 100 << 20 && ram == DEFAULT_RAM),
            "{err}"
        );
        assert!(err.is_bad_input());
        let text = err.to_string();
        assert!(
            text.contains("do not fit guest RAM") && text.contains("256 MiB"),
            "{text}"
        );
        // An output length near 2^64 cannot wrap the arithmetic into a fit.
        let err = check(&config(&[], u64::MAX - 10)).unwrap_err();
        assert!(matches!(err, VmError::InputTooLarge { .. }), "{err}");
    }
}
