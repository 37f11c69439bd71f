"""End to end through the REST API with a real standalone Ironic (fake-hardware): an ``ironic`` backend registered
with the admin API, its GPU nodes synced into hosts, whole-node leases deployed with a config drive and undeployed
on release, orphans reported / released, and leases interrupted by a controller restart finished or rolled back."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from controller.api.app import create_app
from controller.auth.tokens import Role
from controller.backends.contract import ProvisionResult
from controller.backends.ironic.backend import IronicBackend
from controller.backends.openstack.family import JOB_INTERVAL_S
from controller.store.models import ApiToken, Backend
from controller.testing import ServerThread
from drivers.openstack import (
    HOST_KEY_TAG,
    LEASE_TAG,
    AgentBootstrap,
    IronicDeployRequest,
    IronicDriver,
    PollPolicy,
    fingerprint,
)
from tests.support.controller import Controller
from tests.support.helpers import assert_problem
from tests.support.openstack_cloud import FAST, wait_state

pytestmark = pytest.mark.integration

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample tenant@acme"
REQUEST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC67jpQfDsm2Ub3op5EI5dD7aI5MuHEYwK3dLFvSv0As alice@laptop"
WHOLE_H100_NODE = {"slices": [{"kind": "gpu", "count": 8, "model": "H100"}], "topology": "same-host"}


def ironic_config(ironic_url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "auth": {"method": "none", "endpoints": {"baremetal": ironic_url}},
        "region": "lab-1",
        "az": "rack-a",
        "controller_url": "https://gpufabric.test:8443",
        "image_source": "http://images.test/ubuntu-22.04-gpu.qcow2",
        "image_checksum": "0" * 32,
        "root_gb": 40,
        "poll_interval_s": FAST,
        "inline_wait_s": 30,
        "tenant_ssh_keys": {"acme": [SSH_KEY]},
        **overrides,
    }


def register(api: httpx.Client, name: str, config: dict[str, Any]) -> None:
    response = api.post("/v1/backends", json={"name": name, "kind": "ironic", "config": config})
    assert response.status_code == 201, response.text


def sync(api: httpx.Client, name: str) -> dict[str, Any]:
    response = api.post(f"/v1/backends/{name}/sync")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["errors"] == [], body
    return body


def reconcile(api: httpx.Client, name: str) -> dict[str, Any]:
    response = api.post(f"/v1/backends/{name}/reconcile")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["errors"] == [], body
    return body


def lease(tenant: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """The lease as created: 201 ready, 202 not yet, 409 lease-failed (the stored lease is in the problem)."""
    response = tenant.post("/v1/leases", json=body)
    out: dict[str, Any] = response.json()
    if response.status_code == 409 and out.get("type", "").endswith("/lease-failed"):
        failed: dict[str, Any] = out["lease"]
        return failed
    assert response.status_code == (201 if out.get("state") == "ready" else 202), response.text
    return out


def check_ssh_access(held: dict[str, Any], raw: Any) -> None:
    """The lease's access names the tenant's keys and the node's host key, and the config drive Ironic keeps for
    the node (instance_info, shown by the test policy) carries exactly those: keys in meta_data and user data, the
    host key pair in the user data's ``ssh_keys``."""
    access = held["access"]
    assert access["kind"] == "ssh" and access["ssh_keys"] == [SSH_KEY, REQUEST_KEY]
    (machine,) = access["machines"]
    assert machine["host"] == held["result"]["host"] and machine["console_url"] is None and machine["console"]
    assert machine["mac_addresses"] and machine["addresses"] == []  # fake-hardware, no network: MACs only
    host_key = raw.extra[HOST_KEY_TAG]
    assert machine["host_public_key"] == host_key and machine["host_key_fingerprint"] == fingerprint(host_key)
    assert machine["host_key_fingerprint"].startswith("SHA256:") and "PRIVATE" not in json.dumps(held)
    drive = raw.instance_info["configdrive"]
    assert sorted(drive["meta_data"]["public_keys"].values()) == sorted([SSH_KEY, REQUEST_KEY])
    cloud = yaml.safe_load(drive["user_data"])
    assert cloud["ssh_authorized_keys"] == [SSH_KEY, REQUEST_KEY] and cloud["ssh_genkeytypes"] == []
    assert cloud["ssh_keys"]["ed25519_public"] == host_key
    assert cloud["ssh_keys"]["ed25519_private"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


def bootstrap_tokens(controller: Controller, lease_id: str) -> list[ApiToken]:
    with controller.db.session() as session:
        return list(
            session.scalars(
                select(ApiToken).where(ApiToken.role == Role.bootstrap.value, ApiToken.name == f"lease:{lease_id}")
            )
        )


@pytest.fixture
def fresh_app(controller: Controller) -> Iterator[Callable[[], ServerThread]]:
    """Start another controller app on the same store (a restart: a new placement index and lease service)."""
    started: list[ServerThread] = []

    def start() -> ServerThread:
        server = ServerThread(create_app(controller.settings, db=controller.db)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_bad_ironic_and_nova_config_is_a_422_naming_the_field(controller: Controller, ironic_url: str) -> None:
    with controller.admin() as api:
        cases = [
            ("ironic", {k: v for k, v in ironic_config(ironic_url).items() if k != "image_source"}, "image_source"),
            ("ironic", ironic_config(ironic_url, auth={"method": "cloud"}), "auth"),
            ("ironic", ironic_config(ironic_url, orphans="delete"), "orphans"),
            ("ironic", ironic_config(ironic_url, poll_interval_s=0), "poll_interval_s"),
            ("ironic", ironic_config(ironic_url, topology_layers={"pod-a": 4}), "topology_layers.pod-a"),
            (
                "nova",
                {
                    "auth": {"method": "password", "auth_url": "https://keystone.test/v3", "username": "gf"},
                    "controller_url": "https://gpufabric.test",
                    "image": "img",
                },
                "auth",
            ),
            (
                "nova",
                {
                    "auth": {"method": "cloud", "cloud": "prod"},
                    "controller_url": "https://gpufabric.test",
                    "image": "img",
                    "pci_alias_models": {"a100": "Voodoo 5"},
                },
                "pci_alias_models",
            ),
            ("nova", {"auth": {"method": "cloud", "cloud": "prod"}, "image": "img"}, "controller_url"),
        ]
        for kind, config, field in cases:
            response = api.post("/v1/backends", json={"name": f"bad-{kind}", "kind": kind, "config": config})
            problem = assert_problem(response, 422, "validation-error")
            assert f"{kind} config: {field}" in problem["detail"], (field, problem)
        assert api.get("/v1/backends").json() == []
        # A good one is stored as given (the controller needs its secrets to connect) and shown masked.
        good = {
            "auth": {"method": "admin_token", "token": "s3cret", "endpoints": {"placement": "http://p.test"}},
            "controller_url": "https://gpufabric.test",
            "image": "img",
        }
        response = api.post("/v1/backends", json={"name": "cloud", "kind": "nova", "config": good})
        assert response.status_code == 201, response.text
        assert response.json()["config"]["auth"]["token"] == "***"
        assert api.get("/v1/backends/cloud").json()["config"]["auth"]["token"] == "***"
        with controller.db.session() as session:
            stored = session.scalar(select(Backend).where(Backend.name == "cloud"))
            assert stored is not None and stored.config["auth"]["token"] == "s3cret"
        assert response.json()["config"]["orphans"] == "report"
        assert_problem(api.get("/v1/backends/cloud/reconcile"), 404, "not-found")


def test_whole_node_lease_deploys_with_a_config_drive_and_release_undeploys(
    controller: Controller, ironic_url: str, ironic_conn: Any, make_node: Callable[..., Any]
) -> None:
    node = make_node()
    with controller.admin() as api, controller.client(controller.tenant_token) as tenant:
        register(api, "metal", ironic_config(ironic_url))
        report = sync(api, "metal")
        assert node.name in report["hosts"]
        host = api.get(f"/v1/hosts/{node.name}").json()
        assert host["labels"]["gpufabric.dev/ironic-node"] == node.id
        assert host["labels"]["gpufabric.dev/region"] == "lab-1" and host["labels"]["gpufabric.dev/az"] == "rack-a"
        assert host["labels"]["gpufabric.dev/resource-class"] == "baremetal-gpu-h100"
        assert len(host["devices"]) == 8 and {d["model"] for d in host["devices"]} == {"NVIDIA H100 80GB HBM3"}

        # A lease that takes only part of a node is refused before any claim, with the reason (nodes are leased
        # whole: the backend declares it, placement reads it).
        partial = tenant.post("/v1/leases", json={"slices": [{"kind": "gpu", "count": 2, "model": "H100"}]})
        problem = assert_problem(partial, 409, "no-capacity")
        capability = next(f for f in problem["filters"] if f["filter"] == "capability")
        assert "ironic nodes are leased whole: 2 of 8 GPUs asked" in capability["reasons"][0], problem  # a tenant
        assert ironic_conn.baremetal.get_node(node.id).provision_state == "available"

        # A request key that is not an OpenSSH public key is refused, naming the field; nothing is deployed.
        bad = tenant.post("/v1/leases", json={**WHOLE_H100_NODE, "ssh_public_keys": [REQUEST_KEY, "ssh-ed25519 x"]})
        assert "ssh_public_keys" in str(assert_problem(bad, 422, "validation-error"))
        assert ironic_conn.baremetal.get_node(node.id).provision_state == "available"

        t0 = time.monotonic()
        held = lease(tenant, {**WHOLE_H100_NODE, "ssh_public_keys": [REQUEST_KEY]})
        deploy_s = time.monotonic() - t0
        assert held["state"] == "ready", held
        check_ssh_access(held, ironic_conn.baremetal.get_node(node.id))
        result = held["result"]
        assert result["backend"] == "ironic" and result["backend_name"] == "metal"
        assert result["node"] == node.name and result["nodes"][0]["node_id"] == node.id
        assert result["addresses"] and result["addresses"][0].startswith("mac:52:54:00")
        raw = ironic_conn.baremetal.get_node(node.id)
        assert raw.provision_state == "active"
        assert raw.extra[LEASE_TAG] == held["id"] and raw.instance_info[LEASE_TAG] == held["id"]
        assert raw.instance_info["image_source"].endswith("gpu.qcow2") and raw.instance_info["root_gb"] == "40"
        assert "configdrive" in raw.instance_info  # Ironic masks its content in API responses
        tokens = bootstrap_tokens(controller, held["id"])
        assert len(tokens) == 1 and tokens[0].revoked_at is None

        # The node is taken: the same request is refused with the reason.
        refused = tenant.post("/v1/leases", json=WHOLE_H100_NODE)
        assert refused.status_code == 409, refused.text

        t0 = time.monotonic()
        released = tenant.delete(f"/v1/leases/{held['id']}")
        print(
            f"8 x H100 lease on Ironic ready in {deploy_s:.1f} s, released (undeploy) in {time.monotonic() - t0:.1f} s"
        )
        assert released.status_code == 200 and released.json()["state"] == "released", released.text
        raw = ironic_conn.baremetal.get_node(node.id)
        assert raw.provision_state == "available" and LEASE_TAG not in (raw.extra or {})
        assert HOST_KEY_TAG not in (raw.extra or {}) and released.json()["access"] is None
        assert tenant.get(f"/v1/leases/{held['id']}").json()["access"] is None
        assert all(t.revoked_at is not None for t in bootstrap_tokens(controller, held["id"]))

        # An orphan: a node deployed with gpufabric's tag for a lease gpufabric does not know.
        driver = IronicDriver(ironic_conn)
        ghost = make_node()
        driver.provision(
            IronicDeployRequest(
                lease_id="ghost-lease",
                node=ghost.id,
                image_source="http://images.test/x.qcow2",
                bootstrap=AgentBootstrap(controller_url="https://elsewhere.test", bootstrap_token="t"),
                poll=PollPolicy(interval_s=FAST, timeout_s=30),
            )
        )
        report = reconcile(api, "metal")
        orphans = [o for o in report["orphans"] if o["id"] == ghost.id]
        assert orphans and orphans[0]["lease_id"] == "ghost-lease" and orphans[0]["action"] == "reported"
        assert orphans[0]["lease_state"] is None and "unknown to gpufabric" in orphans[0]["message"]
        assert ironic_conn.baremetal.get_node(ghost.id).provision_state == "active"  # report only (the default)
        assert report["placement"]["checked"] is False and report["missing"] == []
        # The active ghost node is not placeable; the released node is again.
        assert ghost.name in report["sync"]["unreachable"] and node.name not in report["sync"]["unreachable"]
        assert api.get("/v1/backends/metal/reconcile").json()["orphans"] == report["orphans"]
        metrics = api.get("/metrics").text
        assert 'gpufabric_openstack_orphans{action="reported",backend="metal",resource="ironic_node"} 1.0' in metrics

    # The periodic job (leader only, every 15 s) reconciles each backend whose report is older than its
    # reconcile_interval_s (60 s by default): not yet, an hour from now yes.
    hook = controller.server.app.state.hooks.hooks["backend-sync:ironic"]
    assert hook.kind == "backend-sync" and hook.interval_s == JOB_INTERVAL_S
    leases = controller.server.app.state.leases
    ironic = controller.server.app.state.backends.get("ironic")
    assert ironic.reconcile_due(leases) == []
    later = ironic.reconcile_due(leases, now=datetime.now(UTC) + timedelta(hours=1))
    assert [r["backend"] for r in later] == ["metal"] and later[0]["orphans"][0]["id"] == ghost.id


def test_leases_interrupted_by_a_restart_are_finished_or_rolled_back(
    controller: Controller,
    ironic_url: str,
    ironic_conn: Any,
    make_node: Callable[..., Any],
    fresh_app: Callable[[], ServerThread],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = make_node(), make_node()
    # inline_wait_s 0: POST /v1/leases answers as soon as the deploy has started; the reconcile finishes it.
    config = ironic_config(ironic_url, inline_wait_s=0, orphans="release")

    # The case under test is a controller that stopped before it saw its deploys finish. Even with no inline
    # wait, fake-hardware deploys can finish before the one look the provisioner takes (a loaded machine), and
    # the lease is then ready at once: so this controller starts each deploy for real and does not look.
    def start_deploys_only(
        backend: IronicBackend, driver: Any, cfg: Any, name: str, info: Any, nodes: dict[str, str]
    ) -> ProvisionResult:
        for host, node_id in nodes.items():
            backend._step(driver, cfg, name, info, host, node_id)
        return ProvisionResult("pending", message="Ironic deploy in progress: " + ", ".join(sorted(nodes)))

    real_deploy = IronicBackend._deploy
    monkeypatch.setattr(IronicBackend, "_deploy", start_deploys_only)
    with controller.admin() as api, controller.client(controller.tenant_token) as tenant:
        register(api, "metal", config)
        sync(api, "metal")
        a = lease(tenant, WHOLE_H100_NODE)
        b = lease(tenant, WHOLE_H100_NODE)
    monkeypatch.setattr(IronicBackend, "_deploy", real_deploy)  # the restarted controller provisions for real
    assert a["state"] == b["state"] == "provisioning", (a, b)
    assert "Ironic deploy in progress" in a["reason"]
    nodes = {a["allocations"][0]["host"]: a, b["allocations"][0]["host"]: b}
    assert set(nodes) == {first.name, second.name}
    node_of = {n.name: n for n in (first, second)}
    a_node, b_node = node_of[a["allocations"][0]["host"]], node_of[b["allocations"][0]["host"]]

    # The controller stops. Meanwhile both deploys finish, and an admin puts b's node into maintenance.
    controller.server.stop()
    wait_state(ironic_conn, a_node.id, "active")
    wait_state(ironic_conn, b_node.id, "active")
    ironic_conn.baremetal.set_node_maintenance(b_node.id, reason="fan failure")

    restarted = fresh_app()
    admin = httpx.Client(
        base_url=restarted.url, headers={"Authorization": f"Bearer {controller.admin_token}"}, timeout=60
    )
    with admin:
        report = reconcile(admin, "metal")
        outcome = {i["lease_id"]: i for i in report["interrupted"]}
        assert outcome[a["id"]]["after"] == "ready", outcome
        assert outcome[b["id"]]["after"] == "failed" and "fan failure" in outcome[b["id"]]["message"], outcome
        a_now = admin.get(f"/v1/leases/{a['id']}").json()
        assert a_now["state"] == "ready" and a_now["result"]["node"] == a_node.name
        assert a_now["result"]["nodes"][0]["node_id"] == a_node.id
        # b's node was an orphan of a failed lease: released by the policy (out of maintenance, undeployed).
        orphan = next(o for o in report["orphans"] if o["id"] == b_node.id)
        assert orphan["lease_state"] == "failed" and orphan["action"] == "released", orphan
        raw = ironic_conn.baremetal.get_node(b_node.id)
        assert raw.provision_state == "available" and not raw.is_maintenance and LEASE_TAG not in (raw.extra or {})
        # Nothing leaked: only the finished lease's node is tagged.
        assert [(t.id, t.lease_id) for t in IronicDriver(ironic_conn).tagged()] == [(a_node.id, a["id"])]
        assert all(t.revoked_at is not None for t in bootstrap_tokens(controller, b["id"]))

        # Someone undeploys a's node behind gpufabric's back: the lease is reported as missing its node.
        IronicDriver(ironic_conn).release(a_node.id, PollPolicy(interval_s=FAST, timeout_s=30), lease_id=a["id"])
        report = reconcile(admin, "metal")
        assert [(m["lease_id"], m["kind"], m["expected_id"]) for m in report["missing"]] == [
            (a["id"], "ironic_node", a_node.id)
        ]
        response = admin.delete(f"/v1/leases/{a['id']}")
        assert response.status_code == 200 and response.json()["state"] == "released", response.text
        assert ironic_conn.baremetal.get_node(a_node.id).provision_state == "available"
        assert IronicDriver(ironic_conn).tagged() == []
        assert reconcile(admin, "metal")["missing"] == []
