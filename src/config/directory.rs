//! Whether a directory can hold the disk store's files, checked when the
//! config is read so that a bad `path` is a config error, not a failure at
//! start-up.

use std::path::Path;

/// Whether the disk store can keep its files at `path`: a directory it can
/// write in, or one it can make. Checked by writing and removing a file.
pub(super) fn usable(path: &Path) -> Result<(), String> {
    let mut existing = path;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err(format!(
            "cannot be the store's directory: `{}` is not a directory",
            existing.display()
        ));
    }
    let probe = existing.join(format!(".asyncgate-probe-{:016x}", fastrand::u64(..)));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| format!("cannot be written in (`{}`): {e}", existing.display()))
}
