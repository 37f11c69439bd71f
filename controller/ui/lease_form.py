"""The lease request form: its fields turned into the API's ``PlacementRequest`` (and shown back on error)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from pydantic import ValidationError

from controller.placement import PlacementRequest
from controller.ui.errors import UiError

KINDS = ["gpu", "mig", "timeslice", "mps", "vgpu"]
TOPOLOGIES = [
    "any",
    "same-host",
    "same-network-node-layer-3",
    "same-network-node-layer-2",
    "same-network-node-layer-1",
    "same-placement-group",
    "same-aggregate",
    "same-az",
    "same-region",
]
POLICIES = ["", "pack", "spread"]


@dataclass
class LeaseForm:
    kind: str = "gpu"
    count: str = "1"
    model: str = ""
    profile: str = ""
    vgpu_type: str = ""
    min_memory_gib: str = ""
    nodes: str = "1"
    topology: str = "any"
    backends: str = ""
    regions: str = ""
    azs: str = ""
    policy: str = ""
    duration: str = ""
    require_validated: bool = False
    tenant: str = ""

    @classmethod
    def from_fields(cls, posted: dict[str, str]) -> LeaseForm:
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "require_validated":
                values[f.name] = posted.get(f.name) in ("on", "true", "1")
            elif f.name in posted:
                values[f.name] = posted[f.name].strip()
        return cls(**values)

    def request(self) -> PlacementRequest:
        """The API's request model; a wrong field is 422 naming it, as the REST API would."""
        slice_: dict[str, Any] = {"kind": self.kind, "count": _int("count", self.count)}
        for name in ("model", "profile", "vgpu_type"):
            if getattr(self, name):
                slice_[name] = getattr(self, name)
        if self.min_memory_gib:
            try:
                slice_["min_memory_gib"] = float(self.min_memory_gib)
            except ValueError:
                raise UiError(422, f"min_memory_gib: {self.min_memory_gib!r} is not a number") from None
        body: dict[str, Any] = {"slices": [slice_], "nodes": _int("nodes", self.nodes), "topology": self.topology}
        for name in ("backends", "regions", "azs"):
            items = [v.strip() for v in getattr(self, name).split(",") if v.strip()]
            if items:
                body[name] = items
        if self.policy:
            body["policy"] = self.policy
        if self.duration:
            body["duration"] = int(self.duration) if self.duration.isdigit() else self.duration
        if self.require_validated:
            body["require_validated"] = True
        try:
            return PlacementRequest.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"] if p not in ("slices", 0))
            raise UiError(422, f"{where or 'request'}: {first['msg']}") from None


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UiError(422, f"{name}: {value!r} is not a whole number") from None
