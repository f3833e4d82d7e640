//! Guest RAM: one anonymous mapping from guest-physical 0, registered with KVM as slot 0.

use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Why guest RAM could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// mmap of the RAM failed.
    #[error("cannot allocate {size} bytes of guest RAM: {source}")]
    Allocate {
        /// Requested size.
        size: u64,
        /// What vm-memory said.
        source: vm_memory::mmap::FromRangesError,
    },
    /// KVM refused the memory slot.
    #[error("KVM_SET_USER_MEMORY_REGION failed: {0}")]
    Register(kvm_ioctls::Error),
}

/// Allocates `size` bytes of zeroed guest RAM at guest-physical 0 and hands them to the VM.
pub fn create_guest_memory(vm: &VmFd, size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)])
        .map_err(|source| MemoryError::Allocate { size, source })?;
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .expect("a region's start lies in the region");
        let slot_desc = kvm_bindings::kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
            flags: 0,
        };
        // SAFETY: the host range is a live mapping of `region.len()` bytes owned by `mem`, which the
        // caller keeps alive as long as the VM (both live in `Vm`, the memory dropped last).
        unsafe { vm.set_user_memory_region(slot_desc) }.map_err(MemoryError::Register)?;
    }
    Ok(mem)
}
