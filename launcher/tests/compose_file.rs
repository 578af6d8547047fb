//! `docker-compose.yml` and `docker/entrypoint` against the topology table
//! (`launcher/src/topology.rs`): the same process names and the same fixed ports, so that the
//! containers and `scripts/up` cannot drift apart. The compose file is read line by line (its
//! layout is plain: services at two spaces, their keys below), without a YAML parser.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use launcher::monitoring;
use launcher::topology::{
    compose, Instances, PatroniPorts, Ports, Service, ETCD, NODES_PER_DATABASE, PROMETHEUS_PORT,
};

fn repository_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The top-level blocks (`x-service`, `services`, `volumes`, ...) and the compose services,
/// each with its lines.
struct ComposeFile {
    top: BTreeMap<String, Vec<String>>,
    services: BTreeMap<String, Vec<String>>,
}

/// The key a line opens at `indent` spaces (`name:` or `name: &anchor`), if it does.
fn key_at(line: &str, indent: usize) -> Option<String> {
    let rest = line.strip_prefix(&" ".repeat(indent))?;
    if rest.starts_with(' ') || rest.starts_with('#') || rest.starts_with('-') {
        return None;
    }
    let (key, _) = rest.split_once(':')?;
    (!key.is_empty() && !key.contains(' ')).then(|| key.to_owned())
}

impl ComposeFile {
    fn read() -> Self {
        let text = repository_file("docker-compose.yml");
        let mut top: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut services: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let (mut block, mut service) = (None::<String>, None::<String>);
        for line in text.lines() {
            if let Some(key) = key_at(line, 0) {
                block = Some(key);
                service = None;
                continue;
            }
            if block.as_deref() == Some("services") {
                if let Some(key) = key_at(line, 2) {
                    service = Some(key);
                    continue;
                }
            }
            if let Some(name) = &service {
                services
                    .entry(name.clone())
                    .or_default()
                    .push(line.to_owned());
            }
            if let Some(name) = &block {
                top.entry(name.clone()).or_default().push(line.to_owned());
            }
        }
        ComposeFile { top, services }
    }

    fn service(&self, name: &str) -> String {
        self.services
            .get(name)
            .unwrap_or_else(|| panic!("no compose service {name}"))
            .join("\n")
    }

    fn top(&self, name: &str) -> String {
        self.top
            .get(name)
            .unwrap_or_else(|| panic!("no top-level {name}"))
            .join("\n")
    }
}

fn assert_has(text: &str, wanted: &str, what: &str) {
    assert!(text.contains(wanted), "{what} lacks {wanted:?}:\n{text}");
}

fn ports() -> Ports {
    Ports::fixed(Instances::default())
}

fn gateway_url(port: u16) -> String {
    format!("http://{}:{port}", compose::GATEWAY)
}

#[test]
fn the_compose_services_are_the_processes_of_the_topology() {
    let file = ComposeFile::read();
    let ports = ports();
    let mut expected: BTreeSet<String> = [
        ETCD,
        compose::DATABASE_ROUTER,
        compose::GATEWAY,
        monitoring::PROCESS,
        // Compose only, behind a profile: the launcher serves the consoles instead.
        "grafana",
    ]
    .map(str::to_owned)
    .into();
    for service in Service::ALL {
        expected.extend((1..=NODES_PER_DATABASE).map(|n| service.patroni_node(n)));
        expected.extend(ports.processes(service).into_iter().map(|(name, _)| name));
    }
    let found: BTreeSet<String> = file.services.keys().cloned().collect();
    assert_eq!(found, expected);
    for service in Service::ALL {
        for n in 1..=NODES_PER_DATABASE {
            let node = service.patroni_node(n);
            assert_has(
                &file.service(&node),
                &format!("WDM_DATABASE: {}", service.name()),
                &node,
            );
        }
    }
}

#[test]
fn the_compose_services_reach_each_other_on_the_fixed_ports() {
    let file = ComposeFile::read();
    let ports = ports();
    let listen = format!("LISTEN_ADDR: 0.0.0.0:{}", compose::SERVICE_PORT);
    for service in Service::ALL {
        let name = service.instance_process(1);
        let block = file.service(&name);
        assert_has(&block, &listen, &name);
        let database = compose::database_url(ports.postgres(service));
        assert_has(&block, &format!("DATABASE_URL: {database}"), &name);
    }

    let coordinator = file.service(&Service::Coordinator.instance_process(1));
    let participants: Vec<String> = Service::PARTICIPANTS
        .into_iter()
        .map(|service| {
            let instances: Vec<String> = ports
                .processes(service)
                .into_iter()
                .map(|(name, _)| format!("http://{name}:{}", compose::SERVICE_PORT))
                .collect();
            format!(
                "{},{},{}",
                service.name(),
                instances.join("|"),
                compose::database_url(ports.postgres(service))
            )
        })
        .collect();
    let listed: Vec<String> = coordinator
        .lines()
        .map(str::trim)
        .filter(|line| participants.iter().any(|p| p == line))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        listed, participants,
        "COORDINATOR_PARTICIPANTS, in prepare order"
    );

    let order = file.service(&Service::Order.instance_process(1));
    let stock = format!("STOCK_URL: {}", gateway_url(ports.stock_internal));
    assert_has(&order, &stock, "order-1");
    let coordinators: Vec<String> = ports
        .processes(Service::Coordinator)
        .into_iter()
        .map(|(name, _)| format!("http://{name}:{}", compose::SERVICE_PORT))
        .collect();
    let urls = format!("COORDINATOR_URLS: {}", coordinators.join(" "));
    assert_has(&order, &urls, "order-1");

    let health = |port: u16| format!(":{port}/health");
    assert_has(
        &file.top("x-service"),
        &health(compose::SERVICE_PORT),
        "x-service",
    );
    assert_has(
        &file.top("x-patroni"),
        &health(compose::PATRONI_REST_PORT),
        "x-patroni",
    );

    let etcd = file.service(ETCD);
    let ha = PatroniPorts::fixed();
    for flag in [
        format!("--listen-client-urls=http://0.0.0.0:{}", ha.etcd_client),
        format!("--advertise-client-urls=http://{ETCD}:{}", ha.etcd_client),
        format!("--listen-peer-urls=http://0.0.0.0:{}", ha.etcd_peer),
        format!(
            "--initial-advertise-peer-urls=http://{ETCD}:{}",
            ha.etcd_peer
        ),
    ] {
        assert_has(&etcd, &flag, ETCD);
    }

    let published =
        |variable: &str, port: u16| format!("\"127.0.0.1:${{{variable}:-{port}}}:{port}\"");
    assert_has(
        &file.service(compose::GATEWAY),
        &published("WDM_GATEWAY_PORT", ports.gateway),
        compose::GATEWAY,
    );
    let prometheus = file.service(monitoring::PROCESS);
    assert_has(
        &prometheus,
        &published("WDM_PROMETHEUS_PORT", PROMETHEUS_PORT),
        monitoring::PROCESS,
    );
    assert_has(
        &prometheus,
        &format!("localhost:{PROMETHEUS_PORT}/-/ready"),
        monitoring::PROCESS,
    );
}

#[test]
fn the_container_entrypoint_binds_the_fixed_ports() {
    let entrypoint = repository_file("docker/entrypoint");
    let ports = ports();
    let any = |port: u16| format!("0.0.0.0:{port}");
    for (variable, port) in [
        ("T_gateway_bind", ports.gateway),
        ("T_metrics_bind", ports.haproxy_metrics[0]),
        ("T_stock_internal_bind", ports.stock_internal),
        ("T_payment_internal_bind", ports.payment_internal),
        ("T_order_internal_bind", ports.order_internal),
    ] {
        assert_has(
            &entrypoint,
            &format!("{variable}={}", any(port)),
            "docker/entrypoint",
        );
    }
    // The database router's frontends: consecutive ports from the first, in Service::ALL order.
    let names: Vec<&str> = Service::ALL.iter().map(|s| s.name()).collect();
    assert_has(
        &entrypoint,
        &format!("databases=\"{}\"", names.join(" ")),
        "docker/entrypoint",
    );
    assert_has(
        &entrypoint,
        &format!("port={}", ports.postgres[0]),
        "docker/entrypoint",
    );
    for (index, service) in Service::ALL.into_iter().enumerate() {
        assert_eq!(ports.postgres(service), ports.postgres[0] + index as u16);
    }
    for wanted in [
        format!(":{}", compose::PATRONI_REST_PORT),
        format!(":{}", compose::POSTGRES_PORT),
        format!("{ETCD}:{}", PatroniPorts::fixed().etcd_client),
        format!("--web.listen-address={}", any(PROMETHEUS_PORT)),
        format!("%s-%s:{}", compose::SERVICE_PORT),
    ] {
        assert_has(&entrypoint, &wanted, "docker/entrypoint");
    }
}
