//! The real `wdm-recovery` binary against real databases: in-doubt states are made on purpose,
//! then the tool is run as a process and the databases are checked.

mod world;

use std::process::Output;

use serde_json::Value;
use uuid::Uuid;
use world::{world, World};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl World {
    /// Runs `wdm-recovery` with the coordinator's environment pointing at this world.
    fn cli(&self, args: &[&str]) -> Run {
        let participants: Vec<String> = self
            .specs
            .iter()
            .map(|s| {
                let urls: Vec<&str> = s.base_urls.iter().map(|url| url.as_str()).collect();
                format!("{},{},{}", s.name, urls.join("|"), s.database_url)
            })
            .collect();
        self.cli_with(&self.log_url, &participants.join(" "), args)
    }

    fn cli_with(&self, log_url: &str, participants: &str, args: &[&str]) -> Run {
        let output: Output = std::process::Command::new(env!("CARGO_BIN_EXE_wdm-recovery"))
            .args(args)
            .env("DATABASE_URL", log_url)
            .env("COORDINATOR_PARTICIPANTS", participants)
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("run wdm-recovery");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn operator_actions(&self) -> Vec<(String, String, bool, Option<String>)> {
        sqlx::query_as("select gid, action, forced, reason from operator_actions order by id")
            .fetch_all(&self.log)
            .await
            .unwrap()
    }

    /// One decided transaction (both branches prepared, commit logged) and one undecided.
    async fn decided_and_undecided(&self) -> (Uuid, Uuid) {
        let decided = Uuid::new_v4();
        self.prepare(0, "c1", decided, "a").await;
        self.prepare(1, "c1", decided, "b").await;
        self.log_commit("c1", decided).await;
        let undecided = Uuid::new_v4();
        self.prepare(0, "c1", undecided, "c").await;
        (decided, undecided)
    }

    async fn all_prepared(&self) -> Vec<String> {
        let mut all = self.prepared(0).await;
        all.extend(self.prepared(1).await);
        all.sort();
        all
    }
}

fn gid(txid: Uuid, participant: &str) -> String {
    twopc::Gid::new("c1", txid, participant)
        .unwrap()
        .to_string()
}

fn actions(json: &Value) -> Vec<(String, String, String)> {
    let mut items: Vec<(String, String, String)> = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["gid"].as_str().unwrap().to_owned(),
                i["log"].as_str().unwrap().to_owned(),
                i["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    items.sort();
    items
}

#[tokio::test]
async fn list_shows_exactly_the_in_doubt_branches_with_the_action_recovery_would_take() {
    let world = world().await;
    let (decided, undecided) = world.decided_and_undecided().await;

    let run = world.cli(&["list", "--json", "--grace", "0"]);
    assert_eq!(run.code, 1, "something is in doubt: {}", run.stderr);
    let json: Value = serde_json::from_str(&run.stdout).expect("list --json parses");
    let mut expected = vec![
        (gid(decided, "alpha"), "commit".into(), "commit".into()),
        (gid(decided, "beta"), "commit".into(), "commit".into()),
        (
            gid(undecided, "alpha"),
            "no_record".into(),
            "rollback".into(),
        ),
    ];
    expected.sort();
    assert_eq!(actions(&json), expected);

    // No process holds c1's identity: nothing can be deciding its branches, grace or not.
    let table = world.cli(&["list"]);
    assert_eq!(table.code, 1);
    assert!(table.stdout.contains("ACTION"), "{}", table.stdout);
    assert!(table.stdout.contains(&gid(undecided, "alpha")));
    assert!(!table.stdout.contains("too-young"), "{}", table.stdout);
    let _c1_alive = world.hold_identity("c1").await;
    let table = world.cli(&["list"]);
    assert!(
        table.stdout.contains("too-young"),
        "the default grace protects a live coordinator's fresh undecided branch: {}",
        table.stdout
    );
}

#[tokio::test]
async fn resolve_dry_run_changes_nothing() {
    let world = world().await;
    world.decided_and_undecided().await;
    let before = world.all_prepared().await;

    let run = world.cli(&["resolve", "--dry-run", "--grace", "0"]);

    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stdout.contains("rollback") && run.stdout.contains("commit"));
    assert_eq!(world.all_prepared().await, before);
}

#[tokio::test]
async fn resolve_applies_the_log_and_leaves_nothing_prepared() {
    let world = world().await;
    let (decided, undecided) = world.decided_and_undecided().await;

    let run = world.cli(&["resolve", "--grace", "0"]);

    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run
        .stdout
        .contains(&format!("{}  commit  committed", gid(decided, "alpha"))));
    assert!(run.stdout.contains(&format!(
        "{}  rollback  rolled-back",
        gid(undecided, "alpha")
    )));
    assert!(world.all_prepared().await.is_empty());
    assert!(world.has_row(0, "a").await && world.has_row(1, "b").await);
    assert!(!world.has_row(0, "c").await, "the undecided one is aborted");
    assert!(world.finished(decided).await);
    assert_eq!(world.cli(&["list", "--grace", "0"]).code, 0);
}

#[tokio::test]
async fn resolve_leaves_young_undecided_branches_to_a_live_coordinator() {
    let world = world().await;
    let undecided = Uuid::new_v4();
    world.prepare(0, "c1", undecided, "c").await;
    let c1_alive = world.hold_identity("c1").await;

    let run = world.cli(&["resolve"]);

    assert_eq!(run.code, 1, "a young branch is left: {}", run.stdout);
    assert_eq!(world.prepared(0).await, vec![gid(undecided, "alpha")]);

    // Once c1 is gone, nothing can decide the branch any more: resolved at once.
    drop(c1_alive);
    let run = world.cli(&["resolve"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(world.prepared(0).await.is_empty());
}

#[tokio::test]
async fn rollback_of_a_logged_commit_is_refused_without_force_and_recorded_with_it() {
    let world = world().await;
    let (decided, _) = world.decided_and_undecided().await;
    let branch = gid(decided, "alpha");

    let refused = world.cli(&["rollback", &branch, "--grace", "0"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("refused"), "{}", refused.stderr);
    assert!(world.prepared(0).await.contains(&branch));
    assert!(world.operator_actions().await.is_empty());

    let no_reason = world.cli(&["rollback", &branch, "--force"]);
    assert_eq!(no_reason.code, 2, "--force needs --reason");
    assert!(world.prepared(0).await.contains(&branch));

    let forced = world.cli(&["rollback", &branch, "--force", "--reason", "ticket 7"]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert!(!world.prepared(0).await.contains(&branch));
    assert_eq!(
        world.operator_actions().await,
        vec![(branch, "rollback".into(), true, Some("ticket 7".into()))]
    );
}

#[tokio::test]
async fn commit_without_a_commit_record_is_refused_and_a_logged_one_is_recorded_as_manual() {
    let world = world().await;
    let (decided, undecided) = world.decided_and_undecided().await;

    let refused = world.cli(&["commit", &gid(undecided, "alpha"), "--grace", "0"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("no commit"), "{}", refused.stderr);
    assert!(world.prepared(0).await.contains(&gid(undecided, "alpha")));

    let agreed = world.cli(&["commit", &gid(decided, "beta")]);
    assert_eq!(agreed.code, 0, "{}", agreed.stderr);
    assert!(world.has_row(1, "b").await);
    assert_eq!(
        world.operator_actions().await,
        vec![(gid(decided, "beta"), "commit".into(), false, None)]
    );
}

#[tokio::test]
async fn a_manufactured_hazard_makes_hazards_exit_non_zero() {
    let world = world().await;
    let txid = Uuid::new_v4();
    world.prepare(0, "c1", txid, "a").await;
    // beta's branch never prepared, yet the commit is logged.
    world.log_commit("c1", txid).await;

    let run = world.cli(&["hazards"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stdout.contains(&gid(txid, "beta")), "{}", run.stdout);

    let json = world.cli(&["hazards", "--json"]);
    let parsed: Value = serde_json::from_str(&json.stdout).expect("hazards --json parses");
    assert_eq!(parsed["found_now"][0]["action"], "hazard");

    // Resolving records it; it stays reported until an operator resolves it.
    assert_eq!(world.cli(&["resolve", "--grace", "0"]).code, 1);
    assert!(world.has_row(0, "a").await);
    assert_eq!(world.cli(&["hazards"]).code, 1);

    assert_eq!(world.cli(&["hazards"]).code, 1, "still recorded");
    sqlx::query("update hazards set resolved_at = now(), note = 'test'")
        .execute(&world.log)
        .await
        .unwrap();
    sqlx::query("update decisions set finished_at = now()")
        .execute(&world.log)
        .await
        .unwrap();
    assert_eq!(world.cli(&["hazards"]).code, 0);
}

#[tokio::test]
async fn bad_input_gives_a_clear_message_and_changes_nothing() {
    let world = world().await;
    let (decided, _) = world.decided_and_undecided().await;
    let before = world.all_prepared().await;

    let unknown = world.cli(&["rollback", &gid(Uuid::new_v4(), "alpha"), "--grace", "0"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("not in doubt"),
        "{}",
        unknown.stderr
    );

    let malformed = world.cli(&["commit", "wdm_c1_not-a-gid"]);
    assert_eq!(malformed.code, 2);
    assert!(
        malformed.stderr.contains("malformed gid"),
        "{}",
        malformed.stderr
    );

    let foreign = world.cli(&[
        "commit",
        &twopc::Gid::new("c1", decided, "gamma").unwrap().to_string(),
    ]);
    assert_eq!(foreign.code, 2);
    assert!(
        foreign.stderr.contains("not configured"),
        "{}",
        foreign.stderr
    );

    let dead_log = world.cli_with(
        "postgres://postgres@127.0.0.1:1/log",
        &format!("alpha,{}", world.specs[0].database_url),
        &["resolve", "--grace", "0"],
    );
    assert_eq!(dead_log.code, 2);
    assert!(
        dead_log
            .stderr
            .contains("decision log database at postgres://postgres@127.0.0.1:1/log"),
        "{}",
        dead_log.stderr
    );

    let dead_participant = world.cli_with(
        &world.log_url,
        &format!(
            "alpha,{} beta,postgres://postgres@127.0.0.1:1/beta",
            world.specs[0].database_url
        ),
        &["resolve", "--grace", "0"],
    );
    assert_eq!(dead_participant.code, 2);
    assert!(
        dead_participant
            .stderr
            .contains("participant beta database"),
        "{}",
        dead_participant.stderr
    );

    let usage = world.cli(&["frobnicate"]);
    assert_eq!(usage.code, 2);
    for run in [&unknown, &malformed, &dead_log, &dead_participant] {
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    assert_eq!(world.all_prepared().await, before);
    assert!(world.operator_actions().await.is_empty());
}

#[tokio::test]
async fn a_run_while_another_holds_the_recovery_lock_exits_one_and_changes_nothing() {
    let world = world().await;
    world.decided_and_undecided().await;
    let before = world.all_prepared().await;
    let mut holder = world.log.begin().await.unwrap();
    assert!(coordinator::recovery::try_lock(&mut holder, None)
        .await
        .unwrap());

    // It does not wait for the lock: the holder keeps it until after this run's answer.
    let run = world.cli(&["resolve", "--grace", "0"]);

    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("another recovery is running"),
        "{}",
        run.stderr
    );
    assert_eq!(world.all_prepared().await, before);
    holder.rollback().await.unwrap();
    assert_eq!(world.cli(&["resolve", "--grace", "0"]).code, 0);
}

#[tokio::test]
async fn gc_removes_finished_records_and_old_markers_past_the_retention() {
    let world = world().await;
    let (decided, _) = world.decided_and_undecided().await;
    assert_eq!(world.cli(&["resolve", "--grace", "0"]).code, 0);

    assert_eq!(world.cli(&["gc"]).code, 0);
    assert!(world.finished(decided).await, "younger than a day: kept");

    let run = world.cli(&["gc", "--retention", "0"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let records: i64 = sqlx::query_scalar("select count(*) from decisions")
        .fetch_one(&world.log)
        .await
        .unwrap();
    assert_eq!(records, 0);
    let markers: i64 = sqlx::query_scalar("select count(*) from twopc_markers")
        .fetch_one(&world.pools[0])
        .await
        .unwrap();
    assert_eq!(markers, 0);
}

#[tokio::test]
async fn with_skip_unreachable_a_participant_outage_is_named_and_the_others_are_resolved() {
    let world = world().await;
    let (decided, _) = world.decided_and_undecided().await;
    let participants = format!(
        "alpha,{} beta,postgres://postgres@127.0.0.1:1/beta",
        world.specs[0].database_url
    );

    let run = world.cli_with(
        &world.log_url,
        &participants,
        &["resolve", "--grace", "0", "--skip-unreachable"],
    );

    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("participant beta database"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("beta"), "{}", run.stdout);
    assert!(world.prepared(0).await.is_empty(), "alpha resolved");
    assert!(
        world.has_row(0, "a").await,
        "the logged commit applied on alpha"
    );
    assert!(
        !world.has_row(0, "c").await,
        "the undecided branch rolled back"
    );
    assert_eq!(world.prepared(1).await, vec![gid(decided, "beta")]);
    assert!(
        !world.finished(decided).await,
        "beta's branch is still open"
    );
}

#[test]
fn given_no_database_at_all_it_looks_at_the_local_system_of_scripts_up_and_says_so() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wdm-recovery"))
        .arg("list")
        .env_remove("DATABASE_URL")
        .env_remove("COORDINATOR_PARTICIPANTS")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run wdm-recovery");
    let stderr = String::from_utf8_lossy(&output.stderr);

    // Whether or not `scripts/up` runs here: it lists that system (0, 1) or cannot reach it (2).
    assert!(
        matches!(output.status.code(), Some(0..=2)),
        "{:?}: {stderr}",
        output.status
    );
    assert!(!stderr.contains("no decision log"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let ports = launcher::Ports::fixed(launcher::Instances::default());
    assert!(
        stderr.contains(&format!(
            "decision log: {}",
            ports.database_url(launcher::Service::Coordinator)
        )),
        "{stderr}"
    );
    for participant in launcher::Service::PARTICIPANTS {
        assert!(
            stderr.contains(&format!(
                "participant {}: {}",
                participant.name(),
                ports.database_url(participant)
            )),
            "{stderr}"
        );
    }
}
