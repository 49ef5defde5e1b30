"""Security rules the product keeps, each enforced here:

- no unsafe unpickling: every ``torch.load`` in the product passes ``weights_only=True``; no ``pickle.load``,
  no ``weights_only=False``, no ``allow_pickle=True``, no ``trust_remote_code`` (checked on the source's syntax
  tree and text), and a checkpoint that smuggles code is refused without running it;
- every pod the chart renders (each accelerator, each operator, and the collect helper pod) passes a
  restricted-style review: non-root, no privilege or escalation, all capabilities dropped, RuntimeDefault
  seccomp, read-only root filesystem, no service-account token, host namespaces and host paths only when asked;
- the CLI's RBAC Role is namespaced and has no wildcard or privilege-granting verb (tests/test_rbac.py holds it
  equal to what the backend uses).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import yaml
from k8s_validation import pod_templates

from whisper_k8s import chart

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = [ROOT / "whisper_k8s", ROOT / "trainer"]
ACCELERATORS = [{"accelerator": {"type": "ascend"}},
                {"accelerator": {"type": "ascend", "hostDriver": {"enabled": True}}},
                {"accelerator": {"type": "nvidia"}, "model": {"pretrained": {"enabled": True}}},
                {"accelerator": {"type": "cpu"}},
                {"accelerator": {"type": "nvidia"}, "engine": "mindspeed-mm"}]
OPERATORS = ["pytorchjob", "trainjob"]
ASCEND_DRIVER_PREFIXES = ("/usr/local/Ascend/", "/usr/local/dcmi", "/usr/local/bin/npu-smi", "/etc/ascend_install.info")


# ------------------------------------------------------------------------------------------ unpickling
def product_sources() -> list[Path]:
    files = sorted(p for folder in PRODUCT for p in folder.rglob("*.py"))
    assert len(files) > 30, "the product sources were not found"
    return files


def calls(tree: ast.AST, module: str, function: str):
    """Calls of ``module.function(...)`` (``torch.load``, ``torch.serialization.load``...) in a syntax tree."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == function:
            owner = ast.unparse(node.func.value)
            if owner == module or owner.endswith(f".{module.rsplit('.', 1)[-1]}") or owner.startswith(module):
                yield node


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def test_every_torch_load_is_weights_only():
    found = []
    for path in product_sources():
        tree = ast.parse(path.read_text(), str(path))
        for call in calls(tree, "torch", "load"):
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            found.append(where)
            value = keyword(call, "weights_only")
            assert isinstance(value, ast.Constant) and value.value is True, \
                f"{where}: torch.load without weights_only=True"
    assert found, "no torch.load found: the check looks at the wrong files"


UNSAFE_CALLS = {"eval", "exec", "pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load", "marshal.loads",
                "dill.load", "cloudpickle.load"}


def test_no_unsafe_loading_in_the_product():
    offenders = []
    for path in product_sources():
        text = path.read_text()
        where = path.relative_to(ROOT)
        if "trust_remote_code" in text:
            offenders.append(f"{where}: trust_remote_code")
        for node in ast.walk(ast.parse(text, str(path))):
            if not isinstance(node, ast.Call):
                continue
            if ast.unparse(node.func) in UNSAFE_CALLS:
                offenders.append(f"{where}:{node.lineno}: {ast.unparse(node.func)}()")
            for name, unsafe in (("weights_only", False), ("allow_pickle", True)):
                value = keyword(node, name)
                if not (isinstance(value, ast.Constant) and value.value is not unsafe) and value is not None:
                    offenders.append(f"{where}:{node.lineno}: {name}={ast.unparse(value)}")
    assert not offenders, offenders


class _RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_smuggles_code_is_refused_without_running_it(tmp_path):
    import torch

    from whisper_k8s.errors import UserError
    from whisper_k8s.formats import megatron

    marker = tmp_path / "pwned"
    torch.save({"model": {"w": torch.zeros(2)}, "args": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match=r"refusing to unpickle .*(posix|os)\.system"):
        megatron.load_file(tmp_path / "evil.pt")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------- pod review
def all_pods(values: dict) -> list[dict]:
    documents = chart.render(values, "sec", namespace="speech")
    pods = [template["spec"] for doc in documents for template in pod_templates(doc)]
    assert pods, f"no pod template rendered for {values}"
    from whisper_k8s.backends.kubernetes_fetch import helper_pod

    job_kind = {"pytorchjob": "PyTorchJob", "trainjob": "TrainJob"}[values.get("operator", "pytorchjob")]
    job_documents = [d for d in documents if d["kind"] in (job_kind, "TrainingRuntime")]
    return pods + [helper_pod(job_documents, values.get("operator", "pytorchjob"))["spec"]]


def review(spec: dict, values: dict) -> list[str]:
    """What a restricted-style admission review would object to in one pod spec (empty: it passes)."""
    problems = []
    host_network = values.get("security", {}).get("hostNetwork", False)
    for key in ("hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"{key} set")
    if spec.get("hostNetwork") and not host_network:
        problems.append("hostNetwork though security.hostNetwork is false")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append("the service-account token is mounted")
    pod = spec.get("securityContext", {})
    if pod.get("runAsNonRoot") is not True or pod.get("runAsUser", 0) == 0:
        problems.append("may run as root")
    if pod.get("seccompProfile") != {"type": "RuntimeDefault"}:
        problems.append("no RuntimeDefault seccomp profile")
    if set(pod.get("sysctls", [])):
        problems.append("sysctls set")
    wanted_roots = values.get("security", {}).get("readOnlyRootFilesystem", True)
    for container in spec["containers"] + spec.get("initContainers", []):
        name, security = container["name"], container.get("securityContext", {})
        if security.get("privileged") is not False or security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: privileged or may escalate")
        if security.get("capabilities") != {"drop": ["ALL"]}:
            problems.append(f"{name}: capabilities not all dropped: {security.get('capabilities')}")
        if security.get("readOnlyRootFilesystem") is not wanted_roots:
            problems.append(f"{name}: readOnlyRootFilesystem is {security.get('readOnlyRootFilesystem')}")
        if security.get("runAsUser") == 0 or security.get("runAsNonRoot") is False:
            problems.append(f"{name}: runs as root")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            problems.append(f"{name}: hostPort")
    problems += host_path_problems(spec, values)
    return problems


def host_path_problems(spec: dict, values: dict) -> list[str]:
    """Host paths only where the values ask: the Ascend driver (read-only) and hostPath storage."""
    storage = values.get("storage", {})
    asked = {v.get("hostPath") for v in storage.values() if isinstance(v, dict) and v.get("type") == "hostPath"}
    driver = values.get("accelerator", {}).get("hostDriver", {}).get("enabled", False)
    mounts = {m["name"]: m for c in spec["containers"] + spec.get("initContainers", [])
              for m in c.get("volumeMounts", [])}
    problems = []
    for volume in spec.get("volumes", []):
        if "hostPath" not in volume:
            continue
        path = volume["hostPath"]["path"]
        if path in asked:
            continue
        if driver and path.startswith(ASCEND_DRIVER_PREFIXES):
            if not mounts.get(volume["name"], {}).get("readOnly"):
                problems.append(f"driver path {path} mounted writable")
            continue
        problems.append(f"hostPath {path} that no value asked for")
    return problems


@pytest.mark.parametrize("operator", OPERATORS)
@pytest.mark.parametrize("values", ACCELERATORS, ids=["ascend", "ascend-host-driver", "nvidia-pretrained", "cpu",
                                                      "mindspeed-mm"])
def test_every_pod_passes_a_restricted_review(values, operator):
    values = {**values, "operator": operator}
    for spec in all_pods(values):
        assert review(spec, values) == [], values


def test_the_review_follows_what_the_values_ask_for_and_catches_violations():
    asked = {"operator": "trainjob", "accelerator": {"type": "cpu"}, "security": {"hostNetwork": True,
             "readOnlyRootFilesystem": False},
             "storage": {"dataset": {"type": "hostPath", "hostPath": "/srv/cv"}}}
    *job_pods, collect_pod = all_pods(asked)
    for spec in job_pods + [collect_pod]:
        assert review(spec, asked) == [], asked
    assert all(spec["hostNetwork"] for spec in job_pods) and not collect_pod.get("hostNetwork")
    spec = all_pods({})[0]
    spec["hostPID"] = True
    spec["containers"][0]["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    spec["volumes"].append({"name": "root", "hostPath": {"path": "/"}})
    assert len(review(spec, {})) == 3


# ------------------------------------------------------------------------------------------------ RBAC
def test_the_cli_role_is_namespaced_without_wildcards_or_privilege_verbs():
    role = yaml.safe_load((ROOT / "manifests" / "rbac" / "role.yaml").read_text())
    assert role["kind"] == "Role"  # never a ClusterRole: the CLI works in one namespace
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
        assert not {"roles", "rolebindings", "clusterroles", "clusterrolebindings", "nodes",
                    "serviceaccounts/token"} & set(rule["resources"]), rule
