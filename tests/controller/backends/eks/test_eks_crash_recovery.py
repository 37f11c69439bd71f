"""The crash suite on the EKS backend: two controller replicas on PostgreSQL, an EKS backend on moto and the
Kubernetes API emulator; a replica killed after each step of create and release. After each restart: no
transitional lease, live claims equal to the holding leases, and the tenant namespaces in the cluster are exactly
those of the holding leases (none leaked, none missing)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from controller.backends.eks.cluster import tenant_namespace
from controller.cli import app as cli_app
from controller.leases.faults import POINTS
from devservices.kube_emulator import KubeEmulator, materialize_nodegroup
from drivers.eks import AwsTarget, EksNodegroups
from drivers.eks.kube_labels import LEASE_LABEL
from tests.controller.backends.eks.test_eks_leases import WHOLE_NODE, eksctl_file
from tests.controller.test_crash_recovery import TENANT, Fabric
from tests.controller.test_lease_concurrency import postgres_database  # noqa: F401  (fixture)
from tests.support.crash_harness import invariant_violations
from tests.support.eks import REGION, Cluster, create_gpu_nodegroup

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]


class EksFabric(Fabric):
    label = "EKS"
    kube: KubeEmulator

    def namespaces_match(self) -> list[str]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(text("SELECT id, tenant, state FROM leases WHERE backend = 'eks'")).all()
        want = {tenant_namespace(r.tenant, r.id) for r in rows if r.state == "ready"}
        have = {
            n["metadata"]["name"]
            for n in self.kube.list_objects("namespaces")
            if LEASE_LABEL in (n["metadata"].get("labels") or {})
        }
        out = [f"namespace {n} of no holding lease" for n in sorted(have - want)]
        out += [f"holding lease has no namespace {n}" for n in sorted(want - have)]
        return out

    def clean(self) -> list[str]:
        return invariant_violations(self.db) + self.namespaces_match()


@pytest.fixture
def eks_fabric(
    aws: AwsTarget,
    eks: Any,
    cluster: Cluster,
    nodegroups: EksNodegroups,
    kube: KubeEmulator,
    postgres_database: str,  # noqa: F811
    tmp_path: Path,
) -> Iterator[EksFabric]:
    # Both node groups at their size, so a whole-node lease is ready at once (no scale-up in this suite).
    create_gpu_nodegroup(eks, cluster, "l4-train", desired=2, max_size=2)
    create_gpu_nodegroup(eks, cluster, "l4-shared", instance_type="g6.xlarge", min_size=1, desired=1, max_size=1)
    for group in ("l4-train", "l4-shared"):
        materialize_nodegroup(kube, nodegroups, cluster.name, group, REGION)
    kube.seed("namespaces", {"metadata": {"name": "gpu-operator"}})
    f = EksFabric(postgres_database, tmp_path)  # replicas inherit the aws fixture's dummy credentials
    f.kube = kube
    try:
        result = CliRunner().invoke(
            cli_app,
            [
                "eks", "import-eksctl", str(eksctl_file(tmp_path)), "--endpoint-url", str(aws.endpoint_url),
                "--register", "--controller", f.b.url, "--token", f.admin,
                "--name", "eks-train", "--kube-api-url", kube.url,
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        with f.b.client(f.admin) as api:
            synced = api.post("/v1/backends/eks-train/sync")
            assert synced.status_code == 200 and synced.json()["errors"] == [], synced.text
        yield f
    finally:
        f.close()


@pytest.mark.parametrize("point", [p for p in POINTS if p != "recover.taken"])
def test_eks_leases_survive_a_crash_at_every_point(eks_fabric: EksFabric, point: str) -> None:
    f = eks_fabric
    if point.startswith("create."):
        leases = f.crash_creating(point, WHOLE_NODE)
        assert leases[0]["result"]["namespace"] == tenant_namespace(TENANT, leases[0]["id"])
    else:
        f.crash_releasing(point, WHOLE_NODE, f.namespaces_match)
