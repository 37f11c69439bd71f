"""Discovery and reconciliation of the ``ironic`` and ``nova`` backends.

**Sync** writes the hosts and devices the placement engine reads (then ``leases.hosts_changed``):

- Ironic: every GPU node (resource class prefix, ``CUSTOM_GPU_*`` trait, capabilities or inspected GPUs) is a host
  named after the node, with one whole-GPU device per GPU (model and memory from the GPU catalog) and the labels
  region / az / resource class / node UUID. Only ``available`` nodes out of maintenance are placeable; a node
  deployed for a live gpufabric lease stays a (fully claimed) host; anything else is marked unreachable.
- Nova: every compute node (hypervisor) is a host; its devices come from Placement: a nested pGPU provider with
  ``VGPU`` inventory is a device offering vGPU slices (type and framebuffer from the catalog; the number of
  instances is Placement's), a PCI GPU resource class gives whole-GPU devices. A hypervisor that is down or
  disabled is unreachable.

**Reconcile** (the ``backend-sync:openstack`` job, and ``POST /v1/backends/{name}/reconcile``) syncs, then:

- finishes or rolls back leases left ``provisioning`` (a controller restart mid-deploy, a deploy that outlives the
  request): ``LeaseService.reprovision``, whose backend finds the node / server tagged with the lease;
- reports orphans: nodes / servers tagged ``gpufabric_lease`` whose lease is not live; with ``orphans: release`` they
  are undeployed / deleted too;
- reports live leases whose node / server is gone;
- Nova: compares Placement's GPU usage per compute node with gpufabric's live claims (``VGPU`` instances, PCI
  resource classes) and reports every difference; nothing is fixed.

The report is stored per backend (``backend_reports``): ``GET /v1/backends/{name}/reconcile`` returns it and the
``gpufabric_openstack_*`` gauges are read from it at scrape time, on every replica.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from controller.backends import ironic as ironic_backend
from controller.backends import nova as nova_backend
from controller.backends.eks_sync import LeaseHooks
from controller.backends.hostsync import apply_devices, live_claim_hosts
from controller.backends.openstack_common import (
    AZ_LABEL,
    COST_LABEL,
    HYPERVISOR_LABEL,
    IRONIC_NODE_LABEL,
    IRONIC_STATE_LABEL,
    REGION_LABEL,
    RESOURCE_CLASS_LABEL,
    SOURCE_LABEL,
    OpenStackBackendError,
    backend_config,
    connection,
)
from controller.backends.openstack_config import IronicConfig, NovaConfig
from controller.fleet.states import set_host_status
from controller.jobs.hooks import HookRegistry, JobContext
from controller.leases.state import HOLDING, TRANSITIONAL
from controller.observability.redact import redact
from controller.store.db import Database
from controller.store.models import Backend, BackendReport, Host, Lease, SliceClaim
from drivers.nvml.catalog import Product, VgpuType
from drivers.openstack import (
    DiscoveredHost,
    ExpectedHost,
    ExpectedUsage,
    OpenStackError,
    PlacementReader,
    PlacementView,
    ResourceProvider,
    TaggedResource,
    compare,
    find_missing,
    find_orphans,
    product_for_label,
    product_for_name,
    vgpu_type_for,
)
from drivers.openstack.nova import NovaDriver, is_gpu_resource_class

log = logging.getLogger("gpufabric.backends.openstack")

KINDS = ("ironic", "nova")
JOB_INTERVAL_S = 15.0
# Lease states that may legitimately own a node / server (placing: between two candidates).
LIVE_STATES = HOLDING | TRANSITIONAL


# -- sync ------------------------------------------------------------------------------------------------------


@dataclass
class SyncResult:
    hosts: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "hosts": sorted(self.hosts),
            "changed": sorted(set(self.changed)),
            "removed": sorted(self.removed),
            "unreachable": sorted(self.unreachable),
            "skipped": self.skipped,
            "errors": redact(self.errors),
        }


@dataclass
class HostDoc:
    """One host as a backend sees it: what the store's Host / Device rows must say."""

    name: str
    placeable: bool
    labels: dict[str, str]
    devices: list[dict[str, Any]]


def _backend(session: Session, name: str) -> Backend:
    row = session.scalar(select(Backend).where(Backend.name == name))
    if row is None or row.kind not in KINDS:
        raise OpenStackBackendError(f"backend {name} is not an ironic or nova backend")
    return row


def _base_labels(config: IronicConfig | NovaConfig, source: str) -> dict[str, str]:
    labels = {SOURCE_LABEL: source, COST_LABEL: str(config.cost)}
    if config.region:
        labels[REGION_LABEL] = config.region
    if config.az:
        labels[AZ_LABEL] = config.az
    return labels


def _device(uuid: str, index: int, product: Product | None, model: str, details: dict[str, Any]) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "index": index,
        "model": product.name if product else model,
        "memory_mib": (product.memory_mib if product else 0) or 0,
        "details": details,
    }


def ironic_docs(
    config: IronicConfig, nodes: list[DiscoveredHost], live_leases: set[str]
) -> tuple[list[HostDoc], list[str]]:
    docs, skipped = [], []
    for node in nodes:
        product = product_for_name(node.model) if node.model else None
        if not node.devices or product is None:
            skipped.append(f"{node.name}: GPU model unknown to the catalog ({node.model or 'none'})")
            continue
        ours = node.lease_id is not None and node.lease_id in live_leases
        state = (node.provision_state or "") + (" maintenance" if node.maintenance else "")
        labels = {
            **_base_labels(config, "ironic"),
            IRONIC_NODE_LABEL: node.node_id,
            IRONIC_STATE_LABEL: state,
        }
        if node.resource_class:
            labels[RESOURCE_CLASS_LABEL] = node.resource_class
        devices = []
        for d in node.devices:
            p = product_for_name(d.model) if d.model else product
            devices.append(
                _device(
                    f"ironic-{node.node_id}-{d.index}",
                    d.index,
                    p,
                    d.model or node.model or "",
                    {"source": f"ironic:{d.source}", "node": node.node_id, "pci_address": d.pci_address},
                )
            )
        docs.append(HostDoc(node.name, node.available or ours, labels, devices))
    return docs, skipped


def _vgpu_offer(config: NovaConfig, product: Product, capacity: int) -> tuple[dict[str, Any], str]:
    """The vGPU type a pGPU offers: configured, else the catalog type with Placement's instance count, else one
    derived from the framebuffer split (the catalog does not list every product's types)."""
    chosen: VgpuType | None = None
    configured = next((t for m, t in config.vgpu_types.items() if _same(m, product)), None)
    if configured:
        found = vgpu_type_for(configured, product)
        if found is not None:
            chosen = found[1]
        else:
            fb = product.memory_mib // max(capacity, 1)
            return {"name": configured, "framebuffer_mib": fb, "max_instances": capacity}, "config"
    if chosen is None:
        exact = [t for t in product.vgpu_types if t.max_instances == capacity]
        chosen = min(exact, key=lambda t: t.framebuffer_mib) if exact else None
    if chosen is not None:
        return {"name": chosen.name, "framebuffer_mib": chosen.framebuffer_mib, "max_instances": capacity}, "catalog"
    fb_gib = max(product.memory_mib // max(capacity, 1) // 1024, 1)
    name = f"{product.model}-{fb_gib}C"
    return {"name": name, "framebuffer_mib": fb_gib * 1024, "max_instances": capacity}, "derived"


def _same(model: str, product: Product) -> bool:
    p = product_for_name(model)
    return p is not None and p.model == product.model


def _tree_product(view: PlacementView, p: ResourceProvider) -> Product | None:
    for trait in (*p.traits, *view.by_uuid(p.root_uuid).traits):
        found = product_for_label(trait)
        if found is not None:
            return found
    return None


def nova_docs(config: NovaConfig, view: PlacementView, hypervisors: dict[str, bool]) -> tuple[list[HostDoc], list[str]]:
    """``hypervisors``: hypervisor hostname -> up and enabled."""
    alias_of_rc = {rc: alias for alias, rc in config.pci_alias_resource_classes.items()}
    docs, skipped = [], []
    roots = {r.name: r for r in view.roots()}
    for name, up in sorted(hypervisors.items()):
        root = roots.get(name)
        if root is None:
            skipped.append(f"{name}: no resource provider in Placement")
            continue
        devices: list[dict[str, Any]] = []
        for p in sorted(view.tree(root.uuid), key=lambda p: p.name):
            for rc, inv in sorted(p.inventories.items()):
                if not is_gpu_resource_class(rc) or inv.capacity <= 0:
                    continue
                if rc == "VGPU":
                    product = _tree_product(view, p)
                    if product is None:
                        skipped.append(f"{p.name}: VGPU provider without a GPU model trait (CUSTOM_GPU_<MODEL>)")
                        continue
                    offer, source = _vgpu_offer(config, product, inv.capacity)
                    devices.append(
                        _device(
                            f"nova-{p.uuid}",
                            len(devices),
                            product,
                            product.model,
                            {
                                "source": "placement",
                                "provider": p.uuid,
                                "provider_name": p.name,
                                "resource_class": rc,
                                "vgpu": {"supported": [offer], "type_source": source},
                            },
                        )
                    )
                    continue
                alias = alias_of_rc.get(rc)
                product = None
                if alias and alias in config.pci_alias_models:
                    product = product_for_name(config.pci_alias_models[alias])
                product = product or product_for_label(rc) or (_tree_product(view, p) if rc == "PGPU" else None)
                if product is None:
                    skipped.append(f"{p.name}: {rc} names no GPU model the catalog knows")
                    continue
                for i in range(inv.capacity):
                    devices.append(
                        _device(
                            f"nova-{p.uuid}-{i}",
                            len(devices),
                            product,
                            product.model,
                            {"source": "placement", "provider": p.uuid, "provider_name": p.name, "resource_class": rc},
                        )
                    )
        if not devices:
            continue
        labels = {**_base_labels(config, "nova"), HYPERVISOR_LABEL: name}
        docs.append(HostDoc(name, up, labels, devices))
    return docs, skipped


def write_hosts(db: Database, backend_name: str, docs: list[HostDoc], result: SyncResult) -> None:
    """Upsert the backend's hosts and devices from ``docs``; hosts no longer there go (unreachable while claimed)."""
    now = datetime.now(UTC)
    with db.session() as session:
        backend = _backend(session, backend_name)
        busy = live_claim_hosts(session)
        names = [d.name for d in docs]
        rows = {
            h.hostname: h
            for h in session.scalars(
                select(Host)
                .where((Host.backend_id == backend.id) | Host.hostname.in_(names))
                .options(selectinload(Host.devices))
            ).unique()
        }
        for doc in docs:
            result.hosts.append(doc.name)
            host = rows.get(doc.name)
            if host is not None and host.backend_id not in (None, backend.id):
                result.errors.append(f"{doc.name}: already a host of another backend; not taken over")
                continue
            if host is None:
                host = Host(hostname=doc.name, backend_id=backend.id, labels={}, registered_at=now)
                session.add(host)
            before = (host.backend_id, dict(host.labels or {}), host.status, host.inventory_hash)
            host.backend_id = backend.id
            host.labels = {**(host.labels or {}), **doc.labels}
            set_host_status(host, "ready" if doc.placeable else "unreachable")
            host.health = "healthy"
            host.last_seen = now
            host.inventory_hash = apply_devices(host, doc.devices, now)
            if before != (host.backend_id, host.labels, host.status, host.inventory_hash):
                result.changed.append(doc.name)
            if not doc.placeable:
                result.unreachable.append(doc.name)
        present = set(names)
        for host in rows.values():
            if host.backend_id != backend.id or host.hostname in present:
                continue
            if host.id in busy:
                if set_host_status(host, "unreachable"):
                    result.changed.append(host.hostname)
                result.unreachable.append(host.hostname)
            else:
                session.delete(host)
                result.removed.append(host.hostname)
                result.changed.append(host.hostname)


def _live_leases(session: Session) -> set[str]:
    return set(session.scalars(select(Lease.id).where(Lease.state.in_(LIVE_STATES))))


# -- reconcile -------------------------------------------------------------------------------------------------


@dataclass
class Observed:
    """What one pass saw in the cloud (shared by sync and reconcile, so the cloud is listed once)."""

    docs: list[HostDoc]
    skipped: list[str]
    tagged: list[TaggedResource]
    placement: PlacementView | None = None


def observe(db: Database, name: str) -> tuple[str, IronicConfig | NovaConfig, Observed]:
    with db.session() as session:
        backend = _backend(session, name)
        kind = backend.kind
        config = backend_config(backend)
        live = _live_leases(session)
    if isinstance(config, IronicConfig):
        driver = ironic_backend.ironic_driver(config)
        nodes = driver.discover()
        docs, skipped = ironic_docs(config, nodes, live)
        return kind, config, Observed(docs, skipped, driver.tagged())
    conn = connection(config.auth)
    hypervisors = NovaDriver(conn).hypervisors()
    view = PlacementReader(conn).view()
    docs, skipped = nova_docs(config, view, hypervisors)
    tagged = nova_backend.nova_driver(config).tagged(all_projects=True)
    return kind, config, Observed(docs, skipped, tagged, view)


def sync_backend(db: Database, name: str, leases: LeaseHooks | None = None) -> SyncResult:
    """Discovery only: the cloud's GPU hosts into the store (and this replica's placement index)."""
    result = SyncResult()
    try:
        _kind, _config, seen = observe(db, name)
    except (OpenStackError, OpenStackBackendError) as exc:
        result.errors.append(f"listing {name}: {exc}")
        return result
    result.skipped = seen.skipped
    write_hosts(db, name, seen.docs, result)
    if leases is not None and result.changed:
        leases.hosts_changed(sorted(set(result.changed)))
    return result


def reconcile_backend(db: Database, name: str, leases: LeaseHooks | None) -> dict[str, Any]:
    """Sync, finish interrupted leases, report (and by policy release) orphans, compare Placement; store the report."""
    started = datetime.now(UTC)
    report: dict[str, Any] = {"backend": name, "at": started.isoformat(), "errors": []}
    sync = SyncResult()
    try:
        kind, config, seen = observe(db, name)
    except (OpenStackError, OpenStackBackendError) as exc:
        report["errors"].append(f"listing the cloud: {exc}")
        report.update(sync=sync.as_dict(), orphans=[], missing=[], interrupted=[], placement={"checked": False})
        report = redact(report)  # a client library's message may repeat a URL with its password
        _store(db, name, report)
        return report
    report["kind"] = kind
    sync.skipped = seen.skipped
    write_hosts(db, name, seen.docs, sync)
    if leases is not None and sync.changed:
        leases.hosts_changed(sorted(set(sync.changed)))
    report["sync"] = sync.as_dict()

    report["interrupted"] = _finish_interrupted(db, name, kind, leases)
    tagged = seen.tagged
    if report["interrupted"]:
        # Finishing / rolling back changed what is tagged: look again before judging orphans.
        try:
            tagged = _tagged(config)
        except OpenStackError as exc:
            report["errors"].append(f"listing tagged resources: {exc}")
    report["orphans"] = _orphans(db, config, tagged, report["errors"])
    report["missing"] = _missing(db, name, kind, tagged)
    report["placement"] = (
        _placement_check(db, name, seen)
        if kind == "nova"
        else {
            "checked": False,
            "reason": "Ironic nodes are compared through their state and tags; standalone Ironic has no Placement",
        }
    )
    for orphan in report["orphans"]:
        log.warning("%s: orphan %s (%s)", name, orphan["message"], orphan["action"])
    for mismatch in report["placement"].get("mismatches", []):
        log.warning("%s: Placement mismatch: %s", name, mismatch["message"])
    report = redact(report)  # a client library's message may repeat a URL with its password
    _store(db, name, report)
    return report


def _tagged(config: IronicConfig | NovaConfig) -> list[TaggedResource]:
    if isinstance(config, IronicConfig):
        return ironic_backend.ironic_driver(config).tagged()
    return nova_backend.nova_driver(config).tagged(all_projects=True)


def _finish_interrupted(db: Database, name: str, kind: str, leases: LeaseHooks | None) -> list[dict[str, Any]]:
    with db.session() as session:
        backend = _backend(session, name)
        ids = list(
            session.scalars(
                select(Lease.id)
                .join(SliceClaim, SliceClaim.lease_id == Lease.id)
                .join(Host, Host.id == SliceClaim.host_id)
                .where(
                    Lease.state == "provisioning",
                    Lease.backend == kind,
                    SliceClaim.released_at.is_(None),
                    Host.backend_id == backend.id,
                )
                .distinct()
                .order_by(Lease.id)
            )
        )
    out = []
    for lease_id in ids:
        entry: dict[str, Any] = {"lease_id": lease_id, "before": "provisioning"}
        if leases is None:
            entry.update(after="provisioning", message="no lease service to provision it again")
        else:
            try:
                leases.reprovision(lease_id)
            except Exception as exc:
                log.exception("lease %s: provisioning again failed", lease_id)
                entry["error"] = str(exc)
            with db.session() as session:
                lease = session.get(Lease, lease_id)
                entry["after"] = lease.state if lease is not None else "gone"
                entry["message"] = lease.reason if lease is not None else ""
        out.append(entry)
    return out


def _orphans(
    db: Database, config: IronicConfig | NovaConfig, tagged: list[TaggedResource], errors: list[str]
) -> list[dict[str, Any]]:
    with db.session() as session:
        ids = sorted({t.lease_id for t in tagged})
        states = dict(session.execute(select(Lease.id, Lease.state).where(Lease.id.in_(ids))).all())
    out = []
    for orphan in find_orphans(tagged, states):
        if orphan.lease_state in LIVE_STATES:
            continue
        r = orphan.resource
        entry = {
            "resource": r.kind,
            "id": r.id,
            "name": r.name,
            "lease_id": r.lease_id,
            "lease_state": orphan.lease_state,
            "state": r.state,
            "maintenance": r.maintenance,
            "message": orphan.message,
            "action": "reported",
        }
        if config.orphans == "release":
            try:
                if isinstance(config, IronicConfig):
                    ironic_backend.ironic_driver(config).release(r.id, config.release_poll, lease_id=r.lease_id)
                else:
                    nova_backend.nova_driver(config).release(r.id, config.delete_poll)
                entry["action"] = "released"
            except OpenStackError as exc:
                entry["action"] = f"release failed: {exc}"
                errors.append(f"releasing orphan {r.name}: {exc}")
        out.append(entry)
    return out


def _missing(db: Database, name: str, kind: str, tagged: list[TaggedResource]) -> list[dict[str, Any]]:
    resource = "ironic_node" if kind == "ironic" else "nova_server"
    expected: dict[str, Any] = {}
    with db.session() as session:
        for lease in session.scalars(select(Lease).where(Lease.state == "ready", Lease.backend == kind)):
            result = lease.result or {}
            if result.get("backend_name") != name:
                continue
            items = result.get("nodes" if kind == "ironic" else "servers") or []
            for item in items:
                expected[lease.id] = (resource, item.get("node_id" if kind == "ironic" else "server_id"))
    return [m.model_dump(mode="json") for m in find_missing(tagged, expected)]


def _placement_check(db: Database, name: str, seen: Observed) -> dict[str, Any]:
    """Placement's GPU usage per compute node against gpufabric's live claims there."""
    if seen.placement is None:
        return {"checked": False, "reason": "Placement not read"}
    with db.session() as session:
        backend = _backend(session, name)
        hosts = list(
            session.scalars(
                select(Host).where(Host.backend_id == backend.id).options(selectinload(Host.devices))
            ).unique()
        )
        rc_of = {d.uuid: (d.details or {}).get("resource_class") for h in hosts for d in h.devices}
        claimed: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for host_id, device_uuid, kind in session.execute(
            select(SliceClaim.host_id, SliceClaim.device_uuid, SliceClaim.kind).where(
                SliceClaim.released_at.is_(None), SliceClaim.host_id.in_([h.id for h in hosts])
            )
        ):
            rc = "VGPU" if kind == "vgpu" else rc_of.get(device_uuid)
            if rc:
                claimed[host_id][rc] += 1
        expected = []
        for h in hosts:
            rcs = {str(rc) for d in h.devices if (rc := (d.details or {}).get("resource_class"))}
            name_in_placement = str((h.labels or {}).get(HYPERVISOR_LABEL) or h.hostname)
            expected.append(
                ExpectedHost(
                    host=name_in_placement,
                    resources={rc: ExpectedUsage(used=claimed[h.id].get(rc, 0)) for rc in sorted(rcs)},
                )
            )
    mismatches = compare(seen.placement, expected, report_unexpected=False)
    return {
        "checked": True,
        "hosts": len(expected),
        "mismatches": [m.model_dump(mode="json") for m in mismatches],
    }


def _store(db: Database, name: str, report: dict[str, Any]) -> None:
    with db.session() as session:
        backend = session.scalar(select(Backend).where(Backend.name == name))
        if backend is None:
            return
        row = session.get(BackendReport, backend.id)
        if row is None:
            row = BackendReport(backend_id=backend.id)
            session.add(row)
        row.report = report
        row.at = datetime.now(UTC)


def last_report(db: Database, name: str) -> dict[str, Any] | None:
    with db.session() as session:
        backend = session.scalar(select(Backend).where(Backend.name == name))
        if backend is None:
            return None
        row = session.get(BackendReport, backend.id)
        return dict(row.report) if row is not None else None


# -- the job ---------------------------------------------------------------------------------------------------


def reconcile_due(db: Database, leases: LeaseHooks | None, now: datetime | None = None) -> list[dict[str, Any]]:
    """Reconcile every ironic / nova backend whose last report is older than its ``reconcile_interval_s``."""
    now = now or datetime.now(UTC)
    due = []
    with db.session() as session:
        for backend in session.scalars(select(Backend).where(Backend.kind.in_(KINDS)).order_by(Backend.name)):
            row = session.get(BackendReport, backend.id)
            interval = float((backend.config or {}).get("reconcile_interval_s", 60.0))
            if row is None or (now - row.at).total_seconds() >= interval:
                due.append(backend.name)
    reports = []
    for name in due:
        try:
            reports.append(reconcile_backend(db, name, leases))
        except Exception:
            log.exception("reconciling backend %s failed", name)
    return reports


def install(registry: HookRegistry, leases: LeaseHooks, db: Database) -> None:
    """Register the OpenStack sync + reconcile hook (once)."""
    if "backend-sync:openstack" in registry.hooks:
        return

    def job(ctx: JobContext) -> None:
        for report in reconcile_due(ctx.db, leases):
            for error in report.get("errors", []):
                log.warning("openstack reconcile %s: %s", report["backend"], error)

    registry.register("backend-sync", "openstack", job, interval_s=JOB_INTERVAL_S)


# -- metrics ---------------------------------------------------------------------------------------------------


class OpenStackCollector(Collector):
    """Gauges from the stored reconcile reports (so every replica exports the leader's findings)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        mismatch = GaugeMetricFamily(
            "gpufabric_openstack_placement_mismatch",
            "Placement's GPU usage minus gpufabric's live claims, per compute node and resource class (0 = agree; "
            "only differences are exported)",
            labels=["backend", "host", "resource_class", "kind"],
        )
        mismatches = GaugeMetricFamily(
            "gpufabric_openstack_placement_mismatches",
            "Differences between Placement and gpufabric found by the last reconcile",
            labels=["backend"],
        )
        orphans = GaugeMetricFamily(
            "gpufabric_openstack_orphans",
            "Nodes / servers tagged for a lease that is not live, at the last reconcile",
            labels=["backend", "resource", "action"],
        )
        interrupted = GaugeMetricFamily(
            "gpufabric_openstack_interrupted_leases",
            "Leases found provisioning by the last reconcile, by the state they were left in",
            labels=["backend", "state"],
        )
        at = GaugeMetricFamily(
            "gpufabric_openstack_reconcile_timestamp_seconds", "When the last reconcile ran", labels=["backend"]
        )
        with self.db.session() as session:
            rows = session.execute(
                select(Backend.name, BackendReport.report, BackendReport.at).join(
                    BackendReport, BackendReport.backend_id == Backend.id
                )
            ).all()
        for name, report, when in rows:
            at.add_metric([name], when.timestamp())
            found = (report.get("placement") or {}).get("mismatches") or []
            mismatches.add_metric([name], len(found))
            for m in found:
                diff = _number(m.get("actual")) - _number(m.get("expected"))
                mismatch.add_metric([name, m.get("host", ""), m.get("resource_class") or "", m.get("kind", "")], diff)
            counts: dict[tuple[str, str], int] = defaultdict(int)
            for o in report.get("orphans") or []:
                counts[(o.get("resource", ""), "released" if o.get("action") == "released" else "reported")] += 1
            for (resource, action), n in sorted(counts.items()):
                orphans.add_metric([name, resource, action], n)
            states: dict[str, int] = defaultdict(int)
            for i in report.get("interrupted") or []:
                states[str(i.get("after"))] += 1
            for state, n in sorted(states.items()):
                interrupted.add_metric([name, state], n)
        yield mismatch
        yield mismatches
        yield orphans
        yield interrupted
        yield at


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 1.0 if value else 0.0
