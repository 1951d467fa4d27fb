//! Names the build for `asyncgate --version`: the commit it was built from
//! (`ASYNCGATE_COMMIT` when set, as an image build without `.git` passes
//! it; else git's; else "unknown") and the features it was built with.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ASYNCGATE_COMMIT");
    // Where git keeps HEAD and the branches: `.git/` in a clone, but in a
    // worktree HEAD is the worktree's own and the refs are the clone's.
    for (dir, names) in git_dirs() {
        for name in names {
            let watched = Path::new(&dir).join(name);
            if watched.exists() {
                println!("cargo:rerun-if-changed={}", watched.display());
            }
        }
    }
    let commit = std::env::var("ASYNCGATE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(key, _)| key.strip_prefix("CARGO_FEATURE_").map(str::to_owned))
        .map(|f| f.to_lowercase().replace('_', "-"))
        .filter(|f| f != "default")
        .collect();
    features.sort();
    let features = if features.is_empty() {
        "none".to_owned()
    } else {
        features.join(",")
    };
    println!("cargo:rustc-env=ASYNCGATE_COMMIT={commit}");
    println!("cargo:rustc-env=ASYNCGATE_FEATURES={features}");
}

/// The worktree's git directory (for HEAD) and the common one (for the
/// refs); none outside a git checkout.
fn git_dirs() -> Vec<(String, &'static [&'static str])> {
    let Ok(out) = Command::new("git")
        .args(["rev-parse", "--git-dir", "--git-common-dir"])
        .output()
    else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().map(str::to_owned);
    match (lines.next(), lines.next()) {
        (Some(own), Some(common)) if out.status.success() => vec![
            (own, &["HEAD"][..]),
            (common, &["refs/heads", "packed-refs"][..]),
        ],
        _ => Vec::new(),
    }
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}
