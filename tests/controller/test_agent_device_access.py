"""Device access on an agent-managed (static) host, through the agent loop and the REST API.

A simulated A100 host whose agent enforces device access (``device_access``, docs/security.md): its stand-in device
nodes are regular files under a dev root of the test's own. A lease is ``provisioning`` until the agent reports
that the lease's group may open exactly the leased nodes, then ``ready`` with ``result.access``; the files' group
and mode are checked with ``os.stat`` and, when the test runs as root (CI does), by opening them as an unprivileged
user with and without the lease's group. Release revokes; a restarted agent revokes what is left of leases it no
longer holds; a grant that fails half-way leaves nothing changed.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.access.acl import acl_groups, read_acl
from agent.access.enforce import DeviceAccessConfig
from agent.runner import AgentConfig, AgentRunner
from tests.support.cli_helpers import isolated_cli
from tests.support.controller import Controller

ROOT = os.geteuid() == 0
NOBODY = 65534
GPU = {"slices": [{"kind": "gpu", "model": "A100"}]}


@pytest.fixture
def dev_root() -> Iterator[Path]:
    """A dev root an unprivileged user can reach (tmp_path's parents are private to the test's user), with the
    driver's mig-minors file beside it (``../proc/mig-minors``)."""
    base = Path(tempfile.mkdtemp(prefix="gf-dev-"))
    base.chmod(0o755)
    (base / "dev").mkdir(mode=0o755)
    yield base / "dev"
    shutil.rmtree(base)


@pytest.fixture(autouse=True)
def remove_groups_left() -> Iterator[None]:
    """Groups the agents made for leases a test left held are removed with the test (the host's /etc/group)."""
    yield
    for agent in AGENTS:
        if agent.access is not None:
            for grant in agent.access.state.grants.values():
                agent.access.groups.give_back(grant.group, grant.created)
    AGENTS.clear()


AGENTS: list[AgentRunner] = []


def _access_config(dev_root: Path) -> DeviceAccessConfig:
    if ROOT:  # the agent makes gf-<lease> system groups
        return DeviceAccessConfig(
            dev_root=dev_root, mig_minors_file=dev_root.parent / "proc" / "mig-minors", allow_regular_files=True
        )
    # Without root the agent hands out groups this user is in (access_groups) and may give its own files to.
    names = [grp.getgrgid(g).gr_name for g in os.getgroups() if g != os.getegid()]
    if len(names) < 2:
        pytest.skip("not root and fewer than two supplementary groups to hand out")
    return DeviceAccessConfig(
        dev_root=dev_root,
        mig_minors_file=dev_root.parent / "proc" / "mig-minors",
        groups=tuple(names),
        idle_group=grp.getgrgid(os.getegid()).gr_name,
        allow_regular_files=True,
    )


def _agent(
    controller: Controller, tmp_path: Path, dev_root: Path, hostname: str = "access-a100", sim: str = "a100-80gb-4x"
) -> AgentRunner:
    agent = AgentRunner(
        AgentConfig(
            controller_url=controller.url,
            state_file=tmp_path / hostname / "state.json",
            bootstrap_token=controller.bootstrap_token,
            sim=sim,
            sim_state=tmp_path / hostname / "sim-state.json",
            hostname=hostname,
            access=_access_config(dev_root),
        )
    )
    AGENTS.append(agent)
    return agent


def _can_open(path: Path, groups: list[int]) -> bool:
    """Whether user nobody with these supplementary groups may open the node read-write."""

    def demote() -> None:
        os.setgroups(groups)
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    # The shell opens the node read-write (``<>``): the test's own Python may sit where nobody cannot read it.
    done = subprocess.run(
        ["/bin/sh", "-c", ': <> "$1"', "sh", str(path)],
        preexec_fn=demote,
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 or "Permission denied" in done.stderr, done
    return done.returncode == 0


def _check_as_users(granted: Path, others: list[Path], gid: int) -> None:
    if not ROOT:
        if os.environ.get("CI"):
            pytest.fail("CI runs the tests as root: the member/non-member open check must run there")
        return
    assert _can_open(granted, [gid]), "a member of the lease's group must open its node"
    assert not _can_open(granted, []), "a user outside the lease's group must not open its node"
    assert not any(_can_open(p, [gid]) for p in others), "the lease's group must not open other GPUs' nodes"


def _mode(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_gid, stat.S_IMODE(st.st_mode)


def _gpu_nodes(dev_root: Path) -> list[Path]:
    return sorted(dev_root.glob("nvidia[0-9]*"))


def _lease(api: Any, lease_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/leases/{lease_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _idle_gid(agent: AgentRunner) -> int:
    assert agent.access is not None
    return grp.getgrnam(agent.access.config.idle_group).gr_gid


def test_a_lease_opens_exactly_its_gpu_node_to_its_group_until_released(
    controller: Controller, tmp_path: Path, dev_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = _agent(controller, tmp_path, dev_root)
    agent.cycle()
    idle = _idle_gid(agent)
    nodes = _gpu_nodes(dev_root)
    assert [n.name for n in nodes] == ["nvidia0", "nvidia1", "nvidia2", "nvidia3"]
    # The driver made them 0666; the agent closed every node no lease holds.
    assert all(_mode(n) == (idle, 0o600) for n in nodes)

    with controller.client(controller.tenant_token) as api:
        created = api.post("/v1/leases", json=GPU)
        assert created.status_code == 202, created.text
        lease = created.json()
        assert lease["state"] == "provisioning" and "grant the lease's group access" in lease["reason"], lease
        agent.cycle()  # the desired state lists the lease: the agent grants and reports at once
        ready = _lease(api, lease["id"])
    assert ready["state"] == "ready", ready
    access = ready["access"]
    group = "gf-" + lease["id"][:12] if ROOT else access["unix_group"]
    gid = grp.getgrnam(group).gr_gid
    # `gpufabric lease show` names the group and the device node the lease may open.
    shown = isolated_cli(monkeypatch, tmp_path)(
        "lease", "show", lease["id"], "--controller", controller.url, "--token", controller.tenant_token,
        env={"COLUMNS": "250"},
    )  # fmt: skip
    assert shown.exit_code == 0 and "access (device nodes)" in shown.output, shown.output
    assert group in shown.output and str(dev_root / "nvidia0") in shown.output, shown.output
    leased = dev_root / "nvidia0"  # packing takes the first GPU
    assert access == {
        "host": "access-a100",
        "enforced": True,
        "unix_group": group,
        "gid": gid,
        "device_nodes": [str(leased)],
        "cuda_visible_devices": ready["allocations"][0]["device"],
    }
    assert _mode(leased) == (gid, 0o660)
    others = [n for n in nodes if n != leased]
    assert all(_mode(n) == (idle, 0o600) for n in others), "GPUs not leased stay closed"
    _check_as_users(leased, others, gid)

    with controller.client(controller.tenant_token) as api:
        assert api.delete(f"/v1/leases/{lease['id']}").json()["state"] == "released"
    agent.cycle()
    assert _mode(leased) == (idle, 0o600), "release revokes the group's access"
    if ROOT:
        with pytest.raises(KeyError):
            grp.getgrnam(group)  # the group the agent made is gone with the lease
    assert agent.access is not None and agent.access.report().grants == []


def test_a_restarted_agent_revokes_grants_of_leases_released_while_it_was_down(
    controller: Controller, tmp_path: Path, dev_root: Path
) -> None:
    agent = _agent(controller, tmp_path, dev_root)
    agent.cycle()
    with controller.client(controller.tenant_token) as api:
        kept = api.post("/v1/leases", json=GPU).json()["id"]
        gone = api.post("/v1/leases", json=GPU).json()["id"]
        agent.cycle()
        assert [_lease(api, i)["state"] for i in (kept, gone)] == ["ready", "ready"]
        gone_access = _lease(api, gone)["access"]
        kept_access = _lease(api, kept)["access"]
        del agent  # the agent stops; the lease is released meanwhile
        assert api.delete(f"/v1/leases/{gone}").json()["state"] == "released"
    gone_node = Path(gone_access["device_nodes"][0])
    assert _mode(gone_node) == (gone_access["gid"], 0o660), "nothing revoked it while the agent was down"

    restarted = _agent(controller, tmp_path, dev_root)
    restarted.cycle()
    assert _mode(gone_node) == (_idle_gid(restarted), 0o600)
    kept_node = Path(kept_access["device_nodes"][0])
    assert _mode(kept_node) == (kept_access["gid"], 0o660), "the lease still held keeps its access"
    assert restarted.access is not None
    assert [g.lease for g in restarted.access.report().grants] == [kept]
    if ROOT:
        with pytest.raises(KeyError):
            grp.getgrnam(gone_access["unix_group"])


def test_a_grant_that_fails_half_way_is_rolled_back_and_fails_the_lease(
    controller: Controller, tmp_path: Path, dev_root: Path
) -> None:
    agent = _agent(controller, tmp_path, dev_root)
    agent.cycle()
    idle = _idle_gid(agent)
    # Something replaced the second GPU's node with a symlink: the agent refuses to follow it.
    second = dev_root / "nvidia1"
    second.unlink()
    second.symlink_to(dev_root / "nvidia3")
    with controller.client(controller.tenant_token) as api:
        lease = api.post("/v1/leases", json={"slices": [{"kind": "gpu", "model": "A100", "count": 2}]}).json()
        agent.cycle()
        failed = _lease(api, lease["id"])
    assert failed["state"] == "failed", failed
    assert "could not grant" in failed["reason"] and "nvidia1: not a device node" in failed["reason"], failed
    first = dev_root / "nvidia0"
    assert _mode(first) == (idle, 0o600), "the node changed before the failure was put back"
    assert _mode(dev_root / "nvidia3") == (idle, 0o600)
    if ROOT:
        with pytest.raises(KeyError):
            grp.getgrnam("gf-" + lease["id"][:12])


MIG_ENABLED = {
    "version": "v1",
    "mig-configs": {"all-enabled": [{"devices": "all", "mig-enabled": True, "mig-devices": {}}]},
}


def test_mig_leases_on_one_gpu_share_its_node_and_keep_their_own_capabilities(
    controller: Controller, tmp_path: Path, dev_root: Path
) -> None:
    agent = _agent(controller, tmp_path, dev_root, "access-mig")
    agent.cycle()
    with controller.admin() as admin:
        policy = {"mig": {"config": MIG_ENABLED, "selected": "all-enabled"}, "on_demand_mig": True}
        assert admin.post("/v1/pools", json={"name": "mig-pool", "policy": policy}).status_code == 201
        assert admin.put("/v1/hosts/access-mig/pool", json={"pool": "mig-pool"}).status_code == 200
    agent.cycle()
    request = {"slices": [{"kind": "mig", "profile": "1g.10gb", "model": "A100"}]}
    with controller.client(controller.tenant_token) as api:
        ids = [api.post("/v1/leases", json=request).json()["id"] for _ in range(2)]
        agent.cycle()  # creates the instances and reports them (the leases bind to them)
        agent.cycle()  # grants the leases on the instances' nodes
        leases = [_lease(api, i) for i in ids]
    assert [lease["state"] for lease in leases] == ["ready", "ready"], leases
    accesses = [lease["access"] for lease in leases]
    parent = {n for a in accesses for n in a["device_nodes"] if "/nvidia-caps/" not in n}
    assert len(parent) == 1 and Path(next(iter(parent))).parent == dev_root, accesses
    caps = [{n for n in a["device_nodes"] if "/nvidia-caps/" in n} for a in accesses]
    # Each instance: its GPU instance's and its compute instance's capability nodes, none shared.
    assert all(len(c) == 2 and all("/nvidia-caps/nvidia-cap" in n for n in c) for c in caps), caps
    assert not caps[0] & caps[1]
    gids = [a["gid"] for a in accesses]
    parent_node = Path(next(iter(parent)))
    acl = read_acl(parent_node)
    assert acl is not None and acl_groups(acl) == set(gids), "the shared parent node is open to both groups"
    for mine, gid in zip(caps, gids, strict=True):
        assert all(_mode(Path(node)) == (gid, 0o660) for node in mine)
    if ROOT:
        for mine, gid, other in zip(caps, gids, reversed(caps), strict=True):
            _check_as_users(Path(min(mine)), [Path(n) for n in other], gid)
            assert _can_open(parent_node, [gid])
        assert not _can_open(parent_node, [])

    with controller.client(controller.tenant_token) as api:
        assert api.delete(f"/v1/leases/{ids[0]}").json()["state"] == "released"
    agent.cycle()
    agent.cycle()
    assert _mode(parent_node) == (gids[1], 0o660) and read_acl(parent_node) is None, "one holder left: its group"


def test_an_agent_that_cannot_close_nodes_fails_the_lease_with_its_reason(
    controller: Controller, tmp_path: Path, dev_root: Path
) -> None:
    agent = _agent(controller, tmp_path, dev_root)
    assert agent.access is not None
    agent.access.config = dataclasses.replace(agent.access.config, idle_group="gf-no-such-group")
    agent.cycle()
    with controller.client(controller.tenant_token) as api:
        lease = api.post("/v1/leases", json=GPU).json()
        agent.cycle()
        failed = _lease(api, lease["id"])
    assert failed["state"] == "failed" and "access_idle_group 'gf-no-such-group' does not exist" in failed["reason"]


def test_a_lease_over_two_hosts_waits_for_both_agents_and_names_each_hosts_access(
    controller: Controller, tmp_path: Path, dev_root: Path
) -> None:
    other_root = dev_root.parent / "dev-l4"
    other_root.mkdir(mode=0o755)
    a100 = _agent(controller, tmp_path, dev_root, "access-a100")
    l4 = _agent(controller, tmp_path, other_root, "access-l4", sim="l4-4x")
    a100.cycle()
    l4.cycle()
    with controller.client(controller.tenant_token) as api:
        lease = api.post("/v1/leases", json={"slices": [{"kind": "gpu", "count": 2}], "nodes": 2}).json()
        assert lease["state"] == "provisioning", lease
        a100.cycle()
        half = _lease(api, lease["id"])
        assert half["state"] == "provisioning" and "the agent on access-l4" in half["reason"], half
        l4.cycle()
        ready = _lease(api, lease["id"])
    assert ready["state"] == "ready", ready
    hosts = {a["host"]: a for a in ready["access"]["hosts"]}
    assert set(hosts) == {"access-a100", "access-l4"}
    group = hosts["access-a100"]["unix_group"]
    assert hosts["access-l4"]["unix_group"] == group, "one group name for the lease on every host"
    for root, access in ((dev_root, hosts["access-a100"]), (other_root, hosts["access-l4"])):
        assert access["enforced"] is True and access["device_nodes"]
        for node in map(Path, access["device_nodes"]):
            assert node.parent == root and _mode(node) == (access["gid"], 0o660)
    assert {n["host"]: n["access"] for n in ready["result"]["nodes"]} == hosts
