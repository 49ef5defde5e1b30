"""Offline validation of rendered Kubernetes documents, for the chart and manifest tests.

What is validated, and how (honestly):
- Custom resources (PyTorchJob today, TrainJob/TrainingRuntime later) against the real CRD's
  ``openAPIV3Schema`` with jsonschema. OpenAPI v3 extensions are translated: ``x-kubernetes-int-or-string``
  accepts an integer or a string; ``x-kubernetes-preserve-unknown-fields`` keeps unknown fields; every other
  object with declared ``properties`` rejects unknown fields, as the API server does with strict field
  validation (Helm 4 and ``kubectl apply --server-side`` use it); ``format: int32/int64`` bound integers.
  NOT checked: CEL rules (``x-kubernetes-validations``), list-map key uniqueness, defaulting.
- Core objects (ConfigMap, PersistentVolumeClaim, the pod templates inside custom resources) against the
  models of the ``kubernetes`` Python client (>= 31), which are pydantic models generated from the
  Kubernetes OpenAPI document: unknown fields are refused (``extra='forbid'``), types are strict, required
  fields are enforced. NOT checked: value formats such as DNS names or quantities beyond their types.
- PodGroups (Volcano ``scheduling.volcano.sh/v1beta1``, scheduler-plugins ``scheduling.x-k8s.io/v1alpha1``):
  their CRDs are not in the offline reference, so they are checked against a small schema written from those
  projects' API types (spec.minMember int32 and the few optional fields the chart sets).
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import jsonschema
import yaml

CRD_DIR = Path(__file__).resolve().parent / "fixtures" / "reference" / "crds"
# The operators' real CRDs, by the kind they define (document_errors takes this table).
CRDS = {"PyTorchJob": CRD_DIR / "kubeflow.org_pytorchjobs.v1.9.0.yaml",
        "TrainJob": CRD_DIR / "trainer.kubeflow.org_trainjobs.v2.3.0.yaml",
        "TrainingRuntime": CRD_DIR / "trainer.kubeflow.org_trainingruntimes.v2.3.0.yaml"}
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def _translate(node):
    """An OpenAPI v3 structural schema -> a draft-07 jsonschema with Kubernetes' extensions applied."""
    if isinstance(node, list):
        return [_translate(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _translate(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if out.get("type") == "integer" and node.get("format") in INT_RANGES:
        low, high = INT_RANGES[node["format"]]
        out.setdefault("minimum", low)
        out.setdefault("maximum", high)
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if out.get("nullable"):
        out.pop("nullable")
        if "type" in out:
            out["type"] = [out["type"], "null"]
    # date-time is written by controllers in status, never by the chart; do not ask jsonschema to parse it.
    out.pop("format", None)
    return out


@cache
def crd_validator(crd_file: str, version: str):
    """A jsonschema validator for one served version of a CRD file (cached: the PyTorchJob CRD is 609 KB)."""
    # The C safe loader when available (the 609 KB CRD parses in 0.1 s instead of 2 s); both are safe loaders.
    safe_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(Path(crd_file).read_text(), Loader=safe_loader)  # noqa: S506
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    schema = _translate(versions[version]["schema"]["openAPIV3Schema"])
    # metadata is only {type: object} in CRDs: the API server checks it as ObjectMeta (done separately).
    return jsonschema.Draft7Validator(schema), crd["spec"]["group"], crd["spec"]["names"]["kind"]


def crd_errors(document: dict, crd_file: Path | str) -> list[str]:
    """Schema violations of a custom resource against its CRD (plus its metadata as ObjectMeta)."""
    group_version = document.get("apiVersion", "")
    version = group_version.split("/")[-1]
    validator, group, kind = crd_validator(str(crd_file), version)
    problems = []
    if group_version != f"{group}/{version}" or document.get("kind") != kind:
        problems.append(f"apiVersion/kind {group_version}/{document.get('kind')} is not {group}/{version}/{kind}")
    for error in validator.iter_errors(document):
        path = ".".join(map(str, error.absolute_path)) or "(top level)"
        problems.append(f"{path}: {error.message}")
    problems += core_errors(document.get("metadata", {}), "V1ObjectMeta")
    return problems


def core_errors(data: dict, model: str) -> list[str]:
    """Violations of ``data`` against a Kubernetes OpenAPI model of the kubernetes client, e.g. "V1ConfigMap"."""
    import kubernetes.client

    cls = getattr(kubernetes.client, model)
    if not hasattr(cls, "model_validate"):
        raise RuntimeError("the kubernetes client is too old for OpenAPI validation: install kubernetes>=31")
    from pydantic import ValidationError

    try:
        cls.model_validate(copy.deepcopy(data))
    except ValidationError as err:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
    return []


CORE_MODELS = {("v1", "ConfigMap"): "V1ConfigMap", ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim"}

_POD_GROUP_SPEC = {
    "scheduling.volcano.sh/v1beta1": {
        "minMember": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "queue": {"type": "string"},
        "priorityClassName": {"type": "string"},
        "minResources": {"type": "object"},
    },
    "scheduling.x-k8s.io/v1alpha1": {
        "minMember": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "scheduleTimeoutSeconds": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "minResources": {"type": "object"},
    },
}


def pod_group_errors(document: dict) -> list[str]:
    spec_properties = _POD_GROUP_SPEC.get(document.get("apiVersion"))
    if spec_properties is None:
        return [f"PodGroup apiVersion {document.get('apiVersion')} is neither Volcano's nor coscheduling's"]
    schema = {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "spec": {"type": "object", "required": ["minMember"], "additionalProperties": False,
                     "properties": spec_properties},
        },
    }
    problems = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(document)]
    return problems + core_errors(document["metadata"], "V1ObjectMeta")


def document_errors(document: dict, crds: dict[str, Path]) -> list[str]:
    """Validate any rendered document: core kinds by OpenAPI model, CRs by CRD (``crds``: kind -> file)."""
    kind = document.get("kind")
    if (document.get("apiVersion"), kind) in CORE_MODELS:
        return core_errors(document, CORE_MODELS[(document["apiVersion"], kind)])
    if kind == "PodGroup":
        return pod_group_errors(document)
    if kind in crds:
        return crd_errors(document, crds[kind])
    return [f"no validator for {document.get('apiVersion')}/{kind}"]


def pod_templates(document: dict) -> list[dict]:
    """The pod templates inside a document: PyTorchJob replica specs, a (Cluster)TrainingRuntime's JobSet jobs."""
    spec = document.get("spec", {})
    if document.get("kind") == "PyTorchJob":
        return [replica["template"] for replica in spec.get("pytorchReplicaSpecs", {}).values()]
    if document.get("kind") in ("TrainingRuntime", "ClusterTrainingRuntime"):
        jobs = spec.get("template", {}).get("spec", {}).get("replicatedJobs", [])
        return [job["template"]["spec"]["template"] for job in jobs]
    return []
