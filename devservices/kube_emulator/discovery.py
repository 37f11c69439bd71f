"""Discovery documents: ``/version``, ``/api``, ``/apis``, API groups and resource lists.

Part of the Kubernetes API emulator ``devservices.kube_emulator`` (see its docstring).
"""

from __future__ import annotations

from typing import Any

from devservices.kube_emulator.resources import RESOURCE_TYPES, ApiError

KUBE_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-gpufabric-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def _group_list() -> dict[str, Any]:
    groups: dict[str, list[str]] = {}
    for r in RESOURCE_TYPES:
        if r.group:
            groups.setdefault(r.group, [])
            if r.version not in groups[r.group]:
                groups[r.group].append(r.version)
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(name) for name in sorted(groups)],
    }


def _group(name: str) -> dict[str, Any]:
    versions = sorted({r.version for r in RESOURCE_TYPES if r.group == name})
    if not versions:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": entries, "preferredVersion": entries[0]}


def _resource_list(group: str, version: str) -> dict[str, Any]:
    resources = []
    for r in RESOURCE_TYPES:
        if r.group != group or r.version != version:
            continue
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        resources.append(entry)
        if r.has_status:
            resources.append(
                {
                    "name": f"{r.plural}/status",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if r.kind == "Pod":
            resources.append(
                {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]}
            )
        if r.kind == "ServiceAccount":
            resources.append(
                {
                    "name": "serviceaccounts/token",
                    "singularName": "",
                    "namespaced": True,
                    "group": "authentication.k8s.io",
                    "version": "v1",
                    "kind": "TokenRequest",
                    "verbs": ["create"],
                }
            )
    if not resources:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
