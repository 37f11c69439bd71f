"""The NVIDIA k8s-device-plugin config file (``version: v1``): read, validate, write.

The file is accepted as the device plugin reads it (raw YAML) and as the GPU Operator ships it
(a ConfigMap whose ``data`` keys are named configs, selected per node by the
``nvidia.com/device-plugin.config`` label). Validation follows the device plugin's rules so a
config that passes here is one the plugin accepts, and errors name the offending field with the
path the user wrote (``sharing.timeSlicing.resources[1].replicas``). The models and their rules are
the wire contract's (``drivers.contract.sharing``), the same ones the controller validates desired
sharing configs with; this module reads and writes the text around them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from drivers.contract.errors import SharingConfigError
from drivers.contract.sharing import (
    DEFAULT_CONFIG_NAME,
    GPU_RESOURCE,
    MAX_REPLICAS,
    DevicePluginConfig,
    MigStrategy,
    ReplicatedResource,
    ReplicatedResources,
    SharingStrategy,
    is_known_resource,
    mig_resource_name,
    parse_config,
)

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "GPU_RESOURCE",
    "MAX_REPLICAS",
    "DevicePluginConfig",
    "MigStrategy",
    "ReplicatedResource",
    "ReplicatedResources",
    "SharingStrategy",
    "is_known_resource",
    "load_config_file",
    "load_configs",
    "mig_resource_name",
    "parse_config",
    "select_config",
    "to_configmap",
]


def _is_configmap(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == "ConfigMap"


def load_configs(text: str) -> dict[str, DevicePluginConfig]:
    """Every named config in ``text``: a raw config (named ``default``), a ConfigMap, or several docs."""
    try:
        docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise SharingConfigError(f"not valid YAML: {exc}") from None
    if not docs:
        raise SharingConfigError("the file holds no config")
    configs: dict[str, DevicePluginConfig] = {}
    for doc in docs:
        if _is_configmap(doc):
            data = doc.get("data") or {}
            if not isinstance(data, dict) or not data:
                raise SharingConfigError("ConfigMap has no data keys")
            for key, body in data.items():
                try:
                    parsed = yaml.safe_load(body) if isinstance(body, str) else body
                except yaml.YAMLError as exc:
                    raise SharingConfigError(f"config {key!r}: not valid YAML: {exc}") from None
                if key in configs:
                    raise SharingConfigError(f"config {key!r} is defined twice")
                configs[key] = parse_config(parsed, key)
        else:
            key = DEFAULT_CONFIG_NAME if DEFAULT_CONFIG_NAME not in configs else f"config-{len(configs)}"
            configs[key] = parse_config(doc, key)
    return configs


def load_config_file(path: Path) -> dict[str, DevicePluginConfig]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SharingConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    return load_configs(text)


def select_config(configs: dict[str, DevicePluginConfig], name: str | None) -> tuple[str, DevicePluginConfig]:
    """Pick one config by name; without a name the file must hold exactly one (or a ``default``)."""
    if name is not None:
        if name not in configs:
            raise SharingConfigError(f"no config named {name!r} (the file has: {', '.join(sorted(configs))})")
        return name, configs[name]
    if len(configs) == 1:
        return next(iter(configs.items()))
    if DEFAULT_CONFIG_NAME in configs:
        return DEFAULT_CONFIG_NAME, configs[DEFAULT_CONFIG_NAME]
    raise SharingConfigError(f"the file holds several configs, choose one with --name: {', '.join(sorted(configs))}")


def to_configmap(configs: dict[str, DevicePluginConfig], name: str, namespace: str | None = None) -> str:
    """Wrap named configs in a ConfigMap as the GPU Operator expects it."""
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {key: config.to_yaml() for key, config in configs.items()},
    }
    return yaml.safe_dump(doc, sort_keys=False)
