"""Periodic hooks other parts of the controller register (backend sync, lease expiry, ...).

A hook is a function of a :class:`JobContext`; it runs on the leader replica only, every
``interval_s`` seconds. Each app has its own registry (``app.state.hooks``), filled by ``create_app`` from the app's
lease service, validation and backend kinds; nothing registers on import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from controller.settings import Settings
from controller.store.db import Database

HookKind = Literal["backend-sync", "lease-expiry", "lease-recovery", "periodic"]


@dataclass(frozen=True)
class JobContext:
    db: Database
    settings: Settings


@dataclass(frozen=True)
class Hook:
    kind: HookKind
    name: str
    interval_s: float
    run: Callable[[JobContext], None]
    # Also run as soon as this replica becomes the leader (start-up, or taking over from a crashed leader).
    at_start: bool = False


@dataclass
class HookRegistry:
    hooks: dict[str, Hook] = field(default_factory=dict)

    def register(
        self,
        kind: HookKind,
        name: str,
        run: Callable[[JobContext], None],
        *,
        interval_s: float = 60.0,
        at_start: bool = False,
    ) -> None:
        key = f"{kind}:{name}"
        if key in self.hooks:
            raise ValueError(f"hook {key} is already registered")
        self.hooks[key] = Hook(kind=kind, name=name, interval_s=interval_s, run=run, at_start=at_start)
