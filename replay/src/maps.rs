//! `/proc/PID/maps`: parsing a snapshot, printing one, and comparing two.
//!
//! A line is `start-end perms offset dev inode [path]`, addresses and offset in hex. Comparison
//! ignores what a trace cannot know: device numbers, the names Linux gives anonymous memory
//! (`[heap]`, `[stack]`, `[anon:...]`), and the contents behind `[vdso]`/`[vvar]`/`[vsyscall]`
//! (only their ranges and permissions are compared; the trace never touches them).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// Why a maps snapshot could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapsError {
    /// A line is not `start-end perms offset dev inode [path]`.
    #[error("maps line {line}: {reason}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsLine {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `rwxp` / `rw-s`: read, write, exec, shared.
    pub perms: [bool; 4],
    /// Offset in the file, in bytes (0 for anonymous memory).
    pub offset: u64,
    /// `major:minor`, as printed.
    pub dev: String,
    /// The file's inode (0 for anonymous memory).
    pub inode: u64,
    /// The file's path or a bracketed name (`[heap]`), empty for plain anonymous memory.
    pub path: String,
}

impl MapsLine {
    /// Whether this is one of the kernel's special mappings, whose contents a trace never touches.
    pub fn is_special(&self) -> bool {
        is_special_name(&self.path)
    }

    /// Whether this is anonymous memory (no file, not a special mapping).
    pub fn is_anonymous(&self) -> bool {
        self.inode == 0 && !self.is_special() && !self.path.starts_with('/')
    }

    /// The fields [`compare`] looks at: range, permissions, offset, inode, and the path of files
    /// and special mappings.
    fn key(&self) -> (u64, u64, [bool; 4], u64, u64, &str) {
        let path = if self.is_anonymous() { "" } else { &self.path };
        let offset = if self.is_anonymous() { 0 } else { self.offset };
        (self.start, self.end, self.perms, offset, self.inode, path)
    }
}

/// Whether `path` names a special mapping (`[vdso]`, `[vvar]`, `[vvar_vclock]`, `[vsyscall]`).
pub fn is_special_name(path: &str) -> bool {
    matches!(path, "[vdso]" | "[vvar]" | "[vvar_vclock]" | "[vsyscall]")
}

impl fmt::Display for MapsLine {
    /// Linux's format: the path starts at column 73 (`seq_pad` in `show_map_vma`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = |on: bool, c: char| if on { c } else { '-' };
        let [r, w, x, s] = self.perms;
        let head = format!(
            "{:08x}-{:08x} {}{}{}{} {:08x} {} {}",
            self.start,
            self.end,
            p(r, 'r'),
            p(w, 'w'),
            p(x, 'x'),
            if s { 's' } else { 'p' },
            self.offset,
            self.dev,
            self.inode
        );
        if self.path.is_empty() {
            write!(f, "{head} ")
        } else {
            write!(f, "{head:<72} {}", self.path)
        }
    }
}

/// Parses a whole snapshot.
pub fn parse_maps(text: &str) -> Result<Vec<MapsLine>, MapsError> {
    let mut out: Vec<MapsLine> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let m = parse_line(raw).map_err(|reason| MapsError::Malformed { line, reason })?;
        if let Some(prev) = out.last() {
            if m.start < prev.end {
                return Err(MapsError::Malformed {
                    line,
                    reason: "overlaps or precedes the line before".into(),
                });
            }
        }
        out.push(m);
    }
    Ok(out)
}

fn parse_line(raw: &str) -> Result<MapsLine, String> {
    let mut rest = raw.trim_start();
    let mut field = || -> Result<&str, String> {
        let s = rest.trim_start();
        let end = s.find([' ', '\t']).unwrap_or(s.len());
        rest = &s[end..];
        if end == 0 {
            Err("too few fields".to_string())
        } else {
            Ok(&s[..end])
        }
    };
    let range = field()?;
    let perms = field()?;
    let offset = field()?;
    let dev = field()?.to_string();
    let inode = field()?;
    let path = rest.trim().to_string();
    let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| format!("`{s}` is not hex"));
    let (start, end) = range.split_once('-').ok_or("no `-` in the range")?;
    let (start, end) = (hex(start)?, hex(end)?);
    if start >= end || start % 4096 != 0 || end % 4096 != 0 {
        return Err("the range is empty or not page aligned".into());
    }
    let b = perms.as_bytes();
    if b.len() != 4 {
        return Err(format!("`{perms}` is not four permission letters"));
    }
    let flag = |i: usize, c: u8| match b[i] {
        x if x == c => Ok(true),
        b'-' => Ok(false),
        _ => Err(format!("`{perms}` is not permissions")),
    };
    let shared = match b[3] {
        b's' => true,
        b'p' => false,
        _ => return Err(format!("`{perms}` is neither private nor shared")),
    };
    Ok(MapsLine {
        start,
        end,
        perms: [flag(0, b'r')?, flag(1, b'w')?, flag(2, b'x')?, shared],
        offset: hex(offset)?,
        dev,
        inode: inode
            .parse()
            .map_err(|_| format!("`{inode}` is not an inode"))?,
        path,
    })
}

/// Where two snapshots first differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// 0-based index of the first differing line.
    pub index: usize,
    /// Our line there, if any.
    pub ours: Option<MapsLine>,
    /// Linux's line there, if any.
    pub linux: Option<MapsLine>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show =
            |l: &Option<MapsLine>| l.as_ref().map_or("(none)".to_string(), |l| l.to_string());
        writeln!(f, "maps differ at line {}:", self.index + 1)?;
        writeln!(f, "- linux: {}", show(&self.linux))?;
        write!(f, "+ ours:  {}", show(&self.ours))
    }
}

/// Compares `ours` with Linux's snapshot, ignoring what a trace cannot know (see the module doc).
pub fn compare(ours: &[MapsLine], linux: &[MapsLine]) -> Result<(), Box<Mismatch>> {
    let n = ours.len().max(linux.len());
    for index in 0..n {
        let (a, b) = (ours.get(index), linux.get(index));
        if a.map(MapsLine::key) != b.map(MapsLine::key) {
            return Err(Box::new(Mismatch {
                index,
                ours: a.cloned(),
                linux: b.cloned(),
            }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAPSHOT: &str = "\
5593f3a00000-5593f3a02000 r--p 00000000 08:01 1311   /usr/bin/true
5593f3c21000-5593f3c42000 rw-p 00000000 00:00 0                          [heap]
7f1c2a000000-7f1c2a021000 rw-p 00000000 00:00 0 
7fff1000e000-7fff10010000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn a_snapshot_parses_into_ranges_permissions_and_names() {
        let m = parse_maps(SNAPSHOT).expect("parses");
        assert_eq!(m.len(), 5);
        assert_eq!((m[0].start, m[0].end), (0x5593_f3a0_0000, 0x5593_f3a0_2000));
        assert_eq!(m[0].perms, [true, false, false, false]);
        assert_eq!((m[0].inode, m[0].path.as_str()), (1311, "/usr/bin/true"));
        assert!(m[1].is_anonymous() && m[2].is_anonymous() && m[2].path.is_empty());
        assert!(m[3].is_special() && !m[3].is_anonymous());
        assert_eq!(m[4].start, 0xffff_ffff_ff60_0000);
    }

    #[test]
    fn printing_a_line_gives_back_what_linux_wrote() {
        let m = parse_maps(SNAPSHOT).expect("parses");
        let printed: Vec<String> = m.iter().map(|l| l.to_string()).collect();
        assert_eq!(
            printed[1],
            "5593f3c21000-5593f3c42000 rw-p 00000000 00:00 0                          [heap]"
        );
        assert_eq!(
            printed[2],
            "7f1c2a000000-7f1c2a021000 rw-p 00000000 00:00 0 "
        );
        assert_eq!(parse_maps(&printed.join("\n")).expect("reparses"), m);
    }

    #[test]
    fn a_bad_maps_line_is_an_error_naming_its_line() {
        let text = "1000-2000 rw-p 0 00:00 0\nzzzz-2000 rw-p 0 00:00 0\n";
        match parse_maps(text) {
            Err(MapsError::Malformed { line, .. }) => assert_eq!(line, 2),
            other => panic!("expected an error, got {other:?}"),
        }
        assert!(parse_maps("2000-1000 rw-p 0 00:00 0").is_err());
        assert!(parse_maps("1000-2000 rq-p 0 00:00 0").is_err());
        assert!(parse_maps("1000-2000 rw-p 0 00:00").is_err());
        assert!(parse_maps("1000-3000 rw-p 0 00:00 0\n2000-4000 rw-p 0 00:00 0").is_err());
    }

    #[test]
    fn comparing_ignores_devices_and_anonymous_names_but_not_ranges_or_permissions() {
        let linux = parse_maps(SNAPSHOT).expect("parses");
        let mut ours = linux.clone();
        ours[0].dev = "00:00".into();
        ours[1].path.clear();
        ours[2].path = "[anon:glibc]".into();
        assert_eq!(compare(&ours, &linux), Ok(()));
        ours[2].perms[1] = false;
        let m = compare(&ours, &linux).expect_err("permissions differ");
        assert_eq!(m.index, 2);
        ours.truncate(2);
        assert_eq!(compare(&ours, &linux).expect_err("shorter").index, 2);
        let mut renamed = linux.clone();
        renamed[0].path = "/usr/bin/false".into();
        assert_eq!(
            compare(&renamed, &linux).expect_err("file differs").index,
            0
        );
    }
}
