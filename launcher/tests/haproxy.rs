//! The gateway configuration, checked by HAProxy itself and exercised with a real HAProxy in
//! front of small HTTP servers that answer with their own name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use launcher::haproxy::{self, GatewayConfig};
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
    instances: BTreeMap<String, JoinHandle<()>>,
    client: reqwest::Client,
}

impl Gateway {
    async fn start() -> Gateway {
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
        let path = dir.path().join("gateway.cfg");
        config.write(&path).unwrap();
        let supervisor = Supervisor::new(dir.path()).unwrap();
        supervisor
            .spawn("haproxy", haproxy::command_spec(&path))
            .unwrap();
        let gateway = Gateway {
            _dir: dir,
            supervisor,
            config,
            instances,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        };
        // Ready when every backend has a server up.
        for path in ["/orders/x", "/stock/x", "/payment/x"] {
            gateway.eventually_answered_by(path, "").await;
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
                "{path} never answered by {prefix:?}: last {status} {body} (log {})",
                self.supervisor.log_path("haproxy").display()
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
