"""Agent settings: every variable the deploy files set is read, NODE_NAME names the host in a DaemonSet, one name
for the controller URL (the old one still accepted, with a warning), and /etc/gpufabric/agent.yaml below the
environment. A documented variable is a promise: each one here is checked by reading it back."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.settings import AgentSettingsError, load_settings
from tests.support.paths import REPO_ROOT

REPO = REPO_ROOT
ENV_FILE = REPO / "deploy/systemd/gpufabric-agent.env"
DAEMONSET = REPO / "deploy/kubernetes/agent/daemonset.yaml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("GPUFABRIC_") or key == "NODE_NAME":
            monkeypatch.delenv(key)
    monkeypatch.setenv("GPUFABRIC_AGENT_CONFIG", str(_write(tmp_path / "empty.yaml", {})))


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def env_file_variables() -> dict[str, str]:
    """Every variable of the systemd env file, commented-out examples included."""
    out = {}
    for line in ENV_FILE.read_text().splitlines():
        m = re.match(r"^#?(GPUFABRIC_[A-Z_]+)=(.*)$", line.strip())
        if m:
            out[m[1]] = m[2]
    return out


def test_every_variable_of_the_systemd_env_file_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    variables = env_file_variables()
    assert set(variables) >= {
        "GPUFABRIC_CONTROLLER_URL", "GPUFABRIC_BOOTSTRAP_TOKEN", "GPUFABRIC_BACKEND", "GPUFABRIC_STATE_DIR",
        "GPUFABRIC_REPORT_INTERVAL", "GPUFABRIC_HEALTH_RULES", "GPUFABRIC_CA_BUNDLE", "GPUFABRIC_LOG_LEVEL",
    }  # fmt: skip
    values = {
        "GPUFABRIC_BOOTSTRAP_TOKEN": "gft_abc_secret",
        "GPUFABRIC_BACKEND": "nova-lab",
        "GPUFABRIC_LOG_LEVEL": "debug",
    }
    for name, example in variables.items():
        monkeypatch.setenv(name, values.get(name, example))
    s = load_settings()
    read = {
        "GPUFABRIC_CONTROLLER_URL": s.controller_url,
        "GPUFABRIC_BOOTSTRAP_TOKEN": s.bootstrap_token,
        "GPUFABRIC_BACKEND": s.backend,
        "GPUFABRIC_STATE_DIR": str(s.state_dir),
        "GPUFABRIC_REPORT_INTERVAL": str(int(s.report_interval or 0)),
        "GPUFABRIC_HEALTH_RULES": str(s.health_rules),
        "GPUFABRIC_CA_BUNDLE": str(s.ca_bundle),
        "GPUFABRIC_LOG_LEVEL": s.log_level,
        "GPUFABRIC_DEVICE_ACCESS": str(s.device_access).lower(),
        "GPUFABRIC_DEV_ROOT": str(s.dev_root),
        "GPUFABRIC_MIG_MINORS_FILE": str(s.mig_minors_file),
        "GPUFABRIC_ACCESS_GROUPS": json.dumps(s.access_groups, separators=(",", ":")),
        "GPUFABRIC_ACCESS_IDLE_GROUP": s.access_idle_group,
    }
    assert set(read) == set(variables), f"documented but not checked: {set(variables) - set(read)}"
    for name, value in read.items():
        assert value == values.get(name, variables[name]), name
    assert s.state_file == Path("/var/lib/gpufabric/agent.json")


def test_every_variable_of_the_daemonset_is_read_and_node_name_is_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = list(yaml.safe_load_all(DAEMONSET.read_text()))
    ds = next(d for d in docs if d and d.get("kind") == "DaemonSet")
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    names = [e["name"] for e in container["env"] if e["name"].startswith("GPUFABRIC_") or e["name"] == "NODE_NAME"]
    assert "NODE_NAME" in names and "GPUFABRIC_CONTROLLER_URL" in names
    given = {
        "NODE_NAME": "ip-10-0-1-7.ec2.internal",
        "GPUFABRIC_STATE_DIR": "/var/lib/gpufabric",
        "GPUFABRIC_CONTROLLER_URL": "https://ctl:8080",
        "GPUFABRIC_BOOTSTRAP_TOKEN": "gft_x_y",
        "GPUFABRIC_MIG_CONFIG_FILE": "/etc/gpufabric/mig/config.yaml",
    }
    assert set(names) <= set(given), f"the DaemonSet sets variables the agent does not read: {set(names) - set(given)}"
    for name in names:
        monkeypatch.setenv(name, given[name])
    monkeypatch.setenv("HOSTNAME", "gpufabric-agent-x7k2p")  # what Kubernetes sets in every pod
    s = load_settings()
    assert s.hostname == "ip-10-0-1-7.ec2.internal"  # the node's name, not the pod's
    assert s.controller_url == "https://ctl:8080" and s.bootstrap_token == "gft_x_y"
    assert s.state_dir == Path("/var/lib/gpufabric")
    assert s.mig_config_file == Path("/etc/gpufabric/mig/config.yaml")
    assert s.kube_node_name == "ip-10-0-1-7.ec2.internal" and s.kubernetes == "auto"
    # The mounted ConfigMap is where the variable says.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert Path(mounts["mig-config"]) == s.mig_config_file.parent
    assert volumes["mig-config"]["configMap"]["name"] == "gpufabric-mig-config"
    # An explicit name wins over NODE_NAME, and a flag over both.
    monkeypatch.setenv("GPUFABRIC_HOSTNAME", "gpu-7")
    assert load_settings().hostname == "gpu-7"
    assert load_settings(hostname="from-flag").hostname == "from-flag"


def test_the_old_controller_variable_still_works_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFABRIC_CONTROLLER", "http://old:8080")
    with pytest.warns(DeprecationWarning, match="GPUFABRIC_CONTROLLER_URL"):
        assert load_settings().controller_url == "http://old:8080"
    monkeypatch.setenv("GPUFABRIC_CONTROLLER_URL", "http://new:8080")
    assert load_settings().controller_url == "http://new:8080"


def test_the_config_file_is_read_below_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = _write(
        tmp_path / "agent.yaml",
        {"controller_url": "http://file:8080", "report_interval": 45, "labels": {"rack": "r7"}, "backend": "metal"},
    )
    monkeypatch.setenv("GPUFABRIC_AGENT_CONFIG", str(path))
    s = load_settings()
    assert (s.controller_url, s.report_interval, s.labels, s.backend) == (
        "http://file:8080",
        45,
        {"rack": "r7"},
        "metal",
    )
    monkeypatch.setenv("GPUFABRIC_REPORT_INTERVAL", "20")
    assert load_settings().report_interval == 20
    assert load_settings(report_interval=10.0).report_interval == 10


@pytest.mark.parametrize(
    ("env", "file", "named"),
    [
        ({"GPUFABRIC_REPORT_INTERVAL": "-1"}, {}, "GPUFABRIC_REPORT_INTERVAL"),
        ({"GPUFABRIC_LOG_LEVEL": "loud"}, {}, "GPUFABRIC_LOG_LEVEL"),
        ({"GPUFABRIC_AGENT_INTERVAL_JITTER": "0.9"}, {}, "GPUFABRIC_AGENT_INTERVAL_JITTER"),
        ({"GPUFABRIC_KUBERNETES": "maybe"}, {}, "GPUFABRIC_KUBERNETES"),
        ({"GPUFABRIC_MIG_STRATEGY": "both"}, {}, "GPUFABRIC_MIG_STRATEGY"),
        ({}, {"report_intervall": 30}, "report_intervall"),
    ],
)
def test_a_bad_setting_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], file: dict[str, Any], named: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("GPUFABRIC_AGENT_CONFIG", str(_write(tmp_path / "agent.yaml", file)))
    with pytest.raises(AgentSettingsError, match=named):
        load_settings()


def test_a_missing_config_file_named_by_the_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFABRIC_AGENT_CONFIG", "/nonexistent/agent.yaml")
    with pytest.raises(AgentSettingsError, match=r"GPUFABRIC_AGENT_CONFIG=/nonexistent/agent\.yaml: no such file"):
        load_settings()


def test_kubernetes_is_on_in_a_pod_or_when_an_api_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from agent.kube import kube_node_config

    for key in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(key, raising=False)
    assert kube_node_config("auto", node_name="n") is None  # a systemd host: no Kubernetes, no client loaded
    assert kube_node_config("auto", node_name="n", api_url="http://127.0.0.1:8001") is not None
    assert kube_node_config("auto", node_name="n", kubeconfig=tmp_path / "kubeconfig") is not None
    assert kube_node_config("on", node_name="n") is not None  # and fails at start without a service account
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.100.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    config = kube_node_config("auto", node_name="n", mig_config_file=Path("/etc/gpufabric/mig/config.yaml"))
    assert config is not None and config.node_name == "n" and config.mig_config_file is not None
    assert kube_node_config("off", node_name="n", api_url="http://127.0.0.1:8001") is None
    monkeypatch.setenv("NODE_NAME", "node-b")
    monkeypatch.setenv("GPUFABRIC_HOSTNAME", "gpu-7")
    assert load_settings().kube_node_name == "node-b"  # the Node is the node, whatever the host registers as
    monkeypatch.setenv("GPUFABRIC_NODE_NAME", "node-a")
    assert load_settings().kube_node_name == "node-a"


def test_plain_shell_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only GPUFABRIC_* (and NODE_NAME) are read: HOSTNAME, CONTROLLER_URL or INTERVAL_JITTER in the environment
    change nothing, while the same names as file keys still work."""
    monkeypatch.setenv("HOSTNAME", "pod-name")
    monkeypatch.setenv("CONTROLLER_URL", "http://wrong:1")
    monkeypatch.setenv("INTERVAL_JITTER", "0.4")
    s = load_settings()
    assert (s.hostname, s.controller_url, s.interval_jitter) == (None, None, 0.1)
    doc = {"hostname": "gpu-9", "controller_url": "http://ctl:8080", "interval_jitter": 0.2, "startup_splay": 5}
    monkeypatch.setenv("GPUFABRIC_AGENT_CONFIG", str(_write(tmp_path / "agent.yaml", doc)))
    s = load_settings()
    assert (s.hostname, s.controller_url, s.interval_jitter, s.startup_splay) == ("gpu-9", "http://ctl:8080", 0.2, 5)


def test_device_access_settings_make_the_agents_enforcement_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """GPUFABRIC_DEVICE_ACCESS turns enforcement on (docs/security.md); off, the agent leaves the nodes alone."""
    from agent.cli.run import device_access_config

    assert device_access_config(load_settings(), simulated=False) is None
    monkeypatch.setenv("GPUFABRIC_DEVICE_ACCESS", "true")
    monkeypatch.setenv("GPUFABRIC_DEV_ROOT", "/srv/sim-dev")
    monkeypatch.setenv("GPUFABRIC_ACCESS_GROUPS", '["gpu-a","gpu-b"]')
    config = device_access_config(load_settings(), simulated=True)
    assert config is not None
    assert (config.dev_root, config.groups, config.idle_group) == (Path("/srv/sim-dev"), ("gpu-a", "gpu-b"), "root")
    assert config.mig_minors_file == Path("/proc/driver/nvidia-caps/mig-minors")
    assert config.allow_regular_files, "a simulated host's nodes are regular files"
    real = device_access_config(load_settings(), simulated=False)
    assert real is not None and not real.allow_regular_files
