//! Whether a directory can hold the disk store's files, checked when the
//! config is read so that a bad `path` is a config error, not a failure at
//! start-up.

use std::path::Path;

/// The database file of the builds before the store moved to fjall.
const FORMER_DATABASE: &str = "jobs.redb";

/// Whether the disk store can keep its files at `path`: a directory it can
/// write in, or one it can make, and not one whose jobs an earlier build
/// kept in a database this one cannot read (starting afresh beside it
/// would silently drop them). Checked by writing and removing a file.
pub(super) fn usable(path: &Path) -> Result<(), String> {
    if path.join(FORMER_DATABASE).exists() {
        return Err(format!(
            "holds the jobs of an earlier asyncgate in `{FORMER_DATABASE}`, which this \
             version cannot read: let that version finish them, or move the file away"
        ));
    }
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
