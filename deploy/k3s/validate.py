#!/usr/bin/env python3
"""Offline validator for Fjord's Kubernetes manifests.

    validate.py [--kubernetes-version X.Y] [--external NAME]... FILE... (or - for stdin)

Every FILE is multi-document YAML. All files of one run are one input: references are
resolved across them, so `validate.py deploy/k3s/postgres.yaml fjord.yaml` finds the Secret
fjord-postgres that fjord.yaml refers to.

- Built-in kinds (Namespace, Deployment, Service, Secret, ConfigMap, StatefulSet,
  PodDisruptionBudget, ServiceAccount, ...) are validated with the kubernetes-validate package
  against the schemas it bundles for KUBERNETES_VERSION, in strict mode (unknown fields fail).
  Nothing is fetched from the network.
- KEDA kinds (keda.sh/v1alpha1 ScaledObject and TriggerAuthentication), which
  kubernetes-validate has no schema for, are checked against a schema written from KEDA 2.x's
  CRDs (config/crd/bases/keda.sh_scaledobjects.yaml, keda.sh_triggerauthentications.yaml)
  and types (apis/keda/v1alpha1), plus the rules KEDA applies when it admits a ScaledObject,
  and the `nats-jetstream` trigger's metadata as KEDA's scaler parses it
  (pkg/scalers/nats_jetstream_scaler.go).
- Cross-references: a ScaledObject's scaleTargetRef, a trigger's authenticationRef, and every
  Secret, ConfigMap, ServiceAccount and PersistentVolumeClaim a pod template uses must be in
  the input (same namespace), unless named with --external (NAME or Kind/NAME) because it is
  created elsewhere.

Exit status: 0 when every document is valid (one summary line per file), 1 when anything is
wrong (one line per problem), 2 on a usage error or when kubernetes-validate is missing.
Requires kubernetes-validate (tested with 1.37.0, which bundles schemas for Kubernetes 1.25 to
1.37 and pulls in jsonschema, referencing and PyYAML):
    /usr/bin/python3 -m pip install --break-system-packages kubernetes-validate==1.37.0
"""

import argparse
import base64
import binascii
import collections
import importlib.resources
import json
import re
import sys

# The Kubernetes version the built-in kinds are validated against. kubernetes-validate 1.37.0
# bundles schemas for 1.25 to 1.37; 1.34 is recent and not newer than what k3s's stable channel
# installs, so a manifest that passes here uses no field a current k3s lacks.
KUBERNETES_VERSION = "1.34"

try:
    import yaml
    import jsonschema
    import kubernetes_validate
    from referencing import Registry, Resource
except ImportError as e:  # pragma: no cover
    sys.stderr.write(
        f"validate.py: {e}\n"
        "install the validator's dependencies with:\n"
        "  /usr/bin/python3 -m pip install --break-system-packages kubernetes-validate\n"
    )
    sys.exit(2)


# ---------------------------------------------------------------------------------------------
# Loading


class Doc:
    def __init__(self, source, index, obj):
        self.source = source
        self.index = index  # 1-based position in its file
        self.obj = obj

    @property
    def kind(self):
        return self.obj.get("kind") if isinstance(self.obj, dict) else None

    @property
    def api_version(self):
        return self.obj.get("apiVersion") if isinstance(self.obj, dict) else None

    @property
    def meta(self):
        m = self.obj.get("metadata") if isinstance(self.obj, dict) else None
        return m if isinstance(m, dict) else {}

    @property
    def name(self):
        return self.meta.get("name")

    @property
    def namespace(self):
        return self.meta.get("namespace")

    def label(self):
        kind = self.kind if isinstance(self.kind, str) else "?"
        name = self.name if isinstance(self.name, str) else "?"
        ns = f"{self.namespace}/" if isinstance(self.namespace, str) else ""
        return f"document {self.index} ({kind} {ns}{name})"


class StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Safe loader that refuses duplicate keys in a mapping (kubectl refuses them too)."""


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable key {key!r}", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"duplicate key {key!r}", key_node.start_mark,
            )
        seen[key] = True
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load(source, text, problems):
    docs = []
    try:
        raw = list(yaml.load_all(text, Loader=StrictLoader))
    except yaml.YAMLError as e:
        problems.add(source, None, "not valid YAML: " + short(e, 500))
        return docs
    index = 0
    for obj in raw:
        if obj is None:  # an empty document ("---" at the end, comments only)
            continue
        index += 1
        # A v1 List (what `kubectl get -o yaml` prints) holds documents in items.
        if isinstance(obj, dict) and obj.get("kind") == "List" and obj.get("apiVersion") == "v1":
            for item in obj.get("items") or []:
                docs.append(Doc(source, index, item))
            continue
        docs.append(Doc(source, index, obj))
    return docs


# ---------------------------------------------------------------------------------------------
# Problems


class Problems:
    def __init__(self):
        self.items = []
        self.warnings = []

    def add(self, source, doc, message, path=""):
        where = doc.label() if doc is not None else ""
        self.items.append((source, where, path, message))

    def warn(self, source, doc, message, path=""):
        where = doc.label() if doc is not None else ""
        self.warnings.append((source, where, path, message))

    def count(self, source):
        return sum(1 for p in self.items if p[0] == source)

    @staticmethod
    def format(p):
        source, where, path, message = p
        parts = [source]
        if where:
            parts.append(where)
        if path:
            parts.append(path)
        return ": ".join(parts) + ": " + message


def jpath(parts):
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def short(text, limit=300):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Names

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
    "CustomResourceDefinition", "PriorityClass", "IngressClass", "RuntimeClass",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
    "ClusterTriggerAuthentication", "Node", "CSIDriver", "APIService",
}


def check_name(kind, name):
    """The API server's rule for metadata.name of this kind, or None when it is fine."""
    if kind in ("Service",):
        if len(name) > 63 or not DNS1035_LABEL.match(name):
            return "must be an RFC 1035 label (lowercase letters, digits, '-', starting with a letter, at most 63 characters)"
    elif kind in ("Namespace",):
        if len(name) > 63 or not DNS1123_LABEL.match(name):
            return "must be an RFC 1123 label (lowercase letters, digits, '-', at most 63 characters)"
    elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        return "must be an RFC 1123 subdomain (lowercase letters, digits, '-', '.', at most 253 characters)"
    return None


def check_labels(problems, doc, labels, path):
    if not isinstance(labels, dict):
        return
    for key, value in labels.items():
        if not isinstance(key, str):
            continue
        prefix, _, name = key.rpartition("/")
        if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
            problems.add(doc.source, doc, f"label key {key!r}: prefix must be a DNS subdomain", path)
        if len(name) > 63 or not LABEL_NAME.match(name):
            problems.add(doc.source, doc, f"label key {key!r}: name must be at most 63 characters of letters, digits, '-', '_', '.', starting and ending with a letter or digit", path)
        if isinstance(value, str) and (len(value) > 63 or not LABEL_VALUE.match(value)):
            problems.add(doc.source, doc, f"label {key}={value!r}: a value must be at most 63 characters of letters, digits, '-', '_', '.', starting and ending with a letter or digit", path)


# ---------------------------------------------------------------------------------------------
# Built-in kinds: kubernetes-validate


def builtin_definitions(version):
    """The strict _definitions.json kubernetes-validate bundles for `version`, for checking
    the Kubernetes types embedded in KEDA objects (ObjectMeta, HorizontalPodAutoscalerBehavior)."""
    root = importlib.resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    wanted = [d for d in root.iterdir()
              if d.name.startswith(f"v{version}.") and d.name.endswith("-local-strict")]
    if not wanted:
        sys.stderr.write(f"validate.py: kubernetes-validate {kubernetes_validate.__version__} bundles no schemas "
                         f"for Kubernetes {version}\n")
        sys.exit(2)
    with wanted[0].joinpath("_definitions.json").open() as f:
        return json.load(f)


class Builtins:
    def __init__(self, version):
        self.version = version
        defs = builtin_definitions(version)
        self.defs_id = defs.get("$id", "https://kubernetes.io/api/_definitions.json")
        self.registry = Resource.from_contents(defs) @ Registry()
        self.cache = {}

    def validate(self, problems, doc):
        try:
            kubernetes_validate.validate(doc.obj, self.version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.add(doc.source, doc, short(e.message), jpath(e.path))
        except kubernetes_validate.SchemaNotFoundError:
            problems.add(doc.source, doc,
                         f"no schema for kind {doc.kind} in apiVersion {doc.api_version} in "
                         f"Kubernetes {self.version} (misspelled, removed, or a custom resource "
                         f"this validator does not know)")

    def check_definition(self, problems, doc, instance, definition, path):
        """Validates `instance` against one of the bundled definitions (all errors)."""
        validator = self.cache.get(definition)
        if validator is None:
            schema = {"$ref": f"{self.defs_id}#/$defs/{definition}"}
            validator = jsonschema.Draft202012Validator(schema, registry=self.registry)
            self.cache[definition] = validator
        for e in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.path))):
            problems.add(doc.source, doc, short(e.message), jpath(list(path) + list(e.path)))


# ---------------------------------------------------------------------------------------------
# KEDA kinds: schemas written from KEDA 2.x's CRDs (keda.sh_scaledobjects.yaml,
# keda.sh_triggerauthentications.yaml; controller-gen 0.16) and apis/keda/v1alpha1 types.

INT32 = {"type": "integer", "minimum": -2147483648, "maximum": 2147483647}


def obj(properties, required=(), extra=False):
    schema = {"type": "object", "properties": properties, "additionalProperties": extra}
    if required:
        schema["required"] = list(required)
    return schema


SCALED_OBJECT_SPEC = obj(
    {
        "scaleTargetRef": obj(
            {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "name": {"type": "string", "minLength": 1},
                "envSourceContainerName": {"type": "string"},
            },
            required=["name"],
        ),
        "pollingInterval": INT32,
        "initialCooldownPeriod": INT32,
        "cooldownPeriod": INT32,
        "idleReplicaCount": INT32,
        "minReplicaCount": INT32,
        "maxReplicaCount": INT32,
        "advanced": obj(
            {
                # behavior is an autoscaling/v2 HorizontalPodAutoscalerBehavior, checked
                # against Kubernetes's own definition below.
                "horizontalPodAutoscalerConfig": obj(
                    {"behavior": {"type": "object"}, "name": {"type": "string"}}
                ),
                "restoreToOriginalReplicaCount": {"type": "boolean"},
                "scalingModifiers": obj(
                    {
                        "activationTarget": {"type": "string"},
                        "formula": {"type": "string"},
                        "metricType": {"enum": ["AverageValue", "Value"]},
                        "target": {"type": "string"},
                    }
                ),
            }
        ),
        "triggers": {
            "type": "array",
            "minItems": 1,
            "items": obj(
                {
                    "type": {"type": "string", "minLength": 1},
                    "name": {"type": "string"},
                    "useCachedMetrics": {"type": "boolean"},
                    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                    "authenticationRef": obj(
                        {
                            "name": {"type": "string", "minLength": 1},
                            "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
                        },
                        required=["name"],
                    ),
                    "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                },
                required=["type", "metadata"],
            ),
        },
        "fallback": obj(
            {
                "failureThreshold": INT32,
                "replicas": INT32,
                "behavior": {"enum": ["static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower"]},
            },
            required=["failureThreshold", "replicas"],
        ),
    },
    required=["scaleTargetRef", "triggers"],
)

SECRET_REF = obj({"name": {"type": "string"}, "key": {"type": "string"}}, required=["key", "name"])
VALUE_FROM_SECRET = obj({"valueFrom": obj({"secretKeyRef": SECRET_REF}, required=["secretKeyRef"])},
                        required=["valueFrom"])
POD_IDENTITY = {"type": "object", "required": ["provider"], "properties": {
    "provider": {"enum": ["azure-workload", "gcp", "aws", "aws-eks", "none"]},
    "identityId": {"type": "string"}, "identityTenantId": {"type": "string"},
    "identityAuthorityHost": {"type": "string"}, "roleArn": {"type": "string"},
    "identityOwner": {"enum": ["keda", "workload"]}, "externalID": {"type": "string"},
}, "additionalProperties": False}


def param_list(item_props, required):
    return {"type": "array", "items": obj(item_props, required=required)}


TRIGGER_AUTH_SPEC = obj(
    {
        "secretTargetRef": param_list(
            {"parameter": {"type": "string"}, "name": {"type": "string"}, "key": {"type": "string"}},
            ["parameter", "name", "key"]),
        "configMapTargetRef": param_list(
            {"parameter": {"type": "string"}, "name": {"type": "string"}, "key": {"type": "string"}},
            ["parameter", "name", "key"]),
        "env": param_list(
            {"parameter": {"type": "string"}, "name": {"type": "string"}, "containerName": {"type": "string"}},
            ["parameter", "name"]),
        "boundServiceAccountToken": param_list(
            {"parameter": {"type": "string"}, "serviceAccountName": {"type": "string"}},
            ["parameter", "serviceAccountName"]),
        "podIdentity": POD_IDENTITY,
        # Secret-store integrations: checked for their required keys only.
        "hashiCorpVault": {"type": "object", "required": ["address", "authentication", "secrets"]},
        "azureKeyVault": {"type": "object", "required": ["secrets", "vaultUri"]},
        "gcpSecretManager": {"type": "object", "required": ["secrets"]},
        "awsSecretManager": {"type": "object", "required": ["secrets"]},
    }
)

KEDA_TOP = {"apiVersion", "kind", "metadata", "spec", "status"}


def check_schema(problems, doc, instance, schema, path):
    validator = jsonschema.Draft202012Validator(schema)
    for e in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.path))):
        problems.add(doc.source, doc, short(e.message), jpath(list(path) + list(e.path)))


# KEDA's nats-jetstream scaler (pkg/scalers/nats_jetstream_scaler.go): the metadata keys it
# reads. natsServerMonitoringEndpoint and account (or accountID) may come from a
# TriggerAuthentication instead (order=authParams;triggerMetadata).
NATS_JETSTREAM_KEYS = {
    "natsServerMonitoringEndpoint", "account", "accountID", "stream", "consumer",
    "lagThreshold", "activationLagThreshold", "useHttps",
}
NATS_NAME_BAD = re.compile(r"[\s.*>/\\]")
HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?)(:[0-9]{1,5})?$")
GO_INT = re.compile(r"^[+-]?[0-9]+$")  # what strconv.ParseInt(s, 10, 64) accepts


def check_nats_jetstream(problems, doc, trigger, path, auth_params):
    """`auth_params`: the parameters the trigger's TriggerAuthentication supplies, or None when
    it is not in the input (then a parameter that may come from it is not required here)."""
    meta = trigger.get("metadata")
    if not isinstance(meta, dict):
        return
    mpath = path + ["metadata"]
    has_auth = "authenticationRef" in trigger

    def supplied(key):
        if key in meta:
            return True
        if has_auth and (auth_params is None or key in auth_params):
            return True
        return False

    for key in sorted(set(meta) - NATS_JETSTREAM_KEYS):
        problems.add(doc.source, doc,
                     f"unknown nats-jetstream metadata key {key!r} (known: {', '.join(sorted(NATS_JETSTREAM_KEYS))})",
                     jpath(mpath))
    if not supplied("natsServerMonitoringEndpoint"):
        problems.add(doc.source, doc, "nats-jetstream needs natsServerMonitoringEndpoint (host:port of the NATS monitoring port, e.g. nats.fjord.svc.cluster.local:8222)", jpath(mpath))
    if not (supplied("account") or supplied("accountID")):
        problems.add(doc.source, doc, 'nats-jetstream needs account ("$G" when the server has no accounts)', jpath(mpath))
    for key in ("stream", "consumer"):
        value = meta.get(key)
        if not isinstance(value, str) or value == "":
            problems.add(doc.source, doc, f"nats-jetstream needs a non-empty {key}", jpath(mpath))
        elif NATS_NAME_BAD.search(value):
            problems.add(doc.source, doc, f"{key} {value!r} is not a JetStream name (no whitespace, '.', '*', '>', '/' or '\\')", jpath(mpath + [key]))
    endpoint = meta.get("natsServerMonitoringEndpoint")
    if isinstance(endpoint, str):
        m = HOST_PORT.match(endpoint)
        if m is None:
            problems.add(doc.source, doc,
                         f"natsServerMonitoringEndpoint {endpoint!r} must be host or host:port without a scheme or path (KEDA builds http(s)://<endpoint>/jsz from it; useHttps chooses https)",
                         jpath(mpath + ["natsServerMonitoringEndpoint"]))
        elif m.group(3) and not 0 < int(m.group(3)[1:]) < 65536:
            problems.add(doc.source, doc, f"natsServerMonitoringEndpoint {endpoint!r}: port out of range", jpath(mpath + ["natsServerMonitoringEndpoint"]))
    for key, minimum in (("lagThreshold", 1), ("activationLagThreshold", 0)):
        value = meta.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not GO_INT.match(value):
            problems.add(doc.source, doc, f"{key} must be an integer string, got {value!r}", jpath(mpath + [key]))
        elif int(value) < minimum:
            why = "the HPA target must be positive" if minimum else "a lag is never negative"
            problems.add(doc.source, doc, f"{key} must be at least {minimum} ({why}), got {value!r}", jpath(mpath + [key]))
    value = meta.get("useHttps")
    if value is not None and value not in ("true", "false"):
        problems.add(doc.source, doc, f'useHttps must be "true" or "false", got {value!r}', jpath(mpath + ["useHttps"]))
    metric_type = trigger.get("metricType")
    if metric_type == "Utilization":
        problems.add(doc.source, doc, "metricType Utilization is only for the cpu and memory scalers", jpath(path + ["metricType"]))


def check_scaled_object(problems, doc, builtins, index):
    o = doc.obj
    for key in sorted(set(o) - KEDA_TOP):
        problems.add(doc.source, doc, f"unknown field {key!r}")
    if not isinstance(o.get("metadata"), dict):
        problems.add(doc.source, doc, "metadata is required", "metadata")
    else:
        builtins.check_definition(problems, doc, o["metadata"], "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", ["metadata"])
    spec = o.get("spec")
    if not isinstance(spec, dict):
        problems.add(doc.source, doc, "spec is required and must be a mapping", "spec")
        return
    before = len(problems.items)
    check_schema(problems, doc, spec, SCALED_OBJECT_SPEC, ["spec"])
    advanced = spec.get("advanced") if isinstance(spec.get("advanced"), dict) else {}
    hpa_config = advanced.get("horizontalPodAutoscalerConfig")
    behavior = hpa_config.get("behavior") if isinstance(hpa_config, dict) else None
    if isinstance(behavior, dict):
        builtins.check_definition(problems, doc, behavior, "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior",
                                  ["spec", "advanced", "horizontalPodAutoscalerConfig", "behavior"])
    if len(problems.items) > before:
        return  # the rules below assume the shape is right

    # KEDA's admission rules (apis/keda/v1alpha1/scaledobject_types.go, scaletriggers_types.go).
    for key in ("pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "minReplicaCount", "maxReplicaCount", "idleReplicaCount"):
        if key in spec and spec[key] < 0:
            problems.add(doc.source, doc, f"{key} must not be negative", f"spec.{key}")
    # As CheckReplicaCountBoundsAreValid: the minimum is 0 when minReplicaCount is unset, else
    # the HPA's minimum (minReplicaCount, at least 1); the maximum defaults to 100.
    minimum = spec.get("minReplicaCount", 0)
    keda_min = 0 if "minReplicaCount" not in spec else max(minimum, 1)
    maximum = spec.get("maxReplicaCount", 100)
    if keda_min > maximum:
        problems.add(doc.source, doc, f"minReplicaCount={keda_min} must not exceed maxReplicaCount={maximum}", "spec")
    if "idleReplicaCount" in spec and spec["idleReplicaCount"] >= keda_min:
        problems.add(doc.source, doc,
                     f"idleReplicaCount={spec['idleReplicaCount']} must be less than minReplicaCount="
                     f"{keda_min}" + ("" if "minReplicaCount" in spec else " (unset)"), "spec.idleReplicaCount")
    triggers = spec["triggers"]
    names = set()
    for i, trigger in enumerate(triggers):
        tpath = ["spec", "triggers", i]
        name = trigger.get("name")
        if name:
            if name in names:
                problems.add(doc.source, doc, f"trigger name {name!r} is used twice; names must be unique", jpath(tpath + ["name"]))
            names.add(name)
        if trigger.get("useCachedMetrics") and trigger["type"] in ("cpu", "memory", "cron"):
            problems.add(doc.source, doc, f"useCachedMetrics is not supported by the {trigger['type']} scaler", jpath(tpath + ["useCachedMetrics"]))
        if trigger["type"] == "nats-jetstream":
            auth_params = None
            ref = trigger.get("authenticationRef")
            if ref:
                ta = index.find(ref.get("kind", "TriggerAuthentication"), doc.namespace, ref["name"])
                if isinstance(ta, Doc):
                    auth_params = trigger_auth_params(ta.obj)
            check_nats_jetstream(problems, doc, trigger, tpath, auth_params)
    if minimum == 0 and triggers and all(t["type"] in ("cpu", "memory") for t in triggers):
        problems.add(doc.source, doc, "minReplicaCount 0 needs a trigger other than cpu or memory", "spec.minReplicaCount")
    fallback = spec.get("fallback")
    if fallback is not None:
        if fallback["failureThreshold"] < 0 or fallback["replicas"] < 0:
            problems.add(doc.source, doc, "fallback.failureThreshold and fallback.replicas must not be negative", "spec.fallback")
        modifiers = (spec.get("advanced") or {}).get("scalingModifiers") or {}
        if modifiers:
            if modifiers.get("metricType") == "Value":
                problems.add(doc.source, doc, "fallback needs scalingModifiers.metricType AverageValue", "spec.fallback")
        elif not any(t["type"] not in ("cpu", "memory") and t.get("metricType", "AverageValue") == "AverageValue" for t in triggers):
            problems.add(doc.source, doc, "fallback needs at least one trigger (not cpu or memory) with metricType AverageValue", "spec.fallback")


def trigger_auth_params(o):
    spec = o.get("spec") if isinstance(o, dict) else None
    params = set()
    if not isinstance(spec, dict):
        return params
    for key, value in spec.items():
        items = value.get("secrets") if isinstance(value, dict) else value
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("parameter"), str):
                    params.add(item["parameter"])
    return params


def check_trigger_auth(problems, doc, builtins):
    o = doc.obj
    for key in sorted(set(o) - KEDA_TOP):
        problems.add(doc.source, doc, f"unknown field {key!r}")
    if not isinstance(o.get("metadata"), dict):
        problems.add(doc.source, doc, "metadata is required", "metadata")
    else:
        builtins.check_definition(problems, doc, o["metadata"], "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", ["metadata"])
    spec = o.get("spec")
    if not isinstance(spec, dict):
        problems.add(doc.source, doc, "spec is required and must be a mapping", "spec")
        return
    check_schema(problems, doc, spec, TRIGGER_AUTH_SPEC, ["spec"])


# ---------------------------------------------------------------------------------------------
# Cross-references


class Index:
    def __init__(self, docs, external):
        self.by_key = {}
        self.external = external  # set of (kind-lowercase or None, name)
        for doc in docs:
            if isinstance(doc.kind, str) and isinstance(doc.name, str):
                self.by_key.setdefault(self.key(doc.kind, doc.namespace, doc.name), doc)

    @staticmethod
    def key(kind, namespace, name):
        if kind in CLUSTER_SCOPED:
            namespace = None
        return (kind, namespace, name)

    def find(self, kind, namespace, name):
        """The document, True for an --external name, or None."""
        doc = self.by_key.get(self.key(kind, namespace, name))
        if doc is not None:
            return doc
        if (kind.lower(), name) in self.external or (None, name) in self.external:
            return True
        return None

    def elsewhere(self, kind, name):
        """Namespaces where an object of this kind and name is, for a helpful message."""
        return sorted({k[1] or "<none>" for k in self.by_key if k[0] == kind and k[2] == name})


def require(problems, index, doc, kind, name, path, key=None, optional=False):
    """Reports a reference to an object (and a key of it) that is not in the input. Returns the
    document when it is in the input."""
    if not isinstance(name, str) or optional:
        return None
    found = index.find(kind, doc.namespace, name)
    if found is None:
        where = f" in namespace {doc.namespace}" if doc.namespace else " (no namespace)"
        others = index.elsewhere(kind, name)
        hint = f"; there is one in namespace {', '.join(others)}" if others else ""
        problems.add(doc.source, doc,
                     f"refers to {kind} {name!r}, which is not in the input{where}{hint} "
                     f"(pass --external {kind}/{name} if it is created elsewhere)", path)
        return None
    if not isinstance(found, Doc):
        return None
    if key is not None and isinstance(key, str):
        o = found.obj
        if kind == "Secret":
            keys = set((o.get("data") or {})) | set((o.get("stringData") or {}))
        else:
            keys = set((o.get("data") or {})) | set((o.get("binaryData") or {}))
        if key not in keys:
            problems.add(doc.source, doc,
                         f"refers to key {key!r} of {kind} {name!r}, which has only {sorted(keys) or 'no keys'}", path)
    return found


def pod_template(o):
    """(pod spec, path) of a workload, or (None, None)."""
    kind = o.get("kind")
    spec = o.get("spec") if isinstance(o.get("spec"), dict) else {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"):
        t = spec.get("template") if isinstance(spec.get("template"), dict) else {}
        return t.get("spec"), ["spec", "template", "spec"]
    if kind == "CronJob":
        t = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        return t.get("spec"), ["spec", "jobTemplate", "spec", "template", "spec"]
    if kind == "Pod":
        return spec, ["spec"]
    return None, None


def template_labels(o):
    kind = o.get("kind")
    spec = o.get("spec") if isinstance(o.get("spec"), dict) else {}
    if kind == "CronJob":
        t = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
    elif kind == "Pod":
        return (o.get("metadata") or {}).get("labels") or {}
    else:
        t = spec.get("template") or {}
    return ((t.get("metadata") or {}).get("labels")) or {}


def check_pod_refs(problems, index, doc):
    pod, base = pod_template(doc.obj)
    if not isinstance(pod, dict):
        return
    containers = []
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for i, c in enumerate(pod.get(group) or []):
            if isinstance(c, dict):
                containers.append((group, i, c))
    names = collections.Counter(c.get("name") for _, _, c in containers)
    for name, n in names.items():
        if n > 1:
            problems.add(doc.source, doc, f"container name {name!r} is used {n} times", jpath(base))
    for group, i, c in containers:
        cpath = base + [group, i]
        port_names = collections.Counter()
        for j, port in enumerate(c.get("ports") or []):
            pname = port.get("name") if isinstance(port, dict) else None
            if isinstance(pname, str):
                port_names[pname] += 1
                if len(pname) > 15 or not PORT_NAME.match(pname) or not re.search("[a-z]", pname) or "--" in pname:
                    problems.add(doc.source, doc, f"port name {pname!r} must be at most 15 lowercase letters, digits and single '-', with a letter", jpath(cpath + ["ports", j, "name"]))
        for pname, n in port_names.items():
            if n > 1:
                problems.add(doc.source, doc, f"port name {pname!r} is used {n} times", jpath(cpath + ["ports"]))
        for j, env in enumerate(c.get("env") or []):
            vf = env.get("valueFrom") if isinstance(env, dict) else None
            if not isinstance(vf, dict):
                continue
            for ref_key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                ref = vf.get(ref_key)
                if isinstance(ref, dict):
                    require(problems, index, doc, kind, ref.get("name"), jpath(cpath + ["env", j, "valueFrom", ref_key]),
                            key=ref.get("key"), optional=bool(ref.get("optional")))
        for j, env_from in enumerate(c.get("envFrom") or []):
            if not isinstance(env_from, dict):
                continue
            for ref_key, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                ref = env_from.get(ref_key)
                if isinstance(ref, dict):
                    require(problems, index, doc, kind, ref.get("name"), jpath(cpath + ["envFrom", j, ref_key]),
                            optional=bool(ref.get("optional")))
    for j, volume in enumerate(pod.get("volumes") or []):
        if not isinstance(volume, dict):
            continue
        vpath = base + ["volumes", j]
        secret = volume.get("secret")
        if isinstance(secret, dict):
            optional = bool(secret.get("optional"))
            if require(problems, index, doc, "Secret", secret.get("secretName"), jpath(vpath + ["secret"]), optional=optional):
                for k, item in enumerate(secret.get("items") or []):
                    require(problems, index, doc, "Secret", secret.get("secretName"), jpath(vpath + ["secret", "items", k]),
                            key=item.get("key"))
        config_map = volume.get("configMap")
        if isinstance(config_map, dict):
            optional = bool(config_map.get("optional"))
            if require(problems, index, doc, "ConfigMap", config_map.get("name"), jpath(vpath + ["configMap"]), optional=optional):
                for k, item in enumerate(config_map.get("items") or []):
                    require(problems, index, doc, "ConfigMap", config_map.get("name"), jpath(vpath + ["configMap", "items", k]),
                            key=item.get("key"))
        projected = volume.get("projected")
        if isinstance(projected, dict):
            for k, source in enumerate(projected.get("sources") or []):
                for src_key, kind in (("secret", "Secret"), ("configMap", "ConfigMap")):
                    ref = source.get(src_key) if isinstance(source, dict) else None
                    if isinstance(ref, dict):
                        require(problems, index, doc, kind, ref.get("name"), jpath(vpath + ["projected", "sources", k, src_key]),
                                optional=bool(ref.get("optional")))
        pvc = volume.get("persistentVolumeClaim")
        if isinstance(pvc, dict):
            require(problems, index, doc, "PersistentVolumeClaim", pvc.get("claimName"), jpath(vpath + ["persistentVolumeClaim"]))
    for j, pull in enumerate(pod.get("imagePullSecrets") or []):
        if isinstance(pull, dict):
            require(problems, index, doc, "Secret", pull.get("name"), jpath(base + ["imagePullSecrets", j]))
    sa = pod.get("serviceAccountName")
    if isinstance(sa, str) and sa != "default":
        require(problems, index, doc, "ServiceAccount", sa, jpath(base + ["serviceAccountName"]))


def selector_matches(selector, labels):
    return isinstance(selector, dict) and bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_workload(problems, index, doc, docs):
    o = doc.obj
    spec = o.get("spec") if isinstance(o.get("spec"), dict) else {}
    labels = template_labels(o)
    if o.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        match = (spec.get("selector") or {}).get("matchLabels") or {}
        if isinstance(match, dict) and isinstance(labels, dict):
            for k, v in match.items():
                if labels.get(k) != v:
                    problems.add(doc.source, doc, f"selector.matchLabels {k}={v} is not among the pod template's labels (the API server refuses this)", "spec.selector")
    if o.get("kind") == "StatefulSet" and isinstance(spec.get("serviceName"), str):
        if index.find("Service", doc.namespace, spec["serviceName"]) is None:
            problems.warn(doc.source, doc, f"serviceName {spec['serviceName']!r} names no Service in the input; pods get no stable DNS names", "spec.serviceName")
    check_labels(problems, doc, labels, "pod template metadata.labels")
    check_pod_refs(problems, index, doc)


def check_service(problems, doc, docs):
    spec = doc.obj.get("spec") if isinstance(doc.obj.get("spec"), dict) else {}
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not selector:
        return
    pods = [d for d in docs if d.namespace == doc.namespace and pod_template(d.obj)[0] is not None
            and selector_matches(selector, template_labels(d.obj))]
    if not pods:
        problems.warn(doc.source, doc, f"selector {selector} matches no pod template in the input", "spec.selector")
        return
    named = set()
    for d in pods:
        pod = pod_template(d.obj)[0]
        for c in pod.get("containers") or []:
            for p in c.get("ports") or []:
                if isinstance(p, dict) and p.get("name"):
                    named.add(p["name"])
    for i, port in enumerate(spec.get("ports") or []):
        target = port.get("targetPort") if isinstance(port, dict) else None
        if isinstance(target, str) and target not in named:
            problems.add(doc.source, doc, f"targetPort {target!r} is not a named container port of the pods the selector matches ({', '.join(sorted(named)) or 'none'})", f"spec.ports[{i}].targetPort")


def check_selector_target(problems, doc, docs, what):
    spec = doc.obj.get("spec") if isinstance(doc.obj.get("spec"), dict) else {}
    match = (spec.get("selector") or {}).get("matchLabels")
    if isinstance(match, dict) and match:
        if not any(d.namespace == doc.namespace and pod_template(d.obj)[0] is not None
                   and selector_matches(match, template_labels(d.obj)) for d in docs):
            problems.warn(doc.source, doc, f"{what} selector {match} matches no pod template in the input", "spec.selector")


def check_scaled_object_refs(problems, index, doc, claimed):
    spec = doc.obj.get("spec")
    if not isinstance(spec, dict):
        return
    ref = spec.get("scaleTargetRef")
    if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
        return
    kind = ref.get("kind") or "Deployment"
    api_version = ref.get("apiVersion") or "apps/v1"
    target = index.find(kind, doc.namespace, ref["name"])
    if target is None:
        where = f" in namespace {doc.namespace}" if doc.namespace else " (no namespace)"
        problems.add(doc.source, doc,
                     f"scaleTargetRef names {kind} {ref['name']!r}, which is not in the input{where} "
                     f"(pass --external {kind}/{ref['name']} if it is created elsewhere)", "spec.scaleTargetRef")
    elif isinstance(target, Doc):
        if target.api_version != api_version:
            problems.add(doc.source, doc, f"scaleTargetRef apiVersion {api_version} does not match the target's {target.api_version}", "spec.scaleTargetRef.apiVersion")
        container = ref.get("envSourceContainerName")
        pod = pod_template(target.obj)[0]
        if container and isinstance(pod, dict) and container not in [c.get("name") for c in pod.get("containers") or []]:
            problems.add(doc.source, doc, f"envSourceContainerName {container!r} is not a container of {kind} {ref['name']!r}", "spec.scaleTargetRef.envSourceContainerName")
        key = (kind, doc.namespace, ref["name"])
        if key in claimed:
            problems.add(doc.source, doc, f"{kind} {ref['name']!r} is already scaled by {claimed[key]}; KEDA refuses a second ScaledObject or HPA on one target", "spec.scaleTargetRef")
        else:
            claimed[key] = f"ScaledObject {doc.name!r}"
    for i, trigger in enumerate(spec.get("triggers") or []):
        auth = trigger.get("authenticationRef") if isinstance(trigger, dict) else None
        if isinstance(auth, dict) and isinstance(auth.get("name"), str):
            require(problems, index, doc, auth.get("kind") or "TriggerAuthentication", auth["name"],
                    f"spec.triggers[{i}].authenticationRef")


def check_trigger_auth_refs(problems, index, doc):
    spec = doc.obj.get("spec")
    if not isinstance(spec, dict):
        return
    for key, kind in (("secretTargetRef", "Secret"), ("configMapTargetRef", "ConfigMap")):
        for i, ref in enumerate(spec.get(key) or []):
            if isinstance(ref, dict):
                require(problems, index, doc, kind, ref.get("name"), f"spec.{key}[{i}]", key=ref.get("key"))
    for i, ref in enumerate(spec.get("boundServiceAccountToken") or []):
        if isinstance(ref, dict):
            require(problems, index, doc, "ServiceAccount", ref.get("serviceAccountName"), f"spec.boundServiceAccountToken[{i}]")


def check_secret_data(problems, doc):
    data = doc.obj.get("data")
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, str):
                try:
                    base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    problems.add(doc.source, doc, f"data.{key} is not valid base64 (use stringData for plain text)", f"data.{key}")


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Validate Kubernetes manifests (built-in kinds and KEDA ScaledObject/TriggerAuthentication) offline.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="multi-document YAML file, or - for stdin")
    parser.add_argument("--external", action="append", default=[], metavar="NAME",
                        help="an object created elsewhere that the input may refer to: NAME or Kind/NAME "
                             "(e.g. Secret/fjord-postgres); repeatable, or comma-separated")
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION, metavar="X.Y",
                        help=f"Kubernetes version of the built-in schemas (default {KUBERNETES_VERSION})")
    args = parser.parse_args(argv)

    external = set()
    for item in args.external:
        for entry in filter(None, (e.strip() for e in item.split(","))):
            kind, _, name = entry.rpartition("/")
            external.add((kind.lower() or None, name))

    builtins = Builtins(args.kubernetes_version)
    problems = Problems()
    docs = []
    sources = []
    for path in args.files:
        source = "<stdin>" if path == "-" else path
        sources.append(source)
        try:
            text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        except OSError as e:
            problems.add(source, None, f"cannot read: {e.strerror}")
            continue
        docs.extend(load(source, text, problems))

    # Shape of every document, and duplicates within a file.
    valid = []
    seen = {}
    for doc in docs:
        o = doc.obj
        if not isinstance(o, dict):
            problems.add(doc.source, doc, f"a document must be a mapping, got {type(o).__name__}")
            continue
        missing = [k for k in ("apiVersion", "kind") if not isinstance(o.get(k), str) or not o.get(k)]
        if missing:
            problems.add(doc.source, doc, f"{' and '.join(missing)} missing or not a string")
            continue
        name = doc.name
        if not isinstance(name, str) or not name:
            problems.add(doc.source, doc, "metadata.name missing (kubectl apply needs it)", "metadata.name")
            continue
        why = check_name(doc.kind, name)
        if why:
            problems.add(doc.source, doc, f"name {name!r} {why}", "metadata.name")
        ns = doc.namespace
        if ns is not None and (not isinstance(ns, str) or len(ns) > 63 or not DNS1123_LABEL.match(ns)):
            problems.add(doc.source, doc, f"namespace {ns!r} must be an RFC 1123 label", "metadata.namespace")
        if doc.kind in CLUSTER_SCOPED and ns is not None:
            problems.add(doc.source, doc, f"{doc.kind} is cluster-scoped and takes no namespace", "metadata.namespace")
        check_labels(problems, doc, doc.meta.get("labels"), "metadata.labels")
        key = (doc.source, doc.api_version.split("/")[0] if "/" in doc.api_version else "", doc.kind, ns, name)
        if key in seen:
            problems.add(doc.source, doc, f"defines the same object as document {seen[key]}")
        else:
            seen[key] = doc.index
        valid.append(doc)

    index = Index(valid, external)
    claimed = {}
    # HPAs in the input claim their targets before ScaledObjects do.
    for doc in valid:
        if doc.kind == "HorizontalPodAutoscaler":
            ref = (doc.obj.get("spec") or {}).get("scaleTargetRef") or {}
            if isinstance(ref, dict) and ref.get("kind") and ref.get("name"):
                claimed[(ref["kind"], doc.namespace, ref["name"])] = f"HorizontalPodAutoscaler {doc.name!r}"

    for doc in valid:
        group = doc.api_version.split("/")[0] if "/" in doc.api_version else ""
        if group == "keda.sh":
            if doc.api_version != "keda.sh/v1alpha1":
                problems.add(doc.source, doc, f"KEDA's API is keda.sh/v1alpha1, not {doc.api_version}", "apiVersion")
            elif doc.kind == "ScaledObject":
                check_scaled_object(problems, doc, builtins, index)
                check_scaled_object_refs(problems, index, doc, claimed)
            elif doc.kind == "TriggerAuthentication":
                check_trigger_auth(problems, doc, builtins)
                check_trigger_auth_refs(problems, index, doc)
            else:
                problems.add(doc.source, doc, f"this validator checks KEDA's ScaledObject and TriggerAuthentication only, not {doc.kind}")
            continue
        builtins.validate(problems, doc)
        if pod_template(doc.obj)[0] is not None:
            check_workload(problems, index, doc, valid)
        if doc.kind == "Service":
            check_service(problems, doc, valid)
        if doc.kind == "PodDisruptionBudget":
            check_selector_target(problems, doc, valid, "PodDisruptionBudget")
        if doc.kind == "Secret":
            check_secret_data(problems, doc)

    for w in problems.warnings:
        sys.stderr.write("warning: " + Problems.format(w) + "\n")
    for p in problems.items:
        print(Problems.format(p))
    per_file = collections.OrderedDict((s, []) for s in sources)
    for doc in docs:
        per_file.setdefault(doc.source, []).append(doc)
    for source, file_docs in per_file.items():
        n = problems.count(source)
        if n:
            print(f"{source}: {n} problem{'s' if n != 1 else ''}")
        else:
            kinds = collections.Counter(d.kind for d in file_docs)
            summary = ", ".join(k if c == 1 else f"{k} x{c}" for k, c in sorted(kinds.items()))
            print(f"{source}: validated {len(file_docs)} document{'s' if len(file_docs) != 1 else ''}: "
                  f"kinds {summary or 'none'} (Kubernetes {builtins.version} schemas)")
    return 1 if problems.items else 0


if __name__ == "__main__":
    sys.exit(main())
