//! Files the command line names for input (`--kernel`, `vmm replay`'s `--maps`, `--trace` and
//! `--compare`, the parts of `campaign merge`): checked from their metadata before a byte is read,
//! then read through a bound, so `/dev/zero`, a FIFO, a directory or a 2 GiB file is a one-line
//! usage error rather than the VMM's memory running out.
//!
//! The protocol: `stat` the path and refuse anything but a regular file within the limit; open it
//! without blocking (a FIFO swapped in after the `stat` cannot stall the open) and check the open
//! file again; then read at most `limit + 1` bytes, so a file that grows in between is still
//! caught, having cost no more than the limit.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why an input file was refused.
#[derive(Debug, thiserror::Error)]
pub enum InFileError {
    /// It cannot be found, opened or read.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// It is a directory, a device, a FIFO or a socket.
    #[error("{0}, not a regular file")]
    NotAFile(&'static str),
    /// Its metadata says it is larger than the limit.
    #[error("{size} bytes, more than the {} allowed", mib(*limit))]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// It grew past the limit between the check and the read.
    #[error("it grew past the {} allowed while being read", mib(*limit))]
    Grew {
        /// The limit.
        limit: u64,
    },
    /// It is not text.
    #[error("not UTF-8 text")]
    NotText,
}

/// `bytes` in MiB, as the limits are whole MiB.
fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

/// What a file that is not regular is, for the message.
fn kind(metadata: &Metadata) -> Option<&'static str> {
    let t = metadata.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    }
}

/// Refuses `metadata` unless it is a regular file of at most `limit` bytes.
fn check(metadata: &Metadata, limit: u64) -> Result<(), InFileError> {
    if let Some(kind) = kind(metadata) {
        return Err(InFileError::NotAFile(kind));
    }
    if metadata.len() > limit {
        return Err(InFileError::TooLarge {
            size: metadata.len(),
            limit,
        });
    }
    Ok(())
}

/// Reads the regular file at `path`, of at most `limit` bytes, without reading more than
/// `limit + 1` whatever the file turns out to be.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, InFileError> {
    check(&std::fs::metadata(path)?, limit)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let metadata = file.metadata()?;
    check(&metadata, limit)?;
    // At most `limit` (checked above), so the capacity is bounded too.
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    read_at_most(file, limit, &mut bytes)?;
    Ok(bytes)
}

/// Reads `file` into `bytes`, refusing it once it yields more than `limit` bytes.
fn read_at_most(file: File, limit: u64, bytes: &mut Vec<u8>) -> Result<(), InFileError> {
    file.take(limit.saturating_add(1)).read_to_end(bytes)?;
    if bytes.len() as u64 > limit {
        return Err(InFileError::Grew { limit });
    }
    Ok(())
}

/// [`read_bounded`], as UTF-8 text.
pub fn read_text(path: &Path, limit: u64) -> Result<String, InFileError> {
    String::from_utf8(read_bounded(path, limit)?).map_err(|_| InFileError::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    /// A fresh directory under the temp dir, unique to this test.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmm-in-file-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_file_within_the_limit_is_read_whole() {
        let path = scratch("ok").join("in.txt");
        std::fs::write(&path, "four").unwrap();
        assert_eq!(read_text(&path, 4).unwrap(), "four");
    }

    #[test]
    fn a_file_over_the_limit_is_refused_from_its_size_without_reading_it() {
        let path = scratch("large").join("sparse");
        // Sparse: 2 GiB that cost no disk, and reading them would cost 2 GiB of memory.
        File::create(&path).unwrap().set_len(2 << 30).unwrap();
        let err = read_bounded(&path, 64 << 20).unwrap_err();
        assert!(
            matches!(err, InFileError::TooLarge { size, limit } if size == 2 << 30 && limit == 64 << 20),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "2147483648 bytes, more than the 64 MiB allowed"
        );
    }

    #[test]
    fn directories_devices_and_fifos_are_refused_before_they_are_opened() {
        let dir = scratch("kinds");
        let err = read_bounded(&dir, 1 << 20).unwrap_err();
        assert_eq!(err.to_string(), "a directory, not a regular file");
        let err = read_bounded(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(err.to_string(), "a character device, not a regular file");
        // Opening a FIFO with no writer would block: the check must come first.
        let fifo = dir.join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status();
        if status.is_ok_and(|s| s.success()) {
            let err = read_bounded(&fifo, 1 << 20).unwrap_err();
            assert_eq!(err.to_string(), "a FIFO, not a regular file");
        }
        assert!(matches!(
            read_bounded(&dir.join("missing"), 1),
            Err(InFileError::Io(e)) if e.kind() == io::ErrorKind::NotFound
        ));
    }

    #[test]
    fn a_file_that_grows_past_the_limit_while_read_costs_no_more_than_the_limit() {
        let path = scratch("grows").join("in");
        let mut file = File::create(&path).unwrap();
        file.write_all(&[7; 100]).unwrap();
        // As if the file grew after the size check: the read sees all 100 bytes.
        let mut bytes = Vec::new();
        let err = read_at_most(File::open(&path).unwrap(), 10, &mut bytes).unwrap_err();
        assert!(matches!(err, InFileError::Grew { limit: 10 }), "{err}");
        assert_eq!(bytes.len(), 11, "read one byte past the limit, no more");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_not_text() {
        let path = scratch("binary").join("in");
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(matches!(read_text(&path, 2), Err(InFileError::NotText)));
    }
}
