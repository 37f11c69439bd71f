"""A MIG-backed vGPU lease on a real Nova 34 (fake GPU virt driver) and its Placement: the backend's pGPUs are
configured with NVIDIA's A100X-3-20C type (HGX A100 40GB), each lease boots a server with the VGPU flavor and claims
exactly one 3g.20gb GPU instance (4 memory slices of ``mig:<device>`` in the store); a third lease on one pGPU is
refused, naming the rule; releases delete the servers and free the instances.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from controller.store.models import Device, Host, SliceClaim
from devservices import openstack
from tests.controller.backends.openstack.test_ironic_leases import lease, reconcile, sync
from tests.controller.backends.openstack.test_nova_leases import VGPU_FLAVOR, nova_config
from tests.support.controller import Controller
from tests.support.openstack_cloud import NOVA_GROUP, ensure_flavor, nova_admin_connection

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@NOVA_GROUP
def test_mig_backed_vgpu_lease_on_nova_claims_exactly_one_mig_placement(
    nova: openstack.NovaDeployment, placement_url: str, controller: Controller
) -> None:
    admin_conn = nova_admin_connection(nova, placement_url)
    ensure_flavor(admin_conn, *VGPU_FLAVOR)
    config: dict[str, Any] = {**nova_config(nova, placement_url), "vgpu_types": {"A100": "A100X-3-20C"}}
    request = {"slices": [{"kind": "vgpu", "count": 1, "vgpu_type": "A100X-3-20C"}]}
    with controller.admin() as api, controller.client(controller.tenant_token) as tenant:
        response = api.post("/v1/backends", json={"name": "cloud-mig", "kind": "nova", "config": config})
        assert response.status_code == 201, response.text
        sync(api, "cloud-mig")
        with controller.db.session() as session:
            offers = [
                d.details["vgpu"]
                for d in session.scalars(select(Device).join(Host).where(Host.hostname == nova.host))
                if (d.details or {}).get("vgpu")
            ]
        assert len(offers) == 2, offers  # the two pGPU providers
        for offer in offers:
            assert offer["supported"][0]["name"] == "A100X-3-20C"
            assert offer["supported"][0]["mig_profile"] == "3g.20gb"
            assert [(g["start"], g["size"]) for g in offer["gpu_instances"]] == [(0, 4), (4, 4)]

        first = lease(tenant, request)
        assert first["state"] == "ready", first
        (alloc,) = first["allocations"]
        assert (alloc["kind"], alloc["vgpu_type"], alloc["profile"]) == ("vgpu", "A100X-3-20C", "3g.20gb")
        assert alloc["placement"]["size"] == 4
        second = lease(tenant, {**request, "slices": [{**request["slices"][0]}]})
        assert second["state"] == "ready", second

        with controller.db.session() as session:
            rows = session.execute(
                select(SliceClaim.lease_id, SliceClaim.resource, SliceClaim.slot).where(
                    SliceClaim.released_at.is_(None)
                )
            ).all()
        by_lease = {lid: sorted((r, s) for lid2, r, s in rows if lid2 == lid) for lid in (first["id"], second["id"])}
        # Each lease holds exactly the 4 memory slices of one 3g.20gb instance, and they never overlap.
        for lid, held in by_lease.items():
            placement = next(a["placement"] for x in (first, second) if x["id"] == lid for a in x["allocations"])
            device = next(a["device"] for x in (first, second) if x["id"] == lid for a in x["allocations"])
            start = placement["start"]
            assert held == [(f"mig:{device}", s) for s in range(start, start + 4)], held
        assert not set(by_lease[first["id"]]) & set(by_lease[second["id"]])

        # Placement sees one VGPU per lease, not one per memory slice.
        report = reconcile(api, "cloud-mig")
        assert report["placement"]["mismatches"] == [], report["placement"]

        # Fill the pGPUs (2 x 2 instances), then the next one is refused with the reason.
        more = [lease(tenant, request) for _ in range(2)]
        assert all(m["state"] == "ready" for m in more), more
        refused = tenant.post("/v1/placements:dry-run", json=request)
        assert refused.status_code == 409, refused.text
        assert "no free 3g.20gb GPU instance for MIG-backed A100X-3-20C" in refused.text

        for held_lease in (first, second, *more):
            released = tenant.delete(f"/v1/leases/{held_lease['id']}")
            assert released.status_code == 200 and released.json()["state"] == "released", released.text
        assert (
            tenant.post(
                "/v1/placements:dry-run", json={**request, "slices": [{**request["slices"][0], "count": 2}]}
            ).status_code
            == 200
        )
