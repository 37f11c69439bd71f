"""The Helm chart deploy/helm/gpufabric, rendered and linted by Helm's own engine (helm-python-sdk bundles Helm 4's
Go library), every object checked against the Kubernetes schema; its environment variables are the ones the agent
and controller read, its RBAC is deploy/kubernetes's, and its images and users are the Dockerfiles'."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import typer
import yaml
from helm_python import Chart, lint
from helm_python.errors import HelmError
from pydantic_settings import BaseSettings

from agent.cli import app as agent_cli
from agent.settings import AgentSettings, load_settings
from controller.auth.mapping import load_mapping
from controller.cli import app as controller_cli
from controller.settings import Settings
from tests.support.dockerfile_replay import parse
from tests.support.paths import REPO_ROOT

REPO = REPO_ROOT
CHART = REPO / "deploy" / "helm" / "gpufabric"
PLAIN = REPO / "deploy" / "kubernetes"
K8S_VERSIONS = ["1.31.0", "1.37.0"]
NAMESPACE = "gpufabric"
# Custom resources kubernetes-validate has no schema for; their fields are checked by hand below.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
# Variables for other readers than gpufabric's code: the NVIDIA container toolkit and boto3.
FOREIGN_ENV = {"NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_MIG_CONFIG_DEVICES",
               "NVIDIA_MIG_MONITOR_DEVICES", "AWS_REGION"}  # fmt: skip


@pytest.fixture(scope="module")
def chart() -> Iterator[Chart]:
    with Chart.load(CHART) as loaded:
        yield loaded


def render(chart: Chart, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    manifests = chart.render(values or {}, name="gpufabric", namespace=NAMESPACE)
    return [doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def container(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (workload,) = by_kind(objects, kind)
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def env_names_read(settings: type[BaseSettings], cli: typer.Typer) -> set[str]:
    """Every environment variable the code reads: its settings fields (prefix + name, or their aliases) and the
    envvar of every command-line option."""
    prefix = settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in settings.model_fields.items():
        aliases = getattr(field.validation_alias, "choices", None)
        names |= {a for a in aliases if isinstance(a, str) and a.isupper()} if aliases else {f"{prefix}{name}".upper()}

    def walk(command: click.Command) -> None:
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            names.update([envvar] if isinstance(envvar, str) else envvar or [])
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(cli))
    return names


def test_helm_lint_is_clean() -> None:
    for version in K8S_VERSIONS:
        report = lint(CHART, strict=True, namespace=NAMESPACE, kube_version=f"v{version}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("service_monitor", [False, True], ids=["defaults", "service-monitor"])
def test_every_rendered_object_validates_against_the_kubernetes_schema(chart: Chart, service_monitor: bool) -> None:
    values = {"controller": {"serviceMonitor": {"enabled": True}}} if service_monitor else {}
    objects = render(chart, values)
    kinds = {o["kind"] for o in objects}
    assert kinds >= {"Deployment", "Service", "ServiceAccount", "DaemonSet", "ClusterRole", "ClusterRoleBinding",
                     "Role", "RoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}  # fmt: skip
    assert ("ServiceMonitor" in kinds) is service_monitor
    for version in K8S_VERSIONS:
        for obj in objects:
            if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
                with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                    kubernetes_validate.validate(obj, version, strict=True)
                continue
            assert kubernetes_validate.validate(obj, version, strict=True), obj["metadata"]["name"]


def test_the_plain_manifests_validate_on_the_same_versions() -> None:
    for path in sorted(PLAIN.glob("*/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for version in K8S_VERSIONS:
                assert kubernetes_validate.validate(doc, version, strict=True), path


def test_service_monitor_scrapes_the_controller_service(chart: Chart) -> None:
    objects = render(chart, {"controller": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    (monitor,) = by_kind(objects, "ServiceMonitor")
    (service,) = by_kind(objects, "Service")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics" and endpoint["interval"] == "30s"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"controller": {"database": {"existingSecret": ""}}}, "controller.database: set url"),
        ({"controller": {"database": {"url": "sqlite:////var/lib/gpufabric/c.db"}}}, "must be a PostgreSQL URL"),
        ({"controller": {"enabled": False}}, "agent.controllerUrl is required when controller.enabled is false"),
        ({"agent": {"bootstrapToken": {"existingSecret": ""}}}, "agent.bootstrapToken: set value"),
    ],
    ids=["no-database", "sqlite-database", "no-controller-url", "no-bootstrap-token"],
)
def test_missing_or_wrong_values_fail_with_a_message(chart: Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError, match=message):
        render(chart, values)


def test_database_url_goes_into_a_secret_the_controller_reads(chart: Chart) -> None:
    url = "postgresql+psycopg://gpufabric:s3cret@db:5432/gpufabric"
    objects = render(chart, {"controller": {"database": {"url": url}}})
    (secret,) = [s for s in by_kind(objects, "Secret") if s["metadata"]["name"] == "gpufabric-controller-db"]
    assert secret["stringData"] == {"database-url": url}
    (deployment,) = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    for c in [*pod["initContainers"], *pod["containers"]]:
        ref = next(e for e in c["env"] if e["name"] == "GPUFABRIC_DATABASE_URL")["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "gpufabric-controller-db", "key": "database-url"}
    assert url not in yaml.safe_dump(deployment)  # the URL (with its password) only in the Secret


def test_agent_runs_on_nodes_with_either_gpu_label_and_registers_as_its_node(chart: Chart) -> None:
    (ds,) = by_kind(render(chart), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert sorted((t["matchExpressions"] for t in terms), key=str) == [
        [{"key": "feature.node.kubernetes.io/pci-10de.present", "operator": "In", "values": ["true"]}],
        [{"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}],
    ]  # two terms: ORed
    assert "nodeSelector" not in pod
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["GPUFABRIC_CONTROLLER_URL"]["value"] == "http://gpufabric-controller.gpufabric.svc:8080"
    assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"
    assert pod["containers"][0]["securityContext"] == {"privileged": True}
    assert any(t["key"] == "nvidia.com/gpu" and t["operator"] == "Exists" for t in pod["tolerations"])


def test_the_plain_daemonset_selects_and_sets_what_the_chart_does(chart: Chart) -> None:
    """deploy/kubernetes/agent/daemonset.yaml is the chart's DaemonSet written out: the same GPU-node terms, and
    only variables the agent reads."""
    (plain,) = [d for d in yaml.safe_load_all((PLAIN / "agent" / "daemonset.yaml").read_text()) if d]
    (charted,) = by_kind(render(chart), "DaemonSet")

    def terms(ds: dict[str, Any]) -> list[Any]:
        affinity = ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
        return sorted((t["matchExpressions"] for t in affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]), key=str)  # fmt: skip

    assert terms(plain) == terms(charted)
    assert "nodeSelector" not in plain["spec"]["template"]["spec"]
    env = {e["name"] for e in plain["spec"]["template"]["spec"]["containers"][0]["env"]} - FOREIGN_ENV
    assert env <= env_names_read(AgentSettings, agent_cli), env - env_names_read(AgentSettings, agent_cli)


def test_every_agent_variable_is_read_by_the_agent(
    chart: Chart, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = container(render(chart, {"agent": {"backend": "eks-train"}}), "DaemonSet")["env"]
    ours = {e["name"] for e in env} - FOREIGN_ENV
    assert ours <= env_names_read(AgentSettings, agent_cli), ours - env_names_read(AgentSettings, agent_cli)
    # And each lands in the setting it is meant for (nothing else set: no other variable, an empty config file).
    for key in [k for k in os.environ if k.startswith("GPUFABRIC_") or k == "NODE_NAME"]:
        monkeypatch.delenv(key)
    (tmp_path / "agent.yaml").write_text("{}\n")
    monkeypatch.setenv("GPUFABRIC_AGENT_CONFIG", str(tmp_path / "agent.yaml"))
    given = {"NODE_NAME": "ip-10-0-1-7.ec2.internal", "GPUFABRIC_BOOTSTRAP_TOKEN": "gft_x_y"}
    for e in env:
        if e["name"] in ours:
            monkeypatch.setenv(e["name"], e.get("value", given.get(e["name"], "")))
    s = load_settings()
    assert s.hostname == "ip-10-0-1-7.ec2.internal" and s.bootstrap_token == "gft_x_y"
    assert s.controller_url == "http://gpufabric-controller.gpufabric.svc:8080"
    assert (str(s.state_dir), s.startup_splay, s.log_level, s.backend) == (
        "/var/lib/gpufabric",
        30,
        "info",
        "eks-train",
    )
    assert s.mig_config_file == Path("/etc/gpufabric/mig/config.yaml")


def test_the_mig_config_map_is_mounted_where_the_agent_reads_it(chart: Chart) -> None:
    """The nvidia.com/mig.config workflow's mig-parted file: the ConfigMap is mounted at the variable's folder, and
    with no ConfigMap named the agent is given neither (it then leaves that label to the GPU Operator)."""
    (ds,) = by_kind(render(chart), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert Path(env["GPUFABRIC_MIG_CONFIG_FILE"]).parent == Path(mounts["mig-config"])
    assert volumes["mig-config"]["configMap"] == {"name": "gpufabric-mig-config", "optional": True}
    (ds,) = by_kind(render(chart, {"agent": {"migConfig": {"configMap": ""}}}), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert "GPUFABRIC_MIG_CONFIG_FILE" not in {e["name"] for e in pod["containers"][0]["env"]}
    assert "mig-config" not in {v["name"] for v in pod["volumes"]}


def test_every_controller_variable_is_read_by_the_controller(chart: Chart) -> None:
    objects = render(chart, {"controller": {"settings": {"heartbeat_timeout_s": 120}, "awsRegion": "us-east-1"}})
    (deployment,) = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    names = {e["name"] for c in [*pod["initContainers"], *pod["containers"]] for e in c["env"]}
    assert {"GPUFABRIC_HEARTBEAT_TIMEOUT_S", "AWS_REGION", "GPUFABRIC_WORKERS"} <= names
    read = env_names_read(Settings, controller_cli)
    assert names - FOREIGN_ENV <= read, (names - FOREIGN_ENV) - read


def _rules(path_or_objects: Path | list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """(kind, name without the release prefix) -> rules of every Role and ClusterRole."""
    objects = (
        [d for d in yaml.safe_load_all(path_or_objects.read_text()) if d]
        if isinstance(path_or_objects, Path)
        else path_or_objects
    )
    return {
        (o["kind"], o["metadata"]["name"].removeprefix("gpufabric-")): o["rules"]
        for o in objects
        if o["kind"] in ("Role", "ClusterRole")
    }


def test_rbac_is_the_plain_manifests_rbac(chart: Chart) -> None:
    plain = {**_rules(PLAIN / "agent" / "rbac.yaml"), **_rules(PLAIN / "controller" / "rbac.yaml")}
    rendered = _rules(render(chart))
    assert rendered == {
        ("ClusterRole", "agent"): plain[("ClusterRole", "agent")],
        ("Role", "agent-config"): plain[("Role", "agent-config")],
        ("ClusterRole", "controller"): plain[("ClusterRole", "controller")],
        ("Role", "controller-device-plugin"): plain[("Role", "controller-device-plugin")],
        ("Role", "controller-karpenter-placeholders"): plain[("Role", "controller-karpenter-placeholders")],
    }
    (policy,) = by_kind(render(chart), "ValidatingAdmissionPolicy")
    assert policy["spec"]["matchConditions"][0]["expression"] == (
        "request.userInfo.username == 'system:serviceaccount:gpufabric:gpufabric-agent'"
    )


@pytest.mark.parametrize(
    ("dockerfile", "kind"), [("agent.Dockerfile", "DaemonSet"), ("controller.Dockerfile", "Deployment")]
)
def test_workloads_run_the_images_entry_points_as_their_users(chart: Chart, dockerfile: str, kind: str) -> None:
    instructions = parse((REPO / "deploy" / "docker" / dockerfile).read_text())
    (entrypoint,) = [i.args for i in instructions if i.keyword == "ENTRYPOINT"]
    users = [i.args for i in instructions if i.keyword == "USER"]
    objects = render(chart)
    c = container(objects, kind)
    assert [c["command"][0]] == yaml.safe_load(entrypoint)
    assert c["image"] == f"ghcr.io/gpufabric/gpufabric-{dockerfile.split('.')[0]}:0.1.0"
    (workload,) = by_kind(objects, kind)
    security = workload["spec"]["template"]["spec"].get("securityContext", {})
    if users:
        uid, gid = users[-1].split(":")
        assert (security["runAsUser"], security["runAsGroup"], security["runAsNonRoot"]) == (int(uid), int(gid), True)
    else:
        assert "runAsUser" not in security


IDENTITY_MAPPING = """\
oidc:
  - {claim: groups, value: gpu-admins, role: admin}
keystone:
  - {project: "acme-*", keystone_role: member, role: tenant, tenant: acme}
"""
OIDC_SETTINGS = {"oidc_issuer": "https://idp.example/realms/gpu", "oidc_audience": "gpufabric",
                 "oidc_jwks_url": "https://idp.example/realms/gpu/protocol/openid-connect/certs"}  # fmt: skip


def _controller_pod(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    (deployment,) = by_kind(objects, "Deployment")
    return deployment["spec"]["template"], deployment["spec"]["template"]["spec"]


def test_the_identity_mapping_is_a_config_map_the_controller_reads(chart: Chart, tmp_path: Path) -> None:
    """controller.identity.mapping: a ConfigMap mounted where GPUFABRIC_IDENTITY_MAPPING_FILE points, holding a
    file the controller's own loader reads as the rules given; a new mapping rolls the pods."""
    values = {"controller": {"settings": OIDC_SETTINGS, "identity": {"mapping": IDENTITY_MAPPING}}}
    objects = render(chart, values)
    for version in K8S_VERSIONS:
        assert all(kubernetes_validate.validate(o, version, strict=True) for o in objects if o["kind"] == "ConfigMap")
    (config_map,) = [
        o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"] == "gpufabric-controller-identity"
    ]
    template, pod = _controller_pod(objects)
    (controller,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in controller["env"]}
    path = Path(env["GPUFABRIC_IDENTITY_MAPPING_FILE"])
    mounts = {m["name"]: m for m in controller["volumeMounts"]}
    assert Path(mounts["identity"]["mountPath"]) == path.parent and mounts["identity"]["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == "identity")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert [i["path"] for i in volume["configMap"]["items"]] == [path.name]
    written = tmp_path / path.name
    written.write_text(config_map["data"][volume["configMap"]["items"][0]["key"]])
    mapping = load_mapping(written)
    assert [(r.value, r.role) for r in mapping.oidc] == [("gpu-admins", "admin")]
    assert [(r.project, r.tenant) for r in mapping.keystone] == [("acme-*", "acme")]
    assert env["GPUFABRIC_OIDC_ISSUER"] == OIDC_SETTINGS["oidc_issuer"]
    checksum = template["metadata"]["annotations"]["checksum/identity-mapping"]
    other = {"controller": {"settings": OIDC_SETTINGS, "identity": {"mapping": IDENTITY_MAPPING + "  # edited\n"}}}
    assert _controller_pod(render(chart, other))[0]["metadata"]["annotations"]["checksum/identity-mapping"] != checksum


def test_an_existing_identity_config_map_is_mounted_and_none_is_made(chart: Chart) -> None:
    values = {"controller": {"identity": {"existingConfigMap": "site-identity", "mappingKey": "rules.yaml"}}}
    objects = render(chart, values)
    assert not [o for o in by_kind(objects, "ConfigMap") if "identity" in o["metadata"]["name"]]
    _, pod = _controller_pod(objects)
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["GPUFABRIC_IDENTITY_MAPPING_FILE"] == "/etc/gpufabric/identity/rules.yaml"
    volume = next(v for v in pod["volumes"] if v["name"] == "identity")
    assert volume["configMap"] == {"name": "site-identity", "items": [{"key": "rules.yaml", "path": "rules.yaml"}]}
    # Without identity values nothing of it is rendered.
    _, plain = _controller_pod(render(chart))
    assert "identity" not in {v["name"] for v in plain["volumes"]}
    assert "GPUFABRIC_IDENTITY_MAPPING_FILE" not in {e["name"] for e in plain["containers"][0]["env"]}


@pytest.mark.parametrize(
    ("identity", "settings", "message"),
    [
        ({}, OIDC_SETTINGS, "OIDC or Keystone sign-in needs the identity mapping file"),
        ({}, {"keystone_url": "https://keystone.example/v3"}, "OIDC or Keystone sign-in needs the identity mapping"),
        ({"mapping": IDENTITY_MAPPING, "existingConfigMap": "x"}, {}, "set mapping or existingConfigMap, not both"),
        ({"mapping": "oidc: [unclosed"}, {}, "controller.identity.mapping is not YAML"),
        ({"mapping": IDENTITY_MAPPING}, {"identity_mapping_file": "/x.yaml"}, "drop it from controller.settings"),
    ],
    ids=["oidc-without-mapping", "keystone-without-mapping", "both", "not-yaml", "also-in-settings"],
)
def test_identity_values_that_cannot_work_fail_with_a_message(
    chart: Chart, identity: dict[str, Any], settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(HelmError, match=message):
        render(chart, {"controller": {"identity": identity, "settings": settings}})


def test_replicas_share_one_lease_access_key_from_a_secret(chart: Chart) -> None:
    from cryptography.fernet import Fernet

    objects = render(chart)
    (secret,) = [
        s for s in by_kind(objects, "Secret") if s["metadata"]["name"] == "gpufabric-controller-lease-access-key"
    ]
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    key = base64.b64decode(secret["data"]["lease-access-key"])
    assert Fernet(key).decrypt(Fernet(key).encrypt(b"x")) == b"x"  # a usable Fernet key
    (deployment,) = by_kind(objects, "Deployment")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    ref = next(e for e in env if e["name"] == "GPUFABRIC_LEASE_ACCESS_KEY")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "gpufabric-controller-lease-access-key", "key": "lease-access-key"}
    # An existing Secret instead: the chart makes none.
    given = render(chart, {"controller": {"leaseAccessKey": {"existingSecret": "my-key", "secretKey": "k"}}})
    assert not [s for s in by_kind(given, "Secret") if "lease-access-key" in s["metadata"]["name"]]
    (deployment,) = by_kind(given, "Deployment")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert next(e for e in env if e["name"] == "GPUFABRIC_LEASE_ACCESS_KEY")["valueFrom"]["secretKeyRef"] == {
        "name": "my-key",
        "key": "k",
    }
