use super::*;
use proptest::prelude::*;

fn one(line: &str) -> Event {
    let t = parse_trace(line).expect("parses");
    assert_eq!(t.events.len(), 1, "{t:?}");
    t.events[0].clone()
}

#[test]
fn an_anonymous_mmap_with_a_pid_column_parses_with_its_flags_and_result() {
    let e = one("1234  mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000001000");
    assert_eq!(e.pid, Some(1234));
    assert_eq!(
        e.call,
        Call::Mmap {
            addr: 0,
            len: 8192,
            prot: 3,
            flags: 0x22,
            fd: Fd { fd: -1, path: None },
            offset: 0
        }
    );
    assert_eq!(e.outcome, Outcome::Ok(0x7f00_0000_1000));
}

#[test]
fn a_file_mmap_names_its_file_through_the_y_descriptor() {
    let e = one("mmap(0x7f95b58e1000, 1400832, PROT_READ|PROT_EXEC, MAP_PRIVATE|MAP_FIXED|MAP_DENYWRITE, 3</usr/lib/x86_64-linux-gnu/libc.so.6>, 0x26000) = 0x7f95b58e1000");
    assert_eq!(e.pid, None);
    let Call::Mmap {
        fd, offset, flags, ..
    } = e.call
    else {
        panic!("not an mmap")
    };
    assert_eq!(fd.fd, 3);
    assert_eq!(
        fd.path.as_deref(),
        Some("/usr/lib/x86_64-linux-gnu/libc.so.6")
    );
    assert_eq!((offset, flags), (0x26000, 0x812));
}

#[test]
fn a_path_with_a_comma_stays_one_argument() {
    let e = one("mmap(NULL, 4096, PROT_READ, MAP_SHARED, 5</tmp/a, b>, 0) = 0x1000");
    let Call::Mmap { fd, .. } = e.call else {
        panic!("not an mmap")
    };
    assert_eq!(fd.path.as_deref(), Some("/tmp/a, b"));
}

#[test]
fn munmap_mprotect_brk_mremap_and_madvise_parse() {
    let t = parse_trace(
        "7 munmap(0x7f0000000000, 4096) = 0\n\
         [pid 8] mprotect(0x7f0000000000, 4096, PROT_NONE) = 0\n\
         7 brk(NULL)                         = 0x557256e7a000\n\
         7 mremap(0x7f0000000000, 4096, 8192, MREMAP_MAYMOVE|MREMAP_FIXED, 0x7f0000100000) = 0x7f0000100000\n\
         7 madvise(0x7f0000000000, 4096, MADV_DONTNEED) = 0\n",
    )
    .expect("parses");
    assert_eq!(t.events.len(), 5);
    assert_eq!(t.events[1].pid, Some(8));
    assert_eq!(t.events[2].call, Call::Brk { addr: 0 });
    assert!(matches!(
        t.events[3].call,
        Call::Mremap {
            flags: 3,
            new_addr: Some(0x7f00_0010_0000),
            ..
        }
    ));
    assert!(matches!(&t.events[4].call, Call::Madvise { advice, .. } if advice == "MADV_DONTNEED"));
}

#[test]
fn timestamps_after_the_pid_are_skipped() {
    let t = parse_trace(
        "9 12:34:56.789012 munmap(0x1000, 4096) = 0\n\
         1700000000.123456 munmap(0x2000, 4096) = 0\n",
    )
    .expect("parses");
    assert_eq!(t.events.len(), 2);
    assert_eq!(t.events[0].pid, Some(9));
    assert_eq!(t.events[1].pid, None);
    assert_eq!(
        t.events[1].call,
        Call::Munmap {
            addr: 0x2000,
            len: 4096
        }
    );
}

#[test]
fn a_failed_call_keeps_its_errno_name() {
    let e = one("1 mmap(NULL, 1099511627776000, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = -1 ENOMEM (Cannot allocate memory)");
    assert_eq!(e.outcome, Outcome::Err("ENOMEM".into()));
}

#[test]
fn unfinished_and_resumed_halves_join_per_thread() {
    let t = parse_trace(
        "10 mmap(NULL, 4096, PROT_READ, <unfinished ...>\n\
         11 munmap(0x7f0000000000, 4096 <unfinished ...>\n\
         10 <... mmap resumed>MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000005000\n\
         11 <... munmap resumed>) = 0\n",
    )
    .expect("parses");
    assert_eq!(t.events.len(), 2);
    // The munmap began before the mmap, which let the kernel choose, ended: it comes first.
    assert_eq!(
        t.events[0].call,
        Call::Munmap {
            addr: 0x7f00_0000_0000,
            len: 4096
        }
    );
    assert_eq!((t.events[1].pid, t.events[1].line), (Some(10), 3));
    assert!(matches!(
        t.events[1].call,
        Call::Mmap {
            len: 4096,
            flags: 0x22,
            ..
        }
    ));
}

#[test]
fn exit_and_signal_lines_are_skipped_and_unknown_calls_counted() {
    let t = parse_trace(
        "5 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED} ---\n\
         5 mincore(0x7f0000000000, 4096, [1]) = 0\n\
         5 mincore(0x7f0000000000, 4096, [1]) = 0\n\
         5 +++ exited with 0 +++\n",
    )
    .expect("parses");
    assert!(t.events.is_empty());
    assert_eq!(t.skipped.get("mincore"), Some(&2));
}

#[test]
fn the_lock_calls_pkey_mprotect_and_msync_are_parsed() {
    let t = parse_trace(
        "5 mlock(0x7f0000000000, 4096) = 0\n\
         5 mlock2(0x7f0000000000, 4096, MLOCK_ONFAULT) = 0\n\
         5 munlock(0x7f0000000000, 8192) = -1 ENOMEM (Cannot allocate memory)\n\
         5 mlockall(MCL_CURRENT|MCL_FUTURE) = 0\n\
         5 munlockall() = 0\n\
         5 pkey_mprotect(0x7f0000000000, 4096, PROT_READ, 0) = -1 EINVAL (Invalid argument)\n\
         5 msync(0x7f0000000000, 4096, MS_ASYNC|MS_INVALIDATE) = 0\n",
    )
    .expect("parses");
    let calls: Vec<&Call> = t.events.iter().map(|e| &e.call).collect();
    let a = 0x7f00_0000_0000;
    assert_eq!(
        calls[1],
        &Call::Mlock {
            addr: a,
            len: 4096,
            flags: 1
        }
    );
    assert_eq!(calls[3], &Call::Mlockall { flags: 3 });
    assert_eq!(calls[4], &Call::Munlockall);
    assert_eq!(
        calls[5],
        &Call::PkeyMprotect {
            addr: a,
            len: 4096,
            prot: 1,
            pkey: 0
        }
    );
    assert_eq!(
        calls[6],
        &Call::Msync {
            addr: a,
            len: 4096,
            flags: 3
        }
    );
    assert_eq!(t.events[2].outcome, Outcome::Err("ENOMEM".into()));
}

#[test]
fn an_interrupted_call_takes_its_place_where_it_started() {
    // Thread 7's munmap entered the kernel first: thread 8's mmap, which reuses its range,
    // comes after it.
    let t = parse_trace(
        "7 munmap(0x7f0000000000, 4096 <unfinished ...>\n\
         8 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000\n\
         7 <... munmap resumed>) = 0\n",
    )
    .expect("parses");
    assert!(matches!(t.events[0].call, Call::Munmap { .. }));
    assert_eq!(t.events[0].line, 3, "the line is where the call ended");
    assert!(matches!(t.events[1].call, Call::Mmap { .. }));
}

#[test]
fn an_interrupted_mmap_the_kernel_placed_takes_its_place_where_it_ended() {
    // Thread 8's mmap was running when thread 7 mapped and unmapped the range it then got: it
    // comes after both.
    let t = parse_trace(
        "8 mmap(NULL, 8192, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0 <unfinished ...>\n\
         7 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000001000\n\
         7 munmap(0x7f0000001000, 4096) = 0\n\
         8 <... mmap resumed>) = 0x7f0000000000\n",
    )
    .expect("parses");
    let pids: Vec<_> = t.events.iter().map(|e| e.pid).collect();
    assert_eq!(pids, [Some(7), Some(7), Some(8)]);
    assert_eq!((t.events[2].start, t.events[2].line), (1, 4));
}

#[test]
fn a_malformed_line_is_an_error_naming_its_line() {
    let text = "1 munmap(0x1000, 4096) = 0\n1 munmap(0x1000 4096\n";
    assert_eq!(
        parse_trace(text).map_err(|TraceError::Malformed { line, .. }| line),
        Err(2)
    );
    let huge = "munmap(0x1000000000000000000000, 4096) = 0";
    assert!(parse_trace(huge).is_err());
    let resumed_alone = "1 <... mmap resumed>) = 0";
    assert!(parse_trace(resumed_alone).is_err());
    assert!(parse_trace("mmap(NULL, 1, PROT_BOGUS, MAP_PRIVATE, -1, 0) = 0").is_err());
}

proptest! {
    #[test]
    fn random_lines_never_panic_the_parser(lines in proptest::collection::vec(".{0,80}", 0..8)) {
        let _ = parse_trace(&lines.join("\n"));
    }

    #[test]
    fn random_arguments_to_known_calls_never_panic_the_parser(
        name in prop::sample::select(vec!["mmap", "munmap", "mprotect", "brk", "mremap", "madvise", "<... mmap resumed>"]),
        args in "[-0-9a-fx|,<>() A-Z_/]{0,60}",
        result in "[-0-9a-fxA-Z ()?]{0,20}",
    ) {
        let line = format!("42 {name}({args}) = {result}");
        let _ = parse_trace(&line);
    }
}
