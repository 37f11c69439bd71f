"""End to end through the REST API with a real Nova 34 (fake GPU virt driver), its Placement and a real Ironic: a vGPU
lease boots a server in the tenant's project, a whole-GPU lease the Nova host cannot take any more (its PCI GPUs
used outside gpufabric) moves to the next candidate (an Ironic node), the reconciler reports the Placement
mismatch and an orphan server, and releases delete the server and undeploy the node.

One test function: it shares the session's Nova (``NOVA_GROUP``) and leaves no server behind.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import yaml

from controller.api.app import create_app
from controller.auth.tokens import Role, authenticate
from controller.testing import ServerThread
from devservices import openstack
from drivers.openstack import (
    HOST_KEY_TAG,
    LEASE_TAG,
    NovaDriver,
    OpenStackAuth,
    PlacementReader,
    PollPolicy,
    connect,
    fingerprint,
)
from tests.controller.backends.openstack.test_ironic_leases import (
    REQUEST_KEY,
    SSH_KEY,
    ironic_config,
    lease,
    reconcile,
    register,
    sync,
)
from tests.support.controller import Controller
from tests.support.openstack_cloud import NOVA_GROUP, ensure_flavor, nova_admin_connection

pytestmark = [pytest.mark.integration, pytest.mark.slow]
IMAGE = "5e1b7c86-5d1f-4d3c-9f6a-0c1d2e3f4a5b"
VGPU_FLAVOR = ("g1.a100.vgpu1", {"resources:VGPU": "1", "trait:CUSTOM_GPU_A100": "required"})
PCI_FLAVOR = ("p1.a100x1", {"pci_passthrough:alias": f"{openstack.NOVA_PCI_ALIAS}:1"})


def nova_config(nova: openstack.NovaDeployment, placement_url: str) -> dict[str, Any]:
    return {
        "auth": {
            "method": "admin_token",
            "token": "admin",
            "endpoints": {"compute": nova.url, "placement": placement_url},
            "api_versions": {"placement": "1.39"},
        },
        "region": "lab-1",
        "controller_url": "https://gpufabric.test:8443",
        "image": IMAGE,
        "networks": "none",
        "pci_alias_models": {openstack.NOVA_PCI_ALIAS: "A100 80GB PCIe"},
        "pci_alias_resource_classes": {openstack.NOVA_PCI_ALIAS: openstack.NOVA_PCI_RESOURCE_CLASS},
        # The nova noauth shim takes "<user>:<project>" tokens: acme's servers land in project proj-acme.
        "tenants": {
            "acme": {"method": "admin_token", "token": "acme-user:proj-acme", "endpoints": {"compute": nova.url}}
        },
        "tenant_ssh_keys": {"acme": [SSH_KEY]},
        "poll_interval_s": 0.2,
        "inline_wait_s": 120,
    }


def _wait_server(conn: Any, server_id: str, status: str) -> Any:
    while True:  # bounded by the test run, not a wall clock: Nova either gets there or goes to ERROR
        server = conn.compute.get_server(server_id)
        if server.status == status:
            return server
        assert server.status != "ERROR", server.fault
        time.sleep(0.2)


def _delete(conn: Any, server_id: str) -> None:
    """Delete a server and wait until it is gone from Nova *and* its compute freed its GPUs in Placement: Nova
    drops the server from its API before that, and a server booted in between gets No valid host."""
    NovaDriver(conn).release(server_id, PollPolicy(interval_s=0.2, timeout_s=180))


@NOVA_GROUP
def test_nova_vgpu_lease_exhaustion_moves_to_ironic_mismatch_and_orphan_reported(
    nova: openstack.NovaDeployment,
    placement_url: str,
    ironic_url: str,
    ironic_conn: Any,
    make_node: Callable[..., Any],
    controller: Controller,
) -> None:
    admin_conn = nova_admin_connection(nova, placement_url)
    vgpu_flavor = ensure_flavor(admin_conn, *VGPU_FLAVOR)
    pci_flavor = ensure_flavor(admin_conn, *PCI_FLAVOR)
    a100_node = make_node(
        resource_class="baremetal-gpu-a100-80gb",
        traits=("CUSTOM_GPU_A100_80GB",),
        properties={"cpus": 32, "memory_mb": 256000, "capabilities": "gpu_model:A100-80GB,gpu_count:1"},
    )
    outside: list[str] = []
    try:
        with controller.admin() as api, controller.client(controller.tenant_token) as tenant:
            response = api.post(
                "/v1/backends", json={"name": "cloud", "kind": "nova", "config": nova_config(nova, placement_url)}
            )
            assert response.status_code == 201, response.text
            register(api, "metal", ironic_config(ironic_url, cost=5.0))
            report = sync(api, "cloud")
            assert report["hosts"] == [nova.host], report
            host = api.get(f"/v1/hosts/{nova.host}").json()
            models = sorted(d["model"] for d in host["devices"])
            # 2 pGPUs offering vGPUs (trait CUSTOM_GPU_A100) + 2 PCI A100 80GB (alias a100)
            assert models == ["NVIDIA A100 80GB PCIe"] * 2 + ["NVIDIA A100-SXM4-40GB"] * 2, models
            assert host["labels"]["gpufabric.dev/nova-hypervisor"] == nova.host
            sync(api, "metal")

            # A vGPU lands on the Nova compute: a server with the VGPU flavor, in the tenant's project.
            t0 = time.monotonic()
            vgpu = lease(
                tenant,
                {"slices": [{"kind": "vgpu", "count": 1, "model": "A100"}], "ssh_public_keys": [REQUEST_KEY]},
            )
            boot_s = time.monotonic() - t0
            assert vgpu["state"] == "ready", vgpu
            result = vgpu["result"]
            assert result["backend"] == "nova" and result["host"] == nova.host
            server = admin_conn.compute.get_server(result["server_id"])
            assert server.status == "ACTIVE" and server.name == result["server"]
            assert server.metadata[LEASE_TAG] == vgpu["id"] and server.flavor["original_name"] == vgpu_flavor.name
            assert server.project_id == "proj-acme"
            # User data: the agent's environment (controller URL, a working bootstrap token) and the tenant's key.
            user_data = base64.b64decode(server.user_data).decode()
            assert "GPUFABRIC_CONTROLLER_URL=https://gpufabric.test:8443" in user_data and SSH_KEY in user_data
            # The access: the tenant's keys, the host key gpufabric made for the server (its public half on the
            # server's metadata, the pair in the user data), and a noVNC console from Nova (fake driver).
            access = vgpu["access"]
            assert access["kind"] == "ssh" and access["ssh_keys"] == [SSH_KEY, REQUEST_KEY]
            (machine,) = access["machines"]
            host_key = server.metadata[HOST_KEY_TAG]
            assert machine["host_public_key"] == host_key and machine["host_key_fingerprint"] == fingerprint(host_key)
            cloud = yaml.safe_load(user_data)
            assert cloud["ssh_keys"]["ed25519_public"] == host_key and cloud["ssh_genkeytypes"] == []
            # The lease request's own key, next to the backend's per-tenant key.
            assert cloud["ssh_authorized_keys"] == [SSH_KEY, REQUEST_KEY]
            assert machine["console_url"].startswith("http://127.0.0.1:6080/vnc_auto.html?path=%3Ftoken%3D"), machine
            assert "token_ttl" in machine["console"]
            assert tenant.get(f"/v1/leases/{vgpu['id']}").json()["access"] == access
            token = re.search(r"GPUFABRIC_BOOTSTRAP_TOKEN=(\S+)", user_data)
            assert token is not None
            with controller.db.session() as session:
                principal = authenticate(session, token.group(1))
            assert principal is not None and principal.role is Role.bootstrap
            assert vgpu["allocations"][0]["kind"] == "vgpu" and vgpu["allocations"][0]["vgpu_type"]

            # Placement and gpufabric agree (one VGPU each).
            report = reconcile(api, "cloud")
            assert report["placement"]["checked"] and report["placement"]["mismatches"] == [], report["placement"]
            assert report["orphans"] == [] and report["missing"] == []

            # A whole PCI A100 lands on the compute too: a server with the PCI-passthrough flavor; released cleanly.
            pci = lease(tenant, {"slices": [{"kind": "gpu", "count": 1, "model": "A100-80GB"}], "backends": ["nova"]})
            assert pci["state"] == "ready", pci
            assert pci["result"]["backend"] == "nova" and pci["result"]["host"] == nova.host
            pci_server = admin_conn.compute.get_server(pci["result"]["server_id"])
            assert pci_server.status == "ACTIVE" and pci_server.flavor["original_name"] == pci_flavor.name
            response = tenant.delete(f"/v1/leases/{pci['id']}")
            assert response.status_code == 200 and response.json()["state"] == "released", response.text
            # Released means the GPU is free again: the server is gone and Placement holds nothing for it.
            assert pci_server.id not in {s.id for s in admin_conn.compute.servers(all_projects=True)}
            assert admin_conn.placement.get(f"/allocations/{pci_server.id}").json()["allocations"] == {}

            # Both PCI A100s are used outside gpufabric (one server tagged for a lease gpufabric does not know).
            for i, metadata in enumerate(({LEASE_TAG: "ghost-lease"}, {})):
                made = admin_conn.compute.create_server(
                    name=f"outside-{i}", flavor_id=pci_flavor.id, image_id=IMAGE, networks="none", metadata=metadata
                )
                outside.append(made.id)
                _wait_server(admin_conn, made.id, "ACTIVE")

            # gpufabric still sees free PCI GPUs on the compute; Nova says No valid host; the lease moves on to
            # the next candidate (the Ironic A100 node).
            t0 = time.monotonic()
            moved = lease(
                tenant, {"slices": [{"kind": "gpu", "count": 1, "model": "A100-80GB"}], "backends": ["nova", "ironic"]}
            )
            move_s = time.monotonic() - t0
            assert moved["state"] == "ready", moved
            assert moved["backend"] == "ironic" and moved["result"]["node"] == a100_node.name, moved
            # The tenant learns how many hosts were tried and why; the admin sees which.
            attempts = moved["placement"]["failed_attempts"]
            assert attempts[0]["hosts"] == 1 and "No valid host" in attempts[0]["reason"], attempts
            attempts = api.get(f"/v1/leases/{moved['id']}").json()["placement"]["failed_attempts"]
            assert attempts[0]["hosts"] == [nova.host] and "No valid host" in attempts[0]["reason"], attempts
            assert ironic_conn.baremetal.get_node(a100_node.id).provision_state == "active"
            assert not [
                s for s in admin_conn.compute.servers(all_projects=True) if s.metadata.get(LEASE_TAG) == moved["id"]
            ]

            # The reconciler reports the difference (Placement: 2 PCI GPUs used, gpufabric: none) and the orphan.
            report = reconcile(api, "cloud")
            mismatches = report["placement"]["mismatches"]
            assert [(m["host"], m["kind"], m["resource_class"], m["expected"], m["actual"]) for m in mismatches] == [
                (nova.host, "used", openstack.NOVA_PCI_RESOURCE_CLASS, 0, 2)
            ], mismatches
            assert [(o["id"], o["lease_id"], o["action"]) for o in report["orphans"]] == [
                (outside[0], "ghost-lease", "reported")
            ]
            metrics = api.get("/metrics").text
            assert (
                f'gpufabric_openstack_placement_mismatch{{backend="cloud",host="{nova.host}",kind="used",'
                f'resource_class="{openstack.NOVA_PCI_RESOURCE_CLASS}"}} 2.0'
            ) in metrics
            assert 'gpufabric_openstack_placement_mismatches{backend="cloud"} 1.0' in metrics
            assert api.get("/v1/backends/cloud/reconcile").json()["placement"]["mismatches"] == mismatches

            # Releases: the server is deleted, the node undeployed.
            for held in (vgpu, moved):
                response = tenant.delete(f"/v1/leases/{held['id']}")
                assert response.status_code == 200 and response.json()["state"] == "released", response.text
            assert result["server_id"] not in {s.id for s in admin_conn.compute.servers(all_projects=True)}
            assert ironic_conn.baremetal.get_node(a100_node.id).provision_state == "available"
            reader = PlacementReader(
                connect(
                    OpenStackAuth(
                        method="admin_token",
                        token="admin",
                        endpoints={"placement": placement_url},
                        api_versions={"placement": "1.39"},
                    )
                )
            )
            deadline = time.monotonic() + 180
            while reader.view().host_gpu_usage()[nova.host]["VGPU"].used:  # the compute frees it as it deletes
                assert time.monotonic() < deadline, "Placement still shows the VGPU used after 180 s"
                time.sleep(0.2)
            print(f"vGPU lease ready in {boot_s:.1f} s; No valid host -> Ironic node ready in {move_s:.1f} s")
    finally:
        for server_id in outside:
            _delete(admin_conn, server_id)


@NOVA_GROUP
def test_a_lease_left_building_by_a_restart_is_finished_by_the_reconciler(
    nova: openstack.NovaDeployment, placement_url: str, controller: Controller
) -> None:
    admin_conn = nova_admin_connection(nova, placement_url)
    ensure_flavor(admin_conn, *VGPU_FLAVOR)
    # inline_wait_s 0: POST /v1/leases answers while the server is still building.
    config = {**nova_config(nova, placement_url), "inline_wait_s": 0}
    with controller.admin() as api, controller.client(controller.tenant_token) as tenant:
        assert api.post("/v1/backends", json={"name": "cloud", "kind": "nova", "config": config}).status_code == 201
        sync(api, "cloud")
        held = lease(tenant, {"slices": [{"kind": "vgpu", "count": 1, "model": "A100"}]})
    assert held["state"] == "provisioning" and "Nova servers building" in held["reason"], held
    servers = [s for s in admin_conn.compute.servers(all_projects=True) if s.metadata.get(LEASE_TAG) == held["id"]]
    assert len(servers) == 1

    controller.server.stop()
    restarted = ServerThread(create_app(controller.settings, db=controller.db)).start()
    try:
        with httpx.Client(
            base_url=restarted.url, headers={"Authorization": f"Bearer {controller.admin_token}"}, timeout=120
        ) as api:
            state = "provisioning"
            while state == "provisioning":  # each pass looks at the server once; Nova gets it ACTIVE or ERROR
                report = reconcile(api, "cloud")
                entry = next(i for i in report["interrupted"] if i["lease_id"] == held["id"])
                state = entry["after"]
                if state == "provisioning":
                    time.sleep(0.2)
            assert state == "ready", entry
            now = api.get(f"/v1/leases/{held['id']}").json()
            assert now["result"]["server_id"] == servers[0].id  # the same server: found by its tag, not booted again
            assert [s.id for s in admin_conn.compute.servers(all_projects=True)] == [servers[0].id]
            response = api.delete(f"/v1/leases/{held['id']}")
            assert response.status_code == 200 and response.json()["state"] == "released", response.text
            assert [s for s in admin_conn.compute.servers(all_projects=True)] == []
    finally:
        restarted.stop()
        for s in admin_conn.compute.servers(all_projects=True):
            if s.metadata.get(LEASE_TAG) == held["id"]:
                _delete(admin_conn, s.id)
