//! Compiles the product oracle of `cargo mutants` (tests/mutants_oracle.rs) as a test of mm-core.
//!
//! mm-core is the package cargo-mutants mutates, and cargo-mutants runs the tests of the package
//! a mutant is in; mm-core discovers files in its tests/ folder by itself. Skipped unless
//! MM_MUTANTS_ORACLE=1; see docs/mutants.md.

#[path = "../../tests/mutants_oracle.rs"]
mod oracle;
