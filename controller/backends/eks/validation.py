"""NCCL validation on an EKS nodegroup: the job's shape from the backend's config and hosts, and the MPIJob runner on
its cluster (``EksBackend.nccl_cluster`` / ``nccl_runner``; ``controller.validation`` drives the run)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from controller.backends.contract import ClusterRequestError, ClusterRun
from controller.backends.eks.cluster import EksBackendError, backend_config, kube_cluster
from controller.backends.eks.config import EksConfig
from controller.store.db import Database
from controller.store.models import Backend, Host
from drivers.eks.catalog import builtin_facts
from drivers.eks.kube_labels import NODEGROUP_LABEL

# eksctl's own label on self-managed nodegroups, beside EKS's on managed ones.
NODEGROUP_LABELS = (NODEGROUP_LABEL, "alpha.eksctl.io/nodegroup-name")


def _config(db: Database, name: str) -> EksConfig:
    with db.session() as session:
        row = session.scalar(select(Backend).where(Backend.name == name))
        if row is None:
            raise ClusterRequestError(f"backend {name} not found", 404)
        return backend_config(row.config or {})


def cluster_run(db: Database, name: str, nodegroup: str, instance_type: str | None, nodes: int | None) -> ClusterRun:
    """The nodegroup's instance type and size from the backend's config (the request's win), its GPUs per node and
    model from the instance type, and the nodegroup's nodes gpufabric knows (by their nodegroup label)."""
    config = _config(db, name)
    group = config.nodegroup(nodegroup)
    instance_type = instance_type or (group.instance_types[0] if group and group.instance_types else None)
    if not instance_type:
        raise ClusterRequestError(f"instance type of nodegroup {nodegroup} unknown: pass instance_type")
    nodes = nodes or (group.desired if group else 0)
    if nodes < 1:
        raise ClusterRequestError(f"nodegroup {nodegroup} has no nodes: pass nodes")
    with db.session() as session:
        backend_id = session.scalar(select(Backend.id).where(Backend.name == name))
        hosts = sorted(
            h.hostname
            for h in session.scalars(select(Host).where(Host.backend_id == backend_id))
            if any((h.labels or {}).get(key) == nodegroup for key in NODEGROUP_LABELS)
        )
    facts = builtin_facts(instance_type)
    return ClusterRun(
        instance_type=instance_type,
        nodes=nodes,
        gpus_per_node=facts.gpu_count if facts else None,
        gpu_model=facts.gpu_model if facts else None,
        hosts=tuple(hosts),
    )


def mpi_runner(db: Database, name: str) -> Any:
    """An MPIJob runner on the backend's cluster, through whatever access its config gives."""
    from drivers.eks.mpijob import MpiJobRunner

    try:
        cluster = kube_cluster(_config(db, name))
    except EksBackendError as exc:
        raise ClusterRequestError(str(exc)) from None
    return MpiJobRunner(cluster.api_client)
