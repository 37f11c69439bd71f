"""The ``cyborg`` backend end to end through the REST API, against real Cyborg 17 (API, conductor, agent with
gpufabric's driver reading the agent's inventory), Nova 34 (fake GPU virt driver) and Placement.

A two-GPU lease makes the device profile and the flavor naming it, boots a Nova server whose two accelerator
requests Cyborg binds on the compute host; reconcile agrees with Placement and Cyborg, then reports ARQs made behind
gpufabric's back as orphans (and exports them); the release deletes the server and its ARQs. Bad config and a
request the kind cannot serve are 4xx. All on the session's one Nova + Cyborg deployment (``NOVA_GROUP``).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import yaml

from controller.backends.openstack.topology import AGGREGATE_LABEL, LAYER_LABELS
from devservices import cyborg
from drivers.cyborg.devices import read_inventory
from drivers.openstack import (
    HOST_KEY_TAG,
    LEASE_TAG,
    OpenStackAuth,
    PlacementReader,
    connect,
    fingerprint,
)
from drivers.openstack.cyborg import CyborgDriver
from tests.controller.backends.openstack.test_ironic_leases import REQUEST_KEY, lease, reconcile, sync
from tests.support.controller import Controller
from tests.support.openstack_cloud import NOVA_GROUP, az_aggregate

pytestmark = [pytest.mark.integration, pytest.mark.slow]
IMAGE = "5e1b7c86-5d1f-4d3c-9f6a-0c1d2e3f4a5b"


def cyborg_config(deployment: cyborg.CyborgDeployment, placement_url: str) -> dict[str, Any]:
    return {
        "auth": {
            "method": "admin_token",
            "token": "admin",
            "endpoints": {
                "compute": deployment.nova.url,
                "placement": placement_url,
                "accelerator": deployment.url,
            },
            "api_versions": {"placement": "1.39"},
        },
        "controller_url": "https://gpufabric.test:8443",
        "image": IMAGE,
        "networks": "none",
        "flavor_vcpus": 1,
        "flavor_ram_mb": 512,
        "flavor_disk_gb": 1,
        "poll_interval_s": 0.2,
        "inline_wait_s": 120,
    }


def admin_connection(deployment: cyborg.CyborgDeployment, placement_url: str) -> Any:
    return connect(
        OpenStackAuth(
            method="admin_token",
            token="admin",
            endpoints={"compute": deployment.nova.url, "placement": placement_url, "accelerator": deployment.url},
            api_versions={"placement": "1.39"},
        )
    )


def _pgpu_used(placement_url: str, host: str) -> int:
    reader = PlacementReader(
        connect(OpenStackAuth(method="admin_token", token="admin", endpoints={"placement": placement_url}))
    )
    usage = reader.view().host_gpu_usage().get(host, {}).get("PGPU")
    return usage.used if usage else 0


@NOVA_GROUP
def test_cyborg_lease_binds_arqs_reconcile_reports_orphans_release_frees(
    nova_cyborg: cyborg.CyborgDeployment, placement_url: str, controller: Controller
) -> None:
    conn = admin_connection(nova_cyborg, placement_url)
    host = nova_cyborg.nova.host
    gpus = read_inventory(nova_cyborg.inventory_file)
    with controller.admin() as api, controller.client(controller.tenant_token) as tenant:
        response = api.post(
            "/v1/backends",
            json={"name": "accel", "kind": "cyborg", "config": cyborg_config(nova_cyborg, placement_url)},
        )
        assert response.status_code == 201, response.text

        # Discovery: the compute node, one device per Cyborg deployable, i.e. per GPU of the agent's inventory.
        report = sync(api, "accel")
        assert report["hosts"] == [host], report
        devices = api.get(f"/v1/hosts/{host}").json()["devices"]
        assert sorted(d["model"] for d in devices) == sorted(g.model for g in gpus) == ["NVIDIA A100-SXM4-80GB"] * 4
        deployables = CyborgDriver(conn).deployables()
        assert {d.name for d in deployables} == {g.deployable_name(host) for g in gpus}
        assert {d["uuid"] for d in devices} == {f"cyborg-{d.uuid}" for d in deployables}

        # A two-GPU lease: device profile + flavor made, server booted through Nova, two ARQs bound on the host.
        t0 = time.monotonic()
        held = lease(
            tenant, {"slices": [{"kind": "gpu", "count": 2, "model": "A100-80GB"}], "ssh_public_keys": [REQUEST_KEY]}
        )
        boot_s = time.monotonic() - t0
        assert held["state"] == "ready", held
        result = held["result"]
        assert result["backend"] == "cyborg" and result["host"] == host, result
        server = conn.compute.get_server(result["server_id"])
        assert server.status == "ACTIVE" and server.metadata[LEASE_TAG] == held["id"]
        # The tenant's access: its key in the server's user data, the host key gpufabric made for it.
        (machine,) = held["access"]["machines"]
        cloud = yaml.safe_load(base64.b64decode(server.user_data))
        assert held["access"]["ssh_keys"] == cloud["ssh_authorized_keys"] == [REQUEST_KEY], cloud
        host_key = server.metadata[HOST_KEY_TAG]
        assert machine["host_public_key"] == host_key and machine["host_key_fingerprint"] == fingerprint(host_key)
        assert server.compute_host == host
        flavor = next(f for f in conn.compute.flavors(details=True) if f.name == server.flavor["original_name"])
        assert flavor.extra_specs == {"accel:device_profile": "gpufabric-a100-80gb-x2"}
        profile = next(p for p in conn.accelerator.device_profiles() if p.name == "gpufabric-a100-80gb-x2")
        assert len(profile.groups) == 2
        arqs = [a for a in conn.accelerator.accelerator_requests() if a.instance_uuid == server.id]
        assert (
            sorted((a.state, a.hostname, a.device_profile_name) for a in arqs)
            == [("Bound", host, "gpufabric-a100-80gb-x2")] * 2
        )
        handles = [a["attach_handle"] for a in result["servers"][0]["accelerators"]]
        addresses = {f"{h['domain']}:{h['bus']}:{h['device']}.{h['function']}" for h in handles}
        assert len(addresses) == 2 and addresses <= {g.address for g in gpus}, handles
        assert _pgpu_used(placement_url, host) == 2
        # nova-compute handed the bound ARQs to the virt driver (accel_info), as it would to libvirt.
        accel_info = json.loads((nova_cyborg.nova.base / "state" / "accel_info" / f"{server.id}.json").read_text())
        assert sorted(a["uuid"] for a in accel_info) == sorted(a.uuid for a in arqs)
        assert {a["attach_handle_type"] for a in accel_info} == {"PCI"}

        # Cyborg, Placement and gpufabric agree.
        report = reconcile(api, "accel")
        assert report["placement"]["mismatches"] == [], report["placement"]
        assert report["placement"]["cyborg"] == {
            "deployables": 4,
            "arqs": 2,
            "bound_arqs": 2,
            "orphan_arqs": [],
        }
        assert report["orphans"] == [] and report["missing"] == []

        # ARQs made behind gpufabric's back are orphans, reported and exported.
        made = conn.accelerator.create_accelerator_request(device_profile_name="gpufabric-a100-80gb-x2")
        outside = sorted(a.uuid for a in conn.accelerator.accelerator_requests() if not a.instance_uuid)
        try:
            assert len(outside) == 2, (made, outside)
            report = reconcile(api, "accel")
            orphans = report["placement"]["cyborg"]["orphan_arqs"]
            assert [(o["id"], o["instance_uuid"], o["action"]) for o in orphans] == [
                (u, None, "reported") for u in outside
            ]
            assert "bound to no server" in orphans[0]["message"]
            metrics = api.get("/metrics").text
            assert 'gpufabric_cyborg_orphan_arqs{backend="accel"} 2.0' in metrics
            assert 'gpufabric_cyborg_arqs{backend="accel",state="bound"} 2.0' in metrics
            assert api.get("/v1/backends/accel/reconcile").json()["placement"]["cyborg"]["orphan_arqs"] == orphans
        finally:
            for uuid in outside:
                conn.accelerator.delete_accelerator_request(uuid)

        # Release: the server is gone, so are its ARQs, and Placement holds no GPU for it.
        response = tenant.delete(f"/v1/leases/{held['id']}")
        assert response.status_code == 200 and response.json()["state"] == "released", response.text
        assert server.id not in {s.id for s in conn.compute.servers(all_projects=True)}
        assert [a.uuid for a in conn.accelerator.accelerator_requests()] == []
        assert conn.placement.get(f"/allocations/{server.id}").json()["allocations"] == {}
        assert _pgpu_used(placement_url, host) == 0
        report = reconcile(api, "accel")
        assert report["placement"]["mismatches"] == [] and report["placement"]["cyborg"]["arqs"] == 0
        print(f"cyborg two-GPU lease ready in {boot_s:.1f} s")


@NOVA_GROUP
def test_cyborg_bad_config_and_request_are_4xx(
    nova_cyborg: cyborg.CyborgDeployment, placement_url: str, controller: Controller
) -> None:
    config = cyborg_config(nova_cyborg, placement_url)
    with controller.admin() as api, controller.client(controller.tenant_token) as tenant:
        # No Cyborg endpoint with a catalog-less auth: 422 naming the field, nothing stored.
        bad = json.loads(json.dumps(config))
        del bad["auth"]["endpoints"]["accelerator"]
        response = api.post("/v1/backends", json={"name": "accel", "kind": "cyborg", "config": bad})
        assert response.status_code == 422, response.text
        assert "auth" in response.text and "endpoints.accelerator" in response.text
        assert api.get("/v1/backends/accel").status_code == 404

        response = api.post("/v1/backends", json={"name": "accel", "kind": "cyborg", "config": config})
        assert response.status_code == 201, response.text
        sync(api, "accel")
        # vGPUs are not what Cyborg's GPUs give here: refused before any claim, with the kind's reason.
        response = tenant.post(
            "/v1/leases", json={"slices": [{"kind": "vgpu", "count": 1, "model": "A100-80GB"}], "backends": ["cyborg"]}
        )
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert conn_arqs(nova_cyborg, placement_url) == []


@NOVA_GROUP
def test_cyborg_hosts_carry_their_aggregate_topology_and_boot_in_its_zone(
    nova_cyborg: cyborg.CyborgDeployment, placement_url: str, controller: Controller
) -> None:
    """Host aggregates reach the cyborg kind as on the nova kind: the sync labels the compute host with the AZ,
    network node and aggregate; a lease asking for that zone boots its server there; the labels go with the host."""
    conn = admin_connection(nova_cyborg, placement_url)
    host = nova_cyborg.nova.host
    with az_aggregate(conn, host, layer=2) as (aggregate, servers):
        name, zone = aggregate.name, aggregate.availability_zone
        with controller.admin() as api, controller.client(controller.tenant_token) as tenant:
            config = cyborg_config(nova_cyborg, placement_url)
            response = api.post("/v1/backends", json={"name": "accel", "kind": "cyborg", "config": config})
            assert response.status_code == 201, response.text
            assert sync(api, "accel")["hosts"] == [host]
            labels = api.get(f"/v1/hosts/{host}").json()["labels"]
            assert (labels["gpufabric.dev/az"], labels[LAYER_LABELS[2]], labels[AGGREGATE_LABEL]) == (zone, name, name)

            held = lease(tenant, {"slices": [{"kind": "gpu", "count": 1, "model": "A100-80GB"}], "azs": [zone]})
            assert held["state"] == "ready", held
            servers.append(held["result"]["server_id"])
            assert conn.compute.get_server(servers[0]).availability_zone == zone
            released = tenant.delete(f"/v1/leases/{held['id']}")
            assert released.status_code == 200 and released.json()["state"] == "released", released.text
            servers.clear()

            conn.compute.remove_host_from_aggregate(aggregate, host)
            assert host in sync(api, "accel")["changed"]
            labels = api.get(f"/v1/hosts/{host}").json()["labels"]
            assert not {"gpufabric.dev/az", LAYER_LABELS[2], AGGREGATE_LABEL} & set(labels), labels


def conn_arqs(deployment: cyborg.CyborgDeployment, placement_url: str) -> list[str]:
    return [a.uuid for a in admin_connection(deployment, placement_url).accelerator.accelerator_requests()]
