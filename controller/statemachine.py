"""Named state machines: one table of allowed moves each, and one way to make a move.

A :class:`StateMachine` lists every allowed ``(from, to)`` pair with the event that makes it (``drain``,
``result``, ``verdict``…). A move not in the table raises :class:`IllegalTransition`, which names the current
state and the moves allowed from it; the API answers it with a 409 ``illegal-transition`` problem. A state
listed as moving to itself may be set again (an idempotent repeat, e.g. draining a drained host); any other
repeat is refused like every other move not in the table.

The lease's own machine (``controller.leases.state``) predates this one and also stores every transition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class IllegalTransition(ValueError):
    """``subject`` may not move from ``current`` to ``target`` in ``machine``."""

    def __init__(self, machine: StateMachine, subject: str, current: str, target: str) -> None:
        self.machine = machine.name
        self.subject = subject
        self.current = current
        self.target = target
        self.allowed = machine.allowed(current)
        moves = ", ".join(f"{event} -> {to}" for to, event in sorted(self.allowed.items())) or "none"
        super().__init__(f"{subject}: {machine.name} {current} -> {target} is not allowed (from {current}: {moves})")

    def problem_extensions(self) -> dict[str, Any]:
        """What a client needs to act on the refusal: the machine, where the subject is, where it may go."""
        return {
            "machine": self.machine,
            "current": self.current,
            "target": self.target,
            "allowed": [{"event": event, "to": to} for to, event in sorted(self.allowed.items())],
        }


@dataclass(frozen=True)
class StateMachine:
    """``moves`` maps ``(from, to)`` to the event's name; ``initial`` is the state of a row not yet stored."""

    name: str
    initial: str
    moves: Mapping[tuple[str, str], str]
    states: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        seen = [self.initial] + [s for pair in self.moves for s in pair]
        object.__setattr__(self, "states", tuple(dict.fromkeys(seen)))

    @classmethod
    def of(cls, name: str, initial: str, *rules: tuple[str, str, str]) -> StateMachine:
        """A machine from ``(event, sources, targets)`` rules, states space-separated: the event moves every one of
        ``sources`` to every one of ``targets`` (``("result", "pending running", "succeeded failed")`` is four
        moves). A state listed in both may be set again."""
        moves = {(s, t): event for event, sources, targets in rules for s in sources.split() for t in targets.split()}
        return cls(name, initial=initial, moves=moves)

    def allowed(self, current: str) -> dict[str, str]:
        """``{to: event}`` for every move allowed from ``current``."""
        return {to: event for (source, to), event in self.moves.items() if source == current}

    def sources(self, target: str) -> tuple[str, ...]:
        """The other states ``target`` may be entered from: the filter of a bulk ``UPDATE ... SET state=target``."""
        return tuple(source for (source, to) in self.moves if to == target and source != target)

    def check(self, subject: str, current: str, target: str) -> str:
        """The event that moves ``current`` to ``target``; :class:`IllegalTransition` if the table has none."""
        event = self.moves.get((current, target))
        if event is None:
            raise IllegalTransition(self, subject, current, target)
        return event

    def move(self, row: Any, attribute: str, target: str, subject: str) -> bool:
        """Set ``row.<attribute>`` to ``target`` if the table allows it; True when the state changed.

        A row not flushed yet has no state (the column default applies at insert): it is in ``initial``."""
        current = getattr(row, attribute) or self.initial
        self.check(subject, current, target)
        setattr(row, attribute, target)
        return current != target

    def mermaid(self) -> str:
        """The table as a mermaid ``stateDiagram-v2`` (docs/architecture.md draws these; a test keeps them equal)."""
        lines = ["stateDiagram-v2", f"    [*] --> {self.initial}"]
        lines += [f"    {source} --> {to}: {event}" for (source, to), event in self.moves.items()]
        lines += [f"    {state} --> [*]" for state in self.states if not self.allowed(state)]
        return "\n".join(lines)
