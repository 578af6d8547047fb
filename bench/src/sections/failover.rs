//! `failover` (`--ha` only): each database in turn (order, stock, payment, coordinator) loses
//! its primary node, with no load on the system: [`launcher::System::failover`] SIGKILLs the
//! primary's Patroni and postmaster, times the first write that succeeds through the
//! database's HAProxy frontend, starts the killed node again and times until it streams from
//! the new primary.

use std::time::Duration;

use launcher::Service;

use super::Bench;
use crate::report::{FailoverFigures, Report, Row};
use crate::sections::Section;

/// Longest a failover, and the killed node's return as a standby, may take.
const LIMIT: Duration = Duration::from_secs(90);

pub async fn run(bench: &mut Bench, report: &mut Report) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for service in Service::ALL {
        let database = service.name();
        eprintln!("killing the primary of database {database}");
        let failover = match bench.system.failover(service, LIMIT).await {
            Ok(failover) => failover,
            Err(error) => {
                eprintln!("failover of {database} failed: {error}");
                failed.push(format!("{database}: {error}"));
                continue;
            }
        };
        let figures = FailoverFigures::new(database, &failover);
        eprintln!("  {}", figures.summary());
        report.add(Row::timing(
            Section::Failover,
            format!(
                "{database}: writes unavailable ({} killed, {} promoted)",
                figures.killed, figures.new_primary
            ),
            None,
            failover.write_unavailable,
        ));
        report.add(Row::timing(
            Section::Failover,
            format!("{database}: {} streaming again", figures.killed),
            None,
            failover.rejoined_after,
        ));
        report.add_failover(figures);
    }
    report.note(
        "failover: idle system, seconds from the SIGKILL of the primary (the window: the leader \
         key's ttl of 8 s expiring, promotion, one HAProxy check)"
            .to_owned(),
    );
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
    Ok(())
}
