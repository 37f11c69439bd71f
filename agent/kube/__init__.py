"""The agent on a Kubernetes node: labels on its Node and the ``nvidia.com/mig.config`` workflow.

This module only decides whether and how to talk to Kubernetes (no client import): a host that is not a
Kubernetes node never loads the ``kubernetes`` package. ``agent.kube.node_sync`` does the work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

KubernetesMode = Literal["auto", "on", "off"]
MigStrategyName = Literal["none", "single", "mixed"]


@dataclass(frozen=True)
class KubeNodeConfig:
    """How the agent reaches its Node. Neither ``api_url`` nor ``kubeconfig``: the pod's service account."""

    node_name: str
    api_url: str | None = None
    kubeconfig: Path | None = None
    # The mounted mig-parted file that nvidia.com/mig.config names configs in; None: leave that label alone.
    mig_config_file: Path | None = None
    # For the GFD labels: the MIG strategy the device plugin runs with (None: the sharing config's, else none).
    mig_strategy: MigStrategyName | None = None


def in_cluster() -> bool:
    """Whether this process runs in a pod (the kubelet sets these in every container)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST") and os.environ.get("KUBERNETES_SERVICE_PORT"))


def kube_node_config(
    mode: KubernetesMode,
    *,
    node_name: str,
    api_url: str | None = None,
    kubeconfig: Path | None = None,
    mig_config_file: Path | None = None,
    mig_strategy: MigStrategyName | None = None,
) -> KubeNodeConfig | None:
    """The node's Kubernetes settings, or None when the agent should not talk to Kubernetes: ``off``, or
    ``auto`` outside a pod with neither an API URL nor a kubeconfig given. ``on`` always talks to it (a
    missing service account is then an error at start)."""
    if mode == "off" or (mode == "auto" and not (api_url or kubeconfig or in_cluster())):
        return None
    return KubeNodeConfig(
        node_name=node_name,
        api_url=api_url,
        kubeconfig=kubeconfig,
        mig_config_file=mig_config_file,
        mig_strategy=mig_strategy,
    )
