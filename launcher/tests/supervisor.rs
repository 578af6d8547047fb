//! The supervisor against real child processes (`sh`).

mod support;

use std::time::Duration;

use launcher::{CommandSpec, ScratchDir, Supervisor};
use support::{alive, eventually, holds_for};

const WAIT: Duration = Duration::from_secs(10);

fn shell(script: &str) -> CommandSpec {
    CommandSpec::new("sh").arg("-c").arg(script)
}

#[test]
fn a_child_that_exits_is_restarted_and_its_output_is_appended_to_its_log() {
    let dir = ScratchDir::new("supervisor").unwrap();
    let supervisor = Supervisor::new(dir.path()).unwrap();
    supervisor
        .spawn("flaky", shell("echo run; exit 3"))
        .unwrap();

    eventually("two restarts", WAIT, || {
        supervisor.restarts("flaky").unwrap() >= 2
    });
    let log = std::fs::read_to_string(supervisor.log_path("flaky")).unwrap();
    assert!(log.matches("run\n").count() >= 3, "log: {log}");
    let status = supervisor.last_exit("flaky").unwrap().unwrap();
    assert_eq!(status.code(), Some(3));
}

#[test]
fn kill_takes_down_the_whole_process_group_and_the_child_comes_back() {
    let dir = ScratchDir::new("supervisor").unwrap();
    let grandchild_file = dir.path().join("grandchild");
    let supervisor = Supervisor::new(dir.path()).unwrap();
    let script = format!(
        "sleep 1000 & echo $! > {}.tmp; mv {0}.tmp {0}; wait",
        grandchild_file.display()
    );
    let first = supervisor.spawn("parent", shell(&script)).unwrap();
    eventually("the grandchild's pid", WAIT, || grandchild_file.exists());
    let grandchild: u32 = std::fs::read_to_string(&grandchild_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::fs::remove_file(&grandchild_file).unwrap();

    assert_eq!(supervisor.kill("parent").unwrap(), Some(first));

    eventually("the grandchild to die", WAIT, || !alive(grandchild));
    eventually("a restart", WAIT, || {
        supervisor.restarts("parent").unwrap() == 1
    });
    let second = supervisor.wait_running("parent", WAIT).unwrap();
    assert_ne!(second, first);
    eventually("the new grandchild", WAIT, || grandchild_file.exists());
}

#[test]
fn a_stopped_child_stays_down_until_started_again() {
    let dir = ScratchDir::new("supervisor").unwrap();
    let supervisor = Supervisor::new(dir.path()).unwrap();
    let first = supervisor
        .spawn("sleeper", shell("exec sleep 1000"))
        .unwrap();

    supervisor.stop("sleeper").unwrap();

    assert!(!alive(first));
    holds_for("the child staying down", Duration::from_millis(500), || {
        supervisor.pid("sleeper").unwrap().is_none()
    });
    assert_eq!(supervisor.restarts("sleeper").unwrap(), 0);

    supervisor.start("sleeper").unwrap();
    let second = supervisor.wait_running("sleeper", WAIT).unwrap();
    assert_ne!(second, first);
    assert!(alive(second));
}

#[test]
fn a_killed_child_with_paused_restarts_stays_down() {
    let dir = ScratchDir::new("supervisor").unwrap();
    let supervisor = Supervisor::new(dir.path()).unwrap();
    let pid = supervisor
        .spawn("sleeper", shell("exec sleep 1000"))
        .unwrap();

    supervisor.pause_restarts("sleeper").unwrap();
    supervisor.kill("sleeper").unwrap();

    eventually("the child to exit", WAIT, || {
        supervisor.pid("sleeper").unwrap().is_none()
    });
    assert!(!alive(pid));
    holds_for("the child staying down", Duration::from_millis(500), || {
        supervisor.pid("sleeper").unwrap().is_none()
    });
}

#[test]
fn dropping_the_supervisor_stops_every_child() {
    let dir = ScratchDir::new("supervisor").unwrap();
    let supervisor = Supervisor::new(dir.path()).unwrap();
    let polite = supervisor
        .spawn("polite", shell("exec sleep 1000"))
        .unwrap();
    // Like a service with graceful shutdown: handles SIGTERM itself.
    let trapping = supervisor
        .spawn(
            "trapping",
            shell("trap 'exit 0' TERM; while :; do sleep 0.05; done"),
        )
        .unwrap();

    drop(supervisor);

    assert!(!alive(polite));
    assert!(!alive(trapping));
}

#[test]
fn a_missing_program_fails_at_spawn_time_with_its_name() {
    let dir = ScratchDir::new("supervisor").unwrap();
    let supervisor = Supervisor::new(dir.path()).unwrap();
    let error = supervisor
        .spawn("ghost", CommandSpec::new("/nonexistent/wdm-ghost"))
        .unwrap_err();
    assert!(error.to_string().contains("wdm-ghost"), "{error}");
}

#[test]
fn a_child_outlives_the_thread_that_asked_for_it() {
    let dir = ScratchDir::new("supervisor").unwrap();
    let supervisor = Supervisor::new(dir.path()).unwrap();
    // Children die with the thread that forked them (parent-death signal), so the
    // supervisor must fork from its own threads, not from a caller's short-lived one.
    let pid = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                supervisor
                    .spawn("sleeper", shell("exec sleep 1000"))
                    .unwrap()
            })
            .join()
            .unwrap()
    });
    holds_for("the child running", Duration::from_millis(300), || {
        alive(pid)
    });
    assert_eq!(supervisor.restarts("sleeper").unwrap(), 0);
}
