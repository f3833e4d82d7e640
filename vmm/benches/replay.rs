//! `cargo bench -p vmm --bench replay`: replay throughput, in system calls per second, of every
//! shipped recording in both modes, measured in one run.
//!
//! - host: `vmm replay --host`'s work, `mm_replay::replay::replay` on simulated RAM, repeated for
//!   half a second (seeding included, parsing not);
//! - host+touch: the same with the pages the guest faults in (`Options::touch`), the guest's work
//!   without emulation, KVM or probes;
//! - guest: `vmm replay`'s work, `vmm::replay::replay_in_guest`, timed from the kernel being ready
//!   to the guest's outcome (decoding, seeding, replaying, faults, teardown under the probes,
//!   encoding the result), median of `REPLAY_BENCH_RUNS` runs (default 5).
//!
//! Every run's maps are checked against Linux's first: a benchmark of a wrong replay is worthless.

use std::time::{Duration, Instant};

use mm_core::mm::Mm;
use mm_core::paging::CountingTlb;
use mm_core::phys::SimRam;
use mm_core::Kernel;
use mm_replay::maps::{self, MapsLine};
use mm_replay::replay::{self, Options, Replayer};
use mm_replay::trace::{self, Trace};

const FIXTURES: [&str; 5] = ["ls", "python3", "threads", "shmem", "cc1"];

/// Host replays of `f` for half a second: seconds per replay.
fn per_run(mut f: impl FnMut()) -> f64 {
    let (mut runs, start) = (0u32, Instant::now());
    while start.elapsed() < Duration::from_millis(500) {
        f();
        runs += 1;
    }
    start.elapsed().as_secs_f64() / f64::from(runs)
}

/// One host replay with the guest's touches, on `ram` (which it leaves as it found it).
fn host_touching(ram: &SimRam, before: &[MapsLine], t: &Trace, after: &[MapsLine]) {
    let tlb = CountingTlb::default();
    let k = Kernel::new(ram, ram, ram.mem_map(), &tlb);
    let mm = Mm::new(&k, None).expect("an mm");
    let mut r = Replayer::new(&k, mm, after, Options { touch: true });
    let out = r.run(before, t);
    r.finish();
    maps::compare(&out.expect("replays").maps, after).expect("Linux's maps");
}

/// Median seconds of `runs` guest replays, each checked against Linux's maps and the probes.
fn guest_median(
    runs: usize,
    name: &str,
    before: &[MapsLine],
    t: &Trace,
    after: &[MapsLine],
) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let g = vmm::replay::replay_in_guest(before, t, after, Default::default())
                .unwrap_or_else(|e| panic!("{name} in the guest: {e}"));
            let out = g
                .result
                .unwrap_or_else(|e| panic!("{name} in the guest: {e}"));
            maps::compare(&out.maps, after).expect("Linux's maps");
            assert!(g.probes.violations.is_empty() && g.probes.errors.is_empty());
            g.replay_time.as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("REPLAY_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(5);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../replay/tests/replay");
    let empty = guest_median(runs, "empty", &[], &Trace::default(), &[]);
    println!("replay throughput, system calls per second (guest: median of {runs} runs)");
    println!("guest fixed cost (an empty replay): {:.1} ms", empty * 1e3);
    println!("| trace   | calls | host      | host+touch | guest  | host / guest | host+touch / guest | guest ms |");
    println!("|---------|-------|-----------|------------|--------|--------------|--------------------|----------|");
    for name in FIXTURES {
        let read = |ext: &str| {
            std::fs::read_to_string(format!("{dir}/{name}.{ext}")).expect("fixture file")
        };
        let before = maps::parse_maps(&read("before.maps")).expect("BEFORE parses");
        let after = maps::parse_maps(&read("after.maps")).expect("AFTER parses");
        let t = trace::parse_trace(&read("trace")).expect("trace parses");
        let calls = t.events.len() as f64;

        let host = per_run(|| {
            let out = replay::replay(&before, &t, &after).expect("replays");
            std::hint::black_box(out);
        });
        maps::compare(
            &replay::replay(&before, &t, &after).expect("replays").maps,
            &after,
        )
        .expect("Linux's maps");
        // Made once: creating simulated RAM would cost more than the replay. Each line or call
        // may fault two pages in, each with up to three new tables.
        let ram = SimRam::new(64 + 16 * (before.len() + t.events.len()));
        let touch = per_run(|| host_touching(&ram, &before, &t, &after));
        assert_eq!(ram.frames_in_use(), 0, "{name}: frames leaked");

        let mut guest: Vec<f64> = (0..runs)
            .map(|_| {
                let g = vmm::replay::replay_in_guest(&before, &t, &after, Default::default())
                    .unwrap_or_else(|e| panic!("{name} in the guest: {e}"));
                let out = g
                    .result
                    .unwrap_or_else(|e| panic!("{name} in the guest: {e}"));
                maps::compare(&out.maps, &after).expect("Linux's maps");
                assert!(g.probes.violations.is_empty() && g.probes.errors.is_empty());
                g.replay_time.as_secs_f64()
            })
            .collect();
        guest.sort_by(f64::total_cmp);
        let guest = guest[guest.len() / 2];
        println!(
            "| {name:7} | {:5} | {:9.0} | {:10.0} | {:6.1} | {:11.0}x | {:17.0}x | {:8.1} |",
            t.events.len(),
            calls / host,
            calls / touch,
            calls / guest,
            guest / host,
            guest / touch,
            guest * 1e3
        );
    }
}
