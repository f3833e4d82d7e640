//! Synthetic MAP_FIXED sequences and their final maps, hand-checked against Linux's rules: adjacent
//! anonymous private mappings with equal flags merge, file mappings merge only with contiguous
//! offsets, mprotect or munmap in the middle of a VMA splits it.

use mm_replay::{maps, replay, trace};

const A: u64 = 0x7f00_0000_0000;

/// Replays `calls` (strace lines, `{A}` standing for the base address) on `before` and returns the
/// final maps as text without the padding.
fn run(before: &str, calls: &str) -> Result<Vec<String>, replay::ReplayError> {
    let before = maps::parse_maps(before).expect("before parses");
    let t = trace::parse_trace(calls).expect("trace parses");
    let out = replay::replay(&before, &t, &[])?;
    Ok(out
        .maps
        .iter()
        .map(|l| {
            l.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect())
}

fn anon(at: u64, pages: u64, prot: &str) -> String {
    format!(
        "1 mmap({at:#x}, {}, {prot}, MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS, -1, 0) = {at:#x}\n",
        pages * 4096
    )
}

#[test]
fn adjacent_anonymous_mappings_with_equal_flags_merge_into_one() {
    let calls = anon(A, 2, "PROT_READ|PROT_WRITE") + &anon(A + 0x2000, 1, "PROT_READ|PROT_WRITE");
    let got = run("", &calls).expect("replays");
    assert_eq!(got, ["7f0000000000-7f0000003000 rw-p 00000000 00:00 0"]);
}

#[test]
fn adjacent_anonymous_mappings_with_different_permissions_stay_apart() {
    let calls = anon(A, 1, "PROT_READ") + &anon(A + 0x1000, 1, "PROT_READ|PROT_WRITE");
    let got = run("", &calls).expect("replays");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], "7f0000000000-7f0000001000 r--p 00000000 00:00 0");
}

#[test]
fn mprotect_in_the_middle_splits_in_three_and_undoing_it_merges_back() {
    let split = anon(A, 4, "PROT_READ|PROT_WRITE")
        + &format!("1 mprotect({:#x}, 8192, PROT_READ) = 0\n", A + 0x1000);
    let got = run("", &split).expect("replays");
    assert_eq!(
        got,
        [
            "7f0000000000-7f0000001000 rw-p 00000000 00:00 0",
            "7f0000001000-7f0000003000 r--p 00000000 00:00 0",
            "7f0000003000-7f0000004000 rw-p 00000000 00:00 0",
        ]
    );
    let undo = split
        + &format!(
            "1 mprotect({:#x}, 8192, PROT_READ|PROT_WRITE) = 0\n",
            A + 0x1000
        );
    let got = run("", &undo).expect("replays");
    assert_eq!(got, ["7f0000000000-7f0000004000 rw-p 00000000 00:00 0"]);
}

#[test]
fn munmap_in_the_middle_leaves_two_mappings_with_a_hole() {
    let calls = anon(A, 4, "PROT_READ") + &format!("1 munmap({:#x}, 4096) = 0\n", A + 0x1000);
    let got = run("", &calls).expect("replays");
    assert_eq!(
        got,
        [
            "7f0000000000-7f0000001000 r--p 00000000 00:00 0",
            "7f0000002000-7f0000004000 r--p 00000000 00:00 0",
        ]
    );
}

#[test]
fn map_fixed_over_the_middle_of_a_file_mapping_keeps_the_tail_offset() {
    let before = "7f0000000000-7f0000004000 r--p 00000000 08:01 77 /lib/x.so\n";
    let got = run(before, &anon(A + 0x1000, 2, "PROT_READ")).expect("replays");
    assert_eq!(
        got,
        [
            "7f0000000000-7f0000001000 r--p 00000000 08:01 77 /lib/x.so",
            "7f0000001000-7f0000003000 r--p 00000000 00:00 0",
            "7f0000003000-7f0000004000 r--p 00003000 08:01 77 /lib/x.so",
        ]
    );
}

#[test]
fn file_mappings_merge_only_when_their_offsets_are_contiguous() {
    let file = |at: u64, off: u64| {
        format!("1 mmap({at:#x}, 4096, PROT_READ, MAP_PRIVATE|MAP_FIXED, 3</lib/x.so>, {off:#x}) = {at:#x}\n")
    };
    let got = run("", &(file(A, 0) + &file(A + 0x1000, 0x1000))).expect("replays");
    assert_eq!(
        got,
        ["7f0000000000-7f0000002000 r--p 00000000 00:00 0 /lib/x.so"]
    );
    let got = run("", &(file(A, 0) + &file(A + 0x1000, 0x5000))).expect("replays");
    assert_eq!(got.len(), 2, "{got:?}");
}

#[test]
fn snapshot_neighbours_linux_kept_apart_stay_apart_when_seeded() {
    let before = "7f0000000000-7f0000001000 r--p 00000000 08:01 7 /lib/x.so\n\
                  7f0000001000-7f0000002000 r--p 00001000 08:01 7 /lib/x.so\n\
                  7f0000002000-7f0000003000 rw-p 00000000 00:00 0\n\
                  7f0000003000-7f0000004000 rw-p 00000000 00:00 0\n";
    let got = run(before, "").expect("replays");
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        got[1],
        "7f0000001000-7f0000002000 r--p 00001000 08:01 7 /lib/x.so"
    );
}

#[test]
fn brk_grows_and_shrinks_the_heap_from_where_linux_put_it() {
    let calls = "1 brk(NULL) = 0x555500000000\n\
                 1 brk(0x555500021000) = 0x555500021000\n\
                 1 brk(0x555500010000) = 0x555500010000\n";
    let got = run("", calls).expect("replays");
    assert_eq!(
        got,
        ["555500000000-555500010000 rw-p 00000000 00:00 0 [heap]"]
    );
}

#[test]
fn mremap_grows_in_place_and_moves() {
    let calls = anon(A, 1, "PROT_READ|PROT_WRITE")
        + &format!("1 mremap({A:#x}, 4096, 8192, 0) = {A:#x}\n")
        + &format!(
            "1 mremap({A:#x}, 8192, 12288, MREMAP_MAYMOVE|MREMAP_FIXED, {:#x}) = {:#x}\n",
            A + 0x10_0000,
            A + 0x10_0000
        );
    let got = run("", &calls).expect("replays");
    assert_eq!(got, ["7f0000100000-7f0000103000 rw-p 00000000 00:00 0"]);
}

#[test]
fn a_call_that_failed_in_linux_must_fail_in_mm_core() {
    let calls = anon(A, 1, "PROT_READ")
        + &format!(
            "1 munmap({:#x}, 4096) = -1 EINVAL (Invalid argument)\n",
            A + 1
        );
    assert!(run("", &calls).is_ok());
    let wrong = anon(A, 1, "PROT_READ") + &format!("1 munmap({:#x}, 4096) = 0\n", A + 1);
    assert!(matches!(
        run("", &wrong),
        Err(replay::ReplayError::Diverged { line: 2, .. })
    ));
}

#[test]
fn a_non_pie_layout_replays_with_its_low_part_moved_and_prints_its_own_addresses() {
    let before = "00400000-00401000 r-xp 00000000 08:01 9 /bin/x\n\
                  01000000-01021000 rw-p 00000000 00:00 0 [heap]\n\
                  7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0 [stack]\n";
    let calls = "1 brk(0x1042000) = 0x1042000\n".to_string() + &anon(A, 1, "PROT_READ");
    let got = run(before, &calls).expect("replays");
    assert_eq!(
        got,
        [
            "00400000-00401000 r-xp 00000000 08:01 9 /bin/x",
            "01000000-01042000 rw-p 00000000 00:00 0 [heap]",
            "7f0000000000-7f0000001000 r--p 00000000 00:00 0",
            "7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0 [stack]",
        ]
    );
}

#[test]
fn a_layout_that_fits_neither_shifted_nor_split_is_refused() {
    // Something in [512 GiB, 1 TiB), where the low part would have to go.
    let before = "00400000-00401000 r-xp 00000000 08:01 9 /bin/x\n\
                  9000000000-9000001000 rw-p 00000000 00:00 0\n\
                  7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0 [stack]\n";
    assert!(matches!(
        run(before, ""),
        Err(replay::ReplayError::DoesNotFit { .. })
    ));
}

#[test]
fn a_low_layout_is_shifted_into_mm_cores_range_and_printed_at_its_own_addresses() {
    let before = "00400000-00402000 r-xp 00000000 08:01 9 /bin/x\n";
    let calls = "1 mprotect(0x401000, 4096, PROT_READ) = 0\n";
    let got = run(before, calls).expect("replays");
    assert_eq!(
        got,
        [
            "00400000-00401000 r-xp 00000000 08:01 9 /bin/x",
            "00401000-00402000 r--p 00001000 08:01 9 /bin/x",
        ]
    );
}

#[test]
fn a_relro_range_made_read_only_stays_apart_from_the_read_only_segment_below() {
    // ld.so maps a library's data rw-p (accounted, VM_ACCOUNT), then mprotects its RELRO part
    // read-only: VM_ACCOUNT stays, so Linux never merges it with the r--p segment before it.
    let file = |at: u64, len: u64, prot: &str, off: u64| {
        format!("1 mmap({at:#x}, {len}, {prot}, MAP_PRIVATE|MAP_FIXED|MAP_DENYWRITE, 3</lib/y.so>, {off:#x}) = {at:#x}\n")
    };
    let calls = file(A, 8192, "PROT_READ", 0)
        + &file(A + 0x2000, 8192, "PROT_READ|PROT_WRITE", 0x2000)
        + &format!("1 mprotect({:#x}, 4096, PROT_READ) = 0\n", A + 0x2000);
    let got = run("", &calls).expect("replays");
    assert_eq!(
        got,
        [
            "7f0000000000-7f0000002000 r--p 00000000 00:00 0 /lib/y.so",
            "7f0000002000-7f0000003000 r--p 00002000 00:00 0 /lib/y.so",
            "7f0000003000-7f0000004000 rw-p 00003000 00:00 0 /lib/y.so",
        ]
    );
}

#[test]
fn a_noreserve_reservation_made_writable_stays_apart_from_accounted_memory() {
    // glibc's arenas: PROT_NONE + MAP_NORESERVE, then mprotect RW: VM_NORESERVE, no VM_ACCOUNT,
    // so the piece does not merge with an ordinary accounted rw-p mapping right below it.
    let calls = anon(A, 1, "PROT_READ|PROT_WRITE")
        + &format!(
            "1 mmap({:#x}, 16384, PROT_NONE, MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS|MAP_NORESERVE, -1, 0) = {:#x}\n",
            A + 0x1000,
            A + 0x1000
        )
        + &format!("1 mprotect({:#x}, 4096, PROT_READ|PROT_WRITE) = 0\n", A + 0x1000);
    let got = run("", &calls).expect("replays");
    assert_eq!(
        got,
        [
            "7f0000000000-7f0000001000 rw-p 00000000 00:00 0",
            "7f0000001000-7f0000002000 rw-p 00000000 00:00 0",
            "7f0000002000-7f0000005000 ---p 00000000 00:00 0",
        ]
    );
}

#[test]
fn a_thread_stack_made_writable_stays_apart_from_ordinary_memory_above_it() {
    // pthread_create: PROT_NONE + MAP_STACK, then mprotect all but the guard page RW. MAP_STACK
    // sets VM_NOHUGEPAGE (Linux 6.7+), so it does not merge with the rw-p mapping right above.
    let calls = format!(
        "1 mmap(NULL, 12288, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_STACK, -1, 0) = {A:#x}\n\
         1 mprotect({:#x}, 8192, PROT_READ|PROT_WRITE) = 0\n",
        A + 0x1000
    ) + &anon(A + 0x3000, 1, "PROT_READ|PROT_WRITE");
    let got = run("", &calls).expect("replays");
    assert_eq!(
        got,
        [
            "7f0000000000-7f0000001000 ---p 00000000 00:00 0",
            "7f0000001000-7f0000003000 rw-p 00000000 00:00 0",
            "7f0000003000-7f0000004000 rw-p 00000000 00:00 0",
        ]
    );
}

#[test]
fn a_brk_linux_refused_leaves_the_heap_alone_and_is_counted() {
    let before = maps::parse_maps("555500000000-555500002000 rw-p 00000000 00:00 0 [heap]\n")
        .expect("parses");
    let t = trace::parse_trace("1 brk(0x7f0000000000) = 0x555500002000\n").expect("parses");
    let out = replay::replay(&before, &t, &[]).expect("replays");
    assert_eq!(out.maps, before);
    assert_eq!(out.notes.get("brk refused by Linux not replayed"), Some(&1));
}

#[test]
fn madvise_dontfork_in_the_middle_splits_and_dofork_merges_back() {
    let split = anon(A, 4, "PROT_READ|PROT_WRITE")
        + &format!("1 madvise({:#x}, 8192, MADV_DONTFORK) = 0\n", A + 0x1000);
    let got = run("", &split).expect("replays");
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[1], "7f0000001000-7f0000003000 rw-p 00000000 00:00 0");
    let undo = split + &format!("1 madvise({A:#x}, 16384, MADV_DOFORK) = 0\n");
    let got = run("", &undo).expect("replays");
    assert_eq!(got, ["7f0000000000-7f0000004000 rw-p 00000000 00:00 0"]);
}

#[test]
fn madvise_over_a_hole_fails_as_in_linux_after_advising_the_mapped_parts() {
    let calls = anon(A, 1, "PROT_READ|PROT_WRITE")
        + &anon(A + 0x2000, 1, "PROT_READ|PROT_WRITE")
        + &format!("1 madvise({A:#x}, 12288, MADV_DONTDUMP) = -1 ENOMEM (Cannot allocate memory)\n")
        // Had the mapped parts not got the advice, the three pages would merge into one VMA.
        + &anon(A + 0x1000, 1, "PROT_READ|PROT_WRITE");
    let got = run("", &calls).expect("replays");
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[1], "7f0000001000-7f0000002000 rw-p 00000000 00:00 0");
}

#[test]
fn mremap_moving_a_vma_keeps_its_madvise_flags() {
    let calls = anon(A, 2, "PROT_READ|PROT_WRITE")
        + &format!("1 madvise({A:#x}, 8192, MADV_DONTFORK) = 0\n")
        + &format!(
            "1 mremap({A:#x}, 8192, 8192, MREMAP_MAYMOVE|MREMAP_FIXED, {:#x}) = {:#x}\n",
            A + 0x10000,
            A + 0x10000
        )
        // A plain neighbour does not merge with the DONTFORK VMA that moved there.
        + &anon(A + 0x12000, 1, "PROT_READ|PROT_WRITE");
    let got = run("", &calls).expect("replays");
    assert_eq!(got.len(), 2, "{got:?}");
}

#[test]
fn a_madvise_that_succeeded_in_linux_must_succeed_in_mm_core() {
    let calls = format!("1 madvise({A:#x}, 4096, MADV_DONTNEED) = 0\n");
    let err = run("", &calls).expect_err("nothing is mapped there");
    assert!(
        err.to_string().contains("madvise succeeded in Linux"),
        "{err}"
    );
}

#[test]
fn mremap_goes_where_linux_moved_it_and_a_blocked_grow_fails_in_both() {
    let calls = anon(A, 2, "PROT_READ|PROT_WRITE")
        + &anon(A + 0x2000, 1, "PROT_READ")
        // Growing in place is blocked by the read-only page: fails without MREMAP_MAYMOVE...
        + &format!("1 mremap({A:#x}, 8192, 16384, 0) = -1 ENOMEM (Cannot allocate memory)\n")
        // ...and moves, to where Linux chose, with it.
        + &format!(
            "1 mremap({A:#x}, 8192, 16384, MREMAP_MAYMOVE) = {:#x}\n",
            A + 0x40000
        );
    let got = run("", &calls).expect("replays");
    assert_eq!(
        got,
        [
            "7f0000002000-7f0000003000 r--p 00000000 00:00 0",
            "7f0000040000-7f0000044000 rw-p 00000000 00:00 0",
        ]
    );
}

#[test]
fn shared_anonymous_mappings_are_shmem_files_that_never_merge() {
    let shared = |at: u64| {
        format!(
            "1 mmap({at:#x}, 8192, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_FIXED|MAP_ANONYMOUS, -1, 0) = {at:#x}\n"
        )
    };
    let calls = shared(A)
        + &shared(A + 0x2000)
        + &format!("1 mprotect({:#x}, 4096, PROT_READ) = 0\n", A + 0x1000);
    let got = run("", &calls).expect("replays");
    assert_eq!(
        got,
        [
            "7f0000000000-7f0000001000 rw-s 00000000 00:01 0 /dev/zero (deleted)",
            "7f0000001000-7f0000002000 r--s 00001000 00:01 0 /dev/zero (deleted)",
            "7f0000002000-7f0000004000 rw-s 00000000 00:01 0 /dev/zero (deleted)",
        ]
    );
}
