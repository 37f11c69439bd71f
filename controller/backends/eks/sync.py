"""EKS nodes become hosts: the backend-sync job of kind ``eks``.

For each EKS backend it gets the cluster's GPU nodes (the job: a ``GpuNodeWatch`` per backend that lists once and
then follows a watch, see :class:`EksNodeTrackers`; otherwise a paginated ``KubeGpuCluster.list_gpu_hosts``) and
upserts them as hosts of the backend (host name = node name):

- a node whose agent reports (the DaemonSet) keeps the agent's inventory for its devices; the node adds zone,
  region, nodegroup, instance type, EFA, network-node layers, placement group and GFD labels;
- a node without an agent gets devices made from its capacity and GFD labels (``nvidia.com/gpu.count``,
  ``.product``, ``.memory``; time-sliced / MPS replicas from the backend's ``sharing`` for the nodegroup);
- nodes that disappeared are deleted, or marked unreachable while a lease still holds them.

It also keeps the nodegroups' **headroom** hosts (``maxSize - desiredSize`` nodes, at least one) and moves
the claims of leases waiting on headroom to a node of the nodegroup that registered or became idle, then
provisions those leases again (``controller.backends.eks.headroom``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from controller.backends.contract import LeaseDirectory, LeaseHooks
from controller.backends.eks.capacity import USABLE_UNTIL_LABEL, capacity_block_ends
from controller.backends.eks.cluster import (
    EksBackendError,
    aws_nodegroups,
    backend_config,
    is_headroom,
    kube_cluster,
)
from controller.backends.eks.config import EksConfig
from controller.backends.eks.devices import KEPT_LABEL_PREFIXES, device_docs, node_labels
from controller.backends.eks.headroom import bind_waiting, sync_headroom
from controller.backends.eks.karpenter import sync_karpenter_headroom
from controller.backends.eks.report import SyncReport
from controller.backends.eks.topology import node_topology_labels
from controller.backends.hostsync import apply_devices
from controller.fleet.states import set_host_status
from controller.store.db import Database
from controller.store.models import Backend, Host
from drivers.eks import EksError
from drivers.eks.karpenter import apply_pool
from drivers.eks.kube import KubeGpuCluster
from drivers.eks.kube_models import KubeGpuHost
from drivers.eks.node_watch import GpuNodeWatch

log = logging.getLogger("gpufabric.backends.eks.sync")

SYNC_INTERVAL_S = 30.0


class EksNodeTrackers:
    """One :class:`GpuNodeWatch` per EKS backend, kept between sync ticks by whoever runs the sync (the job
    :func:`install` registers owns one). The first sync of a backend lists its nodes page by page; later
    syncs follow the watch from the list's resourceVersion instead of listing again (410 Gone: a new list).
    A backend whose Kubernetes access settings change gets a new tracker."""

    def __init__(self, watch_timeout_s: int = 1) -> None:
        self.watch_timeout_s = watch_timeout_s
        self._lock = threading.Lock()
        self._trackers: dict[str, tuple[tuple[Any, ...], GpuNodeWatch]] = {}

    def tracker(self, name: str, config: EksConfig) -> GpuNodeWatch:
        access = (
            config.cluster,
            config.region,
            config.kube_in_cluster,
            config.kube_api_url,
            config.kubeconfig,
            config.kube_context,
        )
        with self._lock:
            kept = self._trackers.get(name)
            if kept is None or kept[0] != access:
                kept = (access, GpuNodeWatch(watch_timeout_s=self.watch_timeout_s))
                self._trackers[name] = kept
            return kept[1]

    def keep_only(self, names: Iterable[str]) -> None:
        """Drop the trackers of backends that are gone."""
        wanted = set(names)
        with self._lock:
            for name in [n for n in self._trackers if n not in wanted]:
                del self._trackers[name]


def sync_backend(
    db: Database,
    directory: LeaseDirectory,
    name: str,
    *,
    kube_factory: Callable[[EksConfig], KubeGpuCluster] = kube_cluster,
    trackers: EksNodeTrackers | None = None,
) -> SyncReport:
    report = SyncReport(backend=name)
    with db.session() as session:
        backend = session.scalar(select(Backend).where(Backend.name == name))
        if backend is None or backend.kind != "eks":
            report.errors.append(f"backend {name} is not an EKS backend")
            return report
        config = backend_config(backend.config)
        backend_id = backend.id
    try:
        kube = kube_factory(config)
        try:
            if trackers is not None:
                nodes = trackers.tracker(name, config).poll(kube).hosts
            else:
                nodes = kube.list_gpu_hosts()
            _reconcile_namespaces(directory, kube, report)
            _apply_karpenter(kube, config, report)
        finally:
            kube.close()
    except (EksError, EksBackendError) as exc:
        report.errors.append(f"listing nodes: {exc}")
        return report
    known = {ng.name for ng in config.nodegroups}
    pools = {p.name for p in config.karpenter}
    if known or pools:
        nodes = [n for n in nodes if n.nodegroup in known or n.labels.get("karpenter.sh/nodepool") in pools]
    scaling: dict[str, tuple[int, int]] = {}
    if config.headroom:
        try:
            groups = aws_nodegroups(config)
            for ng in config.gpu_nodegroups:
                info = groups.describe_nodegroup(config.cluster, ng.name)
                scaling[ng.name] = (info.scaling.desired, info.scaling.max)
        except EksError as exc:
            report.errors.append(f"describing nodegroups (headroom unchanged): {exc}")
            scaling = {}
    with db.session() as session:
        stored = {
            hostname: dict(labels or {})
            for hostname, labels in session.execute(
                select(Host.hostname, Host.labels).where(Host.backend_id == backend_id)
            )
        }
    topology = node_topology_labels(config, nodes, stored)  # an EC2 call only for instances not asked before
    block_ends = capacity_block_ends(config, report)  # nodegroup -> ISO end of its Capacity Block
    for node in nodes:
        extra = topology.labels.setdefault(node.name, {})
        if node.nodegroup in block_ends:
            extra[USABLE_UNTIL_LABEL] = block_ends[node.nodegroup]
        elif node.nodegroup in report.unknown_blocks and USABLE_UNTIL_LABEL in stored.get(node.name, {}):
            extra[USABLE_UNTIL_LABEL] = stored[node.name][USABLE_UNTIL_LABEL]  # AWS did not answer: keep the last
    now = datetime.now(UTC)
    with db.session() as session:
        busy = set(directory.live_claim_hosts(backend_id))
        hosts = {
            h.hostname: h
            for h in session.scalars(
                select(Host)
                .where((Host.backend_id == backend_id) | Host.hostname.in_([n.name for n in nodes]))
                .options(selectinload(Host.devices))
            )
        }
        report.instance_topology = {"asked": topology.asked, "labelled": topology.labelled}
        report.errors += topology.errors
        for node in nodes:
            report.nodes.append(node.name)
            extra = topology.labels.get(node.name, {})
            if _upsert_node(session, hosts.get(node.name), node, config, backend_id, now, extra):
                report.changed.append(node.name)
        present = {n.name for n in nodes}
        for host in hosts.values():
            if host.backend_id != backend_id or is_headroom(host) or host.hostname in present:
                continue
            if host.id in busy:
                if set_host_status(host, "unreachable"):
                    report.unreachable.append(host.hostname)
                    report.changed.append(host.hostname)
            else:
                session.delete(host)
                report.removed.append(host.hostname)
                report.changed.append(host.hostname)
        if scaling:
            sync_headroom(session, config, backend_id, name, hosts, busy, scaling, now, report, block_ends)
        if config.headroom and config.karpenter:
            sync_karpenter_headroom(session, config, backend_id, name, busy, now, report)
    report.bound = bind_waiting(db, directory, name)
    report.changed += list(report.bound.values())
    return report


def _apply_karpenter(kube: KubeGpuCluster, config: EksConfig, report: SyncReport) -> None:
    """Write each Karpenter GPU pool's EC2NodeClass and NodePool (create, or replace when they differ)."""
    for pool in config.karpenter:
        try:
            report.karpenter[pool.name] = apply_pool(kube.api_client, pool)
        except EksError as exc:
            report.errors.append(f"karpenter pool {pool.name}: {exc}")


def _reconcile_namespaces(directory: LeaseDirectory, kube: KubeGpuCluster, report: SyncReport) -> None:
    """Delete tenant namespaces whose lease holds nothing (released, failed, or unknown to this store).

    A lease's namespace is made by ``provision`` and deleted by ``release``; a controller killed in between, or a
    release whose cluster call failed after the lease was finished, leaves one behind. Leases still in a
    transitional state keep theirs (their recovery decides)."""
    try:
        found = kube.list_lease_namespaces()
    except EksError as exc:
        report.errors.append(f"listing lease namespaces: {exc}")
        return
    if not found:
        return
    statuses = directory.lease_status(found.values())
    for namespace, lease_id in sorted(found.items()):
        status = statuses.get(lease_id)
        if status is not None and status.live:
            continue
        state = status.state if status is not None else None
        try:
            kube.delete_tenant_namespace(namespace)
            action = "deleted"
        except EksError as exc:
            action = "delete failed"
            report.errors.append(f"deleting orphan namespace {namespace}: {exc}")
        log.warning("orphan namespace %s of lease %s (%s): %s", namespace, lease_id, state or "unknown", action)
        report.orphans.append(
            {"namespace": namespace, "lease": lease_id, "lease_state": state or "unknown", "action": action}
        )


def _upsert_node(
    session: Session,
    host: Host | None,
    node: KubeGpuHost,
    config: EksConfig,
    backend_id: int,
    now: datetime,
    extra_labels: dict[str, str] | None = None,
) -> bool:
    ng = config.nodegroup(node.nodegroup)
    labels = {**(extra_labels or {}), **node_labels(node, ng)}  # the node's own labels win
    if host is None:
        host = Host(hostname=node.name, backend_id=backend_id, labels={}, registered_at=now)
        session.add(host)
    before = (host.backend_id, dict(host.labels or {}), host.status, host.inventory_hash)
    host.backend_id = backend_id
    kept = {
        k: v
        for k, v in (host.labels or {}).items()
        if not k.startswith(KEPT_LABEL_PREFIXES) and k != USABLE_UNTIL_LABEL  # the sync's own, re-supplied above
    }
    host.labels = {**kept, **labels}
    agent_owned = host.inventory is not None
    node_ok = node.ready and not node.unschedulable
    if not agent_owned:
        docs = device_docs(node.name, node, ng, config.sharing.get(node.nodegroup or ""))
        host.inventory_hash = apply_devices(host, docs, now)
        host.health = "healthy" if docs else "unknown"
        host.last_seen = now
        set_host_status(host, "ready" if node_ok else "unreachable")
    elif not node_ok:
        set_host_status(host, "unreachable")  # the agent may still report, but Kubernetes will not schedule there
    changed = before != (host.backend_id, host.labels, host.status, host.inventory_hash)
    return changed  # the change feed stamps the host at commit (controller.store.changes)


# -- the job -------------------------------------------------------------------------------------------------


def sync_all(
    db: Database,
    directory: LeaseDirectory,
    leases: LeaseHooks | None = None,
    trackers: EksNodeTrackers | None = None,
    *,
    kube_factory: Callable[[EksConfig], KubeGpuCluster] = kube_cluster,
) -> list[SyncReport]:
    with db.session() as session:
        names = list(session.scalars(select(Backend.name).where(Backend.kind == "eks").order_by(Backend.name)))
    if trackers is not None:
        trackers.keep_only(names)
    reports = []
    for name in names:
        reports.append(run_sync(db, directory, name, leases, trackers, kube_factory=kube_factory))
    return reports


def run_sync(
    db: Database,
    directory: LeaseDirectory,
    name: str,
    leases: LeaseHooks | None = None,
    trackers: EksNodeTrackers | None = None,
    *,
    kube_factory: Callable[[EksConfig], KubeGpuCluster] = kube_cluster,
) -> SyncReport:
    """Sync one backend, refresh this replica's placement index and provision the EKS leases still waiting.

    With ``trackers`` the nodes come from the backend's node watch (see :class:`EksNodeTrackers`), else
    from a paginated list."""
    report = sync_backend(db, directory, name, kube_factory=kube_factory, trackers=trackers)
    if leases is None:
        return report
    if report.changed:
        leases.hosts_changed(sorted(set(report.changed)))
    for lease_id in directory.provisioning_leases("eks"):  # every EKS lease still provisioning
        try:
            leases.reprovision(lease_id)
        except Exception:
            log.exception("provisioning lease %s again failed", lease_id)
    return report
