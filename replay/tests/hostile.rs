//! Hostile traces never crash a replay: random calls with random numbers end in a result or an
//! error, never a panic.

use mm_replay::{maps, replay, trace};
use proptest::prelude::*;

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        Just(0x7f00_0000_0000u64),
        (0u64..64).prop_map(|p| 0x7f00_0000_0000 + p * 4096),
        any::<u64>(),
        0u64..0x10_0000,
    ]
}

fn call() -> impl Strategy<Value = String> {
    let prot = prop::sample::select(vec![
        "PROT_NONE",
        "PROT_READ",
        "PROT_READ|PROT_WRITE",
        "PROT_READ|PROT_EXEC",
        "0xff",
    ]);
    let flags = prop::sample::select(vec![
        "MAP_PRIVATE|MAP_ANONYMOUS",
        "MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS",
        "MAP_SHARED|MAP_ANONYMOUS|MAP_NORESERVE",
        "MAP_PRIVATE",
        "MAP_SHARED|MAP_FIXED",
        "0",
    ]);
    let result = prop_oneof![
        number().prop_map(|n| format!("{n:#x}")),
        Just("-1 ENOMEM (Cannot allocate memory)".to_string()),
        Just("-1 EINVAL (Invalid argument)".to_string()),
    ];
    let advice = prop::sample::select(vec![
        "MADV_DONTNEED",
        "MADV_DONTFORK",
        "MADV_FREE",
        "MADV_REMOVE",
        "MADV_WIPEONFORK",
        "MADV_HUGEPAGE",
        "0x63",
    ]);
    let remap = prop::sample::select(vec![
        "0",
        "MREMAP_MAYMOVE",
        "MREMAP_DONTUNMAP|MREMAP_MAYMOVE",
    ]);
    (
        0usize..7,
        (number(), number(), number(), number()),
        (prot, flags, advice, remap),
        result,
    )
        .prop_map(
            |(kind, (a, b, c, d), (prot, flags, advice, remap), result)| match kind {
                0 => {
                    format!("1 mmap({a:#x}, {b}, {prot}, {flags}, 3</lib/x.so>, {c:#x}) = {result}")
                }
                1 => format!("1 munmap({a:#x}, {b}) = {result}"),
                2 => format!("1 mprotect({a:#x}, {b}, {prot}) = {result}"),
                3 => format!("1 brk({a:#x}) = {result}"),
                4 => format!("1 mremap({a:#x}, {b}, {c}, {remap}) = {result}"),
                5 => format!(
                    "1 mremap({a:#x}, {b}, {c}, MREMAP_MAYMOVE|MREMAP_FIXED, {d:#x}) = {result}"
                ),
                _ => format!("1 madvise({a:#x}, {b}, {advice}) = {result}"),
            },
        )
}

/// An anonymous mapping and a file mapping, for random calls to land on.
fn small_snapshot() -> Vec<maps::MapsLine> {
    maps::parse_maps(
        "7f0000000000-7f0000004000 rw-p 00000000 00:00 0\n\
         7f0000010000-7f0000014000 r--p 00000000 08:01 5 /lib/x.so\n",
    )
    .expect("parses")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_calls_end_in_a_result_or_an_error_never_a_panic(
        calls in prop::collection::vec(call(), 0..12)
    ) {
        let before = small_snapshot();
        let t = trace::parse_trace(&calls.join("\n")).expect("generated lines parse");
        prop_assert_eq!(t.events.len(), calls.len());
        if let Ok(out) = replay::replay(&before, &t, &[]) {
            // Whatever happened, the result is a well-formed, sorted maps listing.
            for w in out.maps.windows(2) {
                prop_assert!(w[0].end <= w[1].start, "{} / {}", w[0], w[1]);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_calls_cross_to_the_guest_unchanged_and_replay_there_as_on_the_host(
        calls in prop::collection::vec(call(), 0..12)
    ) {
        use mm_core::{mm::Mm, paging::CountingTlb, phys::SimRam, Kernel};
        use mm_replay::wire;
        let before = small_snapshot();
        let mut t = trace::parse_trace(&calls.join("\n")).expect("generated lines parse");
        t.skipped.clear();
        let input = wire::decode_input(&wire::encode_input(&before, &t, &before)).expect("decodes");
        prop_assert_eq!(&input.trace, &t);
        // The guest's replay (touching pages) ends as the host's does, and leaks nothing.
        let host = replay::replay(&before, &t, &before);
        let ram = SimRam::new(4096);
        let tlb = CountingTlb::default();
        let k = Kernel::new(&ram, &ram, ram.mem_map(), &tlb);
        let mm = Mm::new(&k, None).expect("an mm");
        let mut r = replay::Replayer::new(&k, mm, &before, replay::Options { touch: true });
        let guest = r.run(&input.before, &input.trace);
        r.finish();
        prop_assert_eq!(ram.frames_in_use(), 0);
        prop_assert_eq!(
            host.as_ref().map(|o| &o.maps).map_err(|e| e.to_string()),
            guest.as_ref().map(|o| &o.maps).map_err(|e| e.to_string())
        );
        prop_assert_eq!(wire::decode_result(&wire::encode_result(&guest)).expect("decodes"), guest);
    }
}

fn maps_line() -> impl Strategy<Value = (u64, u64, String)> {
    let path = prop::sample::select(vec!["", "[heap]", "[stack]", "[vdso]", "/lib/x.so", "/a b"]);
    (number(), 1u64..64, path).prop_map(|(start, pages, path)| {
        let start = start & !0xfff;
        (start, start.saturating_add(pages * 4096), path.to_string())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_snapshots_and_calls_end_in_a_result_or_an_error_never_a_panic(
        mut lines in prop::collection::vec(maps_line(), 0..8),
        calls in prop::collection::vec(call(), 0..8),
        perms in prop::sample::select(vec!["rw-p", "r--p", "r-xp", "---p", "rw-s"]),
    ) {
        lines.sort();
        let mut text = String::new();
        let mut last_end = 0;
        for (start, end, path) in lines {
            if start < last_end || end <= start || end % 4096 != 0 {
                continue;
            }
            let inode = if path.starts_with('/') { 5 } else { 0 };
            text += &format!("{start:x}-{end:x} {perms} 00000000 08:01 {inode} {path}\n");
            last_end = end;
        }
        let before = maps::parse_maps(&text).expect("generated snapshot parses");
        let t = trace::parse_trace(&calls.join("\n")).expect("generated lines parse");
        if let Ok(out) = replay::replay(&before, &t, &before) {
            prop_assert!(out.maps.windows(2).all(|w| w[0].end <= w[1].start));
        }
    }

    #[test]
    fn random_maps_text_never_panics_the_parser(lines in prop::collection::vec(".{0,90}", 0..6)) {
        let _ = maps::parse_maps(&lines.join("\n"));
    }
}
