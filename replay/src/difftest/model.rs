//! mm-core's side of a difftest: the calls run on an [`Mm`] over simulated RAM, with the same
//! placeholders around the region as the native runner makes, and the state read back the way
//! `/proc/self/maps` and `mincore` show it.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use mm_core::addr::{TASK_SIZE, USER_BASE};
use mm_core::mm::{
    fput, iput, Access, AddressSpace, Advice, File, FilePtr, MapFlags, MappingPtr, Mm, MremapFlags,
    Prot, VmFlags,
};
use mm_core::paging::CountingTlb;
use mm_core::phys::SimRam;
use mm_core::{Kernel, VirtAddr};

use super::obs::{Line, Obs};
use super::op::Op;
use super::{FILE_PAGES, REGION_END, REGION_START};

/// Frames of simulated RAM: every region page twice over (a private copy and a cached file page),
/// the files, and tables.
const FRAMES: usize = 2048;

/// Linux's `EFAULT`, what a kernel access to a page the program may not touch returns.
const EFAULT: i64 = 14;

/// Runs calls from `next` (given the region's maps after the previous call; `None` ends the
/// sequence) through mm-core on simulated RAM, returning each call with the state after it.
/// `validate_mm` runs after every call; its first finding ends the sequence with an error naming
/// the call.
pub fn run(mut next: impl FnMut(&[Line]) -> Option<Op>) -> Result<Vec<(Op, Obs)>, String> {
    let ram = SimRam::new(FRAMES);
    let tlb = CountingTlb::default();
    let k = Kernel::new(&ram, &ram, ram.mem_map(), &tlb);
    let mm = Mm::new(&k, None).map_err(|e| format!("creating the address space: {e}"))?;
    let mut m = Model::new(&k, mm)?;
    let mut out: Vec<(Op, Obs)> = Vec::new();
    let result = loop {
        let Some(op) = next(out.last().map_or(&[][..], |(_, o)| &o.maps[..])) else {
            break Ok(out);
        };
        let obs = m.step(&op);
        if let Err(e) = m.validate(out.len(), &op) {
            break Err(e);
        }
        out.push((op, obs));
    };
    m.finish();
    result
}

/// One sequence's address space and files, on any kernel: the host's simulated RAM ([`run`]) or
/// the guest's real page tables (the guest's `difftest` scenario).
pub struct Model<'k, 'a> {
    k: &'k Kernel<'a>,
    mm: Mm,
    /// Each file's address_space, with its read-write and read-only opens.
    files: Vec<(MappingPtr, FilePtr, FilePtr)>,
}

impl<'k, 'a> Model<'k, 'a> {
    /// Takes `mm` (fresh) for a sequence: creates the files and fills user space outside the
    /// region with placeholders. On an error `mm` and what was made are released.
    pub fn new(k: &'k Kernel<'a>, mm: Mm) -> Result<Self, String> {
        let mut m = Model {
            k,
            mm,
            files: Vec::new(),
        };
        match m.setup() {
            Ok(()) => Ok(m),
            Err(e) => {
                m.finish();
                Err(e)
            }
        }
    }

    /// The address space (its root, to load it).
    pub fn mm(&self) -> &Mm {
        &self.mm
    }

    /// Makes one call and returns the state after it.
    pub fn step(&mut self, op: &Op) -> Obs {
        let ret = self.call(op);
        self.observe(ret)
    }

    /// `validate_mm`'s first finding, as an error naming call `index` (`op`) after which it was
    /// found.
    pub fn validate(&self, index: usize, op: &Op) -> Result<(), String> {
        match self.mm.validate_mm(self.k).first() {
            Some(v) => Err(format!(
                "validate_mm after call {index} ({}): {v:?}",
                op.encode()
            )),
            None => Ok(()),
        }
    }

    /// Tears the address space down (`exit_mmap`) and releases the files.
    pub fn finish(self) {
        self.mm.destroy(self.k);
        for (mapping, rw, ro) in self.files {
            fput(self.k, rw);
            fput(self.k, ro);
            iput(self.k, mapping);
        }
    }
}

impl Model<'_, '_> {
    /// Creates the files and fills user space outside the region with placeholders.
    fn setup(&mut self) -> Result<(), String> {
        // Linux's layout on x86_64; the placeholders make the region the only free space.
        self.mm.set_mmap_top_down(TASK_SIZE);
        for pages in FILE_PAGES {
            let mapping = AddressSpace::create(self.k, pages).map_err(|e| format!("{e}"))?;
            let rw = File::open(self.k, mapping, None).map_err(|e| format!("{e}"))?;
            let ro = File::open_read_only(self.k, mapping, None).map_err(|e| format!("{e}"))?;
            self.files.push((mapping, rw, ro));
        }
        let anon = MapFlags::PRIVATE
            .union(MapFlags::ANONYMOUS)
            .union(MapFlags::FIXED);
        for (start, end) in [(USER_BASE.0, REGION_START), (REGION_END, TASK_SIZE.0)] {
            let at = VirtAddr(start);
            self.mm
                .mmap(self.k, at, end - start, Prot::NONE, anon, None, 0)
                .map_err(|e| format!("placeholder {start:#x}..{end:#x}: {e}"))?;
            self.mm
                .madvise(self.k, at, end - start, Advice::DONTFORK)
                .map_err(|e| format!("placeholder {start:#x}..{end:#x}: {e}"))?;
        }
        Ok(())
    }

    /// One call: its value, or `-errno`.
    fn call(&mut self, op: &Op) -> i64 {
        let (k, mm) = (self.k, &mut self.mm);
        let res = |r: Result<u64, i32>| r.map_or_else(|e| -i64::from(e), |v| v as i64);
        match *op {
            Op::Mmap {
                addr,
                len,
                prot,
                flags,
                fd,
                off,
            } => {
                let file = fd.map(|fd| {
                    let (_, rw, ro) = self.files[fd.file];
                    if fd.read_only {
                        ro
                    } else {
                        rw
                    }
                });
                res(mm
                    .sys_mmap(
                        k,
                        VirtAddr(addr),
                        len,
                        Prot(prot),
                        MapFlags(flags),
                        file,
                        off,
                    )
                    .map(|a| a.0)
                    .map_err(|e| e.errno()))
            }
            Op::Munmap { addr, len } => res(mm
                .munmap(k, VirtAddr(addr), len)
                .map(|()| 0)
                .map_err(|e| e.errno())),
            Op::Mprotect { addr, len, prot } => res(mm
                .mprotect(k, VirtAddr(addr), len, Prot(prot))
                .map(|()| 0)
                .map_err(|e| e.errno())),
            Op::Mremap {
                old,
                old_len,
                new_len,
                flags,
                new_addr,
            } => res(mm
                .mremap(
                    k,
                    VirtAddr(old),
                    old_len,
                    new_len,
                    MremapFlags(flags),
                    VirtAddr(new_addr),
                )
                .map(|a| a.0)
                .map_err(|e| e.errno())),
            Op::Madvise { addr, len, advice } => res(mm
                .madvise(k, VirtAddr(addr), len, Advice(advice))
                .map(|()| 0)
                .map_err(|e| e.errno())),
            Op::Mlock { addr, len, flags } => res(mm
                .mlock(k, VirtAddr(addr), len, flags)
                .map(|()| 0)
                .map_err(|e| e.errno())),
            Op::Munlock { addr, len } => res(mm
                .munlock(k, VirtAddr(addr), len)
                .map(|()| 0)
                .map_err(|e| e.errno())),
            Op::Msync { addr, len, flags } => res(mm
                .msync(k, VirtAddr(addr), len, flags)
                .map(|()| 0)
                .map_err(|e| e.errno())),
            Op::Touch { addr, write } => {
                let access = if write { Access::Write } else { Access::Read };
                match mm.handle_mm_fault(k, VirtAddr(addr), access) {
                    Ok(()) => 0,
                    Err(_) => -EFAULT,
                }
            }
        }
    }

    /// The region's maps and residency now.
    fn observe(&self, ret: i64) -> Obs {
        let mut obs = Obs {
            ret,
            ..Obs::default()
        };
        let mut at = VirtAddr(REGION_START);
        while let Some(vma) = self.mm.find_vma(at) {
            let v = vma.get();
            if v.start().0 >= REGION_END {
                break;
            }
            let (start, end) = (v.start().0.max(REGION_START), v.end().0.min(REGION_END));
            let f = v.flags();
            let bit = |b: VmFlags, c: u8| if f.contains(b) { c } else { b'-' };
            let shared = if f.contains(VmFlags::SHARED) || f.contains(VmFlags::MAYSHARE) {
                b's'
            } else {
                b'p'
            };
            let (name, offset) = match v.file() {
                None => (String::new(), 0),
                Some(file) => {
                    let mapping = file.get().mapping();
                    let name = match self.files.iter().position(|(m, _, _)| *m == mapping) {
                        Some(i) => format!("file{i}"),
                        None => String::from("shmem"),
                    };
                    (name, (v.pgoff() << 12) + (start - v.start().0))
                }
            };
            obs.maps.push(Line {
                start,
                end,
                perms: [
                    bit(VmFlags::READ, b'r'),
                    bit(VmFlags::WRITE, b'w'),
                    bit(VmFlags::EXEC, b'x'),
                    shared,
                ],
                offset,
                name,
            });
            let mut pages = alloc::vec![0u8; ((end - start) >> 12) as usize];
            if !obs.resident.is_empty() {
                obs.resident.push('|');
            }
            match self
                .mm
                .mincore(self.k, VirtAddr(start), end - start, &mut pages)
            {
                Ok(()) => obs
                    .resident
                    .extend(pages.iter().map(|b| char::from(b'0' + (b & 1)))),
                Err(e) => obs.resident.push_str(&format!("mincore failed: {e}")),
            }
            at = v.end();
        }
        obs
    }
}
