"""Operators: the only place that knows a training operator (kind, API, pods, labels, ranks, env, states,
restarts). ``get_contract("pytorchjob")`` gives the Kubeflow training-operator v1.9 rules, ``trainjob`` those
of Kubeflow Trainer v2; both implement :class:`OperatorContract`.
"""

from whisper_k8s.operators.base import (
    CONTRACTS,
    DEFAULT_OPERATOR,
    JobState,
    OperatorContract,
    OperatorJob,
    Replica,
    ReplicaId,
    RestartRule,
    all_contracts,
    all_injected_variables,
    all_roles,
    get_contract,
    replica_name,
)

__all__ = ["CONTRACTS", "DEFAULT_OPERATOR", "JobState", "OperatorContract", "OperatorJob", "Replica", "ReplicaId",
           "RestartRule", "all_contracts", "all_injected_variables", "all_roles", "get_contract", "replica_name"]
