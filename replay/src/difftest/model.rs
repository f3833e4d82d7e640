//! mm-core's side of a difftest: the calls run on an [`Mm`] over simulated RAM, with the same
//! placeholders around the region as the native runner makes, and the state read back the way
//! `/proc/self/maps` and `mincore` show it, with the first byte of every resident page.
//!
//! `fork` makes a child with [`Mm::fork`] and runs the calls after it there until its exit, as
//! the native runner's child does; the child gets placeholders of its own (the parent's are
//! `MADV_DONTFORK`), as the native child fills its address space again.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use mm_core::addr::PhysAddr;
use mm_core::addr::{TASK_SIZE, USER_BASE};
use mm_core::mm::{
    fput, iput, Access, AddressSpace, Advice, File, FilePtr, MapFlags, MappingPtr, Mm, MremapFlags,
    Prot, VmFlags,
};
use mm_core::paging::table::KernelPgd;
use mm_core::paging::CountingTlb;
use mm_core::phys::SimRam;
use mm_core::{Kernel, VirtAddr};

use super::obs::{Line, Obs};
use super::op::{Op, ECHILD};
use super::{FILE_PAGES, REGION_END, REGION_START};

/// Frames of simulated RAM: every region page twice over (a private copy and a cached file page),
/// the files, and tables.
const FRAMES: usize = 2048;

/// Linux's `EFAULT`, what a kernel access to a page the program may not touch returns.
const EFAULT: i64 = 14;
/// Linux's `ENOMEM`, a fork that could not copy the address space.
const ENOMEM: i64 = 12;

/// Runs calls from `next` (given the region's maps after the previous call; `None` ends the
/// sequence) through mm-core on simulated RAM, returning each call with the state after it.
/// `validate_mm` runs after every call; its first finding ends the sequence with an error naming
/// the call.
pub fn run(mut next: impl FnMut(&[Line]) -> Option<Op>) -> Result<Vec<(Op, Obs)>, String> {
    let ram = SimRam::new(FRAMES);
    let tlb = CountingTlb::default();
    let k = Kernel::new(&ram, &ram, ram.mem_map(), &tlb);
    let mm = Mm::new(&k, None).map_err(|e| format!("creating the address space: {e}"))?;
    let mut m = Model::new(&k, mm, None, |_| {})?;
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

/// One sequence's address spaces and files, on any kernel: the host's simulated RAM ([`run`]) or
/// the guest's real page tables (the guest's `difftest` scenario).
pub struct Model<'k, 'a> {
    k: &'k Kernel<'a>,
    /// The processes: the first is the sequence's own, each later one the child of the one
    /// before; the calls run in the last.
    procs: Vec<Proc>,
    /// What a child's PGD copies ([`Mm::new`]).
    kernel_pgd: Option<KernelPgd>,
    /// Loads a PGD as the one the CPU walks (the guest's `mov cr3`; nothing on the host).
    load: fn(PhysAddr),
    /// Each file's address_space, with its read-write and read-only opens.
    files: Vec<(MappingPtr, FilePtr, FilePtr)>,
}

/// A process of a sequence.
struct Proc {
    mm: Mm,
    /// Stores made so far (the next one stores this plus one).
    stores: u8,
}

impl<'k, 'a> Model<'k, 'a> {
    /// Takes `mm` (fresh) for a sequence: creates the files and fills user space outside the
    /// region with placeholders. Children's PGDs copy `kernel_pgd`, and `load` is called with
    /// each PGD the calls move to (and back). On an error `mm` and what was made are released.
    pub fn new(
        k: &'k Kernel<'a>,
        mm: Mm,
        kernel_pgd: Option<KernelPgd>,
        load: fn(PhysAddr),
    ) -> Result<Self, String> {
        let mut m = Model {
            k,
            procs: alloc::vec![Proc { mm, stores: 0 }],
            kernel_pgd,
            load,
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

    /// The address space the calls run in now (its root, to load it).
    pub fn mm(&self) -> &Mm {
        &self.cur().mm
    }

    /// Makes one call and returns the state after it.
    pub fn step(&mut self, op: &Op) -> Obs {
        let ret = self.call(op);
        self.observe(ret)
    }

    /// `validate_mm`'s first finding in any of the processes, as an error naming call `index`
    /// (`op`) after which it was found.
    pub fn validate(&self, index: usize, op: &Op) -> Result<(), String> {
        for (depth, p) in self.procs.iter().enumerate() {
            if let Some(v) = p.mm.validate_mm(self.k).first() {
                return Err(format!(
                    "validate_mm (process {depth}) after call {index} ({}): {v:?}",
                    op.encode()
                ));
            }
        }
        Ok(())
    }

    /// Tears the address spaces down (`exit_mmap`), children first, and releases the files. The
    /// caller has loaded a PGD of none of them.
    pub fn finish(mut self) {
        while let Some(p) = self.procs.pop() {
            p.mm.destroy(self.k);
        }
        for (mapping, rw, ro) in self.files {
            fput(self.k, rw);
            fput(self.k, ro);
            iput(self.k, mapping);
        }
    }
}

impl Model<'_, '_> {
    fn cur(&self) -> &Proc {
        self.procs
            .last()
            .expect("a sequence always has its process")
    }

    fn cur_mut(&mut self) -> &mut Proc {
        self.procs
            .last_mut()
            .expect("a sequence always has its process")
    }

    /// Creates the files and fills user space outside the region with placeholders.
    fn setup(&mut self) -> Result<(), String> {
        // Linux's layout on x86_64; the placeholders make the region the only free space.
        self.cur_mut().mm.set_mmap_top_down(TASK_SIZE);
        for pages in FILE_PAGES {
            let mapping = AddressSpace::create(self.k, pages).map_err(|e| format!("{e}"))?;
            let rw = File::open(self.k, mapping, None).map_err(|e| format!("{e}"))?;
            let ro = File::open_read_only(self.k, mapping, None).map_err(|e| format!("{e}"))?;
            self.files.push((mapping, rw, ro));
        }
        let k = self.k;
        fill(k, &mut self.cur_mut().mm)
    }

    /// `fork`: the child becomes the process the calls run in.
    fn fork(&mut self) -> i64 {
        let k = self.k;
        let parent = self.cur();
        let Ok(mut child) = parent.mm.fork(k, self.kernel_pgd) else {
            return -ENOMEM;
        };
        let stores = parent.stores;
        if fill(k, &mut child).is_err() {
            child.destroy(k);
            return -ENOMEM;
        }
        (self.load)(child.raw().pgd());
        self.procs.push(Proc { mm: child, stores });
        0
    }

    /// The child exits; its parent goes on.
    fn exit(&mut self) -> i64 {
        if self.procs.len() < 2 {
            return -ECHILD;
        }
        let child = self.procs.pop().expect("a child");
        (self.load)(self.cur().mm.raw().pgd());
        child.mm.destroy(self.k);
        0
    }

    /// One call: its value, or `-errno`.
    fn call(&mut self, op: &Op) -> i64 {
        match op {
            Op::Fork => return self.fork(),
            Op::Exit => return self.exit(),
            _ => {}
        }
        let k = self.k;
        let files = &self.files;
        let proc = self
            .procs
            .last_mut()
            .expect("a sequence always has its process");
        let mm = &mut proc.mm;
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
                    let (_, rw, ro) = files[fd.file];
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
                let value = proc.stores.wrapping_add(1);
                if write {
                    proc.stores = value;
                }
                match mm.handle_mm_fault(k, VirtAddr(addr), access) {
                    Ok(()) if write => match mm.frame_at(k, VirtAddr(addr)) {
                        Some(f) => {
                            k.write_byte(f, addr & 0xfff, value);
                            0
                        }
                        None => -EFAULT,
                    },
                    Ok(()) => 0,
                    Err(_) => -EFAULT,
                }
            }
            Op::Fork | Op::Exit => unreachable!("made above"),
        }
    }

    /// The first byte of each page of `[start, ..)` that `resident` marks, as two hex digits
    /// (`??` if the process may not read it, `--` if it is not resident), read as a kernel copy
    /// would: a page that is only in the page cache is faulted in first.
    fn values(&mut self, start: u64, resident: &[u8], out: &mut String) {
        let k = self.k;
        let mm = &mut self.cur_mut().mm;
        for (i, r) in resident.iter().enumerate() {
            let va = VirtAddr(start + ((i as u64) << 12));
            if r & 1 == 0 {
                out.push_str("--");
                continue;
            }
            // Mapped already, as most resident pages are: no fault to take (in emulated ring 0
            // the fault path per page was most of an observation).
            let frame = mm.frame_at(k, va).or_else(|| {
                mm.handle_mm_fault(k, va, Access::Read).ok()?;
                mm.frame_at(k, va)
            });
            match frame.map(|f| k.read_byte(f, 0)) {
                Some(b) => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.push(char::from(HEX[usize::from(b >> 4)]));
                    out.push(char::from(HEX[usize::from(b & 15)]));
                }
                None => out.push_str("??"),
            }
        }
    }

    /// The region's maps, residency and values now.
    fn observe(&mut self, ret: i64) -> Obs {
        let mut obs = Obs {
            ret,
            ..Obs::default()
        };
        let mut at = VirtAddr(REGION_START);
        while let Some(vma) = self.cur().mm.find_vma(at) {
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
            if !obs.values.is_empty() {
                obs.values.push('|');
            }
            let r = self
                .cur()
                .mm
                .mincore(self.k, VirtAddr(start), end - start, &mut pages);
            match r {
                Ok(()) => {
                    obs.resident
                        .extend(pages.iter().map(|b| char::from(b'0' + (b & 1))));
                    self.values(start, &pages, &mut obs.values);
                }
                Err(e) => obs.resident.push_str(&format!("mincore failed: {e}")),
            }
            at = v.end();
        }
        obs
    }
}

/// Fills user space outside the region with `PROT_NONE` placeholders (`MADV_DONTFORK`, as the
/// native runner's).
fn fill(k: &Kernel<'_>, mm: &mut Mm) -> Result<(), String> {
    let anon = MapFlags::PRIVATE
        .union(MapFlags::ANONYMOUS)
        .union(MapFlags::FIXED);
    for (start, end) in [(USER_BASE.0, REGION_START), (REGION_END, TASK_SIZE.0)] {
        let at = VirtAddr(start);
        mm.mmap(k, at, end - start, Prot::NONE, anon, None, 0)
            .map_err(|e| format!("placeholder {start:#x}..{end:#x}: {e}"))?;
        mm.madvise(k, at, end - start, Advice::DONTFORK)
            .map_err(|e| format!("placeholder {start:#x}..{end:#x}: {e}"))?;
    }
    Ok(())
}
