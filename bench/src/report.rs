//! The results: the machine they were measured on, one row per measurement, notes (ratios,
//! sanity counts, failures); printed as an aligned table and written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use launcher::Failover;

pub use crate::cpu::CpuCost;
use crate::load::Stats;
pub use crate::sections::FaultFigures;
pub use crate::sections::OverloadFigures;
use crate::sections::{Scale, Section};

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

/// How the run was configured.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub quick: bool,
    pub phase_seconds: f64,
    pub rows: i64,
    pub stress_clients: usize,
    /// `--ha`: the sections after `checkout` ran on a second system with Patroni clusters.
    pub ha: bool,
    pub sections: Vec<&'static str>,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub section: &'static str,
    pub measurement: String,
    pub clients: Option<usize>,
    /// Requests, transactions or rows.
    pub count: Option<u64>,
    pub seconds: f64,
    pub per_second: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub non_2xx: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub non_2xx_by_status: BTreeMap<u16, u64>,
    /// No answer at all (connection errors, timeouts, database errors).
    pub failed: Option<u64>,
}

impl Row {
    /// A single timed step (a `batch_init`, a set-up phase).
    pub fn timing(
        section: Section,
        measurement: String,
        rows: Option<u64>,
        took: Duration,
    ) -> Self {
        Row {
            section: section.name(),
            measurement,
            clients: None,
            count: rows,
            seconds: took.as_secs_f64(),
            per_second: None,
            p50_ms: None,
            p99_ms: None,
            non_2xx: None,
            non_2xx_by_status: BTreeMap::new(),
            failed: None,
        }
    }

    /// A load run.
    pub fn load(section: Section, measurement: String, clients: usize, stats: &Stats) -> Self {
        let millis = |fraction| stats.percentile(fraction).map(|d| d.as_secs_f64() * 1e3);
        Row {
            section: section.name(),
            measurement,
            clients: Some(clients),
            count: Some(stats.count()),
            seconds: stats.elapsed.as_secs_f64(),
            per_second: Some(stats.per_second()),
            p50_ms: millis(0.50),
            p99_ms: millis(0.99),
            non_2xx: Some(stats.rejected_total()),
            non_2xx_by_status: stats.rejected.clone(),
            failed: Some(stats.failed + stats.timed_out),
        }
    }
}

/// Fresh checkouts at one concurrency on the system with Patroni clusters against the same on
/// the system with one server per database.
#[derive(Debug, Clone, Serialize)]
pub struct HaRatio {
    pub clients: usize,
    pub single_per_second: Option<f64>,
    pub ha_per_second: Option<f64>,
    /// HA/single checkouts per second.
    pub ratio: Option<f64>,
    pub single_p50_ms: Option<f64>,
    pub ha_p50_ms: Option<f64>,
    pub single_p99_ms: Option<f64>,
    pub ha_p99_ms: Option<f64>,
}

impl HaRatio {
    pub fn new(clients: usize, single: &Row, ha: &Row) -> Self {
        let ratio = match (ha.per_second, single.per_second) {
            (Some(ha), Some(single)) if single > 0.0 => Some(ha / single),
            _ => None,
        };
        HaRatio {
            clients,
            single_per_second: single.per_second,
            ha_per_second: ha.per_second,
            ratio,
            single_p50_ms: single.p50_ms,
            ha_p50_ms: ha.p50_ms,
            single_p99_ms: single.p99_ms,
            ha_p99_ms: ha.p99_ms,
        }
    }

    /// E.g. `ratio HA/single at 16 clients: 0.712 (412 vs 579 checkouts/s; p50 30.1 vs
    /// 21.0 ms, p99 95.2 vs 60.3 ms)`.
    pub fn note(&self) -> String {
        let rate = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"));
        let millis = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), format_millis);
        format!(
            "ratio HA/single at {} clients: {} ({} vs {} checkouts/s; p50 {} vs {} ms, \
             p99 {} vs {} ms)",
            self.clients,
            self.ratio
                .map_or_else(|| "n/a".to_owned(), |ratio| format!("{ratio:.3}")),
            rate(self.ha_per_second),
            rate(self.single_per_second),
            millis(self.ha_p50_ms),
            millis(self.single_p50_ms),
            millis(self.ha_p99_ms),
            millis(self.single_p99_ms),
        )
    }
}

/// One database's failover, from [`launcher::System::failover`].
#[derive(Debug, Clone, Serialize)]
pub struct FailoverFigures {
    pub database: &'static str,
    pub killed: String,
    pub new_primary: String,
    /// From the SIGKILL of the primary to the first successful write.
    pub write_unavailable_seconds: f64,
    /// From the SIGKILL until the killed node, started again, streams from the new primary.
    pub rejoined_after_seconds: f64,
}

impl FailoverFigures {
    pub fn new(database: &'static str, failover: &Failover) -> Self {
        FailoverFigures {
            database,
            killed: failover.killed.clone(),
            new_primary: failover.new_primary.clone(),
            write_unavailable_seconds: failover.write_unavailable.as_secs_f64(),
            rejoined_after_seconds: failover.rejoined_after.as_secs_f64(),
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{}: {} killed, {} primary; writes unavailable {:.2} s, {} streaming again after \
             {:.2} s",
            self.database,
            self.killed,
            self.new_primary,
            self.write_unavailable_seconds,
            self.killed,
            self.rejoined_after_seconds
        )
    }
}

/// What `--ha` measured, also in the rows and notes; here for readers of the JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HaFigures {
    pub checkout: Vec<HaRatio>,
    pub failovers: Vec<FailoverFigures>,
}

impl HaFigures {
    fn is_empty(&self) -> bool {
        self.checkout.is_empty() && self.failovers.is_empty()
    }
}

/// A section that did not complete, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub section: &'static str,
    pub error: String,
}

/// Everything measured in one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    pub failures: Vec<Failure>,
    #[serde(skip_serializing_if = "HaFigures::is_empty")]
    pub ha: HaFigures,
    /// The `faults` section: throughput around each kill.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultFigures>,
    /// CPU milliseconds per fresh checkout by process kind, per concurrency.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpu: Vec<CpuCost>,
    /// The `overload` section: statuses by run, `find` latency beside it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overload: Vec<OverloadFigures>,
}

impl Report {
    pub fn new(
        machine: Machine,
        scale: &Scale,
        sections: &[Section],
        stress_clients: usize,
        ha: bool,
    ) -> Self {
        Report {
            machine,
            settings: Settings {
                quick: scale.quick,
                phase_seconds: scale.duration.as_secs_f64(),
                rows: scale.rows,
                stress_clients,
                ha,
                sections: sections.iter().map(|section| section.name()).collect(),
            },
            rows: Vec::new(),
            notes: Vec::new(),
            failures: Vec::new(),
            ha: HaFigures::default(),
            faults: Vec::new(),
            cpu: Vec::new(),
            overload: Vec::new(),
        }
    }

    pub fn add_cpu(&mut self, cost: CpuCost) {
        self.cpu.push(cost);
    }

    /// Records the figures and notes their summary.
    pub fn add_overload(&mut self, figures: OverloadFigures) {
        self.note(figures.summary());
        self.overload.push(figures);
    }

    /// Records the ratio and notes it.
    pub fn add_ha_ratio(&mut self, ratio: HaRatio) {
        self.note(ratio.note());
        self.ha.checkout.push(ratio);
    }

    pub fn add_failover(&mut self, failover: FailoverFigures) {
        self.ha.failovers.push(failover);
    }

    pub fn add_fault(&mut self, figures: FaultFigures) {
        self.faults.push(figures);
    }

    pub fn add(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn note(&mut self, note: String) {
        eprintln!("note: {note}");
        self.notes.push(note);
    }

    pub fn fail(&mut self, section: Section, error: String) {
        self.failures.push(Failure {
            section: section.name(),
            error,
        });
    }

    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    /// The line that says where and how the figures were taken.
    pub fn header(&self) -> String {
        let machine = &self.machine;
        let memory = machine
            .memory_gib
            .map_or_else(String::new, |gib| format!(", {gib} GiB"));
        format!(
            "wdm-bench {date}: nproc {nproc} ({cpu}{memory}), load average {load}, \
             commit {commit}; {seconds} s phases, {rows} rows{quick}, sections {sections}{ha}",
            date = machine.date,
            nproc = machine.nproc,
            load = machine.load_average,
            cpu = machine.cpu,
            commit = machine.commit,
            seconds = self.settings.phase_seconds,
            rows = self.settings.rows,
            quick = if self.settings.quick {
                " (--quick)"
            } else {
                ""
            },
            sections = self.settings.sections.join(","),
            ha = if self.settings.ha {
                " (ha-checkout and failover on Patroni clusters)"
            } else {
                ""
            },
        )
    }

    /// The rows as an aligned table, then the notes and failures.
    pub fn table(&self) -> String {
        const HEADINGS: [&str; 10] = [
            "section",
            "measurement",
            "clients",
            "count",
            "seconds",
            "per s",
            "p50 ms",
            "p99 ms",
            "non-2xx",
            "failed",
        ];
        let cells: Vec<[String; 10]> = self.rows.iter().map(row_cells).collect();
        let mut widths = HEADINGS.map(str::len);
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String; 10]| {
            let mut text = String::new();
            for (column, (cell, width)) in cells.iter().zip(widths).enumerate() {
                // Text columns left-aligned, numbers right-aligned.
                let _ = if column < 2 {
                    write!(text, "{cell:<width$}  ")
                } else {
                    write!(text, "{cell:>width$}  ")
                };
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        line(&HEADINGS.map(str::to_owned));
        line(&widths.map(|width| "-".repeat(width)));
        for row in &cells {
            line(row);
        }
        for cost in &self.cpu {
            out.push_str(&cost.table());
        }
        for note in &self.notes {
            let _ = writeln!(out, "{note}");
        }
        for failure in &self.failures {
            let _ = writeln!(out, "FAILED {}: {}", failure.section, failure.error);
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(self).context("serialising the report")?;
        std::fs::write(path, json + "\n")?;
        Ok(())
    }
}

fn row_cells(row: &Row) -> [String; 10] {
    let count = |value: Option<u64>| value.map_or_else(String::new, |n| n.to_string());
    let millis = |value: Option<f64>| value.map_or_else(String::new, format_millis);
    [
        row.section.to_owned(),
        row.measurement.clone(),
        row.clients.map_or_else(String::new, |n| n.to_string()),
        count(row.count),
        format!("{:.2}", row.seconds),
        row.per_second
            .map_or_else(String::new, |rate| format!("{rate:.0}")),
        millis(row.p50_ms),
        millis(row.p99_ms),
        count(row.non_2xx),
        count(row.failed),
    ]
}

/// Milliseconds with two decimals below 10, one above.
pub fn format_millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.1}")
    }
}
