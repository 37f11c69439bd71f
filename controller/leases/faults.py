"""Test-only crash points in the lease lifecycle.

``crash_point(name)`` ends the process at once (``os._exit``, no cleanup, no commit) when the environment variable
``GPUFABRIC_TEST_CRASH_AT`` names that point; the crash suite (tests/controller/test_crash_recovery.py) starts a
controller replica with it set, drives a lease into the point, restarts the replica and checks that nothing was
stranded. Unset (always, outside that suite) a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import sys

CRASH_ENV = "GPUFABRIC_TEST_CRASH_AT"
CRASH_EXIT_CODE = 86

# Every point, in lifecycle order; the crash suite tries each one.
POINTS: tuple[str, ...] = (
    "create.claimed",  # the lease and its claims are committed (provisioning); the backend was not called
    "create.provisioned",  # the backend answered; ``ready`` was not committed
    "release.marked",  # ``releasing`` is committed; the backend was not called
    "release.backend-released",  # the backend released; the claims are still live
    "recover.taken",  # recovery took a lease over (committed) and had not driven it yet
)

log = logging.getLogger("gpufabric.leases")


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        log.critical("crash point %s: exiting now (%s is set)", name, CRASH_ENV)
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)
