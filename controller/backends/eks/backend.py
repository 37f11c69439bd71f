"""The ``eks`` backend: leases on EKS GPU nodegroups.

Placement sees two sorts of EKS hosts, both written by the sync (``controller.backends.eks.sync``):

- **nodes**: the cluster's GPU nodes (host name = node name), merged with the agent's inventory when the
  DaemonSet's agent reports for the same node;
- **headroom**: nodes a nodegroup could still start (``maxSize - desiredSize``, at least one), with the
  nodegroup's GPUs and a high cost, so a request that does not fit on running nodes can still be placed.

``provision`` on headroom scales the nodegroup up (all or nothing) and answers ``pending``; at ``maxSize``
the backend's ``at_max`` policy fails the lease with the nodegroup's figures or keeps it waiting. When the
new node registers (or, waiting, a node of the nodegroup is idle again) the sync job moves the lease's
claims onto it and provisions again. On real nodes ``provision`` creates the tenant namespace with a
ResourceQuota for the leased resources, writes the device-plugin sharing config for shared slices, and
returns the namespace and a pod spec fragment pinned to the leased nodes. ``release`` deletes the
namespace (and its quota) and, with ``scale_down: idle``, lowers the nodegroups' desired size by their idle
nodes.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.backends.contract import (
    BackendBase,
    Capabilities,
    ClusterRun,
    LeaseDirectory,
    LeaseHooks,
    LeaseInfo,
    Outcome,
    ProvisionResult,
    TryElsewhere,
)
from controller.backends.eks import access as tenant_access
from controller.backends.eks import checks, sync, validation
from controller.backends.eks.capacity import (
    block_end_refusal,
    ensure_placement_group,
    group_refusal,
    group_state,
    now_utc,
    provider_for,
    reservation_state,
    scale_up_refusal,
)
from controller.backends.eks.cluster import (
    EFA_LABEL,
    PLACEMENT_GROUP_HOST_LABEL,
    SCALE_REQUESTED_LABEL,
    EksBackendError,
    KubeFactory,
    aws_nodegroups,
    backend_config,
    is_headroom,
    kube_cluster,
    tenant_namespace,
)
from controller.backends.eks.config import EksConfig, NodegroupSharing
from controller.backends.eks.karpenter import (
    create_placeholders,
    delete_placeholders,
    group_of,
    karpenter_room,
    pool_of,
)
from controller.jobs.hooks import HookRegistry, JobContext
from controller.placement import Allocation, parse_request
from controller.store.db import Database
from controller.store.models import Backend, Host
from drivers.eks import EksError, cross_az_finding
from drivers.eks.kube import KubeGpuCluster, pod_spec_fragment
from drivers.eks.kube_labels import (
    EFA_RESOURCE,
    GPU_RESOURCE,
    INSTANCE_TYPE_LABEL,
    MIG_RESOURCE_PREFIX,
    NODEGROUP_LABEL,
    ZONE_LABEL,
)
from drivers.eks.kube_models import DevicePluginSharing, SharedResource
from drivers.eks.models import Taint

log = logging.getLogger("gpufabric.backends.eks")


def slice_resource(a: Allocation, sharing: NodegroupSharing | None) -> str:
    """The Kubernetes extended resource one allocation is consumed as."""
    if a.kind == "mig":
        return f"{MIG_RESOURCE_PREFIX}{a.profile}"
    if a.kind in ("timeslice", "mps"):
        return sharing.resource if sharing is not None else GPU_RESOURCE
    return GPU_RESOURCE


@dataclass
class _Node:
    host: Host
    allocations: list[Allocation] = field(default_factory=list)

    @property
    def nodegroup(self) -> str | None:
        return (self.host.labels or {}).get(NODEGROUP_LABEL)

    @property
    def zone(self) -> str | None:
        return (self.host.labels or {}).get(ZONE_LABEL)


class EksBackend(BackendBase):
    """The backend kind ``eks``. It reads hosts and backend configs from the store (``db``) and keeps one node
    watch per backend between syncs of its periodic job (``trackers``)."""

    kind = "eks"
    description = "AWS EKS GPU nodegroups"
    config_model = EksConfig
    capabilities = Capabilities(
        access="a tenant namespace with a ResourceQuota and a LimitRange for the leased GPU resources, a "
        "ServiceAccount limited to it by a Role with its token and a ready kubeconfig, and a pod spec fragment pinned "
        "to the leased nodes",
        slice_kinds=frozenset({"gpu", "mig", "timeslice", "mps"}),
        why_not="EKS nodes offer no vGPUs",
        validation="an MPIJob of nccl-tests on a nodegroup (POST /v1/validations with backend and nodegroup)",
        unsupported={
            "reconcile": "an EKS backend reconciles on every sync (orphan tenant namespaces, leases waiting for a "
            "node): POST /v1/backends/{name}/sync",
        },
    )

    def __init__(self, db: Database, lease_directory: LeaseDirectory, kube_factory: KubeFactory = kube_cluster) -> None:
        self.db = db
        self.lease_directory = lease_directory  # what the kind may know of leases and claims
        self.kube_factory = kube_factory
        self.trackers = sync.EksNodeTrackers()  # the periodic job's node watches, one per backend

    # -- sync, checks, validation, jobs ---------------------------------------------------------------------

    def sync(self, name: str, leases: LeaseHooks | None) -> Outcome:
        """Nodes become hosts, headroom, leases waiting for a node move onto it and are provisioned again (a plain
        paginated node list: the periodic job follows its node watches instead)."""
        report = sync.run_sync(self.db, self.lease_directory, name, leases, kube_factory=self.kube_factory)
        return Outcome(report.as_dict(), ok=not report.errors, audit={"changed": sorted(set(report.changed))[:50]})

    def checks(self, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """Networking findings per nodegroup: pods per node, subnet IP headroom at maxSize, cross-AZ leases."""
        with self.db.session() as session:
            row = session.scalar(select(Backend).where(Backend.name == name, Backend.kind == self.kind))
            if row is None:
                raise EksBackendError(f"backend {name} is not an eks backend")
            return checks.backend_checks(session, self.lease_directory, row, options.get("pods_per_node"))

    def nccl_cluster(self, name: str, nodegroup: str, instance_type: str | None, nodes: int | None) -> ClusterRun:
        return validation.cluster_run(self.db, name, nodegroup, instance_type, nodes)

    def nccl_runner(self, name: str) -> Any:
        return validation.mpi_runner(self.db, name)

    def install_jobs(self, hooks: HookRegistry, leases: LeaseHooks) -> None:
        """The EKS backend-sync hook (once per app), following each backend's node watch."""
        if "backend-sync:eks" in hooks.hooks:
            return

        def job(_ctx: JobContext) -> None:
            reports = sync.sync_all(
                self.db, self.lease_directory, leases, self.trackers, kube_factory=self.kube_factory
            )
            for report in reports:
                for error in report.errors:
                    log.warning("eks sync %s: %s", report.backend, error)

        hooks.register("backend-sync", "eks", job, interval_s=sync.SYNC_INTERVAL_S)

    # -- provisioning ---------------------------------------------------------------------------------------

    def provision(self, lease: LeaseInfo, allocations: list[Allocation]) -> ProvisionResult:
        with self.db.session() as session:
            nodes, config, backend_name = self._nodes(session, lease.hosts, allocations)
            self._check_capacity_blocks(lease, config, nodes)
            headroom = [n for n in nodes if is_headroom(n.host)]
            if headroom:
                return self._scale_for(session, lease, config, headroom)
            for n in nodes:
                if n.host.status != "ready":
                    return ProvisionResult("pending", message=f"node {n.host.hostname} is not ready yet")
            return self._grant(lease, config, backend_name, nodes)

    def _nodes(
        self, session: Session, hostnames: Iterable[str], allocations: list[Allocation]
    ) -> tuple[list[_Node], EksConfig, str]:
        names = sorted(set(hostnames) | {a.host_id for a in allocations})
        rows = {h.hostname: h for h in session.scalars(select(Host).where(Host.hostname.in_(names)))}
        missing = [n for n in names if n not in rows]
        if missing:
            raise EksBackendError(f"hosts {', '.join(missing)} are gone")
        backends = {h.backend.name: h.backend for h in rows.values() if h.backend is not None}
        if len(backends) != 1 or any(b.kind != "eks" for b in backends.values()):
            raise EksBackendError(f"lease spans backends {sorted(backends)}; an EKS lease needs one EKS backend")
        backend = next(iter(backends.values()))
        config = backend_config(backend.config)
        nodes = {name: _Node(rows[name]) for name in names}
        for a in allocations:
            nodes[a.host_id].allocations.append(a)
        return list(nodes.values()), config, backend.name

    def _check_capacity_blocks(self, lease: LeaseInfo, config: EksConfig, nodes: list[_Node]) -> None:
        """A lease on a Capacity Block must end before the block does; otherwise placement tries other hosts."""
        blocks = [
            ng
            for g in sorted({n.nodegroup for n in nodes if n.nodegroup})
            if (ng := config.nodegroup(g)) is not None
            and ng.capacity_type == "CAPACITY_BLOCK"
            and ng.capacity_reservation_id
        ]
        if not blocks:
            return
        duration = parse_request(lease.request).duration
        try:
            provider = provider_for(config)
            for ng in blocks:
                reason = block_end_refusal(reservation_state(provider, ng, None, 0), ng, duration, now_utc())
                if reason:
                    raise TryElsewhere(reason, hosts=[n.host.hostname for n in nodes if n.nodegroup == ng.name])
        except EksError as exc:
            raise EksBackendError(f"capacity block of the lease's nodegroup: {exc}") from None

    def _capacity_refusal(
        self, session: Session, config: EksConfig, nodegroup: str, add: int, backend_id: int | None
    ) -> str | None:
        """Before scaling up: the nodegroup's reservation (an ODCR, the ODCRs of its resource group, or a Capacity
        Block) must hold the new nodes, and an EFA nodegroup's cluster placement group is reused or created."""
        ng = config.nodegroup(nodegroup)
        pool_group = ng.capacity_reservation_resource_group if ng is not None else None
        if ng is None or not (ng.capacity_reservation_id or pool_group or (ng.efa and ng.placement_group)):
            return None
        try:
            provider = provider_for(config)
            if ng.efa and ng.placement_group:
                group, created = ensure_placement_group(provider, ng.placement_group)
                if created:
                    log.info("created cluster placement group %s for nodegroup %s", group.name, nodegroup)
            if not (ng.capacity_reservation_id or pool_group):
                return None
            desired = aws_nodegroups(config).describe_nodegroup(config.cluster, nodegroup).scaling.desired
            registered = sum(
                1
                for h in session.scalars(select(Host).where(Host.backend_id == backend_id))
                if (h.labels or {}).get(NODEGROUP_LABEL) == nodegroup and not is_headroom(h)
            )
            state = reservation_state(provider, ng, desired, registered)
            pooled = group_state(provider, ng, desired, registered, now_utc())
        except EksError as exc:
            raise EksBackendError(f"capacity of nodegroup {nodegroup}: {exc}") from None
        return scale_up_refusal(state, ng, add, now_utc()) or group_refusal(pooled, ng, add)

    def _scale_for(
        self, session: Session, lease: LeaseInfo, config: EksConfig, headroom: list[_Node]
    ) -> ProvisionResult:
        """Headroom hosts were claimed: start that many nodes of their nodegroup(s), once per lease."""
        wanted: dict[str, list[_Node]] = defaultdict(list)
        for n in headroom:
            if (n.host.labels or {}).get(SCALE_REQUESTED_LABEL) != lease.id:
                wanted[group_of(n.host.labels) or ""].append(n)
        waiting = []
        for group, group_nodes in sorted(wanted.items()):
            refusal = self._scale_group(session, lease, config, group, group_nodes)
            if refusal is not None:
                if config.at_max == "fail":
                    raise EksBackendError(refusal)
                waiting.append(f"{refusal}; waiting for a node of {group} to free up (at_max: wait)")
                continue
            for n in group_nodes:
                # Marks the headroom host: this lease's node has been asked for (provision is re-entrant).
                n.host.labels = {**(n.host.labels or {}), SCALE_REQUESTED_LABEL: lease.id}
            session.commit()
        if waiting:
            return ProvisionResult("pending", message="; ".join(waiting))
        named = sorted({group_of(n.host.labels) or "" for n in headroom})
        pools = [g.removeprefix("karpenter:") for g in named if g.startswith("karpenter:")]
        groups_named = [g for g in named if not g.startswith("karpenter:")]
        what = [f"nodegroup {', '.join(groups_named)}"] if groups_named else []
        what += [f"Karpenter NodePool {', '.join(pools)}"] if pools else []
        return ProvisionResult("pending", message=f"waiting for {' and '.join(what)} to start {len(headroom)} node(s)")

    def _scale_group(
        self, session: Session, lease: LeaseInfo, config: EksConfig, group: str, nodes: list[_Node]
    ) -> str | None:
        """Ask for ``len(nodes)`` more nodes of a nodegroup (its reservation permitting) or a Karpenter pool (its
        limit permitting, by placeholder pods); the reason when it cannot grow."""
        pool = pool_of(config, group)
        if pool is not None:
            hosts = list(session.scalars(select(Host).where(Host.backend_id == nodes[0].host.backend_id)))
            room, reason = karpenter_room(hosts, pool, lease.id)
            if room < len(nodes):
                return (
                    reason or f"Karpenter NodePool {pool.name} has room for {room} more node(s), {len(nodes)} requested"
                )
            with self._kube(config) as kube:
                try:
                    create_placeholders(
                        kube.api_client, pool, lease.id, len(nodes), config.karpenter_placeholder_namespace
                    )
                except EksError as exc:
                    raise EksBackendError(str(exc)) from None
            log.info("asked Karpenter pool %s for %d node(s) for lease %s", pool.name, len(nodes), lease.id)
            return None
        reserved = self._capacity_refusal(session, config, group, len(nodes), nodes[0].host.backend_id)
        if reserved:
            return reserved
        try:
            outcome = aws_nodegroups(config).scale_up(config.cluster, group, len(nodes))
        except EksError as exc:
            raise EksBackendError(f"scaling nodegroup {group}: {exc}") from None
        if outcome.refused:
            return outcome.reason or f"nodegroup {group} cannot grow"
        log.info("scaled nodegroup %s/%s to %d for lease %s", config.cluster, group, outcome.desired, lease.id)
        return None

    def _grant(self, lease: LeaseInfo, config: EksConfig, backend_name: str, nodes: list[_Node]) -> ProvisionResult:
        namespace = tenant_namespace(lease.tenant, lease.id)
        quota: dict[str, int] = defaultdict(int)
        node_docs: list[dict[str, Any]] = []
        sharing_applied = []
        with self._kube(config) as kube:
            if config.karpenter:
                try:  # the node Karpenter launched for this lease is here: its placeholder pods make way
                    delete_placeholders(kube.api_client, lease.id, config.karpenter_placeholder_namespace)
                except EksError as exc:
                    raise EksBackendError(str(exc)) from None
            for n in sorted(nodes, key=lambda n: n.host.hostname):
                sharing = config.sharing.get(n.nodegroup or "")
                per_node: dict[str, int] = defaultdict(int)
                for a in n.allocations:
                    per_node[slice_resource(a, sharing)] += a.units
                efa = self._efa_share(n)
                if efa:
                    per_node[EFA_RESOURCE] += efa
                if any(a.kind in ("timeslice", "mps") for a in n.allocations):
                    sharing_applied.append(self._ensure_sharing(kube, config, n, sharing))
                for r, count in per_node.items():
                    quota[r] += count
                node_docs.append(
                    {
                        "host": n.host.hostname,
                        "nodegroup": n.nodegroup,
                        "zone": n.zone,
                        "instance_type": (n.host.labels or {}).get(INSTANCE_TYPE_LABEL),
                        "resources": dict(sorted(per_node.items())),
                        "devices": sorted({a.device_uuid for a in n.allocations}),
                    }
                )
            # One pod per node: the container limits are one node's share (every node of a lease gets the same).
            first: dict[str, int] = dict(node_docs[0]["resources"]) if node_docs else {}
            try:
                access = kube.create_tenant_namespace(namespace, dict(quota), lease.id)
                tenant = tenant_access.grant(kube, config, lease, namespace, first)
            except EksError as exc:
                raise EksBackendError(str(exc)) from None
        groups = sorted({n.nodegroup for n in nodes if n.nodegroup})
        zones = sorted({n.zone for n in nodes if n.zone})
        pgs = sorted({(n.host.labels or {}).get(PLACEMENT_GROUP_HOST_LABEL, "") for n in nodes} - {""})
        taints: dict[tuple[str, str | None, str], Taint] = {}
        for g in groups:
            ng = config.nodegroup(g)
            for t in ng.taints if ng is not None else []:
                taints[(t.key, t.value, t.effect)] = t
        for pool in {p.name: p for n in nodes if (p := pool_of(config, group_of(n.host.labels)))}.values():
            for t in pool.taints:
                taints[(t.key, t.value, t.effect)] = t
        fragment = pod_spec_fragment(
            first,
            nodegroup=groups[0] if len(groups) == 1 else None,
            zone=zones[0] if len(zones) == 1 else None,
            placement_group=pgs[0] if len(pgs) == 1 else None,
            taints=taints.values(),
            node_names=[n.host.hostname for n in nodes],
        )
        result: dict[str, Any] = {
            "backend": self.kind,
            "backend_name": backend_name,
            "cluster": config.cluster,
            "region": config.region,
            "namespace": namespace,
            "quota": {"name": access.quota_name, "hard": access.hard},
            "nodes": node_docs,
            "pod_spec": fragment,
            "access": tenant,  # stored encrypted, shown to the tenant only (controller.leases.access)
        }
        if sharing_applied:
            result["sharing"] = sharing_applied
        warning = cross_az_finding(len(nodes), zones, efa=any(self._efa_share(n) for n in nodes))
        if warning is not None:
            result["warnings"] = [warning.model_dump(mode="json")]
        if len(node_docs) == 1:
            result["host"] = node_docs[0]["host"]
        return ProvisionResult("ready", result)

    @staticmethod
    def _efa_share(n: _Node) -> int:
        """EFA interfaces go with whole GPUs, in proportion (a whole node gets them all)."""
        efa = int((n.host.labels or {}).get(EFA_LABEL, 0) or 0)
        gpus = [a for a in n.allocations if a.kind == "gpu"]
        total = len(n.host.devices) or 1
        if not efa or not gpus:
            return 0
        return max(1, efa * len(gpus) // total)

    def _ensure_sharing(
        self, kube: KubeGpuCluster, config: EksConfig, n: _Node, sharing: NodegroupSharing | None
    ) -> dict[str, Any]:
        nodegroup = n.nodegroup
        if nodegroup is None:
            raise EksBackendError(f"node {n.host.hostname} has no {NODEGROUP_LABEL} label; cannot configure sharing")
        if sharing is None:
            # Shares the node already advertises (GFD replicas): nothing for us to write.
            return {"nodegroup": nodegroup, "config_name": None, "source": "node"}
        plugin = DevicePluginSharing(
            strategy=sharing.strategy,
            resources=[SharedResource(replicas=sharing.replicas)],
            rename_by_default=sharing.rename,
        )
        try:
            applied = kube.apply_sharing_config(
                nodegroup,
                sharing.config_name(nodegroup),
                plugin,
                namespace=config.device_plugin_namespace,
                configmap=config.device_plugin_configmap,
            )
        except EksError as exc:
            raise EksBackendError(f"device-plugin config for {nodegroup}: {exc}") from None
        return {
            "nodegroup": nodegroup,
            "config_name": applied.config_name,
            "configmap": f"{applied.namespace}/{applied.configmap}",
            "strategy": sharing.strategy,
            "replicas": sharing.replicas,
            "resource": sharing.resource,
        }

    @contextmanager
    def _kube(self, config: EksConfig) -> Any:
        try:
            kube = self.kube_factory(config)
        except EksError as exc:
            raise EksBackendError(str(exc)) from None
        try:
            yield kube
        finally:
            kube.close()

    # -- release --------------------------------------------------------------------------------------------

    def release(self, lease: LeaseInfo) -> None:
        with self.db.session() as session:
            rows = list(session.scalars(select(Host).where(Host.hostname.in_(lease.hosts))))
            backend = next((h.backend for h in rows if h.backend is not None and h.backend.kind == "eks"), None)
            if backend is None:
                return  # the hosts (and their backend) are gone: nothing left to undo
            config = backend_config(backend.config)
            real = [h for h in rows if not is_headroom(h)]
            if (real or config.karpenter) and config.has_kube:
                with self._kube(config) as kube:
                    if config.karpenter:
                        delete_placeholders(kube.api_client, lease.id, config.karpenter_placeholder_namespace)
                    if real:
                        kube.delete_tenant_namespace(tenant_namespace(lease.tenant, lease.id))
            if config.scale_down == "idle":
                self._scale_down_idle(session, config, backend.id, lease.hosts_in_use, rows)

    def _scale_down_idle(
        self, session: Session, config: EksConfig, backend_id: int, busy: frozenset[str], rows: list[Host]
    ) -> None:
        """Lower each nodegroup of the lease by its idle nodes: not headroom, no other lease's claims (``busy``)."""
        groups = sorted({str(g) for h in rows if (g := (h.labels or {}).get(NODEGROUP_LABEL))})
        aws = aws_nodegroups(config)
        for g in groups:
            idle = [
                h
                for h in session.scalars(select(Host).where(Host.backend_id == backend_id))
                if (h.labels or {}).get(NODEGROUP_LABEL) == g and not is_headroom(h) and h.hostname not in busy
            ]
            if not idle:
                continue
            try:
                outcome = aws.scale_down(config.cluster, str(g), len(idle))
            except EksError as exc:
                log.warning("could not scale down nodegroup %s: %s", g, exc)
                continue
            if outcome.changed:
                log.info("scaled nodegroup %s/%s down to %d (idle nodes)", config.cluster, g, outcome.desired)
