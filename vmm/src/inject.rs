//! `--inject fail-alloc:N[:KIND]`: the guest's memory manager fails the Nth allocation of each
//! process a scenario runs (of one kind, or of any). `N` may be `seed`, so a campaign over seeds
//! walks the failure across every allocation site.

use mm_core::phys::AllocKind;
use std::fmt;

/// Which allocation fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nth {
    /// This one (1-based; 0 injects nothing).
    Fixed(u64),
    /// The run's `--seed`.
    Seed,
}

/// A parsed `--inject` spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectSpec {
    /// Which allocation fails.
    pub nth: Nth,
    /// Of which kind; `None` counts every allocation.
    pub kind: Option<AllocKind>,
}

const KINDS: [(&str, AllocKind); 5] = [
    ("page", AllocKind::DataPage),
    ("table", AllocKind::PageTable),
    ("vma", AllocKind::Vma),
    ("anon-vma", AllocKind::AnonVma),
    ("file", AllocKind::File),
];

impl InjectSpec {
    /// Parses `fail-alloc:N` or `fail-alloc:N:KIND` (N a number or `seed`; KIND one of page,
    /// table, vma, anon-vma, file).
    pub fn parse(spec: &str) -> Result<InjectSpec, String> {
        let mut parts = spec.split(':');
        if parts.next() != Some("fail-alloc") {
            return Err("expected fail-alloc:N[:KIND]".into());
        }
        let nth = match parts.next() {
            Some("seed") => Nth::Seed,
            Some(n) => Nth::Fixed(
                n.parse()
                    .map_err(|_| format!("'{n}' is not a number or `seed`"))?,
            ),
            None => return Err("expected fail-alloc:N[:KIND]".into()),
        };
        let kind = match parts.next() {
            None => None,
            Some(name) => Some(
                KINDS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|&(_, k)| k)
                    .ok_or_else(|| {
                        format!(
                            "unknown allocation kind '{name}' (page, table, vma, anon-vma or file)"
                        )
                    })?,
            ),
        };
        if parts.next().is_some() {
            return Err("expected fail-alloc:N[:KIND]".into());
        }
        Ok(InjectSpec { nth, kind })
    }

    /// The allocation that fails in a run with `seed` (0 = none).
    pub fn nth_for(&self, seed: u64) -> u64 {
        match self.nth {
            Nth::Fixed(n) => n,
            Nth::Seed => seed,
        }
    }
}

impl fmt::Display for InjectSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.nth {
            Nth::Fixed(n) => write!(f, "fail-alloc:{n}")?,
            Nth::Seed => write!(f, "fail-alloc:seed")?,
        }
        match self
            .kind
            .and_then(|k| KINDS.iter().find(|(_, kind)| *kind == k))
        {
            Some((name, _)) => write!(f, ":{name}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for text in [
            "fail-alloc:3",
            "fail-alloc:seed",
            "fail-alloc:12:table",
            "fail-alloc:seed:anon-vma",
        ] {
            assert_eq!(InjectSpec::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(InjectSpec::parse("fail-alloc:seed").unwrap().nth_for(9), 9);
        assert_eq!(
            InjectSpec::parse("fail-alloc:4:page").unwrap().kind,
            Some(AllocKind::DataPage)
        );
    }

    #[test]
    fn bad_specs_name_the_problem() {
        assert!(InjectSpec::parse("fail-free:1")
            .unwrap_err()
            .contains("fail-alloc"));
        assert!(InjectSpec::parse("fail-alloc:x")
            .unwrap_err()
            .contains("'x'"));
        assert!(InjectSpec::parse("fail-alloc:1:cake")
            .unwrap_err()
            .contains("cake"));
        assert!(InjectSpec::parse("fail-alloc:1:page:more").is_err());
    }
}
