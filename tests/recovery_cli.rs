//! The operators' recovery tool on a whole system: a coordinator crashes for real right after
//! forcing its commit decision and stays down, its peer too; `wdm-recovery`, pointed at the
//! databases only, shows the in-doubt branches and finishes them; the books balance afterwards.

use std::{path::PathBuf, process::Command};

use launcher::system::SystemConfig;
use serde_json::Value;
use system_tests::{
    crash_after_the_decision_alone, ledger, order_of_two, prepared_count,
    restart_coordinator_clean, start, Api, Service, System,
};

/// The decision log and the participant databases, as the coordinator's environment names them.
fn recovery_cli(system: &System, args: &[&str]) -> (i32, String, String) {
    let participants: Vec<String> = Service::PARTICIPANTS
        .into_iter()
        .map(|s| format!("{},{}", s.name(), system.database_url(s)))
        .collect();
    let binary: PathBuf = SystemConfig::default_bin_dir().join("wdm-recovery");
    let output = Command::new(&binary)
        .args(args)
        .env("DATABASE_URL", system.database_url(Service::Coordinator))
        .env("COORDINATOR_PARTICIPANTS", participants.join(" "))
        .output()
        .unwrap_or_else(|error| panic!("run {}: {error}", binary.display()));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_coordinator_crash_after_its_decision_is_listed_and_resolved_by_the_cli_while_it_is_down()
{
    let system = start().await;
    let api = Api::new(&system);
    let bought = order_of_two(&api).await;

    // A coordinator that exits right after forcing its commit decision, and stays down; its
    // peer is down too, or it would finish the transaction before the CLI looks.
    let checkout = crash_after_the_decision_alone(&system, &api, &bought.order).await;

    let (code, stdout, stderr) = recovery_cli(&system, &["list", "--json", "--grace", "0"]);
    assert_eq!(code, 1, "in doubt: {stderr}");
    let plan: Value = serde_json::from_str(&stdout).expect("list --json parses");
    let items = plan["items"].as_array().expect("items");
    assert_eq!(items.len() as i64, prepared_count(&system).await);
    assert!(items.len() >= 2, "{stdout}");
    for item in items {
        assert_eq!(item["log"], "commit", "{item}");
        assert_eq!(item["action"], "commit", "{item}");
    }
    let (code, _, _) = recovery_cli(&system, &["resolve", "--dry-run"]);
    assert_eq!(code, 1);
    assert_eq!(prepared_count(&system).await, items.len() as i64);

    let (code, stdout, stderr) = recovery_cli(&system, &["resolve"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(prepared_count(&system).await, 0);
    assert_eq!(recovery_cli(&system, &["hazards"]).0, 0);
    assert_eq!(recovery_cli(&system, &["list"]).0, 0);

    restart_coordinator_clean(&system);
    assert_eq!(
        checkout.await.expect("checkout task"),
        reqwest::StatusCode::OK
    );
    bought.assert_paid_once(&api).await;
    let books = ledger(&system, 100, 100).await;
    assert_eq!(books.stock_sold * 3, books.paid_total);
    assert_eq!(books.credit_spent, books.paid_total);
}
