"""The checks of k8s/, without a cluster (run by scripts/check-k8s, which prepares the venv).

1. The generated files of k8s/base are in step with their sources (`--sync` rewrites them):
   gateway/gateway.cfg (haproxy/gateway.cfg.tmpl rendered), monitoring/prometheusrule.yaml
   (prometheus/alerts.yml), monitoring/dashboards/checkout.json (grafana/dashboards/).
2. `kubectl kustomize` renders every overlay.
3. Every rendered object validates against the Kubernetes JSON schemas (kubernetes-validate,
   strict: unknown fields are errors); the custom resources against crds.py.
4. Assertions on the rendered objects of each overlay: replicas, CPU budget, requests equal to
   limits, probes, spreading, disruption budgets, references between objects, images,
   environment and ports against docker-compose.yml, the coordinators' identities and list,
   the databases' settings and sizing, the gateway's hidden routes, the monitoring.

Facts are read where they live, at check time: docker-compose.yml, the templates, the alert
rules, and the few constants of the Rust sources named below.
"""

import argparse
import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit

import yaml
import kubernetes_validate
import kubernetes_validate.utils

import crds

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
BASE = K8S / "base"

# Oldest and newest Kubernetes minor release supported at the time of writing (both bundled by
# the pinned kubernetes-validate).
KUBERNETES_VERSIONS = ("1.35", "1.37")

# What each overlay promises beyond the common assertions.
OVERLAYS = {
    "small": {"cpu_budget": 20, "autoscaled": set()},
    "large": {"cpu_budget": None, "autoscaled": {"order", "stock", "payment"}},
}

# The services, by the program docker-compose.yml runs (`command:`).
PROGRAMS = {"wdm-order": "order", "wdm-stock": "stock", "wdm-payment": "payment",
            "wdm-coordinator": "coordinator"}
PARTICIPANTS = ("order", "payment", "stock")

# Database pools per process, from the Rust sources (each of size DB_MAX_CONNECTIONS):
# order/src/lib.rs opens two on its database (`pool`: API, migrations and the order branch's
# PREPARE; `claims`: checkout claims); a participant service one; the coordinator one per
# participant database (phase two, recovery) and one on its decision log, plus the log's
# dedicated connection holding the identity lock (coordinator/src/log.rs).
OWN_POOLS = {"order": 2, "stock": 1, "payment": 1, "coordinator": 1}
OWN_EXTRA_CONNECTIONS = {"coordinator": 1}
# Connections a database keeps for others than the services: PostgreSQL's
# superuser_reserved_connections (3) and the operator, Patroni and monitoring (10).
RESERVED_CONNECTIONS = 3 + 10

# The gateway's server slots per service (server-template): at least the most replicas any
# overlay may run, which the assertions check.
SERVER_SLOTS = 16
GATEWAY_BINDS = {"gateway_bind": "0.0.0.0:8000", "metrics_bind": "0.0.0.0:8009",
                 "stock_internal_bind": "0.0.0.0:8010", "payment_internal_bind": "0.0.0.0:8011",
                 "order_internal_bind": "0.0.0.0:8012"}

SECRET_TEMPLATE = "{user}.{cluster}.credentials.postgresql.acid.zalan.do"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


class Failures:
    def __init__(self):
        self.passed = 0
        self.failed = []

    def check(self, where, condition, message):
        if condition:
            self.passed += 1
        else:
            self.failed.append(f"{where}: {message}")
            print(f"FAIL {where}: {message}", flush=True)
        return condition


# --- sources of facts ---------------------------------------------------------------------

def read(path):
    return (ROOT / path).read_text()


def render_template(text, values):
    """The rules of docker/render and the launcher: every placeholder needs a value, every
    value a placeholder."""
    used = set()

    def substitute(match):
        key = match.group(1).strip()
        if key not in values:
            raise ValueError(f"no value for {{{{{key}}}}}")
        used.add(key)
        return values[key]

    out = re.sub(r"\{\{([^}]*)\}\}", substitute, text)
    unused = set(values) - used
    if unused:
        raise ValueError(f"the template has no placeholder for {sorted(unused)}")
    return out


def gateway_cfg():
    values = dict(GATEWAY_BINDS)
    for service in ("order", "stock", "payment"):
        line = (f'    server-template {service}- 1-{SERVER_SLOTS} '
                f'"{service}.${{POD_NAMESPACE}}.svc.${{CLUSTER_DOMAIN}}:8000" '
                "check resolvers kubernetes resolve-prefer ipv4 init-addr none")
        # The template's tracking backends `track` the primary backend's servers; slots of a
        # server-template cannot be tracked one by one, so they are checked on their own.
        values[f"{service}_servers"] = line
        values[f"{service}_tracking_servers"] = line
    return ("# Generated by `scripts/check-k8s --sync` from haproxy/gateway.cfg.tmpl: do not edit.\n"
            + render_template(read("haproxy/gateway.cfg.tmpl"), values))


def prometheus_rule():
    alerts = yaml.safe_load(read("prometheus/alerts.yml"))
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "checkout", "labels": {"app.kubernetes.io/name": "checkout"}},
        "spec": {"groups": alerts["groups"]},
    }
    return ("# Generated by `scripts/check-k8s --sync` from prometheus/alerts.yml (the production\n"
            "# rendering of alerts.yml.tmpl): do not edit.\n"
            + yaml.safe_dump(doc, sort_keys=False, width=96, allow_unicode=True))


GENERATED = {
    "gateway/gateway.cfg": gateway_cfg,
    "monitoring/prometheusrule.yaml": prometheus_rule,
    "monitoring/dashboards/checkout.json": lambda: read("grafana/dashboards/checkout.json"),
}


def rust_constant(pattern, files, what):
    for path in files:
        for file in sorted((ROOT / path).rglob("*.rs")):
            match = re.search(pattern, file.read_text(), re.S)
            if match:
                return int(match.group(1))
    raise SystemExit(f"check-k8s: cannot find {what} in {', '.join(files)}")


@functools.lru_cache(None)
def checkouts_in_flight_default():
    return rust_constant(r'env\s*=\s*"CHECKOUTS_IN_FLIGHT",\s*default_value_t\s*=\s*(\d+)',
                         ["order/src"], "CHECKOUTS_IN_FLIGHT's default")


@functools.lru_cache(None)
def pool_default(role):
    crates = {"order": ["order/src"], "stock": ["participant-server/src"],
              "payment": ["participant-server/src"], "coordinator": ["coordinator/src"]}[role]
    return rust_constant(r'env\s*=\s*"DB_MAX_CONNECTIONS",\s*default_value_t\s*=\s*(\d+)',
                         crates, "DB_MAX_CONNECTIONS's default")


@functools.lru_cache(None)
def max_name_len():
    return rust_constant(r"pub const MAX_NAME_LEN: usize = (\d+);", ["twopc/src"],
                         "twopc's MAX_NAME_LEN")


@functools.lru_cache(None)
def routes():
    """Every path the services serve, placeholders filled in."""
    found = set()
    for crate in ("order", "participant-server", "participant-stock", "participant-payment",
                  "coordinator", "service-kit", "twopc"):
        for file in (ROOT / crate / "src").rglob("*.rs"):
            text = file.read_text()
            found.update(re.findall(r'\.route\(\s*"(/[^"]*)"', text))
            found.update(re.findall(r'pub const [A-Z_]+: &str = "(/[^"]*)";', text))
    return sorted(re.sub(r"\{[^}]*\}", "x", route) for route in found)


def compose():
    doc = yaml.safe_load(read("docker-compose.yml"))
    services = {}
    for name, service in doc["services"].items():
        command = service.get("command") or []
        role = PROGRAMS.get(command[0]) if command else None
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        services[name] = {"role": role, "command": command,
                          "env": {k: "" if v is None else str(v) for k, v in env.items()},
                          "image": service.get("image"), "build": "build" in service}
    return services


def patroni_template():
    text = re.sub(r"\{\{[^}]*\}\}", "placeholder", read("patroni/patroni.yml.tmpl"))
    dcs = yaml.safe_load(text)["bootstrap"]["dcs"]
    return {"synchronous_mode": dcs["synchronous_mode"],
            "synchronous_mode_strict": dcs["synchronous_mode_strict"],
            "parameters": {k: str(v) for k, v in dcs["postgresql"]["parameters"].items()}}


# --- rendered objects ---------------------------------------------------------------------

def kustomize(directory):
    result = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        return None, result.stderr.strip()
    return [d for d in yaml.safe_load_all(result.stdout) if d], None


def quantity(value):
    """A Kubernetes quantity as a Fraction (CPUs, bytes)."""
    text = str(value)
    suffixes = {"m": Fraction(1, 1000), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", text)
    if not match or (match.group(2) and match.group(2) not in suffixes):
        raise ValueError(f"not a quantity: {value!r}")
    return Fraction(match.group(1)) * suffixes.get(match.group(2), 1)


def selects(selector, labels):
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return bool(selector.get("matchLabels") or selector.get("matchExpressions"))


class Rendered:
    def __init__(self, name, docs):
        self.name = name
        self.docs = docs

    def of(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind, name):
        for doc in self.of(kind):
            if doc["metadata"]["name"] == name:
                return doc
        return None

    def workloads(self):
        return [d for d in self.docs if d["kind"] in WORKLOAD_KINDS]

    def hpa_for(self, workload):
        for hpa in self.of("HorizontalPodAutoscaler"):
            ref = hpa["spec"]["scaleTargetRef"]
            if ref["kind"] == workload["kind"] and ref["name"] == workload["metadata"]["name"]:
                return hpa
        return None

    def replicas(self, workload):
        """(fewest, most) pods of a workload: its HPA's bounds, or its replicas."""
        hpa = self.hpa_for(workload)
        if hpa:
            return hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
        count = workload["spec"].get("replicas", 1)
        return count, count

    def workload_of_role(self, role):
        for workload in self.workloads():
            for container in workload["spec"]["template"]["spec"]["containers"]:
                if container.get("command", [None])[0] in PROGRAMS and \
                        PROGRAMS[container["command"][0]] == role:
                    return workload, container
        return None, None

    def environment(self, container):
        """name -> (source, value) in the order the kubelet defines them; source is configmap,
        value, secret (value: 'secret NAME/KEY'), field or resource."""
        env = {}
        for source in container.get("envFrom") or []:
            ref = source.get("configMapRef")
            if ref:
                configmap = self.get("ConfigMap", ref["name"])
                for key, value in ((configmap or {}).get("data") or {}).items():
                    env[key] = ("configmap", value)
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = ("value", item["value"])
            elif "secretKeyRef" in item.get("valueFrom", {}):
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = ("secret", f"secret {ref['name']}/{ref['key']}")
            elif "fieldRef" in item.get("valueFrom", {}):
                env[item["name"]] = ("field", item["valueFrom"]["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in item.get("valueFrom", {}):
                env[item["name"]] = ("resource", item["valueFrom"]["resourceFieldRef"]["resource"])
            else:
                env[item["name"]] = ("other", None)
        return env


def expand(value, env):
    """A value with its $(VAR) references replaced by what they refer to."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: f"<{env[m.group(1)][1]}>" if m.group(1) in env else m.group(0), value)


# --- HAProxy configuration ----------------------------------------------------------------

def haproxy_sections(text):
    sections = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            words = line.split()
            sections.append({"type": words[0], "name": words[1] if len(words) > 1 else "",
                             "lines": []})
        elif sections:
            sections[-1]["lines"].append(line.strip())
    return sections


def bind_port(section):
    for line in section["lines"]:
        if line.startswith("bind "):
            return int(line.split()[1].rsplit(":", 1)[1])
    return None


def routed_by_gateway(frontend, path):
    """Whether the public frontend forwards `path` (False: its 404 rule answers)."""
    acls = {}
    for line in frontend["lines"]:
        words = line.split()
        if words[0] == "acl" and words[2] == "path_beg":
            acls[words[1]] = words[3:]
    for line in frontend["lines"]:
        if line.startswith("http-request return status 404"):
            condition = line.split(" unless ", 1)[1]
            names = [n.strip() for n in condition.split("||")]
            return any(path.startswith(p) for n in names for p in acls.get(n, []))
    return True


def ingress_matches(path, prefix):
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


# --- the checks -----------------------------------------------------------------------------

def check_generated(f, sync):
    for relative, generate in GENERATED.items():
        path = BASE / relative
        expected = generate()
        if sync:
            if not path.exists() or path.read_text() != expected:
                path.write_text(expected)
                print(f"check-k8s: wrote k8s/base/{relative}")
        current = path.read_text() if path.exists() else None
        f.check(f"k8s/base/{relative}", current is not None and
                significant(relative, current) == significant(relative, expected),
                "stale: its source changed; run `scripts/check-k8s --sync` and commit the result")


def significant(relative, text):
    """What a generated file means, so that a comment changed in its source is no failure."""
    if relative.endswith(".json"):
        return json.loads(text)
    if relative.endswith(".yaml"):
        return yaml.safe_load(text)
    return [line.rstrip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def check_schemas(f, rendered):
    for doc in rendered.docs:
        where = f"{rendered.name} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        errors = crds.validate(doc)
        if errors is not None:
            f.check(where, not errors, "; ".join(errors))
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                f.check(where, True, "")
            except kubernetes_validate.utils.SchemaNotFoundError:
                f.check(where, False, f"no schema for this kind in Kubernetes {version}")
            except kubernetes_validate.utils.ValidationError as error:
                location = ".".join(str(p) for p in error.path)
                f.check(where, False, f"Kubernetes {version} schema: {location}: {error.message}")


CLUSTER_SCOPED = {"Namespace"}


def check_namespace(f, rendered):
    """One Namespace object, and every other object in it: `kubectl apply -k` needs nothing
    else to exist, and nothing lands in whatever namespace the caller's context has."""
    namespaces = [n["metadata"]["name"] for n in rendered.of("Namespace")]
    if not f.check(rendered.name, len(namespaces) == 1, f"Namespace objects {namespaces}"):
        return
    for doc in rendered.docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            f.check(f"{rendered.name} {doc['kind']}/{doc['metadata']['name']}",
                    doc["metadata"].get("namespace") == namespaces[0],
                    f"namespace {doc['metadata'].get('namespace')}, not {namespaces[0]}")


def check_workloads(f, rendered):
    pdbs = rendered.of("PodDisruptionBudget")
    for workload in rendered.workloads():
        name = workload["metadata"]["name"]
        where = f"{rendered.name} {workload['kind']}/{name}"
        pod = workload["spec"]["template"]
        labels = pod["metadata"].get("labels", {})
        fewest, _ = rendered.replicas(workload)
        f.check(where, fewest >= 2, f"at least 2 replicas required, has {fewest}")
        f.check(where, selects(workload["spec"]["selector"], labels),
                "selector does not match its pod template")
        hostnames = [c for c in pod["spec"].get("topologySpreadConstraints", [])
                     if c["topologyKey"] == "kubernetes.io/hostname"
                     and selects(c.get("labelSelector"), labels)]
        f.check(where, bool(hostnames), "no topologySpreadConstraint over kubernetes.io/hostname "
                "selecting its own pods")
        budgets = [p for p in pdbs if selects(p["spec"]["selector"], labels)]
        f.check(where, len(budgets) == 1, f"needs exactly one PodDisruptionBudget, has "
                f"{len(budgets)}")
        for pdb in budgets:
            # Pods a voluntary disruption may take at once, with the fewest replicas: at least
            # one (or a drain never ends), fewer than all.
            spec = pdb["spec"]
            if isinstance(spec.get("maxUnavailable"), int):
                may_go = spec["maxUnavailable"]
            elif isinstance(spec.get("minAvailable"), int):
                may_go = fewest - spec["minAvailable"]
            else:
                may_go = None
            f.check(where, may_go is not None and 1 <= may_go < fewest,
                    "its PodDisruptionBudget must let one pod go and keep one (integer "
                    "maxUnavailable or minAvailable)")
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        for volume in volumes.values():
            if "configMap" in volume:
                f.check(where, rendered.get("ConfigMap", volume["configMap"]["name"]) is not None,
                        f"volume {volume['name']}: no ConfigMap {volume['configMap']['name']}")
        for container in pod["spec"]["containers"]:
            check_container(f, rendered, where, container)


def check_container(f, rendered, where, container):
    where = f"{where} container {container['name']}"
    resources = container.get("resources", {})
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    for resource in ("cpu", "memory"):
        f.check(where, resource in limits, f"no {resource} limit")
        if resource in limits:
            f.check(where, resource in requests and
                    quantity(requests[resource]) == quantity(limits[resource]),
                    f"{resource} request {requests.get(resource)} != limit {limits[resource]}")
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    for probe in ("readinessProbe", "livenessProbe"):
        http = container.get(probe, {}).get("httpGet")
        f.check(where, http is not None and http.get("path") == "/health",
                f"{probe} must GET /health")
        if http:
            port = http["port"]
            f.check(where, port in ports or port in ports.values(),
                    f"{probe} port {port} is not a port of the container")
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        if ref:
            f.check(where, rendered.get("ConfigMap", ref["name"]) is not None,
                    f"envFrom: no ConfigMap {ref['name']}")
    # Every secret is one the operator creates: <user>.<cluster>.credentials..., for a user
    # of a rendered cluster (nothing here creates secrets).
    users = {SECRET_TEMPLATE.format(user=user, cluster=pg["metadata"]["name"])
             for pg in rendered.of("postgresql") for user in pg["spec"].get("users", {})}
    for item in container.get("env") or []:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            f.check(where, ref["name"] in users and ref["key"] in ("username", "password"),
                    f"{item['name']}: secret {ref['name']}/{ref['key']} is not an operator "
                    "secret of a user defined here")
    # $(VAR) refers only to variables defined before it, or the kubelet leaves it as it is.
    env = rendered.environment(container)
    defined = set()
    for name, (source, value) in env.items():
        if source in ("value",) and value:
            for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value):
                f.check(where, ref in defined, f"{name} refers to $({ref}), not defined before it")
        defined.add(name)
    for item in container.get("env") or []:
        ref = item.get("valueFrom", {}).get("resourceFieldRef")
        if ref:
            f.check(where, ref.get("containerName", container["name"]) == container["name"],
                    f"{item['name']}: resourceFieldRef of another container")


def compose_images():
    return {s["image"] for s in compose().values() if s["build"] and s["image"]}


def check_images(f, rendered):
    built = compose_images()
    for workload in rendered.workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            image = container["image"]
            f.check(f"{rendered.name} {workload['kind']}/{workload['metadata']['name']}",
                    image in built, f"image {image} is not one docker-compose.yml builds "
                    f"({', '.join(sorted(built))})")


def cpu_total(rendered):
    total, rows = Fraction(0), []
    for workload in rendered.workloads():
        _, most = rendered.replicas(workload)
        per_pod = sum(quantity(c["resources"]["limits"]["cpu"])
                      for c in workload["spec"]["template"]["spec"]["containers"]
                      + workload["spec"]["template"]["spec"].get("initContainers", []))
        total += most * per_pod
        rows.append((f"{workload['kind']}/{workload['metadata']['name']}", most, per_pod))
    for pg in rendered.of("postgresql"):
        spec = pg["spec"]
        per_pod = quantity(spec["resources"]["limits"]["cpu"])
        for sidecar in spec.get("sidecars", []):
            per_pod += quantity(sidecar["resources"]["limits"]["cpu"])
        total += spec["numberOfInstances"] * per_pod
        rows.append((f"postgresql/{pg['metadata']['name']}", spec["numberOfInstances"], per_pod))
    return total, rows


def check_budget(f, rendered, expect):
    total, rows = cpu_total(rendered)
    table = ", ".join(f"{name} {count}x{float(cpu):g}" for name, count, cpu in rows)
    print(f"check-k8s: {rendered.name}: CPU limits {float(total):g} ({table})")
    if expect["cpu_budget"] is not None:
        f.check(rendered.name, total <= expect["cpu_budget"],
                f"CPU limits sum to {float(total):g}, above {expect['cpu_budget']}")
    autoscaled = set()
    for hpa in rendered.of("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = rendered.get(ref["kind"], ref["name"])
        where = f"{rendered.name} HorizontalPodAutoscaler/{hpa['metadata']['name']}"
        f.check(where, target is not None, f"targets {ref['kind']}/{ref['name']}, not rendered")
        f.check(where, hpa["apiVersion"] == "autoscaling/v2", "must be autoscaling/v2")
        f.check(where, hpa["spec"].get("minReplicas", 1) >= 2, "minReplicas below 2")
        if target is not None:
            f.check(where, "replicas" not in target["spec"], "its target also sets replicas, "
                    "which every apply would reset")
        autoscaled.add(ref["name"])
    f.check(rendered.name, autoscaled == expect["autoscaled"],
            f"autoscaled {sorted(autoscaled)}, expected {sorted(expect['autoscaled'])}")


def check_services(f, rendered):
    pods = [w["spec"]["template"] for w in rendered.workloads()]
    for service in rendered.of("Service"):
        where = f"{rendered.name} Service/{service['metadata']['name']}"
        spec = service["spec"]
        matched = [p for p in pods if selects({"matchLabels": spec.get("selector", {})},
                                              p["metadata"].get("labels", {}))]
        f.check(where, bool(matched), "selects no pod")
        for port in spec.get("ports", []):
            target = port.get("targetPort", port["port"])
            ok = any(target in [cp.get("name"), cp["containerPort"]]
                     for p in matched for c in p["spec"]["containers"] for cp in c.get("ports", []))
            f.check(where, ok, f"targetPort {target} is no port of its pods")
        exposed = spec.get("type", "ClusterIP") in ("LoadBalancer", "NodePort")
        f.check(where, not exposed or service["metadata"]["name"] == "gateway",
                "only the gateway Service may be reachable from outside the cluster")
    public = rendered.get("Service", "gateway")
    if f.check(rendered.name, public is not None, "no Service gateway"):
        ports = [p["port"] for p in public["spec"]["ports"]]
        f.check(f"{rendered.name} Service/gateway", ports == [8000],
                f"the public gateway must expose port 8000 only, exposes {ports}")


def check_ingress(f, rendered, gateway_frontend):
    ingresses = rendered.of("Ingress")
    f.check(rendered.name, len(ingresses) == 1, f"expected one Ingress, found {len(ingresses)}")
    for ingress in ingresses:
        where = f"{rendered.name} Ingress/{ingress['metadata']['name']}"
        f.check(where, ingress["spec"].get("ingressClassName") == "nginx",
                "ingressClassName must be nginx")
        f.check(where, "defaultBackend" not in ingress["spec"], "no default backend allowed")
        paths = []
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                paths.append(path["path"])
                backend = path["backend"]["service"]
                f.check(where, backend["name"] == "gateway" and
                        backend["port"].get("number") == 8000,
                        f"{path['path']} must go to the gateway's port 8000")
                f.check(where, path["pathType"] == "Prefix", f"{path['path']}: pathType Prefix")
        f.check(where, sorted(paths) == ["/orders", "/payment", "/stock"],
                f"paths {paths}, expected /orders, /stock, /payment")
        found = routes()
        f.check(where, {"/health", "/metrics", "/_2pc/prepare"} <= set(found) and
                all(any(r.startswith(p) for r in found) for p in ("/orders/", "/stock/",
                                                                   "/payment/")),
                f"the services' routes were not found in their sources: {found}")
        for route in found:
            public = route.startswith(("/orders/", "/stock/", "/payment/"))
            reached = any(ingress_matches(route, p) for p in paths)
            f.check(where, reached == public, f"{route}: reachable {reached}, expected {public}")
            if gateway_frontend is not None:
                f.check(f"{rendered.name} gateway", routed_by_gateway(gateway_frontend, route)
                        == public, f"{route}: forwarded by the gateway "
                        f"{routed_by_gateway(gateway_frontend, route)}, expected {public}")


def gateway_config(rendered):
    """The gateway Deployment and the files of its configuration ConfigMap."""
    gateway = rendered.get("Deployment", "gateway")
    if gateway is None:
        return None, None
    names = [v["configMap"]["name"] for v in gateway["spec"]["template"]["spec"]["volumes"]
             if "configMap" in v]
    configmap = rendered.get("ConfigMap", names[0]) if names else None
    return gateway, (configmap or {}).get("data", {})


def check_gateway(f, rendered, haproxy):
    where = f"{rendered.name} gateway"
    gateway, files = gateway_config(rendered)
    if not f.check(where, gateway is not None and files, "no gateway Deployment with its config"):
        return None
    command = gateway["spec"]["template"]["spec"]["containers"][0]["command"]
    loaded = [Path(command[i + 1]).name for i, word in enumerate(command) if word == "-f"]
    f.check(where, sorted(loaded) == sorted(files), f"haproxy loads {loaded}, the ConfigMap has "
            f"{sorted(files)}")
    sections = haproxy_sections("\n".join(files[name] for name in loaded if name in files))
    frontends = {s["name"]: s for s in sections if s["type"] == "frontend"}
    public = frontends.get("gateway")
    if not f.check(where, public is not None, "no frontend gateway"):
        return None
    # The public frontend is the template's, line for line (binds aside): the same 404 rule
    # for everything outside /orders/, /stock/, /payment/, before any use_backend.
    template = {s["name"]: s for s in haproxy_sections(read("haproxy/gateway.cfg.tmpl"))
                if s["type"] == "frontend"}["gateway"]
    strip = lambda s: [line for line in s["lines"] if not line.startswith("bind ")]
    f.check(where, strip(public) == strip(template), "frontend gateway differs from the "
            "template's")
    rules = [line for line in public["lines"] if line.startswith(("http-request", "use_backend"))]
    f.check(where, bool(rules) and rules[0].startswith("http-request return status 404") and
            "unless orders || stock || payment" in rules[0],
            "the 404 rule for internal routes must come first")
    f.check(where, bind_port(public) == 8000, "frontend gateway must bind port 8000")
    # Every other frontend is internal: not on the public Service's port.
    for name, frontend in frontends.items():
        if name != "gateway":
            f.check(where, bind_port(frontend) != 8000, f"frontend {name} binds the public port")
    health = frontends.get("health")
    f.check(where, health is not None and not any(l.startswith(("use_backend", "default_backend"))
                                                  for l in health["lines"]),
            "the health frontend must answer itself and forward nothing")
    # Server slots cover every replica the services may run.
    for service in ("order", "stock", "payment"):
        workload, _ = rendered.workload_of_role(service)
        most = rendered.replicas(workload)[1] if workload else 0
        for backend in (s for s in sections if s["type"] == "backend" and
                        s["name"] in (service, f"{service}_idempotent")):
            slots = 0
            for line in backend["lines"]:
                match = re.match(r"server-template \S+ (\d+)(?:-(\d+))?", line)
                if match:
                    slots += (int(match.group(2)) - int(match.group(1)) + 1) if match.group(2) \
                        else int(match.group(1))
                    host = line.split()[3].strip('"').split(":")[0].split(".")[0]
                    f.check(where, rendered.get("Service", host) is not None and
                            rendered.get("Service", host)["spec"].get("clusterIP") == "None",
                            f"backend {backend['name']} resolves {host}, not a headless Service")
            f.check(where, slots >= most, f"backend {backend['name']}: {slots} server slots for "
                    f"up to {most} replicas")
    if haproxy:
        check_haproxy_syntax(f, rendered, gateway, files, loaded)
    return public, frontends


def check_haproxy_syntax(f, rendered, gateway, files, loaded):
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    threads = math.ceil(quantity(container["resources"]["limits"]["cpu"]))
    with tempfile.TemporaryDirectory() as directory:
        args = []
        for name in loaded:
            (Path(directory) / name).write_text(files.get(name, ""))
            args += ["-f", str(Path(directory) / name)]
        env = dict(os.environ, POD_NAMESPACE="wdm-checkout", CLUSTER_DOMAIN="cluster.local",
                   HAPROXY_NBTHREAD=str(threads))
        result = subprocess.run(["haproxy", "-c"] + args, capture_output=True, text=True,
                                env=env)
    output = " | ".join(line for line in (result.stdout + result.stderr).splitlines()
                        if "ALERT" in line)
    f.check(f"{rendered.name} gateway", result.returncode == 0 and not output,
            f"haproxy -c: {output or result.stdout.strip()}")


def parse_url(value):
    parts = urlsplit(value)
    return parts if parts.scheme and parts.hostname else None


def check_environment(f, rendered, frontends):
    services = compose()
    workloads = {}
    for role in PROGRAMS.values():
        workload, container = rendered.workload_of_role(role)
        if not f.check(rendered.name, workload is not None, f"no workload runs {role}"):
            continue
        workloads[role] = (workload, container, rendered.environment(container))
    for name, service in services.items():
        role = service["role"]
        if role not in workloads:
            continue
        workload, container, env = workloads[role]
        where = f"{rendered.name} {workload['kind']}/{workload['metadata']['name']} vs compose {name}"
        f.check(where, container["command"] == service["command"],
                f"command {container['command']} != {service['command']}")
        for key, value in service["env"].items():
            if not f.check(where, key in env, f"{key} is in docker-compose.yml, not here"):
                continue
            source, mine = env[key]
            comparator = ADDRESS_VARIABLES.get(key)
            if comparator:
                comparator(f, where, rendered, workloads, frontends, role, value, env, key)
            else:
                f.check(where, source in ("configmap", "value") and mine == value,
                        f"{key}={mine!r}, docker-compose.yml has {value!r}")
        for key, (source, _) in env.items():
            if key not in service["env"]:
                f.check(where, source in ("secret", "field", "resource"),
                        f"{key} is set here ({source}) but not in docker-compose.yml")
        listen = env.get("LISTEN_ADDR", (None, ""))[1]
        port = int(listen.rsplit(":", 1)[1]) if ":" in listen else None
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        f.check(where, ports.get("http") == port, f"container port http {ports.get('http')} "
                f"!= LISTEN_ADDR's port {port}")
    coordinators = [s for s in services.values() if s["role"] == "coordinator"]
    ids = [s["env"].get("COORDINATOR_ID") for s in coordinators]
    f.check("docker-compose.yml", len(set(ids)) == len(ids), f"coordinator ids not distinct: {ids}")


def compare_database_url(f, where, rendered, workloads, frontends, role, value, env, key):
    ours = parse_url(env[key][1]) if env[key][0] == "value" else None
    theirs = parse_url(value)
    if not f.check(where, ours is not None and theirs is not None, f"{key} is not a URL"):
        return
    f.check(where, ours.scheme == theirs.scheme, f"{key} scheme {ours.scheme} != {theirs.scheme}")
    check_database_url(f, where, rendered, env, env[key][1], f"wdm-{role}")


def check_database_url(f, where, rendered, env, url, cluster_name):
    """url (with $(VAR)s) reaches the primary of cluster_name as a user the operator creates,
    with that user's secret."""
    parts = parse_url(url)
    cluster = rendered.get("postgresql", cluster_name)
    if not f.check(where, parts is not None and cluster is not None,
                   f"{url}: no postgresql {cluster_name}"):
        return
    f.check(where, parts.hostname == cluster_name and parts.port == 5432,
            f"{url}: must be the cluster's primary Service {cluster_name}:5432")
    database = parts.path.lstrip("/")
    owner = cluster["spec"].get("databases", {}).get(database)
    f.check(where, owner is not None, f"{url}: no database {database} in {cluster_name}")
    secret = SECRET_TEMPLATE.format(user=owner, cluster=cluster_name)
    user = re.fullmatch(r"\$\(([A-Za-z_0-9]+)\)", parts.username or "")
    password = re.fullmatch(r"\$\(([A-Za-z_0-9]+)\)", parts.password or "")
    f.check(where, user and env.get(user.group(1)) == ("secret", f"secret {secret}/username"),
            f"{url}: the user must come from {secret}/username")
    f.check(where, password and
            env.get(password.group(1)) == ("secret", f"secret {secret}/password"),
            f"{url}: the password must come from {secret}/password")


def compare_http_url(f, where, rendered, workloads, frontends, role, value, env, key):
    ours = parse_url(env[key][1])
    theirs = parse_url(value)
    if not f.check(where, ours is not None and theirs is not None, f"{key} is not a URL"):
        return
    f.check(where, (ours.scheme, ours.port, ours.path) == (theirs.scheme, theirs.port,
                                                           theirs.path),
            f"{key}: {env[key][1]} and {value} differ in more than the host")
    check_internal_url(f, where, rendered, frontends, env[key][1], "stock")


def check_internal_url(f, where, rendered, frontends, url, service):
    """url is the gateway's internal frontend of `service` through a ClusterIP Service."""
    parts = parse_url(url)
    svc = rendered.get("Service", parts.hostname)
    ok = svc is not None and svc["spec"].get("type", "ClusterIP") == "ClusterIP" and \
        parts.port in [p["port"] for p in svc["spec"]["ports"]]
    f.check(where, ok, f"{url}: no ClusterIP Service {parts.hostname} with port {parts.port}")
    if frontends:
        frontend = [fe for fe in frontends.values() if bind_port(fe) == parts.port]
        backends = [line.split()[1] for fe in frontend for line in fe["lines"]
                    if line.startswith("default_backend")]
        f.check(where, backends == [service], f"{url}: the gateway's frontend on port "
                f"{parts.port} goes to {backends}, not {service}")


def compare_coordinator_urls(f, where, rendered, workloads, frontends, role, value, env, key):
    theirs = [parse_url(u) for u in value.split()]
    ours = env[key][1].split()
    f.check(where, all(theirs) and len({u.port for u in theirs}) == 1,
            f"docker-compose.yml {key} {value!r}")
    if "coordinator" not in workloads:
        return
    sts, container, _ = workloads["coordinator"]
    f.check(where, sts["kind"] == "StatefulSet", "the coordinators must be a StatefulSet")
    service = rendered.get("Service", sts["spec"].get("serviceName", ""))
    f.check(where, service is not None and service["spec"].get("clusterIP") == "None",
            "the coordinators' serviceName must be a headless Service")
    port = {p.get("name"): p["containerPort"] for p in container["ports"]}.get("http")
    expected = [f"http://{sts['metadata']['name']}-{i}.{sts['spec'].get('serviceName')}:{port}"
                for i in range(sts["spec"].get("replicas", 1))]
    f.check(where, ours == expected, f"{key} lists {ours}, the StatefulSet's pods are {expected}")
    f.check(where, theirs and all(u.port == port for u in theirs),
            f"{key}: docker-compose.yml's port differs from {port}")


def compare_participants(f, where, rendered, workloads, frontends, role, value, env, key):
    theirs = [item.split(",", 2) for item in value.split()]
    ours = [item.split(",", 2) for item in env[key][1].split()]
    f.check(where, [t[0] for t in theirs] == [o[0] for o in ours],
            f"participants {[o[0] for o in ours]} != docker-compose.yml's {[t[0] for t in theirs]}")
    # docker-compose.yml lists each participant's instances (launcher/tests/compose_file.rs
    # holds it to them); here the pods are behind a headless Service, which the gateway's
    # internal frontend resolves and health-checks pod by pod, so votes go through it.
    for (name, base, database), (_, compose_bases, _) in zip(ours, theirs):
        there = [parse_url(url) for url in compose_bases.split("|")]
        f.check(where, all(there), f"participant {name}: {compose_bases} are no URLs")
        check_internal_url(f, where, rendered, frontends, base, name)
        if name in workloads:
            _, _, participant_env = workloads[name]
            own = participant_env.get("DATABASE_URL", (None, ""))[1]
            f.check(where, expand(database, env) == expand(own, participant_env),
                    f"participant {name}: its database URL must be the {name} service's own "
                    "(COMMIT PREPARED needs the user that prepared)")
        check_database_url(f, where, rendered, env, database, f"wdm-{name}")


def compare_identity(f, where, rendered, workloads, frontends, role, value, env, key):
    sts, _, _ = workloads["coordinator"]
    f.check(where, env[key] == ("field", "metadata.name") and sts["kind"] == "StatefulSet",
            f"{key} must be the StatefulSet pod's name (fieldRef metadata.name)")
    pattern = re.compile(rf"^[a-z0-9-]{{1,{max_name_len()}}}$")
    for i in range(sts["spec"].get("replicas", 1)):
        pod = f"{sts['metadata']['name']}-{i}"
        f.check(where, pattern.match(pod) is not None, f"pod name {pod} is no valid identity")


ADDRESS_VARIABLES = {
    "DATABASE_URL": compare_database_url,
    "STOCK_URL": compare_http_url,
    "COORDINATOR_URLS": compare_coordinator_urls,
    "COORDINATOR_PARTICIPANTS": compare_participants,
    "COORDINATOR_ID": compare_identity,
}


def check_databases(f, rendered):
    template = patroni_template()
    clusters = {pg["metadata"]["name"]: pg for pg in rendered.of("postgresql")}
    f.check(rendered.name, sorted(clusters) == sorted(f"wdm-{r}" for r in PROGRAMS.values()),
            f"databases {sorted(clusters)}")
    # Who connects to each database, and how many branches may be prepared there at once:
    # a prepared branch holds no connection, so pools do not bound them; admission does. Each
    # order pod runs at most CHECKOUTS_IN_FLIGHT checkouts (order/src/admission.rs), each with
    # at most one branch per database (docs/kubernetes.md).
    connections = {name: 0 for name in clusters}
    branches = {name: 0 for name in clusters}
    pools_note = {name: [] for name in clusters}
    branches_note = {name: [] for name in clusters}
    coordinators = coordinator_pool = 0
    for role in PROGRAMS.values():
        workload, container = rendered.workload_of_role(role)
        if workload is None:
            continue
        env = rendered.environment(container)
        pool = int(env.get("DB_MAX_CONNECTIONS", (None, pool_default(role)))[1])
        _, most = rendered.replicas(workload)
        own = f"wdm-{role}"
        if own in connections:
            extra = OWN_EXTRA_CONNECTIONS.get(role, 0)
            connections[own] += most * (OWN_POOLS[role] * pool + extra)
            pools_note[own].append(f"{role} {most} pods x ({OWN_POOLS[role]} x {pool}"
                                   + (f" + {extra}" if extra else "") + ")")
        if role == "order":
            in_flight = int(env.get("CHECKOUTS_IN_FLIGHT", (None, checkouts_in_flight_default()))[1])
            for participant in PARTICIPANTS:
                if f"wdm-{participant}" in branches:
                    branches[f"wdm-{participant}"] += most * in_flight
                    branches_note[f"wdm-{participant}"].append(
                        f"order {most} pods x {in_flight} checkouts in flight")
        if role == "coordinator":
            coordinators, coordinator_pool = most, pool
    for participant in PARTICIPANTS:
        name = f"wdm-{participant}"
        if name in connections:
            connections[name] += coordinators * coordinator_pool
            pools_note[name].append(f"coordinator {coordinators} x {coordinator_pool}")
    for name, pg in clusters.items():
        where = f"{rendered.name} postgresql/{name}"
        spec = pg["spec"]
        patroni = spec.get("patroni", {})
        params = spec.get("postgresql", {}).get("parameters", {})
        f.check(where, name.startswith(spec.get("teamId", "") + "-"),
                "the name must start with the teamId and a dash")
        f.check(where, spec.get("numberOfInstances") == 2, "two instances: a primary and a "
                "synchronous standby")
        f.check(where, patroni.get("synchronous_mode") is True, "synchronous_mode must be true")
        f.check(where, patroni.get("synchronous_mode_strict", False) ==
                template["synchronous_mode_strict"], "synchronous_mode_strict must be "
                f"{template['synchronous_mode_strict']} as in patroni/patroni.yml.tmpl")
        if all(k in patroni for k in ("ttl", "loop_wait", "retry_timeout")):
            f.check(where, patroni["loop_wait"] + 2 * patroni["retry_timeout"] <= patroni["ttl"],
                    "Patroni requires loop_wait + 2 * retry_timeout <= ttl")
        for parameter in ("max_connections", "max_prepared_transactions"):
            f.check(where, parameter in params and
                    int(params[parameter]) >= int(template["parameters"][parameter]),
                    f"{parameter} {params.get(parameter)} below patroni.yml.tmpl's "
                    f"{template['parameters'][parameter]}")
        limit = int(params.get("max_prepared_transactions", 0))
        f.check(where, limit > branches[name], f"max_prepared_transactions {limit} must exceed "
                f"the peak of branches in flight, {branches[name]} ({' + '.join(branches_note[name])})")
        need = connections[name] + RESERVED_CONNECTIONS
        f.check(where, int(params.get("max_connections", 0)) >= need,
                f"max_connections {params.get('max_connections')} below the pools "
                f"{connections[name]} ({' + '.join(pools_note[name])}) + {RESERVED_CONNECTIONS} reserved")
        print(f"check-k8s: {rendered.name}: {name}: connections {connections[name]} + "
              f"{RESERVED_CONNECTIONS} <= max_connections {params.get('max_connections')}; "
              f"branches {branches[name]} < max_prepared_transactions {limit}")
        for flag in ("enableMasterLoadBalancer", "enableReplicaLoadBalancer"):
            f.check(where, spec.get(flag) is False, f"{flag} must be false: no database is "
                    "reachable from outside the cluster")
        resources = spec.get("resources", {})
        for resource in ("cpu", "memory"):
            request = resources.get("requests", {}).get(resource)
            limit_value = resources.get("limits", {}).get(resource)
            f.check(where, request is not None and limit_value is not None and
                    quantity(request) == quantity(limit_value),
                    f"{resource} request {request} != limit {limit_value}")
        f.check(where, "size" in spec.get("volume", {}), "no volume size")


def check_monitoring(f, rendered):
    jobs = {}
    for monitor in rendered.of("ServiceMonitor"):
        where = f"{rendered.name} ServiceMonitor/{monitor['metadata']['name']}"
        services = [s for s in rendered.of("Service")
                    if selects(monitor["spec"]["selector"], s["metadata"].get("labels", {}))]
        f.check(where, len(services) == 1, f"selects {len(services)} Services, expected one")
        for endpoint in monitor["spec"]["endpoints"]:
            names = [p.get("name") for s in services for p in s["spec"]["ports"]]
            f.check(where, endpoint.get("port") in names, f"port {endpoint.get('port')} is not "
                    "a named port of its Service")
            f.check(where, endpoint.get("path") == "/metrics", "path must be /metrics")
            for job in job_names(endpoint):
                jobs[job] = where
    for monitor in rendered.of("PodMonitor"):
        where = f"{rendered.name} PodMonitor/{monitor['metadata']['name']}"
        for pg in rendered.of("postgresql"):
            labels = {"application": "spilo", "cluster-name": pg["metadata"]["name"]}
            f.check(where, selects(monitor["spec"]["selector"], labels),
                    f"does not select the Spilo pods of {pg['metadata']['name']}")
        for endpoint in monitor["spec"].get("podMetricsEndpoints", []):
            for job in job_names(endpoint):
                jobs[job] = where
    # Every job the alerts name is scraped.
    wanted = set()
    for group in yaml.safe_load(read("prometheus/alerts.yml"))["groups"]:
        for rule in group["rules"]:
            for match in re.findall(r'job=~?"([^"]*)"', str(rule["expr"])):
                wanted.update(match.split("|"))
    wanted.add("patroni")
    f.check(rendered.name, wanted <= set(jobs), f"jobs {sorted(wanted - set(jobs))} of the "
            "alerts are not scraped")
    for role in PROGRAMS.values():
        f.check(rendered.name, role in jobs, f"no scrape job {role}")
    # The alert rules: every alert of the template, with its expression, duration, labels and
    # annotations (placeholders match any value).
    rules = rendered.of("PrometheusRule")
    f.check(rendered.name, len(rules) == 1, f"expected one PrometheusRule, found {len(rules)}")
    mine = {(g["name"], r.get("alert")): r for pr in rules for g in pr["spec"]["groups"]
            for r in g["rules"]}
    for group in yaml.safe_load(re.sub(r"\{\{\s*(\w+)\s*\}\}", r"__PLACEHOLDER_\1__",
                                       read("prometheus/alerts.yml.tmpl")))["groups"]:
        for rule in group["rules"]:
            where = f"{rendered.name} PrometheusRule alert {rule['alert']}"
            ours = mine.get((group["name"], rule["alert"]))
            if not f.check(where, ours is not None, f"missing (group {group['name']})"):
                continue
            for field in ("expr", "for", "labels", "annotations"):
                f.check(where, template_matches(rule.get(field), ours.get(field)),
                        f"{field} differs from prometheus/alerts.yml.tmpl")
    # The dashboard, for Grafana's sidecar.
    dashboards = [c for c in rendered.of("ConfigMap")
                  if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    source = json.loads(read("grafana/dashboards/checkout.json"))
    f.check(rendered.name, len(dashboards) == 1 and
            [json.loads(v) for v in dashboards[0].get("data", {}).values()] == [source],
            "one ConfigMap labelled grafana_dashboard=1 holding grafana/dashboards/checkout.json")


def job_names(endpoint):
    return [r["replacement"] for r in endpoint.get("relabelings", [])
            if r.get("targetLabel") == "job" and r.get("action", "replace").lower() == "replace"]


def template_matches(template, value):
    if isinstance(template, dict):
        return isinstance(value, dict) and template.keys() == value.keys() and \
            all(template_matches(template[k], value[k]) for k in template)
    if isinstance(template, str) and "__PLACEHOLDER_" in template:
        pattern = re.escape(template)
        pattern = re.sub(r"__PLACEHOLDER_\w+__", ".+", pattern)
        return isinstance(value, str) and re.fullmatch(pattern, value) is not None
    return template == value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sync", action="store_true",
                        help="rewrite the generated files of k8s/base from their sources first")
    args = parser.parse_args()
    started = time.monotonic()
    # The schemas of one Kubernetes version are read once, not once per object.
    kubernetes_validate.utils.schema_contents = functools.lru_cache(None)(
        kubernetes_validate.utils.schema_contents)
    haproxy = shutil.which("haproxy") is not None
    if not haproxy:
        print("check-k8s: haproxy not installed: the gateway configuration's syntax is not "
              "checked (scripts/test installs it)", file=sys.stderr)
    f = Failures()
    check_generated(f, args.sync)
    found = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
    f.check("k8s/overlays", found == sorted(OVERLAYS), f"overlays {found}, the check knows "
            f"{sorted(OVERLAYS)}")
    for name in found:
        docs, error = kustomize(K8S / "overlays" / name)
        if not f.check(f"overlay {name}", docs is not None, f"kubectl kustomize failed: {error}"):
            continue
        rendered = Rendered(name, docs)
        check_schemas(f, rendered)
        check_namespace(f, rendered)
        check_workloads(f, rendered)
        check_images(f, rendered)
        check_budget(f, rendered, OVERLAYS.get(name, OVERLAYS["large"]))
        check_services(f, rendered)
        gateway = check_gateway(f, rendered, haproxy)
        public, frontends = gateway if gateway else (None, None)
        check_ingress(f, rendered, public)
        check_environment(f, rendered, frontends)
        check_databases(f, rendered)
        check_monitoring(f, rendered)
    elapsed = time.monotonic() - started
    print(f"check-k8s: {len(found)} overlays, Kubernetes {', '.join(KUBERNETES_VERSIONS)}, "
          f"postgres-operator {crds.POSTGRES_OPERATOR_VERSION}, prometheus-operator "
          f"{crds.PROMETHEUS_OPERATOR_VERSION}, {elapsed:.1f} s")
    print(f"check-k8s: {f.passed} passed, {len(f.failed)} failed")
    return 1 if f.failed else 0


if __name__ == "__main__":
    sys.exit(main())
