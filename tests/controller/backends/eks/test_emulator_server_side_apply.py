"""The Kubernetes API emulator's server-side apply, through the official client: what the agent's node labels
rely on (docs/testing.md, "Kubernetes API emulator")."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devservices.kube_emulator import KubeEmulator

APPLY = "application/apply-patch+yaml"


@pytest.fixture
def core() -> Iterator[tuple[KubeEmulator, k8s.CoreV1Api]]:
    emulator = KubeEmulator().start()
    emulator.seed("nodes", {"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}})
    yield emulator, k8s.CoreV1Api(k8s.ApiClient(k8s.Configuration(host=emulator.url)))
    emulator.stop()


def _apply(api: k8s.CoreV1Api, labels: dict[str, str], manager: str, force: bool = False) -> k8s.V1Node:
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": labels}}
    return api.patch_node("n1", body, field_manager=manager, force=force, _content_type=APPLY)


def _owned(node: k8s.V1Node) -> dict[tuple[str, str], set[str]]:
    return {
        (e.manager, e.operation): {k[2:] for k in e.fields_v1["f:metadata"]["f:labels"]}
        for e in node.metadata.managed_fields
    }


def test_apply_owns_its_labels_and_a_smaller_set_deletes_the_rest(core: tuple[KubeEmulator, k8s.CoreV1Api]) -> None:
    _, api = core
    node = _apply(api, {"a": "1", "b": "2"}, "agent")
    assert node.metadata.labels == {"kubernetes.io/hostname": "n1", "a": "1", "b": "2"}
    assert _owned(node) == {("agent", "Apply"): {"a", "b"}}
    version = node.metadata.resource_version
    assert _apply(api, {"a": "1", "b": "2"}, "agent").metadata.resource_version == version  # no-op: no new version
    node = _apply(api, {"a": "1"}, "agent")
    assert node.metadata.labels == {"kubernetes.io/hostname": "n1", "a": "1"}


def test_conflicts_need_force_and_updates_take_fields_over(core: tuple[KubeEmulator, k8s.CoreV1Api]) -> None:
    emulator, api = core
    _apply(api, {"a": "1", "b": "2"}, "agent")
    with pytest.raises(ApiException) as refused:
        _apply(api, {"a": "other"}, "gfd")
    assert refused.value.status == 409
    status = json.loads(refused.value.body)
    assert status["reason"] == "Conflict" and 'conflict with "agent"' in status["message"]
    assert status["details"]["causes"][0]["field"] == ".metadata.labels.a"
    assert _apply(api, {"a": "1"}, "gfd").metadata.labels["a"] == "1"  # the same value: shared, no conflict
    node = _apply(api, {"a": "forced"}, "gfd", force=True)
    assert _owned(node) == {("agent", "Apply"): {"b"}, ("gfd", "Apply"): {"a"}}

    # A merge patch (kubectl label) takes "b" over; the agent dropping "b" then leaves it in place.
    node = api.patch_node("n1", {"metadata": {"labels": {"b": "kubectl"}}}, field_manager="kubectl-label")
    assert _owned(node)[("kubectl-label", "Update")] == {"b"}
    node = _apply(api, {}, "agent")
    assert node.metadata.labels["b"] == "kubectl"
    assert emulator.label_history("n1", "a") == [None, "1", "forced"]


def test_apply_needs_a_field_manager(core: tuple[KubeEmulator, k8s.CoreV1Api]) -> None:
    _, api = core
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"a": "1"}}}
    with pytest.raises(ApiException) as refused:
        api.patch_node("n1", body, _content_type=APPLY)
    assert refused.value.status == 400 and "fieldManager is required" in refused.value.body
