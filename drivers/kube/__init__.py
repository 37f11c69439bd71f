"""A node's own view of Kubernetes: read its Node's labels and server-side apply the labels it owns.

Imports only the official ``kubernetes`` client (no boto3), so the node agent may use it; neither ``agent``
nor ``controller``.
"""

from drivers.kube.node import (
    FIELD_MANAGER,
    KubeNodeError,
    NodeApi,
    NodeLabels,
    invalid_label,
    node_api_configuration,
)

__all__ = [
    "FIELD_MANAGER",
    "KubeNodeError",
    "NodeApi",
    "NodeLabels",
    "invalid_label",
    "node_api_configuration",
]
