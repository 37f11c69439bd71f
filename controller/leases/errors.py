"""The lease service's errors (the API maps each onto a problem type)."""

from __future__ import annotations

from typing import Any

from controller.placement import Refusal


class LeaseError(Exception):
    status = 400
    slug = "bad-request"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions


class LeaseRefused(LeaseError):
    """Nothing fits (409 no-capacity) or the tenant's quota blocks it (403 quota-exceeded)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.detail, **refusal.extensions())
        self.refusal = refusal
        self.status = refusal.status
        self.slug = refusal.slug


class LeaseNotFound(LeaseError):
    status = 404
    slug = "not-found"


class IdempotencyKeyReused(LeaseError):
    status = 422
    slug = "idempotency-key-reused"


class PlacementContended(LeaseError):
    """Every attempt lost its claim to a concurrent one (another request or replica); safe to retry."""

    status = 409
    slug = "placement-conflict"


class InvalidLeaseRequest(LeaseError):
    status = 422
    slug = "validation-error"


class QuotaExceeded(LeaseError):
    """The store's quota check after the claim: the tenant's usage (with a concurrent lease) is over a quota."""

    status = 403
    slug = "quota-exceeded"
