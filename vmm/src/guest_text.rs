//! Guest-chosen text as the VMM may print it among its own lines.
//!
//! Text from the guest (console lines, an abort's message and file, a lock class, a finding) is
//! hostile input: a newline in it could forge a line that looks like the VMM's ("vmm: guest passed
//! ..."), and an escape sequence would reach the user's terminal. Every such text goes through
//! [`printable`] where it enters the VMM: UTF-8 made valid, control characters shown escaped.

/// `bytes` with invalid UTF-8 replaced and every control character but tab escaped (`\n`,
/// `\u{1b}`).
pub fn printable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for c in String::from_utf8_lossy(bytes).chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_and_escapes_are_shown_not_obeyed() {
        let s = printable(b"oops\nvmm: guest passed\x1b[2J\x07 \xff\tend");
        assert_eq!(s, "oops\\nvmm: guest passed\\u{1b}[2J\\u{7} \u{fffd}\tend");
        assert!(!s.contains('\n') && !s.contains('\x1b'));
        assert_eq!(
            printable("src/mm/unmap.rs: ok".as_bytes()),
            "src/mm/unmap.rs: ok"
        );
    }
}
