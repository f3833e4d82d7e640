//! Allocation failure at every allocation site of each operation: the operation fails with an
//! ENOMEM-like error, validate_mm stays clean, and no frame leaks.

use super::*;
use crate::addr::{PMD_SIZE, USER_BASE};
use crate::mm::error::ENOMEM;
use crate::mm::file::{fput, iput, AddressSpace, File};

const BASE: u64 = USER_BASE.0 + (5 << 30);

/// Runs `op` on a fresh setup once per allocation it makes, failing the 1st, 2nd, ... allocation,
/// until it completes without hitting the injected failure. Returns how many sites were hit.
fn fail_each_allocation(op: &dyn Fn(&Kernel<'_>, &mut Mm) -> Result<(), i32>) -> u64 {
    for n in 1.. {
        rig!(ram, tlb, k);
        let mut mm = Mm::new(&k, None).expect("mm");
        // A populated neighbourhood the operations work in.
        map_anon(&k, &mut mm, BASE, 8);
        touch(&k, &mut mm, BASE, 8);
        map_anon(&k, &mut mm, BASE + 2 * PMD_SIZE, 1);
        k.inject.fail_nth(n, None);
        let result = op(&k, &mut mm);
        let fired = k.inject.fired();
        k.inject.fail_nth(0, None);
        if fired {
            assert_eq!(
                result,
                Err(ENOMEM),
                "allocation {n} failed but the operation said {result:?}"
            );
        } else {
            assert_eq!(
                result,
                Ok(()),
                "the operation failed without an injected failure"
            );
        }
        assert_valid(&k, &mm);
        mm.destroy(&k);
        assert_eq!(ram.frames_in_use(), 0, "allocation {n}: leaked frames");
        if !fired {
            return n - 1;
        }
    }
    unreachable!()
}

#[test]
fn every_allocation_of_a_fault_can_fail_cleanly() {
    let sites = fail_each_allocation(&|k, mm| {
        let at = VirtAddr(BASE + 2 * PMD_SIZE);
        mm.handle_mm_fault(k, at, Access::Write)
            .map_err(|e| e.errno())?;
        // Far away, so the fault needs a PUD, a PMD and a PTE table of its own.
        let far = mm
            .mmap(
                k,
                VirtAddr(BASE + (1 << 40)),
                PAGE_SIZE,
                Prot::RW,
                ANON_FIXED,
                None,
                0,
            )
            .map_err(|e| e.errno())?;
        mm.handle_mm_fault(k, far, Access::Write)
            .map_err(|e| e.errno())
    });
    assert!(
        sites >= 5,
        "fault allocations: anon_vma, tables, page ({sites})"
    );
}

#[test]
fn every_allocation_of_munmap_and_mprotect_splits_can_fail_cleanly() {
    let sites = fail_each_allocation(&|k, mm| {
        mm.munmap(k, VirtAddr(BASE + 2 * PAGE_SIZE), PAGE_SIZE)
            .map_err(|e| e.errno())?;
        mm.mprotect(k, VirtAddr(BASE + 5 * PAGE_SIZE), PAGE_SIZE, Prot::READ)
            .map_err(|e| e.errno())
    });
    assert_eq!(sites, 4, "two splits each");
}

#[test]
fn every_allocation_of_mmap_and_brk_can_fail_cleanly() {
    let sites = fail_each_allocation(&|k, mm| {
        mm.mmap(k, VirtAddr(0), PAGE_SIZE, Prot::READ, ANON, None, 0)
            .map_err(|e| e.errno())?;
        mm.set_brk_base(VirtAddr(BASE + (1 << 39)));
        mm.brk(k, VirtAddr(BASE + (1 << 39) + PAGE_SIZE))
            .map_err(|e| e.errno())?;
        Ok(())
    });
    assert_eq!(sites, 2);
}

#[test]
fn every_allocation_of_a_file_mapping_and_its_faults_can_fail_cleanly() {
    let sites = fail_each_allocation(&|k, mm| {
        let mapping = AddressSpace::create(k, 2).map_err(|e| e.errno())?;
        let file = match File::open(k, mapping, None) {
            Ok(f) => f,
            Err(e) => {
                iput(k, mapping);
                return Err(e.errno());
            }
        };
        let r = (|| {
            let a = mm
                .mmap(
                    k,
                    VirtAddr(0),
                    2 * PAGE_SIZE,
                    Prot::RW,
                    MapFlags::PRIVATE,
                    Some(file),
                    0,
                )
                .map_err(|e| e.errno())?;
            mm.handle_mm_fault(k, a, Access::Read)
                .map_err(|e| e.errno())?;
            mm.handle_mm_fault(k, a, Access::Write)
                .map_err(|e| e.errno())?;
            mm.munmap(k, a, 2 * PAGE_SIZE).map_err(|e| e.errno())
        })();
        fput(k, file);
        iput(k, mapping);
        r
    });
    assert!(
        sites >= 8,
        "file, inode, vma, tables, cache page, anon_vma, copy ({sites})"
    );
}
