"""`gpufabric demo`: the bundled fleet registers, reports and converges; its agents keep apart and it stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controller.demo.fleet import load_fleet
from controller.demo.run import Demo

DEMO_COMMAND = [sys.executable, "-c", "from controller.cli import main; main()", "demo"]
HOSTS = ("demo-h100-1", "demo-a100-80gb-1", "demo-a100-40gb-1", "demo-l4-1", "demo-a16-1", "demo-a100-vgpu-1")
# Generous: the fleet is ready in ~15 s on an idle 2-core machine; these only end a test that would hang.
DEADLINE_S = 180.0

# The tests that share the `demo` fixture run on one xdist worker (`--dist loadgroup`): the fleet starts once.
ON_THE_SHARED_FLEET = pytest.mark.xdist_group("demo-fleet")
needs_proc = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads processes from /proc")


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def children(pid: int) -> dict[int, str]:
    """Direct children of ``pid``: {pid: start time in clock ticks since boot} (a pid alone may be reused)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Fields after the parenthesised command name: state, ppid, ... starttime is field 22.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found[int(entry.name)] = fields[19]
    return found


def alive(pid: int, start_time: str) -> bool:
    """The same process (pid and start time) still exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[19] == start_time and fields[0] != "Z"


@pytest.mark.slow
def test_demo_exit_after_ready(tmp_path: Path) -> None:
    cmd = [*DEMO_COMMAND, "--port", "0", "--data-dir", str(tmp_path), "--exit-after-ready", "--timeout", "120"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "fleet ready" in done.stdout
    assert "admin token: gft_" in done.stdout
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/ui ", done.stdout), done.stdout
    assert "an NCCL validation of demo-h100-1 (stand-in nccl-tests output: simulated): passed" in done.stdout
    for host in HOSTS:
        assert host in done.stdout
    assert (tmp_path / "controller.db").exists()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The bundled fleet, ready (every host reported and converged), agents reporting every second."""
    run = Demo(fleet=load_fleet(), data_dir=tmp_path_factory.mktemp("demo"), agent_interval_s=1.0)
    try:
        run.start_controller()
        run.configure()
        run.start_agents()
        run.assign_pools(DEADLINE_S)
        run.wait_ready(DEADLINE_S)
        yield run
    finally:
        run.stop()


@ON_THE_SHARED_FLEET
@pytest.mark.slow
@needs_proc
def test_each_agent_keeps_its_state_in_a_directory_of_its_own(demo: Demo) -> None:
    state_dirs = {}
    for name, proc in demo.agents.items():
        args = cmdline(proc.pid)
        state_dirs[name] = Path(args[args.index("--state-file") + 1]).parent
    assert len(set(state_dirs.values())) == len(HOSTS), state_dirs
    for name, directory in state_dirs.items():
        # The health monitor keeps its state beside the agent's state file; it wrote it after a cycle.
        assert (directory / "health-state.json").is_file(), name
        log = (directory / "agent.log").read_text()
        assert "Traceback" not in log, log[-3000:]


@ON_THE_SHARED_FLEET
@pytest.mark.slow
@needs_proc
def test_no_agent_command_line_holds_the_bootstrap_token(demo: Demo) -> None:
    assert demo.bootstrap_token.startswith("gft_")
    for name, proc in demo.agents.items():
        args = cmdline(proc.pid)
        assert not any(demo.bootstrap_token in arg for arg in args), (name, args)
        assert not any(re.search(r"gf[ta]_", arg) for arg in args), (name, args)
    with demo.client() as api:
        registered = {h["hostname"] for h in api.get("/v1/hosts").json()}
    assert registered == set(HOSTS)  # and the agents still registered with it


@ON_THE_SHARED_FLEET
@pytest.mark.slow
def test_the_vgpu_host_is_healthy_and_its_vgpus_are_attached_by_the_pretend_hypervisor(demo: Demo) -> None:
    """The A16 host's GPUs start healthy (its spec's draw is under its power limit) and offer A16-4C; it sits
    behind the demo's `fake` backend, whose pretend hypervisor attaches a vGPU (a made-up mdev UUID, marked
    simulated), so the lease is ready; released, the capacity is back."""
    with demo.client() as api:
        host = api.get("/v1/hosts/demo-a16-1").json()
        assert [d["health"] for d in host["devices"]] == ["healthy"] * 4
        assert host["backend"] == "demo-hypervisor"
        made = api.post(
            "/v1/leases", params={"tenant": "demo-tenant"}, json={"slices": [{"kind": "vgpu", "vgpu_type": "A16-4C"}]}
        )
        assert made.status_code == 201, made.text
        lease = made.json()
        assert lease["state"] == "ready" and lease["backend"] == "fake", lease
        (vgpu,) = [s for n in lease["result"]["nodes"] for s in n["slices"] if s["kind"] == "vgpu"]
        assert vgpu["vgpu_type"] == "A16-4C" and vgpu["simulated"] is True and len(vgpu["mdev_uuids"]) == 1
        assert api.delete(f"/v1/leases/{lease['id']}").json()["state"] == "released"


@ON_THE_SHARED_FLEET
@pytest.mark.slow
def test_a_mig_backed_vgpu_lease_takes_exactly_one_gpu_instance_of_the_a100_vgpu_host(demo: Demo) -> None:
    """The A100 vGPU host's GPU 0 is in MIG mode and offers MIG-backed types on its GPU instances, GPU 1 the
    time-sliced ones. The demo's MIG-backed lease holds exactly the 3g.20gb GPU instance; a second one has no
    instance left (refused with the rule), and a time-sliced type goes to GPU 1 only."""
    with demo.client() as api:
        token = api.post("/v1/tokens", json={"role": "tenant", "tenant": "demo-tenant", "name": "vgpu-test"}).json()
    shown = demo.mig_backed_vgpu_lease(token["token"])
    assert [d["mig_mode"] for d in shown["host"]["devices"]] == ["enabled", "disabled"]
    gpu0, gpu1 = shown["host"]["devices"]
    lease = shown["lease"]
    assert lease["state"] == "ready", lease
    (alloc,) = lease["allocations"]
    instance = next(m for m in gpu0["mig_instances"] if m["profile"] == "3g.20gb")
    assert (alloc["device"], alloc["kind"], alloc["vgpu_type"], alloc["profile"]) == (
        gpu0["uuid"],
        "vgpu",
        "A100-3-20C",
        "3g.20gb",
    )
    assert alloc["placement"] == {"start": instance["placement_start"], "size": instance["placement_size"]}
    assert alloc["mig_uuid"] == instance["uuid"]
    with demo.client() as api:
        again = api.post(
            "/v1/placements:dry-run",
            params={"tenant": "demo-tenant"},
            json={"slices": [{"kind": "vgpu", "vgpu_type": "A100-3-20C"}]},
        )
        sliced = api.post(
            "/v1/placements:dry-run",
            params={"tenant": "demo-tenant"},
            json={"slices": [{"kind": "vgpu", "vgpu_type": "A100-4C", "count": 2}]},
        )
        assert api.delete(f"/v1/leases/{lease['id']}").json()["state"] == "released"
    assert again.status_code == 409, again.text  # the one 3g.20gb instance is held
    assert sliced.status_code == 200, sliced.text
    assert {a["device"] for n in sliced.json()["nodes"] for a in n["allocations"]} == {gpu1["uuid"]}


@pytest.mark.slow
@needs_proc
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_agents_and_removes_the_temp_dir(signum: signal.Signals, tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    out = tmp_path / "demo.out"
    env = {**os.environ, "TMPDIR": str(temp)}
    with out.open("wb") as sink:
        proc = subprocess.Popen([*DEMO_COMMAND, "--port", "0", "--interval", "1"], stdout=sink, stderr=sink, env=env)
    agents: dict[int, str] = {}
    try:
        text = wait_for_output(proc, out, "running; Ctrl-C to stop")
        url = re.search(r"controller on (http://\S+)", text)
        token = re.search(r"admin token: (gft_\S+)", text)
        assert url and token, text
        with httpx.Client(base_url=url[1], headers={"Authorization": f"Bearer {token[1]}"}) as api:
            assert {h["hostname"] for h in api.get("/v1/hosts").json()} == set(HOSTS)
        agents = children(proc.pid)
        assert len(agents) == len(HOSTS), agents
        assert [p.name.startswith("gpufabric-demo-") for p in temp.iterdir()] == [True]  # its data dir

        proc.send_signal(signum)
        assert proc.wait(timeout=DEADLINE_S) == 0, out.read_text()[-3000:]
        assert "stopping" in out.read_text()
        survivors = [pid for pid, started in agents.items() if alive(pid, started)]
        assert survivors == [], out.read_text()[-3000:]
        assert list(temp.iterdir()) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid, started in agents.items():
            if alive(pid, started):
                os.kill(pid, signal.SIGKILL)


def wait_for_output(proc: subprocess.Popen[bytes], out: Path, marker: str) -> str:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        text = out.read_text(errors="replace")
        if marker in text:
            return text
        assert proc.poll() is None, f"demo exited with {proc.returncode}:\n{text[-3000:]}"
        assert time.monotonic() < deadline, f"no {marker!r} after {DEADLINE_S:.0f}s:\n{text[-3000:]}"
        time.sleep(0.2)


@ON_THE_SHARED_FLEET
@pytest.mark.slow
def test_the_demo_validation_has_a_curve_shown_as_simulated(demo: Demo) -> None:
    """The demo's NCCL validation: the agent runs the stand-in binary, the controller parses and judges its log,
    and the dashboard draws the curve with the expected line, labelled simulated."""
    validation = demo.nccl_validation("demo-h100-1")
    assert validation["status"] == "passed", validation
    (run,) = validation["runs"]
    assert len(run["rows"]) == 28 and run["rows"][-1]["size_bytes"] == 1 << 30  # 8 B .. 1 GiB, factor 2
    assert "SIMULATED output" in run["log_tail"]
    assert run["verdict"]["expected_busbw_gbps"] == 360.0 and run["verdict"]["measured_busbw_gbps"] > 360.0
    with httpx.Client(base_url=demo.url, timeout=30) as ui:
        form = ui.get("/ui/signin").text
        nonce = re.search(r'name="csrf" value="([^"]+)"', form)
        assert nonce
        ui.post("/ui/signin", data={"csrf": nonce.group(1), "token": demo.admin_token})
        page = ui.get(f"/ui/validations/{validation['id']}").text
    assert "Simulated hosts (demo-h100-1)" in page and "expected 360.0 GB/s" in page
    assert page.count('class="point"') == 28


@pytest.mark.slow
@needs_proc
def test_a_killed_demo_takes_its_agents_with_it(tmp_path: Path) -> None:
    """SIGKILL skips the demo's clean-up; its agents still end (each asked the kernel for SIGTERM when its parent
    dies) instead of reporting to nothing forever."""
    out = tmp_path / "demo.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [*DEMO_COMMAND, "--port", "0", "--interval", "1", "--data-dir", str(tmp_path / "data")],
            stdout=sink,
            stderr=sink,
        )
    agents: dict[int, str] = {}
    try:
        wait_for_output(proc, out, "running; Ctrl-C to stop")
        agents = children(proc.pid)
        assert len(agents) == len(HOSTS), agents
        proc.kill()
        proc.wait(timeout=DEADLINE_S)
        deadline = time.monotonic() + 30
        while [pid for pid, started in agents.items() if alive(pid, started)] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [pid for pid, started in agents.items() if alive(pid, started)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid, started in agents.items():
            if alive(pid, started):
                os.kill(pid, signal.SIGKILL)
