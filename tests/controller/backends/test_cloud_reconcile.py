"""The sync and reconcile the ironic and nova kinds share (``controller.backends.openstack.reconcile``), driven by an
in-repo fake cloud instead of OpenStack: what they learn of leases and claims comes from the store's LeaseDirectory.

The real clouds are tested in ``tests/controller/backends/openstack`` (they need the OpenStack services); this
covers the store side of the same code without them: hosts kept while claimed, interrupted leases finished, orphans
judged by lease state, live leases whose resource is gone."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from controller.backends.contract import LeaseDirectory
from controller.backends.openstack import reconcile
from controller.backends.openstack.hosts import HostDoc, Observed
from controller.store.db import Database
from controller.store.lease_directory import StoreLeaseDirectory
from controller.store.models import Backend, Host, Lease, SliceClaim
from drivers.openstack import TaggedResource


@dataclass(frozen=True)
class FakeConfig:
    orphans: str = "release"


@dataclass
class FakeCloud:
    """A cloud of the ``ironic`` kind whose nodes and tags the test sets."""

    lease_directory: LeaseDirectory
    docs: list[HostDoc]
    tags: list[TaggedResource]
    kind: str = "ironic"
    resource: str = "ironic_node"
    result_items: tuple[str, str] = ("nodes", "node_id")
    released: list[str] = field(default_factory=list)

    def parse_config(self, raw: dict[str, Any]) -> FakeConfig:
        return FakeConfig(**raw)

    def observe(self, config: FakeConfig) -> Observed:
        return Observed(list(self.docs), [], list(self.tags))

    def tagged(self, config: FakeConfig) -> list[TaggedResource]:
        return list(self.tags)

    def release_orphan(self, config: FakeConfig, resource: TaggedResource) -> None:
        self.released.append(resource.id)

    def placement_report(self, name: str, seen: Observed) -> dict[str, Any]:
        return {"checked": False}


@dataclass
class FakeLeaseService:
    """What reconcile calls of the lease service: provisioning a lease again here fails it, as a deploy that
    cannot finish would."""

    db: Database
    changed: list[str] = field(default_factory=list)
    reprovisioned: list[str] = field(default_factory=list)

    def hosts_changed(self, hostnames: Iterable[str]) -> None:
        self.changed += list(hostnames)

    def reprovision(self, lease_id: str) -> None:
        self.reprovisioned.append(lease_id)
        with self.db.session() as session:
            lease = session.get(Lease, lease_id)
            assert lease is not None
            lease.state, lease.reason = "failed", "deploy timed out"


def _tag(node: str, lease_id: str) -> TaggedResource:
    return TaggedResource(kind="ironic_node", id=node, name=node, lease_id=lease_id, state="active")


def _doc(name: str) -> HostDoc:
    device = {"uuid": f"G-{name}", "index": 0, "model": "NVIDIA H100 80GB HBM3", "memory_mib": 81559}
    return HostDoc(name=name, placeable=True, labels={}, devices=[device])


@pytest.fixture
def cloud_store(migrated_db: Database) -> Database:
    """Backend ``bm`` (ironic) with hosts n1 (interrupted lease P), n2 (ready lease R) and gone-claimed (claimed by R,
    no longer in the cloud), gone-idle (no claim, no longer in the cloud); lease D released."""
    now = datetime.now(UTC)
    with migrated_db.session() as session:
        backend = Backend(name="bm", kind="ironic", config={"orphans": "release"})
        session.add(backend)
        session.flush()
        hosts = {
            n: Host(hostname=n, backend_id=backend.id, status="ready")
            for n in ("n1", "n2", "gone-claimed", "gone-idle")
        }
        session.add_all(hosts.values())
        ready_result = {"backend_name": "bm", "nodes": [{"node_id": "node-R"}]}
        for lease_id, state, result in [
            ("P", "provisioning", None),
            ("R", "ready", ready_result),
            ("D", "released", None),
        ]:
            session.add(
                Lease(
                    id=lease_id,
                    tenant="acme",
                    request_hash="h",
                    request={},
                    state=state,
                    backend="ironic",
                    result=result,
                )
            )
        session.flush()
        for lease_id, host, released in [
            ("P", "n1", None),
            ("R", "n2", None),
            ("R", "gone-claimed", None),
            ("D", "n1", now),
        ]:
            session.add(
                SliceClaim(
                    lease_id=lease_id, tenant="acme", host_id=hosts[host].id, device_uuid=f"G-{host}-{lease_id}",
                    resource=f"gpu:G-{host}-{lease_id}", slot=0, allocation=0, kind="gpu", model="NVIDIA H100 80GB HBM3",
                    claimed_at=now, released_at=released,
                )
            )  # fmt: skip
    return migrated_db


def test_reconcile_reads_leases_and_claims_through_the_directory(cloud_store: Database) -> None:
    db = cloud_store
    tags = [_tag("node-P", "P"), _tag("node-D", "D"), _tag("node-X", "nobody")]  # node-R is gone
    cloud = FakeCloud(StoreLeaseDirectory(db), [_doc("n1"), _doc("n2")], tags)
    service = FakeLeaseService(db)

    report = reconcile.reconcile_backend(db, cloud, "bm", service)

    assert report["errors"] == []
    assert report["sync"]["removed"] == ["gone-idle"] and report["sync"]["unreachable"] == ["gone-claimed"]
    with db.session() as session:
        kept = dict(session.execute(select(Host.hostname, Host.status)).all())
    assert kept == {"n1": "ready", "n2": "ready", "gone-claimed": "unreachable"}  # held by R's live claim
    assert service.reprovisioned == ["P"]
    assert report["interrupted"] == [
        {"lease_id": "P", "before": "provisioning", "after": "failed", "message": "deploy timed out"}
    ]
    # P failed meanwhile, so its node is an orphan now, as is D's; node-X's lease is unknown to the store.
    orphans = {o["id"]: (o["lease_state"], o["action"]) for o in report["orphans"]}
    assert orphans == {
        "node-P": ("failed", "released"),
        "node-D": ("released", "released"),
        "node-X": (None, "released"),
    }
    assert sorted(cloud.released) == ["node-D", "node-P", "node-X"]
    assert [(m["lease_id"], m["expected_id"]) for m in report["missing"]] == [("R", "node-R")]
    assert reconcile.last_report(db, "bm") == report


def test_a_live_lease_keeps_its_tagged_node(cloud_store: Database) -> None:
    db = cloud_store
    cloud = FakeCloud(StoreLeaseDirectory(db), [_doc("n1"), _doc("n2")], [_tag("node-R", "R"), _tag("node-P", "P")])
    report = reconcile.reconcile_backend(db, cloud, "bm", None)  # no lease service: P stays provisioning
    assert report["interrupted"] == [
        {
            "lease_id": "P",
            "before": "provisioning",
            "after": "provisioning",
            "message": "no lease service to provision it again",
        }
    ]
    assert report["orphans"] == [] and report["missing"] == [] and cloud.released == []
