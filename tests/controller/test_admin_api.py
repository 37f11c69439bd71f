"""Admin API: backends, pools, desired state, drain/quarantine, filters, audit, problem+json."""

from __future__ import annotations

from sqlalchemy import select

from controller.api.routes.backends import masked
from controller.store.models import Backend
from tests.support.controller import Controller
from tests.support.helpers import assert_problem, register, report, synthetic_inventory

MIG = {
    "config": {
        "version": "v1",
        # H100 80GB only (device-filter): the L4s it is set on are not MIG capable and keep no layout.
        "mig-configs": {
            "all-1g.10gb": [
                {"devices": "all", "device-filter": "0x233010DE", "mig-enabled": True, "mig-devices": {"1g.10gb": 7}}
            ]
        },
    },
    "selected": "all-1g.10gb",
}
SHARING = {
    "config": {"version": "v1", "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}}}
}


def _fleet(controller: Controller) -> None:
    with controller.client() as client:
        for name, model, health in [
            ("h100-a", "NVIDIA H100 80GB HBM3", "healthy"),
            ("l4-a", "NVIDIA L4", "healthy"),
            ("l4-b", "NVIDIA L4", "unhealthy"),
        ]:
            credential = register(client, controller.bootstrap_token, name)
            assert report(client, credential, synthetic_inventory(name, 2, model, health), 1).status_code == 200


def test_backends_validate_config_per_kind(controller: Controller) -> None:
    with controller.admin() as api:
        assert (
            api.post("/v1/backends", json={"name": "lab", "kind": "static", "config": {"region": "r1"}}).status_code
            == 201
        )
        assert_problem(api.post("/v1/backends", json={"name": "lab", "kind": "static"}), 409, "conflict")
        assert_problem(api.post("/v1/backends", json={"name": "x", "kind": "vmware"}), 422, "validation-error")
        body = assert_problem(
            api.post("/v1/backends", json={"name": "e", "kind": "eks", "config": {}}), 422, "validation-error"
        )
        assert "cluster" in body["detail"]
        assert (
            api.post(
                "/v1/backends", json={"name": "e", "kind": "eks", "config": {"cluster": "c", "region": "us-east-1"}}
            ).status_code
            == 201
        )
        assert [b["name"] for b in api.get("/v1/backends").json()] == ["e", "lab"]
        assert_problem(api.get("/v1/backends/nope"), 404, "not-found")


def test_pools_policy_and_host_desired_state(controller: Controller) -> None:
    _fleet(controller)
    with controller.admin() as api:
        bad = {"name": "p", "policy": {"mig": {"config": MIG["config"], "selected": "missing"}}}
        assert_problem(api.post("/v1/pools", json=bad), 422, "validation-error")
        pool = api.post("/v1/pools", json={"name": "l4", "policy": {"sharing": SHARING, "on_demand_mig": False}})
        assert pool.status_code == 201, pool.text
        host = api.put("/v1/hosts/l4-a/pool", json={"pool": "l4"}).json()
        assert host["pool"] == "l4" and host["desired"]["sharing"] == SHARING
        pool_revision = host["desired"]["revision"]
        # Host override of MIG, pool's sharing still applies.
        host = api.put("/v1/hosts/l4-a/desired", json={"mig": MIG}).json()
        assert host["desired"]["mig"]["selected"] == "all-1g.10gb" and host["desired"]["sharing"] == SHARING
        assert host["desired"]["revision"] != pool_revision
        # Clearing the override returns to the pool's policy.
        assert api.put("/v1/hosts/l4-a/desired", json={"mig": None}).json()["desired"]["revision"] == pool_revision
        assert api.get("/v1/pools/l4").json()["hosts"] == 1
        assert_problem(api.delete("/v1/pools/l4"), 409, "conflict")
        assert_problem(api.put("/v1/hosts/l4-a/pool", json={"pool": "nope"}), 404, "not-found")
        assert [h["hostname"] for h in api.get("/v1/hosts", params={"pool": "l4"}).json()] == ["l4-a"]


def test_filters_drain_quarantine(controller: Controller) -> None:
    _fleet(controller)
    with controller.admin() as api:
        assert len(api.get("/v1/devices", params={"model": "NVIDIA L4"}).json()) == 4
        assert [h["hostname"] for h in api.get("/v1/hosts", params={"model": "NVIDIA L4"}).json()] == ["l4-a", "l4-b"]
        # The names the lease API accepts work here too (the short name and the family), not silently [].
        for name in ("L4", "l4"):
            assert len(api.get("/v1/devices", params={"model": name}).json()) == 4, name
            assert [h["hostname"] for h in api.get("/v1/hosts", params={"model": name}).json()] == ["l4-a", "l4-b"]
        assert api.get("/v1/devices", params={"model": "L40S"}).json() == []
        assert api.get("/v1/devices", params={"model": "L"}).json() == []
        assert [h["hostname"] for h in api.get("/v1/hosts", params={"health": "unhealthy"}).json()] == ["l4-b"]
        assert len(api.get("/v1/devices", params={"health": "unhealthy"}).json()) == 2
        assert api.post("/v1/hosts/l4-a/drain", json={"reason": "maintenance"}).json()["admin_state"] == "drained"
        assert [h["hostname"] for h in api.get("/v1/hosts", params={"state": "drained"}).json()] == ["l4-a"]
        device = api.post("/v1/devices/GPU-h100-a-1/quarantine", json={"reason": "xid 79"}).json()
        assert device["admin_state"] == "quarantined"
        assert [d["uuid"] for d in api.get("/v1/devices", params={"state": "quarantined"}).json()] == ["GPU-h100-a-1"]
        assert api.post("/v1/devices/GPU-h100-a-1/undrain").json()["admin_state"] == "active"
        assert api.post("/v1/hosts/l4-a/undrain").json()["admin_state"] == "active"
        assert_problem(api.post("/v1/devices/GPU-nope/drain"), 404, "not-found")


def test_audit_records_every_mutation_with_result(controller: Controller) -> None:
    _fleet(controller)
    with controller.admin() as api:
        api.post("/v1/hosts/h100-a/drain", json={"reason": "r"}, headers={"X-Request-ID": "req-123"})
        api.post("/v1/hosts/ghost/drain")
        entries = api.get("/v1/audit", params={"action": "host.drain"}).json()
        assert [(e["target"], e["result"]) for e in entries] == [("ghost", "failed"), ("h100-a", "ok")]
        ok = entries[1]
        assert ok["actor"] == "admin:test-admin" and ok["request_id"] == "req-123" and ok["detail"]["reason"] == "r"
        assert "not found" in entries[0]["detail"]["error"]
        registrations = api.get("/v1/audit", params={"action": "agent.register"}).json()
        assert len(registrations) == 3 and registrations[0]["role"] == "agent-bootstrap"


def test_problem_json_for_validation_404_and_request_id(controller: Controller) -> None:
    with controller.admin() as api:
        body = assert_problem(api.post("/v1/pools", json={"name": ""}), 422, "validation-error")
        assert body["errors"]
        assert_problem(api.get("/v1/nothing-here"), 404, "not-found")
        response = api.get("/v1/hosts", headers={"X-Request-ID": "abc-1"})
        assert response.headers["x-request-id"] == "abc-1"
        assert api.get("/v1/hosts").headers["x-request-id"]
        assert api.get("/v1/whoami").json()["role"] == "admin"
    with controller.client() as anon:
        assert anon.get("/healthz").json() == {"status": "ok"}
        assert anon.get("/readyz").json()["status"] == "ready"
        metrics = anon.get("/metrics").text
        assert 'gpufabric_http_request_duration_seconds_count{method="GET",route="/v1/hosts",status="200"}' in metrics


def test_backend_credentials_are_stored_but_never_shown(controller: Controller) -> None:
    config = {
        "auth": {"method": "password", "password": "hunter2", "username": "gf", "nested": [{"token": "t"}]},
        "kube_token": "sa-token",
        "kube_api_url": "https://k8s.test",
        "tenant_ssh_keys": {"acme": ["ssh-ed25519 AAAA acme"]},
        "token": None,
    }
    assert masked(config) == {
        "auth": {"method": "password", "password": "***", "username": "gf", "nested": [{"token": "***"}]},
        "kube_token": "***",
        "kube_api_url": "https://k8s.test",
        "tenant_ssh_keys": {"acme": ["ssh-ed25519 AAAA acme"]},
        "token": None,
    }
    with controller.admin() as api:
        made = api.post("/v1/backends", json={"name": "lab", "kind": "static", "config": {"token": "s3cret"}})
        assert made.status_code == 201, made.text
        assert made.json()["config"]["token"] == "***"
        assert api.get("/v1/backends").json()[0]["config"]["token"] == "***"
    with controller.db.session() as session:
        stored = session.scalar(select(Backend).where(Backend.name == "lab"))
        assert stored is not None and stored.config["token"] == "s3cret"
