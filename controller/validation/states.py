"""The state machines of a validation and of each of its runs (docs/architecture.md draws them).

A validation starts ``pending``, is ``running`` once any of its runs started (or finished), and ends with the
verdict: ``passed``, ``failed`` (a run failed or fell short) or ``error`` (some run could not be judged). It
may end straight from ``pending`` when a run could not even start (the MPIJob was refused, the backend is
gone). A run's status says how its execution went, not the verdict.
"""

from __future__ import annotations

from typing import Literal

from controller.statemachine import StateMachine
from controller.validation.models import Validation, ValidationRun

ValidationStatus = Literal["pending", "running", "passed", "failed", "error"]
RunStatus = Literal["pending", "running", "succeeded", "failed"]

VALIDATION_STATUS = StateMachine.of(
    "validation status",
    "pending",
    ("started", "pending", "running"),
    ("verdict", "pending", "failed error"),
    ("verdict", "running", "passed failed error"),
)

RUN_STATUS = StateMachine.of(
    "validation run status",
    "pending",
    ("started", "pending running", "running"),
    ("finished", "pending running", "succeeded failed"),
)


def set_validation_status(validation: Validation, target: ValidationStatus) -> bool:
    return VALIDATION_STATUS.move(validation, "status", target, f"validation {validation.id}")


def set_run_status(run: ValidationRun, target: RunStatus) -> bool:
    return RUN_STATUS.move(run, "status", target, f"validation {run.validation_id} run {run.id}")
