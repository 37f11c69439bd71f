"""Small value types shared by the EKS driver modules."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

# EKS sets no placement-group label itself; the eksctl import adds this one to groups with a placement group.
PLACEMENT_GROUP_LABEL = "gpufabric.io/placement-group"

TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]

# The EKS API spells effects in upper snake case; Kubernetes and eksctl in camel case.
_EKS_TO_KUBE: dict[str, TaintEffect] = {
    "NO_SCHEDULE": "NoSchedule",
    "PREFER_NO_SCHEDULE": "PreferNoSchedule",
    "NO_EXECUTE": "NoExecute",
}
_KUBE_TO_EKS = {v: k for k, v in _EKS_TO_KUBE.items()}


class Taint(BaseModel):
    """A node taint in Kubernetes spelling (``effect: NoSchedule``)."""

    model_config = ConfigDict(frozen=True)

    key: str
    value: str | None = None
    effect: TaintEffect

    @classmethod
    def from_eks(cls, raw: dict[str, str]) -> Taint:
        effect = _EKS_TO_KUBE.get(raw["effect"], raw["effect"])
        return cls(key=raw["key"], value=raw.get("value") or None, effect=effect)  # type: ignore[arg-type]

    def to_eks(self) -> dict[str, str]:
        out = {"key": self.key, "effect": _KUBE_TO_EKS[self.effect]}
        if self.value is not None:
            out["value"] = self.value
        return out

    def to_kube(self) -> dict[str, str]:
        out = {"key": self.key, "effect": self.effect}
        if self.value is not None:
            out["value"] = self.value
        return out

    def toleration(self) -> dict[str, str]:
        """The toleration a pod needs to land on a node with this taint."""
        if self.value is None:
            return {"key": self.key, "operator": "Exists", "effect": self.effect}
        return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}
