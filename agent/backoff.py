"""How the agent waits: back-off with full jitter, the controller's ``Retry-After``, the jittered report interval
and the retry of a failed apply. Every wait is randomised so a fleet never arrives in lockstep (100,000 agents
reconnecting after an outage, a DaemonSet rollout)."""

from __future__ import annotations

import email.utils
import math
import random
from datetime import UTC, datetime

from tenacity import RetryCallState
from tenacity.wait import wait_base


class ControllerUnreachable(RuntimeError):
    """Transport error, 429 or 5xx: try again later; the GPUs are not touched.

    ``retry_after_s`` is the controller's ``Retry-After`` hint from the last response, if it sent one.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


REQUEST_ATTEMPTS = 3
# Without Retry-After, retries within one request wait uniform(0, min(cap, base * 2^n)).
REQUEST_BACKOFF_BASE_S = 0.5
REQUEST_BACKOFF_CAP_S = 4.0
# Between failed cycles: uniform(floor, min(max_backoff_s, base * 2^failures)).
CYCLE_BACKOFF_BASE_S = 1.0
CYCLE_BACKOFF_FLOOR_S = 1.0
# Added on top of Retry-After, as a fraction of it: agents told the same value still spread out.
RETRY_AFTER_JITTER = 0.1
# A desired state the agent failed to apply is tried again after base * 2^(failures-1), at most the cap (a busy
# process holding a GPU, a driver hiccup: what an operator fixes without changing the desired state).
APPLY_RETRY_BASE_S = 60.0
APPLY_RETRY_CAP_S = 900.0


def apply_retry_delay_s(failures: int) -> float:
    """How long after its last failed apply the same desired state is tried again."""
    return min(APPLY_RETRY_CAP_S, APPLY_RETRY_BASE_S * 2 ** max(0, failures - 1))


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds from a ``Retry-After`` header: delay-seconds or an HTTP-date (RFC 9110, 10.2.3).

    Also accepts fractional seconds. None when absent or unparsable; a date in the past is 0.
    """
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until_http_date(text, now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _seconds_until_http_date(text: str, now: datetime) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def full_jitter(rng: random.Random, exponent: int, *, base_s: float, cap_s: float, floor_s: float = 0.0) -> float:
    """uniform(floor, min(cap, base * 2^exponent)): the "full jitter" backoff, never below ``floor_s``."""
    ceiling = min(cap_s, base_s * 2.0 ** min(exponent, 32))
    return rng.uniform(floor_s, max(floor_s, ceiling))


def retry_after_delay(rng: random.Random, retry_after_s: float, *, cap_s: float) -> float:
    """The controller's hint capped at ``cap_s``, plus up to ``RETRY_AFTER_JITTER`` of it; never less."""
    delay = min(retry_after_s, cap_s)
    return delay * (1.0 + rng.uniform(0.0, RETRY_AFTER_JITTER))


def jittered_interval(rng: random.Random, interval_s: float, fraction: float) -> float:
    """``interval_s`` scaled by uniform(1 - fraction, 1 + fraction); exactly ``interval_s`` for 0."""
    if fraction <= 0:
        return interval_s
    return interval_s * rng.uniform(1.0 - fraction, 1.0 + fraction)


class WaitRetryAfterOrFullJitter(wait_base):
    """Tenacity wait: the last response's Retry-After when it had one, else exponential full jitter."""

    def __init__(self, rng: random.Random, *, cap_s: float) -> None:
        self.rng = rng
        self.cap_s = cap_s

    def __call__(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        hint = error.retry_after_s if isinstance(error, ControllerUnreachable) else None
        if hint is not None:
            return retry_after_delay(self.rng, hint, cap_s=self.cap_s)
        exponent = retry_state.attempt_number - 1
        return full_jitter(self.rng, exponent, base_s=REQUEST_BACKOFF_BASE_S, cap_s=REQUEST_BACKOFF_CAP_S)
