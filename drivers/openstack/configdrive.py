"""The config drive gpufabric hands to a provisioned machine: cloud-init user data that starts the agent.

Ironic (API >= 1.56) accepts the config drive as a dict (``meta_data``, ``user_data``, ``network_data``) and builds
the ISO itself; Nova takes ``user_data`` (base64) and ``key_name`` / metadata. Both paths use ``user_data`` below.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from drivers.openstack.models import LEASE_TAG, AgentBootstrap

AGENT_ENV_PATH = "/etc/gpufabric/agent.env"


def agent_env(bootstrap: AgentBootstrap, backend: str) -> str:
    lines = [
        f"GPUFABRIC_CONTROLLER_URL={bootstrap.controller_url}",
        f"GPUFABRIC_BOOTSTRAP_TOKEN={bootstrap.bootstrap_token.get_secret_value()}",
        f"GPUFABRIC_BACKEND={backend}",
    ]
    return "\n".join(lines) + "\n"


def user_data(bootstrap: AgentBootstrap, backend: str) -> str:
    """``#cloud-config``: the tenant's SSH keys, the machine's SSH host key pair, the agent's environment file
    (mode 0600), and the agent started."""
    doc: dict[str, Any] = {
        "write_files": [
            {
                "path": AGENT_ENV_PATH,
                "permissions": "0600",
                "owner": "root:root",
                "content": agent_env(bootstrap, backend),
            }
        ],
        "runcmd": [["systemctl", "enable", "--now", "gpufabric-agent.service"]],
    }
    if bootstrap.ssh_public_keys:
        doc["ssh_authorized_keys"] = list(bootstrap.ssh_public_keys)
    if bootstrap.ssh_host_key is not None:
        # The host key gpufabric made (its fingerprint is in the lease's access): no other host keys are generated.
        doc["ssh_keys"] = {
            "ed25519_private": bootstrap.ssh_host_key.private_openssh.get_secret_value(),
            "ed25519_public": bootstrap.ssh_host_key.public,
        }
        doc["ssh_genkeytypes"] = []
    if bootstrap.hostname:
        doc["hostname"] = bootstrap.hostname
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False)


def ironic_config_drive(lease_id: str, node_id: str, node_name: str, bootstrap: AgentBootstrap) -> dict[str, Any]:
    """The dict Ironic's ``set_node_provision_state(..., config_drive=...)`` accepts (it builds the ISO)."""
    meta: dict[str, Any] = {
        "uuid": node_id,
        "name": bootstrap.hostname or node_name,
        "hostname": bootstrap.hostname or node_name,
        "meta": {LEASE_TAG: lease_id, **bootstrap.extra_meta},
    }
    if bootstrap.ssh_public_keys:
        meta["public_keys"] = {f"key-{i}": key for i, key in enumerate(bootstrap.ssh_public_keys)}
    return {"meta_data": meta, "user_data": user_data(bootstrap, "ironic")}


def parse_meta(config_drive: dict[str, Any] | str) -> dict[str, Any]:
    """Inverse helper for tests and debugging: the ``meta_data`` of a dict config drive (JSON string accepted)."""
    data = json.loads(config_drive) if isinstance(config_drive, str) else config_drive
    return dict(data.get("meta_data", {}))
