"""`gpufabric lease ...` against a real controller with simulated hosts: create (from --slice, --file, stdin),
--dry-run, refusals with their reasons, wait until ready (an agent creating a MIG instance), failed (exit 1) or
timed out (exit 4), show, list, release; --json prints the API's documents."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runner import AgentConfig, AgentRunner
from controller.backends.contract import LeaseInfo, ProvisionFailed, ProvisionResult
from controller.backends.static.backend import StaticBackend
from controller.placement import Allocation
from tests.support.cli_helpers import Cli, isolated_cli, sqlite_url
from tests.support.controller import Controller
from tests.support.helpers import register, report, static_backend_replaced, synthetic_inventory

MIG_ENABLED = {
    "version": "v1",
    "mig-configs": {"all-enabled": [{"devices": "all", "mig-enabled": True, "mig-devices": {}}]},
}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


@pytest.fixture
def tenant(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, controller: Controller) -> Cli:
    """The CLI logged in as the tenant acme."""
    cli = isolated_cli(monkeypatch, tmp_path)
    assert cli("login", "--controller", controller.url, "--token", controller.tenant_token).exit_code == 0
    return cli


def h100_fleet(controller: Controller, hosts: int = 2) -> list[str]:
    names = [f"h100-{i}" for i in range(hosts)]
    with controller.client() as anon:
        for name in names:
            credential = register(anon, controller.bootstrap_token, name)
            assert report(anon, credential, synthetic_inventory(name, gpus=2), 1).status_code == 200
    return names


def mig_agent(controller: Controller, tmp_path: Path) -> AgentRunner:
    """A simulated 4 x A100 80GB host in a pool that creates MIG instances on demand."""
    agent = AgentRunner(
        AgentConfig(
            controller_url=controller.url,
            state_file=tmp_path / "agent" / "state.json",
            bootstrap_token=controller.bootstrap_token,
            sim="a100-80gb-4x",
            sim_state=tmp_path / "sim-state.json",
            hostname="mig-a100",
        )
    )
    agent.cycle()
    with controller.admin() as admin:
        policy = {"mig": {"config": MIG_ENABLED, "selected": "all-enabled"}, "on_demand_mig": True}
        assert admin.post("/v1/pools", json={"name": "mig-pool", "policy": policy}).status_code == 201
        assert admin.put("/v1/hosts/mig-a100/pool", json={"pool": "mig-pool"}).status_code == 200
    agent.cycle()
    return agent


@pytest.fixture
def agent_loop() -> Iterator[list[AgentRunner]]:
    """Agents added to the list cycle in the background (as their loop would) until the test ends."""
    agents: list[AgentRunner] = []
    done = threading.Event()

    def loop() -> None:
        while not done.wait(0.1):
            for agent in list(agents):
                agent.cycle()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield agents
    done.set()
    thread.join()


def test_create_wait_show_release_end_to_end(
    tenant: Cli, controller: Controller, tmp_path: Path, agent_loop: list[AgentRunner]
) -> None:
    agent = mig_agent(controller, tmp_path)
    created = tenant("lease", "create", "--slice", "kind=mig,profile=3g.40gb,model=A100", "--json")
    assert created.exit_code == 0, created.output
    lease = json.loads(created.stdout)
    assert lease["state"] == "provisioning" and lease["tenant"] == "acme"

    agent_loop.append(agent)  # the agent creates the instance; the lease becomes ready when it reports it
    waited = tenant("lease", "wait", lease["id"], "--interval", "0.05")
    assert waited.exit_code == 0, waited.output
    assert f"lease {lease['id']}: provisioning (" in waited.stderr
    assert f"lease {lease['id']}: ready" in waited.stderr

    shown = tenant("lease", "show", lease["id"], "--json")
    assert shown.exit_code == 0, shown.output
    ready = json.loads(shown.stdout)
    mig_uuid = ready["allocations"][0]["mig_uuid"]
    assert ready["state"] == "ready" and mig_uuid.startswith("MIG-")
    assert ready["result"]["cuda_visible_devices"] == mig_uuid
    assert mig_uuid in waited.stdout  # the human view of the ready lease

    human = tenant("lease", "show", lease["id"])
    assert human.exit_code == 0, human.output
    for fragment in ("state", "ready", "CUDA_VISIBLE_DEVICES", mig_uuid, "mig-a100", "3g.40gb", "provisioning"):
        assert fragment in human.stdout, fragment

    listed = tenant("lease", "list", "--json")
    assert [(x["id"], x["state"]) for x in json.loads(listed.stdout)] == [(lease["id"], "ready")]
    assert lease["id"] in tenant("lease", "list").stdout

    released = tenant("lease", "release", lease["id"], "--json")
    assert released.exit_code == 0, released.output
    assert json.loads(released.stdout)["state"] == "released"
    assert tenant("lease", "release", lease["id"]).exit_code == 0  # again: unchanged
    gone = tenant("lease", "list", "--state", "released", "--json")
    assert [x["id"] for x in json.loads(gone.stdout)] == [lease["id"]]
    assert json.loads(tenant("lease", "list", "--state", "ready", "--json").stdout) == []


def test_whole_gpus_from_slices_file_and_stdin(tenant: Cli, controller: Controller, tmp_path: Path) -> None:
    hosts = h100_fleet(controller, hosts=3)
    made = tenant("lease", "create", "-s", "kind=gpu,model=H100,count=2", "--idempotency-key", "k1", "--wait", "--json")
    assert made.exit_code == 0, made.output
    lease = json.loads(made.stdout)
    assert lease["state"] == "ready" and lease["result"]["host"] in hosts
    wanted = lease["request"]["slices"]
    assert [(x["kind"], x["model"], x["count"]) for x in wanted] == [("gpu", "H100", 2)] and lease["request"][
        "nodes"
    ] == 1
    again = tenant("lease", "create", "-s", "kind=gpu,model=H100,count=2", "--idempotency-key", "k1", "--json")
    assert json.loads(again.stdout)["id"] == lease["id"]

    request = tmp_path / "request.json"
    request.write_text(json.dumps({"slices": [{"kind": "gpu", "count": 1}], "topology": "same-host"}))
    from_file = tenant("lease", "create", "--file", str(request), "--duration", "PT1H", "--json")
    assert from_file.exit_code == 0, from_file.output
    body = json.loads(from_file.stdout)
    assert body["request"]["topology"] == "same-host" and body["request"]["duration"] in (3600, "PT1H")
    assert body["expires_at"] is not None

    from_stdin = tenant("lease", "create", "--file", "-", "--json", input=json.dumps({"slices": [{"kind": "gpu"}]}))
    assert from_stdin.exit_code == 0, from_stdin.output
    assert json.loads(from_stdin.stdout)["state"] == "ready"
    human = tenant("lease", "create", "--slice", "kind=gpu")
    assert human.exit_code == 0, human.output
    assert "ready" in human.stdout and "CUDA_VISIBLE_DEVICES" in human.stdout


def test_dry_run_claims_nothing(tenant: Cli, controller: Controller) -> None:
    h100_fleet(controller)
    plan = tenant("lease", "create", "--dry-run", "--slice", "kind=gpu,model=H100,count=2", "--json")
    assert plan.exit_code == 0, plan.output
    decision = json.loads(plan.stdout)
    assert decision["claimed"] is False and decision["fits"] is True
    assert "host" not in decision["nodes"][0] and "h100-" not in plan.stdout  # tenants are not told host names
    assert decision["nodes"][0]["allocations"][0]["kind"] == "gpu"
    human = tenant("lease", "create", "--dry-run", "--slice", "kind=gpu,model=H100,count=2", "--policy", "spread")
    assert human.exit_code == 0, human.output
    assert "would place" in human.stdout and "h100-" not in human.stdout
    assert json.loads(tenant("lease", "list", "--json").stdout) == []


def test_a_refusal_explains_itself(tenant: Cli, controller: Controller) -> None:
    h100_fleet(controller)
    refused = tenant("lease", "create", "--slice", "kind=gpu,model=H100,count=4")
    assert refused.exit_code == 2, refused.output
    lines = refused.stderr.splitlines()
    assert lines[0].startswith("error: HTTP 409: No capacity for this request: "), lines
    assert "request: 4 x gpu H100" in refused.stderr
    assert "candidates: 2 hosts, 4 devices" in refused.stderr
    assert "  filter fit: removed 2 hosts, 0 devices (e.g. has some but not all of 4 x gpu H100)" in refused.stderr
    assert (
        "  nearest fit: (50% satisfied; available 4 x gpu H100: 2)" in refused.stderr and "missing:" in refused.stderr
    )
    assert "h100-" not in refused.stderr  # tenants get counts and reasons, not host names
    assert "Traceback" not in refused.output

    dry = tenant("lease", "create", "--dry-run", "--slice", "kind=gpu,model=L4", "--json")
    assert dry.exit_code == 2
    problem = json.loads(dry.stdout)
    assert problem["type"].endswith("/no-capacity") and problem["filters"], problem
    assert [line for line in dry.stderr.splitlines() if line] == [dry.stderr.strip()]  # --json: the one line only
    human_dry = tenant("lease", "create", "--dry-run", "--slice", "kind=gpu,model=L4")
    assert human_dry.exit_code == 2 and "  filter model: removed 2 hosts, 4 devices" in human_dry.stderr

    with controller.admin() as admin:
        quota = {"limits": [{"kind": "gpu", "model": "*", "limit": 1}]}
        assert admin.put("/v1/quotas/acme", json=quota).status_code == 200
    over = tenant("lease", "create", "--slice", "kind=gpu,count=2")
    assert over.exit_code == 2, over.output
    assert over.stderr.startswith("error: HTTP 403: Over quota: ")
    assert "quota: gpu:" in over.stderr and "(limit 1, in use 0, asked 2)" in over.stderr


def test_wait_gives_up_at_the_timeout(tenant: Cli, controller: Controller, tmp_path: Path) -> None:
    mig_agent(controller, tmp_path)  # registered, but not cycling: the instance is never created
    created = tenant("lease", "create", "--slice", "kind=mig,profile=1g.10gb", "--json")
    lease_id = json.loads(created.stdout)["id"]
    result = tenant("lease", "wait", lease_id, "--timeout", "0", "--json")
    assert result.exit_code == 4, result.output
    assert json.loads(result.stdout)["state"] == "provisioning"
    assert result.stderr.strip() == f"error: lease {lease_id} is still provisioning after 0 s (--timeout)"


class BrokenStatic(StaticBackend):
    def provision(self, lease: LeaseInfo, allocations: list[Allocation]) -> ProvisionResult:
        raise ProvisionFailed("the hypervisor is on fire")


def test_a_failed_lease_exits_1(tenant: Cli, controller: Controller) -> None:
    h100_fleet(controller, hosts=1)
    with static_backend_replaced(controller.server.app, BrokenStatic):
        result = tenant("lease", "create", "--slice", "kind=gpu", "--wait")
    assert result.exit_code == 1, result.output
    assert "the hypervisor is on fire" in result.stderr and " is failed: " in result.stderr
    lease_id = json.loads(tenant("lease", "list", "--json").stdout)[0]["id"]
    waited = tenant("lease", "wait", lease_id)
    assert waited.exit_code == 1 and f"error: lease {lease_id} is failed" in waited.stderr
    # Without --wait too: the controller answers 409 lease-failed, the CLI prints the lease and exits 1.
    with static_backend_replaced(controller.server.app, BrokenStatic):
        at_once = tenant("lease", "create", "--slice", "kind=gpu", "--json")
    assert at_once.exit_code == 1, at_once.output
    failed = json.loads(at_once.stdout)
    assert failed["state"] == "failed" and "the hypervisor is on fire" in failed["failure_reason"]
    assert f"error: lease {failed['id']} is failed: " in at_once.stderr


def test_an_admin_acts_for_a_tenant(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, controller: Controller) -> None:
    h100_fleet(controller, hosts=1)
    admin = isolated_cli(monkeypatch, tmp_path)
    common = ("--controller", controller.url, "--token", controller.admin_token)
    made = admin("lease", "create", "--slice", "kind=gpu", "--tenant", "acme", "--json", *common)
    assert made.exit_code == 0 and json.loads(made.stdout)["tenant"] == "acme", made.output
    listed = admin("lease", "list", "--tenant", "acme", "--json", *common)
    assert [x["tenant"] for x in json.loads(listed.stdout)] == ["acme"]
    assert json.loads(admin("lease", "list", "--tenant", "other", "--json", *common).stdout) == []


def test_offers_and_my_quota(tenant: Cli, controller: Controller) -> None:
    h100_fleet(controller, hosts=2)
    with controller.admin() as admin:
        assert admin.put("/v1/quotas/acme", json={"limits": [{"kind": "gpu", "limit": 3}]}).status_code == 200
    catalog = tenant("offers", "--json")
    assert catalog.exit_code == 0, catalog.output
    [offer] = json.loads(catalog.stdout)["offers"]
    assert (offer["kind"], offer["free"], offer["quota_left"], offer["requestable"]) == ("gpu", 4, 3, 3)
    human = tenant("offers", "--kind", "gpu")
    assert human.exit_code == 0, human.output
    assert "H100-80GB" in human.stdout and "offers for acme" in human.stdout and "h100-" not in human.stdout
    mine = tenant("quotas", "show", "me", "--json")
    assert mine.exit_code == 0 and json.loads(mine.stdout)["tenant"] == "acme", mine.output
    assert tenant("offers", "--kind", "tpu").exit_code == 2
