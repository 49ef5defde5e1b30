"""Job objects on the cluster: which operators the cluster serves, finding, listing and deleting jobs.

A job is looked up by name under every operator the kit knows (in :data:`whisper_k8s.operators.CONTRACTS`
order), so the commands after ``submit`` never need to be told the kind. Every call goes through
:meth:`ClusterApi.call`.
"""

from __future__ import annotations

import time
from typing import Any

from whisper_k8s.backends.base import Deleted
from whisper_k8s.backends.kubernetes_api import Access, ClusterApi, NotServed
from whisper_k8s.errors import ClusterError, UserError
from whisper_k8s.operators import JobState, OperatorContract, all_contracts, get_contract
from whisper_k8s.places import command

INSTANCE_LABEL = "app.kubernetes.io/instance"  # the chart's release label on every object it renders
# Objects of this kit carry the chart's part-of label; `list` selects on it.
KIT_SELECTOR = "app.kubernetes.io/part-of=whisper-k8s"

Found = tuple[OperatorContract, dict[str, Any]]


def no_operator_message() -> str:
    """What to install when the cluster serves none of the job kinds."""
    contracts = all_contracts()
    kinds = " nor ".join(f"{c.kind} ({c.crd})" for c in contracts)
    hints = "; or ".join(c.install_hint for c in contracts)
    return f"this cluster serves neither {kinds}: no training operator is installed. To fix, {hints}"


def operator_served(api: ClusterApi, contract: OperatorContract) -> bool:
    """Whether API discovery lists the operator's resource (GET /apis/<group>/<version>)."""
    try:
        resources = api.call(Access(contract.group, "/apis/" + contract.api_version, "get"),
                             api.custom().get_api_resources, contract.group, contract.version)
    except NotServed:
        return False
    return any(r.get("name") == contract.plural for r in resources.get("resources", []))


def require_operator(api: ClusterApi, operator: str) -> OperatorContract:
    contract = get_contract(operator)
    if not operator_served(api, contract):
        raise ClusterError(f"cluster {api.cluster}: the {contract.kind} CRD ({contract.crd}) is not installed: "
                           f"{contract.install_hint}")
    return contract


def served_operators(api: ClusterApi) -> list[str]:
    """The operators whose job resource the cluster serves: GET /apis, then each listed group version."""
    groups = api.call(Access("", "/apis", "get"), api.discovery().get_api_versions).get("groups", [])
    listed = {(group["name"], version["version"]) for group in groups for version in group.get("versions", [])}
    return [contract.name for contract in all_contracts()
            if (contract.group, contract.version) in listed and operator_served(api, contract)]


def get_job(api: ClusterApi, contract: OperatorContract, name: str) -> dict[str, Any] | None:
    """The job object; None when there is none. NotServed when the cluster lacks the operator's CRD."""
    return api.call(Access(contract.group, contract.plural, "get", name),
                    api.custom().get_namespaced_custom_object, contract.group, contract.version, api.namespace,
                    contract.plural, name, missing_ok=True)


def find_job(api: ClusterApi, name: str, operator: str | None = None) -> Found | None:
    """The job called ``name`` under the given operator, else under whichever kind holds it; None when no
    kind holds it. ClusterError names what to install when no kind is served."""
    candidates = [get_contract(operator)] if operator else all_contracts()
    unserved: list[NotServed] = []
    for contract in candidates:
        try:
            job = get_job(api, contract, name)
        except NotServed as missing:
            unserved.append(missing)
            continue
        if job is not None:
            return contract, job
    if len(unserved) == len(candidates):
        raise unserved[0] if operator else ClusterError(f"cluster {api.cluster}: {no_operator_message()}")
    return None


def require_job(api: ClusterApi, name: str, operator: str | None = None) -> Found:
    found = find_job(api, name, operator)
    if found is None:
        raise UserError(f"no job {name} in namespace {api.namespace} (see `{command('list', flags=api.flags)}`)")
    return found


def list_jobs(api: ClusterApi, operator: str | None = None) -> list[Found]:
    """This kit's job objects of every kind the cluster serves (or of ``operator``)."""
    candidates = [get_contract(operator)] if operator else all_contracts()
    found: list[Found] = []
    unserved: list[NotServed] = []
    for contract in candidates:
        try:
            listing = api.call(Access(contract.group, contract.plural, "list"),
                               api.custom().list_namespaced_custom_object, contract.group, contract.version,
                               api.namespace, contract.plural, label_selector=KIT_SELECTOR)
        except NotServed as missing:
            unserved.append(missing)
            continue
        found += [(contract, job) for job in listing.get("items", [])]
    if len(unserved) == len(candidates):
        raise unserved[0] if operator else ClusterError(f"cluster {api.cluster}: {no_operator_message()}")
    return found


def get_runtime(api: ClusterApi, contract: OperatorContract, job: dict[str, Any]) -> dict[str, Any] | None:
    """The namespaced runtime a job runs on (None for a job without one, or when it is gone)."""
    name = contract.runtime_name(job)
    if name is None:
        return None
    return api.call(Access(contract.group, contract.runtime_plural, "get", name),
                    api.custom().get_namespaced_custom_object, contract.group, contract.version, api.namespace,
                    contract.runtime_plural, name, missing_ok=True)


def delete_runtime_if_ours(api: ClusterApi, contract: OperatorContract, runtime: dict[str, Any] | None,
                           release: str) -> None:
    """Delete the job's runtime when the release created it (a helm hook, which `helm uninstall` leaves)."""
    if runtime is None or (runtime["metadata"].get("labels") or {}).get(INSTANCE_LABEL) != release:
        return
    name = runtime["metadata"]["name"]
    api.call(Access(contract.group, contract.runtime_plural, "delete", name),
             api.custom().delete_namespaced_custom_object, contract.group, contract.version, api.namespace,
             contract.runtime_plural, name, missing_ok=True)


def delete_job(api: ClusterApi, contract: OperatorContract, name: str, *, timeout: float = 120.0,
               poll_seconds: float = 2.0) -> None:
    """Delete the job object if it is still there (its pods go with it) and wait until GET says 404."""
    if get_job(api, contract, name) is not None:
        # already gone between our GET and DELETE (404): fine
        api.call(Access(contract.group, contract.plural, "delete", name),
                 api.custom().delete_namespaced_custom_object, contract.group, contract.version, api.namespace,
                 contract.plural, name, propagation_policy="Foreground", missing_ok=True)
    deadline = time.monotonic() + timeout
    while get_job(api, contract, name) is not None:
        if time.monotonic() > deadline:
            raise ClusterError(f"cluster {api.cluster}: job {api.namespace}/{name} is still there {timeout:.0f}s "
                               f"after delete: check finalizers with `kubectl get {contract.plural} {name} -o yaml`")
        time.sleep(poll_seconds)


def job_ended(api: ClusterApi, contract: OperatorContract, name: str) -> bool:
    """Whether the job is gone or has finished (a log follow stops then)."""
    job = get_job(api, contract, name)
    return job is None or contract.state(job) in JobState.TERMINAL


def kept_claims(api: ClusterApi, mounted: list[tuple[str, str]], *, release: str, purge_outputs: bool) -> Deleted:
    """Which of a deleted job's claims (volume, claim) still exist, one line each; with ``purge_outputs`` the
    outputs claim goes first when the release created it (its instance label), never a claim the user named.
    A claim helm is deleting (``storage.keepClaims=false``) has a deletionTimestamp and is not kept."""
    deleted = Deleted()
    for volume, name in mounted:
        access = Access("", "persistentvolumeclaims", "get", name)
        claim = api.call(access, api.core().read_namespaced_persistent_volume_claim, name, api.namespace,
                         missing_ok=True)
        if claim is None or claim["metadata"].get("deletionTimestamp"):
            continue
        ours = (claim["metadata"].get("labels") or {}).get(INSTANCE_LABEL) == release
        if purge_outputs and volume == "outputs" and ours:
            api.call(Access("", "persistentvolumeclaims", "delete", name),
                     api.core().delete_namespaced_persistent_volume_claim, name, api.namespace, missing_ok=True)
            deleted.purged.append(f"{volume} (claim {name})")
            continue
        deleted.kept.append(f"{volume} (claim {name} in namespace {api.namespace}"
                            + (", created by the job: storage.keepClaims keeps it" if ours else ", yours") + ")")
    return deleted
