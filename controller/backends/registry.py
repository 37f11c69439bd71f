"""The registry of backend kinds: each kind names a pydantic model its ``config`` must satisfy.

Later work (provisioning, sync) attaches behaviour per kind through :func:`register_kind`; the
admin API validates a backend's config with the model registered for its kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from controller.backends.eks_config import EksConfig
from controller.backends.openstack_config import IronicConfig, NovaConfig


class _Config(BaseModel):
    model_config = ConfigDict(extra="allow")


class StaticConfig(_Config):
    """Hosts that only run the agent (servers you own); nothing to call."""

    region: str | None = None
    zone: str | None = None


@dataclass
class BackendKind:
    name: str
    config_model: type[BaseModel]
    description: str
    extras: dict[str, Any] = field(default_factory=dict)


class UnknownBackendKind(ValueError):
    pass


class InvalidBackendConfig(ValueError):
    pass


_KINDS: dict[str, BackendKind] = {}


def register_kind(kind: BackendKind) -> None:
    _KINDS[kind.name] = kind


def get_kind(name: str) -> BackendKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise UnknownBackendKind(f"unknown backend kind {name!r} (known: {sorted(_KINDS)})") from None


def kinds() -> list[str]:
    return sorted(_KINDS)


def validate_config(kind_name: str, config: dict[str, Any]) -> dict[str, Any]:
    kind = get_kind(kind_name)
    try:
        model = kind.config_model.model_validate(config)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidBackendConfig(f"{kind_name} config: {where}: {first['msg']}") from None
    return model.model_dump(mode="json", exclude_none=True)


for _kind in (
    BackendKind("static", StaticConfig, "Hosts that only run the gpufabric agent"),
    BackendKind("ironic", IronicConfig, "OpenStack Ironic bare-metal nodes (whole-node passthrough)"),
    BackendKind("nova", NovaConfig, "OpenStack Nova hosts (PCI passthrough, vGPU)"),
    BackendKind("eks", EksConfig, "AWS EKS GPU nodegroups"),
):
    register_kind(_kind)
