"""The Kubernetes backend: installs the chart with Helm and reads jobs back through the official client.

* ``submit`` is ``helm upgrade --install`` of the chart with the kept values file (the chart is the one
  source of manifests); before it, API discovery checks that the operator's CRD is served, and without
  ``--operator`` picks the operator the cluster serves.
* ``status``/``logs``/``list``/``delete``/``collect`` find a job by name under every operator the kit knows
  and read it, its pods (by the operator's labels), their events and logs back from the cluster; nothing is
  kept locally.

The pieces, one concern each: :mod:`kubernetes_api` (the client and the one error path of every call),
:mod:`kubernetes_rbac` (the permissions it needs), :mod:`kubernetes_jobs` (discovery and job objects),
:mod:`kubernetes_helm` (the helm binary), :mod:`kubernetes_pods` (status and hints), :mod:`kubernetes_logs`
(watch and log streams) and :mod:`kubernetes_fetch` (collect through a helper pod). Everything an operator
defines comes from :mod:`whisper_k8s.operators`.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from whisper_k8s import places
from whisper_k8s.backends import kubernetes_jobs as jobs
from whisper_k8s.backends.base import (
    AppRequest,
    Deleted,
    DryRunInfo,
    JobState,
    JobStatus,
    Scheduler,
    make_handle,
)
from whisper_k8s.backends.kubernetes_api import ClusterApi
from whisper_k8s.backends.kubernetes_helm import ReleaseNotFound, cluster_flags, run_helm
from whisper_k8s.backends.kubernetes_hints import claims
from whisper_k8s.backends.kubernetes_logs import log_iter
from whisper_k8s.backends.kubernetes_pods import describe, job_status
from whisper_k8s.chart import chart_dir, helm_binary
from whisper_k8s.errors import ClusterError, UserError
from whisper_k8s.operators import OperatorContract, get_contract


class KubernetesScheduler(Scheduler):
    """Runs jobs as Helm releases of the chart on a cluster. ``api_client``/``helm`` are injectable."""

    name = "kubernetes"

    def __init__(self, namespace: str = "default", *, api_client: Any = None, kubeconfig: str | None = None,
                 context: str | None = None, helm: str | None = None, poll_seconds: float = 2.0) -> None:
        super().__init__(namespace)
        self.api = ClusterApi(namespace, api_client=api_client, kubeconfig=kubeconfig, context=context)
        self.kubeconfig, self.context = kubeconfig, context
        self._helm = helm
        self.poll_seconds = poll_seconds

    def place_flags(self) -> list[str]:
        """``-n``/``--kubeconfig``/``--context`` as given: a cluster's jobs are reached from any folder."""
        return self.api.flags

    # ------------------------------------------------------------------------------------------ submit
    def choose_operator(self, requested: str | None = None) -> str:
        """``requested`` when given; else the one the cluster serves (the first in lookup order when it
        serves several: a cluster in migration keeps the chart's default, ``--operator`` picks another)."""
        if requested:
            return get_contract(requested).name
        served = jobs.served_operators(self.api)
        if not served:
            raise ClusterError(f"cluster {self.api.cluster}: {jobs.no_operator_message()}")
        return served[0]

    def require_operator(self, operator: str) -> OperatorContract:
        return jobs.require_operator(self.api, operator)

    def dryrun(self, request: AppRequest) -> DryRunInfo:
        args = self.helm_install_args(request)
        return DryRunInfo(backend=self.name, request=request, documents=list(request.documents),
                          actions=[shlex.join(args)], extra={"helm_args": args})

    def helm_install_args(self, request: AppRequest) -> list[str]:
        """``helm upgrade --install`` for the request; the values come from the kept values file."""
        chart = request.chart or chart_dir()
        args = [self._helm or "helm", "upgrade", "--install", request.name, str(chart),
                "--namespace", request.namespace]
        if request.values_file:
            args += ["--values", str(request.values_file)]
        return args + cluster_flags(self.kubeconfig, self.context)

    def schedule(self, info: DryRunInfo) -> str:
        request = info.request
        if request.values_file is None:
            raise UserError("the request has no values file: write the values first (whisper_k8s.values)")
        contract = self.require_operator(request.operator)
        self._refuse_finished_job(contract, request.name)
        args = list(info.extra["helm_args"])
        args[0] = self._helm or helm_binary()
        self._helm_run(args, request.name)
        return make_handle(self.name, request.namespace, request.name)

    def _refuse_finished_job(self, contract: OperatorContract, name: str) -> None:
        """An upgrade cannot restart a finished job (the operator ignores it): say so instead."""
        job = jobs.get_job(self.api, contract, name)
        if job is not None and (state := contract.state(job)) in JobState.TERMINAL:
            raise UserError(f"job {self.namespace}/{name} already finished ({state}): collect its outputs, "
                            f"then `{places.command('delete', name, flags=self.place_flags())}` or submit with "
                            "another --name")

    def _helm_run(self, args: list[str], release: str) -> str:
        return run_helm(args, release=release, namespace=self.namespace, cluster=self.api.cluster,
                        flags=self.place_flags())

    # ------------------------------------------------------------------------------------------ read back
    def describe(self, name: str, operator: str | None = None) -> JobStatus | None:
        found = jobs.find_job(self.api, name, operator)
        return None if found is None else describe(self.api, *found)

    def list(self, operator: str | None = None) -> list[JobStatus]:
        """This kit's jobs of every kind the cluster serves (or of ``operator``), by name."""
        statuses = [job_status(contract, job, self.namespace) for contract, job in jobs.list_jobs(self.api, operator)]
        return sorted(statuses, key=lambda s: (s.name, s.operator))

    def log_iter(self, name: str, *, follow: bool = False, since: float | None = None, role: str | None = None,
                 rank: int | None = None, operator: str | None = None) -> Iterator[str]:
        contract, _ = jobs.require_job(self.api, name, operator)
        yield from log_iter(self.api, contract, name, follow=follow, since=since, role=role, rank=rank)

    # ------------------------------------------------------------------------------------------ delete
    def cancel(self, name: str, *, purge_outputs: bool = False, operator: str | None = None,
               timeout: float = 120.0) -> Deleted:
        """helm uninstall; a job applied without helm (manifests/) is deleted directly; then verify it is gone.

        A job's runtime that the release created (a TrainJob's TrainingRuntime, a helm hook that `helm
        uninstall` leaves behind) is deleted too. The claims the job mounted stay when helm keeps them
        (``storage.keepClaims``, the default) or the user named them; with ``purge_outputs`` the outputs claim
        the release created goes too.
        """
        found = jobs.find_job(self.api, name, operator)
        mounted = claims_of(found[0], self._documents(*found)) if found else [("outputs", outputs_claim(name))]
        uninstalled = self._helm_uninstall(name)
        if found is not None:
            contract, job = found
            runtime = jobs.get_runtime(self.api, contract, job)
            jobs.delete_job(self.api, contract, name, timeout=timeout, poll_seconds=self.poll_seconds)
            jobs.delete_runtime_if_ours(self.api, contract, runtime, name)
        deleted = jobs.kept_claims(self.api, mounted, release=name, purge_outputs=purge_outputs)
        if found is None and not uninstalled and not deleted.purged:
            raise UserError(f"no job {name} in namespace {self.namespace} (see "
                            f"`{places.command('list', flags=self.place_flags())}`)"
                            + (f"; claims kept from it: {'; '.join(deleted.kept)}" if deleted.kept else ""))
        return deleted

    def _helm_uninstall(self, name: str) -> bool:
        """Uninstall the release; False when helm has no release of that name."""
        try:
            self._helm_run([self._helm or helm_binary(), "uninstall", name, "--namespace", self.namespace,
                            *cluster_flags(self.kubeconfig, self.context)], name)
        except ReleaseNotFound:
            return False
        return True

    # ------------------------------------------------------------------------------------------ collect
    def fetch_outputs(self, name: str, dest: Path) -> Path:
        """Copy the job's outputs through a short-lived pod that mounts its outputs volume (kubernetes_fetch)."""
        from whisper_k8s.backends import kubernetes_fetch

        contract, job = jobs.require_job(self.api, name)
        return kubernetes_fetch.fetch_outputs(self.api, self._documents(contract, job), Path(dest),
                                              operator=contract.name)

    def _documents(self, contract: OperatorContract, job: dict[str, Any]) -> list[dict[str, Any]]:
        """The job object, and the runtime that holds its pod spec (a TrainJob's)."""
        if contract.runtime_name(job) is None:
            return [job]
        runtime = jobs.get_runtime(self.api, contract, job)
        if runtime is None:
            raise UserError(f"the {contract.kind} {job['metadata']['name']} runs on {contract.runtime_name(job)}, "
                            f"which is gone from namespace {self.namespace}: its pod spec cannot be read")
        return [job, runtime]


def claims_of(contract: OperatorContract, documents: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(volume, claim) of each PersistentVolumeClaim the job's pods mount (the volume is the chart's storage key)."""
    found: dict[str, str] = {}
    for replica in contract.read_job(documents).replicas:
        found.update({claim: volume for volume, claim in claims({"spec": replica.pod_spec})})
    return [(volume, claim) for claim, volume in found.items()]


def outputs_claim(release: str) -> str:
    """The outputs claim the chart creates for a release (helm/templates/_helpers.tpl, whisper.claimName)."""
    return f"{release}-outputs"[:63].rstrip("-")
