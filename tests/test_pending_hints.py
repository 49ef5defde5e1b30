"""`status` gives the fix for each reason kube-scheduler gives for a pending pod, and `logs` of a job whose pods
have not started says why there is nothing yet.

The pending pod, its event and the pod list are the recorded ones (tests/fixtures/reference/k8s-api-responses,
Kubernetes v1.36 scheduler). Only the scheduler's message is changed for the reasons no recording holds; each
is built with kube-scheduler's own formats (pkg/scheduler/framework/types.go FitError.Error():
"0/%v nodes are available:" then " %v." for the PreFilter message or the sorted "<count> <reason>" histogram
joined by ", ", then " %v." for the PostFilter message; the reasons from pkg/scheduler/framework/plugins/:
noderesources/fit.go "Insufficient %v", volumebinding "pod has unbound immediate PersistentVolumeClaims",
nodeaffinity "node(s) didn't match Pod's node affinity/selector", tainttoleration "node(s) had untolerated
taint {%s: %s}", defaultpreemption "Preemption is not helpful for scheduling"). The recorded message ends with
"no new claims to deallocate, preemption: ..." (two PostFilter plugins); the built ones keep that shape.
"""

from __future__ import annotations

from k8s_fake import FakeApiServer, changed, recorded

from whisper_k8s.backends.kubernetes import KubernetesScheduler
from whisper_k8s.backends.kubernetes_hints import scheduling_reasons
from whisper_k8s.cli.main import main

JOBS = "/apis/kubeflow.org/v1/namespaces/default/pytorchjobs"
PODS = "/api/v1/namespaces/default/pods"
EVENTS = "/api/v1/namespaces/default/events"
RECORDED = ("0/1 nodes are available: 1 Insufficient huawei.com/Ascend910. no new claims to deallocate, "
            "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.")
POST_FILTER = "no new claims to deallocate, preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."


def pending_job(message: str, *, volumes: list | None = None, cpu: str | None = None) -> dict:
    """Routes for job whisper-train whose only pod, the recorded pending worker, waits for ``message`` (in its
    PodScheduled condition and its FailedScheduling event); ``volumes``/``cpu`` are added to its spec."""
    worker = recorded("pod_get_pending_200")["body"]
    worker["status"]["conditions"][0]["message"] = message
    if volumes:
        worker["spec"]["volumes"] += volumes
    if cpu:
        worker["spec"]["containers"][0]["resources"]["requests"]["cpu"] = cpu

    def only_the_worker(body):
        body["items"] = [worker]

    def with_message(body):
        body["items"][0]["message"] = message

    return {("GET", f"{JOBS}/whisper-train"): "pods_owner_pytorchjob_create_201",
            ("GET", PODS): changed("pods_list_by_label_selector_200", only_the_worker),
            ("GET", f"{EVENTS}?fieldSelector=involvedObject.name=whisper-train-worker-0"):
                changed("events_list_pending_pod_200", with_message)}


def problems(routes: dict) -> list[str]:
    backend = KubernetesScheduler(api_client=FakeApiServer(routes).client())
    return backend.describe("whisper-train").problems


def test_the_recorded_message_gives_its_reason_without_the_post_filter_part():
    assert scheduling_reasons(RECORDED) == ["Insufficient huawei.com/Ascend910"]
    assert scheduling_reasons("Back-off pulling image") == []


def test_cpu_and_npus_short_give_one_fix_each():
    message = f"0/3 nodes are available: 1 Insufficient cpu, 3 Insufficient huawei.com/Ascend910. {POST_FILTER}"
    cpu, npus = problems(pending_job(message, cpu="24"))
    assert cpu.startswith("worker-0 cannot be scheduled: no node has enough free cpu (it asks for 24): lower "
                          "resources.cpuPerNode") and "--npus-per-node" not in cpu
    assert npus.startswith("worker-0 cannot be scheduled: no node has enough free huawei.com/Ascend910 (it asks "
                           "for 9): lower --npus-per-node, or --nodes")


def test_memory_short_names_its_value():
    (fix,) = problems(pending_job(f"0/3 nodes are available: 3 Insufficient memory. {POST_FILTER}"))
    assert "no node has enough free memory" in fix and "resources.memoryPerNode" in fix


def test_unbound_claims_name_the_claim_and_the_storage_values():
    message = f"0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. {POST_FILTER}"
    volumes = [{"name": "outputs", "persistentVolumeClaim": {"claimName": "whisper-train-outputs"}}]
    (fix,) = problems(pending_job(message, volumes=volumes))
    assert fix.startswith("worker-0 waits for unbound PersistentVolumeClaims (whisper-train-outputs): no storage "
                          "class provides them")
    assert "storage.outputs.existingClaim" in fix and "storage.outputs.storageClassName" in fix
    assert "ReadWriteMany" in fix and "kubectl get pvc,storageclass -n default" in fix


def test_node_selector_and_taint_mismatches_each_get_their_fix():
    message = ("0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: "
               f"}}, 2 node(s) didn't match Pod's node affinity/selector. {POST_FILTER}")
    taint, selector = problems(pending_job(message))
    assert "taint {node-role.kubernetes.io/control-plane: }" in taint and "accelerator.tolerations" in taint
    assert "no node matches its node selector or affinity" in selector and "accelerator.nodeSelector" in selector


def test_logs_of_a_job_without_a_started_pod_says_why(monkeypatch, capsys):
    fake = FakeApiServer(pending_job(RECORDED))
    monkeypatch.setattr("whisper_k8s.backends.kubernetes_api.load_api_client", lambda *a, **k: (fake.client(), ""))
    assert main(["logs", "whisper-train"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    first, second = err.splitlines()
    assert first == "no log yet: no replica of job whisper-train has started (worker-0 Pending (FailedScheduling))"
    assert second.startswith("! worker-0 cannot be scheduled: no node has enough free huawei.com/Ascend910")
    # the pod has no node: its log was never asked for
    assert not [r for r in fake.requests if r[1].endswith("/log")]


def test_the_commands_the_kubernetes_backend_prints_run_as_printed(monkeypatch, capsys):
    """In namespace team-a, context prod: each printed command carries both, and runs (the crash-loop one against
    the recorded cluster; the others are parsed by the CLI, which is what can be checked without a cluster)."""
    import re
    import shlex

    import pytest

    from whisper_k8s.backends import kubernetes_jobs
    from whisper_k8s.backends.kubernetes_api import Access
    from whisper_k8s.cli.main import build_parser
    from whisper_k8s.errors import WhisperK8sError

    team = "/api/v1/namespaces/team-a/pods"
    crashing = recorded("pod_get_running_200")["body"]
    crashing["spec"]["containers"][0]["env"][3]["value"] = "1"
    crashing["metadata"]["name"] = "whisper-train-worker-0"
    crashing["metadata"]["labels"].update({"training.kubeflow.org/replica-type": "worker"})
    crashing["metadata"]["labels"].pop("training.kubeflow.org/job-role", None)
    crashing["status"]["containerStatuses"][0].update(  # as the kubelet writes a crash loop (V1ContainerStatus)
        restartCount=3, lastState={"terminated": {"exitCode": 1, "reason": "Error", "startedAt": "2026-11-25T21:25:59Z",
                                                  "finishedAt": "2026-11-25T21:26:01Z"}},
        state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container=pytorch"}})

    def only_the_crashing_worker(body):
        body["items"] = [crashing]

    routes = {("GET", "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs/whisper-train"):
              "pods_owner_pytorchjob_create_201",
              ("GET", team): changed("pods_list_by_label_selector_200", only_the_crashing_worker),
              ("GET", f"{team}/whisper-train-worker-0/log?previous=true"):
                  {"status": 200, "body": "2026-11-25T21:26:00Z boom\n"},
              ("GET", "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs/gone"): "pytorchjob_get_after_delete_404",
              ("POST", "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs"): "pytorchjob_create_already_exists_409"}
    fake = FakeApiServer(routes)
    monkeypatch.setattr("whisper_k8s.backends.kubernetes_api.load_api_client", lambda *a, **k: (fake.client(), "prod"))
    backend = KubernetesScheduler("team-a", context="prod")
    messages = [problem for problem in backend.describe("whisper-train").problems]
    with pytest.raises(WhisperK8sError) as missing:
        kubernetes_jobs.require_job(backend.api, "gone", operator="pytorchjob")
    messages.append(str(missing.value))
    with pytest.raises(WhisperK8sError) as exists:
        backend.api.call(Access("kubeflow.org", "pytorchjobs", "create", "whisper-train"),
                         backend.api.custom().create_namespaced_custom_object, "kubeflow.org", "v1", "team-a",
                         "pytorchjobs", {})
    messages.append(str(exists.value))
    commands = [c for message in messages for c in re.findall(r"`(python -m whisper_k8s [^`]+)`", message)]
    assert commands == [
        "python -m whisper_k8s logs whisper-train --role worker --rank 1 -n team-a --context prod",
        "python -m whisper_k8s list -n team-a --context prod",
        "python -m whisper_k8s delete whisper-train -n team-a --context prod"]
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[3:])
        assert (args.namespace, args.context) == ("team-a", "prod")
    capsys.readouterr()
    assert main(shlex.split(commands[0])[3:]) == 0
    # the crashed run's log (the current one waits for its back-off): the run before was the 2nd restart
    assert capsys.readouterr().out == "[worker-0] --- restart 2 ---\n[worker-0] boom\n"
