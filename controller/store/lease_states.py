"""The values a lease's ``state`` column takes, and the sets of them the rest of the controller asks about.

The moves between them are the lease state machine's (``controller.leases.state``); these names live with the store
so that any layer may read a lease's state (a backend's host sync keeps hosts that hold live leases) without the
lease service.
"""

from __future__ import annotations

from typing import Literal

LeaseState = Literal["requested", "placing", "provisioning", "ready", "releasing", "released", "failed"]

STATES: tuple[LeaseState, ...] = ("requested", "placing", "provisioning", "ready", "releasing", "released", "failed")

# States in which a lease holds claims in the store.
HOLDING: frozenset[LeaseState] = frozenset({"provisioning", "ready", "releasing"})
TERMINAL: frozenset[LeaseState] = frozenset({"released", "failed"})
# States a lease passes through while a controller works on it: each has an owner and a deadline.
TRANSITIONAL: frozenset[LeaseState] = frozenset({"placing", "provisioning", "releasing"})
# A lease that is neither finished nor just asked for: what it holds or is getting must not be taken away.
LIVE: frozenset[LeaseState] = HOLDING | TRANSITIONAL
