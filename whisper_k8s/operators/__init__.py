"""Operator contracts: how each training operator turns a rendered job into pods (names, ranks, env, labels).

``get_contract("pytorchjob")`` gives the Kubeflow training-operator v1.9 rules; ``trainjob`` (Kubeflow
Trainer v2) is a sibling module implementing the same :class:`OperatorContract`.
"""

from whisper_k8s.operators.base import (
    CONTRACTS,
    OperatorContract,
    OperatorJob,
    Replica,
    get_contract,
)

__all__ = ["CONTRACTS", "OperatorContract", "OperatorJob", "Replica", "get_contract"]
