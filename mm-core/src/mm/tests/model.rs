//! Model-based property test: random sequences of mmap / munmap / mprotect / brk / fault /
//! truncate / rmap walks against a page-by-page reference model, with validate_mm after every step
//! and zero frames left after exit.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::addr::{PMD_SIZE, USER_BASE};
use crate::mm::file::{fput, iput, AddressSpace, File};
use crate::mm::{rmap, truncate, FaultError, FilePtr, MappingPtr, VmFlags};
use crate::paging::walk::lookup;

/// Pages of the playground; it straddles a 2 MiB boundary so tables are shared and freed.
const AREA_PAGES: u64 = 32;
const AREA: u64 = USER_BASE.0 + 7 * PMD_SIZE - 16 * PAGE_SIZE;
const HEAP: u64 = AREA + 4 * PMD_SIZE;
const HEAP_PAGES: u64 = 24;
const FILE_PAGES: u64 = 4;

#[derive(Clone, Debug)]
enum Op {
    MmapAnon {
        page: u64,
        pages: u64,
        prot: u64,
    },
    MmapFile {
        page: u64,
        pages: u64,
        prot: u64,
        shared: bool,
        pgoff: u64,
    },
    Munmap {
        page: u64,
        pages: u64,
    },
    Mprotect {
        page: u64,
        pages: u64,
        prot: u64,
    },
    Brk {
        pages: u64,
    },
    Read {
        page: u64,
    },
    Write {
        page: u64,
        offset: u64,
        value: u8,
    },
    Truncate {
        size: u64,
    },
    Referenced {
        page: u64,
    },
    Unmap {
        page: u64,
    },
    /// Fail the `n`th allocation of the next operation (mprotect excepted: it may fail halfway).
    FailNext {
        n: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let page = 0..AREA_PAGES;
    let pages = 1..8u64;
    // Mostly read/write, so faults, copies and writes through to the file actually happen.
    let prot = prop_oneof![3 => Just(Prot::RW.0), 1 => 0..8u64];
    prop_oneof![
        1 => (page.clone(), pages.clone(), prot.clone()).prop_map(|(page, pages, prot)| Op::MmapAnon { page, pages, prot }),
        1 => (page.clone(), pages.clone(), prot.clone(), any::<bool>(), 0..FILE_PAGES)
            .prop_map(|(page, pages, prot, shared, pgoff)| Op::MmapFile { page, pages, prot, shared, pgoff }),
        1 => (page.clone(), pages.clone()).prop_map(|(page, pages)| Op::Munmap { page, pages }),
        1 => (page.clone(), pages, prot).prop_map(|(page, pages, prot)| Op::Mprotect { page, pages, prot }),
        1 => (0..HEAP_PAGES).prop_map(|pages| Op::Brk { pages }),
        3 => (0..AREA_PAGES + HEAP_PAGES).prop_map(|page| Op::Read { page }),
        3 => (0..AREA_PAGES + HEAP_PAGES, 0..2u64, 1..=255u8)
            .prop_map(|(page, offset, value)| Op::Write { page, offset, value }),
        1 => (0..=FILE_PAGES).prop_map(|size| Op::Truncate { size }),
        1 => (0..AREA_PAGES + HEAP_PAGES).prop_map(|page| Op::Referenced { page }),
        1 => (0..AREA_PAGES + HEAP_PAGES).prop_map(|page| Op::Unmap { page }),
        1 => (1..5u64).prop_map(|n| Op::FailNext { n }),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backing {
    Anon,
    File { pgoff: u64, shared: bool },
}

#[derive(Clone, Copy, Debug)]
struct ModelPage {
    prot: Prot,
    backing: Backing,
    /// Bytes 0 and 1 of the page's private (anonymous or copied) frame, once it has one.
    private: Option<[u8; 2]>,
}

#[derive(Default)]
struct Model {
    pages: BTreeMap<u64, ModelPage>,
    file: Vec<[u8; 2]>,
    size: u64,
    brk_pages: u64,
}

/// Virtual address of model page `i` (the area first, then the heap).
fn va(i: u64) -> u64 {
    if i < AREA_PAGES {
        AREA + i * PAGE_SIZE
    } else {
        HEAP + (i - AREA_PAGES) * PAGE_SIZE
    }
}

impl Model {
    fn map(&mut self, page: u64, pages: u64, prot: Prot, backing: impl Fn(u64) -> Backing) {
        for i in page..page + pages {
            self.pages.insert(
                va(i),
                ModelPage {
                    prot,
                    backing: backing(i - page),
                    private: None,
                },
            );
        }
    }

    /// What a read of `addr` yields.
    fn read(&self, addr: u64) -> Result<[u8; 2], FaultError> {
        let p = self.pages.get(&addr).ok_or(FaultError::MapErr)?;
        // x86: any access allows a read (a write-only or exec-only page is readable).
        if p.prot.0 & 7 == 0 {
            return Err(FaultError::AccErr);
        }
        match (p.private, p.backing) {
            (Some(v), _) => Ok(v),
            (None, Backing::Anon) => Ok([0; 2]),
            (None, Backing::File { pgoff, .. }) if pgoff >= self.size => Err(FaultError::Sigbus),
            (None, Backing::File { pgoff, .. }) => Ok(self.file[pgoff as usize]),
        }
    }

    fn write(&mut self, addr: u64, offset: u64, value: u8) -> Result<(), FaultError> {
        let size = self.size;
        let p = self.pages.get_mut(&addr).ok_or(FaultError::MapErr)?;
        if !p.prot.contains(Prot::WRITE) {
            return Err(FaultError::AccErr);
        }
        match p.backing {
            Backing::File {
                pgoff,
                shared: true,
            } => {
                if pgoff >= size {
                    return Err(FaultError::Sigbus);
                }
                self.file[pgoff as usize][offset as usize] = value;
            }
            Backing::File {
                pgoff,
                shared: false,
            } if p.private.is_none() && pgoff >= size => {
                return Err(FaultError::Sigbus);
            }
            Backing::File {
                pgoff,
                shared: false,
            } if p.private.is_none() => {
                // Copy-on-write: the private copy starts as the file page.
                let mut copy = self.file[pgoff as usize];
                copy[offset as usize] = value;
                p.private = Some(copy);
            }
            _ => p.private.get_or_insert([0; 2])[offset as usize] = value,
        }
        Ok(())
    }
}

struct Sut<'k> {
    k: &'k Kernel<'k>,
    mm: Mm,
    mapping: MappingPtr,
    file: FilePtr,
}

impl Sut<'_> {
    fn frame(&self, addr: u64) -> Option<crate::addr::PhysAddr> {
        let e = lookup(self.k, self.mm.raw().pgd(), VirtAddr(addr))?.read(self.k);
        e.is_present().then(|| e.frame())
    }

    fn read(&mut self, addr: u64) -> Result<[u8; 2], FaultError> {
        self.mm
            .handle_mm_fault(self.k, VirtAddr(addr), Access::Read)?;
        let f = self.frame(addr).expect("mapped after fault");
        Ok([self.k.read_byte(f, 0), self.k.read_byte(f, 1)])
    }

    fn wr(&mut self, addr: u64, offset: u64, value: u8) -> Result<(), FaultError> {
        self.mm
            .handle_mm_fault(self.k, VirtAddr(addr), Access::Write)?;
        self.k
            .write_byte(self.frame(addr).expect("mapped after fault"), offset, value);
        Ok(())
    }
}

fn prot_of(bits: u64) -> Prot {
    Prot(bits & 7)
}

fn step(sut: &mut Sut<'_>, model: &mut Model, op: &Op) {
    let k = sut.k;
    match *op {
        Op::MmapAnon { page, pages, prot } => {
            let pages = pages.min(AREA_PAGES - page);
            let r = sut.mm.mmap(
                k,
                VirtAddr(va(page)),
                pages * PAGE_SIZE,
                prot_of(prot),
                ANON_FIXED,
                None,
                0,
            );
            if mmap_applied(k, r, model, page, pages) {
                model.map(page, pages, prot_of(prot), |_| Backing::Anon);
            }
        }
        Op::MmapFile {
            page,
            pages,
            prot,
            shared,
            pgoff,
        } => {
            let pages = pages.min(AREA_PAGES - page);
            let kind = if shared {
                MapFlags::SHARED
            } else {
                MapFlags::PRIVATE
            };
            let flags = kind.union(MapFlags::FIXED);
            let r = sut.mm.mmap(
                k,
                VirtAddr(va(page)),
                pages * PAGE_SIZE,
                prot_of(prot),
                flags,
                Some(sut.file),
                pgoff,
            );
            if mmap_applied(k, r, model, page, pages) {
                model.map(page, pages, prot_of(prot), |i| Backing::File {
                    pgoff: pgoff + i,
                    shared,
                });
            }
        }
        Op::Munmap { page, pages } => {
            let pages = pages.min(AREA_PAGES - page);
            let r = sut.mm.munmap(k, VirtAddr(va(page)), pages * PAGE_SIZE);
            if !applied(k, r) {
                return;
            }
            for i in page..page + pages {
                model.pages.remove(&va(i));
            }
        }
        Op::Mprotect { page, pages, prot } => {
            let pages = pages.min(AREA_PAGES - page);
            let r = sut
                .mm
                .mprotect(k, VirtAddr(va(page)), pages * PAGE_SIZE, prot_of(prot));
            let all_mapped = (page..page + pages).all(|i| model.pages.contains_key(&va(i)));
            assert_eq!(r.is_ok(), all_mapped, "mprotect: {r:?}");
            // As in Linux, the pages before the first hole change even when the call fails
            // (unless an allocation failure stopped it first).
            if r.is_ok() || !k.inject.fired() {
                for i in page..page + pages {
                    let Some(p) = model.pages.get_mut(&va(i)) else {
                        break;
                    };
                    p.prot = prot_of(prot);
                }
            }
        }
        Op::Brk { pages } => {
            let r = sut.mm.brk(k, VirtAddr(HEAP + pages * PAGE_SIZE));
            if !applied(k, r) {
                return;
            }
            for i in pages..model.brk_pages {
                model.pages.remove(&va(AREA_PAGES + i));
            }
            if pages > model.brk_pages {
                model.map(
                    AREA_PAGES + model.brk_pages,
                    pages - model.brk_pages,
                    Prot::RW,
                    |_| Backing::Anon,
                );
            }
            model.brk_pages = pages;
        }
        Op::Read { page } => {
            let a = sut.read(va(page));
            if !(a == Err(FaultError::Oom) && k.inject.fired()) {
                assert_eq!(a, model.read(va(page)), "read of page {page}");
            }
        }
        Op::Write {
            page,
            offset,
            value,
        } => {
            let a = sut.wr(va(page), offset, value);
            if !(a == Err(FaultError::Oom) && k.inject.fired()) {
                assert_eq!(
                    a,
                    model.write(va(page), offset, value),
                    "write of page {page}"
                );
            }
        }
        Op::Truncate { size } => {
            truncate::vmtruncate(k, sut.mapping, size);
            if size < model.size {
                for p in model.pages.values_mut() {
                    if let Backing::File { pgoff, .. } = p.backing {
                        if pgoff >= size {
                            p.private = None;
                        }
                    }
                }
                for b in &mut model.file[size as usize..] {
                    *b = [0; 2];
                }
            }
            model.size = size;
        }
        Op::Referenced { page } => {
            if let Some(f) = sut.frame(va(page)) {
                let n = rmap::page_referenced(k, f);
                assert!(n <= k.page(f).mapcount.get());
            }
        }
        Op::FailNext { .. } => unreachable!("handled by run"),
        Op::Unmap { page } => {
            if let Some(f) = sut.frame(va(page)) {
                let anon = k
                    .page(f)
                    .page_flags()
                    .contains(crate::phys::PageFlags::ANON);
                assert!(rmap::try_to_unmap(k, f), "try_to_unmap left mappings");
                if anon {
                    // No swap: the private copy is gone, the page reverts to its backing.
                    model.pages.get_mut(&va(page)).expect("mapped").private = None;
                }
            }
        }
    }
}

/// Whether an operation took effect: it succeeded, or it failed only because an injected
/// allocation failure fired (then it must have changed nothing the model sees).
fn applied<T: core::fmt::Debug, E: core::fmt::Debug>(k: &Kernel<'_>, r: Result<T, E>) -> bool {
    match r {
        Ok(_) => true,
        Err(_) if k.inject.fired() => false,
        Err(e) => panic!("failed without an injected failure: {e:?}"),
    }
}

/// Like [`applied`] for a `MAP_FIXED` mmap, which may fail after it unmapped the old range.
fn mmap_applied(
    k: &Kernel<'_>,
    r: Result<VirtAddr, crate::mm::MmapError>,
    model: &mut Model,
    page: u64,
    pages: u64,
) -> bool {
    if r == Err(crate::mm::MmapError::VmaAlloc) && k.inject.fired() {
        for i in page..page + pages {
            model.pages.remove(&va(i));
        }
        return false;
    }
    applied(k, r)
}

fn check_layout(sut: &Sut<'_>, model: &Model) {
    let mut total = 0;
    for i in 0..AREA_PAGES + HEAP_PAGES {
        let addr = va(i);
        let vma = sut.mm.vma_at(VirtAddr(addr));
        match (model.pages.get(&addr), vma) {
            (None, None) => {}
            (Some(p), Some(v)) => {
                total += 1;
                let v = v.get();
                assert_eq!(
                    v.flags().0 & VmFlags::ACCESS.0,
                    p.prot.0,
                    "prot of page {i}"
                );
                match p.backing {
                    Backing::Anon => assert!(v.file().is_none(), "page {i} should be anonymous"),
                    Backing::File { pgoff, shared } => {
                        assert_eq!(
                            v.linear_page_index(VirtAddr(addr)),
                            pgoff,
                            "pgoff of page {i}"
                        );
                        assert_eq!(v.flags().contains(VmFlags::SHARED), shared);
                    }
                }
            }
            (m, v) => panic!(
                "page {i}: model {m:?}, vma {:?}",
                v.map(|v| v.get().start())
            ),
        }
    }
    assert_eq!(sut.mm.raw().total_vm.get(), total);
}

fn run(ops: &[Op]) {
    rig!(ram, tlb, k);
    // Every page-table free along the way is checked against the probes' rules too.
    let check = crate::check::OrderCheck::default();
    let k = k.with_hooks(&check);
    let mapping = AddressSpace::create(&k, FILE_PAGES).expect("inode");
    let file = File::open(&k, mapping, None).expect("file");
    let mut mm = Mm::new(&k, None).expect("mm");
    mm.set_brk_base(VirtAddr(HEAP));
    let mut sut = Sut {
        k: &k,
        mm,
        mapping,
        file,
    };
    let mut model = Model {
        file: vec![[0; 2]; FILE_PAGES as usize],
        size: FILE_PAGES,
        ..Model::default()
    };
    let mut armed = None;
    for op in ops {
        if let Op::FailNext { n } = *op {
            armed = Some(n);
            continue;
        }
        if let (Some(n), false) = (armed.take(), matches!(op, Op::Mprotect { .. })) {
            k.inject.fail_nth(n, None);
        }
        step(&mut sut, &mut model, op);
        k.inject.fail_nth(0, None);
        assert_valid(&k, &sut.mm);
        check_layout(&sut, &model);
    }
    sut.mm.destroy(&k);
    fput(&k, file);
    iput(&k, mapping);
    assert_eq!(ram.frames_in_use(), 0, "frames left after exit");
    assert_eq!(check.violations(), [], "ordering rules broken");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_agree_with_the_model_and_keep_every_invariant(ops in prop::collection::vec(op(), 1..40)) {
        run(&ops);
    }
}

#[test]
fn a_private_write_after_a_shared_write_sees_the_file_contents_in_its_copy() {
    let rw = Prot::RW.0;
    run(&[
        Op::MmapFile {
            page: 0,
            pages: 1,
            prot: rw,
            shared: true,
            pgoff: 0,
        },
        Op::Write {
            page: 0,
            offset: 1,
            value: 5,
        },
        Op::MmapFile {
            page: 4,
            pages: 1,
            prot: rw,
            shared: false,
            pgoff: 0,
        },
        Op::Write {
            page: 4,
            offset: 0,
            value: 7,
        },
        Op::Read { page: 4 },
        Op::Write {
            page: 0,
            offset: 1,
            value: 9,
        },
        Op::Read { page: 4 },
    ]);
}
