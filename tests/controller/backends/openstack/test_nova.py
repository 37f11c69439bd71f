"""drivers.openstack.nova against a real Nova 34 (API, conductor, scheduler, compute with the fake GPU driver of
devservices/nova_shims) on MariaDB and RabbitMQ, with the real Placement of this session.

Nova takes about a minute to start: the session fixture ``nova`` (conftest) starts it once per worker, and every test
that uses it carries ``NOVA_GROUP`` (one xdist group, so ``--dist loadgroup`` keeps them on one worker).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from devservices import openstack
from drivers.openstack import (
    LEASE_TAG,
    NovaBootRequest,
    NovaDriver,
    NoValidHost,
    PlacementReader,
    PollPolicy,
    find_orphans,
    flavor_capacity,
    match_flavor,
)
from tests.support.openstack_cloud import NOVA_GROUP, ensure_flavor, nova_admin_connection

pytestmark = [pytest.mark.integration, pytest.mark.slow]
IMAGE = "5e1b7c86-5d1f-4d3c-9f6a-0c1d2e3f4a5b"
POLL = PollPolicy(interval_s=0.2, timeout_s=90)


def _flavor(conn: Any, name: str, specs: dict[str, str]) -> Any:
    return ensure_flavor(conn, name, specs)


@NOVA_GROUP
def test_vgpu_and_pci_flavors_boot_exhaustion_is_no_valid_host_and_delete(
    nova: openstack.NovaDeployment, placement_conn: Any, placement_url: str
) -> None:
    conn = nova_admin_connection(nova, placement_url)
    driver = NovaDriver(conn, alias_models={openstack.NOVA_PCI_ALIAS: "A100 80GB PCIe"})
    vgpu_flavor = _flavor(conn, "g1.a100.vgpu1", {"resources:VGPU": "1", "trait:CUSTOM_GPU_A100": "required"})
    pci_flavor = _flavor(conn, "p1.a100x1", {"pci_passthrough:alias": f"{openstack.NOVA_PCI_ALIAS}:1"})
    _flavor(conn, "m1.small", {"hw:cpu_policy": "shared"})  # no GPU: not discovered

    flavors = driver.discover_flavors()
    assert sorted(f.name for f in flavors) == ["g1.a100.vgpu1", "p1.a100x1"]
    vgpu = match_flavor(flavors, "vgpu", 1)
    pci = match_flavor(flavors, "gpu", 1, model="A100 80GB PCIe")
    assert (vgpu.flavor_id, pci.flavor_id) == (vgpu_flavor.id, pci_flavor.id)
    assert pci.pci_alias == "a100" and pci.model == "A100-80GB"

    # Capacity from Placement: the compute's tree has 2 pGPU children with VGPU=8 and 2 PCI children.
    reader = PlacementReader(placement_conn)
    root = next(p for p in reader.view().roots() if p.name == nova.host)
    view = reader.view(in_tree=root.uuid)
    assert flavor_capacity(vgpu, view) == 16
    assert flavor_capacity(pci, view, {"a100": openstack.NOVA_PCI_RESOURCE_CLASS}) == 2

    made: list[str] = []
    try:
        t0 = time.monotonic()
        s1 = driver.provision(
            NovaBootRequest(lease_id="lease-vgpu", flavor_id=vgpu.flavor_id, image_id=IMAGE, name="vgpu-1", poll=POLL)
        )
        boot_s = time.monotonic() - t0
        made.append(s1.server_id)
        assert s1.status == "ACTIVE" and s1.host == nova.host, s1
        s2 = driver.provision(
            NovaBootRequest(lease_id="lease-pci-1", flavor_id=pci.flavor_id, image_id=IMAGE, name="pci-1", poll=POLL)
        )
        s3 = driver.provision(
            NovaBootRequest(lease_id="lease-pci-2", flavor_id=pci.flavor_id, image_id=IMAGE, name="pci-2", poll=POLL)
        )
        made += [s2.server_id, s3.server_id]
        assert conn.compute.get_server(s2.server_id).metadata[LEASE_TAG] == "lease-pci-1"

        # Placement shows the allocations: VGPU on a nested pGPU provider, the PCI resource class on PCI children.
        view = reader.view(in_tree=root.uuid)
        usage = view.host_gpu_usage()[nova.host]
        assert usage["VGPU"].used == 1 and usage[openstack.NOVA_PCI_RESOURCE_CLASS].used == 2
        vgpu_user = next(p for p in view.providers if p.usages.get("VGPU"))
        assert vgpu_user.parent_uuid == root.uuid and "CUSTOM_GPU_A100" in vgpu_user.traits
        assert flavor_capacity(pci, view, {"a100": openstack.NOVA_PCI_RESOURCE_CLASS}) == 0

        # Idempotent: the same lease and name returns the same server.
        again = driver.provision(
            NovaBootRequest(lease_id="lease-pci-1", flavor_id=pci.flavor_id, image_id=IMAGE, name="pci-1", poll=POLL)
        )
        assert again.server_id == s2.server_id

        # Both A100s are taken: the third PCI server fails with "No valid host" and is deleted.
        with pytest.raises(NoValidHost) as err:
            driver.provision(
                NovaBootRequest(
                    lease_id="lease-pci-3", flavor_id=pci.flavor_id, image_id=IMAGE, name="pci-3", poll=POLL
                )
            )
        assert "No valid host" in err.value.reason
        assert err.value.resource not in {s.id for s in conn.compute.servers()}

        tagged = driver.tagged()
        assert sorted(t.lease_id for t in tagged) == ["lease-pci-1", "lease-pci-2", "lease-vgpu"]
        orphans = find_orphans(tagged, {"lease-vgpu": "ready", "lease-pci-1": "ready", "lease-pci-2": "released"})
        assert [o.resource.id for o in orphans] == [s3.server_id]

        t1 = time.monotonic()
        for server_id in list(made):
            driver.release(server_id, POLL)
            made.remove(server_id)
        delete_s = time.monotonic() - t1
        assert driver.tagged() == []
        print(f"first boot {boot_s:.1f} s, 3 deletes {delete_s:.1f} s")
    finally:
        for server_id in made:
            driver.release(server_id, POLL)
