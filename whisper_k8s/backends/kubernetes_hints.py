"""Why a job's pod is stuck, and the fix for each common reason (what ``status`` prints under the pods table).

A pod waits either in the kubelet (a container's waiting reason: ``ImagePullBackOff``, ``CrashLoopBackOff``) or
in kube-scheduler, which explains an unschedulable pod in one message, built by ``FitError.Error()``
(kubernetes pkg/scheduler/framework/types.go)::

    0/<nodes> nodes are available: <reasons>. <post-filter message>.

``<reasons>`` is the PreFilter plugin's message when one refused the pod (VolumeBinding:
``pod has unbound immediate PersistentVolumeClaims``), else the sorted histogram ``<count> <reason>, ...`` of
the Filter plugins' reasons (pkg/scheduler/framework/plugins/): noderesources/fit.go ``Insufficient <resource>``,
nodeaffinity ``node(s) didn't match Pod's node affinity/selector``, tainttoleration ``node(s) had untolerated
taint {<key>: <value>}``, volumebinding ``node(s) didn't find available persistent volumes to bind`` and
``node(s) had volume node affinity conflict``. The post-filter message (``preemption: 0/3 nodes are available:
...``) repeats the count for preemption and is not a reason of its own.
"""

from __future__ import annotations

import re
from typing import Any

from whisper_k8s.backends.base import PodStatus
from whisper_k8s.places import command

_FIT_ERROR = re.compile(r"^0/\d+ nodes are available: (.*)$", re.DOTALL)
_NOT_ACCELERATORS = ("cpu", "memory", "ephemeral-storage", "pods")
_IMAGE_PULL = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName")
_UNBOUND_CLAIMS = "pod has unbound immediate PersistentVolumeClaims"
_CLAIM_REASONS = (_UNBOUND_CLAIMS, "didn't find available persistent volumes to bind")
_SELECTOR = "didn't match Pod's node affinity/selector"
_TAINT = re.compile(r"had untolerated taint \{(.*)\}")


def scheduling_reasons(message: str) -> list[str]:
    """The reasons of a kube-scheduler FitError message, without their node counts; [] for other messages."""
    match = _FIT_ERROR.match((message or "").strip())
    if not match:
        return []
    reasons = match.group(1).split(". ", 1)[0].rstrip(".")  # what follows is the post-filter message
    return [re.sub(r"^\d+ ", "", part.strip()) for part in reasons.split(", ") if part.strip()]


def requested(pod: dict[str, Any], resource: str) -> str:
    """What the pod's containers request of ``resource`` (the largest single request), '' when none."""
    amounts = [str(((c.get("resources") or {}).get("requests") or {}).get(resource, ""))
               for c in (pod.get("spec") or {}).get("containers") or []]
    return max((a for a in amounts if a), key=len, default="")


def claims(pod: dict[str, Any]) -> list[tuple[str, str]]:
    """(volume name, claim name) of each PersistentVolumeClaim the pod mounts; the volume name is the chart's
    storage key (dataset, models, outputs)."""
    return [(v["name"], v["persistentVolumeClaim"]["claimName"]) for v in (pod.get("spec") or {}).get("volumes") or []
            if v.get("persistentVolumeClaim")]


def _resource_fix(replica: str, resource: str, pod: dict[str, Any]) -> str:
    amount = requested(pod, resource)
    asks = f" (it asks for {amount})" if amount else ""
    start = f"{replica} cannot be scheduled: no node has enough free {resource}{asks}: "
    if resource == "cpu":
        return start + ("lower resources.cpuPerNode (by default one core per training process and per data "
                        "worker, so a lower training.numWorkers lowers it too)")
    if resource == "memory":
        return start + "lower resources.memoryPerNode, or free memory on the nodes"
    if resource in _NOT_ACCELERATORS:
        return start + "free it on the nodes (`kubectl describe nodes` shows what is allocated)"
    return start + (f"lower --npus-per-node, or --nodes when fewer nodes have {resource} free, or free "
                    f"devices (`kubectl describe nodes` shows what is allocated)")


def _claims_fix(replica: str, pod: dict[str, Any], namespace: str) -> str:
    mounted = claims(pod)
    names = ", ".join(claim for _, claim in mounted) or "its claims"
    keys = " or ".join(f"storage.{key}" for key, _ in mounted) or "storage.<volume>"
    return (f"{replica} waits for unbound PersistentVolumeClaims ({names}): no storage class provides them "
            f"(every node mounts them: ReadWriteMany). Set {keys}.existingClaim to a bound claim, or "
            f"{keys}.storageClassName to a class that provides ReadWriteMany (`kubectl get pvc,storageclass -n "
            f"{namespace}`)")


def scheduling_fixes(replica: str, message: str, pod: dict[str, Any], namespace: str) -> list[str]:
    """One fix per reason kube-scheduler gave for not placing the pod."""
    fixes: list[str] = []
    for reason in scheduling_reasons(message):
        if reason.startswith("Insufficient "):
            fixes.append(_resource_fix(replica, reason.split(" ", 1)[1], pod))
        elif reason in _CLAIM_REASONS or reason.endswith(_CLAIM_REASONS[1]):
            fixes.append(_claims_fix(replica, pod, namespace))
        elif reason.endswith(_SELECTOR):
            fixes.append(f"{replica} cannot be scheduled: no node matches its node selector or affinity: fix "
                         "accelerator.nodeSelector / scheduling.affinity, or label the nodes (`kubectl get "
                         "nodes --show-labels`)")
        elif taint := _TAINT.search(reason):
            fixes.append(f"{replica} cannot be scheduled: nodes have the taint {{{taint.group(1)}}}, which the pod "
                         "does not tolerate: add a matching toleration to accelerator.tolerations, or use other "
                         "nodes (`kubectl describe nodes | grep Taints`)")
        elif reason.endswith("had volume node affinity conflict"):
            fixes.append(f"{replica} cannot be scheduled: its volumes are bound in another zone than the nodes it "
                         "may run on: use a storage class with volumeBindingMode WaitForFirstConsumer")
    return list(dict.fromkeys(fixes))  # a claim reason may come from PreFilter and Filter alike


def pod_fixes(pod: PodStatus, manifest: dict[str, Any], job: str, namespace: str, flags: list[str]) -> list[str]:
    """The fixes for one replica of job ``job``: image pulls, crash loops, and every scheduling reason
    (``flags``: what a printed command needs to reach the cluster)."""
    if pod.reason in _IMAGE_PULL:
        return [f"{pod.replica} cannot pull its image ({pod.reason}): check --image / image.* values, the "
                "registry, and imagePullSecrets"]
    if pod.reason == "CrashLoopBackOff":
        logs = command("logs", job, "--role", pod.role, "--rank", str(pod.rank), flags=flags)
        return [f"{pod.replica} keeps crashing: see `{logs}`"]
    return scheduling_fixes(pod.replica, pod.message, manifest, namespace)
