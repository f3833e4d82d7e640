//! Rules about the code's shape that review would otherwise have to remember: no source file over
//! 600 lines outside tests, and the guest's kernel layers never reach up into a scenario.

use std::fs;
use std::path::{Path, PathBuf};

/// Longest a non-test source file may be.
const MAX_LINES: usize = 600;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, build output excluded.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    todo.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Test code: the top-level tests/, any `tests` folder, any `tests.rs`.
fn is_test(path: &Path, root: &Path) -> bool {
    let rel = path.strip_prefix(root).expect("under the root");
    rel.starts_with("tests")
        || rel.components().any(|c| c.as_os_str() == "tests")
        || rel.file_name().is_some_and(|n| n == "tests.rs")
}

#[test]
fn no_source_file_outside_tests_is_over_600_lines() {
    let root = root();
    let mut long = Vec::new();
    for crate_dir in ["vmm", "mm-core", "mm-bench", "replay", "guest"] {
        for path in sources(&root.join(crate_dir)) {
            if is_test(&path, &root) {
                continue;
            }
            let lines = fs::read_to_string(&path).expect("readable").lines().count();
            if lines > MAX_LINES {
                long.push(format!("{} ({lines} lines)", path.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these files (at most {MAX_LINES} lines outside tests): {long:#?}"
    );
}

/// The code of `text`, comment lines dropped.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

#[test]
fn no_guest_module_below_the_scenarios_imports_one() {
    let src = root().join("guest/src");
    let mut found = Vec::new();
    for path in sources(&src) {
        let rel = path.strip_prefix(&src).expect("under guest/src");
        if rel.starts_with("scenarios") || rel == Path::new("main.rs") {
            continue;
        }
        let text = fs::read_to_string(&path).expect("readable");
        for (n, line) in code_lines(&text) {
            if line.contains("scenarios::") {
                found.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the kernel, CPU and host layers must not import a scenario: {found:#?}"
    );
}

#[test]
fn the_checks_see_the_files_they_judge() {
    // Guards the two tests above against walking nothing (a moved root, a renamed folder).
    let root = root();
    let guest = sources(&root.join("guest/src"));
    assert!(guest.iter().any(|p| p.ends_with("kernel/process.rs")));
    assert!(guest.iter().any(|p| p.ends_with("scenarios/race.rs")));
    assert!(sources(&root.join("vmm")).len() > 40);
    assert!(is_test(&root.join("vmm/src/calls/tests.rs"), &root));
    assert!(!is_test(&root.join("vmm/src/calls.rs"), &root));
}
