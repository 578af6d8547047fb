//! The gateway configuration, checked by HAProxy itself and exercised with a real HAProxy in
//! front of small HTTP servers that answer with their own name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use launcher::haproxy::{self, GatewayConfig};
use launcher::topology::gateway_process;
use launcher::{ports, ScratchDir, Supervisor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

fn addresses(n: usize) -> Vec<SocketAddr> {
    ports::free_ports(n)
        .unwrap()
        .into_iter()
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .collect()
}

fn gateway_config() -> GatewayConfig {
    let [gateway, stock_internal, payment_internal, order_internal, metrics] = addresses(5)[..]
    else {
        unreachable!()
    };
    GatewayConfig {
        gateway,
        stock_internal,
        payment_internal,
        order_internal,
        metrics,
        order: addresses(2),
        stock: addresses(2),
        payment: addresses(2),
    }
}

#[test]
fn the_rendered_gateway_config_passes_haproxy_validation() {
    let dir = ScratchDir::new("haproxy").unwrap();
    let config = gateway_config();
    let path = dir.path().join("gateway.cfg");
    config.write(&path).unwrap();

    haproxy::validate(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("{{"), "unrendered placeholder:\n{text}");
    assert!(text.contains(&format!("server order-2 {} check", config.order[1])));
    assert!(text.contains(&format!(
        "server stock-1 {} track stock/stock-1",
        config.stock[0]
    )));
}

/// An HTTP server answering every request with "<name> <method> <path>" (and 200 on /health).
fn fake_instance(name: String, listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let name = name.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&request);
                let mut words = head.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let body = format!("{name} {method} {path}");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    })
}

struct Gateway {
    _dir: ScratchDir,
    supervisor: Supervisor,
    config: GatewayConfig,
    /// Each HAProxy process's name and exporter address.
    processes: Vec<(String, SocketAddr)>,
    instances: BTreeMap<String, JoinHandle<()>>,
    client: reqwest::Client,
}

impl Gateway {
    async fn start() -> Gateway {
        Gateway::start_processes(1).await
    }

    /// `count` HAProxy processes on the same frontends, each with its own exporter, as the
    /// launcher runs them.
    async fn start_processes(count: usize) -> Gateway {
        haproxy::migrate_queued_connections();
        let dir = ScratchDir::new("haproxy").unwrap();
        let config = gateway_config();
        let mut instances = BTreeMap::new();
        for (service, servers) in [
            ("order", &config.order),
            ("stock", &config.stock),
            ("payment", &config.payment),
        ] {
            for (index, address) in servers.iter().enumerate() {
                let name = format!("{service}-{}", index + 1);
                let listener = TcpListener::bind(address).await.unwrap();
                instances.insert(name.clone(), fake_instance(name, listener));
            }
        }
        let supervisor = Supervisor::new(dir.path()).unwrap();
        let mut processes = Vec::new();
        for (index, metrics) in std::iter::once(config.metrics)
            .chain(addresses(count - 1))
            .enumerate()
        {
            let name = gateway_process(index + 1);
            let path = dir.path().join(format!("{name}.cfg"));
            GatewayConfig {
                metrics,
                ..config.clone()
            }
            .write(&path)
            .unwrap();
            supervisor
                .spawn(&name, haproxy::command_spec(&path))
                .unwrap();
            processes.push((name, metrics));
        }
        let gateway = Gateway {
            _dir: dir,
            supervisor,
            config,
            processes,
            instances,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        };
        // Ready when every backend has a server up and every process's exporter answers.
        for path in ["/orders/x", "/stock/x", "/payment/x"] {
            gateway.eventually_answered_by(path, "").await;
        }
        for (name, metrics) in &gateway.processes {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while gateway.accepted(*metrics).await.is_none() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name}'s exporter on {metrics} never answered"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        gateway
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.config.gateway)
    }

    async fn get(&self, url: &str) -> (u16, String) {
        match self.client.get(url).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
            Err(error) => (0, error.to_string()),
        }
    }

    async fn eventually_answered_by(&self, path: &str, prefix: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.get(&self.url(path)).await;
            if status == 200 && body.starts_with(prefix) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} never answered by {prefix:?}: last {status} {body} (logs in {})",
                self.supervisor.logs_dir().display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_routes_by_prefix_without_stripping_and_balances_both_instances() {
    let gateway = Gateway::start().await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let (status, body) = gateway.get(&gateway.url("/stock/find/7")).await;
        assert_eq!(status, 200);
        let (name, rest) = body.split_once(' ').unwrap();
        assert_eq!(rest, "GET /stock/find/7");
        seen.insert(name.to_owned());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["stock-1", "stock-2"]);

    let response = gateway
        .client
        .post(gateway.url("/orders/checkout/5"))
        .send()
        .await
        .unwrap();
    assert!(response
        .text()
        .await
        .unwrap()
        .ends_with("POST /orders/checkout/5"));
    let (_, body) = gateway.get(&gateway.url("/payment/find_user/1")).await;
    assert!(body.starts_with("payment-"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_paths_are_not_reachable_through_the_gateway_but_through_internal_frontends() {
    let gateway = Gateway::start().await;
    for path in [
        "/_2pc/prepare",
        "/metrics",
        "/health",
        "/",
        "/stockx/find/1",
    ] {
        let (status, _) = gateway.get(&gateway.url(path)).await;
        assert_eq!(status, 404, "{path}");
    }
    let internal = format!("http://{}/_2pc/prepare", gateway.config.stock_internal);
    let response = gateway.client.post(&internal).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.text().await.unwrap().starts_with("stock-"));
    let internal = format!("http://{}/metrics", gateway.config.order_internal);
    let (status, body) = gateway.get(&internal).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("order-"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_instance_gets_no_traffic_and_no_request_fails() {
    let mut gateway = Gateway::start().await;
    gateway.instances.remove("payment-1").unwrap().abort();

    // Retries on refused connections go to the other instance: not one request fails, before
    // or after the health checks have marked the instance down.
    for _ in 0..20 {
        let response = gateway
            .client
            .post(gateway.url("/payment/pay/1/1"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert!(response.text().await.unwrap().starts_with("payment-2"));
    }
}

impl Gateway {
    /// Connections the public frontend of the process exporting on `metrics` has accepted,
    /// from its own Prometheus exporter; `None` while that process does not answer.
    async fn accepted(&self, metrics: SocketAddr) -> Option<u64> {
        let (status, body) = self.get(&format!("http://{metrics}/metrics")).await;
        if status != 200 {
            return None;
        }
        body.lines()
            .find(|line| {
                line.starts_with("haproxy_frontend_connections_total")
                    && line.contains("proxy=\"gateway\"")
            })
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
    }

    /// `count` requests, each on a new connection (so the kernel picks a listener for
    /// each), that must all succeed.
    async fn all_served_on_new_connections(&self, phase: &str, count: usize) {
        let fresh = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        for attempt in 0..count {
            let response = fresh.get(self.url("/stock/find/1")).send().await;
            let status = response.as_ref().map(|r| r.status().as_u16());
            assert!(
                matches!(status, Ok(200)),
                "{phase}: request {attempt} on a new connection: {response:?}"
            );
        }
    }
}

/// Two HAProxy processes share the gateway's ports (SO_REUSEPORT, HAProxy's default on
/// Linux): both take connections; once one is killed, every new connection is served by the
/// other at once, and the supervisor brings the killed one back, serving again.
#[tokio::test(flavor = "multi_thread")]
async fn two_gateway_processes_share_the_ports_and_one_killed_loses_no_new_connection() {
    let gateway = Gateway::start_processes(2).await;
    let [(first, first_metrics), (_, second_metrics)] = &gateway.processes[..] else {
        unreachable!()
    };
    gateway.all_served_on_new_connections("both up", 40).await;
    for metrics in [first_metrics, second_metrics] {
        let accepted = gateway.accepted(*metrics).await.expect("exporter answers");
        assert!(
            accepted > 0,
            "the process exporting on {metrics} took no connection"
        );
    }

    let killed = gateway
        .supervisor
        .kill(first)
        .unwrap()
        .expect("gateway-1 ran");
    // Its listening sockets close once its last thread has exited (then the supervisor reaps
    // it); until then the kernel may still queue a connection on them, which is one of the
    // requests a kill may lose.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while gateway.supervisor.pid(first).unwrap() == Some(killed) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{first} did not die"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gateway
        .all_served_on_new_connections("one killed", 40)
        .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pid = gateway.supervisor.pid(first).unwrap();
        if pid.is_some_and(|pid| pid != killed) && gateway.accepted(*first_metrics).await.is_some()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{first} was not restarted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gateway.supervisor.restarts(first).unwrap(), 1);
    // The restarted process takes its share of new connections again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gateway.accepted(*first_metrics).await == Some(0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted {first} took no connection"
        );
        gateway
            .all_served_on_new_connections("one restarted", 10)
            .await;
    }
}
