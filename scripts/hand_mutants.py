#!/usr/bin/env python3
"""Hand-written ordering bugs, judged by the product (docs/mutants.md).

Each mutant is a plausible slip written into mm-core's (or the guest glue's) source. The script
checks out HEAD into a scratch worktree, and for each mutant: applies it, builds the release vmm
(which rebuilds the guest), runs the product until something fails, and reverts:

  1. vmm run --scenario tour
  2. vmm run --scenario tour --thorough
  3. vmm campaign --scenario random-mm --seeds 0..8 --jobs 2
  4. vmm campaign --scenario race-exit --seeds 1..9 --jobs 2

Usage: scripts/hand_mutants.py [--worktree DIR] [M1 M2 ...]   (about 1-2 minutes a mutant here)
Prints one JSON line per mutant: caught (by which run, the first line that says so) or MISSED.
"""
import json, os, subprocess, sys, time

# (name, file, the exact text, what it becomes, the bug in one line)
MUTANTS = [
 ("M1", "mm-core/src/paging/free.rs", "    if end.wrapping_sub(1) > ceiling.wrapping_sub(1) {\n        end = end.wrapping_sub(PMD_SIZE);", "    if end.wrapping_sub(1) >= ceiling.wrapping_sub(1) {\n        end = end.wrapping_sub(PMD_SIZE);", "free_pgd_range keeps the last PTE table when the range ends exactly at the ceiling (>= for >)"),
 ("M2", "mm-core/src/paging/free.rs", "    end.wrapping_sub(1) <= ceiling.wrapping_sub(1)\n}", "    end <= ceiling\n}", "table_within compares end and ceiling without the -1s (a ceiling of 0 = top never admits a table)"),
 ("M3", "mm-core/src/paging/free.rs", "                e.frame(),\n                a & !(PMD_SIZE - 1),", "                e.frame(),\n                a,", "free_pmd_range reports a PTE table's span from the range start, not the table's base"),
 ("M4", "mm-core/src/paging/gather.rs", "        if !self.is_empty() {\n            k.flush_tlb_range(self.mm, self.pgd, self.start, self.end);\n        }\n        for ev in self.tables.drain(..) {\n            k.hooks().table_freeing(k, &ev);\n            k.free_frame(ev.frame, AllocKind::PageTable);\n        }", "        for ev in self.tables.drain(..) {\n            k.hooks().table_freeing(k, &ev);\n            k.free_frame(ev.frame, AllocKind::PageTable);\n        }\n        if !self.is_empty() {\n            k.flush_tlb_range(self.mm, self.pgd, self.start, self.end);\n        }", "tlb_finish_mmu frees the tables before the flush"),
 ("M5", "mm-core/src/mm/unmap.rs", "        unlink_for_free(k, first);\n        // Gather", "        // Gather", "free_pgtables never unlinks the first VMA of each gathered run before its tables go"),
 ("M6", "mm-core/src/mm/unmap.rs", "        let top = next.map_or(ceiling, |n| n.get().start());", "        let top = ceiling;", "free_pgtables passes the caller's ceiling, not the next VMA's start"),
 ("M7", "mm-core/src/mm/unmap.rs", "    if !k.variant().defers_file_unlink() {\n        unlink_file_vma(k, vma);\n    }", "    if !k.variant().defers_file_unlink() && vma.get().flags().contains(crate::mm::VmFlags::SHARED) {\n        unlink_file_vma(k, vma);\n    }", "only shared file VMAs leave i_mmap before their tables go (private file mappings forgotten)"),
 ("M8", "mm-core/src/paging/walk.rs", "            mm.pgtables_bytes.add(PAGE_SIZE);\n            if lower == Level::Pte {\n                mm.nr_ptes.add(1);\n            }", "            mm.pgtables_bytes.add(PAGE_SIZE);", "pte_alloc forgets to count a new PTE table in nr_ptes"),
 ("M9", "mm-core/src/paging/free.rs", "    if table_within(addr, end, PUD_SIZE, floor, ceiling) {\n        let start = addr & !(PUD_SIZE - 1);\n        unhook(k, tlb, mm, pud, pud_idx, Level::Pmd, pmd, start);\n    }", "    if table_within(addr, end, PMD_SIZE, floor, ceiling) {\n        let start = addr & !(PUD_SIZE - 1);\n        unhook(k, tlb, mm, pud, pud_idx, Level::Pmd, pmd, start);\n    }", "free_pmd_range tests the PMD table against floor/ceiling at PTE-table granularity"),
 ("M10", "guest/src/kernel/mm.rs", "        if table {\n            crate::host::probes::table_freed(frame);\n        }", "", "the guest's allocator stops reporting page-table frees"),
 ("M11", "guest/src/host/probes.rs", "        unsafe { (*CLAIMS.0.get())[cpu] = Some(TableSpan::from(ev)) };", "        let _ = cpu;", "the guest's hook glue drops the gather's announcement"),
 ("M12", "mm-core/src/mm/mremap.rs", "        let pgoff = if v.file().is_none() && v.anon().is_none() {", "        let pgoff = if v.file().is_none() {", "move_vma gives a moved anonymous VMA a fresh linear pgoff although its pages keep their old index"),
 ("M13", "mm-core/src/paging/gather.rs", "    pub fn free_table(&mut self, k: &Kernel<'_>, ev: TableEvent) {\n        self.track(ev.start, ev.end);", "    pub fn free_table(&mut self, k: &Kernel<'_>, ev: TableEvent) {", "pte_free_tlb forgets to widen the gather's flush range to the table's span"),
 ("M14", "mm-core/src/mm/unmap.rs", "        unmap_vmas(k, raw, &mut tlb, vma, start, end);\n        let floor = prev.map_or(FIRST_USER_ADDRESS, |p| p.get().end());\n        let ceiling = next.map_or(VirtAddr(0), |n| n.get().start());\n        free_pgtables(k, &mut tlb, raw, vma, floor, ceiling);", "        let floor = prev.map_or(FIRST_USER_ADDRESS, |p| p.get().end());\n        let ceiling = next.map_or(VirtAddr(0), |n| n.get().start());\n        free_pgtables(k, &mut tlb, raw, vma, floor, ceiling);\n        unmap_vmas(k, raw, &mut tlb, vma, start, end);", "unmap_region frees the page tables before zapping the PTEs"),
 ("M15", "mm-core/src/mm/mremap.rs", "    k.flush_tlb_range(raw.addr(), raw.pgd(), start, end);", "", "move_ptes moves the entries without flushing the old range"),

]

RUNS = [
    ("tour", "run --scenario tour"),
    ("tour --thorough", "run --scenario tour --thorough"),
    ("campaign random-mm 0..8", "campaign --scenario random-mm --seeds 0..8 --jobs 2"),
    ("campaign race-exit 1..9", "campaign --scenario race-exit --seeds 1..9 --jobs 2"),
]


def sh(cmd, cwd, timeout=900):
    p = subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def first_catch(out):
    marks = ("vmm: violation", "guest aborted", "first failing seed", "use-after-free",
             "guest failed", "watchdog", "lockdep")
    for line in out.splitlines():
        if any(m in line for m in marks):
            return line[:300]
    return (out.strip().splitlines() or ["?"])[-1][:300]


def main():
    args = sys.argv[1:]
    tree = "/tmp/mm-hand-mutants"
    if args[:1] == ["--worktree"]:
        tree, args = args[1], args[2:]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isdir(tree):
        subprocess.run(["git", "-C", repo, "worktree", "add", "--detach", tree, "HEAD"], check=True)
    vmm = os.path.join(tree, "target/release/vmm")
    for name, path, old, new, why in MUTANTS:
        if args and name not in args:
            continue
        file = os.path.join(tree, path)
        src = open(file).read()
        result = {"mutant": name, "file": path, "bug": why}
        if src.count(old) != 1:
            result["result"] = f"not applied: the text occurs {src.count(old)} times"
            print(json.dumps(result), flush=True)
            continue
        started = time.time()
        open(file, "w").write(src.replace(old, new))
        try:
            code, out = sh("cargo build --release -p vmm", tree)
            if code != 0:
                result["result"] = "does not build"
            else:
                result["result"] = "MISSED"
                for label, run in RUNS:
                    code, out = sh(f"{vmm} {run}", tree)
                    if code != 0:
                        result.update(result="caught", by=label, line=first_catch(out))
                        break
        finally:
            open(file, "w").write(src)
        result["secs"] = round(time.time() - started)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
