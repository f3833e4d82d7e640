//! mm-core against Linux's native system calls (work in progress).
fn main() {}
