//! The x86 exception vectors by name, for reports of a guest exception.

/// The mnemonic of exception `vector`, as the SDM names it.
pub fn name(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE divide error",
        "#DB debug",
        "NMI",
        "#BP breakpoint",
        "#OF overflow",
        "#BR bound range",
        "#UD invalid opcode",
        "#NM device not available",
        "#DF double fault",
        "coprocessor overrun",
        "#TS invalid TSS",
        "#NP segment not present",
        "#SS stack fault",
        "#GP general protection",
        "#PF page fault",
        "reserved",
        "#MF x87 error",
        "#AC alignment check",
        "#MC machine check",
        "#XM SIMD error",
        "#VE virtualization",
        "#CP control protection",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "#HV hypervisor injection",
        "#VC VMM communication",
        "#SX security",
        "reserved",
    ];
    NAMES
        .get(vector as usize)
        .copied()
        .unwrap_or("unknown vector")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_named_as_the_sdm_names_them() {
        assert_eq!(name(14), "#PF page fault");
        assert_eq!(name(13), "#GP general protection");
        assert_eq!(name(99), "unknown vector");
    }
}
