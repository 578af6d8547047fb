//! The `wdm-launcher` commands: `up` (foreground or detached), `down`, `test-postgres`.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::monitoring::{Monitoring, MonitoringConfig, ScrapeTargets};
use crate::ports;
use crate::postgres::PostgresInstance;
use crate::supervisor::Supervisor;
use crate::system::{Databases, PatroniPorts, System, SystemConfig};
use crate::unix::{self, Signal};

/// How long `down` waits for a detached launcher to stop everything and exit.
const DOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts and stops the checkout system on this machine.
#[derive(Debug, Parser)]
#[command(name = "wdm-launcher", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Subcommands,
}

#[derive(Debug, Subcommand)]
enum Subcommands {
    /// Start the system from built binaries and keep it running until Ctrl-C or SIGTERM.
    Up(UpArgs),
    /// Stop a launcher started with `up --detach`.
    Down(DataArgs),
    /// Run one PostgreSQL server on a free port for the crate tests; its admin URL is
    /// written to DIR/url once it accepts connections.
    TestPostgres(TestPostgresArgs),
}

#[derive(Debug, Args)]
struct DataArgs {
    /// Data, logs and the pid file of a detached launcher.
    #[arg(long, env = "WDM_DATA_DIR", default_value = ".data")]
    data_dir: PathBuf,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Run in the background; return once the gateway is ready.
    #[arg(long)]
    detach: bool,
    /// Delete all data (databases, logs) before starting.
    #[arg(long)]
    reset: bool,
    /// High availability: each database a Patroni cluster (primary and synchronous standby)
    /// with etcd, reached through HAProxy on the usual database ports.
    #[arg(long)]
    ha: bool,
    /// Where the service binaries are.
    #[arg(long, env = "WDM_RELEASE_DIR", default_value = "target/release")]
    release_dir: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Also run Prometheus (Debian's `prometheus`) on 127.0.0.1:9090, scraping every process,
    /// with the alert rules and the console dashboards.
    #[arg(long)]
    monitoring: bool,
    /// Internal: this process is the detached launcher (writes the pid file when ready).
    #[arg(long, hide = true)]
    daemon: bool,
}

#[derive(Debug, Args)]
struct TestPostgresArgs {
    /// The server's directory (data is kept between runs).
    #[arg(long)]
    dir: PathBuf,
}

impl Cli {
    /// Runs the chosen command.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Subcommands::Up(args) => up(args).await,
            Subcommands::Down(args) => down(&args.data_dir),
            Subcommands::TestPostgres(args) => test_postgres(&args.dir).await,
        }
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = &args.data.data_dir;
    let pid_file = data_dir.join("launcher.pid");
    if !args.daemon {
        if let Some(pid) = running_launcher(&pid_file) {
            bail!("a launcher is already running (pid {pid}): stop it with scripts/down");
        }
        if args.reset {
            match std::fs::remove_dir_all(data_dir) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(error).context(format!("removing {}", data_dir.display()));
                }
                _ => tracing::info!(dir = %data_dir.display(), "data wiped"),
            }
        }
    }
    let mut config = SystemConfig::fixed(data_dir, &args.release_dir);
    if args.ha {
        config = config.with_databases(Databases::Patroni(PatroniPorts::fixed()));
    }
    if args.detach {
        return detach(&args, &config, &pid_file);
    }
    let system = tokio::select! {
        system = System::start(config) => system?,
        () = shutdown_signal() => {
            tracing::info!("interrupted during start-up");
            return Ok(());
        }
    };
    println!("gateway ready at {}", system.gateway_url());
    if args.monitoring {
        let targets = ScrapeTargets::fixed(&system.config().ports);
        let monitoring = Monitoring::start(&system, &MonitoringConfig::fixed(), &targets).await?;
        println!("monitoring ready at {}", monitoring.console_url());
    }
    if args.daemon {
        write_atomically(&pid_file, &format!("{}\n", std::process::id()))?;
    }
    shutdown_signal().await;
    tracing::info!("stopping the system");
    tokio::task::spawn_blocking(move || drop(system))
        .await
        .context("stopping the system")?;
    if args.daemon {
        let _ = std::fs::remove_file(&pid_file);
    }
    tracing::info!("stopped");
    Ok(())
}

/// Runs this launcher again as a daemon in its own session and waits until it is ready
/// (it writes the pid file) or has failed. Re-executing rather than forking: a process with
/// threads (the async runtime) cannot safely fork and carry on.
fn detach(args: &UpArgs, config: &SystemConfig, pid_file: &Path) -> anyhow::Result<()> {
    let logs = args.data.data_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let _ = std::fs::remove_file(pid_file);
    let log_path = logs.join("launcher.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let exe = std::env::current_exe().context("locating the launcher binary")?;
    let mut command = Command::new(exe);
    command
        .arg("up")
        .arg("--daemon")
        .args(args.monitoring.then_some("--monitoring"))
        .arg("--release-dir")
        .arg(&args.release_dir)
        .arg("--data-dir")
        .arg(&args.data.data_dir)
        .args(args.ha.then_some("--ha"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and the closure allocates nothing.
    unsafe {
        command.pre_exec(unix::new_session);
    }
    let mut child = command.spawn().context("starting the detached launcher")?;
    let deadline = Instant::now() + config.ready_timeout + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the detached launcher exited during start-up ({status}); see {}",
                log_path.display()
            );
        }
        if read_pid(pid_file) == Some(child.id()) {
            println!(
                "gateway ready at http://127.0.0.1:{} (launcher pid {}, log {})",
                config.ports.gateway,
                child.id(),
                log_path.display()
            );
            if args.monitoring {
                println!(
                    "monitoring ready at {}",
                    crate::monitoring::fixed_console_url()
                );
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the detached launcher is not ready; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn down(data_dir: &Path) -> anyhow::Result<()> {
    let pid_file = data_dir.join("launcher.pid");
    let Some(pid) = running_launcher(&pid_file) else {
        let _ = std::fs::remove_file(&pid_file);
        println!("no detached launcher is running");
        return Ok(());
    };
    unix::signal_process(pid, Signal::Term).with_context(|| format!("signalling pid {pid}"))?;
    let deadline = Instant::now() + DOWN_TIMEOUT;
    while unix::process_alive(pid) {
        if Instant::now() >= deadline {
            bail!("launcher pid {pid} did not exit within {DOWN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(&pid_file);
    println!("stopped launcher pid {pid}");
    Ok(())
}

async fn test_postgres(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let url_file = dir.join("url");
    let _ = std::fs::remove_file(&url_file);
    let instance = PostgresInstance::new(dir.join("pg"), ports::free_port()?)?;
    let init = instance.clone();
    tokio::task::spawn_blocking(move || init.init()).await??;
    let supervisor = Supervisor::new(dir.join("logs"))?;
    supervisor.spawn("postgres", instance.command_spec())?;
    tokio::select! {
        ready = instance.wait_ready(Duration::from_secs(60)) => ready?,
        () = shutdown_signal() => return Ok(()),
    }
    let url = instance.url(crate::topology::ADMIN_DATABASE);
    write_atomically(&url_file, &url)?;
    println!("{url}");
    shutdown_signal().await;
    let _ = std::fs::remove_file(&url_file);
    tokio::task::spawn_blocking(move || drop(supervisor)).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The pid in `pid_file` if that process still runs.
fn running_launcher(pid_file: &Path) -> Option<u32> {
    read_pid(pid_file).filter(|pid| *pid != std::process::id() && unix::process_alive(*pid))
}

fn read_pid(pid_file: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// Writes through a temporary file and a rename, so readers never see half a file.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))
}
