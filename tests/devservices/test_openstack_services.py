"""Smoke tests: the real Placement and Ironic started by devservices/openstack/ answer their REST APIs.

Plain httpx against the REST APIs (openstacksdk lives only in the services virtualenv until the OpenStack backend
brings it into the project).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devservices import openstack

pytestmark = pytest.mark.integration


def _ok(resp: httpx.Response, service: openstack.Service, *expected: int) -> httpx.Response:
    """Assert the status, and put the service's log tail in the failure message."""
    if resp.status_code not in (expected or (200,)):
        pytest.fail(
            f"{resp.request.method} {resp.request.url} -> {resp.status_code}: {resp.text[:2000]}\n"
            f"{service.log_tail(40)}",
            pytrace=False,
        )
    return resp


@pytest.fixture
def placement(placement_service: openstack.Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=placement_service.url, headers=openstack.PLACEMENT_HEADERS, timeout=30) as client:
        yield client


def test_placement_version_document(placement_url: str) -> None:
    doc = httpx.get(placement_url + "/", timeout=10).json()
    assert doc["versions"][0]["max_version"] == "1.39"


def test_placement_vgpu_provider_is_an_allocation_candidate(
    placement: httpx.Client, placement_service: openstack.Service
) -> None:
    svc = placement_service
    root, gpu = str(uuid.uuid4()), str(uuid.uuid4())
    _ok(placement.post("/resource_providers", json={"name": f"host-{root[:8]}", "uuid": root}), svc, 200)
    _ok(
        placement.post(
            "/resource_providers",
            json={"name": f"host-{root[:8]}_pgpu0", "uuid": gpu, "parent_provider_uuid": root},
        ),
        svc,
        200,
    )
    rp = _ok(placement.get(f"/resource_providers/{gpu}"), svc).json()
    assert rp["root_provider_uuid"] == root
    inv = {"resource_provider_generation": rp["generation"], "inventories": {"VGPU": {"total": 8, "max_unit": 8}}}
    rp_gen = _ok(placement.put(f"/resource_providers/{gpu}/inventories", json=inv), svc).json()[
        "resource_provider_generation"
    ]
    _ok(placement.put("/traits/CUSTOM_GPU_A100"), svc, 201, 204)
    traits = {"traits": ["CUSTOM_GPU_A100"], "resource_provider_generation": rp_gen}
    _ok(placement.put(f"/resource_providers/{gpu}/traits", json=traits), svc)

    cands = _ok(placement.get("/allocation_candidates", params={"resources": "VGPU:1"}), svc).json()
    providers = [next(iter(a["allocations"])) for a in cands["allocation_requests"]]
    assert gpu in providers
    assert cands["provider_summaries"][gpu]["resources"]["VGPU"] == {"capacity": 8, "used": 0}
    assert "CUSTOM_GPU_A100" in cands["provider_summaries"][gpu]["traits"]

    required = {"resources": "VGPU:1", "required": "CUSTOM_GPU_A100"}
    cands = _ok(placement.get("/allocation_candidates", params=required), svc).json()
    assert gpu in [next(iter(a["allocations"])) for a in cands["allocation_requests"]]


@pytest.fixture
def ironic(ironic_service: openstack.Service) -> Iterator[httpx.Client]:
    root = httpx.get(ironic_service.url + "/", timeout=10).json()
    version = root.get("default_version", {}).get("version") or openstack.IRONIC_API_VERSION
    headers = {"X-OpenStack-Ironic-API-Version": version}
    with httpx.Client(base_url=ironic_service.url, headers=headers, timeout=30) as client:
        yield client


def _wait_state(
    client: httpx.Client, node: str, target: str, service: openstack.Service, timeout: float = 30
) -> dict[str, Any]:
    """Poll every 50 ms (the SDK's ``wait=True`` polls every 2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = _ok(client.get(f"/v1/nodes/{node}"), service).json()
        if body["provision_state"] == target and body.get("target_provision_state") is None:
            return body
        if body.get("last_error") or body["provision_state"].endswith("failed"):
            pytest.fail(f"node {node}: {body['provision_state']}: {body.get('last_error')}", pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f"node {node} still {body['provision_state']} after {timeout} s\n{service.log_tail(40)}")
        time.sleep(0.05)


def _move(client: httpx.Client, node: str, verb: str, target: str, service: openstack.Service) -> float:
    t0 = time.monotonic()
    _ok(client.put(f"/v1/nodes/{node}/states/provision", json={"target": verb}), service, 202)
    _wait_state(client, node, target, service)
    return time.monotonic() - t0


def test_ironic_fake_gpu_node_becomes_available(ironic: httpx.Client, ironic_service: openstack.Service) -> None:
    svc = ironic_service
    body = {
        "name": f"gpu-node-{uuid.uuid4().hex[:8]}",
        "driver": "fake-hardware",
        "resource_class": "baremetal-gpu-h100",
        "properties": {"cpus": 96, "memory_mb": 2097152, "local_gb": 3500, "capabilities": "gpu_model:H100-80GB"},
    }
    node = _ok(ironic.post("/v1/nodes", json=body), svc, 201).json()
    assert node["provision_state"] == "enroll"
    _ok(ironic.put(f"/v1/nodes/{node['uuid']}/traits/CUSTOM_GPU_H100"), svc, 204)

    enroll_to_manageable = _move(ironic, node["uuid"], "manage", "manageable", svc)
    manageable_to_available = _move(ironic, node["uuid"], "provide", "available", svc)

    got = _ok(ironic.get(f"/v1/nodes/{node['uuid']}"), svc).json()
    assert got["provision_state"] == "available"
    assert got["resource_class"] == "baremetal-gpu-h100"
    assert got["traits"] == ["CUSTOM_GPU_H100"]
    listed = _ok(ironic.get("/v1/nodes", params={"resource_class": "baremetal-gpu-h100"}), svc).json()["nodes"]
    assert node["uuid"] in [n["uuid"] for n in listed]
    # Fake hardware moves in about 0.1 s per step; polling every 50 ms keeps the whole test well under a second.
    assert enroll_to_manageable < 10 and manageable_to_available < 10


def test_ironic_fake_deploy_and_undeploy(ironic: httpx.Client, ironic_service: openstack.Service) -> None:
    svc = ironic_service
    body = {
        "name": f"gpu-node-{uuid.uuid4().hex[:8]}",
        "driver": "fake-hardware",
        "resource_class": "baremetal-gpu-h100",
    }
    node = _ok(ironic.post("/v1/nodes", json=body), svc, 201).json()["uuid"]
    _move(ironic, node, "manage", "manageable", svc)
    _move(ironic, node, "provide", "available", svc)
    patch = [
        {"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1/image.qcow2"},
        {"op": "add", "path": "/instance_info/root_gb", "value": 10},
    ]
    _ok(ironic.patch(f"/v1/nodes/{node}", json=patch), svc)
    _move(ironic, node, "active", "active", svc)
    _move(ironic, node, "deleted", "available", svc)
    _ok(ironic.delete(f"/v1/nodes/{node}"), svc, 204)
