//! The replay streams of `mm_core::abi::replay`: a parsed replay's inputs as the bytes the VMM puts
//! in guest RAM, and the guest's result as the bytes the VMM reads back. Both sides decode with
//! bounds checks: a stream is data, and a bad one is an error, never a panic.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use mm_core::abi::replay::{
    call, status, EventRecord, MapRecord, NoteRecord, ReplayHeader, ResultHeader, StrRef,
    REPLAY_MAGIC, REPLAY_VERSION, RESULT_MAGIC,
};

use crate::maps::MapsLine;
use crate::replay::{ReplayError, Replayed};
use crate::trace::{Call, Event, Fd, Outcome, Trace};

/// Why a stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The magic or the version is not this build's.
    #[error(
        "not a replay stream of version {REPLAY_VERSION} (magic {magic:#x}, version {version})"
    )]
    Header {
        /// The magic found.
        magic: u64,
        /// The version found.
        version: u64,
    },
    /// A count, length or string reference points outside the stream.
    #[error("the replay stream is cut short or its {0} points outside it")]
    Truncated(&'static str),
    /// A record holds a value no encoder writes.
    #[error("the replay stream has a bad {0}")]
    Bad(&'static str),
}

/// What the guest replays: the BEFORE snapshot, the trace, and the hints snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The address space before the first call.
    pub before: Vec<MapsLine>,
    /// The calls (`skipped` is not carried).
    pub trace: Trace,
    /// Inodes and devices of files the trace maps (usually the AFTER snapshot).
    pub hints: Vec<MapsLine>,
}

/// Words and string bytes being written.
#[derive(Default)]
struct Writer {
    words: Vec<u64>,
    strings: Vec<u8>,
}

impl Writer {
    fn str(&mut self, s: &str) -> u64 {
        // Streams are far below 4 GiB; a longer string would not fit the guest anyway.
        let r = StrRef::new(self.strings.len() as u32, s.len() as u32);
        self.strings.extend_from_slice(s.as_bytes());
        r.0
    }

    fn opt_str(&mut self, s: Option<&str>) -> u64 {
        s.map_or(StrRef::NONE.0, |s| self.str(s))
    }

    fn line(&mut self, l: &MapsLine) {
        let perms = l
            .perms
            .iter()
            .enumerate()
            .fold(0, |acc, (i, &on)| acc | (u64::from(on) << i));
        let r = MapRecord {
            start: l.start,
            end: l.end,
            perms,
            offset: l.offset,
            inode: l.inode,
            dev: self.str(&l.dev),
            path: self.str(&l.path),
        };
        self.words.extend_from_slice(&r.to_words());
    }

    /// The header's words, then the records', then the strings, as bytes.
    fn finish(self, header: &[u64]) -> Vec<u8> {
        let mut out =
            Vec::with_capacity((header.len() + self.words.len()) * 8 + self.strings.len());
        for w in header.iter().chain(&self.words) {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.strings);
        out
    }
}

/// No string.
const NONE: u64 = StrRef::NONE.0;

/// The bytes of `before`, `trace` and `hints` for the guest.
pub fn encode_input(before: &[MapsLine], trace: &Trace, hints: &[MapsLine]) -> Vec<u8> {
    let mut w = Writer::default();
    before.iter().chain(hints).for_each(|l| w.line(l));
    for ev in &trace.events {
        let (ok, result) = match &ev.outcome {
            Outcome::Ok(v) => (1, *v),
            Outcome::Err(e) => (0, w.str(e)),
        };
        let (kind, a, text) = match &ev.call {
            Call::Mmap {
                addr,
                len,
                prot,
                flags,
                fd,
                offset,
            } => {
                let path = w.opt_str(fd.path.as_deref());
                let args = [*addr, *len, *prot, *flags, fd.fd as u64, *offset];
                (call::MMAP, args, path)
            }
            Call::Munmap { addr, len } => (call::MUNMAP, [*addr, *len, 0, 0, 0, 0], StrRef::NONE.0),
            Call::Mprotect { addr, len, prot } => (
                call::MPROTECT,
                [*addr, *len, *prot, 0, 0, 0],
                StrRef::NONE.0,
            ),
            Call::Brk { addr } => (call::BRK, [*addr, 0, 0, 0, 0, 0], StrRef::NONE.0),
            Call::Mremap {
                old_addr,
                old_len,
                new_len,
                flags,
                new_addr,
            } => {
                let args = [
                    *old_addr,
                    *old_len,
                    *new_len,
                    *flags,
                    new_addr.unwrap_or(0),
                    u64::from(new_addr.is_some()),
                ];
                (call::MREMAP, args, StrRef::NONE.0)
            }
            Call::Madvise { addr, len, advice } => {
                let text = w.str(advice);
                (call::MADVISE, [*addr, *len, 0, 0, 0, 0], text)
            }
            Call::Mlock { addr, len, flags } => (call::MLOCK, [*addr, *len, *flags, 0, 0, 0], NONE),
            Call::Munlock { addr, len } => (call::MUNLOCK, [*addr, *len, 0, 0, 0, 0], NONE),
            Call::Mlockall { flags } => (call::MLOCKALL, [*flags, 0, 0, 0, 0, 0], NONE),
            Call::Munlockall => (call::MUNLOCKALL, [0; 6], NONE),
            Call::PkeyMprotect {
                addr,
                len,
                prot,
                pkey,
            } => (
                call::PKEY_MPROTECT,
                [*addr, *len, *prot, *pkey as u64, 0, 0],
                NONE,
            ),
            Call::Msync { addr, len, flags } => (call::MSYNC, [*addr, *len, *flags, 0, 0, 0], NONE),
        };
        let r = EventRecord {
            line: ev.line as u64,
            start: ev.start as u64,
            pid: ev.pid.map_or(u64::MAX, u64::from),
            call: kind,
            a0: a[0],
            a1: a[1],
            a2: a[2],
            a3: a[3],
            a4: a[4],
            a5: a[5],
            ok,
            result,
            text,
        };
        w.words.extend_from_slice(&r.to_words());
    }
    let mut h = ReplayHeader {
        magic: REPLAY_MAGIC,
        version: REPLAY_VERSION,
        total_len: 0,
        before: before.len() as u64,
        hints: hints.len() as u64,
        events: trace.events.len() as u64,
        strings: w.strings.len() as u64,
    };
    h.total_len = ((ReplayHeader::WORDS + w.words.len()) * 8 + w.strings.len()) as u64;
    w.finish(&h.to_words())
}

/// Reads records and strings from a stream, every access checked.
struct Reader<'b> {
    bytes: &'b [u8],
    /// Next word to read.
    at: usize,
    /// Where the string bytes start, once the header says.
    strings: &'b [u8],
}

impl<'b> Reader<'b> {
    fn new(bytes: &'b [u8]) -> Self {
        Reader {
            bytes,
            at: 0,
            strings: &[],
        }
    }

    fn words<const N: usize>(&mut self, what: &'static str) -> Result<[u64; N], WireError> {
        let mut out = [0u64; N];
        for w in &mut out {
            let b = self
                .bytes
                .get(self.at * 8..self.at * 8 + 8)
                .ok_or(WireError::Truncated(what))?;
            let mut le = [0u8; 8];
            le.copy_from_slice(b);
            *w = u64::from_le_bytes(le);
            self.at += 1;
        }
        Ok(out)
    }

    /// Checks `total_len` and that `records` words of records and `strings` bytes follow the
    /// header, and finds the strings.
    fn frame(&mut self, total_len: u64, records: u64, strings: u64) -> Result<(), WireError> {
        let total = usize::try_from(total_len).map_err(|_| WireError::Truncated("length"))?;
        if total > self.bytes.len() {
            return Err(WireError::Truncated("length"));
        }
        self.bytes = &self.bytes[..total];
        let start = records
            .checked_add(self.at as u64)
            .and_then(|w| w.checked_mul(8))
            .and_then(|s| usize::try_from(s).ok())
            .ok_or(WireError::Truncated("record count"))?;
        let end = usize::try_from(strings)
            .ok()
            .and_then(|n| start.checked_add(n))
            .filter(|&e| e == total)
            .ok_or(WireError::Truncated("record count"))?;
        self.strings = &self.bytes[start..end];
        Ok(())
    }

    fn str(&self, r: u64) -> Result<Option<String>, WireError> {
        let Some((off, len)) = StrRef(r).get() else {
            return Ok(None);
        };
        let b = off
            .checked_add(len)
            .and_then(|end| self.strings.get(off..end))
            .ok_or(WireError::Truncated("string reference"))?;
        let s = core::str::from_utf8(b).map_err(|_| WireError::Bad("string"))?;
        Ok(Some(s.to_string()))
    }

    fn string(&self, r: u64) -> Result<String, WireError> {
        self.str(r)?.ok_or(WireError::Bad("missing string"))
    }

    fn line(&mut self) -> Result<MapsLine, WireError> {
        let r = MapRecord::from_words(&self.words("map record")?);
        let bit = |i: u32| r.perms & (1 << i) != 0;
        Ok(MapsLine {
            start: r.start,
            end: r.end,
            perms: [bit(0), bit(1), bit(2), bit(3)],
            offset: r.offset,
            dev: self.string(r.dev)?,
            inode: r.inode,
            path: self.string(r.path)?,
        })
    }

    fn lines(&mut self, n: u64) -> Result<Vec<MapsLine>, WireError> {
        (0..n).map(|_| self.line()).collect()
    }

    fn event(&mut self) -> Result<Event, WireError> {
        let r = EventRecord::from_words(&self.words("event record")?);
        let outcome = match r.ok {
            1 => Outcome::Ok(r.result),
            0 => Outcome::Err(self.string(r.result)?),
            _ => return Err(WireError::Bad("outcome")),
        };
        let c = match r.call {
            call::MMAP => Call::Mmap {
                addr: r.a0,
                len: r.a1,
                prot: r.a2,
                flags: r.a3,
                fd: Fd {
                    fd: r.a4 as i64,
                    path: self.str(r.text)?,
                },
                offset: r.a5,
            },
            call::MUNMAP => Call::Munmap {
                addr: r.a0,
                len: r.a1,
            },
            call::MPROTECT => Call::Mprotect {
                addr: r.a0,
                len: r.a1,
                prot: r.a2,
            },
            call::BRK => Call::Brk { addr: r.a0 },
            call::MREMAP => Call::Mremap {
                old_addr: r.a0,
                old_len: r.a1,
                new_len: r.a2,
                flags: r.a3,
                new_addr: (r.a5 != 0).then_some(r.a4),
            },
            call::MADVISE => Call::Madvise {
                addr: r.a0,
                len: r.a1,
                advice: self.string(r.text)?,
            },
            call::MLOCK => Call::Mlock {
                addr: r.a0,
                len: r.a1,
                flags: r.a2,
            },
            call::MUNLOCK => Call::Munlock {
                addr: r.a0,
                len: r.a1,
            },
            call::MLOCKALL => Call::Mlockall { flags: r.a0 },
            call::MUNLOCKALL => Call::Munlockall,
            call::PKEY_MPROTECT => Call::PkeyMprotect {
                addr: r.a0,
                len: r.a1,
                prot: r.a2,
                pkey: r.a3 as i64,
            },
            call::MSYNC => Call::Msync {
                addr: r.a0,
                len: r.a1,
                flags: r.a2,
            },
            _ => return Err(WireError::Bad("call")),
        };
        Ok(Event {
            line: usize::try_from(r.line).map_err(|_| WireError::Bad("line"))?,
            start: usize::try_from(r.start).map_err(|_| WireError::Bad("start line"))?,
            pid: u32::try_from(r.pid).ok(),
            call: c,
            outcome,
        })
    }
}

/// Decodes what [`encode_input`] wrote.
pub fn decode_input(bytes: &[u8]) -> Result<Input, WireError> {
    let mut r = Reader::new(bytes);
    let h = ReplayHeader::from_words(&r.words("header")?);
    if h.magic != REPLAY_MAGIC || h.version != REPLAY_VERSION {
        return Err(WireError::Header {
            magic: h.magic,
            version: h.version,
        });
    }
    let records = h
        .before
        .checked_add(h.hints)
        .and_then(|n| n.checked_mul(MapRecord::WORDS as u64))
        .zip(h.events.checked_mul(EventRecord::WORDS as u64))
        .and_then(|(a, b)| a.checked_add(b))
        .ok_or(WireError::Truncated("record count"))?;
    r.frame(h.total_len, records, h.strings)?;
    let before = r.lines(h.before)?;
    let hints = r.lines(h.hints)?;
    let events = (0..h.events).map(|_| r.event()).collect::<Result<_, _>>()?;
    Ok(Input {
        before,
        trace: Trace {
            events,
            skipped: BTreeMap::new(),
        },
        hints,
    })
}

/// The bytes of a replay's outcome, for the host.
pub fn encode_result(result: &Result<Replayed, ReplayError>) -> Vec<u8> {
    let mut w = Writer::default();
    let mut h = ResultHeader {
        magic: RESULT_MAGIC,
        version: REPLAY_VERSION,
        reason: StrRef::NONE.0,
        ..ResultHeader::default()
    };
    match result {
        Ok(out) => {
            out.maps.iter().for_each(|l| w.line(l));
            for (reason, &count) in &out.notes {
                let n = NoteRecord {
                    reason: w.str(reason),
                    count: count as u64,
                };
                w.words.extend_from_slice(&n.to_words());
            }
            h.applied = out.applied as u64;
            h.touched = out.touched as u64;
            h.offset = out.offset;
            h.lines = out.maps.len() as u64;
            h.notes = out.notes.len() as u64;
        }
        Err(e) => {
            let (st, a, b, reason) = match e {
                ReplayError::DoesNotFit { start, end } => (status::DOES_NOT_FIT, *start, *end, ""),
                ReplayError::Seed { line, reason } => (status::SEED, *line as u64, 0, &reason[..]),
                ReplayError::Diverged { line, reason } => {
                    (status::DIVERGED, *line as u64, 0, &reason[..])
                }
                ReplayError::Invalid(reason) => (status::INVALID, 0, 0, &reason[..]),
            };
            (h.status, h.a, h.b, h.reason) = (st, a, b, w.str(reason));
        }
    }
    h.strings = w.strings.len() as u64;
    h.total_len = ((ResultHeader::WORDS + w.words.len()) * 8 + w.strings.len()) as u64;
    w.finish(&h.to_words())
}

/// Decodes what [`encode_result`] wrote: the guest's replay outcome.
pub fn decode_result(bytes: &[u8]) -> Result<Result<Replayed, ReplayError>, WireError> {
    let mut r = Reader::new(bytes);
    let h = ResultHeader::from_words(&r.words("header")?);
    if h.magic != RESULT_MAGIC || h.version != REPLAY_VERSION {
        return Err(WireError::Header {
            magic: h.magic,
            version: h.version,
        });
    }
    let records = h
        .lines
        .checked_mul(MapRecord::WORDS as u64)
        .zip(h.notes.checked_mul(NoteRecord::WORDS as u64))
        .and_then(|(a, b)| a.checked_add(b))
        .ok_or(WireError::Truncated("record count"))?;
    r.frame(h.total_len, records, h.strings)?;
    let usize_of = |v: u64| usize::try_from(v).map_err(|_| WireError::Bad("count"));
    let reason = || -> Result<String, WireError> { Ok(r.str(h.reason)?.unwrap_or_default()) };
    let err = match h.status {
        status::OK => None,
        status::DOES_NOT_FIT => Some(ReplayError::DoesNotFit {
            start: h.a,
            end: h.b,
        }),
        status::SEED => Some(ReplayError::Seed {
            line: usize_of(h.a)?,
            reason: reason()?,
        }),
        status::DIVERGED => Some(ReplayError::Diverged {
            line: usize_of(h.a)?,
            reason: reason()?,
        }),
        status::INVALID => Some(ReplayError::Invalid(reason()?)),
        _ => return Err(WireError::Bad("status")),
    };
    if let Some(e) = err {
        return Ok(Err(e));
    }
    let maps = r.lines(h.lines)?;
    let mut notes = BTreeMap::new();
    for _ in 0..h.notes {
        let n = NoteRecord::from_words(&r.words("note record")?);
        notes.insert(r.string(n.reason)?, usize_of(n.count)?);
    }
    Ok(Ok(Replayed {
        maps,
        applied: usize_of(h.applied)?,
        notes,
        touched: usize_of(h.touched)?,
        offset: h.offset,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{maps, trace};

    const BEFORE: &str = "\
5593f3a00000-5593f3a02000 r--p 00000000 08:01 1311                       /usr/bin/true
7f1c2a000000-7f1c2a021000 rw-p 00000000 00:00 0 
";
    const TRACE: &str = "\
7 mmap(NULL, 8192, PROT_READ, MAP_PRIVATE, 3</usr/lib/libc.so.6>, 0) = 0x7f1c2b000000
7 munmap(0x7f1c2b000000, 4096) = 0
8 mprotect(0x7f1c2a000000, 4096, PROT_NONE) = -1 ENOMEM (Cannot allocate memory)
7 brk(NULL) = 0x5593f3c21000
7 mremap(0x7f1c2a000000, 4096, 8192, MREMAP_MAYMOVE|MREMAP_FIXED, 0x7f1c2c000000) = 0x7f1c2c000000
7 madvise(0x7f1c2a000000, 4096, MADV_DONTNEED) = 0
";

    #[test]
    fn an_input_stream_decodes_to_what_was_encoded() {
        let before = maps::parse_maps(BEFORE).unwrap();
        let mut t = trace::parse_trace(TRACE).unwrap();
        assert_eq!(t.events.len(), 6);
        let bytes = encode_input(&before, &t, &before[..1]);
        let input = decode_input(&bytes).unwrap();
        t.skipped.clear();
        assert_eq!(input.before, before);
        assert_eq!(input.hints, before[..1]);
        assert_eq!(input.trace, t);
    }

    #[test]
    fn a_result_stream_decodes_to_what_was_encoded_success_or_failure() {
        let before = maps::parse_maps(BEFORE).unwrap();
        let mut notes = BTreeMap::new();
        notes.insert("mremap emulated".to_string(), 2);
        let ok = Ok(Replayed {
            maps: before,
            applied: 5,
            notes,
            offset: 0x1000,
            touched: 4,
        });
        assert_eq!(decode_result(&encode_result(&ok)).unwrap(), ok);
        let err = Err(ReplayError::Diverged {
            line: 3,
            reason: "munmap failed".into(),
        });
        assert_eq!(decode_result(&encode_result(&err)).unwrap(), err);
        let misfit = Err(ReplayError::DoesNotFit { start: 1, end: 2 });
        assert_eq!(decode_result(&encode_result(&misfit)).unwrap(), misfit);
    }

    #[test]
    fn a_cut_or_corrupt_stream_is_an_error_not_a_panic() {
        let before = maps::parse_maps(BEFORE).unwrap();
        let t = trace::parse_trace(TRACE).unwrap();
        let bytes = encode_input(&before, &t, &[]);
        for cut in 0..bytes.len() {
            assert!(decode_input(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert!(matches!(decode_input(&bad), Err(WireError::Header { .. })));
        // Every single-byte corruption decodes or fails; none panics.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] = b[i].wrapping_add(0x80);
            let _ = decode_input(&b);
            let _ = decode_result(&b);
        }
    }
}
