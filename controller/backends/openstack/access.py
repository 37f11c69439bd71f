"""What an Ironic, Nova or Cyborg lease hands its tenant (``result["access"]``): how to reach its machines over SSH.

Per machine: its reachable addresses, the SSH host key gpufabric made for it (``drivers.openstack.host_keys``: the
public half and its fingerprint, so the first connection is checked, not trusted) with ready ``known_hosts`` lines,
and a console URL where the cloud offers one to the tenant (Nova's noVNC console; Ironic's node console is the BMC's,
an admin tool, so none). The keys it authorised are the tenant's (the backend's per-tenant keys and the request's
``ssh_public_keys``), written by cloud-init from the user data / config drive.
"""

from __future__ import annotations

from typing import Any

from controller.backends.contract import LeaseInfo
from controller.backends.openstack.common import tenant_ssh_keys
from controller.backends.openstack.config import OpenStackBackendConfig
from drivers.openstack import NovaDriver, OpenStackError, ProvisionedServer, fingerprint


def machine(
    host: str, name: str, addresses: list[str], host_public_key: str | None, console_url: str | None, console: str
) -> dict[str, Any]:
    """One machine's entry: ``console`` says why there is no ``console_url`` (or what the URL is)."""
    ips = [a for a in addresses if not a.startswith("mac:")]
    entry: dict[str, Any] = {
        "host": host,
        "name": name,
        "addresses": ips,
        "mac_addresses": [a.removeprefix("mac:") for a in addresses if a.startswith("mac:")],
        "host_public_key": host_public_key,
        "host_key_fingerprint": fingerprint(host_public_key) if host_public_key else None,
        "known_hosts": [f"{ip} {host_public_key}" for ip in ips] if host_public_key else [],
        "console_url": console_url,
        "console": console,
    }
    return entry


def ssh_access(config: OpenStackBackendConfig, lease: LeaseInfo, machines: list[dict[str, Any]]) -> dict[str, Any]:
    keys = tenant_ssh_keys(config, lease)
    user = config.ssh_user
    login = user or "<the image's default user>"
    first = next((m for m in machines if m["addresses"]), None)
    example = f"ssh {login}@{first['addresses'][0]}" if first else f"ssh {login}@<address>"
    return {
        "kind": "ssh",
        "user": user,
        "ssh_keys": keys,
        "machines": machines,
        "how_to": (
            f"Add each machine's known_hosts lines to ~/.ssh/known_hosts (or check host_key_fingerprint when ssh asks), "
            f"then `{example}` with the private half of one of ssh_keys"
            if keys
            else "No SSH key was given (request ssh_public_keys, or the backend's tenant_ssh_keys): the machines "
            "accept no SSH login"
        ),
    }


def server_machines(driver: NovaDriver, states: dict[str, ProvisionedServer]) -> list[dict[str, Any]]:
    """Each Nova server's SSH entry (``nova`` and ``cyborg`` kinds), with a noVNC console URL when Nova gives the
    tenant one."""
    out = []
    for host, s in sorted(states.items()):
        try:
            url: str | None = driver.console_url(s.server_id)
            console = "Nova noVNC console; its token expires after Nova's [consoleauth] token_ttl (10 min by default)"
        except OpenStackError as exc:
            url, console = None, f"none: Nova gave no console ({exc})"
        out.append(machine(host, s.name, s.addresses, s.host_public_key, url, console))
    return out
