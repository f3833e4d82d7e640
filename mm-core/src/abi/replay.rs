//! The replay streams: how `vmm replay` hands a parsed trace to the guest's `replay` scenario, and
//! how the guest hands the final address space back.
//!
//! Both are byte buffers in guest RAM that the boot info names (`BootInfo::input_gpa`/`input_len`,
//! `output_gpa`/`output_len`), made of little-endian `u64` words: a header, fixed-size records,
//! then the string bytes the records point into with a [`StrRef`]. Records are `#[repr(C)]`
//! structures of `u64`s, so their layout is the same on both sides; `to_words`/`from_words` are the
//! only way either side reads or writes them. The encoder and decoder are `mm_replay::wire`.
//!
//! ```text
//! input:  ReplayHeader | MapRecord x before | MapRecord x hints | EventRecord x events | strings
//! output: ResultHeader | MapRecord x lines  | NoteRecord x notes                       | strings
//! ```

/// "MMREPLAY": marks an input stream.
pub const REPLAY_MAGIC: u64 = u64::from_le_bytes(*b"MMREPLAY");
/// "MMREPOUT": marks an output stream.
pub const RESULT_MAGIC: u64 = u64::from_le_bytes(*b"MMREPOUT");
/// Layout version of both streams; bumped whenever a record changes.
pub const REPLAY_VERSION: u64 = 2;

/// A string in the stream's string bytes: offset in the high 32 bits, length in the low 32;
/// [`StrRef::NONE`] for no string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StrRef(pub u64);

impl StrRef {
    /// No string (distinct from the empty string).
    pub const NONE: StrRef = StrRef(u64::MAX);

    /// The string of `len` bytes at `offset`.
    pub fn new(offset: u32, len: u32) -> Self {
        StrRef((u64::from(offset) << 32) | u64::from(len))
    }

    /// `(offset, len)`, or `None` for [`StrRef::NONE`].
    pub fn get(self) -> Option<(usize, usize)> {
        (self != Self::NONE).then_some(((self.0 >> 32) as usize, (self.0 & 0xffff_ffff) as usize))
    }
}

/// Defines a record of `u64` fields with its word count and word conversions.
macro_rules! words_record {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name { $($(#[$fm])* pub $field: u64,)* }

        impl $name {
            /// Size in words.
            pub const WORDS: usize = [$(stringify!($field)),*].len();

            /// The fields in declaration order.
            pub fn to_words(&self) -> [u64; Self::WORDS] {
                [$(self.$field),*]
            }

            /// The record whose fields are `w`, in declaration order.
            pub fn from_words(w: &[u64; Self::WORDS]) -> Self {
                let mut it = w.iter().copied();
                $name { $($field: it.next().unwrap_or(0),)* }
            }
        }

        const _: () = assert!(core::mem::size_of::<$name>() == $name::WORDS * 8);
    };
}

words_record! {
    /// The input stream's header.
    ReplayHeader {
        /// [`REPLAY_MAGIC`].
        magic,
        /// [`REPLAY_VERSION`].
        version,
        /// Bytes in the whole stream, header included.
        total_len,
        /// `MapRecord`s of the BEFORE snapshot.
        before,
        /// `MapRecord`s of the hints snapshot (usually AFTER): inodes of files the trace maps.
        hints,
        /// `EventRecord`s, in the order the calls returned.
        events,
        /// Bytes of strings after the records.
        strings,
    }
}

words_record! {
    /// One `/proc/PID/maps` line.
    MapRecord {
        /// First address.
        start,
        /// One past the last address.
        end,
        /// Bit 0 read, 1 write, 2 exec, 3 shared.
        perms,
        /// Offset in the file, in bytes.
        offset,
        /// Inode.
        inode,
        /// `major:minor` ([`StrRef`]).
        dev,
        /// Path or bracketed name ([`StrRef`]).
        path,
    }
}

/// `EventRecord::call` values.
pub mod call {
    /// `mmap(addr, len, prot, flags, fd, offset)`; `text` is the file's path.
    pub const MMAP: u64 = 1;
    /// `munmap(addr, len)`.
    pub const MUNMAP: u64 = 2;
    /// `mprotect(addr, len, prot)`.
    pub const MPROTECT: u64 = 3;
    /// `brk(addr)`.
    pub const BRK: u64 = 4;
    /// `mremap(old_addr, old_len, new_len, flags, new_addr, has_new_addr)`.
    pub const MREMAP: u64 = 5;
    /// `madvise(addr, len)`; `text` is the advice's name.
    pub const MADVISE: u64 = 6;
    /// `mlock2(addr, len, flags)` (`mlock` has flags 0).
    pub const MLOCK: u64 = 7;
    /// `munlock(addr, len)`.
    pub const MUNLOCK: u64 = 8;
    /// `mlockall(flags)`.
    pub const MLOCKALL: u64 = 9;
    /// `munlockall()`.
    pub const MUNLOCKALL: u64 = 10;
    /// `pkey_mprotect(addr, len, prot, pkey)`.
    pub const PKEY_MPROTECT: u64 = 11;
    /// `msync(addr, len, flags)`.
    pub const MSYNC: u64 = 12;
}

words_record! {
    /// One traced call and its result.
    EventRecord {
        /// Trace line of the call (where it ended).
        line,
        /// Trace line where it began (`line` unless another thread interrupted it).
        start,
        /// Thread id, `u64::MAX` when the trace has none.
        pid,
        /// One of [`call`].
        call,
        /// First argument.
        a0,
        /// Second argument.
        a1,
        /// Third argument.
        a2,
        /// Fourth argument.
        a3,
        /// Fifth argument.
        a4,
        /// Sixth argument.
        a5,
        /// 1 when the call succeeded (`result` is its value), 0 when it failed (`result` is the
        /// errno's name, a [`StrRef`]).
        ok,
        /// See `ok`.
        result,
        /// The call's string argument ([`StrRef`]; see [`call`]).
        text,
    }
}

/// `ResultHeader::status` values.
pub mod status {
    /// The replay ran to the end.
    pub const OK: u64 = 0;
    /// The snapshot does not fit the user range (`a`, `b`: lowest and highest address).
    pub const DOES_NOT_FIT: u64 = 1;
    /// A snapshot line could not be installed (`a`: its line).
    pub const SEED: u64 = 2;
    /// mm-core's result differed from Linux's (`a`: the trace line).
    pub const DIVERGED: u64 = 3;
    /// mm-core's own checks failed after the replay.
    pub const INVALID: u64 = 4;
}

words_record! {
    /// The output stream's header.
    ResultHeader {
        /// [`RESULT_MAGIC`].
        magic,
        /// [`REPLAY_VERSION`].
        version,
        /// Bytes in the whole stream, header included.
        total_len,
        /// One of [`status`].
        status,
        /// First detail of a failure (see [`status`]).
        a,
        /// Second detail of a failure.
        b,
        /// What went wrong ([`StrRef`]).
        reason,
        /// Calls applied.
        applied,
        /// Pages the replay faulted in.
        touched,
        /// What was added to each address to reach mm-core's range.
        offset,
        /// `MapRecord`s of the final address space (only with [`status::OK`]).
        lines,
        /// `NoteRecord`s.
        notes,
        /// Bytes of strings after the records.
        strings,
    }
}

words_record! {
    /// Calls not applied, or applied in part, for one reason.
    NoteRecord {
        /// The reason ([`StrRef`]).
        reason,
        /// How many.
        count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_their_words() {
        let r = EventRecord {
            line: 7,
            call: call::MMAP,
            a5: 0x1000,
            text: StrRef::new(3, 9).0,
            ..EventRecord::default()
        };
        assert_eq!(EventRecord::from_words(&r.to_words()), r);
        assert_eq!(EventRecord::WORDS, 13);
        assert_eq!(StrRef(r.text).get(), Some((3, 9)));
        assert_eq!(StrRef::NONE.get(), None);
    }
}
