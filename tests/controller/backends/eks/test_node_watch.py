"""Node listing at scale: the emulator's paginated lists (limit/continue, consistent snapshots, 410 Expired
tokens) and watches (events after a resourceVersion, selectors, bookmarks, 410 for compacted versions), and
the driver's ``GpuNodeWatch``, which lists once and then follows the watch.

Every test makes its changes first and then lists or watches: the events are already in the emulator's
history, so a watch replays them at once and ends after its ``timeoutSeconds``. Nothing waits on time."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from devservices.kube_emulator import KubeEmulator, node_objects
from drivers.eks import KubeError
from drivers.eks.catalog import builtin_facts
from drivers.eks.kube import KubeGpuCluster, kube_configuration
from drivers.eks.node_watch import GpuNodeWatch
from tests.support.eks import REGION

pytestmark = pytest.mark.integration

NODES = "/api/v1/nodes"
L4 = builtin_facts("g6.12xlarge")
POOL = "gpufabric.io/pool"


def nodes(count: int, nodegroup: str = "l4-train", start: int = 0, pool: str | None = None) -> list[dict[str, Any]]:
    labels = {POOL: pool} if pool else None
    facts = L4
    if nodegroup == "system":  # no GPUs: no nvidia.com/gpu capacity, no GFD labels
        facts = L4.model_copy(update={"gpu_count": 0, "gpu_model": None, "gpu_memory_mib": None})
    return node_objects(
        "fabric-train", nodegroup, "g6.12xlarge", count, ["us-east-1a"], REGION, facts, labels=labels, start_index=start
    )


def names(objects: list[Any]) -> list[str]:
    return [o.metadata.name for o in objects]


def list_requests(kube: KubeEmulator) -> int:
    return kube.count_requests("GET", NODES, watch=False)


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body or "{}")
    return body


@pytest.fixture
def core(kube_cluster: KubeGpuCluster) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(kube_cluster.api_client)


# -- the emulator: paginated lists ---------------------------------------------------------------


def test_node_list_pages_are_one_consistent_snapshot(kube: KubeEmulator, core: k8s.CoreV1Api) -> None:
    seeded = sorted(n["metadata"]["name"] for n in kube.add_nodes(nodes(7)))

    first = core.list_node(limit=3)
    version = first.metadata.resource_version
    assert names(first.items) == seeded[:3]
    assert first.metadata._continue and first.metadata.remaining_item_count == 4

    # Changes after the first page do not show in the later pages: they come from the first page's snapshot.
    core.patch_node(seeded[6], {"metadata": {"labels": {POOL: "changed"}}})
    kube.add_nodes(nodes(1, start=7))
    core.delete_node(seeded[4])

    second = core.list_node(limit=3, _continue=first.metadata._continue)
    assert names(second.items) == seeded[3:6] and second.metadata.resource_version == version
    assert second.metadata._continue and second.metadata.remaining_item_count == 1
    kube.state.snapshots.clear()  # the emulator rebuilds a dropped snapshot from its event history
    third = core.list_node(limit=3, _continue=second.metadata._continue)
    assert names(third.items) == seeded[6:] and not third.metadata._continue
    assert POOL not in third.items[0].metadata.labels and third.metadata.resource_version == version
    assert list_requests(kube) == 3

    latest = core.list_node()
    assert len(latest.items) == 7 and int(latest.metadata.resource_version) > int(version)
    assert latest.metadata._continue is None


def test_node_list_pages_with_a_label_selector(kube: KubeEmulator, core: k8s.CoreV1Api) -> None:
    kube.add_nodes(nodes(3, "l4-train") + nodes(4, "h100"))
    found: list[str] = []
    token = None
    pages = 0
    while True:
        page = core.list_node(label_selector="eks.amazonaws.com/nodegroup=h100", limit=2, _continue=token)
        pages += 1
        found += names(page.items)
        assert page.metadata.remaining_item_count is None  # not counted under a selector, as the real server
        token = page.metadata._continue
        if not token:
            break
    expected = kube.list_objects("nodes", label_selector="eks.amazonaws.com/nodegroup=h100")
    assert sorted(found) == sorted(n["metadata"]["name"] for n in expected) and len(found) == 4
    assert pages >= 2  # pages stop at 2 matches; one may come back empty, as from etcd


def test_bad_and_expired_continue_tokens(kube: KubeEmulator, core: k8s.CoreV1Api) -> None:
    seeded = sorted(n["metadata"]["name"] for n in kube.add_nodes(nodes(5)))
    with pytest.raises(ApiException) as bad:
        core.list_node(limit=2, _continue="not-a-token")
    assert bad.value.status == 400 and status_of(bad.value)["reason"] == "BadRequest"

    first = core.list_node(limit=2)
    core.patch_node(seeded[4], {"metadata": {"labels": {"round": "0"}}})
    kube.compact()  # the list's version is gone from the history, as after an etcd compaction
    with pytest.raises(ApiException) as expired:
        core.list_node(limit=2, _continue=first.metadata._continue)
    status = status_of(expired.value)
    assert expired.value.status == 410 and status["reason"] == "Expired" and status["code"] == 410
    # The Status carries a token for the rest of the list from the latest state (inconsistent, on request).
    rest = core.list_node(limit=10, _continue=status["metadata"]["continue"])
    assert names(rest.items) == seeded[2:]

    # A bounded history expires tokens the same way once enough changes happened after the first page.
    kube.history_limit = 4
    first = core.list_node(limit=2)
    for i in range(12):
        core.patch_node(seeded[0], {"metadata": {"labels": {"round": str(i)}}})
    with pytest.raises(ApiException) as aged:
        core.list_node(limit=2, _continue=first.metadata._continue)
    assert aged.value.status == 410 and status_of(aged.value)["reason"] == "Expired"


# -- the emulator: watches -----------------------------------------------------------------------


def test_watch_sends_the_changes_after_a_version_through_the_selector(kube: KubeEmulator, core: k8s.CoreV1Api) -> None:
    a, b, c = (n["metadata"]["name"] for n in kube.add_nodes(nodes(2, pool="train") + nodes(1, "infer", pool="infer")))
    version = core.list_node().metadata.resource_version
    core.patch_node(a, {"metadata": {"labels": {"rack": "r1"}}})  # still matches: MODIFIED
    core.patch_node(c, {"metadata": {"labels": {POOL: "train"}}})  # starts matching: ADDED
    core.patch_node(b, {"metadata": {"labels": {POOL: "infer"}}})  # stops matching: DELETED
    core.delete_node(a)  # DELETED
    kube.add_nodes(nodes(1, "infer", start=1, pool="infer"))  # never matches: nothing

    events = list(
        watch.Watch().stream(
            core.list_node,
            label_selector=f"{POOL}=train",
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=1,
        )
    )
    seen = [(e["type"], e["raw_object"]["metadata"].get("name")) for e in events]
    assert seen == [("MODIFIED", a), ("ADDED", c), ("DELETED", b), ("DELETED", a), ("BOOKMARK", None)]
    left = events[2]["object"]
    assert left.metadata.labels[POOL] == "train"  # the last state that matched, at the change's version
    assert left.metadata.resource_version == str(int(version) + 3)
    versions = [int(e["raw_object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and versions[-1] == kube.resource_version


def test_watch_from_a_compacted_version_is_410_gone(kube: KubeEmulator, core: k8s.CoreV1Api) -> None:
    (name,) = (n["metadata"]["name"] for n in kube.add_nodes(nodes(1)))
    kube.history_limit = 3
    old = core.list_node().metadata.resource_version
    for i in range(8):
        core.patch_node(name, {"metadata": {"labels": {"round": str(i)}}})
    recent = str(kube.resource_version - 1)

    # On the wire: 200, then one ERROR event with a 410 Expired Status, then the end of the stream.
    response = core.list_node(watch=True, resource_version=old, timeout_seconds=1, _preload_content=False)
    lines = [json.loads(line) for line in response.data.decode().splitlines() if line.strip()]
    assert response.status == 200 and len(lines) == 1
    assert lines[0]["type"] == "ERROR"
    assert lines[0]["object"]["code"] == 410 and lines[0]["object"]["reason"] == "Expired"
    # The client's watch raises it as an ApiException with status 410.
    with pytest.raises(ApiException) as gone:
        list(watch.Watch().stream(core.list_node, resource_version=old, timeout_seconds=1))
    assert gone.value.status == 410

    # A version still in the history is fine.
    events = list(watch.Watch().stream(core.list_node, resource_version=recent, timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.labels["round"]) for e in events] == [("MODIFIED", "7")]


# -- the driver: paginated lists and the node watch ----------------------------------------------


def test_list_gpu_hosts_pages_through_the_nodes(kube: KubeEmulator, kube_cluster: KubeGpuCluster) -> None:
    kube.add_nodes(nodes(7) + nodes(1, "system"))
    hosts = kube_cluster.list_gpu_hosts(page_size=3)
    assert len(hosts) == 7 and all(h.gpus == 4 for h in hosts)
    assert list_requests(kube) == 3
    assert len(kube_cluster.list_gpu_hosts(nodegroup="l4-train", page_size=500)) == 7
    assert list_requests(kube) == 4


def test_a_list_whose_continue_token_expires_starts_over(
    kube: KubeEmulator, kube_cluster: KubeGpuCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube.add_nodes(nodes(5))
    real = kube_cluster.core.list_node
    calls: list[dict[str, Any]] = []

    def compacting_after_the_first_page(**kwargs: Any) -> Any:
        calls.append(kwargs)
        page = real(**kwargs)
        if len(calls) == 1:  # between the first and the second page: a change, then a compaction
            kube.add_nodes(nodes(1, start=5))
            kube.compact()
        return page

    monkeypatch.setattr(kube_cluster.core, "list_node", compacting_after_the_first_page)
    found, version = kube_cluster.list_nodes(page_size=2)
    assert len(found) == 6 and version == str(kube.resource_version)
    # page 1, the expired page 2, then a whole new list of 3 pages
    assert [bool(c["_continue"]) for c in calls] == [False, True, False, True, True]
    assert kube.count_requests("GET", NODES) == 5


def test_node_watch_lists_once_then_follows_the_watch(kube: KubeEmulator, kube_cluster: KubeGpuCluster) -> None:
    kube.add_nodes(nodes(5) + nodes(1, "system"))
    tracker = GpuNodeWatch(page_size=2)

    first = tracker.poll(kube_cluster)
    names_then = [h.name for h in first.hosts]
    assert first.relisted and len(first.hosts) == 5 and first.added == names_then
    assert first.resource_version == str(kube.resource_version)
    assert list_requests(kube) == 3  # 6 nodes in pages of 2

    core = k8s.CoreV1Api(kube_cluster.api_client)
    relabelled, deleted, annotated = names_then[0], names_then[1], names_then[2]
    (new,) = (n["metadata"]["name"] for n in kube.add_nodes(nodes(1, start=5)))
    core.patch_node(relabelled, {"metadata": {"labels": {POOL: "infer"}}})
    core.patch_node(annotated, {"metadata": {"annotations": {"note": "no host change"}}})
    core.delete_node(deleted)

    second = tracker.poll(kube_cluster)
    assert not second.relisted
    assert (second.added, second.modified, second.deleted) == ([new], [relabelled], [deleted])
    assert second.changed == sorted([new, relabelled, deleted])
    hosts = {h.name: h for h in second.hosts}
    assert set(hosts) == set(names_then) - {deleted} | {new} and hosts[relabelled].labels[POOL] == "infer"
    assert second.resource_version == str(kube.resource_version)
    assert list_requests(kube) == 3 and kube.count_requests("GET", NODES, watch=True) == 1
    assert tracker.lists == 1 and tracker.watches == 1

    quiet = tracker.poll(kube_cluster)
    assert (quiet.added, quiet.modified, quiet.deleted, quiet.relisted) == ([], [], [], False)
    assert len(quiet.hosts) == 5 and list_requests(kube) == 3


def test_node_watch_lists_again_after_410_gone(kube: KubeEmulator, kube_cluster: KubeGpuCluster) -> None:
    kube.add_nodes(nodes(3))
    tracker = GpuNodeWatch(page_size=2)
    before = [h.name for h in tracker.poll(kube_cluster).hosts]
    assert list_requests(kube) == 2

    core = k8s.CoreV1Api(kube_cluster.api_client)
    core.delete_node(before[0])
    (new,) = (n["metadata"]["name"] for n in kube.add_nodes(nodes(1, start=3)))
    kube.compact()  # the tracker's version is no longer in the history

    changes = tracker.poll(kube_cluster)
    assert changes.relisted and tracker.lists == 2
    assert (changes.added, changes.modified, changes.deleted) == ([new], [], [before[0]])
    assert list_requests(kube) == 4 and changes.resource_version == str(kube.resource_version)

    core.patch_node(new, {"metadata": {"labels": {POOL: "infer"}}})
    after = tracker.poll(kube_cluster)
    assert not after.relisted and after.modified == [new] and list_requests(kube) == 4


def test_node_watch_bookmarks_keep_its_version_fresh(kube: KubeEmulator, kube_cluster: KubeGpuCluster) -> None:
    kube.add_nodes(nodes(2))
    tracker = GpuNodeWatch(nodegroup="l4-train")
    tracker.poll(kube_cluster)
    # Changes only to nodes the tracker's selector leaves out: no events for it, but the bookmark at the end
    # of its watch moves its version past them.
    (other,) = (n["metadata"]["name"] for n in kube.add_nodes(nodes(1, "h100")))
    core = k8s.CoreV1Api(kube_cluster.api_client)
    for i in range(5):
        core.patch_node(other, {"metadata": {"labels": {"round": str(i)}}})
    quiet = tracker.poll(kube_cluster)
    assert quiet.changed == [] and tracker.resource_version == str(kube.resource_version)

    kube.history_limit = 2
    core.patch_node(other, {"metadata": {"labels": {"round": "last"}}})
    assert tracker.poll(kube_cluster).changed == [] and tracker.lists == 1


def test_node_watch_without_watch_permission_lists_every_time(
    kube: KubeEmulator, kube_cluster: KubeGpuCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube.add_nodes(nodes(2))
    real = kube_cluster.core.list_node

    def no_watch(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("watch"):
            raise ApiException(status=403, reason="Forbidden")
        return real(*args, **kwargs)

    monkeypatch.setattr(kube_cluster.core, "list_node", no_watch)
    tracker = GpuNodeWatch()
    tracker.poll(kube_cluster)
    core = k8s.CoreV1Api(kube_cluster.api_client)
    (new,) = (n["metadata"]["name"] for n in kube.add_nodes(nodes(1, start=2)))
    changes = tracker.poll(kube_cluster)
    assert changes.relisted and changes.added == [new] and tracker.lists == 2
    core.delete_node(new)
    assert tracker.poll(kube_cluster).deleted == [new]


def test_an_unreachable_api_server_is_a_kube_error() -> None:
    configuration = kube_configuration("http://127.0.0.1:9")  # discard port: connection refused
    configuration.retries = 0
    cluster = KubeGpuCluster.from_configuration(configuration)
    try:
        with pytest.raises(KubeError, match="cannot reach the API server"):
            cluster.list_gpu_hosts()
        with pytest.raises(KubeError, match="cannot reach the API server"):
            GpuNodeWatch().poll(cluster)
    finally:
        cluster.close()
