"""The state-machine tables: what each allows and refuses, the refusal a client sees, and the drawings in
docs/architecture.md being the tables."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from controller.fleet.states import ADMIN_STATE, HOST_STATUS, TASK_STATUS
from controller.leases.state import TRANSITIONS
from controller.statemachine import IllegalTransition, StateMachine
from controller.validation.states import RUN_STATUS, VALIDATION_STATUS

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"

# What each table must refuse, stated apart from the tables (every pair of its states not listed is allowed).
REFUSED: dict[str, tuple[StateMachine, set[tuple[str, str]]]] = {
    "admin": (ADMIN_STATE, {("quarantined", "drained")}),
    "host-status": (
        HOST_STATUS,
        {("registered", "registered"), ("ready", "registered"), ("unreachable", "registered")},
    ),
    "task": (
        TASK_STATUS,
        {("pending", "pending"), ("running", "pending")}
        | {(done, s) for done in ("succeeded", "failed", "cancelled") for s in TASK_STATUS.states},
    ),
    "validation": (
        VALIDATION_STATUS,
        {("pending", "pending"), ("pending", "passed"), ("running", "pending"), ("running", "running")}
        | {(done, s) for done in ("passed", "failed", "error") for s in VALIDATION_STATUS.states},
    ),
    "run": (
        RUN_STATUS,
        {("pending", "pending"), ("running", "pending")}
        | {(done, s) for done in ("succeeded", "failed") for s in RUN_STATUS.states},
    ),
}

STATES = {
    "admin": {"active", "drained", "quarantined"},
    "host-status": {"registered", "ready", "unreachable"},
    "task": {"pending", "running", "succeeded", "failed", "cancelled"},
    "validation": {"pending", "running", "passed", "failed", "error"},
    "run": {"pending", "running", "succeeded", "failed"},
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_every_allowed_move_works_and_every_other_is_refused(name: str) -> None:
    machine, refused = REFUSED[name]
    assert set(machine.states) == STATES[name]
    for source, target in itertools.product(machine.states, repeat=2):
        row = SimpleNamespace(state=source)
        if (source, target) in refused:
            with pytest.raises(IllegalTransition) as caught:
                machine.move(row, "state", target, "it")
            assert (caught.value.current, caught.value.target) == (source, target)
            assert row.state == source
        else:
            assert machine.move(row, "state", target, "it") == (source != target)
            assert row.state == target


def test_a_row_not_stored_yet_starts_in_the_initial_state() -> None:
    host = SimpleNamespace(status=None)  # a new ORM row before its insert: the column default is not applied yet
    assert HOST_STATUS.move(host, "status", "ready", "host new")
    with pytest.raises(IllegalTransition):
        HOST_STATUS.move(SimpleNamespace(status=None), "status", "registered", "host new")


def test_bulk_updates_filter_on_the_sources_of_their_target() -> None:
    assert set(HOST_STATUS.sources("ready")) == {"registered", "unreachable"}
    assert set(HOST_STATUS.sources("unreachable")) == {"registered", "ready"}
    assert HOST_STATUS.sources("registered") == ()


def test_the_refusal_names_the_current_state_and_the_allowed_moves() -> None:
    with pytest.raises(IllegalTransition) as caught:
        ADMIN_STATE.check("host h1", "quarantined", "drained")
    assert str(caught.value) == (
        "host h1: admin state quarantined -> drained is not allowed "
        "(from quarantined: undrain -> active, quarantine -> quarantined)"
    )
    assert caught.value.problem_extensions() == {
        "machine": "admin state",
        "current": "quarantined",
        "target": "drained",
        "allowed": [{"event": "undrain", "to": "active"}, {"event": "quarantine", "to": "quarantined"}],
    }
    with pytest.raises(IllegalTransition, match=r"from succeeded: none\)"):
        TASK_STATUS.check("task t", "succeeded", "running")


def _mermaid_blocks() -> list[str]:
    return re.findall(r"```mermaid\n(.*?)\n```", ARCHITECTURE.read_text(), flags=re.S)


@pytest.mark.parametrize("machine", [ADMIN_STATE, HOST_STATUS, TASK_STATUS, VALIDATION_STATUS, RUN_STATUS])
def test_architecture_draws_each_table(machine: StateMachine) -> None:
    assert machine.mermaid() in _mermaid_blocks(), f"docs/architecture.md does not draw the {machine.name} table"


def test_architecture_draws_the_lease_table() -> None:
    edge = re.compile(r"^\s*(\w+) --> (\w+)$", flags=re.M)
    drawn = [set(edge.findall(block)) for block in _mermaid_blocks() if "requested --> placing" in block]
    assert drawn == [{(s, t) for s, targets in TRANSITIONS.items() for t in targets}]
