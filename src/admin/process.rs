//! The standard `process_*` series, as Prometheus's own clients name them,
//! read from `/proc/self` at scrape time. Only Linux has them; elsewhere
//! the series are left out rather than made up.

/// What `/proc` says of this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Process {
    pub(super) cpu_seconds: f64,
    pub(super) resident_bytes: u64,
    pub(super) virtual_bytes: u64,
    pub(super) open_fds: u64,
    pub(super) max_fds: Option<u64>,
    /// Seconds since the Unix epoch.
    pub(super) start_time: f64,
}

/// Clock ticks in `/proc/*/stat`: `USER_HZ`, which the kernel fixes at 100
/// for userspace on every architecture Rust's std supports on Linux
/// (`sysconf(_SC_CLK_TCK)` would need `unsafe`, which the crate forbids).
const TICKS_PER_SECOND: f64 = 100.0;

/// This process, or `None` where `/proc/self` cannot be read.
pub(super) fn sample() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    parse(&stat, &status, &boot, &limits, open_fds)
}

fn parse(stat: &str, status: &str, boot: &str, limits: &str, open_fds: u64) -> Option<Process> {
    // The command name is in parentheses and may hold spaces or `)`: the
    // fields that follow start after the last `)`, with field 3 (state).
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = field(14)? + field(15)?;
    let since_boot = field(22)? as f64 / TICKS_PER_SECOND;
    let btime: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        Some(
            line.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()?
                * 1024,
        )
    };
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok());
    Some(Process {
        cpu_seconds: ticks as f64 / TICKS_PER_SECOND,
        resident_bytes: kib("VmRSS:")?,
        virtual_bytes: kib("VmSize:")?,
        open_fds,
        max_fds,
        start_time: btime as f64 + since_boot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_by_field_even_with_odd_command_names() {
        let stat = "4242 (asyn gate) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 130 0 0 20 0 9 0 123456 1000000 2000 18446744073709551615";
        let status = "Name:\tasyncgate\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\n";
        let boot = "cpu  1 2 3\nbtime 1765000000\nprocesses 9\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        let p = parse(stat, status, boot, limits, 12).unwrap();
        assert_eq!(p.cpu_seconds, 3.8);
        assert_eq!(p.resident_bytes, 10 * 1024 * 1024);
        assert_eq!(p.virtual_bytes, 200 * 1024 * 1024);
        assert_eq!((p.open_fds, p.max_fds), (12, Some(1024)));
        assert_eq!(p.start_time, 1_765_000_000.0 + 1234.56);
    }

    #[test]
    fn this_process_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let p = sample().expect("/proc/self reads on Linux");
            assert!(p.resident_bytes > 0 && p.open_fds > 0);
            let now = std::time::UNIX_EPOCH.elapsed().unwrap().as_secs_f64();
            assert!(p.start_time <= now + 1.0 && p.start_time > now - 86400.0 * 365.0);
        }
    }
}
