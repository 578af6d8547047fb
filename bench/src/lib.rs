//! `wdm-bench`: what the checkout system does on this machine, in numbers.
//!
//! It starts a private copy of the whole system (four PostgreSQL instances, two instances of
//! each service, two coordinators and two HAProxy processes, on free ports in a scratch
//! directory) from the release binaries next to its own executable, drives it through the
//! public gateway with its own load generator ([`load`]), and prints a table; the same figures go to
//! `target/bench/latest.json`. It is a benchmark, not a test: it asserts nothing about timing.
//!
//! Sections ([`sections::Section`]), in the order they run so that loaded data is reused:
//! - `batch`: wall time of `batch_init` of 100,000 users, items and orders;
//! - `crud`: `GET /stock/find` and `POST /stock/add` at 64 clients (the floor every request
//!   pays: HAProxy, axum, one PostgreSQL statement);
//! - `checkout`: fresh checkouts (each order once) at 4, 16 and 64 clients, and the CPU time
//!   per checkout of each process kind over each run ([`cpu`]; under `cpu` in the JSON);
//! - `ceiling`: the same checkouts as ONE local transaction in ONE database, at the same
//!   concurrency, and the ratio checkout/ceiling;
//! - `stress`: the course's stress scenario, random orders checked out again and again;
//! - `overload`: 1,000 and 3,000 closed-loop clients checking out fresh or random orders for
//!   twice the phase duration: every status counted, `GET /orders/find` latency beside it,
//!   and the throughput at 3,000 over that at 64 (also under `overload` in the JSON);
//! - `faults`: fresh checkouts at 64 clients in 1 s windows while `coordinator-1`, then
//!   `order-1`, then the stock database are killed: the rate before, the worst window, and
//!   the seconds until the rate is back at 80 % (also under `faults` in the JSON);
//! - `consistency`: the course's consistency scenario (1000 checkouts of 100 units of stock).
//!
//! `--ha` adds a second system, started once the first is stopped, whose databases are
//! Patroni clusters (primary and synchronous standby, behind HAProxy; README "High
//! availability"). The first system then runs only `checkout` and what `--only` names; the
//! second runs:
//! - `ha-checkout`: the `checkout` section again, and the ratio HA/single at each concurrency;
//! - `failover`: each database's primary killed in turn, on the idle system: how long writes
//!   are unavailable and when the killed node streams again.
//!
//! Why the ceiling is the right comparison: a checkout changes an order row, two item rows
//! and a user row, all or nothing. The cheapest correct way to do that is one transaction in
//! one database: lock the order, check it is unpaid, subtract stock and credit, set paid,
//! commit (one fsync). The ceiling runs exactly that, on the same rows (the orders are copied
//! from the order database), on a PostgreSQL instance of the same system with the same
//! durability settings, from the same number of clients. Everything the distributed checkout
//! costs beyond it (HTTP hops, PREPARE TRANSACTION and COMMIT PREPARED on three databases,
//! the coordinator's logged decision) is the price of splitting the data into services;
//! the ratio says how much of the single-database throughput survives that split.
//!
//! The load generator runs in this process, on the same cores as the system: figures are for
//! the machine as a whole, client included.

pub mod cpu;
pub mod gateway;
pub mod load;
pub mod report;
pub mod section;
pub mod sections;
mod unix;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use launcher::{Databases, PatroniPorts};

use crate::report::{Machine, Report, Row, Settings};
use crate::sections::{Bench, Scale, Section};

/// Command-line options of `wdm-bench` (`scripts/bench` passes its arguments through).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "wdm-bench",
    about = "Throughput and latency of the checkout system on this machine"
)]
pub struct Options {
    /// Seconds per measured phase (default 10, or 2 with --quick).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,

    /// Short phases and batches of 10,000 rows instead of 100,000: a smoke run.
    #[arg(long)]
    pub quick: bool,

    /// Run only these sections (comma-separated), in their usual order.
    #[arg(long, value_name = "NAME[,NAME]", value_delimiter = ',', value_enum)]
    pub only: Vec<Section>,

    /// Also start the system with Patroni clusters as databases: fresh checkouts on both and
    /// their ratio, then a failover of each database. Other sections run only if --only
    /// names them.
    #[arg(long)]
    pub ha: bool,

    /// Concurrent clients in the stress section.
    #[arg(long, default_value_t = 64)]
    pub stress_clients: usize,

    /// Where the service binaries are (default: the directory of this executable).
    #[arg(long, env = "WDM_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,

    /// Where to write the results as JSON (default: `<target>/bench/latest.json`).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Starts the system (with `--ha` then a second one), runs the chosen sections, prints the
/// table and writes the JSON. A failing section, or a system that does not start, is reported
/// and the others still run; the exit status is then non-zero.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let exe_dir = std::env::current_exe()
        .context("locating the wdm-bench executable")?
        .parent()
        .map(PathBuf::from)
        .context("the executable has no directory")?;
    let bin_dir = options.bin_dir.clone().unwrap_or_else(|| exe_dir.clone());
    let json_path = options.json.clone().unwrap_or_else(|| {
        // target/release/wdm-bench -> target/bench/latest.json
        exe_dir
            .parent()
            .unwrap_or(&exe_dir)
            .join("bench")
            .join("latest.json")
    });
    let scale = Scale::new(options.quick, options.duration.map(Duration::from_secs));
    let single = Section::selected(&options.only, options.ha);
    let ha: &[Section] = if options.ha { &Section::HA } else { &[] };

    // The overload section holds thousands of connections at once.
    match unix::raise_open_files_limit() {
        Ok(limit) if limit < 8_192 => {
            eprintln!("open files limit {limit}: the overload section may run out of sockets")
        }
        Ok(_) => {}
        Err(error) => eprintln!("raising the open files limit: {error}"),
    }
    let machine = Machine::detect();
    let all: Vec<Section> = single.iter().chain(ha).copied().collect();
    let settings = Settings {
        quick: scale.quick,
        phase_seconds: scale.duration.as_secs_f64(),
        rows: scale.rows,
        stress_clients: options.stress_clients,
        ha: options.ha,
        sections: all.iter().map(|section| section.name()).collect(),
    };
    let mut report = Report::new(machine, settings);
    println!("{}", report.header());

    let run = async {
        let baseline = run_sections(
            &bin_dir,
            Databases::Single,
            scale,
            options.stress_clients,
            &single,
            BTreeMap::new(),
            &mut report,
        )
        .await;
        if ha.is_empty() {
            return;
        }
        match PatroniPorts::free() {
            Ok(ports) => {
                run_sections(
                    &bin_dir,
                    Databases::Patroni(ports),
                    scale,
                    options.stress_clients,
                    ha,
                    baseline,
                    &mut report,
                )
                .await;
            }
            Err(error) => {
                for section in ha {
                    report.fail(*section, format!("finding free ports: {error}"));
                }
            }
        }
    };
    let interrupted = tokio::select! {
        () = run => false,
        // Dropping the run drops the system, which stops every process it started.
        _ = tokio::signal::ctrl_c() => true,
    };
    report.note(format!(
        "load average at the end: {}",
        report::load_average()
    ));
    if interrupted {
        report.note("interrupted (Ctrl-C): figures are partial".to_owned());
    }

    print!("{}", report.table());
    report
        .write_json(&json_path)
        .with_context(|| format!("writing {}", json_path.display()))?;
    eprintln!("wrote {}", json_path.display());
    if report.failed() || interrupted {
        anyhow::bail!("some sections did not complete (see the notes above)");
    }
    Ok(())
}

/// Starts a system with `databases`, runs `sections` on it and stops it; returns its
/// fresh-checkout rows (the `baseline` of a later system). A system that does not start
/// fails every section.
async fn run_sections(
    bin_dir: &std::path::Path,
    databases: Databases,
    scale: Scale,
    stress_clients: usize,
    sections: &[Section],
    baseline: BTreeMap<usize, Row>,
    report: &mut Report,
) -> BTreeMap<usize, Row> {
    let kind = match databases {
        Databases::Single => "one PostgreSQL server per database",
        Databases::Patroni(_) => "Patroni clusters",
    };
    eprintln!("starting the system ({kind}) from {}", bin_dir.display());
    let mut bench = match Bench::start(bin_dir, databases, scale, stress_clients, baseline).await {
        Ok(bench) => bench,
        Err(error) => {
            eprintln!("the system ({kind}) did not start: {error:#}");
            for section in sections {
                report.fail(*section, format!("the system did not start: {error:#}"));
            }
            return BTreeMap::new();
        }
    };
    for section in sections {
        eprintln!("== {}", section.name());
        if let Err(error) = section.run(&mut bench, report).await {
            eprintln!("{} failed: {error:#}", section.name());
            report.fail(*section, format!("{error:#}"));
        }
    }
    eprintln!("stopping the system ({kind})");
    bench.checkout_rows().clone()
}
