//! The calls a difftest sequence is made of, in Linux's terms (raw words as a program passes them),
//! and their one-line text form: the native runner reads it, and a divergence prints it.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// A file descriptor an [`Op::Mmap`] maps: one of the sequence's files, opened read-write or
/// read-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fd {
    /// Which file (index into [`super::FILE_PAGES`]).
    pub file: usize,
    /// Opened `O_RDONLY` rather than `O_RDWR`.
    pub read_only: bool,
}

/// One call, or one touch of a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `mmap(addr, len, prot, flags, fd, off)`; `fd` is `None` for `-1`.
    Mmap {
        /// Hint or fixed address (0 for NULL).
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// `PROT_*`.
        prot: u64,
        /// `MAP_*`.
        flags: u64,
        /// The descriptor, if any.
        fd: Option<Fd>,
        /// File offset in bytes.
        off: u64,
    },
    /// `munmap(addr, len)`.
    Munmap {
        /// Start.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// `mprotect(addr, len, prot)`.
    Mprotect {
        /// Start.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// `PROT_*`.
        prot: u64,
    },
    /// `mremap(old, old_len, new_len, flags, new_addr)`.
    Mremap {
        /// Old start.
        old: u64,
        /// Old length.
        old_len: u64,
        /// New length.
        new_len: u64,
        /// `MREMAP_*`.
        flags: u64,
        /// Target with `MREMAP_FIXED`.
        new_addr: u64,
    },
    /// `madvise(addr, len, advice)`.
    Madvise {
        /// Start.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// `MADV_*`.
        advice: u64,
    },
    /// `mlock2(addr, len, flags)` (`mlock` when `flags` is 0).
    Mlock {
        /// Start.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// `MLOCK_ONFAULT` or 0.
        flags: u64,
    },
    /// `munlock(addr, len)`.
    Munlock {
        /// Start.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// `msync(addr, len, flags)`.
    Msync {
        /// Start.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// `MS_*`.
        flags: u64,
    },
    /// A one-byte access of `addr` by the kernel on the program's behalf (a `read`/`write`
    /// through a pipe): 0, or `-EFAULT` where a user access would take a signal.
    Touch {
        /// The address.
        addr: u64,
        /// A store (else a load). The byte stored is the process's count of stores so far,
        /// plus one (mod 256), on both sides, so what a process reads back tells whose store it
        /// sees.
        write: bool,
    },
    /// `fork()`: the calls that follow run in the child, until its [`Op::Exit`] (or the end);
    /// the state after it is the child's, with the result 0.
    Fork,
    /// The current child exits (`_exit`) and its parent, which waited, goes on; the state after it
    /// is the parent's, with the result 0. With no child to end, `-ECHILD` and nothing changes.
    Exit,
}

/// Linux's `ECHILD`, an [`Op::Exit`] with no child to end.
pub const ECHILD: i64 = 10;

impl Op {
    /// The x86_64 system call number the op makes and its six argument words, or `None` for a
    /// touch, a fork or an exit (which the runners make themselves). An mmap's descriptor word is `-1` or the file's index ([`Fd::file`]): the caller
    /// puts its own descriptor there.
    pub fn syscall(&self) -> Option<(i64, [u64; 6])> {
        Some(match *self {
            Op::Mmap {
                addr,
                len,
                prot,
                flags,
                fd,
                off,
            } => {
                let fd = fd.map_or(u64::MAX, |f| f.file as u64);
                (9, [addr, len, prot, flags, fd, off])
            }
            Op::Munmap { addr, len } => (11, [addr, len, 0, 0, 0, 0]),
            Op::Mprotect { addr, len, prot } => (10, [addr, len, prot, 0, 0, 0]),
            Op::Mremap {
                old,
                old_len,
                new_len,
                flags,
                new_addr,
            } => (25, [old, old_len, new_len, flags, new_addr, 0]),
            Op::Madvise { addr, len, advice } => (28, [addr, len, advice, 0, 0, 0]),
            Op::Mlock { addr, len, flags } => (325, [addr, len, flags, 0, 0, 0]),
            Op::Munlock { addr, len } => (150, [addr, len, 0, 0, 0, 0]),
            Op::Msync { addr, len, flags } => (26, [addr, len, flags, 0, 0, 0]),
            Op::Touch { .. } | Op::Fork | Op::Exit => return None,
        })
    }

    /// The text form: the call's name and its arguments in hex.
    pub fn encode(&self) -> String {
        alloc::format!("{}", Encoded(self))
    }

    /// Parses [`Op::encode`]'s form.
    pub fn decode(line: &str) -> Option<Op> {
        let mut w = line.split_ascii_whitespace();
        let name = w.next()?;
        let mut nums = Vec::new();
        let mut fd = None;
        for word in w {
            match word {
                "-" => fd = None,
                _ if word.starts_with("fd") => {
                    let (ro, n) = match word[2..].strip_prefix('r') {
                        Some(n) => (true, n),
                        None => (false, &word[2..]),
                    };
                    fd = Some(Fd {
                        file: n.parse().ok()?,
                        read_only: ro,
                    });
                }
                _ => nums.push(u64::from_str_radix(word.trim_start_matches("0x"), 16).ok()?),
            }
        }
        let n = |i: usize| nums.get(i).copied();
        Some(match (name, nums.len()) {
            ("mmap", 5) => Op::Mmap {
                addr: n(0)?,
                len: n(1)?,
                prot: n(2)?,
                flags: n(3)?,
                fd,
                off: n(4)?,
            },
            ("munmap", 2) => Op::Munmap {
                addr: n(0)?,
                len: n(1)?,
            },
            ("mprotect", 3) => Op::Mprotect {
                addr: n(0)?,
                len: n(1)?,
                prot: n(2)?,
            },
            ("mremap", 5) => Op::Mremap {
                old: n(0)?,
                old_len: n(1)?,
                new_len: n(2)?,
                flags: n(3)?,
                new_addr: n(4)?,
            },
            ("madvise", 3) => Op::Madvise {
                addr: n(0)?,
                len: n(1)?,
                advice: n(2)?,
            },
            ("mlock2", 3) => Op::Mlock {
                addr: n(0)?,
                len: n(1)?,
                flags: n(2)?,
            },
            ("munlock", 2) => Op::Munlock {
                addr: n(0)?,
                len: n(1)?,
            },
            ("msync", 3) => Op::Msync {
                addr: n(0)?,
                len: n(1)?,
                flags: n(2)?,
            },
            ("read", 1) | ("write", 1) => Op::Touch {
                addr: n(0)?,
                write: name == "write",
            },
            ("fork", 0) => Op::Fork,
            ("exit", 0) => Op::Exit,
            _ => return None,
        })
    }
}

/// [`Op::encode`]'s form, written without allocating (the native runner formats in a buffer
/// reserved before it fills the address space).
pub struct Encoded<'a>(pub &'a Op);

impl fmt::Display for Encoded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self.0 {
            Op::Mmap {
                addr,
                len,
                prot,
                flags,
                fd,
                off,
            } => {
                write!(f, "mmap {addr:#x} {len:#x} {prot:#x} {flags:#x} ")?;
                match fd {
                    None => f.write_str("-")?,
                    Some(Fd { file, read_only }) => {
                        write!(f, "fd{}{file}", if read_only { "r" } else { "" })?
                    }
                }
                write!(f, " {off:#x}")
            }
            Op::Munmap { addr, len } => write!(f, "munmap {addr:#x} {len:#x}"),
            Op::Mprotect { addr, len, prot } => write!(f, "mprotect {addr:#x} {len:#x} {prot:#x}"),
            Op::Mremap {
                old,
                old_len,
                new_len,
                flags,
                new_addr,
            } => write!(
                f,
                "mremap {old:#x} {old_len:#x} {new_len:#x} {flags:#x} {new_addr:#x}"
            ),
            Op::Madvise { addr, len, advice } => {
                write!(f, "madvise {addr:#x} {len:#x} {advice:#x}")
            }
            Op::Mlock { addr, len, flags } => write!(f, "mlock2 {addr:#x} {len:#x} {flags:#x}"),
            Op::Munlock { addr, len } => write!(f, "munlock {addr:#x} {len:#x}"),
            Op::Msync { addr, len, flags } => write!(f, "msync {addr:#x} {len:#x} {flags:#x}"),
            Op::Touch { addr, write } => {
                write!(f, "{} {addr:#x}", if write { "write" } else { "read" })
            }
            Op::Fork => f.write_str("fork"),
            Op::Exit => f.write_str("exit"),
        }
    }
}

/// For each [`Op::Fork`] of `ops`, the index of the [`Op::Exit`] that ends its child (`ops.len()`
/// if none does: the child runs to the end); `None` for every other op. An exit that ends no
/// child is left unmatched.
pub fn fork_exits(ops: &[Op]) -> Vec<Option<usize>> {
    let mut out = alloc::vec![None; ops.len()];
    let mut open = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Fork => open.push(i),
            Op::Exit => {
                if let Some(f) = open.pop() {
                    out[f] = Some(i);
                }
            }
            _ => {}
        }
    }
    for f in open {
        out[f] = Some(ops.len());
    }
    out
}
