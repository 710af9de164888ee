//! Crash-safe file replacement for the last-known-good copy of the customer document.
//!
//! The new content goes to a temporary file in the same directory, is fsynced, renamed
//! over the target and the directory is fsynced, so a crash at any point leaves either
//! the old file or the new one, never a torn mix. This must never panic and never touch
//! the target when any step before the rename fails.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Replace `path` with `data` atomically. On error the old file (if any) is intact and
/// the temporary file is removed; the error names the step and the path.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic_with(path, data, |f, d| f.write_all(d))
}

/// [`write_atomic`] with the write step supplied, so tests can make it fail midway.
fn write_atomic_with(
    path: &Path,
    data: &[u8],
    write: impl FnOnce(&mut File, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path names no file"))
        .map_err(|e| context(e, "cannot write", path))?;
    let dir = crate::config::base_dir_of(path);
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));

    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| context(e, "cannot create a temporary file", &tmp))?;
    let written = write(&mut file, data)
        .map_err(|e| context(e, "cannot write", &tmp))
        .and_then(|()| {
            file.sync_all()
                .map_err(|e| context(e, "cannot fsync", &tmp))
        });
    drop(file);
    if let Err(e) = written.and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| context(e, "cannot rename the temporary file to", path))
    }) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is only durable once the directory entry is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| context(e, "cannot fsync directory", dir))
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.contains(".tmp."))
            .collect()
    }

    #[test]
    fn creates_then_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("customers.yaml");
        write_atomic(&path, b"version: 1\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "version: 1\n");
        write_atomic(&path, b"version: 2\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "version: 2\n");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("customers.yaml");
        write_atomic(&path, b"version: 1\n").unwrap();
        let err = write_atomic_with(&path, b"version: 2\ncustomers: []\n", |f, d| {
            f.write_all(&d[..5])?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "version: 1\n");
        assert!(leftovers(dir.path()).is_empty(), "temporary file removed");
    }

    #[test]
    fn a_directory_that_is_a_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("plain-file");
        fs::write(&not_a_dir, "x").unwrap();
        let err = write_atomic(&not_a_dir.join("customers.yaml"), b"version: 1\n").unwrap_err();
        assert!(err.to_string().contains("plain-file"), "{err}");
        assert_eq!(fs::read_to_string(&not_a_dir).unwrap(), "x");
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("customers.yaml");
        assert!(write_atomic(&path, b"x").is_err());
        assert!(!path.exists());
    }

    #[test]
    fn a_target_that_cannot_be_replaced_keeps_it_and_cleans_up() {
        // A directory in the way makes the rename fail after the temp file was written.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("customers.yaml");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), "keep").unwrap();
        let err = write_atomic(&path, b"version: 1\n").unwrap_err();
        assert!(err.to_string().contains("rename"), "{err}");
        assert_eq!(fs::read_to_string(path.join("inside")).unwrap(), "keep");
        assert!(leftovers(dir.path()).is_empty());
    }
}
