//! Linux's side of a difftest: a child process (`vmm __difftest-native`) that reads a sequence
//! of calls on stdin, makes them natively in the region, and writes the state after each one on
//! stdout in [`Obs::parse`]'s form, the states separated by `#` lines.
//!
//! Before the first call it fills every free range of its address space outside the region with
//! `PROT_NONE` placeholders (`MADV_DONTFORK`, as mm-core's side has them), so a search for free
//! space can only land in the region. From then on the runner must not make a mapping of its own:
//! everything it needs (buffers, the files, a pipe, its thread's stack) exists before, it reads
//! `/proc/self/maps` into a fixed buffer and writes its output from one, and the calls run on a
//! thread with a fixed stack (the main thread's stack could need to grow into a placeholder).
//!
//! `fork` forks that thread: the child runs the calls that follow, writing its states, until its
//! `exit` (or the end), fills its own address space first (the placeholders are `MADV_DONTFORK`),
//! and `_exit`s; the parent waits for it and goes on after the child's `exit`.
//!
//! [`Obs::parse`]: mm_replay::difftest::Obs::parse

use std::fmt::Write as _;
use std::io::Read;

use mm_replay::difftest::op::ECHILD;
use mm_replay::difftest::{fork_exits, Op, FILE_PAGES, REGION_END, REGION_START};

/// The subcommand `vmm` runs this as (hidden: only `vmm difftest` starts it).
pub const SUBCOMMAND: &str = "__difftest-native";

const PAGE: u64 = 4096;
/// The last user address on x86_64 with 4-level paging, plus one.
const TASK_SIZE: u64 = 0x7fff_ffff_f000;
/// The lowest address a mapping may take here (`vm.mmap_min_addr`'s usual value).
const MMAP_MIN_ADDR: u64 = 0x1_0000;
/// Room for `/proc/self/maps` (the runner's own mappings plus the placeholders: a few hundred
/// lines).
const MAPS_BUF: usize = 1 << 20;
/// Output is flushed to stdout when this full.
const OUT_BUF: usize = 1 << 20;

/// A fixed buffer `write!` formats into; never grows.
struct Buf {
    data: Box<[u8]>,
    len: usize,
}

impl Buf {
    fn new(size: usize) -> Buf {
        Buf {
            data: vec![0u8; size].into_boxed_slice(),
            len: 0,
        }
    }

    /// Writes what it holds to stdout and empties it.
    fn flush(&mut self) {
        let mut done = 0;
        while done < self.len {
            // SAFETY: the range is inside `data`.
            let n = unsafe { libc::write(1, self.data[done..].as_ptr().cast(), self.len - done) };
            if n <= 0 {
                die("writing to stdout failed");
            }
            done += n as usize;
        }
        self.len = 0;
    }
}

impl std::fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.len + s.len() > self.data.len() {
            self.flush();
        }
        if s.len() > self.data.len() {
            return Err(std::fmt::Error);
        }
        self.data[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

/// Ends the child with a message (exit 3: the runner itself failed, not a divergence).
fn die(why: &str) -> ! {
    let msg = format!(
        "difftest runner: {why}: {}\n",
        std::io::Error::last_os_error()
    );
    // SAFETY: a valid buffer.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(3)
    }
}

/// The child's `main`.
pub fn child_main() -> ! {
    let mut text = String::new();
    if std::io::stdin().read_to_string(&mut text).is_err() {
        die("reading the calls");
    }
    let ops: Vec<Op> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Op::decode(l).unwrap_or_else(|| die(&format!("bad call line {l:?}"))))
        .collect();
    let worker = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || Runner::new().run(&ops));
    match worker.map(|w| w.join()) {
        Ok(Ok(())) => {}
        _ => die("the runner thread failed"),
    }
    // SAFETY: nothing left to do; skip destructors that could touch the filled address space.
    unsafe { libc::_exit(0) }
}

struct Runner {
    /// Each file's read-write and read-only descriptors.
    fds: Vec<(i32, i32)>,
    /// A pipe through which touches reach memory by a kernel copy.
    pipe: [i32; 2],
    maps: Box<[u8]>,
    out: Buf,
    vec: Box<[u8]>,
    /// Stores made so far (the next one stores this plus one).
    stores: u8,
}

impl Runner {
    fn new() -> Runner {
        // SAFETY: plain system calls on values this function owns.
        unsafe {
            // No transparent huge pages: a 2 MiB fault would make 512 pages resident at once.
            if libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0 {
                die("PR_SET_THP_DISABLE");
            }
            let mut fds = Vec::new();
            for (i, pages) in FILE_PAGES.iter().enumerate() {
                let name = format!("difftest{i}\0");
                let rw = libc::memfd_create(name.as_ptr().cast(), 0);
                if rw < 0 || libc::ftruncate(rw, (pages * PAGE) as i64) != 0 {
                    die("memfd_create");
                }
                let path = format!("/proc/self/fd/{rw}\0");
                let ro = libc::open(path.as_ptr().cast(), libc::O_RDONLY);
                if ro < 0 {
                    die("reopening a memfd read-only");
                }
                fds.push((rw, ro));
            }
            let mut pipe = [0i32; 2];
            if libc::pipe(pipe.as_mut_ptr()) != 0 {
                die("pipe");
            }
            Runner {
                fds,
                pipe,
                maps: vec![0u8; MAPS_BUF].into_boxed_slice(),
                out: Buf::new(OUT_BUF),
                vec: vec![0u8; ((REGION_END - REGION_START) / PAGE) as usize].into_boxed_slice(),
                stores: 0,
            }
        }
    }

    fn run(mut self, ops: &[Op]) {
        self.fill();
        let exits = fork_exits(ops);
        // Children of this process alive: this process is a child when it is above 0.
        let mut depth = 0usize;
        let mut i = 0;
        while i < ops.len() {
            let ret = match ops[i] {
                Op::Fork => {
                    self.out.flush();
                    // SAFETY: the child runs only this loop (raw system calls into fixed
                    // buffers) and ends with `_exit`; the parent waits for it.
                    let pid = unsafe { libc::fork() };
                    if pid < 0 {
                        -last_errno()
                    } else if pid == 0 {
                        depth += 1;
                        self.fill();
                        0
                    } else {
                        let mut status = 0;
                        // SAFETY: waits for the child just made.
                        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
                        if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                            die("a forked child failed");
                        }
                        // Go on after the child's exit, whose state is this process's.
                        i = exits[i].unwrap_or(ops.len());
                        if i == ops.len() {
                            break;
                        }
                        0
                    }
                }
                Op::Exit if depth > 0 => {
                    self.out.flush();
                    // SAFETY: the child is done; nothing of it needs cleaning up.
                    unsafe { libc::_exit(0) }
                }
                Op::Exit => -ECHILD,
                ref op => self.call(op),
            };
            self.observe(ret);
            i += 1;
        }
        self.out.flush();
        if depth > 0 {
            // SAFETY: as at an exit: the sequence ended in a child.
            unsafe { libc::_exit(0) }
        }
    }

    /// Reads `/proc/self/maps` into the buffer; returns its length.
    fn read_maps(&mut self) -> usize {
        // SAFETY: reads into the fixed buffer, within its bounds.
        unsafe {
            let fd = libc::open(c"/proc/self/maps".as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                die("opening /proc/self/maps");
            }
            let mut len = 0;
            loop {
                let n = libc::read(fd, self.maps[len..].as_mut_ptr().cast(), MAPS_BUF - len);
                if n < 0 {
                    die("reading /proc/self/maps");
                }
                if n == 0 {
                    break;
                }
                len += n as usize;
                if len == MAPS_BUF {
                    die("/proc/self/maps does not fit its buffer");
                }
            }
            libc::close(fd);
            len
        }
    }

    /// Fills every free range outside the region with a placeholder, then checks that the region
    /// is the only free range left.
    fn fill(&mut self) {
        for pass in 0..2 {
            let len = self.read_maps();
            // A fixed array: on the second pass the address space is full.
            let mut gaps = [(0u64, 0u64); 1024];
            let mut count = 0;
            let mut push = |s: u64, e: u64| {
                if s < e && count < gaps.len() {
                    gaps[count] = (s, e);
                    count += 1;
                }
            };
            let mut at = MMAP_MIN_ADDR;
            for (start, end, _) in
                parse_lines(&self.maps[..len]).chain([(TASK_SIZE, TASK_SIZE, &[][..])])
            {
                if start >= TASK_SIZE && at >= TASK_SIZE {
                    break;
                }
                let start = start.min(TASK_SIZE);
                if start > at {
                    // The region is left free.
                    if at < REGION_START {
                        push(at, start.min(REGION_START));
                    }
                    if start > REGION_END {
                        push(at.max(REGION_END), start);
                    }
                }
                at = at.max(end);
            }
            let gaps = &gaps[..count];
            if pass == 1 {
                if let Some((s, e)) = gaps.first() {
                    die(&format!(
                        "free range {s:#x}..{e:#x} left outside the region"
                    ));
                }
                return;
            }
            for &(s, e) in gaps {
                // SAFETY: maps only free address space, which nothing of this process uses.
                unsafe {
                    let p = libc::mmap(
                        s as *mut _,
                        (e - s) as usize,
                        libc::PROT_NONE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                        -1,
                        0,
                    );
                    if p as u64 != s || libc::madvise(p, (e - s) as usize, libc::MADV_DONTFORK) != 0
                    {
                        die(&format!("placeholder {s:#x}..{e:#x}"));
                    }
                }
            }
        }
    }

    /// Makes one call; its value, or `-errno`.
    fn call(&mut self, op: &Op) -> i64 {
        let Some((nr, mut a)) = op.syscall() else {
            let Op::Touch { addr, write } = *op else {
                unreachable!(
                    "`run` makes forks and exits; every other op but a touch is a system call"
                )
            };
            return self.touch(addr, write);
        };
        if let Op::Mmap { fd: Some(f), .. } = *op {
            let (rw, ro) = self.fds[f.file];
            a[4] = if f.read_only { ro } else { rw } as u64;
        }
        // SAFETY: every call is confined to the region (the generator keeps it there) or fails;
        // nothing of this process lives in the region.
        let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
        if r == -1 {
            -last_errno()
        } else {
            r
        }
    }

    /// A one-byte kernel copy to or from `addr` through the pipe: 0, or `-EFAULT`. A store
    /// stores the count of stores so far, plus one.
    fn touch(&mut self, addr: u64, write: bool) -> i64 {
        let [r, w] = self.pipe;
        let mut scratch = 0u8;
        let scratch_p: *mut u8 = &mut scratch;
        let value = [self.stores.wrapping_add(1)];
        if write {
            self.stores = value[0];
        }
        // SAFETY: the pipe is ours; the kernel checks `addr` and fails with EFAULT.
        unsafe {
            let ok = if write {
                libc::write(w, value.as_ptr().cast(), 1);
                let n = libc::read(r, addr as *mut _, 1);
                if n != 1 {
                    libc::read(r, scratch_p.cast(), 1);
                }
                n == 1
            } else {
                let n = libc::write(w, addr as *const _, 1);
                if n == 1 {
                    libc::read(r, scratch_p.cast(), 1);
                }
                n == 1
            };
            if ok {
                0
            } else {
                -last_errno()
            }
        }
    }

    /// Writes the state after a call: its result, the region's lines, their residency.
    fn observe(&mut self, ret: i64) {
        let len = self.read_maps();
        let _ = writeln!(self.out, "= {ret}");
        let mut lines: [(u64, u64); 256] = [(0, 0); 256];
        let mut n = 0;
        // Lines first, then each line's residency.
        let maps = std::mem::take(&mut self.maps);
        for (start, end, line) in parse_lines(&maps[..len]) {
            if end <= REGION_START || start >= REGION_END {
                continue;
            }
            let (s, e) = (start.max(REGION_START), end.min(REGION_END));
            let mut w = line.split(|b| *b == b' ').filter(|f| !f.is_empty());
            let _range = w.next();
            let perms = std::str::from_utf8(w.next().unwrap_or(b"????")).unwrap_or("????");
            let offset = w
                .next()
                .and_then(|o| u64::from_str_radix(std::str::from_utf8(o).ok()?, 16).ok())
                .unwrap_or(0);
            let _dev = w.next();
            let _inode = w.next();
            let name = normalize(w.next().unwrap_or(b""));
            let offset = if name.is_empty() {
                offset
            } else {
                offset + (s - start)
            };
            let _ = writeln!(self.out, "L {s:x} {e:x} {perms} {offset:x} {name}");
            if n < lines.len() {
                lines[n] = (s, e);
                n += 1;
            }
        }
        self.maps = maps;
        let _ = write!(self.out, "R ");
        for (i, &(s, e)) in lines[..n].iter().enumerate() {
            if i > 0 {
                let _ = write!(self.out, "|");
            }
            let pages = ((e - s) / PAGE) as usize;
            // SAFETY: `vec` holds a byte per region page.
            let r = unsafe { libc::mincore(s as *mut _, (e - s) as usize, self.vec.as_mut_ptr()) };
            if r != 0 {
                let _ = write!(
                    self.out,
                    "mincore failed: {}",
                    std::io::Error::last_os_error()
                );
                continue;
            }
            for b in &self.vec[..pages] {
                let _ = self.out.write_char(if b & 1 == 1 { '1' } else { '0' });
            }
        }
        let _ = writeln!(self.out);
        let _ = write!(self.out, "V ");
        for (i, &(s, e)) in lines[..n].iter().enumerate() {
            if i > 0 {
                let _ = write!(self.out, "|");
            }
            self.values(s, e);
        }
        let _ = writeln!(self.out);
        let _ = writeln!(self.out, "#");
    }

    /// Writes the first byte of each page of `[s, e)` that is resident, read by a kernel copy
    /// (two hex digits; `??` where the copy fails, `--` where the page is not resident).
    fn values(&mut self, s: u64, e: u64) {
        let pages = ((e - s) / PAGE) as usize;
        // SAFETY: `vec` holds a byte per region page.
        if unsafe { libc::mincore(s as *mut _, (e - s) as usize, self.vec.as_mut_ptr()) } != 0 {
            let _ = write!(self.out, "mincore failed");
            return;
        }
        let [r, w] = self.pipe;
        for p in 0..pages {
            if self.vec[p] & 1 == 0 {
                let _ = write!(self.out, "--");
                continue;
            }
            let mut byte = 0u8;
            let at = s + p as u64 * PAGE;
            // SAFETY: the kernel checks `at` and fails with EFAULT; `byte` is ours.
            let n = unsafe { libc::write(w, at as *const _, 1) };
            if n == 1 {
                // SAFETY: as above.
                unsafe { libc::read(r, (&mut byte as *mut u8).cast(), 1) };
                let _ = write!(self.out, "{byte:02x}");
            } else {
                let _ = write!(self.out, "??");
            }
        }
    }
}

/// The errno of the last failed call.
fn last_errno() -> i64 {
    i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// The lines of a maps text with their ranges.
fn parse_lines(text: &[u8]) -> impl Iterator<Item = (u64, u64, &[u8])> {
    text.split(|b| *b == b'\n').filter_map(|line| {
        let dash = line.iter().position(|b| *b == b'-')?;
        let space = line.iter().position(|b| *b == b' ')?;
        let hex = |s: &[u8]| u64::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok();
        Some((hex(&line[..dash])?, hex(&line[dash + 1..space])?, line))
    })
}

/// The sequence's name for a mapped path: `file0`.. for the memfds, `shmem` for shared anonymous
/// memory, empty for anonymous memory, else the path as Linux prints it.
fn normalize(path: &[u8]) -> &'static str {
    const NAMES: [(&[u8], &str); 4] = [
        (b"/memfd:difftest0", "file0"),
        (b"/memfd:difftest1", "file1"),
        (b"/memfd:difftest2", "file2"),
        (b"/dev/zero", "shmem"),
    ];
    if path.is_empty() {
        return "";
    }
    NAMES
        .iter()
        .find(|(p, _)| path.starts_with(p))
        .map_or("unknown", |(_, n)| n)
}

#[cfg(test)]
mod tests {
    use mm_replay::difftest::Op;

    #[test]
    fn the_ops_system_call_numbers_are_this_machines() {
        let (a, n) = (0x1000_0000_0000, 0x1000);
        let cases = [
            (
                Op::Mmap {
                    addr: a,
                    len: n,
                    prot: 0,
                    flags: 0x22,
                    fd: None,
                    off: 0,
                },
                libc::SYS_mmap,
            ),
            (Op::Munmap { addr: a, len: n }, libc::SYS_munmap),
            (
                Op::Mprotect {
                    addr: a,
                    len: n,
                    prot: 1,
                },
                libc::SYS_mprotect,
            ),
            (
                Op::Mremap {
                    old: a,
                    old_len: n,
                    new_len: n,
                    flags: 0,
                    new_addr: 0,
                },
                libc::SYS_mremap,
            ),
            (
                Op::Madvise {
                    addr: a,
                    len: n,
                    advice: 4,
                },
                libc::SYS_madvise,
            ),
            (
                Op::Mlock {
                    addr: a,
                    len: n,
                    flags: 0,
                },
                libc::SYS_mlock2,
            ),
            (Op::Munlock { addr: a, len: n }, libc::SYS_munlock),
            (
                Op::Msync {
                    addr: a,
                    len: n,
                    flags: 1,
                },
                libc::SYS_msync,
            ),
        ];
        for (op, nr) in cases {
            assert_eq!(op.syscall().map(|(n, _)| n), Some(nr), "{}", op.encode());
            assert_eq!(Op::decode(&op.encode()), Some(op));
        }
        assert_eq!(
            Op::Touch {
                addr: a,
                write: true
            }
            .syscall(),
            None
        );
    }
}
