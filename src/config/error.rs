//! A config error that names the file, the line and the key.

use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {key}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// An error about the text at `span` of `src`; the key is read back from
    /// the source so every error names it the same way, whoever raised it.
    pub(crate) fn at(
        path: &Path,
        src: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Self {
        let (line, key) = locate(src, span.start);
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            key,
            message: message.into(),
        }
    }
}

/// The 1-based line of `offset` and the dotted key path of what stands there:
/// `server.listen`, `upstreams.legacy.timeout`, `routes[1].path`.
fn locate(src: &str, offset: usize) -> (usize, String) {
    let offset = offset.min(src.len());
    let line_no = src[..offset].matches('\n').count() + 1;
    let mut table = String::new();
    let mut array_counts: std::collections::HashMap<String, usize> = Default::default();
    let mut this_line = "";
    for line in src.lines().take(line_no) {
        this_line = line;
        let t = line.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_owned();
            let count = array_counts.entry(name.clone()).or_default();
            table = format!("{name}[{count}]");
            *count += 1;
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = name.trim().to_owned();
        }
    }
    let t = this_line.trim();
    let key = match t.split_once('=') {
        Some((k, _)) if !t.starts_with('[') => {
            let k = k.trim().trim_matches('"');
            if table.is_empty() {
                k.to_owned()
            } else {
                format!("{table}.{k}")
            }
        }
        _ if table.is_empty() => "(top level)".to_owned(),
        _ => table,
    };
    (line_no, key)
}

#[cfg(test)]
mod tests {
    use super::locate;

    const SRC: &str = "[server]\nlisten = \"x\"\n\n[[routes]]\nname = \"a\"\n[[routes]]\npath = \"/b\"\n[upstreams.legacy]\nurl = 1\n";

    #[test]
    fn names_plain_table_key() {
        let at = SRC.find("\"x\"").unwrap();
        assert_eq!(locate(SRC, at), (2, "server.listen".into()));
    }

    #[test]
    fn counts_array_tables_from_zero() {
        let at = SRC.find("\"/b\"").unwrap();
        assert_eq!(locate(SRC, at), (7, "routes[1].path".into()));
    }

    #[test]
    fn names_dotted_tables() {
        let at = SRC.find("url").unwrap();
        assert_eq!(locate(SRC, at), (9, "upstreams.legacy.url".into()));
    }

    #[test]
    fn header_line_names_the_table() {
        let at = SRC.find("[upstreams").unwrap();
        assert_eq!(locate(SRC, at), (8, "upstreams.legacy".into()));
    }
}
