"""drivers.openstack.nova against a real Nova 34 (API, conductor, scheduler, compute with the fake GPU driver of
tests/services/nova_shims) on MariaDB and RabbitMQ, with the real Placement of this session.

One test function on purpose: Nova takes about a minute to start, and under ``pytest -n 2`` two test functions could
land on both workers and start it twice (the deployments are serialised by a machine-wide lock, see
tests/services/openstack.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from drivers.openstack import (
    LEASE_TAG,
    NovaBootRequest,
    NovaDriver,
    NoValidHost,
    OpenStackAuth,
    PlacementReader,
    PollPolicy,
    connect,
    find_orphans,
    flavor_capacity,
    match_flavor,
)
from tests.integration.conftest import REQUIRE_ENV, _required
from tests.services import openstack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
IMAGE = "5e1b7c86-5d1f-4d3c-9f6a-0c1d2e3f4a5b"
POLL = PollPolicy(interval_s=0.2, timeout_s=90)


@pytest.fixture(scope="module")
def nova(
    placement_service: openstack.Service, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[openstack.NovaDeployment]:
    try:
        venv = openstack.create_nova_venv()
    except openstack.VenvBuildError as e:
        if e.offline and not _required():
            pytest.skip(f"Nova virtualenv unavailable (no network?); set {REQUIRE_ENV}=1 to make this a failure")
        pytest.fail(str(e), pytrace=False)
    try:
        deployment = openstack.start_nova(tmp_path_factory.mktemp("nova"), placement_service.url, venv)
    except openstack.BackingServiceUnavailable as e:
        if not _required():
            pytest.skip(f"{e}; set {REQUIRE_ENV}=1 to make this a failure")
        pytest.fail(f"{e} ({REQUIRE_ENV}={os.environ.get(REQUIRE_ENV)!r})", pytrace=False)
    except openstack.ServiceError as e:
        pytest.fail(f"Nova did not start: {e}", pytrace=False)
    print(f"nova started in {deployment.started_in_s:.1f} s: {deployment.timings}")
    try:
        yield deployment
    finally:
        openstack.stop_nova(deployment)


def _flavor(conn: Any, name: str, specs: dict[str, str]) -> Any:
    flavor = conn.compute.create_flavor(name=name, vcpus=1, ram=512, disk=1)
    conn.compute.create_flavor_extra_specs(flavor, specs)
    return flavor


def test_vgpu_and_pci_flavors_boot_exhaustion_is_no_valid_host_and_delete(
    nova: openstack.NovaDeployment, placement_conn: Any
) -> None:
    conn = connect(OpenStackAuth(method="none", endpoints={"compute": nova.url}))
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
