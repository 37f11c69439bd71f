"""An EKS lease hands over a kubeconfig of its own: the tenant uses it with the official ``kubernetes`` client (over
HTTP, against the Kubernetes API emulator, which enforces ServiceAccount tokens and namespaced RBAC), it works in
the lease's namespace only, it is shown to nobody else, never written in clear to the store, the logs, the audit log
or the transitions, and it stops working when the lease is released."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from sqlalchemy import text

from devservices.kube_emulator import KubeEmulator
from tests.controller.backends.eks.test_eks_leases import WHOLE_NODE, fabric, lease, sync  # noqa: F401 (fixture)
from tests.support.cli_helpers import isolated_cli
from tests.support.controller import Controller

pytestmark = pytest.mark.integration


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()} {record.__dict__}")


@pytest.fixture
def every_log_line() -> Iterator[list[str]]:
    handler, root = _Everything(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.lines
    root.removeHandler(handler)
    root.setLevel(level)


def tenant_core(kubeconfig: dict[str, object], tmp_path: Path) -> k8s.CoreV1Api:
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(kubeconfig))
    return k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(path)))


def pod(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "main", "image": "nvcr.io/nvidia/cuda:12.4.0-base-ubuntu22.04"}]}}  # fmt: skip


def test_the_lease_kubeconfig_works_in_its_namespace_only_and_ends_with_the_lease(
    fabric: Controller,  # noqa: F811
    kube: KubeEmulator,
    tmp_path: Path,
    every_log_line: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with fabric.admin() as api, fabric.client(fabric.tenant_token) as tenant:
        sync(api)
        held = lease(tenant, WHOLE_NODE)
        assert held["state"] == "ready", held
        access = held["access"]
        namespace = held["result"]["namespace"]
        assert "access" not in held["result"]
        assert access["kind"] == "kubernetes" and access["namespace"] == namespace
        kubeconfig = access["kubeconfig"]
        assert kubeconfig["current-context"] == namespace
        assert kubeconfig["contexts"][0]["context"]["namespace"] == namespace
        assert kubeconfig["clusters"][0]["cluster"]["server"] == kube.url
        token = access["token"]
        assert kubeconfig["users"][0]["user"]["token"] == token

        # What the backend wrote: the ServiceAccount, a Role for this namespace, its binding, quota and limits.
        role = kube.get("roles", "gpufabric-tenant", group="rbac.authorization.k8s.io", namespace=namespace)
        assert any("pods" in rule["resources"] and "create" in rule["verbs"] for rule in role["rules"])
        binding = kube.get("rolebindings", "gpufabric-tenant", group="rbac.authorization.k8s.io", namespace=namespace)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gpufabric-tenant", "namespace": namespace}]
        limits = kube.get("limitranges", "gpufabric-lease", namespace=namespace)
        assert limits["spec"]["limits"][0]["max"] == {"nvidia.com/gpu": "4", "vpc.amazonaws.com/efa": "1"}
        assert kube.get("resourcequotas", "gpufabric-lease", namespace=namespace)["spec"]["hard"]

        # The tenant's own kubeconfig, through the official client: pods in its namespace, nothing elsewhere.
        core = tenant_core(kubeconfig, tmp_path)
        made = core.create_namespaced_pod(namespace, pod("train-0"))
        assert made.metadata.namespace == namespace
        assert [p.metadata.name for p in core.list_namespaced_pod(namespace).items] == ["train-0"]
        for outside in (
            lambda: core.list_namespaced_pod("default"),
            lambda: core.create_namespaced_pod("gpu-operator", pod("escape")),
            lambda: core.list_node(),
            lambda: core.list_namespace(),
        ):
            with pytest.raises(ApiException) as refused:
                outside()
            assert refused.value.status == 403, refused.value.body
            assert f"system:serviceaccount:{namespace}:gpufabric-tenant" in str(refused.value.body)

        # The CLI: `lease show` describes the access without printing the token; `lease kubeconfig -o` writes the
        # kubeconfig (0600) that works as the API's does.
        cli = isolated_cli(monkeypatch, tmp_path)
        who = ["--controller", fabric.url, "--token", fabric.tenant_token]
        shown = cli("lease", "show", held["id"], *who, env={"COLUMNS": "200"})
        assert shown.exit_code == 0 and namespace in shown.output and f"lease kubeconfig {held['id']}" in shown.output
        assert token not in shown.output
        written = tmp_path / "cli-kubeconfig.yaml"
        made_file = cli("lease", "kubeconfig", held["id"], "-o", str(written), *who)
        assert made_file.exit_code == 0, made_file.output
        assert stat.S_IMODE(written.stat().st_mode) == 0o600 and yaml.safe_load(written.read_text()) == kubeconfig
        assert [
            p.metadata.name
            for p in tenant_core(yaml.safe_load(written.read_text()), tmp_path).list_namespaced_pod(namespace).items
        ] == ["train-0"]

        # Re-fetchable by its tenant and admins; another tenant sees neither the lease nor its access.
        again = tenant.get(f"/v1/leases/{held['id']}").json()
        assert again["access"] == access
        assert api.get(f"/v1/leases/{held['id']}").json()["access"] == access
        other_token = api.post("/v1/tokens", json={"role": "tenant", "tenant": "globex", "name": "g"}).json()["token"]
        with fabric.client(other_token) as other:
            assert other.get(f"/v1/leases/{held['id']}").status_code == 404
            assert token not in other.get("/v1/leases").text
        assert all(item["access"] is None for item in tenant.get("/v1/leases").json())

        # Never in clear: not in the store's rows, the logs, the audit log or the transitions.
        with fabric.db.engine.connect() as conn:
            rows = (
                conn.execute(text("SELECT * FROM leases")).all() + conn.execute(text("SELECT * FROM audit_log")).all()
            )
            rows += conn.execute(text("SELECT * FROM lease_transitions")).all()
        assert rows and not any(token in str(row) for row in rows)
        assert token not in api.get("/v1/audit", params={"limit": 1000}).text
        assert every_log_line and not any(token in line for line in every_log_line)

        # Released: the access is gone from the answer and the token is refused by the cluster (401).
        released = tenant.delete(f"/v1/leases/{held['id']}").json()
        assert released["state"] == "released" and released["access"] is None
        assert tenant.get(f"/v1/leases/{held['id']}").json()["access"] is None
        with pytest.raises(ApiException) as gone:
            core.list_namespaced_pod(namespace)
        assert gone.value.status == 401
        after = cli("lease", "kubeconfig", held["id"], *who)
        assert after.exit_code == 1 and "has no kubeconfig: it is released" in after.output, after.output
