//! Readiness: when a started system counts as up. Every instance healthy, every internal
//! frontend forwarding, the gateway answering on every prefix, and every gateway process
//! seeing a live server in every backend; each probe waited for with the start-up's deadline.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Probes that answer through the gateway once each prefix has a live backend: an unknown id
/// is a 4xx from the service, while HAProxy itself answers 503 when no server is up.
const GATEWAY_PROBES: [&str; 3] = [
    "/orders/find/launcher-probe",
    "/stock/find/launcher-probe",
    "/payment/find_user/launcher-probe",
];

/// The URLs a system answers on once it is ready.
pub(super) struct Probes {
    /// `(url, must_be_ok)`: a URL that must answer 2xx, or (false) answer at all with
    /// anything but HAProxy's own 502-504.
    pub(super) checks: Vec<(String, bool)>,
    /// Each gateway process's exporter, whose backends must all have a live server.
    pub(super) views: Vec<String>,
}

impl Probes {
    /// [`GATEWAY_PROBES`] on `gateway_url`, after `checks`.
    pub(super) fn new(
        mut checks: Vec<(String, bool)>,
        gateway_url: &str,
        views: Vec<String>,
    ) -> Self {
        for probe in GATEWAY_PROBES {
            checks.push((format!("{gateway_url}{probe}"), false));
        }
        Probes { checks, views }
    }

    /// Waits until every probe passes, in order, at most until `deadline` (`limit` is its
    /// length, for the message; `logs` where to look when it fails).
    pub(super) async fn wait(self, deadline: Instant, limit: Duration, logs: &Path) -> Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|error| Error::Config(format!("building an HTTP client: {error}")))?;
        for (url, must_be_ok) in self.checks {
            loop {
                let answered = match client.get(&url).send().await {
                    Ok(response) if must_be_ok => response.status().is_success(),
                    // A service's own answer, whatever it is, proves the route works; 502-504
                    // come from HAProxy when no backend is up.
                    Ok(response) => !matches!(response.status().as_u16(), 502..=504),
                    Err(_) => false,
                };
                if answered {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        what: format!("{url} to answer (logs in {})", logs.display()),
                        seconds: limit.as_secs(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // A request on the shared gateway port lands on either process, and each one marks
        // its servers up on its own health checks: wait until every process sees a live
        // server in every backend.
        for url in self.views {
            loop {
                let text = match client.get(&url).send().await {
                    Ok(response) if response.status().is_success() => {
                        response.text().await.unwrap_or_default()
                    }
                    _ => String::new(),
                };
                if every_backend_has_a_server(&text) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        what: format!("every backend of {url} to have a live server"),
                        seconds: limit.as_secs(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

/// True if HAProxy's Prometheus exposition `text` lists backends and each has at least one
/// active server (`haproxy_backend_active_servers{proxy="…"} N`, N ≥ 1).
fn every_backend_has_a_server(text: &str) -> bool {
    let mut counts = text
        .lines()
        .filter(|line| line.starts_with("haproxy_backend_active_servers{"))
        .map(|line| {
            line.rsplit(' ')
                .next()
                .and_then(|value| value.parse::<f64>().ok())
                .unwrap_or(0.0)
        })
        .peekable();
    counts.peek().is_some() && counts.all(|count| count >= 1.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_gateway_is_ready_once_every_backend_has_a_live_server() {
        let up = "# TYPE haproxy_backend_active_servers gauge\n\
                  haproxy_backend_active_servers{proxy=\"order\"} 2\n\
                  haproxy_backend_active_servers{proxy=\"stock\"} 1\n";
        let one_down = "haproxy_backend_active_servers{proxy=\"order\"} 2\n\
                        haproxy_backend_active_servers{proxy=\"stock\"} 0\n";
        assert!(super::every_backend_has_a_server(up));
        assert!(!super::every_backend_has_a_server(one_down));
        assert!(!super::every_backend_has_a_server("# no backends yet\n"));
    }
}
