"""The named state machines through the REST API, as admins and agents hit them: every allowed move of the
admin-state and task-status tables works, moves outside them are 409 ``illegal-transition`` naming the current
state and the allowed moves."""

from __future__ import annotations

from typing import Any

import httpx

from controller.fleet.states import ADMIN_STATE, TASK_STATUS
from tests.support.controller import Controller
from tests.support.helpers import assert_problem, register, report, synthetic_inventory

ADMIN_ACTION = {"active": "undrain", "drained": "drain", "quarantined": "quarantine"}


def _admin_state_moves(api: httpx.Client, base: str) -> None:
    """Every allowed move of the admin-state table, made through ``{base}/{action}``."""
    for (source, target), event in ADMIN_STATE.moves.items():
        assert event == ADMIN_ACTION[target]
        api.post(f"{base}/undrain")
        if source != "active":
            assert api.post(f"{base}/{ADMIN_ACTION[source]}").json()["admin_state"] == source
        moved = api.post(f"{base}/{event}", json={"reason": f"{source} -> {target}"})
        assert moved.status_code == 200, (source, target, moved.text)
        assert moved.json()["admin_state"] == target


def _refused(response: httpx.Response, machine: str, current: str, target: str) -> dict[str, Any]:
    body = assert_problem(response, 409, "illegal-transition")
    assert (body["machine"], body["current"], body["target"]) == (machine, current, target)
    assert f"{current} -> {target}" in body["detail"]
    return body


def test_host_and_gpu_admin_state_follow_the_table(controller: Controller) -> None:
    with controller.client() as client:
        credential = register(client, controller.bootstrap_token, "sm-host")
        assert report(client, credential, synthetic_inventory("sm-host", 2), 1).status_code == 200
    with controller.admin() as api:
        uuid = api.get("/v1/devices", params={"host": "sm-host"}).json()[0]["uuid"]
        for base in ("/v1/hosts/sm-host", f"/v1/devices/{uuid}"):
            _admin_state_moves(api, base)
            # A quarantined host (or GPU) is not drained: that would forget why it is out. Undrain it first.
            api.post(f"{base}/quarantine", json={"reason": "xid 79"})
            body = _refused(api.post(f"{base}/drain"), "admin state", "quarantined", "drained")
            assert body["allowed"] == [
                {"event": "undrain", "to": "active"},
                {"event": "quarantine", "to": "quarantined"},
            ]
            assert api.get(base).json()["admin_state"] == "quarantined"
        latest = api.get("/v1/audit", params={"action": "host.drain"}).json()[0]  # newest first
        assert latest["result"] == "failed" and "quarantined -> drained" in latest["detail"]["error"]


def test_task_status_follows_the_table(controller: Controller) -> None:
    with controller.client() as client, controller.admin() as api:
        credential = register(client, controller.bootstrap_token, "sm-tasks")
        auth = {"Authorization": f"Bearer {credential}"}

        def status(task_id: str) -> str:
            tasks = {t["id"]: t["status"] for t in api.get("/v1/hosts/sm-tasks/tasks").json()}
            return tasks[task_id]

        def move(task_id: str, target: str) -> httpx.Response:
            if target == "cancelled":
                return api.post(f"/v1/hosts/sm-tasks/tasks/{task_id}/cancel")
            return client.post(f"/v1/agents/sm-tasks/tasks/{task_id}/result", json={"status": target}, headers=auth)

        for source, target in TASK_STATUS.moves:
            task = api.post("/v1/hosts/sm-tasks/tasks", json={"kind": "ping", "params": {}}).json()
            assert task["status"] == "pending"
            if source == "running":
                assert move(task["id"], "running").status_code == 200
            moved = move(task["id"], target)
            assert moved.status_code == 200, (source, target, moved.text)
            assert status(task["id"]) == target

        done = api.post("/v1/hosts/sm-tasks/tasks", json={"kind": "ping", "params": {}}).json()
        assert move(done["id"], "succeeded").status_code == 200
        # A late or repeated result for a finished task, a cancel of a finished one: nothing may move it.
        assert _refused(move(done["id"], "failed"), "task status", "succeeded", "failed")["allowed"] == []
        _refused(move(done["id"], "running"), "task status", "succeeded", "running")
        _refused(move(done["id"], "cancelled"), "task status", "succeeded", "cancelled")

        cancelled = api.post("/v1/hosts/sm-tasks/tasks", json={"kind": "ping", "params": {}}).json()
        assert move(cancelled["id"], "cancelled").json()["message"].startswith("cancelled by admin:")
        # A cancelled task is no longer delivered, and the agent's result for it is refused.
        reply = report(client, credential, synthetic_inventory("sm-tasks"), 1).json()
        assert cancelled["id"] not in [t["id"] for t in reply["tasks"]]
        _refused(move(cancelled["id"], "succeeded"), "task status", "cancelled", "succeeded")
        assert status(cancelled["id"]) == "cancelled"
        assert_problem(api.post("/v1/hosts/sm-tasks/tasks/nope/cancel"), 404, "not-found")


def test_a_task_is_cancelled_only_through_its_own_host(controller: Controller) -> None:
    with controller.client() as client, controller.admin() as api:
        register(client, controller.bootstrap_token, "sm-a")
        register(client, controller.bootstrap_token, "sm-b")
        task = api.post("/v1/hosts/sm-a/tasks", json={"kind": "ping", "params": {}}).json()
        assert_problem(api.post(f"/v1/hosts/sm-b/tasks/{task['id']}/cancel"), 404, "not-found")
        assert api.get("/v1/hosts/sm-a/tasks").json()[0]["status"] == "pending"


def test_a_lease_move_its_table_forbids_is_a_409_naming_where_it_is() -> None:
    """The lease table's own refusal (a lease that moved meanwhile) answers like the other machines'."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from controller.api.problems import install_problem_handlers
    from controller.leases.state import check

    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/move")
    def move() -> None:
        check("released", "ready", "lease-1")

    body = assert_problem(TestClient(app).post("/move"), 409, "illegal-transition")
    assert body["machine"] == "lease" and body["lease"] == "lease-1"
    assert body["current"] == "released" and body["target"] == "ready" and body["allowed"] == []
    assert "released -> ready is not allowed" in body["detail"]
