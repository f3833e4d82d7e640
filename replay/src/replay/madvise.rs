//! `madvise`, through mm-core's own: advice that drops pages zaps them (the VMAs stay), advice
//! that changes `vm_flags` splits and merges VMAs as Linux's `madvise_update_vma` does.

use alloc::string::String;

use mm_core::mm::Advice;
use mm_core::VirtAddr;

use super::{expect_same, failure, Replayer};
use crate::trace::Outcome;

impl Replayer<'_, '_> {
    /// Applies `madvise(addr, len, advice)`; mm-core must fail where Linux failed.
    pub(super) fn madvise(
        &mut self,
        addr: u64,
        len: u64,
        advice: &str,
        linux: &Outcome,
    ) -> Result<(), String> {
        let Some(advice) = Advice::from_name(advice) else {
            self.note("madvise with unknown advice not replayed");
            return Ok(());
        };
        let start = VirtAddr(self.shift.to_mm(addr));
        let got = self.mm.madvise(self.k, start, len, advice);
        expect_same("madvise", got.map_err(failure), linux)?;
        self.applied += 1;
        Ok(())
    }
}
