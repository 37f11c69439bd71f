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
provisions those leases again (see ``controller.backends.eks``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from controller.backends import eks as eks_backend
from controller.backends.eks import (
    EFA_LABEL,
    PLACEMENT_GROUP_HOST_LABEL,
    SCALE_REQUESTED_LABEL,
    SOURCE_LABEL,
    is_headroom,
)
from controller.backends.eks_config import EksConfig, NodegroupSharing
from controller.backends.hostsync import apply_devices, live_claim_hosts
from controller.fleet.states import set_host_status
from controller.jobs.hooks import HookRegistry, JobContext
from controller.leases.state import HOLDING, TRANSITIONAL
from controller.observability.redact import redact
from controller.store.changes import mark_hosts_changed
from controller.store.db import Database
from controller.store.models import Backend, Host, Lease, SliceClaim
from drivers.eks import PLACEMENT_GROUP_LABEL, EksError, EksNodegroupConfig
from drivers.eks.kube import (
    INSTANCE_TYPE_LABEL,
    NODEGROUP_LABEL,
    REGION_LABEL,
    ZONE_LABEL,
    GpuNodeWatch,
    KubeGpuCluster,
    KubeGpuHost,
)

log = logging.getLogger("gpufabric.backends.eks.sync")
LIVE_STATES = HOLDING | TRANSITIONAL

SYNC_INTERVAL_S = 30.0
HEADROOM_COST = "100"  # placement prefers running nodes; a new node is the last resort
_KEPT_LABEL_PREFIXES = ("topology.", "eks.amazonaws.com/", "nvidia.com/gpu.", "gpufabric.io/", "node.kubernetes.io/")


class LeaseHooks(Protocol):
    """What the sync needs of the lease service (``controller.leases.service.LeaseService``)."""

    def hosts_changed(self, hostnames: Any) -> None: ...

    def reprovision(self, lease_id: str) -> None: ...


@dataclass
class SyncReport:
    backend: str
    nodes: list[str] = field(default_factory=list)
    headroom: dict[str, int] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    bound: dict[str, str] = field(default_factory=dict)  # lease id -> node
    changed: list[str] = field(default_factory=list)
    # Tenant namespaces whose lease holds nothing any more (a crash between the backend's work and the store's):
    # {"namespace", "lease", "lease_state", "action": "deleted" | "delete failed"}
    orphans: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "nodes": self.nodes,
            "headroom": self.headroom,
            "removed": self.removed,
            "unreachable": self.unreachable,
            "bound": self.bound,
            "orphans": self.orphans,
            "errors": redact(self.errors),
        }


# -- device facts --------------------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return re.sub(r"[\s_-]+", "-", name.strip().lower())


@cache
def nvml_name(gfd_product: str | None, fallback_model: str | None = None) -> tuple[str, int | None]:
    """The NVML device name (and memory) for GFD's ``nvidia.com/gpu.product`` ("NVIDIA-L4" -> "NVIDIA L4")."""
    from drivers.nvml.catalog import load_catalog

    catalog = load_catalog()
    if gfd_product:
        wanted = _norm(gfd_product.removesuffix("-SHARED"))
        for p in catalog.products.values():
            if _norm(p.name) == wanted or _norm(p.model) == wanted:
                return p.name, p.memory_mib
    if fallback_model:
        try:
            p = catalog.product(fallback_model)
            return p.name, p.memory_mib
        except KeyError:
            pass
    return (gfd_product or fallback_model or "unknown GPU").replace("-", " "), None


def _replicas(node: KubeGpuHost | None, sharing: NodegroupSharing | None) -> tuple[str | None, int]:
    if sharing is not None:
        return sharing.slice_kind, sharing.replicas
    if node is not None and (node.gpu_replicas or 0) > 1 and node.sharing_strategy in ("time-slicing", "mps"):
        return ("mps" if node.sharing_strategy == "mps" else "timeslice"), int(node.gpu_replicas or 0)
    return None, 0


def device_docs(
    name: str, node: KubeGpuHost | None, ng: EksNodegroupConfig | None, sharing: NodegroupSharing | None
) -> list[dict[str, Any]]:
    """The devices a host shows without an agent (node capacity + GFD, or the nodegroup's facts for headroom)."""
    kind, replicas = _replicas(node, sharing)
    if node is not None:
        count = node.gpu_count or (node.gpus // node.gpu_replicas if node.gpu_replicas else node.gpus)
        product, memory = nvml_name(node.gpu_product, ng.gpu_model if ng else None)
        memory = node.gpu_memory_mib or memory
    else:
        count = (ng.gpus_per_node or 0) if ng else 0
        product, memory = nvml_name(None, ng.gpu_model if ng else None)
        memory = (ng.gpu_memory_mib if ng else None) or memory
    docs = []
    for i in range(count):
        uuid = f"EKS-{name}-gpu{i}"[:96]
        slices = [{"parent_uuid": uuid, "kind": kind, "count": replicas}] if kind else []
        docs.append({"uuid": uuid, "index": i, "model": product, "memory_mib": int(memory or 0), "slices": slices})
    return docs


def node_labels(node: KubeGpuHost, ng: EksNodegroupConfig | None) -> dict[str, str]:
    labels = {k: v for k, v in node.labels.items() if k.startswith(_KEPT_LABEL_PREFIXES)}
    labels[SOURCE_LABEL] = "node"
    if node.zone:
        labels[ZONE_LABEL] = node.zone
    if node.region:
        labels[REGION_LABEL] = node.region
    if node.nodegroup:
        labels[NODEGROUP_LABEL] = node.nodegroup
    if node.instance_type:
        labels[INSTANCE_TYPE_LABEL] = node.instance_type
    if node.efa:
        labels[EFA_LABEL] = str(node.efa)
    group = node.labels.get(PLACEMENT_GROUP_LABEL) or (ng.placement_group if ng else None)
    if group:
        labels[PLACEMENT_GROUP_HOST_LABEL] = group
    return labels


# -- the sync ------------------------------------------------------------------------------------------------


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
    name: str,
    *,
    kube_factory: Callable[[EksConfig], KubeGpuCluster] = eks_backend.kube_cluster,
    trackers: EksNodeTrackers | None = None,
) -> SyncReport:
    report = SyncReport(backend=name)
    with db.session() as session:
        backend = session.scalar(select(Backend).where(Backend.name == name))
        if backend is None or backend.kind != "eks":
            report.errors.append(f"backend {name} is not an EKS backend")
            return report
        config = eks_backend.backend_config(backend.config)
        backend_id = backend.id
    try:
        kube = kube_factory(config)
        try:
            if trackers is not None:
                nodes = trackers.tracker(name, config).poll(kube).hosts
            else:
                nodes = kube.list_gpu_hosts()
            _reconcile_namespaces(db, kube, report)
        finally:
            kube.close()
    except (EksError, eks_backend.EksBackendError) as exc:
        report.errors.append(f"listing nodes: {exc}")
        return report
    known = {ng.name for ng in config.nodegroups}
    if known:
        nodes = [n for n in nodes if n.nodegroup in known]
    scaling: dict[str, tuple[int, int]] = {}
    if config.headroom:
        try:
            groups = eks_backend.aws_nodegroups(config)
            for ng in config.gpu_nodegroups:
                info = groups.describe_nodegroup(config.cluster, ng.name)
                scaling[ng.name] = (info.scaling.desired, info.scaling.max)
        except EksError as exc:
            report.errors.append(f"describing nodegroups (headroom unchanged): {exc}")
            scaling = {}
    now = datetime.now(UTC)
    with db.session() as session:
        busy = live_claim_hosts(session)
        hosts = {
            h.hostname: h
            for h in session.scalars(
                select(Host)
                .where((Host.backend_id == backend_id) | Host.hostname.in_([n.name for n in nodes]))
                .options(selectinload(Host.devices))
            )
        }
        for node in nodes:
            report.nodes.append(node.name)
            if _upsert_node(session, hosts.get(node.name), node, config, backend_id, now):
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
            _sync_headroom(session, config, backend_id, name, hosts, busy, scaling, now, report)
    report.bound = bind_waiting(db, name)
    report.changed += list(report.bound.values())
    return report


def _reconcile_namespaces(db: Database, kube: KubeGpuCluster, report: SyncReport) -> None:
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
    with db.session() as session:
        rows = session.execute(select(Lease.id, Lease.state).where(Lease.id.in_(sorted(set(found.values())))))
        states = {lease_id: state for lease_id, state in rows}
    for namespace, lease_id in sorted(found.items()):
        state = states.get(lease_id)
        if state in LIVE_STATES:
            continue
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
    session: Session, host: Host | None, node: KubeGpuHost, config: EksConfig, backend_id: int, now: datetime
) -> bool:
    ng = config.nodegroup(node.nodegroup)
    labels = node_labels(node, ng)
    if host is None:
        host = Host(hostname=node.name, backend_id=backend_id, labels={}, registered_at=now)
        session.add(host)
    before = (host.backend_id, dict(host.labels or {}), host.status, host.inventory_hash)
    host.backend_id = backend_id
    host.labels = {**{k: v for k, v in (host.labels or {}).items() if not k.startswith(_KEPT_LABEL_PREFIXES)}, **labels}
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


def _headroom_name(backend: str, nodegroup: str, k: int) -> str:
    return f"{backend}.{nodegroup}.headroom-{k}"


def _sync_headroom(
    session: Session,
    config: EksConfig,
    backend_id: int,
    backend_name: str,
    hosts: dict[str, Host],
    busy: set[int],
    scaling: dict[str, tuple[int, int]],
    now: datetime,
    report: SyncReport,
) -> None:
    for ng in config.gpu_nodegroups:
        if ng.name not in scaling:
            continue
        desired, maximum = scaling[ng.name]
        mine = sorted(
            (h for h in hosts.values() if is_headroom(h) and (h.labels or {}).get(NODEGROUP_LABEL) == ng.name),
            key=lambda h: h.hostname,
        )
        free = [h for h in mine if h.id not in busy]
        # At maxSize one headroom host stays: a lease placed on it gets the at_max policy's answer (the figures).
        wanted = max(1, maximum - desired)
        for host in free[wanted:]:
            session.delete(host)
            report.removed.append(host.hostname)
            report.changed.append(host.hostname)
        free = free[:wanted]
        taken = {h.hostname for h in mine}
        k = 0
        while len(free) < wanted:
            while _headroom_name(backend_name, ng.name, k) in taken:
                k += 1
            host = Host(hostname=_headroom_name(backend_name, ng.name, k), backend_id=backend_id, registered_at=now)
            taken.add(host.hostname)
            session.add(host)
            free.append(host)
            report.changed.append(host.hostname)
        labels = {
            SOURCE_LABEL: "headroom",
            NODEGROUP_LABEL: ng.name,
            INSTANCE_TYPE_LABEL: ng.instance_types[0] if ng.instance_types else "",
            REGION_LABEL: config.region,
            "gpufabric.dev/cost": HEADROOM_COST,
        }
        if len(ng.availability_zones) == 1:
            labels[ZONE_LABEL] = ng.availability_zones[0]
        if ng.placement_group:
            labels[PLACEMENT_GROUP_HOST_LABEL] = ng.placement_group
        if ng.efa and ng.efa_interfaces:
            labels[EFA_LABEL] = str(ng.efa_interfaces)
        for host in mine:
            if host.id in busy:
                host.last_seen = now  # keep a claimed headroom host reachable while its lease waits
        for host in free:
            docs = device_docs(host.hostname, None, ng, config.sharing.get(ng.name))
            before = (dict(host.labels or {}), host.inventory_hash, host.status)
            host.labels = labels
            host.inventory_hash = apply_devices(host, docs, now)
            set_host_status(host, "ready")
            host.health = "healthy"
            host.last_seen = now
            if before != (host.labels, host.inventory_hash, host.status):
                report.changed.append(host.hostname)
        report.headroom[ng.name] = wanted


# -- moving waiting leases onto real nodes -------------------------------------------------------------------


def bind_waiting(db: Database, backend_name: str) -> dict[str, str]:
    """Move each provisioning lease's claims from headroom hosts to idle ready nodes of the same nodegroup."""
    bound: dict[str, str] = {}
    with db.session() as session:
        backend = session.scalar(select(Backend).where(Backend.name == backend_name))
        if backend is None:
            return bound
        hosts = list(
            session.scalars(select(Host).where(Host.backend_id == backend.id).options(selectinload(Host.devices)))
        )
        headroom_ids = {h.id: h for h in hosts if is_headroom(h)}
        if not headroom_ids:
            return bound
        waiting = list(
            session.execute(
                select(SliceClaim.lease_id, SliceClaim.host_id)
                .join(Lease, Lease.id == SliceClaim.lease_id)
                .where(
                    SliceClaim.released_at.is_(None),
                    SliceClaim.host_id.in_(list(headroom_ids)),
                    Lease.state == "provisioning",
                )
                .distinct()
                .order_by(SliceClaim.lease_id)
            ).all()
        )
    used: set[int] = set()
    for lease_id, headroom_id in waiting:  # rows unpack like tuples
        with db.session() as session:
            busy = live_claim_hosts(session)
            placeholder = session.get(Host, headroom_id)
            if placeholder is None:
                continue
            group = (placeholder.labels or {}).get(NODEGROUP_LABEL)
            candidates = [
                h
                for h in session.scalars(
                    select(Host).where(Host.backend_id == placeholder.backend_id).options(selectinload(Host.devices))
                )
                if not is_headroom(h)
                and (h.labels or {}).get(NODEGROUP_LABEL) == group
                and h.status == "ready"
                and h.admin_state == "active"
                and h.id not in busy
                and h.id not in used
                and len(h.devices) >= len(placeholder.devices)
            ]
            if not candidates:
                continue
            node = sorted(candidates, key=lambda h: h.hostname)[0]
            try:
                _move_claims(session, lease_id, placeholder, node)
                session.commit()
            except IntegrityError:
                session.rollback()  # someone claimed the node meanwhile; try again at the next sync
                continue
            used.add(node.id)
            bound[lease_id] = node.hostname
            log.info("lease %s: moved from %s to node %s", lease_id, placeholder.hostname, node.hostname)
    return bound


def _move_claims(session: Session, lease_id: str, placeholder: Host, node: Host) -> None:
    by_index = {d.index: d.uuid for d in node.devices}
    renamed = {d.uuid: by_index[d.index] for d in placeholder.devices if d.index in by_index}
    lease = session.get(Lease, lease_id)
    assert lease is not None
    allocations = []
    for a in lease.allocations:
        a = dict(a)
        if a["host"] == placeholder.hostname:
            a["host"] = node.hostname
            a["device"] = renamed.get(a["device"], a["device"])
        allocations.append(a)
    lease.allocations = allocations
    claims = session.scalars(
        select(SliceClaim).where(
            SliceClaim.lease_id == lease_id, SliceClaim.host_id == placeholder.id, SliceClaim.released_at.is_(None)
        )
    )
    for c in claims:
        new = renamed.get(c.device_uuid, c.device_uuid)
        prefix = c.resource.split(":", 1)[0]
        c.host_id = node.id
        c.device_uuid = new
        c.resource = f"{prefix}:{new}"
    labels = dict(placeholder.labels or {})
    labels.pop(SCALE_REQUESTED_LABEL, None)
    placeholder.labels = labels
    mark_hosts_changed(session, [placeholder.id, node.id])
    session.flush()


# -- the job -------------------------------------------------------------------------------------------------


def sync_all(
    db: Database, leases: LeaseHooks | None = None, trackers: EksNodeTrackers | None = None
) -> list[SyncReport]:
    with db.session() as session:
        names = list(session.scalars(select(Backend.name).where(Backend.kind == "eks").order_by(Backend.name)))
    if trackers is not None:
        trackers.keep_only(names)
    reports = []
    for name in names:
        reports.append(run_sync(db, name, leases, trackers))
    return reports


def run_sync(
    db: Database, name: str, leases: LeaseHooks | None = None, trackers: EksNodeTrackers | None = None
) -> SyncReport:
    """Sync one backend, refresh this replica's placement index and provision the EKS leases still waiting.

    With ``trackers`` the nodes come from the backend's node watch (see :class:`EksNodeTrackers`), else
    from a paginated list."""
    report = sync_backend(db, name, trackers=trackers)
    if leases is None:
        return report
    if report.changed:
        leases.hosts_changed(sorted(set(report.changed)))
    with db.session() as session:
        waiting = eks_backend.waiting_leases(session)
    for lease_id in waiting:
        try:
            leases.reprovision(lease_id)
        except Exception:
            log.exception("provisioning lease %s again failed", lease_id)
    return report


def install(registry: HookRegistry, leases: LeaseHooks, db: Database) -> None:
    """Register the EKS backend-sync hook (once)."""
    if "backend-sync:eks" in registry.hooks:
        return
    trackers = EksNodeTrackers()  # the job's node watches, one per backend, kept between ticks

    def job(ctx: JobContext) -> None:
        for report in sync_all(ctx.db, leases, trackers):
            for error in report.errors:
                log.warning("eks sync %s: %s", report.backend, error)

    registry.register("backend-sync", "eks", job, interval_s=SYNC_INTERVAL_S)
