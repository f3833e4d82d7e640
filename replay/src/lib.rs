//! mm-replay: replays a real program's memory system calls through mm-core and checks that the
//! address space ends exactly as Linux's did (issue 6). `no_std` + `alloc`: the host runs it on
//! simulated RAM (`vmm replay --host`), the guest kernel on real page tables (`vmm replay`).
//!
//! Modules:
//! - [`trace`]: parsing `strace -f -y -e trace=memory` output into calls and their results.
//! - [`maps`]: parsing, printing and comparing `/proc/PID/maps` snapshots.
//! - [`replay`]: seeding an mm-core `Mm` from a BEFORE snapshot and applying a trace to it.
//! - [`wire`]: the byte streams that carry a replay into the guest and its result back out.
//!
//! # Walkthrough
//!
//! ```
//! use mm_replay::{maps, replay, trace};
//!
//! let before = maps::parse_maps("7f0000000000-7f0000002000 rw-p 00000000 00:00 0\n").unwrap();
//! let calls = "7  mmap(0x7f0000002000, 4096, PROT_READ|PROT_WRITE, \
//!              MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS, -1, 0) = 0x7f0000002000\n";
//! let t = trace::parse_trace(calls).unwrap();
//! let out = replay::replay(&before, &t, &[]).unwrap();
//! // The new page merged with the mapping below it, as Linux merges them.
//! let after = maps::parse_maps("7f0000000000-7f0000003000 rw-p 00000000 00:00 0\n").unwrap();
//! assert_eq!(maps::compare(&out.maps, &after), Ok(()));
//! ```
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod difftest;
pub mod maps;
pub mod replay;
pub mod trace;
pub mod wire;
