//! The HAProxy gateway: its configuration, rendered from `haproxy/gateway.cfg.tmpl` (where the
//! design is explained) and the backend addresses, and the command that runs it in the
//! foreground under the supervisor.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::postgres::run;
use crate::supervisor::CommandSpec;

/// The repository's gateway template, built into the launcher so the binary runs anywhere.
pub const TEMPLATE: &str = include_str!("../../haproxy/gateway.cfg.tmpl");

/// The database router's template (high-availability mode).
pub const DATABASES_TEMPLATE: &str = include_str!("../../haproxy/databases.cfg.tmpl");

/// The HAProxy executable, looked up on `PATH` when it runs.
pub const BINARY: &str = "haproxy";

/// The addresses the gateway binds and forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// The public frontend.
    pub gateway: SocketAddr,
    /// Internal frontends, one per service.
    pub stock_internal: SocketAddr,
    pub payment_internal: SocketAddr,
    pub order_internal: SocketAddr,
    /// HAProxy's own Prometheus exporter (loopback).
    pub metrics: SocketAddr,
    /// The instances of each service.
    pub order: Vec<SocketAddr>,
    pub stock: Vec<SocketAddr>,
    pub payment: Vec<SocketAddr>,
}

impl GatewayConfig {
    /// Renders `template` (normally [`TEMPLATE`]) for these addresses.
    pub fn render(&self, template: &str) -> Result<String> {
        let mut values = BTreeMap::new();
        values.insert("gateway_bind", self.gateway.to_string());
        values.insert("stock_internal_bind", self.stock_internal.to_string());
        values.insert("payment_internal_bind", self.payment_internal.to_string());
        values.insert("order_internal_bind", self.order_internal.to_string());
        values.insert("metrics_bind", self.metrics.to_string());
        for (backend, servers, primary, tracking) in [
            (
                "order",
                &self.order,
                "order_servers",
                "order_tracking_servers",
            ),
            (
                "stock",
                &self.stock,
                "stock_servers",
                "stock_tracking_servers",
            ),
            (
                "payment",
                &self.payment,
                "payment_servers",
                "payment_tracking_servers",
            ),
        ] {
            values.insert(primary, server_lines(backend, servers, |_| "check".into()));
            values.insert(
                tracking,
                server_lines(backend, servers, |name| format!("track {backend}/{name}")),
            );
        }
        render_template(template, &values)
    }

    /// Renders [`TEMPLATE`] into `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = self.render(TEMPLATE)?;
        std::fs::write(path, text).context(|| format!("writing {}", path.display()))
    }
}

/// A server of the database router: a Patroni node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseNode {
    pub name: String,
    /// Its PostgreSQL address.
    pub postgres: SocketAddr,
    /// Its Patroni REST port (checked with `GET /primary`).
    pub rest_port: u16,
}

/// The database router of the high-availability mode: per database, the frontend services
/// connect to and the Patroni nodes behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseRouterConfig {
    /// `(database, frontend, nodes)`.
    pub databases: Vec<(String, SocketAddr, Vec<DatabaseNode>)>,
}

impl DatabaseRouterConfig {
    /// Renders `template` (normally [`DATABASES_TEMPLATE`]).
    pub fn render(&self, template: &str) -> Result<String> {
        let mut frontends = String::new();
        for (database, bind, nodes) in &self.databases {
            // Writing to a String cannot fail.
            let _ = writeln!(
                frontends,
                "frontend db_{database}\n    bind {bind}\n    default_backend db_{database}\n\nbackend db_{database}"
            );
            for node in nodes {
                let _ = writeln!(
                    frontends,
                    "    server {} {} check port {}",
                    node.name, node.postgres, node.rest_port
                );
            }
            frontends.push('\n');
        }
        let mut values = BTreeMap::new();
        values.insert("frontends", frontends.trim_end().to_owned());
        render_template(template, &values)
    }

    /// Renders [`DATABASES_TEMPLATE`] into `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = self.render(DATABASES_TEMPLATE)?;
        std::fs::write(path, text).context(|| format!("writing {}", path.display()))
    }
}

/// `    server <backend>-<i> <addr> <options>` for each address, numbered from 1.
fn server_lines(backend: &str, servers: &[SocketAddr], options: impl Fn(&str) -> String) -> String {
    let mut lines = String::new();
    for (index, address) in servers.iter().enumerate() {
        let name = format!("{backend}-{}", index + 1);
        // Writing to a String cannot fail.
        let _ = writeln!(lines, "    server {name} {address} {}", options(&name));
    }
    lines.trim_end().to_owned()
}

/// Replaces every `{{name}}` in `template` with `values[name]`; a placeholder without a value,
/// or a value no placeholder uses, is an error (both mean template and code disagree).
pub fn render_template(template: &str, values: &BTreeMap<&str, String>) -> Result<String> {
    let mut output = String::with_capacity(template.len());
    let mut used = std::collections::BTreeSet::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        output.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| Error::Config("unterminated {{ in the haproxy template".into()))?;
        let key = after[..end].trim();
        let value = values
            .get(key)
            .ok_or_else(|| Error::Config(format!("no value for {{{{{key}}}}} in the template")))?;
        output.push_str(value);
        used.insert(key);
        rest = &after[end + 2..];
    }
    output.push_str(rest);
    if let Some(unused) = values.keys().find(|key| !used.contains(*key)) {
        return Err(Error::Config(format!(
            "the haproxy template has no {{{{{unused}}}}} placeholder"
        )));
    }
    Ok(output)
}

/// Checks a configuration file with `haproxy -c`.
pub fn validate(config: &Path) -> Result<()> {
    let mut command = Command::new(BINARY);
    command.arg("-c").arg("-f").arg(config);
    run(command).map(|_| ())
}

/// HAProxy in the foreground (`-db`) on `config`, for the supervisor.
pub fn command_spec(config: &Path) -> CommandSpec {
    CommandSpec::new(BINARY).arg("-f").arg(config).arg("-db")
}

/// Linux's switch that hands the connections queued on a closing SO_REUSEPORT listener to
/// another listener of its group instead of resetting them (since 5.14).
const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Makes a killed gateway process lose only the connections it had accepted: without
/// `tcp_migrate_req`, a connection the kernel queued on its listener in the milliseconds
/// between the SIGKILL and the socket's close is reset, and a client retrying a cut request at
/// once lands there (seen in `tests/faults.rs`). The setting is per network namespace; it is
/// set when possible (root), and only warned about otherwise. Returns whether it is on.
pub fn migrate_queued_connections() -> bool {
    match std::fs::read_to_string(MIGRATE_REQ) {
        Ok(value) if value.trim() == "1" => true,
        Ok(_) => match std::fs::write(MIGRATE_REQ, "1") {
            Ok(()) => {
                tracing::info!("set net.ipv4.tcp_migrate_req = 1 for the gateway processes");
                true
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    "cannot set net.ipv4.tcp_migrate_req = 1: a killed gateway process also \
                     resets the connections queued on its listeners"
                );
                false
            }
        },
        Err(error) => {
            tracing::warn!(%error, "no {MIGRATE_REQ} (Linux before 5.14?)");
            false
        }
    }
}

/// The full path of the HAProxy binary, if installed.
pub fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(BINARY))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_router_checks_patroni_for_the_primary() {
        let node = |name: &str, port: u16| DatabaseNode {
            name: name.to_owned(),
            postgres: SocketAddr::from(([127, 0, 0, 1], port)),
            rest_port: port + 1,
        };
        let config = DatabaseRouterConfig {
            databases: vec![(
                "stock".to_owned(),
                SocketAddr::from(([127, 0, 0, 1], 5502)),
                vec![node("pg-stock-1", 5521), node("pg-stock-2", 5523)],
            )],
        };
        let text = config.render(DATABASES_TEMPLATE).unwrap();
        assert!(text.contains("frontend db_stock\n    bind 127.0.0.1:5502"));
        assert!(text.contains("server pg-stock-2 127.0.0.1:5523 check port 5524"));
        assert!(text.contains("option httpchk GET /primary"));
        assert!(text.contains("on-marked-down shutdown-sessions"));
    }

    fn values(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, String> {
        pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
    }

    #[test]
    fn placeholders_are_replaced_by_their_values() {
        let text = render_template("a {{x}} b {{ y }}", &values(&[("x", "1"), ("y", "2")]));
        assert_eq!(text.unwrap(), "a 1 b 2");
    }

    #[test]
    fn a_placeholder_without_value_is_an_error() {
        assert!(render_template("{{x}}", &values(&[])).is_err());
    }

    #[test]
    fn a_value_without_placeholder_is_an_error() {
        assert!(render_template("text", &values(&[("x", "1")])).is_err());
    }
}
