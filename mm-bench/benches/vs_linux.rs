//! `cargo bench -p mm-bench`: mm-core (host build) against Linux's system calls, the two tables
//! `vmm bench` also prints (see `mm_bench`). `-- --quick` runs the small sizes once, as does
//! `cargo test --all-targets`. Verdicts are printed, not enforced: the exit status is non-zero only
//! when a measurement could not be made or mm-core leaked frames.

fn main() {
    // `cargo bench` passes `--bench`; without it the binary runs as a test (`cargo test
    // --all-targets`), which only needs to show the bench works, so it takes the quick sizes too.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let result = mm_bench::vs_linux(mm_bench::Sizes::of_run(quick));
    println!("{result}");
    if !result.complete() {
        eprintln!("measurements skipped or frames leaked: see above");
        std::process::exit(1);
    }
}
