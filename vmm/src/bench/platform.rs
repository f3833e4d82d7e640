//! What kind of KVM this machine has, for the label next to every guest figure: on hardware KVM
//! (VMX/SVM) guest code runs natively; on a software hypervisor such as PVM, guest ring 0 is
//! emulated instruction by instruction and every figure of guest kernel work is far slower.

use std::time::Duration;

/// This machine's KVM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// The CPU advertises VMX or SVM (hardware virtualization).
    pub hardware: bool,
    /// The `kvm_pvm` module is loaded: KVM is PVM, a page-table-based software hypervisor.
    pub pvm: bool,
    /// Host CPUs.
    pub cpus: usize,
}

/// A bare exit round trip slower than this suggests software virtualization even where neither
/// sign above shows (hardware KVM takes a few microseconds at most).
const SOFTWARE_EXIT: Duration = Duration::from_micros(5);

impl Platform {
    /// Reads /proc/cpuinfo and /sys/module.
    pub fn detect() -> Platform {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Platform::from_parts(
            &cpuinfo,
            std::path::Path::new("/sys/module/kvm_pvm").exists(),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        )
    }

    /// The platform that `cpuinfo` and the presence of `kvm_pvm` describe.
    pub fn from_parts(cpuinfo: &str, pvm: bool, cpus: usize) -> Platform {
        let hardware = cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
        Platform {
            hardware: hardware && !pvm,
            pvm,
            cpus,
        }
    }

    /// One line for the table's head and the picture's title.
    pub fn describe(&self) -> String {
        let kind = if self.pvm {
            "software KVM (PVM: guest ring 0 is emulated)"
        } else if self.hardware {
            "hardware KVM (VMX/SVM)"
        } else {
            "software KVM (no VMX/SVM: guest ring 0 is emulated)"
        };
        format!("{kind}, {} CPUs", self.cpus)
    }

    /// A few words for the text beside a guest figure.
    pub fn short(&self) -> &'static str {
        match (self.pvm, self.hardware) {
            (true, _) => "PVM: guest ring 0 emulated",
            (false, true) => "hardware KVM",
            (false, false) => "software KVM: guest ring 0 emulated",
        }
    }

    /// The label next to figures of guest kernel work, given the bare exit measured in this run.
    pub fn guest_label(&self, bare_exit: Option<Duration>) -> String {
        let exit = bare_exit.map_or(String::new(), |d| {
            format!(", bare exit {:.1} µs", d.as_secs_f64() * 1e6)
        });
        let slow_exit = bare_exit.is_some_and(|d| d > SOFTWARE_EXIT);
        if self.hardware && !slow_exit {
            format!("hardware KVM: guest code runs natively{exit}")
        } else {
            let who = if self.pvm { "PVM" } else { "software KVM" };
            format!(
                "this machine's KVM ({who}) emulates guest ring 0, ~1000x slower than hardware; \
                 ring 3 runs natively{exit}"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_is_software_even_on_a_cpu_with_vmx() {
        let p = Platform::from_parts("flags\t: fpu vmx sse", true, 2);
        assert!(!p.hardware);
        assert!(p.describe().contains("PVM"));
        assert!(p.guest_label(None).contains("emulates guest ring 0"));
    }

    #[test]
    fn vmx_without_pvm_and_a_fast_exit_is_hardware() {
        let p = Platform::from_parts("flags\t: fpu vmx sse", false, 8);
        assert!(p.hardware);
        let label = p.guest_label(Some(Duration::from_micros(1)));
        assert!(label.starts_with("hardware KVM"), "{label}");
        assert!(p
            .guest_label(Some(Duration::from_micros(11)))
            .contains("emulates"));
    }
}
