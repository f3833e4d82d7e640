//! What is compared after every call: its result, the region's maps lines, and which mapped pages
//! are resident (`mincore`). The native runner writes it in the text form [`Obs::parse`] reads,
//! without allocating.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// One maps line, clipped to the region and with the file named by the sequence's own name for
/// it: `file0`.., `shmem` for shared anonymous memory, empty for anonymous memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `rwxp` as Linux prints it.
    pub perms: [u8; 4],
    /// Offset in bytes into the file (0 for anonymous memory).
    pub offset: u64,
    /// The file's name as above.
    pub name: String,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = |b: u8| b as char;
        write!(
            f,
            "{:x}-{:x} {}{}{}{} {:08x} {}",
            self.start,
            self.end,
            p(self.perms[0]),
            p(self.perms[1]),
            p(self.perms[2]),
            p(self.perms[3]),
            self.offset,
            self.name
        )
    }
}

/// The state after one call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Obs {
    /// The call's result: its value, or `-errno`.
    pub ret: i64,
    /// The region's maps, in address order.
    pub maps: Vec<Line>,
    /// `mincore` of every line's pages, `0`/`1` per page, lines separated by `|`.
    pub resident: String,
    /// The first byte of every line's resident pages, two hex digits per page (`--` not
    /// resident, `??` not readable), lines separated by `|`.
    pub values: String,
}

impl Obs {
    /// Parses the runner's text: `= RET`, then `L start end perms offset [name]` lines, then
    /// `R residency` and `V values`.
    pub fn parse(text: &str) -> Option<Obs> {
        let mut obs = Obs::default();
        for line in text.lines() {
            let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
            match tag {
                "=" => obs.ret = rest.trim().parse().ok()?,
                "L" => {
                    let mut w = rest.splitn(5, ' ');
                    let num = |s: Option<&str>| u64::from_str_radix(s?, 16).ok();
                    let start = num(w.next())?;
                    let end = num(w.next())?;
                    let perms: [u8; 4] = w.next()?.as_bytes().try_into().ok()?;
                    let offset = num(w.next())?;
                    let name = w.next().unwrap_or("").into();
                    obs.maps.push(Line {
                        start,
                        end,
                        perms,
                        offset,
                        name,
                    });
                }
                "R" => obs.resident = rest.into(),
                "V" => obs.values = rest.into(),
                _ => return None,
            }
        }
        Some(obs)
    }

    /// How `self` (mm-core) differs from `linux`, in one line; `None` if it does not.
    pub fn differs(&self, linux: &Obs) -> Option<&'static str> {
        if self.ret != linux.ret {
            Some("result")
        } else if self.maps != linux.maps {
            Some("maps")
        } else if self.resident != linux.resident {
            Some("residency")
        } else if self.values != linux.values {
            Some("values")
        } else {
            None
        }
    }
}
