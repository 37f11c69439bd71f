"""Agent identity: the bootstrap token registers new hosts only, a host is re-registered with its own credential or
after an admin's reset, a takeover attempt is refused (409) and audited with nothing changed, and a GPU UUID that
belongs to another host is refused (409 naming both) with nothing stored. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import select
from typer.testing import CliRunner

from controller.cli import app as cli
from controller.store.models import AgentCredential, AuditEntry, Device, Host, Lease
from drivers.contract.inventory import Inventory
from drivers.contract.protocol import RegisterRequest
from tests.support.controller import Controller
from tests.support.helpers import assert_problem, register, report, synthetic_inventory

GPU1 = {"slices": [{"kind": "gpu", "count": 1, "model": "H100"}]}


def _register(client: httpx.Client, token: str, hostname: str, **fields: Any) -> httpx.Response:
    body = RegisterRequest(hostname=hostname, agent_version="test", **fields).model_dump(mode="json")
    return client.post("/v1/agents/register", json=body, headers={"Authorization": f"Bearer {token}"})


def _whoami(client: httpx.Client, token: str) -> int:
    return client.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"}).status_code


def _snapshot(controller: Controller) -> dict[str, Any]:
    """What a refused request must leave as it was: hosts, credentials, devices, leases."""
    with controller.db.session() as session:
        return {
            "hosts": sorted(
                (h.hostname, h.status, json.dumps(h.labels, sort_keys=True), h.inventory_hash, h.inventory_generation)
                for h in session.scalars(select(Host))
            ),
            "credentials": sorted(
                (c.key_id, c.host_id, c.revoked_at is None) for c in session.scalars(select(AgentCredential))
            ),
            "devices": sorted((d.uuid, d.host_id) for d in session.scalars(select(Device))),
            "leases": sorted((lease.id, lease.state) for lease in session.scalars(select(Lease))),
        }


def _audit(controller: Controller, action: str) -> list[AuditEntry]:
    with controller.db.session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def _inventory_without(inv: Inventory, uuid: str) -> Inventory:
    return inv.model_copy(update={"gpus": [g for g in inv.gpus if g.uuid != uuid]})


def test_the_bootstrap_token_cannot_take_over_a_registered_host(controller: Controller) -> None:
    """The reproduction: with the fleet-wide bootstrap token a stranger re-registered a live host, locked its agent
    out and reported 0 GPUs and its own labels while a tenant's lease there still said ready."""
    with controller.client() as client, controller.client(controller.tenant_token) as tenant:
        real = register(client, controller.bootstrap_token, "gpu-a")
        assert report(client, real, synthetic_inventory("gpu-a", gpus=2), 1).status_code == 200
        lease = tenant.post("/v1/leases", json=GPU1)
        assert lease.status_code == 201 and lease.json()["state"] == "ready", lease.text
        before = _snapshot(controller)

        refused = _register(client, controller.bootstrap_token, "gpu-a", labels={"rack": "evil"})
        body = assert_problem(refused, 409, "host-registered")
        assert body["hostname"] == "gpu-a" and "reset-credential gpu-a" in body["detail"]
        assert _snapshot(controller) == before  # no credential issued or revoked, labels and devices as they were

        # The real agent is not locked out, the stranger has nothing to report with, the lease is still good.
        assert report(client, real, synthetic_inventory("gpu-a", gpus=2), 2).status_code == 200
        assert tenant.get(f"/v1/leases/{lease.json()['id']}").json()["state"] == "ready"
    failed = [e for e in _audit(controller, "agent.register") if e.result == "failed"]
    assert len(failed) == 1
    assert failed[0].target == "gpu-a" and failed[0].role == "agent-bootstrap"
    assert failed[0].detail["refused"] == "takeover" and "already registered" in failed[0].detail["error"]


def test_an_agent_re_registers_with_its_own_credential_only(controller: Controller) -> None:
    with controller.client() as client:
        first = register(client, controller.bootstrap_token, "gpu-a")
        other = register(client, controller.bootstrap_token, "gpu-b")
        before = _snapshot(controller)
        # Another host's credential may not register this one.
        assert_problem(_register(client, other, "gpu-a"), 403, "forbidden")
        assert _snapshot(controller) == before
        # Its own credential rotates it: the new one works, the old one is refused.
        rotated = _register(client, first, "gpu-a", labels={"zone": "b"})
        assert rotated.status_code == 201, rotated.text
        second = rotated.json()["credential"]
        assert second != first
        assert _whoami(client, second) == 200
        assert _whoami(client, first) == 401
        with controller.db.session() as session:
            host = session.scalar(select(Host).where(Host.hostname == "gpu-a"))
            assert host is not None and host.labels == {"zone": "b"}


def test_an_admin_reset_opens_the_host_to_one_bootstrap_registration(controller: Controller) -> None:
    with controller.client() as client, controller.admin() as api:
        old = register(client, controller.bootstrap_token, "gpu-a")
        assert report(client, old, synthetic_inventory("gpu-a", gpus=2), 1).status_code == 200

        reset = api.post("/v1/hosts/gpu-a/credential:reset", json={"reason": "re-imaged"})
        assert reset.status_code == 200, reset.text
        assert reset.json()["hostname"] == "gpu-a" and reset.json()["revoked"] == 1
        assert _whoami(client, old) == 401  # revoked at once

        taken = _register(client, controller.bootstrap_token, "gpu-a")
        assert taken.status_code == 201, taken.text
        new = taken.json()["credential"]
        assert taken.json()["generation"] == 1  # the host keeps its inventory, devices and leases
        assert _heartbeat_ok(client, "gpu-a", new)
        # One registration only: the host has a live credential again.
        assert_problem(_register(client, controller.bootstrap_token, "gpu-a"), 409, "host-registered")
        # An admin may always register a host (and hand the credential to its agent).
        by_admin = _register(client, controller.admin_token, "gpu-a")
        assert by_admin.status_code == 201
        assert _whoami(client, new) == 401
    entries = _audit(controller, "host.reset-credential")
    assert [(e.target, e.result, e.detail["revoked"], e.detail["reason"]) for e in entries] == [
        ("gpu-a", "ok", 1, "re-imaged")
    ]


def _heartbeat_ok(client: httpx.Client, hostname: str, credential: str) -> bool:
    from drivers.contract.protocol import Heartbeat

    body = Heartbeat(generation=1).model_dump(mode="json")
    response = client.post(
        f"/v1/agents/{hostname}/heartbeat", json=body, headers={"Authorization": f"Bearer {credential}"}
    )
    return response.status_code == 200


def test_reset_is_for_admins_and_known_hosts(controller: Controller) -> None:
    with controller.client() as client, controller.admin() as api:
        credential = register(client, controller.bootstrap_token, "gpu-a")
        before = _snapshot(controller)
        assert_problem(api.post("/v1/hosts/nope/credential:reset"), 404, "not-found")
        for token in (controller.tenant_token, controller.bootstrap_token, credential):
            assert_problem(
                client.post("/v1/hosts/gpu-a/credential:reset", headers={"Authorization": f"Bearer {token}"}),
                403,
                "forbidden",
            )
        assert_problem(client.post("/v1/hosts/gpu-a/credential:reset"), 401, "unauthorized")
        assert _snapshot(controller) == before


def test_cli_resets_a_host_credential(controller: Controller) -> None:
    runner = CliRunner()
    with controller.client() as client:
        old = register(client, controller.bootstrap_token, "gpu-a")
        args = ["host", "reset-credential", "gpu-a", "--controller", controller.url, "--token", controller.admin_token]
        result = runner.invoke(cli, [*args, "--reason", "moved rack", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["revoked"] == 1
        assert _whoami(client, old) == 401
        assert _register(client, controller.bootstrap_token, "gpu-a").status_code == 201
        missing = runner.invoke(
            cli, ["host", "reset-credential", "nope", "--controller", controller.url, "--token", controller.admin_token]
        )
        assert missing.exit_code == 2 and "404" in missing.output
        refused = runner.invoke(
            cli,
            ["host", "reset-credential", "gpu-a", "--controller", controller.url, "--token", controller.tenant_token],
        )
        assert refused.exit_code == 2 and "403" in refused.output


def test_a_gpu_of_another_host_is_refused_naming_both(controller: Controller) -> None:
    """The reproduction: an agent reporting another host's GPU UUID got a 500 (IntegrityError)."""
    with controller.client() as client:
        a = register(client, controller.bootstrap_token, "gpu-a")
        b = register(client, controller.bootstrap_token, "gpu-b")
        inv_a = synthetic_inventory("gpu-a", gpus=2)
        assert report(client, a, inv_a, 1).status_code == 200
        assert report(client, b, synthetic_inventory("gpu-b", gpus=1), 1).status_code == 200
        before = _snapshot(controller)

        stolen = synthetic_inventory("gpu-b", gpus=1)
        stolen.gpus.append(inv_a.gpus[1].model_copy(update={"index": 1}))
        for generation in (2, 3):  # and again: a refused report is never taken into the reply cache
            body = assert_problem(report(client, b, stolen, generation), 409, "device-conflict")
            assert body["uuid"] == "GPU-gpu-a-1" and body["hosts"] == ["gpu-b", "gpu-a"]
            assert "gpu-a" in body["detail"] and "gpu-b" in body["detail"]
            assert _snapshot(controller) == before

        twice = synthetic_inventory("gpu-b", gpus=1)
        twice.gpus.append(twice.gpus[0].model_copy(update={"index": 1}))
        body = assert_problem(report(client, b, twice, 4), 409, "device-conflict")
        assert body["hosts"] == ["gpu-b"] and "twice" in body["detail"]
        assert _snapshot(controller) == before
        # Both agents carry on.
        assert report(client, a, inv_a, 2).status_code == 200
        assert report(client, b, synthetic_inventory("gpu-b", gpus=1), 5).status_code == 200


def test_a_gpu_moves_once_its_first_host_lets_go(controller: Controller) -> None:
    """docs/operations.md: the old host's agent reports without the GPU (or an admin forgets the old host); then
    the new host's report takes it."""
    with controller.client() as client, controller.admin() as api:
        a = register(client, controller.bootstrap_token, "gpu-a")
        b = register(client, controller.bootstrap_token, "gpu-b")
        inv_a = synthetic_inventory("gpu-a", gpus=2)
        assert report(client, a, inv_a, 1).status_code == 200
        moving = inv_a.gpus[1]
        inv_b = synthetic_inventory("gpu-b", gpus=1)
        inv_b.gpus.append(moving.model_copy(update={"index": 1}))
        assert_problem(report(client, b, inv_b, 1), 409, "device-conflict")
        assert report(client, a, _inventory_without(inv_a, moving.uuid), 2).status_code == 200
        assert report(client, b, inv_b, 2).status_code == 200
        assert api.get(f"/v1/devices/{moving.uuid}").json()["host"] == "gpu-b"


def test_renaming_a_host(controller: Controller) -> None:
    """docs/operations.md: the agent under its new name registers as a new host; its GPUs are refused until an admin
    forgets the old name."""
    with controller.client() as client, controller.admin() as api:
        old = register(client, controller.bootstrap_token, "old-name")
        assert report(client, old, synthetic_inventory("old-name", gpus=2), 1).status_code == 200
        gpus = synthetic_inventory("old-name", gpus=2).gpus
        renamed = synthetic_inventory("new-name", gpus=0).model_copy(update={"gpus": gpus})
        new = register(client, controller.bootstrap_token, "new-name")
        body = assert_problem(report(client, new, renamed, 1), 409, "device-conflict")
        assert body["hosts"] == ["new-name", "old-name"]
        assert api.delete("/v1/hosts/old-name").status_code == 204
        assert report(client, new, renamed, 2).status_code == 200
        assert {d["uuid"] for d in api.get("/v1/devices", params={"host": "new-name"}).json()} == {g.uuid for g in gpus}
