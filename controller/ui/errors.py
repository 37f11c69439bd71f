"""How the dashboard answers a refusal: an HTML page with the status and a human message (never a stack)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from controller.api.problems import Problem

T = TypeVar("T")


class UiError(Exception):
    def __init__(self, status: int, message: str, slug: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.slug = slug


def through_api(call: Callable[[], T]) -> T:
    """Run a REST route's function; its problem (404, 409 ...) becomes the page's error with the same status."""
    try:
        return call()
    except Problem as exc:
        raise UiError(exc.status, exc.detail, exc.slug) from None
