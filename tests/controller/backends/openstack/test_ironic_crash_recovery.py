"""The crash suite on the Ironic backend: two controller replicas on PostgreSQL and a real standalone Ironic
(fake-hardware); a replica killed after each step of create and release. After each restart: no transitional
lease, live claims equal to the holding leases, and the Ironic nodes tagged for a lease are exactly those of the
holding leases (a released lease's node is undeployed and untagged)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from controller.leases.faults import POINTS
from drivers.openstack import IronicDriver
from tests.controller.backends.openstack.test_ironic_leases import WHOLE_H100_NODE, ironic_config
from tests.controller.test_crash_recovery import Fabric
from tests.controller.test_lease_concurrency import postgres_database  # noqa: F401  (fixture)
from tests.support.crash_harness import invariant_violations

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]


class IronicFabric(Fabric):
    label = "Ironic"
    ironic: IronicDriver

    def nodes_match(self) -> list[str]:
        with self.db.engine.connect() as conn:
            ready = {r[0] for r in conn.execute(text("SELECT id FROM leases WHERE state = 'ready'")).all()}
        tagged = self.ironic.tagged()
        out = [f"node {t.name} tagged for {t.lease_id}, not a holding lease" for t in tagged if t.lease_id not in ready]
        out += [f"node {t.name} of lease {t.lease_id} is {t.state}" for t in tagged if t.state != "active"]
        deployed = {t.lease_id for t in tagged}
        out += [f"lease {lid} has no deployed node" for lid in sorted(ready - deployed)]
        return out

    def clean(self) -> list[str]:
        return invariant_violations(self.db) + self.nodes_match()


@pytest.fixture
def ironic_fabric(
    ironic_url: str,
    ironic_conn: Any,
    make_node: Callable[..., Any],
    postgres_database: str,  # noqa: F811
    tmp_path: Path,
) -> Iterator[IronicFabric]:
    make_node()
    f = IronicFabric(postgres_database, tmp_path)
    f.ironic = IronicDriver(ironic_conn)
    try:
        with f.b.client(f.admin) as api:
            made = api.post(
                "/v1/backends", json={"name": "metal", "kind": "ironic", "config": ironic_config(ironic_url)}
            )
            assert made.status_code == 201, made.text
            synced = api.post("/v1/backends/metal/sync")
            assert synced.status_code == 200 and synced.json()["errors"] == [], synced.text
        yield f
    finally:
        f.close()


@pytest.mark.parametrize("point", [p for p in POINTS if p != "recover.taken"])
def test_ironic_leases_survive_a_crash_at_every_point(ironic_fabric: IronicFabric, point: str) -> None:
    f = ironic_fabric
    if point.startswith("create."):
        leases = f.crash_creating(point, WHOLE_H100_NODE)
        with f.b.client(f.tenant) as api:
            assert api.delete(f"/v1/leases/{leases[0]['id']}").json()["state"] == "released"
        assert f.clean() == []
    else:
        f.crash_releasing(point, WHOLE_H100_NODE, f.nodes_match)
