"""Read one Node's labels and server-side apply the labels a field manager owns on it.

Server-side apply (``PATCH`` with ``application/apply-patch+yaml``, ``fieldManager``, ``force``) is what makes
"the labels this agent writes" a set the API server keeps track of: each apply sends the whole set, the
server records it in ``metadata.managedFields`` under the manager, and a label left out of the next apply is
deleted (unless another manager also set it). ``force`` takes over labels another writer set before (GPU
Feature Discovery's, the GPU Operator's ``nvidia.com/mig.config.state``), as a node's label owner should.

The client configuration is built explicitly (in-cluster service account, a named kubeconfig file, or a
plain API URL such as ``kubectl proxy``'s); nothing reads ``$KUBECONFIG`` or ``~/.kube/config`` on its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

FIELD_MANAGER = "gpufabric-agent"
APPLY_PATCH = "application/apply-patch+yaml"

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_NAME = re.compile(rf"^{_NAME}$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class KubeNodeError(RuntimeError):
    """The Kubernetes API could not be reached or refused a request; the message names the node and call."""


def invalid_label(key: str, value: str) -> str | None:
    """Why the API server would refuse this label (None: it is valid): key ``[prefix/]name``, value at
    most 63 characters of ``[A-Za-z0-9-_.]`` starting and ending alphanumeric, or empty."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _LABEL_PREFIX.match(prefix)):
        return f"label key {key!r}: prefix must be a DNS subdomain"
    if len(name) > 63 or not _LABEL_NAME.match(name):
        return f"label key {key!r}: name must be 1-63 characters [A-Za-z0-9-_.], alphanumeric at both ends"
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        return f"label {key}={value!r}: value must be at most 63 characters [A-Za-z0-9-_.], alphanumeric at both ends"
    return None


def node_api_configuration(*, api_url: str | None = None, kubeconfig: Path | None = None) -> k8s.Configuration:
    """The client configuration: ``api_url`` (no credentials: ``kubectl proxy``, a test server), else the
    ``kubeconfig`` file, else the pod's service account (its token re-read as the kubelet rotates it)."""
    configuration = k8s.Configuration()
    try:
        if api_url:
            configuration.host = api_url.rstrip("/")
        elif kubeconfig is not None:
            k8s_config.load_kube_config(
                config_file=str(kubeconfig), client_configuration=configuration, persist_config=False
            )
        else:
            k8s_config.load_incluster_config(client_configuration=configuration, try_refresh_token=True)
    except (ConfigException, OSError) as exc:
        where = f"kubeconfig {kubeconfig}" if kubeconfig is not None else "in-cluster service account"
        raise KubeNodeError(f"Kubernetes client configuration ({where}): {exc}") from None
    return configuration


@dataclass(frozen=True)
class NodeLabels:
    """A Node's labels and which of them a field manager owns through server-side apply."""

    labels: dict[str, str]
    owned: frozenset[str]
    resource_version: str

    def matches(self, wanted: Mapping[str, str]) -> bool:
        """Whether applying ``wanted`` would change nothing: same values, and the manager owns exactly them."""
        return self.owned == frozenset(wanted) and all(self.labels.get(k) == v for k, v in wanted.items())


def _owned_labels(node: Any, manager: str) -> frozenset[str]:
    owned: set[str] = set()
    for entry in node.metadata.managed_fields or []:
        if entry.manager != manager or entry.operation != "Apply" or entry.subresource:
            continue
        labels = ((entry.fields_v1 or {}).get("f:metadata") or {}).get("f:labels") or {}
        owned.update(key[2:] for key in labels if key.startswith("f:"))
    return frozenset(owned)


class NodeApi:
    """One node, seen by one field manager."""

    def __init__(
        self,
        configuration: k8s.Configuration,
        node_name: str,
        *,
        field_manager: str = FIELD_MANAGER,
        timeout_s: float = 10.0,
    ) -> None:
        self.node_name = node_name
        self.field_manager = field_manager
        self.timeout_s = timeout_s
        self._client = k8s.ApiClient(configuration)
        self._core = k8s.CoreV1Api(self._client)

    def close(self) -> None:
        self._client.close()

    def _view(self, node: Any) -> NodeLabels:
        return NodeLabels(
            labels=dict(node.metadata.labels or {}),
            owned=_owned_labels(node, self.field_manager),
            resource_version=node.metadata.resource_version or "",
        )

    def _failed(self, call: str, exc: Exception) -> KubeNodeError:
        if isinstance(exc, ApiException):
            return KubeNodeError(f"{call} node {self.node_name}: HTTP {exc.status} {exc.reason}: {_message(exc)}")
        return KubeNodeError(f"{call} node {self.node_name}: {type(exc).__name__}: {exc}")

    def read(self) -> NodeLabels:
        try:
            return self._view(self._core.read_node(self.node_name, _request_timeout=self.timeout_s))
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._failed("get", exc) from None

    def apply_labels(self, labels: Mapping[str, str]) -> NodeLabels:
        """Server-side apply exactly ``labels`` as this manager's (force: take over other writers' values)."""
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node_name, "labels": dict(labels)}}
        try:
            node = self._core.patch_node(
                self.node_name,
                body,
                field_manager=self.field_manager,
                force=True,
                _content_type=APPLY_PATCH,
                _request_timeout=self.timeout_s,
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._failed("apply labels to", exc) from None
        return self._view(node)


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.body)
    except ValueError:
        return str(exc.body)[:200]
