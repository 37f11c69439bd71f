"""Placement: where a tenant's GPU slices go. A pure, in-memory engine the store layer feeds.

Public API: ``Engine`` (decide / claim / release / upsert_host ...), the model (``Host``, ``Device``,
``MigSlot``, ``VgpuOffer``), the request language (``PlacementRequest``, ``SliceRequest``,
``parse_request``) and the results (``Decision``, ``Refusal``, ``Claim``, ``Allocation``, ``MigCreate``,
``MigDestroy``). See docs/placement.md.
"""

from controller.placement.decision import (
    Allocation,
    Claim,
    ClaimConflict,
    Decision,
    HostPlan,
    MigCreate,
    MigDestroy,
    PlacementError,
    Refusal,
    UnknownClaim,
)
from controller.placement.engine import Engine
from controller.placement.filters import QuotaCheck
from controller.placement.funnel import Funnel, NearestFit
from controller.placement.model import Device, Host, MigSlot, VgpuOffer
from controller.placement.request import PlacementRequest, SliceRequest, parse_request
from controller.placement.weighers import WeigherConfig

__all__ = [
    "Allocation",
    "Claim",
    "ClaimConflict",
    "Decision",
    "Device",
    "Engine",
    "Funnel",
    "Host",
    "HostPlan",
    "MigCreate",
    "MigDestroy",
    "MigSlot",
    "NearestFit",
    "PlacementError",
    "PlacementRequest",
    "QuotaCheck",
    "Refusal",
    "SliceRequest",
    "UnknownClaim",
    "VgpuOffer",
    "WeigherConfig",
    "parse_request",
]
