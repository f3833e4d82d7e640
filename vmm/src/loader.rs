//! Loading the guest kernel: our own checks of the ELF header and segments, then linux-loader
//! copies the PT_LOAD segments into guest RAM.
//!
//! linux-loader checks the magic and the header sizes but not the class or the machine, and it
//! trusts segment addresses; a kernel that would overwrite the VMM's low pages or run off the end
//! of RAM is refused here, with a message that names the problem.

use crate::arch::x86_64::layout::KERNEL_START;
use linux_loader::loader::{elf::Elf, KernelLoader};
use std::io::Cursor;
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// The guest kernel built with this VMM (by build.rs).
pub const GUEST_KERNEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.elf"));

/// The largest kernel file `--kernel` reads: 64 MiB, checked from the file's size before it is
/// read. Generous: the built-in guest is under 3 MiB with debug info, and whatever a kernel loads
/// must fit guest RAM beside the stacks anyway.
pub const MAX_KERNEL_FILE: u64 = 64 << 20;

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;

/// Why a kernel image was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoadError {
    /// Shorter than an ELF header, or a header points past the end.
    #[error("kernel image is truncated: {0}")]
    Truncated(&'static str),
    /// No ELF magic.
    #[error("kernel image is not an ELF file")]
    NotElf,
    /// 32-bit ELF.
    #[error("kernel image is a 32-bit ELF; a 64-bit (ELFCLASS64) x86_64 kernel is needed")]
    Not64Bit,
    /// Big-endian ELF.
    #[error("kernel image is big-endian; x86_64 is little-endian")]
    BigEndian,
    /// Another architecture.
    #[error("kernel image is for ELF machine {0}, not x86_64 (62)")]
    WrongMachine(u16),
    /// Relocatable, shared or core file.
    #[error("kernel image has ELF type {0}, not an executable (2): build it static, non-PIE")]
    NotExecutable(u16),
    /// Nothing to load.
    #[error("kernel image has no PT_LOAD segment")]
    NoSegments,
    /// A segment outside the RAM the kernel may use.
    #[error("kernel segment [{start:#x}, {end:#x}) lies outside [{min:#x}, {max:#x})")]
    SegmentOutOfRange {
        /// Segment start.
        start: u64,
        /// Segment end.
        end: u64,
        /// Lowest address the kernel may use.
        min: u64,
        /// Highest address (exclusive).
        max: u64,
    },
    /// A segment's file part is larger than its memory part.
    #[error("kernel segment at {0:#x} has more file bytes than memory bytes")]
    BadSegmentSize(u64),
    /// The entry point is not in an executable segment.
    #[error("kernel entry point {0:#x} is not inside an executable segment")]
    BadEntry(u64),
    /// linux-loader refused the image after our checks passed.
    #[error("kernel loader: {0}")]
    Loader(String),
}

/// Where the kernel landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadedKernel {
    /// Entry point.
    pub entry: u64,
    /// End of the highest segment in memory (bss included).
    pub end: u64,
}

fn u16_at(image: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([image[at], image[at + 1]])
}
fn u32_at(image: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(image[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(image: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(image[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks `image` and returns its entry point and end, without touching guest memory.
/// Segments must lie in `[KERNEL_START, max_end)`.
pub fn check_kernel(image: &[u8], max_end: u64) -> Result<LoadedKernel, LoadError> {
    if image.len() < EHDR_SIZE {
        return Err(if image.starts_with(&ELF_MAGIC) || image.len() < 4 {
            LoadError::Truncated("shorter than an ELF header")
        } else {
            LoadError::NotElf
        });
    }
    if image[..4] != ELF_MAGIC {
        return Err(LoadError::NotElf);
    }
    if image[4] != ELFCLASS64 {
        return Err(LoadError::Not64Bit);
    }
    if image[5] != ELFDATA2LSB {
        return Err(LoadError::BigEndian);
    }
    let (e_type, machine) = (u16_at(image, 16), u16_at(image, 18));
    if machine != EM_X86_64 {
        return Err(LoadError::WrongMachine(machine));
    }
    if e_type != ET_EXEC {
        return Err(LoadError::NotExecutable(e_type));
    }
    let entry = u64_at(image, 24);
    let phoff = u64_at(image, 32);
    let (phentsize, phnum) = (u16_at(image, 54) as usize, u16_at(image, 56) as usize);
    if phentsize != PHDR_SIZE {
        return Err(LoadError::Truncated("program header size is not 56"));
    }
    let table_end = usize::try_from(phoff)
        .ok()
        .and_then(|off| off.checked_add(phnum * PHDR_SIZE))
        .filter(|&end| end <= image.len())
        .ok_or(LoadError::Truncated(
            "program headers lie past the end of the file",
        ))?;

    let (min, max) = (KERNEL_START.0, max_end);
    let mut end = 0;
    let mut entry_ok = false;
    let mut loads = 0;
    for ph in image[table_end - phnum * PHDR_SIZE..table_end].chunks_exact(PHDR_SIZE) {
        if u32_at(ph, 0) != PT_LOAD {
            continue;
        }
        loads += 1;
        let (flags, offset, paddr) = (u32_at(ph, 4), u64_at(ph, 8), u64_at(ph, 24));
        let (filesz, memsz) = (u64_at(ph, 32), u64_at(ph, 40));
        if filesz > memsz {
            return Err(LoadError::BadSegmentSize(paddr));
        }
        let seg_end = paddr.saturating_add(memsz);
        if paddr < min || seg_end > max {
            return Err(LoadError::SegmentOutOfRange {
                start: paddr,
                end: seg_end,
                min,
                max,
            });
        }
        if offset
            .checked_add(filesz)
            .is_none_or(|e| e > image.len() as u64)
        {
            return Err(LoadError::Truncated(
                "a segment's bytes lie past the end of the file",
            ));
        }
        entry_ok |= flags & PF_X != 0 && (paddr..seg_end).contains(&entry);
        end = end.max(seg_end);
    }
    if loads == 0 {
        return Err(LoadError::NoSegments);
    }
    if !entry_ok {
        return Err(LoadError::BadEntry(entry));
    }
    Ok(LoadedKernel { entry, end })
}

/// Checks `image` (see [`check_kernel`]) and copies its segments into `mem`.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    image: &[u8],
    max_end: u64,
) -> Result<LoadedKernel, LoadError> {
    let kernel = check_kernel(image, max_end)?;
    Elf::load(
        mem,
        None,
        &mut Cursor::new(image),
        Some(GuestAddress(KERNEL_START.0)),
    )
    .map_err(|e| LoadError::Loader(e.to_string()))?;
    Ok(kernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 64 << 20;

    #[test]
    fn the_built_in_guest_is_well_within_the_kernel_file_limit() {
        assert!((GUEST_KERNEL.len() as u64) < MAX_KERNEL_FILE / 4);
    }

    #[test]
    fn the_built_guest_kernel_passes_the_checks() {
        let k = check_kernel(GUEST_KERNEL, MAX).unwrap();
        assert!(k.entry >= KERNEL_START.0 && k.end > k.entry);
    }

    #[test]
    fn corrupt_images_are_refused_with_a_reason() {
        assert_eq!(
            check_kernel(b"", MAX),
            Err(LoadError::Truncated("shorter than an ELF header"))
        );
        assert_eq!(check_kernel(&[0u8; 100], MAX), Err(LoadError::NotElf));
        let mut image = GUEST_KERNEL.to_vec();
        image[4] = 1;
        assert_eq!(check_kernel(&image, MAX), Err(LoadError::Not64Bit));
        let mut image = GUEST_KERNEL.to_vec();
        image[18] = 183; // aarch64
        assert_eq!(check_kernel(&image, MAX), Err(LoadError::WrongMachine(183)));
        let image = &GUEST_KERNEL[..200];
        assert!(matches!(
            check_kernel(image, MAX),
            Err(LoadError::Truncated(_))
        ));
    }

    #[test]
    fn a_kernel_that_does_not_fit_is_refused() {
        assert!(matches!(
            check_kernel(GUEST_KERNEL, KERNEL_START.0 + 4096),
            Err(LoadError::SegmentOutOfRange { .. })
        ));
    }

    #[test]
    fn an_entry_outside_the_text_is_refused() {
        let mut image = GUEST_KERNEL.to_vec();
        image[24..32].copy_from_slice(&0x10u64.to_le_bytes());
        assert_eq!(check_kernel(&image, MAX), Err(LoadError::BadEntry(0x10)));
    }
}
