//! Quarantine of freed page tables: the VMM takes the guest's access to the most recently freed
//! page-table frames away, so any later touch of one — a stale walker, a CPU's page walk through a
//! cached path — exits to the VMM with its guest-physical address and RIP.
//!
//! Guest RAM is registered with KVM as memory slots covering RAM minus the quarantined frames; a
//! guest access to a hole finds no slot and KVM reports it as MMIO. The VMM's own view of guest
//! memory (vm-memory, the probes) is untouched. The guest's allocator leaves freed page-table
//! frames alone for longer than the quarantine lasts (`abi::QUARANTINE_TABLES`), so a hole is only
//! ever hit by a use after free.
//!
//! KVM cannot change slots atomically: a frame is revoked by deleting the slot that holds it and
//! adding the two around it, and for that instant the whole slot is missing. So the VMM revokes
//! with every other vCPU out of the guest (`vstate::pause`).

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use std::collections::VecDeque;
use std::sync::Arc;

const PAGE: u64 = 4096;

/// The revoked frames and the slots that cover the rest of RAM.
pub struct Quarantine {
    vm: Arc<VmFd>,
    /// Host address of guest-physical 0.
    host: u64,
    ram_size: u64,
    capacity: usize,
    /// Revoked frames, oldest first.
    frames: VecDeque<u64>,
    /// The slots registered now: (slot, guest-physical start, length).
    slots: Vec<(u32, u64, u64)>,
}

/// KVM refused a slot change.
#[derive(Debug, thiserror::Error)]
#[error("cannot change guest memory slots to quarantine frame {frame:#x}: {source}")]
pub struct QuarantineError {
    frame: u64,
    source: kvm_ioctls::Error,
}

impl Quarantine {
    /// A quarantine of `capacity` frames over RAM `[0, ram_size)`, mapped at `host`, which is
    /// registered as slot 0 now.
    pub fn new(vm: Arc<VmFd>, host: u64, ram_size: u64, capacity: usize) -> Quarantine {
        Quarantine {
            vm,
            host,
            ram_size,
            capacity,
            frames: VecDeque::new(),
            slots: vec![(0, 0, ram_size)],
        }
    }

    /// Whether guest-physical `gpa` lies in a quarantined frame; if so, how many table frees ago
    /// that frame was freed (0 = the latest).
    pub fn frees_ago(&self, gpa: u64) -> Option<usize> {
        let frame = gpa & !(PAGE - 1);
        let pos = self.frames.iter().position(|&f| f == frame)?;
        Some(self.frames.len() - 1 - pos)
    }

    /// Revokes `frame` (just freed), giving the oldest revoked frame back when the quarantine is
    /// full. The caller keeps every other vCPU out of the guest meanwhile (module doc).
    pub fn revoke(&mut self, frame: u64) -> Result<(), QuarantineError> {
        // The frame comes from the guest: one that is not a whole page of RAM is not a table the
        // quarantine can hold (the probes report such an event already).
        let whole_page = frame.is_multiple_of(PAGE) && frame < self.ram_size;
        if !whole_page || self.frames.contains(&frame) || self.capacity == 0 {
            return Ok(());
        }
        self.frames.push_back(frame);
        if self.frames.len() > self.capacity {
            self.frames.pop_front();
        }
        let wanted = self.layout();
        let err = |source| QuarantineError { frame, source };
        // Delete what changed first (slots may not overlap), then add the new pieces.
        for &(slot, start, len) in &self.slots {
            if !wanted.contains(&(slot, start, len)) {
                self.set(slot, start, 0).map_err(err)?;
            }
        }
        for &(slot, start, len) in &wanted {
            if !self.slots.contains(&(slot, start, len)) {
                self.set(slot, start, len).map_err(err)?;
            }
        }
        self.slots = wanted;
        Ok(())
    }

    fn layout(&self) -> Vec<(u32, u64, u64)> {
        slot_layout(self.frames.iter().copied(), self.ram_size)
    }

    fn set(&self, slot: u32, start: u64, len: u64) -> Result<(), kvm_ioctls::Error> {
        let region = kvm_userspace_memory_region {
            slot,
            guest_phys_addr: start,
            memory_size: len,
            userspace_addr: self.host + start,
            flags: 0,
        };
        // SAFETY: the host range is part of the guest RAM mapping, which outlives the VM (`Vm`
        // keeps it); a length of 0 deletes the slot.
        unsafe { self.vm.set_user_memory_region(region) }
    }
}

/// RAM `[0, ram_size)` minus the frames `holes`, as (slot, start, length); slot numbers follow the
/// pieces' order, so a piece below every change keeps its slot.
fn slot_layout(holes: impl Iterator<Item = u64>, ram_size: u64) -> Vec<(u32, u64, u64)> {
    let mut holes: Vec<u64> = holes.collect();
    holes.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for hole in holes {
        if hole > start {
            pieces.push((start, hole - start));
        }
        start = hole + PAGE;
    }
    if start < ram_size {
        pieces.push((start, ram_size - start));
    }
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, (start, len))| (i as u32, start, len))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout_of(frames: &[u64], ram: u64) -> Vec<(u32, u64, u64)> {
        slot_layout(frames.iter().copied(), ram)
    }

    #[test]
    fn slots_cover_ram_minus_the_holes() {
        let ram = 1 << 20;
        assert_eq!(layout_of(&[], ram), vec![(0, 0, ram)]);
        assert_eq!(
            layout_of(&[0x3000, 0x1000], ram),
            vec![
                (0, 0, 0x1000),
                (1, 0x2000, 0x1000),
                (2, 0x4000, ram - 0x4000)
            ]
        );
        assert_eq!(
            layout_of(&[0, ram - PAGE], ram),
            vec![(0, PAGE, ram - 2 * PAGE)]
        );
    }
}
