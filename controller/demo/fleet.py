"""Load the demo fleet description."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class FleetHost(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    spec: str
    pool: str | None = None
    backend: str | None = Field(default=None, description="Backend the agent registers under (default: the first)")
    mig_selected: str | None = Field(default=None, description="Select another config from the pool's MIG document")


class FleetPool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    policy: dict[str, Any] = Field(default_factory=dict)


class FleetBackend(BaseModel):
    name: str
    kind: str
    config: dict[str, Any] = Field(default_factory=dict)


class Fleet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backends: list[FleetBackend] = Field(min_length=1)
    pools: list[FleetPool]
    hosts: list[FleetHost]

    @model_validator(mode="after")
    def _known_backends(self) -> Fleet:
        names = {b.name for b in self.backends}
        for h in self.hosts:
            if h.backend is not None and h.backend not in names:
                raise ValueError(f"host {h.name}: backend {h.backend!r} is not one of the fleet's {sorted(names)}")
        return self

    def backend_of(self, host: FleetHost) -> str:
        return host.backend or self.backends[0].name


def load_fleet(path: Path | None = None) -> Fleet:
    if path is None:
        text = resources.files("controller.demo").joinpath("fleet.yaml").read_text()
    else:
        text = path.read_text()
    return Fleet.model_validate(yaml.safe_load(text))
