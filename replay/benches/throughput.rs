//! Host replay throughput: system calls per second replaying the recorded fixtures through mm-core
//! (seeding included, parsing not). `cargo bench -p mm-replay`.

use std::time::{Duration, Instant};

use mm_replay::{maps, replay, trace};

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/replay");
    for name in ["ls", "python3", "threads", "shmem", "cc1"] {
        let read = |ext: &str| {
            std::fs::read_to_string(format!("{dir}/{name}.{ext}")).expect("fixture file")
        };
        let before = maps::parse_maps(&read("before.maps")).expect("BEFORE parses");
        let after = maps::parse_maps(&read("after.maps")).expect("AFTER parses");
        let t = trace::parse_trace(&read("trace")).expect("trace parses");
        let (mut runs, mut calls, start) = (0u64, 0u64, Instant::now());
        while start.elapsed() < Duration::from_millis(500) {
            let out = replay::replay(&before, &t, &after).expect("replays");
            calls += t.events.len() as u64;
            runs += 1;
            std::hint::black_box(out);
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{name:8} {:4} calls/run, {runs:5} runs: {:>10.0} calls/s, {:8.1} us/run",
            t.events.len(),
            calls as f64 / secs,
            secs * 1e6 / runs as f64
        );
    }
}
