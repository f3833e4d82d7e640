//! The scenarios the guest kernel offers: one list both sides read, so `vmm list` and the VMM's
//! check of `--scenario` agree with the guest's registry by construction.

/// How a scenario is expected to end when the kernel is correct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// `Done` with a passing verdict: the VMM exits 0.
    Pass,
    /// A guest failure the VMM must report (panic, exception, triple fault, hang): exit 1.
    Failure,
}

/// One scenario: its name (what `--scenario` takes), what it does, and how it should end.
#[derive(Clone, Copy, Debug)]
pub struct ScenarioInfo {
    /// The name `--scenario` takes.
    pub name: &'static str,
    /// One line saying what it does, for `vmm list`.
    pub about: &'static str,
    /// How it ends on a correct kernel.
    pub expect: Expect,
}

/// Every scenario the guest implements, the default first.
pub const SCENARIOS: &[ScenarioInfo] = &[
    ScenarioInfo {
        name: "tour",
        about: "a little of every mm scenario below, with the host probes checking each page-table free",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "hello",
        about: "boot every vCPU, allocate from the frame allocator and the heap, print the banner",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "boot",
        about: "the shortest run: initialise the kernel and finish (used to measure boot time)",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "user-mode",
        about: "run ring-3 programs: system calls, exit, and a fault on kernel memory",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "mm-smoke",
        about: "a ring-3 process maps, touches, splits, protects, truncates and unmaps memory (mm-core on the real MMU)",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "munmap-whole",
        about: "munmap of a whole VMA alone in its tables (PTE, PMD and PUD tables freed)",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "munmap-part",
        about: "munmap of the half of a VMA that owns a PTE table",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "munmap-several",
        about: "one munmap over several VMAs, anonymous and file (free_pgtables gathers them)",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "shared-pte",
        about: "neighbours sharing a PTE table: unmapping one leaves the table to the other",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "shared-pmd",
        about: "neighbours sharing a PMD table, one of them a file mapping",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "exit-mmap",
        about: "exit_mmap of a process with anonymous and file mappings",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "truncate",
        about: "two shared mappings of a file, then ftruncate, then munmap",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "rmap",
        about: "reclaim-style page_referenced / try_to_unmap walks over anonymous and file pages",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "probe-bench",
        about: "bare exits, then --scale file VMAs (default 1000) and 64 checked page-table frees (vmm bench probes)",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "mm-workloads",
        about: "the six mm workloads of vmm bench in ring-3 processes, each phase timed by the host (--scale = units, default 64)",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "shapes",
        about: "munmap, mmap(MAP_FIXED), mremap move and shrink, and brk over every kind of VMA, with a neighbour keeping the PMD, PUD or PGD table alive",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "random-mm",
        about: "seeded random mmap/munmap/mprotect/touch/reclaim over a PMD boundary (--seed; --scale = operations, default 200)",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "race-munmap",
        about: "vCPU 0 munmaps random ranges, then exits, while the other vCPUs run rmap and truncate walkers over the same pages (--seed; the host schedules the vCPUs, or --free-run)",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "race-exit",
        about: "vCPU 0's process exits (exit_mmap) while the other vCPUs run rmap and truncate walkers over its pages (--seed; the host schedules the vCPUs, or --free-run)",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "replay",
        about: "replay a program's strace'd memory calls on real page tables (vmm replay; alone: a built-in sample)",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "difftest",
        about: "run vmm difftest's call sequences on real page tables (vmm difftest --guest; alone: a few seeds)",
        expect: Expect::Pass,
    },
    ScenarioInfo {
        name: "panic",
        about: "panic in the kernel: the VMM reports the message with file and line",
        expect: Expect::Failure,
    },
    ScenarioInfo {
        name: "page-fault",
        about: "read an unmapped address: the IDT reports #PF with CR2 and RIP",
        expect: Expect::Failure,
    },
    ScenarioInfo {
        name: "invalid-opcode",
        about: "execute ud2: the IDT reports #UD with RIP",
        expect: Expect::Failure,
    },
    ScenarioInfo {
        name: "triple-fault",
        about: "drop the IDT and fault: KVM shuts the vCPU down and the VMM dumps its registers",
        expect: Expect::Failure,
    },
    ScenarioInfo {
        name: "hang",
        about: "spin forever in the kernel: the VMM's watchdog stops the run",
        expect: Expect::Failure,
    },
];

/// The scenario `vmm run` runs when none is named.
pub const DEFAULT_SCENARIO: &str = "tour";

/// The scenario called `name`, if the guest has one.
pub fn find_scenario(name: &str) -> Option<&'static ScenarioInfo> {
    SCENARIOS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_are_unique_and_fit_the_boot_info() {
        for (i, a) in SCENARIOS.iter().enumerate() {
            assert!(
                a.name.len() <= super::super::SCENARIO_NAME_MAX,
                "{} too long",
                a.name
            );
            assert!(
                SCENARIOS[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
        }
        assert!(find_scenario(DEFAULT_SCENARIO).is_some());
    }
}
