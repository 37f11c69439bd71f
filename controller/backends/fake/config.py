"""The stored config of a ``fake`` backend: where its hosts are, and the failures it pretends to have."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FakeConfig(BaseModel):
    """Hosts of a pretend cloud (the demo's, a test's); nothing is called."""

    model_config = ConfigDict(extra="forbid")

    region: str | None = None
    zone: str | None = None
    no_valid_host: list[str] = Field(
        default_factory=list,
        max_length=1024,
        description="Hosts whose provisioning answers 'no valid host' (the lease is placed again without them), "
        "as Nova does when its scheduler disagrees",
    )
