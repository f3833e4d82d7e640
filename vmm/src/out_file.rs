//! Files the command line names for output (`--report`, `--trace-events`): checked before the run,
//! so a bad path is a one-line usage error instead of a result lost after a long run, and written
//! atomically (a temporary file in the same directory, then a rename), so a reader never sees half
//! a file and a failed write leaves the old one in place.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Why an output path cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutFileError {
    /// The path names no file (empty, or ends in `..`).
    #[error("not a file name")]
    NoFileName,
    /// The directory it would go in does not exist.
    #[error("directory {0} does not exist")]
    NoDirectory(PathBuf),
    /// What would be its directory is something else.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// The path is a directory.
    #[error("it is a directory")]
    IsADirectory,
    /// The directory exists but a file cannot be created in it.
    #[error("cannot create a file in {dir}: {source}")]
    NotWritable {
        /// The directory.
        dir: PathBuf,
        /// What creating the file said.
        source: io::Error,
    },
}

/// The directory `path` goes in (`.` for a bare file name) and the temporary file beside it that
/// the write goes through.
fn temp_beside(path: &Path) -> Result<(PathBuf, PathBuf), OutFileError> {
    let name = path.file_name().ok_or(OutFileError::NoFileName)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(format!(".{}.tmp", std::process::id()));
    let temp = dir.join(temp);
    Ok((dir, temp))
}

/// Checks that `path` can be written: its directory exists and takes a new file (created and
/// removed again, which answers for permissions, read-only mounts and ACLs alike), and the path
/// is not a directory.
pub fn check_writable(path: &Path) -> Result<(), OutFileError> {
    let (dir, temp) = temp_beside(path)?;
    match std::fs::metadata(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(OutFileError::NoDirectory(dir))
        }
        Ok(m) if !m.is_dir() => return Err(OutFileError::NotADirectory(dir)),
        // Anything else (permissions) shows when the file is created.
        _ => {}
    }
    if path.is_dir() {
        return Err(OutFileError::IsADirectory);
    }
    create(&temp).map_err(|source| OutFileError::NotWritable { dir, source })?;
    let _ = std::fs::remove_file(&temp);
    Ok(())
}

fn create(temp: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(temp)
}

/// Writes `path` through `write`, atomically: into a temporary file beside it, renamed over
/// `path` once complete; on an error the temporary file is removed and `path` is untouched. No
/// fsync: the rename keeps readers from ever seeing part of the file, which is what the callers
/// need, and campaigns write one report per run.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> io::Result<()> {
    let (_, temp) = temp_beside(path).map_err(io::Error::other)?;
    let written = create(&temp).and_then(|file| {
        let mut out = BufWriter::new(file);
        write(&mut out)?;
        out.into_inner().map_err(io::IntoInnerError::into_error)?;
        std::fs::rename(&temp, path)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Writes `text` to `path` atomically.
pub fn write_text(path: &Path, text: &str) -> io::Result<()> {
    write_atomic(path, |out| out.write_all(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the temp dir, unique to this test.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmm-out-file-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_path_in_a_missing_directory_is_refused_naming_the_directory() {
        let dir = scratch("missing");
        let err = check_writable(&dir.join("nope/out.json")).unwrap_err();
        assert!(matches!(err, OutFileError::NoDirectory(ref d) if d == &dir.join("nope")));
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn a_directory_or_a_file_as_directory_is_refused() {
        let dir = scratch("kinds");
        assert!(matches!(
            check_writable(&dir),
            Err(OutFileError::IsADirectory)
        ));
        std::fs::write(dir.join("plain"), "x").unwrap();
        assert!(matches!(
            check_writable(&dir.join("plain/out.json")),
            Err(OutFileError::NotADirectory(_))
        ));
        assert!(matches!(
            check_writable(Path::new("")),
            Err(OutFileError::NoFileName)
        ));
    }

    #[test]
    fn a_writable_path_passes_the_check_and_leaves_nothing_behind() {
        let dir = scratch("ok");
        check_writable(&dir.join("out.json")).unwrap();
        assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
    }

    #[test]
    fn a_write_replaces_the_file_whole_and_a_failed_one_leaves_it_alone() {
        let dir = scratch("atomic");
        let path = dir.join("out.json");
        write_text(&path, "first\n").unwrap();
        write_text(&path, "second\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second\n");
        let failed = write_atomic(&path, |out| {
            out.write_all(b"half")?;
            Err(io::Error::other("the writer gave up"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second\n");
        assert_eq!(entries(&dir), ["out.json"], "no temporary file is left");
    }
}
