"""Synthetic inventories and agent registration through the real API (no NVML needed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from drivers.contract.inventory import Gpu, GpuHealth, HostIdentity, Inventory, MigState, PciInfo
from drivers.contract.protocol import InventoryReport, RegisterRequest


def synthetic_inventory(
    hostname: str, gpus: int = 2, model: str = "NVIDIA H100 80GB HBM3", health: str = "healthy"
) -> Inventory:
    return Inventory(
        host=HostIdentity(hostname=hostname, agent_version="test", simulated=True),
        driver_version="570.00",
        cuda_driver_version="12.8",
        gpus=[
            Gpu(
                index=i,
                uuid=f"GPU-{hostname}-{i}",
                name=model,
                pci=PciInfo(bus_id=f"00000000:{i + 10:02X}:00.0", device_id="0x233010DE"),
                architecture="hopper",
                compute_capability="9.0",
                memory_total_mib=81559,
                mig=MigState(capable=True, current=False, state="disabled"),
                health=GpuHealth(state=health),  # type: ignore[arg-type]
            )
            for i in range(gpus)
        ],
    )


def register(client: httpx.Client, bootstrap_token: str, hostname: str) -> str:
    body = RegisterRequest(hostname=hostname, agent_version="test").model_dump(mode="json")
    response = client.post("/v1/agents/register", json=body, headers={"Authorization": f"Bearer {bootstrap_token}"})
    assert response.status_code == 201, response.text
    credential: str = response.json()["credential"]
    return credential


def report(client: httpx.Client, credential: str, inventory: Inventory, generation: int) -> httpx.Response:
    body: dict[str, Any] = InventoryReport(generation=generation, inventory=inventory).model_dump(mode="json")
    return client.put(
        f"/v1/agents/{inventory.host.hostname}/inventory", json=body, headers={"Authorization": f"Bearer {credential}"}
    )


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == f"https://gpufabric.dev/problems/{slug}", body
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["instance"]
    return body


@contextmanager
def static_backend_replaced(app: Any, fake: Callable[[Any], Any]) -> Iterator[None]:
    """Provision leases of the app's static hosts with ``fake(db)`` (a fault-injecting StaticBackend on the app's
    database) inside the block; the app's own static backend is served again afterwards, whatever happened."""
    backends = app.state.backends
    saved = backends.add(fake(backends.get("static").db))
    try:
        yield
    finally:
        backends.add(saved)
