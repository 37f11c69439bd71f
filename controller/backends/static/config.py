"""The stored config of a ``static`` backend: nothing to reach, only where its hosts are."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StaticConfig(BaseModel):
    """Hosts that only run the agent (servers you own); nothing to call."""

    model_config = ConfigDict(extra="allow")

    region: str | None = None
    zone: str | None = None
