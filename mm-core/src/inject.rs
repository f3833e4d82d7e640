//! Fault injection: make the Nth allocation fail (Linux's fail-nth), optionally only of one kind.
//!
//! Tests arm it, run one operation, and check that the operation failed with an ENOMEM-like error,
//! `validate_mm` is clean and no frame leaked; then arm N+1, until the operation runs without the
//! injected failure firing (every allocation site has been hit).

use crate::cell::U64Cell;
use crate::phys::AllocKind;

/// Fails the Nth allocation after [`FaultInjector::fail_nth`].
#[derive(Debug, Default)]
pub struct FaultInjector {
    nth: U64Cell,
    kind: U64Cell,
    seen: U64Cell,
    fired: U64Cell,
}

impl FaultInjector {
    /// Arms the injector: the `n`th allocation from now (1-based) of `kind` (any kind if `None`)
    /// fails, once. `n == 0` disarms.
    pub fn fail_nth(&self, n: u64, kind: Option<AllocKind>) {
        self.nth.set(n);
        self.kind.set(kind.map_or(0, |k| k as u64));
        self.seen.set(0);
        self.fired.set(0);
    }

    /// Whether the armed failure has fired since the last [`FaultInjector::fail_nth`].
    pub fn fired(&self) -> bool {
        self.fired.get() != 0
    }

    /// Called by every allocation site: `true` means "pretend this allocation failed".
    pub fn should_fail(&self, kind: AllocKind) -> bool {
        let n = self.nth.get();
        if n == 0 || (self.kind.get() != 0 && self.kind.get() != kind as u64) {
            return false;
        }
        if self.seen.add(1) == n {
            self.nth.set(0);
            self.fired.set(1);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_nth_allocation_of_the_chosen_kind_fails_and_only_once() {
        let inj = FaultInjector::default();
        inj.fail_nth(2, Some(AllocKind::Vma));
        assert!(!inj.should_fail(AllocKind::DataPage));
        assert!(!inj.should_fail(AllocKind::Vma));
        assert!(!inj.fired());
        assert!(inj.should_fail(AllocKind::Vma));
        assert!(inj.fired());
        assert!(!inj.should_fail(AllocKind::Vma));
    }
}
