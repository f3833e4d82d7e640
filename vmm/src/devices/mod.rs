//! Emulated devices: only the COM1 console.
pub mod serial;
