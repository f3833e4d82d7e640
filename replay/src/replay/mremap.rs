//! `mremap`, through mm-core's own. Linux chose where a moved mapping went; the replay moves it
//! there (`MREMAP_FIXED`), so both address spaces stay the same.

use alloc::format;
use alloc::string::String;
use mm_core::mm::MremapFlags;
use mm_core::VirtAddr;

use super::{expect_same, failure, page_end, Replayer};
use crate::trace::{Call, Outcome};

impl Replayer<'_, '_> {
    /// Applies `mremap`; mm-core must fail where Linux failed and end where Linux's mapping ended.
    pub(super) fn mremap(&mut self, call: &Call, linux: Result<u64, String>) -> Result<(), String> {
        let Call::Mremap {
            old_addr,
            old_len,
            new_len,
            flags,
            new_addr,
        } = *call
        else {
            return Ok(());
        };
        let (k, shift) = (self.k, self.shift);
        let old = VirtAddr(shift.to_mm(old_addr));
        let (mut flags, mut to) = (
            MremapFlags(flags),
            VirtAddr(shift.to_mm(new_addr.unwrap_or(0))),
        );
        if let Ok(ret) = linux {
            let moved = ret != old_addr && !flags.contains(MremapFlags::FIXED);
            if moved {
                // Linux picked the destination: move exactly there.
                flags = MremapFlags(flags.0 | MremapFlags::FIXED.0);
                to = VirtAddr(shift.to_mm(ret));
            }
        }
        let got = self.mm.mremap(k, old, old_len, new_len, flags, to);
        let at = got.map_err(failure);
        let outcome = match &linux {
            Ok(v) => Outcome::Ok(*v),
            Err(e) => Outcome::Err(e.clone()),
        };
        expect_same("mremap", at.clone().map(|_| ()), &outcome)?;
        if let (Ok(at), Ok(ret)) = (at, linux) {
            if at.0 != shift.to_mm(ret) {
                return Err(format!(
                    "mremap returned {:#x}, Linux {ret:#x}",
                    shift.to_linux(at.0)
                ));
            }
            self.touch(at, page_end(at, new_len));
        }
        self.applied += 1;
        Ok(())
    }
}
