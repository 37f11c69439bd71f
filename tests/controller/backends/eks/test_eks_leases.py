"""End to end through the REST API: an EKS backend registered from an eksctl file, nodes synced into hosts,
leases for whole L4 GPUs that scale a g6.12xlarge nodegroup up to its maxSize, time-sliced shares that write
the device-plugin config, releases that clean up, and the networking checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from controller.backends.eks import sync as eks_sync
from controller.cli import app as cli_app
from controller.store.lease_directory import StoreLeaseDirectory
from devservices.kube_emulator import KubeEmulator, materialize_nodegroup
from drivers.eks import AwsTarget, EksNodegroups
from tests.support.controller import Controller
from tests.support.eks import REGION, Cluster, create_gpu_nodegroup
from tests.support.helpers import register, synthetic_inventory
from tests.support.helpers import report as agent_report

pytestmark = pytest.mark.integration

WHOLE_NODE = {"slices": [{"kind": "gpu", "count": 4, "model": "L4"}], "topology": "same-host"}
SHARES = {"slices": [{"kind": "timeslice", "count": 2, "model": "L4"}]}


def eksctl_file(tmp_path: Path) -> Path:
    doc = {
        "apiVersion": "eksctl.io/v1alpha5",
        "kind": "ClusterConfig",
        "metadata": {"name": "fabric-train", "region": REGION},
        "managedNodeGroups": [
            {
                "name": "l4-train",
                "instanceType": "g6.12xlarge",
                "minSize": 0,
                "desiredCapacity": 1,
                "maxSize": 3,
                "efaEnabled": True,
                "availabilityZones": ["us-east-1a"],
                "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}],
            },
            {
                "name": "l4-shared",
                "instanceType": "g6.xlarge",
                "minSize": 1,
                "desiredCapacity": 1,
                "maxSize": 1,
                "availabilityZones": ["us-east-1a"],
            },
        ],
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def fabric(
    aws: AwsTarget,
    eks: Any,
    cluster: Cluster,
    nodegroups: EksNodegroups,
    kube: KubeEmulator,
    controller: Controller,
    tmp_path: Path,
) -> Controller:
    create_gpu_nodegroup(eks, cluster, "l4-train", desired=1, max_size=3)
    create_gpu_nodegroup(eks, cluster, "l4-shared", instance_type="g6.xlarge", min_size=1, desired=1, max_size=1)
    for group in ("l4-train", "l4-shared"):
        materialize_nodegroup(kube, nodegroups, cluster.name, group, REGION)
    kube.seed("namespaces", {"metadata": {"name": "gpu-operator"}})
    result = CliRunner().invoke(
        cli_app,
        [
            "eks", "import-eksctl", str(eksctl_file(tmp_path)),
            "--endpoint-url", str(aws.endpoint_url),
            "--register", "--controller", controller.url, "--token", controller.admin_token,
            "--name", "eks-train", "--kube-api-url", kube.url,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with controller.admin() as api:
        # The sharing policy of the small nodegroup: 4 time-sliced replicas per L4, renamed nvidia.com/gpu.shared.
        backend = api.get("/v1/backends/eks-train").json()
        assert backend["config"]["kube_api_url"] == kube.url and backend["config"]["at_max"] == "fail"
    return controller


def sync(api: httpx.Client) -> dict[str, Any]:
    response = api.post("/v1/backends/eks-train/sync")
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    assert report["errors"] == []
    return report


def lease(tenant: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """The lease as created: 201 ready, 202 not yet, 409 lease-failed (the stored lease is in the problem)."""
    response = tenant.post("/v1/leases", json=body)
    out: dict[str, Any] = response.json()
    if response.status_code == 409 and out.get("type", "").endswith("/lease-failed"):
        failed: dict[str, Any] = out["lease"]
        return failed
    assert response.status_code == (201 if out.get("state") == "ready" else 202), response.text
    return out


def test_whole_gpu_leases_scale_the_nodegroup_up_to_max_and_release_cleans_up(
    fabric: Controller, kube: KubeEmulator, nodegroups: EksNodegroups
) -> None:
    with fabric.admin() as api, fabric.client(fabric.tenant_token) as tenant:
        report = sync(api)
        assert len(report["nodes"]) == 2 and report["headroom"] == {"l4-train": 2, "l4-shared": 1}
        hosts = {h["hostname"]: h for h in api.get("/v1/hosts").json()}
        node = next(h for h in report["nodes"] if "l4-train" in str(hosts[h].get("labels")))
        assert hosts[node]["labels"]["topology.kubernetes.io/zone"] == "us-east-1a"

        first = lease(tenant, WHOLE_NODE)
        assert first["state"] == "ready", first
        result = first["result"]
        assert result["host"] == node and result["nodes"][0]["nodegroup"] == "l4-train"
        namespace = result["namespace"]
        quota = kube.get("resourcequotas", "gpufabric-lease", namespace=namespace)
        assert quota["spec"]["hard"] == {"requests.nvidia.com/gpu": "4", "requests.vpc.amazonaws.com/efa": "1"}
        pod = result["pod_spec"]
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        keys = {e["key"]: e["values"] for e in terms["nodeSelectorTerms"][0]["matchExpressions"]}
        assert keys["eks.amazonaws.com/nodegroup"] == ["l4-train"] and keys["kubernetes.io/hostname"] == [node]
        assert pod["containerResources"]["limits"] == {"nvidia.com/gpu": "4", "vpc.amazonaws.com/efa": "1"}
        assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in pod[
            "tolerations"
        ]

        # The nodegroup is full: the second lease lands on headroom and scales it to 2.
        second = lease(tenant, WHOLE_NODE)
        assert second["state"] == "provisioning", second
        assert "waiting for nodegroup l4-train" in second["reason"]
        assert nodegroups.describe_nodegroup("fabric-train", "l4-train").scaling.desired == 2
        materialize_nodegroup(kube, nodegroups, "fabric-train", "l4-train", REGION)
        report = sync(api)
        assert second["id"] in report["bound"]
        second = tenant.get(f"/v1/leases/{second['id']}").json()
        assert second["state"] == "ready", second
        assert second["result"]["host"] == report["bound"][second["id"]] != node

        third = lease(tenant, WHOLE_NODE)
        assert third["state"] == "provisioning"
        materialize_nodegroup(kube, nodegroups, "fabric-train", "l4-train", REGION)
        sync(api)
        assert tenant.get(f"/v1/leases/{third['id']}").json()["state"] == "ready"

        # At maxSize=3 the next lease fails with the nodegroup's figures (at_max: fail).
        fourth = lease(tenant, WHOLE_NODE)
        assert fourth["state"] == "failed", fourth
        assert "nodegroup l4-train is at 3 of maxSize=3 nodes: room for 0 more, 1 requested" in fourth["reason"]
        assert nodegroups.describe_nodegroup("fabric-train", "l4-train").scaling.desired == 3

        for held in (first, second, third):
            response = tenant.delete(f"/v1/leases/{held['id']}")
            assert response.status_code == 200, response.text
            assert response.json()["state"] == "released"
        names = {n["metadata"]["name"] for n in kube.list_objects("namespaces")}
        assert namespace not in names and not any(n.startswith("gf-acme-") for n in names)
        assert kube.list_objects("resourcequotas") == []


def test_at_max_wait_keeps_the_lease_until_a_node_frees_up(
    fabric: Controller, kube: KubeEmulator, nodegroups: EksNodegroups
) -> None:
    with fabric.admin() as api, fabric.client(fabric.tenant_token) as tenant:
        backend = api.get("/v1/backends/eks-train").json()
        config = {**backend["config"], "at_max": "wait"}
        assert api.delete("/v1/backends/eks-train").status_code in (204, 409)
        # No hosts yet (never synced): the backend can be registered again with the new policy.
        assert api.post("/v1/backends", json={"name": "eks-train", "kind": "eks", "config": config}).status_code == 201
        nodegroups.scale_to("fabric-train", "l4-train", 3)
        materialize_nodegroup(kube, nodegroups, "fabric-train", "l4-train", REGION)
        sync(api)
        held = [lease(tenant, WHOLE_NODE) for _ in range(3)]
        assert all(h["state"] == "ready" for h in held)
        waiting = lease(tenant, WHOLE_NODE)
        assert waiting["state"] == "provisioning"
        assert "maxSize=3" in waiting["reason"] and "at_max: wait" in waiting["reason"]
        assert tenant.delete(f"/v1/leases/{held[0]['id']}").json()["state"] == "released"
        report = sync(api)
        assert report["bound"] == {waiting["id"]: held[0]["result"]["host"]}
        assert tenant.get(f"/v1/leases/{waiting['id']}").json()["state"] == "ready"


def test_time_sliced_shares_write_the_device_plugin_config(fabric: Controller, kube: KubeEmulator) -> None:
    with fabric.admin() as api, fabric.client(fabric.tenant_token) as tenant:
        backend = api.get("/v1/backends/eks-train").json()
        config = {**backend["config"], "sharing": {"l4-shared": {"strategy": "time-slicing", "replicas": 4}}}
        assert api.delete("/v1/backends/eks-train").status_code == 204
        assert api.post("/v1/backends", json={"name": "eks-train", "kind": "eks", "config": config}).status_code == 201
        sync(api)
        shares = lease(tenant, SHARES)
        assert shares["state"] == "ready", shares
        result = shares["result"]
        assert result["nodes"][0]["nodegroup"] == "l4-shared"
        assert result["sharing"][0]["config_name"] == "l4-shared-ts4"
        configmap = kube.get("configmaps", "gpufabric-device-plugin-configs", namespace="gpu-operator")
        plugin = yaml.safe_load(configmap["data"]["l4-shared-ts4"])
        assert plugin["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]
        assert plugin["sharing"]["timeSlicing"]["renameByDefault"] is True
        node = kube.get("nodes", result["host"])
        assert node["metadata"]["labels"]["nvidia.com/device-plugin.config"] == "l4-shared-ts4"
        quota = kube.get("resourcequotas", "gpufabric-lease", namespace=result["namespace"])
        assert quota["spec"]["hard"] == {"requests.nvidia.com/gpu.shared": "2"}
        assert result["pod_spec"]["containerResources"]["limits"] == {"nvidia.com/gpu.shared": "2"}

        assert tenant.delete(f"/v1/leases/{shares['id']}").json()["state"] == "released"
        assert kube.list_objects("resourcequotas") == []


def test_networking_checks(fabric: Controller) -> None:
    with fabric.admin() as api:
        response = api.get("/v1/backends/eks-train/checks")
        assert response.status_code == 200, response.text
        checks = response.json()
        groups = {g["nodegroup"]: g for g in checks["nodegroups"]}
        l4 = groups["l4-train"]
        assert l4["max"] == 3 and l4["availability_zones"] == ["us-east-1a"]
        pods = next(f for f in l4["findings"] if f["code"] == "pods-per-node")
        assert pods["figures"]["max_pods"] == 234
        assert any(f["code"].startswith("subnet-ip") for f in l4["findings"])
        with_pods = api.get("/v1/backends/eks-train/checks", params={"pods_per_node": 6}).json()
        assert with_pods["nodegroups"][0]["findings"] != l4["findings"]
        assert api.get("/v1/backends/nope/checks").status_code == 404


def test_the_agents_inventory_wins_for_devices_the_node_gives_zone_and_nodegroup(fabric: Controller) -> None:
    with fabric.admin() as api, fabric.client() as anon:
        report = sync(api)
        hosts = {h["hostname"]: h for h in api.get("/v1/hosts").json()}
        node = next(n for n in report["nodes"] if hosts[n]["labels"]["eks.amazonaws.com/nodegroup"] == "l4-train")
        credential = register(anon, fabric.bootstrap_token, node)
        inventory = synthetic_inventory(node, gpus=4, model="NVIDIA L4")
        assert agent_report(anon, credential, inventory, 1).status_code == 200
        sync(api)
        host = api.get(f"/v1/hosts/{node}").json()
        devices = api.get("/v1/devices", params={"backend": "eks-train"}).json()
        uuids = sorted(d["uuid"] for d in devices if d["host"] == node)
        assert uuids == [f"GPU-{node}-{i}" for i in range(4)]  # the agent's, not EKS-<node>-gpu<i>
        labels = host["labels"]
        assert labels["topology.kubernetes.io/zone"] == "us-east-1a"
        assert labels["eks.amazonaws.com/nodegroup"] == "l4-train"
        assert labels["topology.k8s.aws/network-node-layer-3"].startswith("nn-")
        assert host["backend"] == "eks-train"


def test_the_sync_job_lists_nodes_once_then_follows_the_watch(
    fabric: Controller, kube: KubeEmulator, nodegroups: EksNodegroups
) -> None:
    trackers = eks_sync.EksNodeTrackers()  # what the EKS backend keeps for its backend-sync job
    directory = StoreLeaseDirectory(fabric.db)  # what build_backends hands the EKS backend
    before = kube.count_requests("GET", "/api/v1/nodes", watch=False)
    first = eks_sync.run_sync(fabric.db, directory, "eks-train", trackers=trackers)
    assert first.errors == [] and len(first.nodes) == 2
    lists = kube.count_requests("GET", "/api/v1/nodes", watch=False)
    assert lists == before + 1 and kube.count_requests("GET", "/api/v1/nodes", watch=True) == 0

    assert nodegroups.scale_up("fabric-train", "l4-train", 1).changed
    materialize_nodegroup(kube, nodegroups, "fabric-train", "l4-train", REGION)
    second = eks_sync.run_sync(fabric.db, directory, "eks-train", trackers=trackers)
    (new,) = set(second.nodes) - set(first.nodes)
    assert second.errors == [] and new in second.changed
    assert kube.count_requests("GET", "/api/v1/nodes", watch=False) == lists  # followed the watch, no new list
    assert kube.count_requests("GET", "/api/v1/nodes", watch=True) == 1
    with fabric.admin() as api:
        assert api.get(f"/v1/hosts/{new}").json()["labels"]["eks.amazonaws.com/nodegroup"] == "l4-train"

    # Without trackers (the REST sync) the nodes come from a plain paginated list, as before.
    assert sorted(eks_sync.run_sync(fabric.db, directory, "eks-train").nodes) == sorted(second.nodes)
    assert kube.count_requests("GET", "/api/v1/nodes", watch=False) == lists + 1


def test_sync_deletes_tenant_namespaces_whose_lease_holds_nothing(fabric: Controller, kube: KubeEmulator) -> None:
    """A namespace left by a crash between the cluster call and the store (or by a release that failed there) is
    found by the next sync and deleted; a holding lease's namespace is kept."""
    with fabric.admin() as api, fabric.client(fabric.tenant_token) as tenant:
        sync(api)
        gone = lease(tenant, WHOLE_NODE)
        assert gone["state"] == "ready"
        assert tenant.delete(f"/v1/leases/{gone['id']}").json()["state"] == "released"
        held = lease(tenant, WHOLE_NODE)
        assert held["state"] == "ready"
        # As a crash leaves them: the released lease's namespace, and one of a lease this store never had.
        for ns, lease_id in (("gf-acme-leftover", gone["id"]), ("gf-acme-stranger", "f" * 32)):
            kube.seed("namespaces", {"metadata": {"name": ns, "labels": {"gpufabric.io/lease": lease_id}}})
        report = api.post("/v1/backends/eks-train/sync").json()
        assert sorted((o["namespace"], o["lease_state"], o["action"]) for o in report["orphans"]) == [
            ("gf-acme-leftover", "released", "deleted"),
            ("gf-acme-stranger", "unknown", "deleted"),
        ]
        names = {n["metadata"]["name"] for n in kube.list_objects("namespaces")}
        assert held["result"]["namespace"] in names
        assert "gf-acme-leftover" not in names and "gf-acme-stranger" not in names
        assert api.post("/v1/backends/eks-train/sync").json()["orphans"] == []


def test_release_with_scale_down_idle_lowers_the_nodegroup_by_its_idle_nodes_only(
    fabric: Controller, kube: KubeEmulator, nodegroups: EksNodegroups
) -> None:
    """``scale_down: idle``: a release lowers the desired size by the nodes no lease holds any more; a node another
    lease still holds is not idle."""
    with fabric.admin() as api, fabric.client(fabric.tenant_token) as tenant:
        backend = api.get("/v1/backends/eks-train").json()
        config = {**backend["config"], "scale_down": "idle"}
        assert api.delete("/v1/backends/eks-train").status_code in (204, 409)
        assert api.post("/v1/backends", json={"name": "eks-train", "kind": "eks", "config": config}).status_code == 201
        nodegroups.scale_to("fabric-train", "l4-train", 3)
        materialize_nodegroup(kube, nodegroups, "fabric-train", "l4-train", REGION)
        sync(api)
        first, second = lease(tenant, WHOLE_NODE), lease(tenant, WHOLE_NODE)
        assert first["state"] == second["state"] == "ready"
        assert first["result"]["host"] != second["result"]["host"]

        # Idle after the first release: its node and the node nobody leased; the second lease's node is busy.
        assert tenant.delete(f"/v1/leases/{first['id']}").json()["state"] == "released"
        assert nodegroups.describe_nodegroup("fabric-train", "l4-train").scaling.desired == 1
        assert tenant.delete(f"/v1/leases/{second['id']}").json()["state"] == "released"
        assert nodegroups.describe_nodegroup("fabric-train", "l4-train").scaling.desired == 0
