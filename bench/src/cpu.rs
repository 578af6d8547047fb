//! CPU time by process kind, from `/proc`: where a checkout's CPU goes.
//!
//! Method. The launcher's supervisor knows the pid of every process it started (each
//! PostgreSQL postmaster, service instance and HAProxy process). A snapshot reads, for each
//! such root, `/proc/<pid>/stat` of the root and of every descendant (children found by the
//! parent-pid field of every `/proc/<pid>/stat`, transitively), and sums
//! `utime + stime + cutime + cstime` over them: the live processes' own CPU time plus that of
//! their exited children that were reaped (a postmaster reaps its backends, so a backend that
//! exits between two snapshots is still counted, in the postmaster's `cutime`). A kind sums
//! its instances (`order-1` and `order-2` are `order`; `pg-order` is `pg-order`; the gateway
//! processes are `haproxy`). A Patroni node's postmaster is not Patroni's descendant (Patroni
//! starts it in a session of its own, from a helper process that exits), so each node's
//! postmaster, found in its `postmaster.pid`, is a root of its own under the node's kind; a pid
//! reached from two roots counts once. The bench process itself (the load generator, also the
//! supervisor's threads) counts only its own `utime + stime`: its children are the system.
//! The difference of two snapshots, divided by the checkouts between them, is the CPU cost
//! of one checkout. Not counted: a process that exited and was not reaped by a counted
//! parent (a restarted service's old process is reaped by the bench, and left out), and the
//! kernel's own work outside process context (softirqs of loopback networking are charged to
//! whichever process was running).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use launcher::{Service, System};

/// The CPU fields of one `/proc/<pid>/stat` line, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
}

impl ProcStat {
    /// Parses a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may
    /// itself hold spaces and parentheses, so the fields after it are found from the LAST `)`.
    pub fn parse(line: &str) -> Option<ProcStat> {
        let (head, rest) = line.rsplit_once(')')?;
        let pid = head.split_once('(')?.0.trim().parse().ok()?;
        // After the name: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |number: usize| fields.get(number - 3).copied();
        let ticks = |number: usize| field(number)?.parse::<i64>().ok().map(|t| t.max(0) as u64);
        Some(ProcStat {
            pid,
            ppid: field(4)?.parse().ok()?,
            utime: ticks(14)?,
            stime: ticks(15)?,
            cutime: ticks(16)?,
            cstime: ticks(17)?,
        })
    }

    fn own(&self) -> u64 {
        self.utime + self.stime
    }

    fn with_reaped_children(&self) -> u64 {
        self.own() + self.cutime + self.cstime
    }
}

/// The kind a supervised process name counts under: instances summed, the gateway processes
/// as `haproxy`, each database (`pg-order`, and a Patroni node `pg-order-1`) on its own.
pub fn kind_of(name: &str) -> String {
    if name.starts_with("gateway") || name == "haproxy" {
        return "haproxy".to_owned();
    }
    let base = match name.rsplit_once('-') {
        Some((base, index)) if index.chars().all(|c| c.is_ascii_digit()) => base,
        _ => name,
    };
    base.to_owned()
}

/// The kind the bench process itself counts under.
pub const BENCH_KIND: &str = "bench (load generator)";

/// CPU ticks by kind at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub ticks: BTreeMap<String, u64>,
}

impl Snapshot {
    /// Reads `/proc` for every process `system` runs (its supervisor's, and the postmasters of
    /// its Patroni nodes), and this process.
    pub fn take(system: &System) -> Snapshot {
        let supervisor = system.supervisor();
        let mut roots: Vec<(String, u32)> = supervisor
            .names()
            .into_iter()
            .filter_map(|name| Some((kind_of(&name), supervisor.pid(&name).ok()??)))
            .collect();
        for service in Service::ALL {
            for node in system.patroni_nodes(service) {
                if let Some(pid) = node.postmaster_pid() {
                    roots.push((kind_of(node.name()), pid));
                }
            }
        }
        let all = read_all();
        let children = children_of(&all);
        let mut ticks = BTreeMap::new();
        let mut seen = HashSet::new();
        for (kind, root) in roots {
            *ticks.entry(kind).or_default() += tree_ticks(root, &all, &children, &mut seen);
        }
        let own = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|line| ProcStat::parse(&line))
            .map_or(0, |stat| stat.own());
        ticks.insert(BENCH_KIND.to_owned(), own);
        Snapshot { ticks }
    }
}

/// Every process's stat line, by pid; processes that vanish while being read are skipped.
fn read_all() -> HashMap<u32, ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|line| ProcStat::parse(&line))
        .map(|stat| (stat.pid, stat))
        .collect()
}

/// Each pid's children, from the parent-pid fields.
fn children_of(all: &HashMap<u32, ProcStat>) -> HashMap<u32, Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for stat in all.values() {
        children.entry(stat.ppid).or_default().push(stat.pid);
    }
    children
}

/// The ticks of `root` and all its descendants, each with its reaped children, leaving out
/// (and then adding to) the pids in `seen`: those another root counted.
fn tree_ticks(
    root: u32,
    all: &HashMap<u32, ProcStat>,
    children: &HashMap<u32, Vec<u32>>,
    seen: &mut HashSet<u32>,
) -> u64 {
    let mut total = 0;
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        if let Some(stat) = all.get(&pid) {
            total += stat.with_reaped_children();
        }
        stack.extend(children.get(&pid).into_iter().flatten());
    }
    total
}

/// CPU per checkout by kind between two snapshots.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CpuCost {
    pub clients: usize,
    pub checkouts: u64,
    /// Kind -> CPU milliseconds per checkout.
    pub ms_per_checkout: BTreeMap<String, f64>,
    pub total_ms_per_checkout: f64,
    /// CPU seconds of the machine available over the phase (cores x wall time), for scale.
    pub wall_seconds: f64,
}

impl CpuCost {
    pub fn between(
        before: &Snapshot,
        after: &Snapshot,
        checkouts: u64,
        clients: usize,
        wall: Duration,
        ticks_per_second: u64,
    ) -> CpuCost {
        let per = |ticks: u64| {
            ticks as f64 * 1e3 / ticks_per_second.max(1) as f64 / checkouts.max(1) as f64
        };
        let ms_per_checkout: BTreeMap<String, f64> = after
            .ticks
            .iter()
            .map(|(kind, &ticks)| {
                let earlier = before.ticks.get(kind).copied().unwrap_or(0);
                (kind.clone(), per(ticks.saturating_sub(earlier)))
            })
            .collect();
        CpuCost {
            clients,
            checkouts,
            total_ms_per_checkout: ms_per_checkout.values().sum(),
            ms_per_checkout,
            wall_seconds: wall.as_secs_f64(),
        }
    }

    /// An aligned table: kind, CPU ms per checkout, share; then the total.
    pub fn table(&self) -> String {
        let mut out = format!(
            "CPU per checkout at {} clients ({} checkouts, {:.1} s):\n  {:<24} {:>10} {:>7}\n",
            self.clients, self.checkouts, self.wall_seconds, "kind", "CPU ms", "share"
        );
        let mut rows: Vec<_> = self.ms_per_checkout.iter().collect();
        rows.sort_by(|a, b| b.1.total_cmp(a.1));
        for (kind, ms) in rows {
            let share = if self.total_ms_per_checkout > 0.0 {
                ms / self.total_ms_per_checkout * 100.0
            } else {
                0.0
            };
            out.push_str(&format!("  {kind:<24} {ms:>10.3} {share:>6.1}%\n"));
        }
        out.push_str(&format!(
            "  {:<24} {:>10.3} {:>6.1}%\n",
            "total", self.total_ms_per_checkout, 100.0
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_parsed_after_the_last_parenthesis_of_the_name() {
        let line = "4242 (postgres: a) (b) c) S 17 4242 4242 0 -1 4194560 1 0 0 0 \
                    123 45 6 7 20 0 1 0 100 1000 10 18446744073709551615";
        assert_eq!(
            ProcStat::parse(line),
            Some(ProcStat {
                pid: 4242,
                ppid: 17,
                utime: 123,
                stime: 45,
                cutime: 6,
                cstime: 7,
            })
        );
    }

    #[test]
    fn a_plain_stat_line_is_parsed() {
        let line = "1 (systemd) S 0 1 1 0 -1 4194560 100 200 3 4 11 22 33 44 20 0 1 0 5 6 7";
        let stat = ProcStat::parse(line).unwrap();
        assert_eq!((stat.pid, stat.ppid), (1, 0));
        assert_eq!(
            (stat.utime, stat.stime, stat.cutime, stat.cstime),
            (11, 22, 33, 44)
        );
    }

    #[test]
    fn a_truncated_stat_line_is_refused() {
        assert_eq!(ProcStat::parse("12 (x) S 1 2 3"), None);
        assert_eq!(ProcStat::parse("garbage"), None);
    }

    #[test]
    fn this_process_stat_line_parses() {
        let line = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert_eq!(ProcStat::parse(&line).unwrap().pid, std::process::id());
    }

    #[test]
    fn instances_count_under_their_kind() {
        assert_eq!(kind_of("order-1"), "order");
        assert_eq!(kind_of("coordinator-2"), "coordinator");
        assert_eq!(kind_of("gateway-2"), "haproxy");
        assert_eq!(kind_of("pg-order"), "pg-order");
        assert_eq!(kind_of("pg-stock-1"), "pg-stock");
    }

    /// Processes by pid, and the children of each.
    fn family<const N: usize>(
        stats: [ProcStat; N],
    ) -> (HashMap<u32, ProcStat>, HashMap<u32, Vec<u32>>) {
        let all: HashMap<u32, ProcStat> = stats.into_iter().map(|s| (s.pid, s)).collect();
        let children = children_of(&all);
        (all, children)
    }

    #[test]
    fn a_tree_sums_descendants_and_their_reaped_children() {
        let stat = |pid, ppid, utime| ProcStat {
            pid,
            ppid,
            utime,
            stime: 1,
            cutime: 10,
            cstime: 0,
        };
        let (all, children) = family([stat(10, 1, 5), stat(11, 10, 2), stat(12, 11, 3)]);
        assert_eq!(
            tree_ticks(10, &all, &children, &mut HashSet::new()),
            (5 + 1 + 10) + (2 + 1 + 10) + (3 + 1 + 10)
        );
        assert_eq!(tree_ticks(12, &all, &children, &mut HashSet::new()), 14);
    }

    #[test]
    fn a_process_reached_from_two_roots_counts_once() {
        let stat = |pid, ppid| ProcStat {
            pid,
            ppid,
            utime: 1,
            stime: 0,
            cutime: 0,
            cstime: 0,
        };
        let (all, children) = family([stat(10, 1), stat(11, 10), stat(12, 11)]);
        let mut seen = HashSet::new();
        assert_eq!(tree_ticks(11, &all, &children, &mut seen), 2);
        assert_eq!(tree_ticks(10, &all, &children, &mut seen), 1);
    }

    #[test]
    fn the_cost_is_the_difference_per_checkout() {
        let snap = |pairs: &[(&str, u64)]| Snapshot {
            ticks: pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        };
        let cost = CpuCost::between(
            &snap(&[("order", 100), ("pg-order", 50)]),
            &snap(&[("order", 300), ("pg-order", 150)]),
            100,
            64,
            Duration::from_secs(2),
            100,
        );
        assert_eq!(cost.ms_per_checkout["order"], 20.0);
        assert_eq!(cost.ms_per_checkout["pg-order"], 10.0);
        assert_eq!(cost.total_ms_per_checkout, 30.0);
    }
}
