//! `cargo bench -p vmm --bench boot`: boot time against the bare KVM floor (see `vmm::bench`).
fn main() {
    let iterations = std::env::var("BOOT_BENCH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    match vmm::bench::boot(std::path::Path::new(env!("CARGO_BIN_EXE_vmm")), iterations) {
        Ok(result) => {
            println!("{result}");
            if !result.meets_goals() {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("bench boot: {e}");
            std::process::exit(1);
        }
    }
}
