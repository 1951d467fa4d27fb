//! The upstreams an operator paused, kept by an embedded store: in memory,
//! or in a file beside the disk store's database (one name per line,
//! replaced whole and made durable on each change), so that a pause
//! outlives a restart. Pauses are few and change by hand; a file is all
//! they need.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::StoreError;
use crate::sync::lock;

pub(crate) struct Pauses {
    /// Where they are kept; `None`: in memory only.
    file: Option<PathBuf>,
    paused: Arc<Mutex<BTreeSet<String>>>,
}

impl Pauses {
    pub(crate) fn in_memory() -> Pauses {
        Pauses {
            file: None,
            paused: Arc::default(),
        }
    }

    /// The pauses kept in `file`, none if it does not exist yet.
    pub(crate) fn open(file: PathBuf) -> std::io::Result<Pauses> {
        let paused = match std::fs::read_to_string(&file) {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(e),
        };
        Ok(Pauses {
            file: Some(file),
            paused: Arc::new(Mutex::new(paused)),
        })
    }

    pub(crate) fn list(&self) -> Vec<String> {
        lock(&self.paused).iter().cloned().collect()
    }

    /// Pauses or resumes `upstream`, durably before it returns.
    pub(crate) async fn set(&self, upstream: &str, paused: bool) -> Result<(), StoreError> {
        let names = {
            let mut set = lock(&self.paused);
            if paused {
                set.insert(upstream.to_owned());
            } else {
                set.remove(upstream);
            }
            set.iter().cloned().collect::<Vec<_>>()
        };
        let Some(file) = self.file.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || write_durably(&file, &names))
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?
            .map_err(|e| StoreError::Unavailable(Box::new(e)))
    }
}

/// Replaces `file` with `names` whole: a new file beside it, synced, then
/// renamed over it, and the directory synced, so a crash leaves the old
/// list or the new one.
fn write_durably(file: &std::path::Path, names: &[String]) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    let mut next = tempfile::NamedTempFile::new_in(dir)?;
    for name in names {
        writeln!(next, "{name}")?;
    }
    next.as_file().sync_all()?;
    next.persist(file).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pauses_outlive_a_reopening_of_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("paused");
        let pauses = Pauses::open(file.clone()).unwrap();
        assert!(pauses.list().is_empty());
        pauses.set("legacy", true).await.unwrap();
        pauses.set("reports", true).await.unwrap();
        pauses.set("legacy", false).await.unwrap();
        assert_eq!(Pauses::open(file).unwrap().list(), ["reports"]);
    }
}
