"""On-demand MIG end to end: a simulated a100-80gb-4x agent in a pool whose policy enables MIG (no instances)
and allows on-demand creation. A lease for a 3g.40gb stays ``provisioning`` until the agent, told through its
desired state, creates the instance and reports it; then it is ``ready`` with the MIG UUID. Releasing it
removes the instance from the desired state and the agent destroys it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.runner import AgentConfig, AgentRunner
from tests.support.controller import Controller
from tests.support.helpers import assert_problem

MIG_ENABLED = {
    "version": "v1",
    "mig-configs": {"all-enabled": [{"devices": "all", "mig-enabled": True, "mig-devices": {}}]},
}


def test_on_demand_mig_lease_end_to_end(controller: Controller, tmp_path: Path) -> None:
    agent = _mig_agent(controller, tmp_path, "mig-a100")
    with controller.admin() as admin:
        devices = admin.get("/v1/hosts/mig-a100").json()["devices"]
        assert all(d["mig_mode"] == "enabled" and not d["mig_instances"] for d in devices)

    request = {"slices": [{"kind": "mig", "profile": "3g.40gb", "model": "A100"}]}
    with controller.client(controller.tenant_token) as api:
        dry = api.post("/v1/placements:dry-run", json=request).json()
        assert dry["actions"] and dry["actions"][0]["action"] == "create-mig-instance"
        created = api.post("/v1/leases", json=request, headers={"Idempotency-Key": "mig-1"})
        assert created.status_code == 202, created.text  # accepted: not ready until the agent made the instance
        lease = created.json()
        assert created.headers["location"] == f"/v1/leases/{lease['id']}"
        assert lease["state"] == "provisioning" and "waiting for the agent" in lease["reason"]
        alloc = lease["allocations"][0]
        assert alloc["create"] is True and alloc["mig_uuid"] is None and alloc["profile"] == "3g.40gb"
        # The same GPU memory cannot be promised twice while the instance is pending: 4 GPUs x 2 x 3g.40gb.
        others = [api.post("/v1/leases", json=request) for _ in range(7)]
        assert all(r.status_code == 202 for r in others), [r.text for r in others]
        assert_problem(api.post("/v1/leases", json=request), 409, "no-capacity")
        for r in others:
            assert api.delete(f"/v1/leases/{r.json()['id']}").json()["state"] == "released"

    reply = agent.cycle()  # the desired state now asks for the instance; the agent creates and reports it
    assert reply.desired.mig is not None and reply.desired.mig.selected == "all-enabled+leases"
    assert [s.lease for s in reply.desired.leases] == [lease["id"]]
    agent.cycle()
    with controller.client(controller.tenant_token) as api:
        ready = api.get(f"/v1/leases/{lease['id']}").json()
    assert ready["state"] == "ready", ready
    mig_uuid = ready["allocations"][0]["mig_uuid"]
    assert mig_uuid.startswith("MIG-")
    assert ready["result"]["cuda_visible_devices"] == mig_uuid
    assert ready["result"]["nodes"][0]["mig_devices"] == [mig_uuid]
    assert [t["to_state"] for t in ready["transitions"]][-2:] == ["provisioning", "ready"]
    with controller.admin() as admin:
        devices = admin.get("/v1/hosts/mig-a100").json()["devices"]
        instances = [m for d in devices for m in d["mig_instances"]]
        assert [(m["profile"], m["uuid"]) for m in instances] == [("3g.40gb", mig_uuid)]
        assert next(d for d in devices if d["uuid"] == alloc["device"])["mig_instances"][0]["uuid"] == mig_uuid

    with controller.client(controller.tenant_token) as api:
        assert api.delete(f"/v1/leases/{lease['id']}").json()["state"] == "released"
    reply = agent.cycle()
    assert reply.desired.leases == []
    agent.cycle()
    with controller.admin() as admin:
        devices = admin.get("/v1/hosts/mig-a100").json()["devices"]
        assert all(not d["mig_instances"] for d in devices), devices
    with controller.client(controller.tenant_token) as api:
        # Full capacity again: eight 3g.40gb across the four GPUs.
        plan = api.post("/v1/placements:dry-run", json={"slices": [{"kind": "mig", "profile": "3g.40gb", "count": 8}]})
        assert plan.status_code == 200, plan.text


def _mig_agent(controller: Controller, tmp_path: Path, hostname: str) -> AgentRunner:
    agent = AgentRunner(
        AgentConfig(
            controller_url=controller.url,
            state_file=tmp_path / "agent" / "state.json",
            bootstrap_token=controller.bootstrap_token,
            sim="a100-80gb-4x",
            sim_state=tmp_path / "sim-state.json",
            hostname=hostname,
        )
    )
    agent.cycle()
    with controller.admin() as admin:
        policy = {"mig": {"config": MIG_ENABLED, "selected": "all-enabled"}, "on_demand_mig": True}
        assert admin.post("/v1/pools", json={"name": "mig-pool", "policy": policy}).status_code == 201
        assert admin.put(f"/v1/hosts/{hostname}/pool", json={"pool": "mig-pool"}).status_code == 200
    agent.cycle()
    return agent


@pytest.mark.parametrize("released", [0, 1])
def test_releasing_one_on_demand_instance_keeps_the_other_leases_instance(
    controller: Controller, tmp_path: Path, released: int
) -> None:
    """Two leases hold instances of the same profile on one GPU; releasing either one must destroy exactly
    that lease's instance: the agent is told which instances leases hold and keeps them."""
    agent = _mig_agent(controller, tmp_path, "mig-keep")
    request = {"slices": [{"kind": "mig", "profile": "1g.10gb", "model": "A100"}]}
    with controller.client(controller.tenant_token) as api:
        ids = [api.post("/v1/leases", json=request).json()["id"] for _ in range(2)]
        agent.cycle()
        agent.cycle()
        leases = [api.get(f"/v1/leases/{i}").json() for i in ids]
        assert [lease["state"] for lease in leases] == ["ready", "ready"], leases
        devices = {lease["allocations"][0]["device"] for lease in leases}
        assert len(devices) == 1, "packing puts both on one GPU"
        uuids = [lease["allocations"][0]["mig_uuid"] for lease in leases]
        assert api.delete(f"/v1/leases/{ids[released]}").json()["state"] == "released"
    kept = uuids[1 - released]
    reply = agent.cycle()
    assert [s.mig_uuid for s in reply.desired.leases] == [kept]
    agent.cycle()
    with controller.admin() as admin:
        host = admin.get("/v1/hosts/mig-keep").json()
    instances = [m["uuid"] for d in host["devices"] for m in d["mig_instances"]]
    assert instances == [kept], f"released {uuids[released]}, expected only {kept} left; found {instances}"
    with controller.client(controller.tenant_token) as api:
        assert api.get(f"/v1/leases/{ids[1 - released]}").json()["state"] == "ready"


def test_the_agent_creates_on_demand_instances_where_the_controller_placed_them(
    controller: Controller, tmp_path: Path
) -> None:
    """One MIG decision: the engine packs small instances towards the top of a GPU (keeping its low half for a
    4g), the agent left to itself would start at slice 0. It is told the placements and creates the instances
    exactly there, so the lease's claims never move."""
    agent = _mig_agent(controller, tmp_path, "mig-pin")
    request = {"slices": [{"kind": "mig", "profile": "1g.10gb", "model": "A100"}]}
    with controller.client(controller.tenant_token) as api:
        ids = [api.post("/v1/leases", json=request).json()["id"] for _ in range(2)]
        chosen = {i: api.get(f"/v1/leases/{i}").json()["allocations"][0]["placement"] for i in ids}
        assert all(p["start"] > 0 for p in chosen.values()), chosen  # not where first fit would go
        reply = agent.cycle()
        assert {s.placement_start for s in reply.desired.leases} == {p["start"] for p in chosen.values()}
        agent.cycle()
        leases = {i: api.get(f"/v1/leases/{i}").json() for i in ids}
    assert [lease["state"] for lease in leases.values()] == ["ready", "ready"], leases
    with controller.admin() as admin:
        host = admin.get("/v1/hosts/mig-pin").json()
    where = {m["uuid"]: m["placement_start"] for d in host["devices"] for m in d["mig_instances"]}
    for lease_id, lease in leases.items():
        alloc = lease["allocations"][0]
        assert alloc["placement"] == chosen[lease_id], "the claim did not move"
        assert where[alloc["mig_uuid"]] == chosen[lease_id]["start"], "created where the controller placed it"
