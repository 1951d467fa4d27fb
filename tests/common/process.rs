//! The built binary as a process: started from config text, its log lines
//! collected as they come, signalled and waited for.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

use super::within;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_asyncgate");

pub(crate) fn write_config(text: &str) -> tempfile_path::TempConfig {
    tempfile_path::TempConfig::new(text)
}

/// A config file that removes itself, and the directory of its disk store.
pub(crate) mod tempfile_path {
    use std::path::PathBuf;

    use crate::common::{on_disk, TempDir};

    pub(crate) struct TempConfig(pub PathBuf, TempDir);

    impl TempConfig {
        pub(crate) fn new(text: &str) -> TempConfig {
            let store = TempDir::new();
            let path =
                std::env::temp_dir().join(format!("asyncgate-test-{}.toml", uuid::Uuid::new_v4()));
            std::fs::write(&path, on_disk(text, &store.0)).unwrap();
            TempConfig(path, store)
        }

        /// Replaces the file's text, its store where it was.
        pub(crate) fn rewrite(&self, text: &str) {
            std::fs::write(&self.0, on_disk(text, &self.1 .0)).unwrap();
        }
    }

    impl Drop for TempConfig {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The binary running, its log lines collected as they come.
pub(crate) struct Running {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    new_line: Arc<Notify>,
    _config: Option<tempfile_path::TempConfig>,
}

impl Running {
    /// The binary on `config_text`, listening on an ephemeral port.
    pub(crate) async fn start(config_text: &str) -> Running {
        Running::start_exact(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{config_text}"
        ))
        .await
    }

    /// The binary on `config_text` as it is.
    pub(crate) async fn start_exact(config_text: &str) -> Running {
        Running::start_with(config_text, &[]).await
    }

    /// The binary on `config_text` as it is, with more arguments.
    pub(crate) async fn start_with(config_text: &str, args: &[&str]) -> Running {
        let config = write_config(config_text);
        let mut command = Command::new(BIN);
        command
            .args(["--config", config.0.to_str().unwrap()])
            .args(args);
        Running::spawn(command, config)
    }

    /// `command` (the binary, or a wrapper that execs it) on `config`,
    /// its log collected.
    pub(crate) fn spawn(mut command: Command, config: tempfile_path::TempConfig) -> Running {
        let mut child = command
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut running = Running::attach(&mut child);
        running.child = Some(child);
        running._config = Some(config);
        running
    }

    /// Collects the log lines of a child started elsewhere.
    pub(crate) fn attach(child: &mut Child) -> Running {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let new_line = Arc::new(Notify::new());
        let mut reader = BufReader::new(child.stderr.take().unwrap()).lines();
        let (l, n) = (Arc::clone(&lines), Arc::clone(&new_line));
        tokio::spawn(async move {
            while let Ok(Some(line)) = reader.next_line().await {
                l.lock().unwrap().push(line);
                n.notify_waiters();
            }
        });
        Running {
            child: None,
            lines,
            new_line,
            _config: None,
        }
    }

    pub(crate) async fn wait_line(&self, needle: &str) -> String {
        self.wait_for(needle, |l| l.contains(needle)).await
    }

    /// The first log line `matches` accepts, waiting for it if need be.
    pub(crate) async fn wait_for(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        within(15, &format!("a log line with {what:?}"), async {
            loop {
                let notified = self.new_line.notified();
                if let Some(l) = self.lines.lock().unwrap().iter().find(|l| matches(l)) {
                    return l.clone();
                }
                notified.await;
            }
        })
        .await
    }

    /// The config file it was started with.
    pub(crate) fn config(&self) -> &tempfile_path::TempConfig {
        self._config.as_ref().expect("started from config text")
    }

    /// How many of the lines so far contain `needle`.
    pub(crate) fn count_lines(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub(crate) async fn addr(&self) -> String {
        self.listening("addr").await
    }

    pub(crate) async fn admin_addr(&self) -> String {
        self.listening("admin").await
    }

    /// A field of the line that says where it listens.
    async fn listening(&self, field: &str) -> String {
        let line = self.wait_line("listening").await;
        let key = format!(" {field}=");
        let at = line
            .find(&key)
            .unwrap_or_else(|| panic!("the listening line names {field}: {line}"))
            + key.len();
        line[at..].split_whitespace().next().unwrap().to_owned()
    }

    /// SIGKILL: as a crash would end it.
    pub(crate) fn kill(&mut self) {
        self.child.as_mut().unwrap().start_kill().unwrap();
    }

    pub(crate) fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`, …) with kill(1).
    pub(crate) fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id().unwrap()
    }

    /// The log lines so far that contain `needle`.
    pub(crate) fn lines_with(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    pub(crate) async fn exit_code(&mut self) -> i32 {
        within(
            30,
            "the gateway to exit",
            self.child.as_mut().unwrap().wait(),
        )
        .await
        .unwrap()
        .code()
        .unwrap_or(-1)
    }
}

/// Sends a signal by name to any process, with kill(1).
pub(crate) fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}
