"""Polling with the caller's interval and deadline.

openstacksdk's ``wait=True`` / ``wait_for_*`` poll on a fixed 2 s interval; an Ironic fake-hardware transition takes
about 0.1-0.3 s and a real one minutes, so the interval and the timeout are the caller's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class PollPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_s: float = Field(default=5.0, gt=0)
    timeout_s: float = Field(default=1800.0, gt=0)


class PollTimeout(Exception):
    def __init__(self, last: object, waited_s: float) -> None:
        super().__init__(f"still not there after {waited_s:.2f} s")
        self.last = last
        self.waited_s = waited_s


def poll(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    policy: PollPolicy,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fetch`` until ``done(result)`` (returned) or the deadline passes (``PollTimeout`` with the last result).

    ``done`` may raise to stop early (e.g. on a failure state).
    """
    start = clock()
    deadline = start + policy.timeout_s
    while True:
        value = fetch()
        if done(value):
            return value
        now = clock()
        if now >= deadline:
            raise PollTimeout(value, now - start)
        sleep(min(policy.interval_s, max(deadline - now, 0.0)))
