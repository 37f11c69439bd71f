"""Fixtures: openstacksdk connections (through ``drivers.openstack.connect``) to the real services of
tests/support/openstack_services.py, and helpers that put Ironic fake-hardware nodes into a known state."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.state import save_reported_inventory
from controller.backends.openstack.topology import LAYER_METADATA_KEY
from devservices import cyborg, openstack
from drivers.contract.inventory import Inventory
from drivers.openstack import IronicDriver, NovaDriver, OpenStackAuth, PlacementReader, PollPolicy, connect
from tests.support.openstack_services import REQUIRE_ENV, _required

# Tests that use Nova carry this mark: with ``--dist loadgroup`` (pyproject addopts) they all run on one xdist worker,
# so Nova (about a minute to start, one deployment per machine at a time) starts once per run.
NOVA_GROUP = pytest.mark.xdist_group("nova")

FAST = 0.05  # seconds between Ironic state polls in tests (fake-hardware transitions take 0.1-0.3 s)


@pytest.fixture(scope="session")
def ironic_conn(ironic_url: str) -> Any:
    return connect(OpenStackAuth(method="none", endpoints={"baremetal": ironic_url}))


@pytest.fixture(scope="session")
def placement_conn(placement_url: str) -> Any:
    return connect(
        OpenStackAuth(
            method="admin_token",
            token="admin",
            endpoints={"placement": placement_url},
            api_versions={"placement": "1.39"},
        )
    )


@pytest.fixture
def ironic_driver(ironic_conn: Any) -> IronicDriver:
    return IronicDriver(ironic_conn)


@pytest.fixture
def placement_reader(placement_conn: Any) -> PlacementReader:
    return PlacementReader(placement_conn)


def wait_state(conn: Any, node_id: str, state: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        node = conn.baremetal.get_node(node_id)
        if node.provision_state == state:
            return node
        if time.monotonic() > deadline:
            raise AssertionError(f"node {node_id} stuck in {node.provision_state} (wanted {state}): {node.last_error}")
        time.sleep(FAST)


@pytest.fixture
def make_node(ironic_conn: Any, ironic_service: openstack.Service) -> Iterator[Callable[..., Any]]:
    """Create an ``available`` fake-hardware node; every node made is deleted afterwards (whatever its state)."""
    made: list[str] = []

    def make(
        resource_class: str = "baremetal-gpu-h100",
        traits: tuple[str, ...] = ("CUSTOM_GPU_H100",),
        properties: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> Any:
        bm = ironic_conn.baremetal
        node = bm.create_node(
            driver="fake-hardware",
            name=name or f"gpu-{uuid.uuid4().hex[:8]}",
            resource_class=resource_class,
            properties=properties
            if properties is not None
            else {"cpus": 96, "memory_mb": 2048000, "local_gb": 3500, "capabilities": "gpu_model:H100,gpu_count:8"},
        )
        made.append(node.id)
        if traits:
            bm.set_node_traits(node, list(traits))
        bm.set_node_provision_state(node, "manage")
        wait_state(ironic_conn, node.id, "manageable")
        bm.set_node_provision_state(node, "provide")
        wait_state(ironic_conn, node.id, "available")
        bm.create_port(node_id=node.id, address=f"52:54:00:{uuid.uuid4().hex[:2]}:{uuid.uuid4().hex[:2]}:01")
        return bm.get_node(node.id)

    yield make
    bm = ironic_conn.baremetal
    for node_id in made:
        try:
            node = bm.get_node(node_id)
            if node.is_maintenance:
                bm.unset_node_maintenance(node_id)
            if node.provision_state in ("deploying", "wait call-back"):
                node = _settle(ironic_conn, node_id)
            if node.provision_state in ("active", "deploy failed"):
                bm.set_node_provision_state(node_id, "deleted")
                node = wait_state(ironic_conn, node_id, "available")
            if node.provision_state == "available":
                bm.set_node_provision_state(node_id, "manage")
                wait_state(ironic_conn, node_id, "manageable")
            bm.delete_node(node_id)
        except Exception as e:  # cleanup must not hide the test's own result
            print(f"cleanup of node {node_id} failed: {e}\n{ironic_service.log_tail(20)}")


def _settle(conn: Any, node_id: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        node = conn.baremetal.get_node(node_id)
        if node.provision_state not in ("deploying", "wait call-back") or time.monotonic() > deadline:
            return node
        time.sleep(FAST)


# The GPUs cyborg-agent reports: the simulator's four A100-SXM4-80GB, as the gpufabric agent keeps its last report.
CYBORG_SIM_SPEC = "a100-80gb-4x"


def agent_inventory_file(directory: Path, spec: str = CYBORG_SIM_SPEC) -> Path:
    """The inventory the gpufabric agent keeps beside its state (``inventory.json``), made by the agent's own
    discovery on the NVML simulator (``gpufabric-agent inventory --sim SPEC --json``)."""
    proc = subprocess.run(
        [sys.executable, "-c", "from agent.cli import main; main()", "inventory", "--sim", spec, "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 0, proc.stderr
    return save_reported_inventory(
        directory / "agent.json", Inventory.model_validate_json(proc.stdout).model_dump_json()
    )


@pytest.fixture(scope="session")
def nova_cyborg(
    placement_service: openstack.Service, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[cyborg.CyborgDeployment]:
    """A real Nova 34 (API, conductor, scheduler, a compute with the fake GPU driver) and a real Cyborg 17 (API,
    conductor, agent with gpufabric's driver reading the agent's inventory) on this session's Placement. One
    deployment for every Nova and Cyborg test of the run (Nova's machine-wide lock)."""
    try:
        venv = openstack.create_nova_venv()
    except openstack.VenvBuildError as e:
        if e.offline and not _required():
            pytest.skip(f"Nova virtualenv unavailable (no network?); set {REQUIRE_ENV}=1 to make this a failure")
        pytest.fail(str(e), pytrace=False)
    base = tmp_path_factory.mktemp("nova")
    inventory = agent_inventory_file(tmp_path_factory.mktemp("gpufabric-agent"))
    try:
        deployment = cyborg.start_nova_with_cyborg(base, placement_service.url, inventory, venv)
    except openstack.BackingServiceUnavailable as e:
        if not _required():
            pytest.skip(f"{e}; set {REQUIRE_ENV}=1 to make this a failure")
        pytest.fail(f"{e} ({REQUIRE_ENV}={os.environ.get(REQUIRE_ENV)!r})", pytrace=False)
    except openstack.ServiceError as e:
        pytest.fail(f"Nova and Cyborg did not start: {e}", pytrace=False)
    print(f"nova + cyborg started in {deployment.started_in_s:.1f} s: {deployment.timings}")
    try:
        yield deployment
    finally:
        cyborg.stop_nova_with_cyborg(deployment)


@pytest.fixture(scope="session")
def nova(nova_cyborg: cyborg.CyborgDeployment) -> openstack.NovaDeployment:
    """The session's Nova (Cyborg runs beside it; tests of the nova kind ignore Cyborg's GPUs)."""
    return nova_cyborg.nova


def nova_admin_connection(nova: openstack.NovaDeployment, placement_url: str) -> Any:
    """An admin connection to Nova and its Placement (so a server's release can wait until Placement freed it)."""
    return connect(
        OpenStackAuth(
            method="admin_token",
            token="admin",
            endpoints={"compute": nova.url, "placement": placement_url},
            api_versions={"placement": "1.39"},
        )
    )


def ensure_flavor(conn: Any, name: str, specs: dict[str, str]) -> Any:
    """The flavor ``name`` (made with ``specs`` if missing): Nova tests share one deployment per run."""
    for flavor in conn.compute.flavors(details=True, is_public=None):
        if flavor.name == name:
            return flavor
    flavor = conn.compute.create_flavor(name=name, vcpus=1, ram=512, disk=1)
    conn.compute.create_flavor_extra_specs(flavor, specs)
    return flavor


@contextlib.contextmanager
def az_aggregate(conn: Any, host: str, layer: int) -> Iterator[tuple[Any, list[str]]]:
    """A fresh host aggregate ``rack-<random>`` with its own AZ ``az-<name>`` and network-node ``layer`` metadata,
    holding ``host``; yields it and a list the test adds its server ids to. On the way out, whatever happened, the
    servers are deleted (a host with servers cannot leave its AZ), the host leaves and the aggregate is deleted: a
    host left in an AZ aggregate would change where the run's other Nova tests boot."""
    name = f"rack-{uuid.uuid4().hex[:6]}"
    aggregate = conn.compute.create_aggregate(name=name, availability_zone=f"az-{name}")
    servers: list[str] = []
    try:
        conn.compute.set_aggregate_metadata(aggregate, {LAYER_METADATA_KEY: str(layer)})
        conn.compute.add_host_to_aggregate(aggregate, host)
        yield aggregate, servers
    finally:
        for server_id in servers:
            NovaDriver(conn).release(server_id, PollPolicy(interval_s=0.2, timeout_s=180))
        fresh = conn.compute.get_aggregate(aggregate.id)
        if host in (fresh.hosts or []):
            conn.compute.remove_host_from_aggregate(fresh, host)
        conn.compute.delete_aggregate(aggregate.id)


# The controller fixtures (SQLite, and PostgreSQL with GPUFABRIC_TEST_POSTGRES_URL) for the end-to-end lease tests.
from tests.support.controller import controller, database_url, migrated_db  # noqa: E402, F401
