"""The agent protocol through real HTTP with synthetic inventories."""

from __future__ import annotations

from tests.support.controller import Controller
from tests.support.helpers import assert_problem, register, report, synthetic_inventory


def test_generations_stale_and_unchanged(controller: Controller) -> None:
    with controller.client() as client, controller.admin() as api:
        credential = register(client, controller.bootstrap_token, "gen-host")
        inventory = synthetic_inventory("gen-host", gpus=2)
        first = report(client, credential, inventory, generation=1)
        assert first.status_code == 200 and first.json()["outcome"] == "stored"
        # Same content at a newer generation: cheap path.
        second = report(client, credential, inventory, generation=2)
        assert second.json()["outcome"] == "unchanged"
        # Older generation: refused.
        stale = report(client, credential, inventory, generation=1)
        body = assert_problem(stale, 409, "stale-generation")
        assert body["current_generation"] == 2
        # Same generation, different content: refused too.
        changed = synthetic_inventory("gen-host", gpus=3)
        assert_problem(report(client, credential, changed, generation=2), 409, "stale-generation")
        assert report(client, credential, changed, generation=3).json()["outcome"] == "stored"
        host = api.get("/v1/hosts/gen-host").json()
        assert host["inventory_generation"] == 3 and host["gpus"] == 3
        # A GPU that disappears is removed.
        assert report(client, credential, synthetic_inventory("gen-host", gpus=1), generation=4).status_code == 200
        assert api.get("/v1/hosts/gen-host").json()["gpus"] == 1
        metrics = client.get("/metrics").text
        assert 'gpufabric_agent_reports_total{kind="inventory",outcome="stale"} 2.0' in metrics
        assert (
            'gpufabric_gpus{admin_state="active",backend="",health="healthy",model="NVIDIA H100 80GB HBM3"} 1.0'
            in metrics
        )


def test_heartbeat_asks_for_inventory_when_hash_differs(controller: Controller) -> None:
    from drivers.contract.protocol import inventory_content_hash

    with controller.client() as client:
        credential = register(client, controller.bootstrap_token, "hb-host")
        auth = {"Authorization": f"Bearer {credential}"}
        first = client.post("/v1/agents/hb-host/heartbeat", json={"generation": 0}, headers=auth)
        assert first.json()["inventory_wanted"] is True
        inventory = synthetic_inventory("hb-host")
        report(client, credential, inventory, generation=1)
        same = {"generation": 1, "inventory_hash": inventory_content_hash(inventory)}
        assert client.post("/v1/agents/hb-host/heartbeat", json=same, headers=auth).json()["inventory_wanted"] is False
        other = {"generation": 1, "inventory_hash": "0" * 64}
        assert client.post("/v1/agents/hb-host/heartbeat", json=other, headers=auth).json()["inventory_wanted"] is True


def test_inventory_for_another_hostname_and_bad_protocol(controller: Controller) -> None:
    with controller.client() as client:
        credential = register(client, controller.bootstrap_token, "h1")
        body = {"generation": 1, "inventory": synthetic_inventory("h2").model_dump(mode="json")}
        wrong = client.put("/v1/agents/h1/inventory", json=body, headers={"Authorization": f"Bearer {credential}"})
        assert_problem(wrong, 400, "bad-request")
        assert_problem(report(client, credential, synthetic_inventory("h2"), 1), 403, "forbidden")
        response = client.post(
            "/v1/agents/h1/heartbeat",
            json={"protocol_version": "gpufabric.agent/v99", "generation": 0},
            headers={"Authorization": f"Bearer {credential}"},
        )
        assert_problem(response, 400, "unsupported-protocol")


def test_reregistration_rotates_the_credential(controller: Controller) -> None:
    with controller.client() as client:
        old = register(client, controller.bootstrap_token, "rot-host")
        new = register(client, old, "rot-host")  # the host's own credential rotates it
        assert_problem(report(client, old, synthetic_inventory("rot-host"), 1), 401, "unauthorized")
        assert report(client, new, synthetic_inventory("rot-host"), 1).status_code == 200


def test_tasks_are_delivered_and_results_recorded(controller: Controller) -> None:
    with controller.client() as client, controller.admin() as api:
        credential = register(client, controller.bootstrap_token, "task-host")
        auth = {"Authorization": f"Bearer {credential}"}
        task = api.post("/v1/hosts/task-host/tasks", json={"kind": "ping", "params": {"n": 1}}).json()
        reply = report(client, credential, synthetic_inventory("task-host"), 1).json()
        assert [t["id"] for t in reply["tasks"]] == [task["id"]]
        done = client.post(
            f"/v1/agents/task-host/tasks/{task['id']}/result",
            json={"status": "succeeded", "message": "pong"},
            headers=auth,
        )
        assert done.status_code == 200
        again = client.post(f"/v1/agents/task-host/tasks/{task['id']}/result", json={"status": "failed"}, headers=auth)
        refused = assert_problem(again, 409, "illegal-transition")
        assert (refused["machine"], refused["current"], refused["target"]) == ("task status", "succeeded", "failed")
        assert refused["allowed"] == []
        assert api.get("/v1/hosts/task-host/tasks").json()[0]["status"] == "succeeded"
        hb = client.post("/v1/agents/task-host/heartbeat", json={"generation": 1}, headers=auth).json()
        assert hb["tasks"] == []
