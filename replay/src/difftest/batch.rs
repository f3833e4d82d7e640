//! Sequences carried to the guest and states carried back (`vmm difftest --guest`): several seeds
//! run in one VM, so a boot is paid once per batch.
//!
//! Input: each sequence is its calls, one per line in [`Op::encode`]'s form, then an `end` line.
//! Output ([`write_outcome`], binary): for each sequence, the state after each call, then an
//! end mark; a sequence mm-core could not run has its error before the mark.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::{Obs, Op};

/// The line that ends a sequence, in both directions.
pub const END: &str = "end";

/// The guest's input for `seqs`.
pub fn encode_input(seqs: &[Vec<Op>]) -> String {
    let mut s = String::new();
    for seq in seqs {
        for op in seq {
            s.push_str(&op.encode());
            s.push('\n');
        }
        s.push_str(END);
        s.push('\n');
    }
    s
}

/// The sequences of an input; an error names the first line that is not a call.
pub fn decode_input(text: &str) -> Result<Vec<Vec<Op>>, String> {
    let mut seqs = Vec::new();
    let mut cur = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line == END {
            seqs.push(core::mem::take(&mut cur));
        } else {
            cur.push(Op::decode(line).ok_or_else(|| alloc::format!("line {}: {line:?}", i + 1))?);
        }
    }
    if !cur.is_empty() {
        return Err("the last sequence has no end line".to_string());
    }
    Ok(seqs)
}

/// Output tags: a state follows, an error follows, the sequence ended.
const STATE: u8 = 1;
const ERROR: u8 = 2;
const SEQ_END: u8 = 3;

/// Where [`write_outcome`] writes: a fixed buffer in the guest, a `Vec` in tests.
pub trait Sink {
    /// Appends `bytes`; `Err` if they do not fit (nothing is written then).
    fn put(&mut self, bytes: &[u8]) -> Result<(), Full>;
}

/// The output buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Full> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// Writes one sequence's outcome: its states, or the states until mm-core failed and the error.
/// Binary, little-endian, no formatting: in emulated ring 0 (PVM) formatting the states as text
/// took a third of a seed's time.
pub fn write_outcome(out: &mut impl Sink, states: &[Obs], error: Option<&str>) -> Result<(), Full> {
    for o in states {
        out.put(&[STATE])?;
        out.put(&o.ret.to_le_bytes())?;
        out.put(&(o.maps.len() as u32).to_le_bytes())?;
        for l in &o.maps {
            out.put(&l.start.to_le_bytes())?;
            out.put(&l.end.to_le_bytes())?;
            out.put(&l.perms)?;
            out.put(&l.offset.to_le_bytes())?;
            put_bytes(out, l.name.as_bytes())?;
        }
        put_bytes(out, o.resident.as_bytes())?;
        put_bytes(out, o.values.as_bytes())?;
    }
    if let Some(e) = error {
        out.put(&[ERROR])?;
        put_bytes(out, e.as_bytes())?;
    }
    out.put(&[SEQ_END])
}

fn put_bytes(out: &mut impl Sink, b: &[u8]) -> Result<(), Full> {
    out.put(&(b.len() as u32).to_le_bytes())?;
    out.put(b)
}

/// One sequence's outcome read back: its states, or the error (with how many calls ran first).
pub type Outcome = Result<Vec<Obs>, String>;

/// Reads [`write_outcome`]'s bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn text(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        Some(String::from(core::str::from_utf8(self.take(n)?).ok()?))
    }
    fn state(&mut self) -> Option<Obs> {
        let ret = self.u64()? as i64;
        let lines = self.u32()?;
        let mut maps = Vec::new();
        for _ in 0..lines {
            maps.push(super::Line {
                start: self.u64()?,
                end: self.u64()?,
                perms: self.take(4)?.try_into().ok()?,
                offset: self.u64()?,
                name: self.text()?,
            });
        }
        let resident = self.text()?;
        let values = self.text()?;
        Some(Obs {
            ret,
            maps,
            resident,
            values,
        })
    }
}

/// The outcomes of `sequences` sequences at the start of `bytes` (the rest is unused buffer);
/// `None` if they do not parse.
pub fn decode_output(bytes: &[u8], sequences: usize) -> Option<Vec<Outcome>> {
    let mut r = Reader(bytes);
    let mut outcomes = Vec::new();
    while outcomes.len() < sequences {
        let mut states = Vec::new();
        let mut error = None;
        loop {
            match r.u8()? {
                STATE => states.push(r.state()?),
                ERROR => error = Some(r.text()?),
                SEQ_END => break,
                _ => return None,
            }
        }
        outcomes.push(match error {
            None => Ok(states),
            Some(e) => Err(alloc::format!("after {} calls: {e}", states.len())),
        });
    }
    Some(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::difftest::gen::{Classes, Gen};
    use crate::difftest::model;

    #[test]
    fn sequences_and_states_survive_the_trip() {
        let seqs: Vec<Vec<Op>> = (0..3)
            .map(|seed| {
                let mut g = Gen::new(seed, Classes::default());
                let mut left = 30;
                model::run(|maps| {
                    (left > 0).then(|| {
                        left -= 1;
                        g.next(maps)
                    })
                })
                .expect("model")
                .into_iter()
                .map(|(op, _)| op)
                .collect()
            })
            .collect();
        assert_eq!(decode_input(&encode_input(&seqs)).expect("decodes"), seqs);
        let mut out = Vec::new();
        let mut want = Vec::new();
        for seq in &seqs {
            let mut it = seq.iter();
            let states: Vec<Obs> = model::run(|_| it.next().copied())
                .expect("model")
                .into_iter()
                .map(|(_, o)| o)
                .collect();
            assert!(states.iter().any(|o| !o.maps.is_empty()));
            write_outcome(&mut out, &states, None).expect("write");
            want.push(Ok(states));
        }
        write_outcome(&mut out, &[Obs::default()], Some("validate_mm failed")).expect("write");
        want.push(Err("after 1 calls: validate_mm failed".to_string()));
        let n = want.len();
        out.extend_from_slice(&[0; 64]);
        assert_eq!(decode_output(&out, n), Some(want));
        assert_eq!(
            decode_output(&out[..out.len() - 70], n),
            None,
            "a cut-off output"
        );
        assert!(decode_input("munmap 0x1000 0x1000\n").is_err());
    }
}
