//! KVM state: the VM and its memory, the vCPUs, and what each KVM exit means.
pub mod exit;
pub mod memory;
pub mod pause;
pub mod vcpu;
pub mod vm;
