"""Health rules (configurable thresholds and resulting states) and the XID catalog they use."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drivers.contract.inventory import HealthState

XidAction = Literal["informational", "application", "gpu-reset", "node-reboot", "hardware"]
STATE_ORDER: dict[str, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2, "quarantined": 3}


class HealthRulesError(ValueError):
    """A rules file that does not validate; the message names the field."""


class XidEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mnemonic: str
    description: str
    action: XidAction
    confidence: Literal["high", "medium", "low"] = "medium"


class XidCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    action_states: dict[XidAction, HealthState]
    xids: dict[int, XidEntry]


@cache
def xid_catalog() -> XidCatalog:
    """The bundled XID table (``agent/health/xid_catalog.yaml``)."""
    text = resources.files("agent.health").joinpath("xid_catalog.yaml").read_text()
    return XidCatalog.model_validate(yaml.safe_load(text))


class XidClass(BaseModel):
    xid: int
    action: XidAction
    state: HealthState
    mnemonic: str
    description: str
    known: bool


class HealthRules(BaseModel):
    """What counts as unhealthy and how long it lasts. Every field has a working default."""

    model_config = ConfigDict(extra="forbid")

    xid_overrides: dict[int, XidAction] = Field(
        default_factory=dict, description="Reclassify XIDs, e.g. {13: informational}"
    )
    action_states: dict[XidAction, HealthState] = Field(
        default_factory=dict, description="Override the state an XID action class leads to"
    )
    unknown_xid_action: XidAction = "gpu-reset"
    transient_clear_after_s: float = Field(
        default=600.0, gt=0, description="Application-fault XIDs clear after this long without a repeat"
    )
    ecc_dbe_threshold: int = Field(default=0, ge=0, description="Volatile uncorrected ECC count above this")
    ecc_dbe_state: HealthState = "unhealthy"
    retired_pages_pending_state: HealthState = "degraded"
    retired_pages_limit: int = Field(default=60, ge=1, description="Retired pages at which to replace the GPU")
    retired_pages_limit_state: HealthState = "quarantined"
    remap_pending_state: HealthState = "degraded"
    remap_failure_state: HealthState = "quarantined"
    gpu_lost_state: HealthState = "unhealthy"
    temperature_limit_c: int | None = Field(
        default=None, description="Thermal limit; default: the GPU's NVML slowdown threshold, else 85"
    )
    temperature_fallback_c: int = 85
    temperature_hysteresis_c: int = Field(default=5, ge=0)
    thermal_state: HealthState = "degraded"
    power_limit_ratio: float = Field(default=1.0, gt=0, description="Draw above ratio x enforced limit")
    power_state: HealthState = "degraded"
    event_wait_ms: int = Field(default=0, ge=0, description="How long one observe waits for XID events")

    @classmethod
    def from_file(cls, path: Path) -> HealthRules:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise HealthRulesError(f"health rules {path}: {exc}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            fields = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
            raise HealthRulesError(f"health rules {path}: {fields}") from None

    def classify_xid(self, xid: int) -> XidClass:
        catalog = xid_catalog()
        entry = catalog.xids.get(xid)
        action: XidAction = self.xid_overrides.get(xid) or (entry.action if entry else self.unknown_xid_action)
        states = {**catalog.action_states, **self.action_states}
        return XidClass(
            xid=xid,
            action=action,
            state=states[action],
            mnemonic=entry.mnemonic if entry else "UNKNOWN",
            description=entry.description if entry else f"XID {xid} (not in the bundled catalog)",
            known=entry is not None,
        )


def worst(states: list[HealthState]) -> HealthState:
    result: HealthState = "healthy"
    for state in states:
        if STATE_ORDER[state] > STATE_ORDER[result]:
            result = state
    return result
