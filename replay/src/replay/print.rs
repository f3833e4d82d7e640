//! The final address space as `/proc/PID/maps` lines.

use alloc::string::ToString;
use alloc::vec::Vec;
use mm_core::addr::{PAGE_SHIFT, USER_BASE};
use mm_core::mm::VmFlags;

use super::seed::SHMEM_NAME;
use super::Replayer;
use crate::maps::MapsLine;

impl Replayer<'_, '_> {
    /// The address space as `/proc/PID/maps` lines, in original addresses, then `kernel`'s.
    pub(super) fn print(&self, kernel: &[&MapsLine]) -> Vec<MapsLine> {
        let raw = self.mm.raw();
        let (start_brk, brk) = (raw.start_brk.get(), raw.brk.get());
        let mut out = Vec::new();
        for vma in self.mm.vmas() {
            let v = vma.get();
            let f = v.flags();
            let start = self.shift.to_linux(v.start().0);
            let end = start + (v.end() - v.start());
            let info = v
                .file()
                .and_then(|fp| self.files.iter().find(|(p, _)| *p == fp).map(|(_, i)| i));
            let (path, inode, dev, offset) = match info {
                // A shmem file made during the trace: its inode is what the hints show where
                // the mapping ended up (mremap may have moved it from where it was made).
                Some(i) if i.inode == 0 && i.path == SHMEM_NAME => {
                    let hint = self
                        .hints
                        .iter()
                        .find(|l| l.start == start && l.path == i.path);
                    let (inode, dev) =
                        hint.map_or((0, i.dev.clone()), |l| (l.inode, l.dev.clone()));
                    (i.path.clone(), inode, dev, v.pgoff() << PAGE_SHIFT)
                }
                Some(i) => (
                    i.path.clone(),
                    i.inode,
                    i.dev.clone(),
                    v.pgoff() << PAGE_SHIFT,
                ),
                None => {
                    let heap =
                        start_brk >= USER_BASE.0 && v.start().0 <= brk && v.end().0 >= start_brk;
                    let name = if heap { "[heap]" } else { "" };
                    (name.to_string(), 0, "00:00".to_string(), 0)
                }
            };
            let offset = if path.starts_with('[') { 0 } else { offset };
            out.push(MapsLine {
                start,
                end,
                perms: [
                    f.contains(VmFlags::READ),
                    f.contains(VmFlags::WRITE),
                    f.contains(VmFlags::EXEC),
                    f.contains(VmFlags::SHARED) || f.contains(VmFlags::MAYSHARE),
                ],
                offset,
                dev,
                inode,
                path,
            });
        }
        out.extend(kernel.iter().map(|l| (*l).clone()));
        out
    }
}
