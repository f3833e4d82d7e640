//! Parsing what `strace -f -y -e trace=memory -o FILE` writes.
//!
//! One call per line, `PID  name(args) = result`, where the PID column is there with `-f` (or as
//! `[pid N] ` on a terminal) and absent otherwise. A call another thread interrupts is split into
//! `name(args <unfinished ...>` and `<... name resumed>rest`; the halves are joined per PID. Exit and
//! signal lines (`+++`, `---`) carry no call and are skipped; calls outside the memory set this
//! replayer understands are skipped and counted. Anything else that does not parse is an error
//! naming its line.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Why a trace could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// A line is not a call strace could have written.
    #[error("trace line {line}: {reason}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
}

/// A descriptor argument as `-y` prints it: `3</usr/lib/libc.so.6>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fd {
    /// The descriptor number (`-1` for anonymous mappings).
    pub fd: i64,
    /// The file behind it, if strace named one.
    pub path: Option<String>,
}

/// One memory system call and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `mmap(addr, len, prot, flags, fd, offset)` (also `mmap2`, whose offset is in pages).
    Mmap {
        /// Hint or fixed address.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// `PROT_*` bits.
        prot: u64,
        /// `MAP_*` bits.
        flags: u64,
        /// The file, or fd -1.
        fd: Fd,
        /// Offset in bytes.
        offset: u64,
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
        /// `PROT_*` bits.
        prot: u64,
    },
    /// `brk(addr)`; `NULL` asks for the current break.
    Brk {
        /// Requested break.
        addr: u64,
    },
    /// `mremap(old, old_len, new_len, flags[, new_addr])`.
    Mremap {
        /// Start of the old mapping.
        old_addr: u64,
        /// Old length in bytes.
        old_len: u64,
        /// New length in bytes.
        new_len: u64,
        /// `MREMAP_*` bits.
        flags: u64,
        /// Destination with `MREMAP_FIXED`.
        new_addr: Option<u64>,
    },
    /// `mlock(addr, len)` (flags 0) or `mlock2(addr, len, flags)`.
    Mlock {
        /// Start.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// `MLOCK_*` bits.
        flags: u64,
    },
    /// `munlock(addr, len)`.
    Munlock {
        /// Start.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// `mlockall(flags)`.
    Mlockall {
        /// `MCL_*` bits.
        flags: u64,
    },
    /// `munlockall()`.
    Munlockall,
    /// `pkey_mprotect(addr, len, prot, pkey)`.
    PkeyMprotect {
        /// Start.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// `PROT_*` bits.
        prot: u64,
        /// The protection key (`-1` for none).
        pkey: i64,
    },
    /// `msync(addr, len, flags)`.
    Msync {
        /// Start.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// `MS_*` bits.
        flags: u64,
    },
    /// `madvise(addr, len, advice)`.
    Madvise {
        /// Start.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// The advice as strace names it (`MADV_DONTNEED`, or a number).
        advice: String,
    },
}

/// What the kernel returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A non-negative return value.
    Ok(u64),
    /// `-1 ERRNO (...)`: the call failed with this errno name.
    Err(String),
}

/// One parsed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// 1-based line where the call (or its resumption) ends.
    pub line: usize,
    /// 1-based line where it began: `line`, or the line of its `<unfinished ...>` half.
    pub start: usize,
    /// The thread, if the trace has a PID column.
    pub pid: Option<u32>,
    /// The call.
    pub call: Call,
    /// Its result.
    pub outcome: Outcome,
}

/// A parsed trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// The calls in the order they returned.
    pub events: Vec<Event>,
    /// Skipped calls by name (unknown syscalls, and calls with no result such as `= ?`).
    pub skipped: BTreeMap<String, usize>,
}

/// Parses a whole strace output.
pub fn parse_trace(text: &str) -> Result<Trace, TraceError> {
    let mut trace = Trace::default();
    // An interrupted call takes its place where it started: it entered the kernel, and so took
    // the mmap lock, before the calls other threads made while it was unfinished (a munmap that
    // another thread's mmap then reuses the range of had already unmapped it). A call that lets
    // the kernel choose where a mapping goes is the exception: where it went is known only at its
    // end, and placing it there holds whenever it ran: every call of another thread that began
    // before it ended, a munmap that freed its range included, comes before it.
    let mut slots: Vec<Option<Event>> = Vec::new();
    let mut pending: BTreeMap<Option<u32>, (String, usize, usize)> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let bad = |reason: &str| TraceError::Malformed {
            line,
            reason: reason.to_string(),
        };
        let (pid, rest) = split_pid(raw.trim_end()).map_err(&bad)?;
        let rest = skip_timestamp(rest.trim_start());
        if rest.is_empty() || rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid, (head.trim_end().to_string(), slots.len(), line));
            slots.push(None);
            continue;
        }
        let whole;
        let (text, slot, start) = if let Some(tail) = rest.strip_prefix("<... ") {
            let (_, after) = tail
                .split_once(" resumed>")
                .ok_or_else(|| bad("a resumption without `resumed>`"))?;
            let (head, slot, start) = pending
                .remove(&pid)
                .ok_or_else(|| bad("a resumption with no unfinished call of this thread"))?;
            whole = format!("{head}{after}");
            (whole.as_str(), slot, start)
        } else {
            slots.push(None);
            (rest, slots.len() - 1, line)
        };
        match parse_call(text).map_err(|r| bad(&r))? {
            Parsed::Call(call, outcome) => {
                let slot = if start != line && chooses_address(&call) {
                    slots.push(None);
                    slots.len() - 1
                } else {
                    slot
                };
                slots[slot] = Some(Event {
                    line,
                    start,
                    pid,
                    call,
                    outcome,
                })
            }
            Parsed::Skip(name) => *trace.skipped.entry(name).or_default() += 1,
        }
    }
    trace.events = slots.into_iter().flatten().collect();
    Ok(trace)
}

/// Splits the PID column (`1234  ` or `[pid 1234] `) off a line.
/// Whether the kernel chose where the call's mapping went (an mmap without `MAP_FIXED`, an
/// mremap that may move).
fn chooses_address(call: &Call) -> bool {
    match call {
        Call::Mmap { flags, .. } => flags & 0x10 == 0,
        Call::Mremap { flags, .. } => flags & 1 != 0 && flags & 2 == 0,
        _ => false,
    }
}

fn split_pid(line: &str) -> Result<(Option<u32>, &str), &'static str> {
    if let Some(rest) = line.strip_prefix("[pid ") {
        let (num, rest) = rest.split_once(']').ok_or("`[pid` without `]`")?;
        let pid = num.trim().parse().map_err(|_| "a bad pid")?;
        return Ok((Some(pid), rest));
    }
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && line[digits..].starts_with([' ', '\t']) {
        let pid = line[..digits].parse().map_err(|_| "a pid out of range")?;
        return Ok((Some(pid), &line[digits..]));
    }
    Ok((None, line))
}

/// Skips a `-t`/`-tt`/`-ttt`/`-r` timestamp (`12:34:56.789012`, `1700000000.123456`).
fn skip_timestamp(s: &str) -> &str {
    let len = s
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b':' || *b == b'.')
        .count();
    if len > 0 && s[..len].contains(['.', ':']) && s[len..].starts_with(' ') {
        s[len..].trim_start()
    } else {
        s
    }
}

enum Parsed {
    Call(Call, Outcome),
    Skip(String),
}

/// Parses `name(args) = result`.
fn parse_call(text: &str) -> Result<Parsed, String> {
    let open = text.find('(').ok_or("no `(` after the call name")?;
    let name = &text[..open];
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("`{}` is not a system call name", clip(name)));
    }
    // strace pads short calls with spaces before ` = `; the last ` = ` after a `)` ends the args.
    let (close, eq) = text
        .rmatch_indices(" = ")
        .find_map(|(eq, _)| {
            let head = text[..eq].trim_end();
            head.ends_with(')').then(|| (head.len() - 1, eq))
        })
        .filter(|(c, _)| *c >= open)
        .ok_or("no `) = result`")?;
    let args = split_args(&text[open + 1..close]);
    let result = text[eq + 3..].trim();
    if result.starts_with('?') {
        return Ok(Parsed::Skip(format!("{name} (no result)")));
    }
    let known = [
        "mmap",
        "mmap2",
        "munmap",
        "mprotect",
        "brk",
        "mremap",
        "madvise",
        "mlock",
        "mlock2",
        "munlock",
        "mlockall",
        "munlockall",
        "pkey_mprotect",
        "msync",
    ];
    if !known.contains(&name) {
        return Ok(Parsed::Skip(name.to_string()));
    }
    let outcome = parse_result(result)?;
    let want = |n: usize| -> Result<(), String> {
        if args.len() == n || (name == "mremap" && args.len() == 5) {
            Ok(())
        } else {
            Err(format!("{name} takes {n} arguments, found {}", args.len()))
        }
    };
    let call = match name {
        "mmap" | "mmap2" => {
            want(6)?;
            let page_units = if name == "mmap2" { 4096 } else { 1 };
            Call::Mmap {
                addr: num(args[0])?,
                len: num(args[1])?,
                prot: flags(args[2], PROT_NAMES)?,
                flags: flags(args[3], MAP_NAMES)?,
                fd: fd(args[4])?,
                offset: num(args[5])?
                    .checked_mul(page_units)
                    .ok_or("mmap2 offset overflows")?,
            }
        }
        "munmap" => {
            want(2)?;
            Call::Munmap {
                addr: num(args[0])?,
                len: num(args[1])?,
            }
        }
        "mprotect" => {
            want(3)?;
            Call::Mprotect {
                addr: num(args[0])?,
                len: num(args[1])?,
                prot: flags(args[2], PROT_NAMES)?,
            }
        }
        "brk" => {
            want(1)?;
            Call::Brk {
                addr: num(args[0])?,
            }
        }
        "mremap" => {
            want(4)?;
            Call::Mremap {
                old_addr: num(args[0])?,
                old_len: num(args[1])?,
                new_len: num(args[2])?,
                flags: flags(args[3], MREMAP_NAMES)?,
                new_addr: args.get(4).map(|a| num(a)).transpose()?,
            }
        }
        "mlock" | "munlock" => {
            want(2)?;
            let (addr, len) = (num(args[0])?, num(args[1])?);
            if name == "mlock" {
                Call::Mlock {
                    addr,
                    len,
                    flags: 0,
                }
            } else {
                Call::Munlock { addr, len }
            }
        }
        "mlock2" => {
            want(3)?;
            Call::Mlock {
                addr: num(args[0])?,
                len: num(args[1])?,
                flags: flags(args[2], MLOCK_NAMES)?,
            }
        }
        "mlockall" => {
            want(1)?;
            Call::Mlockall {
                flags: flags(args[0], MCL_NAMES)?,
            }
        }
        "munlockall" => {
            want(0)?;
            Call::Munlockall
        }
        "pkey_mprotect" => {
            want(4)?;
            Call::PkeyMprotect {
                addr: num(args[0])?,
                len: num(args[1])?,
                prot: flags(args[2], PROT_NAMES)?,
                pkey: num(args[3])? as i64,
            }
        }
        "msync" => {
            want(3)?;
            Call::Msync {
                addr: num(args[0])?,
                len: num(args[1])?,
                flags: flags(args[2], MS_NAMES)?,
            }
        }
        _ => {
            want(3)?;
            Call::Madvise {
                addr: num(args[0])?,
                len: num(args[1])?,
                advice: args[2].to_string(),
            }
        }
    };
    Ok(Parsed::Call(call, outcome))
}

/// Splits arguments at top-level `, `, keeping `-y`'s `<path>` (which may hold commas) whole.
fn split_args(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start, mut prev_digit) = (0usize, 0usize, false);
    for (i, c) in s.char_indices() {
        match c {
            '<' if prev_digit => depth += 1,
            '>' if depth > 0 => depth -= 1,
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        prev_digit = c.is_ascii_digit();
    }
    if !s.trim().is_empty() {
        out.push(s[start..].trim());
    }
    out
}

/// `= 0x7f..`, `= 0`, or `= -1 ENOMEM (Cannot allocate memory)`.
fn parse_result(r: &str) -> Result<Outcome, String> {
    if let Some(rest) = r.strip_prefix("-1 ") {
        let errno = rest.split_whitespace().next().unwrap_or("");
        if errno.is_empty() || !errno.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            return Err(format!(
                "a failed call without an errno name: `{}`",
                clip(r)
            ));
        }
        return Ok(Outcome::Err(errno.to_string()));
    }
    let value = r.split_whitespace().next().unwrap_or("");
    Ok(Outcome::Ok(num(value)?))
}

/// `NULL`, decimal or `0x` hex, as a `u64` (`-1` and other negatives wrap, as the kernel sees them).
fn num(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s == "NULL" {
        return Ok(0);
    }
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let v = match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => digits.parse::<u64>(),
    }
    .map_err(|_| format!("`{}` is not a number that fits 64 bits", clip(s)))?;
    Ok(if neg { v.wrapping_neg() } else { v })
}

/// `3</path>` or `-1`.
fn fd(s: &str) -> Result<Fd, String> {
    match s.split_once('<') {
        Some((n, path)) => {
            let path = path.strip_suffix('>').ok_or("a `-y` path without `>`")?;
            Ok(Fd {
                fd: num(n)? as i64,
                path: Some(path.to_string()),
            })
        }
        None => Ok(Fd {
            fd: num(s)? as i64,
            path: None,
        }),
    }
}

/// `A|B|0x10` against a table of names.
fn flags(s: &str, names: &[(&str, u64)]) -> Result<u64, String> {
    let mut v = 0;
    for part in s.split('|') {
        let part = part.trim();
        v |= match names.iter().find(|(n, _)| *n == part) {
            Some((_, bit)) => *bit,
            None => num(part).map_err(|_| format!("unknown flag `{}`", clip(part)))?,
        };
    }
    Ok(v)
}

/// At most 40 characters of `s`, for error messages about hostile input.
fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// `PROT_*` names.
pub const PROT_NAMES: &[(&str, u64)] = &[
    ("PROT_NONE", 0),
    ("PROT_READ", 1),
    ("PROT_WRITE", 2),
    ("PROT_EXEC", 4),
    ("PROT_SEM", 8),
    ("PROT_GROWSDOWN", 0x0100_0000),
    ("PROT_GROWSUP", 0x0200_0000),
];

/// `MAP_*` names (x86_64 values).
pub const MAP_NAMES: &[(&str, u64)] = &[
    ("MAP_SHARED", 0x1),
    ("MAP_PRIVATE", 0x2),
    ("MAP_SHARED_VALIDATE", 0x3),
    ("MAP_FIXED", 0x10),
    ("MAP_ANONYMOUS", 0x20),
    ("MAP_ANON", 0x20),
    ("MAP_32BIT", 0x40),
    ("MAP_GROWSDOWN", 0x100),
    ("MAP_DENYWRITE", 0x800),
    ("MAP_EXECUTABLE", 0x1000),
    ("MAP_LOCKED", 0x2000),
    ("MAP_NORESERVE", 0x4000),
    ("MAP_POPULATE", 0x8000),
    ("MAP_NONBLOCK", 0x1_0000),
    ("MAP_STACK", 0x2_0000),
    ("MAP_HUGETLB", 0x4_0000),
    ("MAP_SYNC", 0x8_0000),
    ("MAP_FIXED_NOREPLACE", 0x10_0000),
    ("MAP_UNINITIALIZED", 0x400_0000),
];

/// `MREMAP_*` names.
pub const MREMAP_NAMES: &[(&str, u64)] = &[
    ("MREMAP_MAYMOVE", 1),
    ("MREMAP_FIXED", 2),
    ("MREMAP_DONTUNMAP", 4),
];

/// `MLOCK_*` names.
pub const MLOCK_NAMES: &[(&str, u64)] = &[("MLOCK_ONFAULT", 1)];

/// `MCL_*` names.
pub const MCL_NAMES: &[(&str, u64)] = &[("MCL_CURRENT", 1), ("MCL_FUTURE", 2), ("MCL_ONFAULT", 4)];

/// `MS_*` names.
pub const MS_NAMES: &[(&str, u64)] = &[("MS_ASYNC", 1), ("MS_INVALIDATE", 2), ("MS_SYNC", 4)];

#[cfg(test)]
mod tests;
