"""The store's LeaseDirectory (``controller.store.lease_directory``): what backends may know of leases and claims,
on SQLite and PostgreSQL. Each question is one statement (a long id list a few), whatever the fleet's size."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError

from controller.backends.contract import ClaimMove, LeaseDirectory, LeaseStatus, LiveClaim, PlacedLease
from controller.backends.contract import ProvisioningClaim as Waiting
from controller.store.db import Database
from controller.store.lease_directory import ID_CHUNK, StoreLeaseDirectory
from controller.store.models import Backend, Host, Lease, SliceClaim


@dataclass
class Fleet:
    nova: int
    eks: int
    hosts: dict[str, int]


def _lease(lease_id: str, state: str, backend: str, allocations: list[dict[str, Any]], **kw: Any) -> Lease:
    return Lease(
        id=lease_id, tenant="acme", request_hash="h", request={}, state=state, backend=backend, allocations=allocations,
        **kw,
    )  # fmt: skip


def _claim(lease_id: str, host_id: int, uuid: str, *, slot: int = 0, allocation: int = 0, **kw: Any) -> SliceClaim:
    kind = kw.pop("kind", "gpu")
    return SliceClaim(
        lease_id=lease_id, tenant="acme", host_id=host_id, device_uuid=uuid, resource=f"{kind}:{uuid}", slot=slot,
        allocation=allocation, kind=kind, model="NVIDIA L4", claimed_at=datetime.now(UTC), **kw,
    )  # fmt: skip


def _alloc(host: str, device: str) -> dict[str, Any]:
    return {"host": host, "device": device, "kind": "gpu"}


@pytest.fixture
def fleet(migrated_db: Database) -> Fleet:
    """Two backends: nova (n1, n2) and eks (e1, e2, and the headroom host e-room). Leases: P (nova, provisioning, two
    GPUs on n1), R (nova, ready on n2, with a result), D (nova, released: its claim on n1 released), W (eks,
    provisioning on e-room)."""
    with migrated_db.session() as session:
        nova, eks = Backend(name="os", kind="nova"), Backend(name="aws", kind="eks")
        session.add_all([nova, eks])
        session.flush()
        hosts = {
            name: Host(hostname=name, backend_id=backend.id, status="ready")
            for name, backend in [("n1", nova), ("n2", nova), ("e1", eks), ("e2", eks), ("e-room", eks)]
        }
        session.add_all(hosts.values())
        session.flush()
        ids = {name: h.id for name, h in hosts.items()}
        session.add_all(
            [
                _lease("P", "provisioning", "nova", [_alloc("n1", "G-n1-0"), _alloc("n1", "G-n1-1")]),
                _lease("R", "ready", "nova", [_alloc("n2", "G-n2-0")], result={"backend_name": "os", "servers": []}),
                _lease("D", "released", "nova", [_alloc("n1", "G-n1-0")]),
                _lease("W", "provisioning", "eks", [_alloc("e-room", "room-0"), _alloc("e-room", "room-1")]),
                _lease("F", "failed", "eks", [], reason="no capacity"),
            ]
        )
        session.flush()
        session.add_all(
            [
                _claim("P", ids["n1"], "G-n1-0"),
                _claim("P", ids["n1"], "G-n1-1", allocation=1),
                _claim("R", ids["n2"], "G-n2-0", kind="vgpu", slot=3),
                _claim("D", ids["n1"], "G-n1-0", released_at=datetime.now(UTC)),
                _claim("W", ids["e-room"], "room-0"),
                _claim("W", ids["e-room"], "room-1", allocation=1),
            ]
        )
        return Fleet(nova.id, eks.id, ids)


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """The statements this thread sends (the change feed's poller has its own)."""
    me = threading.get_ident()
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if threading.get_ident() == me and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT")):
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", on_execute)


def test_the_store_directory_is_a_lease_directory(migrated_db: Database) -> None:
    directory: LeaseDirectory = StoreLeaseDirectory(migrated_db)  # mypy checks the Protocol; this, that it is used
    assert directory.provisioning_leases("static") == []


def test_hosts_with_live_claims_are_those_of_the_backend(migrated_db: Database, fleet: Fleet) -> None:
    directory = StoreLeaseDirectory(migrated_db)
    with statements(migrated_db) as sent:
        assert directory.live_claim_hosts(fleet.nova) == {fleet.hosts["n1"], fleet.hosts["n2"]}
    assert len(sent) == 1
    assert directory.live_claim_hosts(fleet.eks) == {fleet.hosts["e-room"]}  # e1, e2 idle
    assert directory.live_claim_hosts(fleet.eks + fleet.nova + 1) == frozenset()


def test_live_claims_on_hosts(migrated_db: Database, fleet: Fleet) -> None:
    directory = StoreLeaseDirectory(migrated_db)
    n1, n2 = fleet.hosts["n1"], fleet.hosts["n2"]
    with statements(migrated_db) as sent:
        claims = directory.live_claims(iter([n2, n1, fleet.hosts["e1"]]))
    assert len(sent) == 1
    assert claims == [
        LiveClaim("P", n1, "G-n1-0", "gpu", "gpu:G-n1-0", 0),
        LiveClaim("P", n1, "G-n1-1", "gpu", "gpu:G-n1-1", 1),
        LiveClaim("R", n2, "G-n2-0", "vgpu", "vgpu:G-n2-0", 0),
    ]  # the released claim of D is not there
    assert directory.live_claims([]) == []
    with statements(migrated_db) as sent:  # every host of a large backend: a few statements, not one per host
        assert len(directory.live_claims(range(1, 2 * ID_CHUNK + 2))) == 5
    assert len(sent) == 3


def test_lease_status_says_which_are_live(migrated_db: Database, fleet: Fleet) -> None:
    directory = StoreLeaseDirectory(migrated_db)
    assert directory.lease_status(["P", "R", "D", "F", "W", "nobody", "P"]) == {
        "P": LeaseStatus("P", "provisioning", live=True),
        "R": LeaseStatus("R", "ready", live=True),
        "D": LeaseStatus("D", "released", live=False),
        "F": LeaseStatus("F", "failed", live=False, reason="no capacity"),
        "W": LeaseStatus("W", "provisioning", live=True),
    }
    assert directory.lease_status([]) == {}
    many = [f"tagged-{i}" for i in range(2 * ID_CHUNK + 1)] + ["R"]  # e.g. every server a cloud tagged
    with statements(migrated_db) as sent:
        assert list(directory.lease_status(iter(many))) == ["R"]
    assert len(sent) == 3  # one per chunk of ids, within both databases' bound-parameter limits


def test_leases_still_provisioning(migrated_db: Database, fleet: Fleet) -> None:
    directory = StoreLeaseDirectory(migrated_db)
    assert directory.provisioning_claims(fleet.nova) == [Waiting("P", fleet.hosts["n1"])]  # one per (lease, host)
    assert directory.provisioning_claims(fleet.nova, kind="eks") == []
    assert directory.provisioning_claims(fleet.eks) == [Waiting("W", fleet.hosts["e-room"])]
    assert directory.provisioning_leases("nova") == ["P"]
    assert directory.provisioning_leases("eks") == ["W"]


def test_placed_leases_carry_hosts_and_result(migrated_db: Database, fleet: Fleet) -> None:
    directory = StoreLeaseDirectory(migrated_db)
    with statements(migrated_db) as sent:
        placed = directory.placed_leases("nova")
    assert len(sent) == 1
    assert placed == [
        PlacedLease("P", "acme", "provisioning", ("n1",), {}),
        PlacedLease("R", "acme", "ready", ("n2",), {"backend_name": "os", "servers": []}),
    ]
    assert [p.id for p in directory.placed_leases("eks")] == ["W"]


def test_move_claims_hands_a_lease_to_another_host(migrated_db: Database, fleet: Fleet) -> None:
    directory = StoreLeaseDirectory(migrated_db)
    room, e1 = fleet.hosts["e-room"], fleet.hosts["e1"]
    with migrated_db.session() as session:
        before = {h.id: h.change_seq for h in session.scalars(select(Host).where(Host.id.in_([room, e1])))}
    move = ClaimMove("W", (room, "e-room"), (e1, "e1"), {"room-0": "G-e1-0", "room-1": "G-e1-1"})
    with migrated_db.session() as session:
        directory.move_claims(session, move)
    assert directory.live_claim_hosts(fleet.eks) == {e1}
    assert [(c.host_id, c.resource) for c in directory.live_claims([room, e1])] == [
        (e1, "gpu:G-e1-0"),
        (e1, "gpu:G-e1-1"),
    ]
    assert directory.placed_leases("eks")[0].hosts == ("e1",)
    with migrated_db.session() as session:
        lease = session.get(Lease, "W")
        assert lease is not None and [a["device"] for a in lease.allocations] == ["G-e1-0", "G-e1-1"]
        after = {h.id: h.change_seq for h in session.scalars(select(Host).where(Host.id.in_([room, e1])))}
    assert all(after[h] > before[h] for h in (room, e1))  # both hosts changed, for the placement indexes


def test_move_claims_onto_a_claimed_unit_fails_and_changes_nothing(migrated_db: Database, fleet: Fleet) -> None:
    directory = StoreLeaseDirectory(migrated_db)
    room, e2 = fleet.hosts["e-room"], fleet.hosts["e2"]
    with migrated_db.session() as session:
        session.add(_lease("X", "ready", "eks", [_alloc("e2", "G-e2-0")]))
        session.flush()
        session.add(_claim("X", e2, "G-e2-0"))
    move = ClaimMove("W", (room, "e-room"), (e2, "e2"), {"room-0": "G-e2-0"})
    with pytest.raises(IntegrityError), migrated_db.session() as session:
        directory.move_claims(session, move)
    assert {c.lease_id: c.host_id for c in directory.live_claims([room, e2])} == {"W": room, "X": e2}
