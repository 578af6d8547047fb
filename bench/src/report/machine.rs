//! The machine a run measured on, as the report's header and JSON give it.

use std::path::Path;

use serde::Serialize;

/// Where the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub memory_gib: Option<u64>,
    pub date: String,
    /// `/proc/loadavg`'s 1, 5 and 15 minute figures when the run began: other work on the
    /// machine (builds, other benchmarks) shows up in every figure.
    pub load_average: String,
    /// `git describe` of the workspace the bench was built from.
    pub commit: String,
}

impl Machine {
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(
                || "unknown CPU".to_owned(),
                |(_, name)| name.trim().to_owned(),
            );
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_gib = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| (kib + (1 << 19)) >> 20);
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            cpu,
            memory_gib,
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            load_average: load_average(),
            commit: git_describe(),
        }
    }
}

/// The 1, 5 and 15 minute load averages, e.g. `0.52 0.40 0.31`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn git_describe() -> String {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::process::Command::new("git")
        .arg("-C")
        .arg(workspace)
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |output| String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        )
}
