"""The agent on a Kubernetes node, against the Kubernetes API emulator and a real controller.

The agent writes its GFD-compatible labels onto its Node by server-side apply (field manager
``gpufabric-agent``), only when they change, and follows the GPU Operator's ``nvidia.com/mig.config`` label
with ``nvidia.com/mig.config.state`` as NVIDIA's mig-manager sets it, on a simulated A100 host whose state
persists like a real GPU's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from typer.testing import CliRunner

from agent.cli import app as agent_app
from agent.kube import KubeNodeConfig
from agent.runner import AgentConfig, AgentRunner
from devservices.kube_emulator import KubeEmulator
from drivers.nvml.session import open_nvml
from tests.support.controller import Controller

NODE = "ip-10-0-3-17.ec2.internal"
SPEC = "a100-40gb-2x-mig"  # GPU 0: 3g.20gb + 2g.10gb + 1g.5gb; GPU 1: 3 x 1g.5gb, pid 4242 on GI 13 (6:1)
MIG_CONFIG = {
    "version": "v1",
    "mig-configs": {
        "all-1g.5gb": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 7}}],
        "all-3g.20gb": [{"devices": "all", "mig-enabled": True, "mig-devices": {"3g.20gb": 2}}],
        "all-disabled": [{"devices": "all", "mig-enabled": False}],
    },
}
STATE = "nvidia.com/mig.config.state"


@pytest.fixture
def emulator() -> Iterator[KubeEmulator]:
    server = KubeEmulator().start()
    server.seed(
        "nodes",
        {
            "metadata": {
                "name": NODE,
                "labels": {"kubernetes.io/hostname": NODE, "nvidia.com/gpu.present": "true"},
            },
            "spec": {"providerID": "aws:///us-east-1a/i-0123456789abcdef0"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        },
    )
    yield server
    server.stop()


@pytest.fixture
def mig_file(tmp_path: Path) -> Path:
    """The mig-parted file as the DaemonSet mounts it from its ConfigMap (the data key's content)."""
    path = tmp_path / "mig-config" / "config.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(MIG_CONFIG))
    return path


def _agent(
    controller: Controller, emulator: KubeEmulator, tmp_path: Path, state_file: Path | None = None, **kube: Any
) -> AgentRunner:
    return AgentRunner(
        AgentConfig(
            controller_url=controller.url,
            state_file=state_file or tmp_path / "agent" / "agent.json",
            bootstrap_token=controller.bootstrap_token,
            sim=SPEC,
            sim_state=tmp_path / "sim-state.json",
            hostname=NODE,
            interval_s=0.01,
            interval_jitter=0.0,
            kube=KubeNodeConfig(node_name=NODE, api_url=emulator.url, **kube),
        )
    )


def _labels(emulator: KubeEmulator) -> dict[str, str]:
    return dict(emulator.get("nodes", NODE)["metadata"]["labels"])


def _label_node(emulator: KubeEmulator, labels: dict[str, str | None]) -> None:
    """What ``kubectl label node`` does: a merge patch under another field manager."""
    api = k8s.CoreV1Api(k8s.ApiClient(k8s.Configuration(host=emulator.url)))
    api.patch_node(NODE, {"metadata": {"labels": labels}}, field_manager="kubectl-label")


def _layout(tmp_path: Path) -> list[list[tuple[str, int]]]:
    """Per GPU, the (profile, placement start) of each MIG instance, read through NVML from the sim state."""
    from agent.mig.apply import observe

    with open_nvml(SPEC, tmp_path / "sim-state.json"):
        return [sorted((gi.profile, gi.placement.start) for gi in gpu.instances) for gpu in observe()]


def _owners(emulator: KubeEmulator, label: str) -> set[str]:
    fields = emulator.get("nodes", NODE)["metadata"].get("managedFields") or []
    return {e["manager"] for e in fields if f"f:{label}" in e["fieldsV1"].get("f:metadata", {}).get("f:labels", {})}


def _patches(emulator: KubeEmulator) -> int:
    return emulator.count_requests("PATCH", f"/api/v1/nodes/{NODE}")


def test_labels_are_applied_as_the_agents_own_and_follow_the_inventory(
    controller: Controller, emulator: KubeEmulator, tmp_path: Path
) -> None:
    agent = _agent(controller, emulator, tmp_path, mig_strategy="mixed")
    agent.cycle()
    labels = _labels(emulator)
    assert labels["nvidia.com/mig-3g.20gb.count"] == "1" and labels["nvidia.com/mig-1g.5gb.count"] == "4"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB" and labels["gpufabric.io/mig.state"] == "enabled"
    assert labels["kubernetes.io/hostname"] == NODE  # others' labels are left alone
    assert _owners(emulator, "nvidia.com/mig-1g.5gb.count") == {"gpufabric-agent"}
    (entry,) = [
        e for e in emulator.get("nodes", NODE)["metadata"]["managedFields"] if e["manager"] == "gpufabric-agent"
    ]
    assert entry["operation"] == "Apply"
    assert STATE not in labels  # no mig.config workflow without a mig-parted file

    # Nothing changed: a GET, no apply.
    before = _patches(emulator)
    agent.cycle()
    assert _patches(emulator) == before

    # The controller's desired layout changes the GPUs (GPU 0: 2 x 3g.20gb; GPU 1 as it is, pid 4242 busy).
    doc = {"version": "v1", "mig-configs": {"two": [
        {"devices": [0], "mig-enabled": True, "mig-devices": {"3g.20gb": 2}},
        {"devices": [1], "mig-enabled": True, "mig-devices": {"1g.5gb": 3}},
    ]}}  # fmt: skip
    with controller.admin() as api:
        assert api.put(f"/v1/hosts/{NODE}/desired", json={"mig": {"config": doc, "selected": "two"}}).status_code == 200
    agent.cycle()
    labels = _labels(emulator)
    assert labels["nvidia.com/mig-3g.20gb.count"] == "2" and labels["nvidia.com/mig-1g.5gb.count"] == "3"
    # Profiles the GPUs no longer hold lose their labels: server-side apply drops what the set no longer names.
    assert not [k for k in labels if k.startswith("nvidia.com/mig-2g.10gb.")]
    assert _patches(emulator) == before + 1

    # Someone overwrites one of the agent's labels: the next cycle puts it back.
    _label_node(emulator, {"nvidia.com/gpu.product": "wrong"})
    agent.cycle()
    assert _labels(emulator)["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB"


def test_mig_config_label_changes_the_layout_pending_then_success(
    controller: Controller, emulator: KubeEmulator, tmp_path: Path, mig_file: Path
) -> None:
    agent = _agent(controller, emulator, tmp_path, mig_config_file=mig_file)
    agent.cycle()
    assert STATE not in _labels(emulator)  # no label, nothing to do (as mig-manager)

    _label_node(emulator, {"nvidia.com/mig.config": "all-1g.5gb"})
    agent.cycle()
    assert _layout(tmp_path) == [[("1g.5gb", s) for s in range(7)]] * 2  # pid 4242's GI 13 kept in place
    assert emulator.label_history(NODE, STATE) == [None, "pending", "success"]
    assert _owners(emulator, STATE) == {"gpufabric-agent"}
    with controller.admin() as api:  # the new layout was reported at once
        devices = api.get(f"/v1/hosts/{NODE}").json()["devices"]
        assert [len(d["mig_instances"]) for d in devices] == [7, 7]

    # Applied once: later cycles leave the GPUs and the label alone; the same config again is success at once.
    agent.cycle()
    assert emulator.label_history(NODE, STATE) == [None, "pending", "success"]
    restarted = _agent(controller, emulator, tmp_path, mig_config_file=mig_file)
    restarted.cycle()
    assert emulator.label_history(NODE, STATE) == [None, "pending", "success"]


def test_an_unknown_config_name_fails_with_a_clear_log_line(
    controller: Controller, emulator: KubeEmulator, tmp_path: Path, mig_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = _agent(controller, emulator, tmp_path, mig_config_file=mig_file)
    before = _layout(tmp_path)
    _label_node(emulator, {"nvidia.com/mig.config": "all-balanced"})
    with caplog.at_level(logging.WARNING, logger="gpufabric.agent.kube"):
        agent.cycle()
    assert _labels(emulator)[STATE] == "failed"
    assert emulator.label_history(NODE, STATE) == [None, "failed"]  # never pending
    assert _layout(tmp_path) == before
    (line,) = [r.getMessage() for r in caplog.records if "all-balanced" in r.getMessage()]
    assert "nvidia.com/mig.config=all-balanced: failed: no config named 'all-balanced'" in line
    assert "all-1g.5gb, all-3g.20gb, all-disabled" in line and str(mig_file) in line


def test_a_config_that_needs_a_busy_instance_fails_and_leaves_the_gpus_alone(
    controller: Controller, emulator: KubeEmulator, tmp_path: Path, mig_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = _agent(controller, emulator, tmp_path, mig_config_file=mig_file)
    before = _layout(tmp_path)
    _label_node(emulator, {"nvidia.com/mig.config": "all-3g.20gb"})  # 3g.20gb@4 needs slice 6: pid 4242's GI
    with caplog.at_level(logging.WARNING, logger="gpufabric.agent.kube"):
        agent.cycle()
    assert _labels(emulator)[STATE] == "failed"
    assert _layout(tmp_path) == before  # neither GPU touched, not even GPU 0, which was free to change
    assert any("GPU 1 blocked" in r.getMessage() and "4242" in r.getMessage() for r in caplog.records)

    # As mig-manager: not retried on its own ...
    agent.cycle()
    assert emulator.label_history(NODE, STATE) == [None, "failed"]
    # ... but once the job ended, an operator removing the state label retries it.
    with open_nvml(SPEC, tmp_path / "sim-state.json") as host:
        assert host is not None
        host.remove_process(4242)
    _label_node(emulator, {STATE: None})
    agent.cycle()
    assert _labels(emulator)[STATE] == "success"
    assert _layout(tmp_path) == [[("3g.20gb", 0), ("3g.20gb", 4)]] * 2


def test_the_controllers_mig_layout_wins_over_a_different_label(
    controller: Controller, emulator: KubeEmulator, tmp_path: Path, mig_file: Path
) -> None:
    agent = _agent(controller, emulator, tmp_path, mig_config_file=mig_file)
    agent.cycle()  # registered
    with controller.admin() as api:
        response = api.put(f"/v1/hosts/{NODE}/desired", json={"mig": {"config": MIG_CONFIG, "selected": "all-1g.5gb"}})
        assert response.status_code == 200, response.text
    _label_node(emulator, {"nvidia.com/mig.config": "all-disabled"})
    agent.cycle()
    assert _labels(emulator)[STATE] == "failed"
    assert "the controller's desired state sets this host's MIG layout" in agent.node_sync.mig_label.message
    assert _layout(tmp_path) == [[("1g.5gb", s) for s in range(7)]] * 2  # the controller's
    # The label naming the controller's own config is no conflict.
    _label_node(emulator, {"nvidia.com/mig.config": "all-1g.5gb"})
    agent.cycle()
    assert _labels(emulator)[STATE] == "success"


def _wait_for_label(emulator: KubeEmulator, key: str, value: str) -> None:
    """Block until the node's label has ``value`` (woken by each write; the bound only turns a hang into a
    failure)."""
    state = emulator.state
    with state.lock:
        reached = state.lock.wait_for(lambda: _labels(emulator).get(key) == value, timeout=300)
    assert reached, f"{key} never became {value}: {_labels(emulator).get(key)}"


def test_the_agent_loop_from_the_daemonsets_environment(
    controller: Controller, emulator: KubeEmulator, tmp_path: Path, mig_file: Path
) -> None:
    env = {
        "NODE_NAME": NODE,
        "GPUFABRIC_CONTROLLER_URL": controller.url,
        "GPUFABRIC_BOOTSTRAP_TOKEN": controller.bootstrap_token,
        "GPUFABRIC_STATE_DIR": str(tmp_path / "state"),
        "GPUFABRIC_AGENT_CONFIG": str(tmp_path / "none.yaml"),
        "GPUFABRIC_KUBE_API_URL": emulator.url,
        "GPUFABRIC_MIG_CONFIG_FILE": str(mig_file),
    }
    (tmp_path / "none.yaml").write_text("{}\n")
    sim = ["--sim", SPEC, "--sim-state", str(tmp_path / "sim-state.json")]
    result = CliRunner().invoke(agent_app, ["run", "--once", *sim], env=env)
    assert result.exit_code == 0, result.output
    assert _labels(emulator)["gpufabric.io/health"] == "healthy"
    assert _owners(emulator, "gpufabric.io/health") == {"gpufabric-agent"}

    # The loop as the DaemonSet runs it (until SIGTERM): a label set while it runs is picked up.
    stop = threading.Event()
    # (the same state directory: the credential the first run got)
    runner = _agent(controller, emulator, tmp_path, tmp_path / "state" / "agent.json", mig_config_file=mig_file)
    loop = threading.Thread(target=runner.run, args=(stop,))
    loop.start()
    try:
        _label_node(emulator, {"nvidia.com/mig.config": "all-1g.5gb"})
        _wait_for_label(emulator, STATE, "success")
    finally:
        stop.set()
        loop.join()
    assert emulator.label_history(NODE, STATE) == [None, "pending", "success"]

    # GPUFABRIC_KUBERNETES=on outside a pod without an API URL: a one-line error, exit 2.
    bare = {k: v for k, v in env.items() if k != "GPUFABRIC_KUBE_API_URL"} | {"GPUFABRIC_KUBERNETES": "on"}
    refused = CliRunner().invoke(agent_app, ["run", "--once", *sim], env=bare)
    assert refused.exit_code == 2 and "in-cluster service account" in refused.output
