"""Load the demo fleet description."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field


class FleetHost(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    spec: str
    pool: str | None = None
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
    backend: FleetBackend
    pools: list[FleetPool]
    hosts: list[FleetHost]


def load_fleet(path: Path | None = None) -> Fleet:
    if path is None:
        text = resources.files("controller.demo").joinpath("fleet.yaml").read_text()
    else:
        text = path.read_text()
    return Fleet.model_validate(yaml.safe_load(text))
