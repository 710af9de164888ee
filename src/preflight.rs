//! What `holdfast -t` checks of the machine, beyond the file itself: the directories
//! the node will write (the disk tier's, the control plane's `cache_file`'s) exist or
//! can be created, and take a file. Each error points at the key in the file, as every
//! other `-t` error does. Nothing is left behind on the disk.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use crate::config::{ConfigError, NodeConfig};

/// Check the directories `node` (loaded from `source`) will write. The lines to print
/// on success, or the first problem found.
pub fn check(source: &Path, node: &NodeConfig) -> Result<Vec<String>, ConfigError> {
    let mut notes = Vec::new();
    if let Some(disk) = &node.cache.disk {
        let note = disk_dir(&disk.path, disk.size).map_err(|e| {
            crate::config::error_at(
                source,
                &["cache", "disk", "path"],
                format!("cache.disk: {e}"),
            )
        })?;
        notes.push(note);
    }
    if let Some(cp) = &node.control_plane {
        writable_dir(crate::config::base_dir_of(&cp.cache_file)).map_err(|e| {
            crate::config::error_at(
                source,
                &["control_plane", "cache_file"],
                format!(
                    "control_plane.cache_file: {e}; the last good customer document could \
                     not be kept there"
                ),
            )
        })?;
        notes.push(format!(
            "control_plane.cache_file at {}",
            cp.cache_file.display()
        ));
    }
    Ok(notes)
}

/// Check that `path` can be the disk tier's directory and that `size` fits its
/// filesystem; a warning when less than `size` is free now.
fn disk_dir(path: &Path, size: u64) -> Result<String, String> {
    let existing = writable_dir(path)?;
    let stat = rustix::fs::statvfs(existing)
        .map_err(|e| format!("cannot stat {}: {e}", existing.display()))?;
    let total = stat.f_blocks.saturating_mul(stat.f_frsize);
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if size > total {
        return Err(format!(
            "cache.disk.size ({size} bytes) is larger than the whole filesystem of {} ({total} bytes); lower it",
            existing.display()
        ));
    }
    let mut note = format!("disk tier at {} ({size} bytes)", path.display());
    if size > free {
        note.push_str(&format!(
            "; warning: only {free} bytes are free there now, so the tier may fill the disk and stop writing"
        ));
    }
    Ok(note)
}

/// Check that the directory `path` exists and takes a file, or that its nearest
/// existing ancestor does (so that it can be created): that ancestor.
fn writable_dir(path: &Path) -> Result<&Path, String> {
    // A relative path's last ancestor is the empty path, which stands for `.`.
    let existing = path
        .ancestors()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .find(|p| p.exists())
        .ok_or_else(|| format!("no part of {} exists", path.display()))?;
    if !existing.is_dir() {
        return Err(format!(
            "{} is not a directory; point it at a directory",
            existing.display()
        ));
    }
    let probe = existing.join(format!(".holdfast-probe-{}", std::process::id()));
    File::create(&probe)
        .and_then(|mut f| f.write_all(b"holdfast"))
        .map_err(|e| {
            format!(
                "cannot write in {} ({e}); make it writable by the user holdfast runs as",
                existing.display()
            )
        })?;
    let _ = std::fs::remove_file(&probe);
    Ok(existing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_path_with_no_existing_part_is_checked_against_the_working_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let here = std::env::current_dir().expect("cwd");
        // Relative to the test's working directory, which exists and is writable.
        let rel = Path::new("no-such-dir-holdfast/cache");
        assert_eq!(writable_dir(rel), Ok(Path::new(".")));
        assert_eq!(
            crate::config::base_dir_of(Path::new("customers.yaml")),
            Path::new(".")
        );
        let file = dir.path().join("f");
        std::fs::write(&file, "x").expect("write");
        let err = writable_dir(&file.join("sub")).expect_err("a file is no directory");
        assert!(err.contains("is not a directory"), "{err}");
        assert_eq!(std::env::current_dir().expect("cwd"), here);
    }
}
