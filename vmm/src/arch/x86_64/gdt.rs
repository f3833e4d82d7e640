//! The boot GDT: flat 64-bit kernel code and data segments and a TSS.

use kvm_bindings::kvm_segment;

/// Selector of the kernel code segment.
pub const KERNEL_CS: u16 = 0x08;
/// Selector of the kernel data segment.
pub const KERNEL_DS: u16 = 0x10;
/// Selector of the TSS (a 16-byte descriptor: slots 3 and 4).
pub const TSS_SELECTOR: u16 = 0x18;

/// Segment type: code, execute/read, accessed.
const TYPE_CODE: u8 = 0xb;
/// Segment type: data, read/write, accessed.
const TYPE_DATA: u8 = 0x3;
/// System segment type: 64-bit TSS, busy (what VM entry requires of TR).
const TYPE_TSS_BUSY: u8 = 0xb;

/// Size in bytes of the 64-bit TSS.
pub const TSS_SIZE: u32 = 104;

/// The segments every vCPU starts with.
pub struct BootSegments {
    /// CS.
    pub code: kvm_segment,
    /// DS, ES, FS, GS, SS.
    pub data: kvm_segment,
    /// TR.
    pub tss: kvm_segment,
}

/// The boot segments, with the TSS at `tss_base`.
pub fn boot_segments(tss_base: u64) -> BootSegments {
    let flat = |selector: u16, type_: u8, l: u8, db: u8| kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db,
        s: 1,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    BootSegments {
        code: flat(KERNEL_CS, TYPE_CODE, 1, 0),
        data: flat(KERNEL_DS, TYPE_DATA, 0, 1),
        tss: kvm_segment {
            base: tss_base,
            limit: TSS_SIZE - 1,
            selector: TSS_SELECTOR,
            type_: TYPE_TSS_BUSY,
            present: 1,
            dpl: 0,
            db: 0,
            s: 0,
            l: 0,
            g: 0,
            avl: 0,
            unusable: 0,
            padding: 0,
        },
    }
}

/// Packs a code or data segment into its 8-byte descriptor.
fn descriptor(seg: &kvm_segment) -> u64 {
    let limit = if seg.g == 1 {
        seg.limit >> 12
    } else {
        seg.limit
    } as u64;
    let base = seg.base;
    let access = u64::from(seg.type_)
        | u64::from(seg.s) << 4
        | u64::from(seg.dpl) << 5
        | u64::from(seg.present) << 7;
    let flags =
        u64::from(seg.avl) | u64::from(seg.l) << 1 | u64::from(seg.db) << 2 | u64::from(seg.g) << 3;
    (limit & 0xffff)
        | (base & 0xff_ffff) << 16
        | access << 40
        | ((limit >> 16) & 0xf) << 48
        | flags << 52
        | ((base >> 24) & 0xff) << 56
}

/// The GDT's entries, in order: null, code, data, TSS low, TSS high.
pub fn gdt_entries(segments: &BootSegments) -> [u64; 5] {
    let tss_low = descriptor(&segments.tss);
    let tss_high = segments.tss.base >> 32;
    [
        0,
        descriptor(&segments.code),
        descriptor(&segments.data),
        tss_low,
        tss_high,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_and_data_descriptors_match_the_classic_encodings() {
        let segs = boot_segments(0x3000);
        let gdt = gdt_entries(&segs);
        // The flat 64-bit code and data descriptors every long-mode kernel uses.
        assert_eq!(gdt[1], 0x00af_9b00_0000_ffff);
        assert_eq!(gdt[2], 0x00cf_9300_0000_ffff);
    }

    #[test]
    fn tss_descriptor_carries_its_base_and_limit() {
        let gdt = gdt_entries(&boot_segments(0x1234_5678_9abc));
        assert_eq!(gdt[3] & 0xffff, u64::from(TSS_SIZE - 1));
        assert_eq!((gdt[3] >> 16) & 0xff_ffff, 0x78_9abc);
        assert_eq!((gdt[3] >> 56) & 0xff, 0x56);
        assert_eq!(gdt[4], 0x1234);
        assert_eq!((gdt[3] >> 40) & 0xff, 0x8b, "present, busy 64-bit TSS");
    }
}
