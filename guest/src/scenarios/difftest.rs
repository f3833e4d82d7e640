//! `difftest`: `vmm difftest --guest`'s call sequences on real page tables.
//!
//! The boot info's input buffer holds sequences in `mm_replay::difftest::batch`'s form. Each runs
//! through the same `mm_replay::difftest::model::Model` the host build runs, on a fresh address
//! space of the guest's own kernel with its root loaded, so every table mm-core frees is checked
//! by the host probes; `validate_mm` runs after the last call and the address space is torn down
//! (`exit_mmap`, more checked frees) before the next sequence. The state after every call goes to
//! the output buffer, where the VMM compares it with Linux's. Without an input (`vmm run
//! --scenario difftest`) it runs a few generated seeds and checks only that mm-core stays valid.

use super::replay::{input, output};
use super::PASS;
use crate::kernel::frame;
use crate::kernel::mm::{kernel, kernel_pgd, kernel_template, write_cr3};
use alloc::string::String;
use alloc::vec::Vec;
use mm_core::abi::BootInfo;
use mm_core::mm::Mm;
use mm_replay::difftest::batch;
use mm_replay::difftest::gen::{Classes, Gen};
use mm_replay::difftest::model::Model;
use mm_replay::difftest::{Obs, Op};

/// Seeds and calls of the run without an input.
const SAMPLE_SEEDS: u64 = 2;
const SAMPLE_CALLS: usize = 40;

/// Runs the sequences the boot info carries, or a built-in sample.
pub fn difftest(info: &BootInfo) -> u64 {
    let Some(input) = input(info) else {
        return sample();
    };
    let text = core::str::from_utf8(input)
        .unwrap_or_else(|_| panic!("difftest: the VMM's input is not text"));
    let seqs = batch::decode_input(text)
        .unwrap_or_else(|e| panic!("difftest: the VMM's input does not decode: {e}"));
    let Some(out) = output(info) else {
        panic!("difftest: no output buffer");
    };
    let mut out = SliceWriter { buf: out, len: 0 };
    let mut calls = 0;
    for seq in &seqs {
        let mut it = seq.iter();
        let (states, error) = run(|_| it.next().copied());
        calls += states.len();
        let states: Vec<Obs> = states.into_iter().map(|(_, o)| o).collect();
        if batch::write_outcome(&mut out, &states, error.as_deref()).is_err() {
            panic!(
                "difftest: the output buffer ({} bytes) is full",
                out.buf.len()
            );
        }
    }
    log::info!(
        "difftest: {} sequences, {calls} calls on real page tables",
        seqs.len()
    );
    PASS
}

/// Runs the calls `next` gives on a fresh address space with its root loaded, then validates and
/// tears it down; returns each call with its state, and the error that ended the sequence early,
/// if any. Panics if a frame leaked or lockdep saw an inversion (mm-core bugs, not outcomes).
fn run(
    mut next: impl FnMut(&[mm_replay::difftest::Line]) -> Option<Op>,
) -> (Vec<(Op, Obs)>, Option<String>) {
    let k = kernel();
    let frames = frame::allocated();
    let mm =
        Mm::new(k, Some(kernel_template())).unwrap_or_else(|e| panic!("difftest: no mm: {e:?}"));
    // A fork or an exit moves the CPU to the address space the calls run in next.
    let load = |pgd: mm_core::addr::PhysAddr| write_cr3(pgd.0);
    let mut m = match Model::new(k, mm, Some(kernel_template()), load) {
        Ok(m) => m,
        Err(e) => return (Vec::new(), Some(e)),
    };
    // Every mm shares the kernel half, so the kernel runs on; flushes now hit these tables.
    write_cr3(m.mm().raw().pgd().0);
    let mut out: Vec<(Op, Obs)> = Vec::new();
    while let Some(op) = next(out.last().map_or(&[][..], |(_, o)| &o.maps[..])) {
        let obs = m.step(&op);
        out.push((op, obs));
    }
    let error = match out.last() {
        Some((op, _)) => m.validate(out.len() - 1, op).err(),
        None => None,
    };
    write_cr3(kernel_pgd().0);
    m.finish();
    super::mm::assert_clean("difftest", frames);
    (out, error)
}

/// A few generated seeds, forks included, mm-core checked by `validate_mm` and the probes alone.
fn sample() -> u64 {
    for seed in 0..SAMPLE_SEEDS {
        let classes = Classes {
            fork: true,
            ..Classes::default()
        };
        let mut gen = Gen::new(seed, classes);
        let mut left = SAMPLE_CALLS;
        let (states, error) = run(|maps| {
            (left > 0).then(|| {
                left -= 1;
                gen.next(maps)
            })
        });
        if let Some(e) = error {
            panic!("difftest: seed {seed}: {e}");
        }
        assert_eq!(states.len(), SAMPLE_CALLS);
    }
    log::info!("difftest: {SAMPLE_SEEDS} seeds of {SAMPLE_CALLS} calls ran on real page tables, mm-core valid");
    PASS
}

/// The output buffer, filled from the start; refuses, without writing, what does not fit.
struct SliceWriter {
    buf: &'static mut [u8],
    len: usize,
}

impl batch::Sink for SliceWriter {
    fn put(&mut self, bytes: &[u8]) -> Result<(), batch::Full> {
        let end = self.len + bytes.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(batch::Full)?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}
