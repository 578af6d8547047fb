"""Offline schemas for the custom resources the manifests use, which no bundled Kubernetes
schema knows: every field must be one the operator documents, with its type.

- `postgresql` (acid.zalan.do/v1): Zalando postgres-operator v2.0.1,
  docs/reference/cluster_manifest.md, types and patterns as in its manifests/postgresql.crd.yaml.
- ServiceMonitor, PodMonitor, PrometheusRule (monitoring.coreos.com/v1): prometheus-operator
  v0.93.0, Documentation/api-reference/api.md (PodMetricsEndpoint.portNumber needs >= v0.79).

Sections the manifests do not use are typed only as "an object" or "a list" (their inner
fields are not checked); a field that is not listed at all is an error.
"""

import re

POSTGRES_OPERATOR_VERSION = "v2.0.1"
PROMETHEUS_OPERATOR_VERSION = "v0.93.0"


class Spec:
    def check(self, value, path, errors):
        raise NotImplementedError


class Str(Spec):
    def __init__(self, pattern=None, enum=None):
        self.pattern = re.compile(pattern) if pattern else None
        self.enum = enum

    def check(self, value, path, errors):
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, found {type(value).__name__} {value!r}")
        elif self.pattern and not self.pattern.search(value):
            errors.append(f"{path}: {value!r} does not match {self.pattern.pattern}")
        elif self.enum and value not in self.enum:
            errors.append(f"{path}: {value!r} is not one of {sorted(self.enum)}")


class Int(Spec):
    def __init__(self, minimum=None, maximum=None):
        self.minimum, self.maximum = minimum, maximum

    def check(self, value, path, errors):
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: expected an integer, found {type(value).__name__} {value!r}")
        elif self.minimum is not None and value < self.minimum:
            errors.append(f"{path}: {value} is below {self.minimum}")
        elif self.maximum is not None and value > self.maximum:
            errors.append(f"{path}: {value} is above {self.maximum}")


class Bool(Spec):
    def check(self, value, path, errors):
        if not isinstance(value, bool):
            errors.append(f"{path}: expected a boolean, found {type(value).__name__} {value!r}")


class IntOrStr(Spec):
    def check(self, value, path, errors):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            errors.append(f"{path}: expected an integer or a string, found {value!r}")


class AnyObject(Spec):
    """A documented section whose inner fields the manifests do not use."""

    def check(self, value, path, errors):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object, found {type(value).__name__}")


class AnyList(Spec):
    def check(self, value, path, errors):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, found {type(value).__name__}")


class List(Spec):
    def __init__(self, item):
        self.item = item

    def check(self, value, path, errors):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, found {type(value).__name__}")
            return
        for i, item in enumerate(value):
            self.item.check(item, f"{path}[{i}]", errors)


class Map(Spec):
    def __init__(self, value):
        self.value = value

    def check(self, value, path, errors):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map, found {type(value).__name__}")
            return
        for key, item in value.items():
            if not isinstance(key, str):
                errors.append(f"{path}: key {key!r} is not a string")
            self.value.check(item, f"{path}.{key}", errors)


class Obj(Spec):
    def __init__(self, fields, required=()):
        self.fields = fields
        self.required = set(required)

    def check(self, value, path, errors):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object, found {type(value).__name__}")
            return
        for key in sorted(self.required - value.keys()):
            errors.append(f"{path}.{key}: required field missing")
        for key, item in value.items():
            spec = self.fields.get(key)
            if spec is None:
                errors.append(f"{path}.{key}: not a documented field")
            else:
                spec.check(item, f"{path}.{key}", errors)


STRINGS = Map(Str())
OBJECT_META = Obj(
    {"name": Str(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), "namespace": Str(), "labels": STRINGS,
     "annotations": STRINGS},
    required=["name"],
)


def resource(api_version, kind, spec, spec_required=True):
    return Obj(
        {"apiVersion": Str(enum={api_version}), "kind": Str(enum={kind}),
         "metadata": OBJECT_META, "spec": spec},
        required=["apiVersion", "kind", "metadata"] + (["spec"] if spec_required else []),
    )


# --- postgres-operator v2.0.1 -----------------------------------------------------------

# Patterns of the operator's CRD for CPU and for memory or volume sizes.
PG_CPU = Str(r"^(\d+m|\d+(\.\d{1,3})?)$")
PG_SIZE = Str(r"^(\d+(e\d+)?|\d+(\.\d+)?(e\d+)?[EPTGMK]i?)$")
PG_RESOURCE_AMOUNTS = Obj({"cpu": PG_CPU, "memory": PG_SIZE, "hugepages-2Mi": PG_SIZE,
                           "hugepages-1Gi": PG_SIZE})
PG_RESOURCES = Obj({"requests": PG_RESOURCE_AMOUNTS, "limits": PG_RESOURCE_AMOUNTS})
USER_FLAGS = {"SUPERUSER", "REPLICATION", "INHERIT", "LOGIN", "NOLOGIN", "CREATEROLE",
              "CREATEDB", "BYPASSRLS"}

POSTGRESQL_SPEC = Obj(
    {
        # Top-level parameters
        "teamId": Str(),
        "numberOfInstances": Int(minimum=0),
        "dockerImage": Str(),
        "schedulerName": Str(),
        "spiloRunAsUser": Int(),
        "spiloRunAsGroup": Int(),
        "spiloFSGroup": Int(),
        "livenessProbe": AnyObject(),
        "enableMasterLoadBalancer": Bool(),
        "enableMasterPoolerLoadBalancer": Bool(),
        "enableReplicaLoadBalancer": Bool(),
        "enableReplicaPoolerLoadBalancer": Bool(),
        "allowedSourceRanges": List(Str()),
        "enableMasterNodePort": Bool(),
        "enableMasterPoolerNodePort": Bool(),
        "enableReplicaNodePort": Bool(),
        "enableReplicaPoolerNodePort": Bool(),
        "masterNodePort": Int(),
        "masterPoolerNodePort": Int(),
        "replicaNodePort": Int(),
        "replicaPoolerNodePort": Int(),
        "maintenanceWindows": List(Str()),
        "users": Map(List(Str(enum=USER_FLAGS))),
        "usersWithSecretRotation": List(Str()),
        "usersWithInPlaceSecretRotation": List(Str()),
        "usersIgnoringSecretRotation": List(Str()),
        "databases": Map(Str()),
        "tolerations": AnyList(),
        "podPriorityClassName": Str(),
        "podAnnotations": STRINGS,
        "serviceAnnotations": STRINGS,
        "masterServiceAnnotations": STRINGS,
        "replicaServiceAnnotations": STRINGS,
        "enableShmVolume": Bool(),
        "enableConnectionPooler": Bool(),
        "enableReplicaConnectionPooler": Bool(),
        "enableLogicalBackup": Bool(),
        "logicalBackupRetention": Str(),
        "logicalBackupSchedule": Str(r"^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$"),
        "additionalVolumes": AnyList(),
        # Prepared Databases
        "preparedDatabases": Map(AnyObject()),
        # Postgres parameters: values are strings in the CRD.
        "postgresql": Obj(
            {"version": Str(enum={"14", "15", "16", "17", "18"}), "parameters": Map(Str())},
            required=["version"],
        ),
        # Patroni parameters
        "patroni": Obj({
            "initdb": Map(Str()),
            "pg_hba": List(Str()),
            "ttl": Int(minimum=1),
            "loop_wait": Int(minimum=1),
            "retry_timeout": Int(minimum=1),
            "maximum_lag_on_failover": Int(minimum=0),
            "slots": Map(AnyObject()),
            "synchronous_mode": Bool(),
            "synchronous_mode_strict": Bool(),
            "synchronous_node_count": Int(minimum=1),
            "failsafe_mode": Bool(),
        }),
        # Postgres container resources
        "resources": PG_RESOURCES,
        # Clone, standby cluster
        "clone": AnyObject(),
        "standby": AnyObject(),
        # Volume properties
        "volume": Obj(
            {"size": PG_SIZE, "storageClass": Str(), "subPath": Str(), "isSubPathExpr": Bool(),
             "iops": Int(maximum=80000), "throughput": Int(maximum=2000),
             "selector": AnyObject()},
            required=["size"],
        ),
        "sidecars": AnyList(),
        "connectionPooler": AnyObject(),
        "tls": AnyObject(),
        "streams": AnyList(),
    },
    required=["teamId", "numberOfInstances", "postgresql", "volume"],
)

# --- prometheus-operator v0.93.0 --------------------------------------------------------

DURATION = Str(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
               r"(([0-9]+)ms)?)$")
LABEL_SELECTOR = Obj({
    "matchLabels": STRINGS,
    "matchExpressions": List(Obj(
        {"key": Str(), "operator": Str(enum={"In", "NotIn", "Exists", "DoesNotExist"}),
         "values": List(Str())},
        required=["key", "operator"],
    )),
})
NAMESPACE_SELECTOR = Obj({"any": Bool(), "matchNames": List(Str())})
RELABEL_ACTIONS = {a for name in ["Replace", "Keep", "Drop", "HashMod", "LabelMap", "LabelDrop",
                                  "LabelKeep", "Lowercase", "Uppercase", "KeepEqual", "DropEqual"]
                   for a in (name, name.lower())}
RELABEL_CONFIG = Obj({
    "sourceLabels": List(Str()), "separator": Str(), "targetLabel": Str(), "regex": Str(),
    "modulus": Int(), "replacement": Str(), "action": Str(enum=RELABEL_ACTIONS),
})
SCRAPE_PROTOCOLS = {"OpenMetricsText0.0.1", "OpenMetricsText1.0.0", "PrometheusProto",
                    "PrometheusText0.0.4", "PrometheusText1.0.0"}


def _endpoint_fields():
    return {
        "port": Str(), "targetPort": IntOrStr(), "path": Str(),
        "scheme": Str(enum={"http", "https", "HTTP", "HTTPS"}),
        "params": Map(List(Str())), "interval": DURATION, "scrapeTimeout": DURATION,
        "honorLabels": Bool(), "honorTimestamps": Bool(), "trackTimestampsStaleness": Bool(),
        "metricRelabelings": List(RELABEL_CONFIG), "relabelings": List(RELABEL_CONFIG),
        "filterRunning": Bool(), "authorization": AnyObject(), "basicAuth": AnyObject(),
        "oauth2": AnyObject(), "bearerTokenSecret": AnyObject(), "followRedirects": Bool(),
        "enableHttp2": Bool(), "tlsConfig": AnyObject(),
        "proxyUrl": Str(r"^(http|https|socks5)://.+$"), "noProxy": Str(),
        "proxyFromEnvironment": Bool(), "proxyConnectHeader": AnyObject(),
    }


def _monitor_common_fields():
    return {
        "jobLabel": Str(), "podTargetLabels": List(Str()), "selector": LABEL_SELECTOR,
        "selectorMechanism": Str(enum={"RelabelConfig", "RoleSelector"}),
        "namespaceSelector": NAMESPACE_SELECTOR, "sampleLimit": Int(minimum=0),
        "scrapeProtocols": List(Str(enum=SCRAPE_PROTOCOLS)),
        "fallbackScrapeProtocol": Str(enum=SCRAPE_PROTOCOLS), "targetLimit": Int(minimum=0),
        "labelLimit": Int(minimum=0), "labelNameLengthLimit": Int(minimum=0),
        "labelValueLengthLimit": Int(minimum=0), "scrapeNativeHistograms": Bool(),
        "scrapeClassicHistograms": Bool(), "nativeHistogramBucketLimit": Int(minimum=0),
        "nativeHistogramMinBucketFactor": IntOrStr(), "convertClassicHistogramsToNHCB": Bool(),
        "keepDroppedTargets": Int(minimum=0), "attachMetadata": AnyObject(),
        "scrapeClass": Str(), "bodySizeLimit": Str(),
    }


ENDPOINT = Obj(dict(_endpoint_fields(), bearerTokenFile=Str()))
POD_METRICS_ENDPOINT = Obj(dict(_endpoint_fields(), portNumber=Int(minimum=1, maximum=65535)))
SERVICE_MONITOR_SPEC = Obj(
    dict(_monitor_common_fields(), targetLabels=List(Str()), endpoints=List(ENDPOINT),
         serviceDiscoveryRole=Str(enum={"Endpoints", "EndpointSlice"})),
    required=["selector", "endpoints"],
)
POD_MONITOR_SPEC = Obj(
    dict(_monitor_common_fields(), podMetricsEndpoints=List(POD_METRICS_ENDPOINT)),
    required=["selector"],
)
RULE = Obj(
    {"record": Str(), "alert": Str(), "expr": IntOrStr(), "for": DURATION,
     "keep_firing_for": DURATION, "labels": STRINGS, "annotations": STRINGS},
    required=["expr"],
)
RULE_GROUP = Obj(
    {"name": Str(), "labels": STRINGS, "interval": DURATION, "query_offset": DURATION,
     "rules": List(RULE), "partial_response_strategy": Str(), "limit": Int(minimum=0)},
    required=["name"],
)
PROMETHEUS_RULE_SPEC = Obj({"groups": List(RULE_GROUP)})

SCHEMAS = {
    ("acid.zalan.do/v1", "postgresql"): resource("acid.zalan.do/v1", "postgresql",
                                                 POSTGRESQL_SPEC),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): resource(
        "monitoring.coreos.com/v1", "ServiceMonitor", SERVICE_MONITOR_SPEC),
    ("monitoring.coreos.com/v1", "PodMonitor"): resource(
        "monitoring.coreos.com/v1", "PodMonitor", POD_MONITOR_SPEC),
    ("monitoring.coreos.com/v1", "PrometheusRule"): resource(
        "monitoring.coreos.com/v1", "PrometheusRule", PROMETHEUS_RULE_SPEC),
}


def validate(obj):
    """Errors of a custom resource against its documented fields, or None for another kind."""
    schema = SCHEMAS.get((obj.get("apiVersion"), obj.get("kind")))
    if schema is None:
        return None
    errors = []
    schema.check(obj, obj["kind"], errors)
    if obj["kind"] == "PrometheusRule":
        for g, group in enumerate(obj.get("spec", {}).get("groups", [])):
            for r, rule in enumerate(group.get("rules", [])):
                if ("alert" in rule) == ("record" in rule):
                    errors.append(f"PrometheusRule.spec.groups[{g}].rules[{r}]: exactly one of "
                                  "alert and record")
    return errors
