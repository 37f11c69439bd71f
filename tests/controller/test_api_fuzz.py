"""Schemathesis against the controller's own OpenAPI document, in-process (ASGI), with an admin and a tenant
token: every operation gets its examples, the coverage phase's boundary values and Hypothesis-generated valid
and invalid requests (schemathesis' own engine, as its CLI runs it, without the stateful phase). A response must
never be a 5xx, and its status code, content type and body must be ones the document declares for that
operation.

Agent routes (``/v1/agents/...``) are left out: the node agent calls them with a per-host credential bound to
the ``{host}`` path parameter, so a generated hostname only ever meets 403; their contract is
``drivers.contract.protocol`` and their hostile cases (takeover, another host's GPU UUID, oversized reports)
are tested in ``test_agent_protocol.py`` and ``test_hostile_input.py``.

Bounded: ``GPUFABRIC_FUZZ_EXAMPLES`` (default 20) generated requests per operation and token on top of the
coverage phase, with a fixed seed; about a minute on two cores. Select it alone with ``pytest -m fuzz``;
``GPUFABRIC_FUZZ_REPORT=<file>`` writes the counts as JSON.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import from_schema
from schemathesis.engine.events import FatalError, FuzzScenarioFinished, NonFatalError, ScenarioFinished
from starlette.testclient import TestClient

from controller.api.app import create_app
from controller.auth.tokens import Role, create_api_token
from controller.settings import Settings
from controller.store.db import Database
from drivers.contract.protocol import InventoryReport, RegisterRequest
from tests.support.helpers import synthetic_inventory

pytestmark = pytest.mark.fuzz

FUZZ_EXAMPLES = int(os.environ.get("GPUFABRIC_FUZZ_EXAMPLES", "20"))
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance")


def fuzz_config(token: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": 13,  # the same requests on every run; raise GPUFABRIC_FUZZ_EXAMPLES locally to search further
            "headers": {"Authorization": f"Bearer {token}"},
            "generation": {"mode": "all", "max-examples": FUZZ_EXAMPLES, "allow-x00": True},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "workers": 1,
        }
    )


@dataclass
class FuzzRun:
    """What one schemathesis run sent and found."""

    requests: int = 0
    server_errors: int = 0
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add_scenario(self, recorder: object) -> None:
        interactions = getattr(recorder, "interactions", {})
        self.requests += len(interactions)
        self.server_errors += sum(
            1 for i in interactions.values() if i.response is not None and i.response.status_code >= 500
        )
        for case_id, checks in getattr(recorder, "checks", {}).items():
            for check in checks:
                if check.failure_info is not None:
                    case = recorder.cases[case_id].value  # type: ignore[attr-defined]
                    failure = check.failure_info.failure
                    self.failures.append(
                        f"{case.operation.label}: {check.name}: {failure.title}: {failure.message}\n"
                        f"    {check.failure_info.code_sample}"
                    )


def run_schemathesis(app: FastAPI, token: str) -> FuzzRun:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=fuzz_config(token))
    schema = schema.exclude(path_regex="^/v1/agents/")
    run = FuzzRun()
    for event in from_schema(schema).execute():
        if isinstance(event, ScenarioFinished | FuzzScenarioFinished):
            run.add_scenario(event.recorder)
        elif isinstance(event, NonFatalError):
            # The in-process transport re-raises an unhandled exception instead of answering 500: a server error.
            run.server_errors += 1
            run.errors.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, FatalError):
            raise event.exception
    return run


@pytest.fixture(scope="module")
def fuzz_counts() -> Iterator[Counter[str]]:
    counts: Counter[str] = Counter()
    yield counts
    target = os.environ.get("GPUFABRIC_FUZZ_REPORT")
    if target:
        Path(target).write_text(json.dumps(dict(sorted(counts.items())), indent=2) + "\n")


@pytest.fixture
def fuzzed_controller(
    migrated_db: Database, database_url: str, tmp_path: Path
) -> Iterator[tuple[FastAPI, dict[str, str]]]:
    """A controller (SQLite, then PostgreSQL) with two hosts of GPUs, so leases can be placed, and a token per role."""
    with migrated_db.session() as session:
        _, admin = create_api_token(session, role=Role.admin, name="fuzz-admin")
        _, tenant = create_api_token(session, role=Role.tenant, name="fuzz-tenant", tenant="acme")
        _, bootstrap = create_api_token(session, role=Role.bootstrap, name="fuzz-bootstrap")
    settings = Settings.model_validate({"data_dir": tmp_path, "database_url": database_url, "scheduler_enabled": False})
    app = create_app(settings, db=migrated_db)
    with TestClient(app) as client:
        for hostname in ("fuzz-a", "fuzz-b"):
            body = RegisterRequest(hostname=hostname, agent_version="test").model_dump(mode="json")
            registered = client.post("/v1/agents/register", json=body, headers={"Authorization": f"Bearer {bootstrap}"})
            assert registered.status_code == 201, registered.text
            report = InventoryReport(generation=1, inventory=synthetic_inventory(hostname, gpus=4))
            reported = client.put(
                f"/v1/agents/{hostname}/inventory",
                json=report.model_dump(mode="json"),
                headers={"Authorization": f"Bearer {registered.json()['credential']}"},
            )
            assert reported.status_code == 200, reported.text
        yield app, {"admin": admin, "tenant": tenant}


@pytest.mark.parametrize("role", ["tenant", "admin"])
def test_api_conforms_to_its_document(
    role: str, fuzzed_controller: tuple[FastAPI, dict[str, str]], fuzz_counts: Counter[str]
) -> None:
    app, tokens = fuzzed_controller
    run = run_schemathesis(app, tokens[role])
    dialect = fuzzed_controller[0].state.db.dialect
    fuzz_counts[f"{dialect}.{role}.requests"] += run.requests
    fuzz_counts[f"{dialect}.{role}.5xx"] += run.server_errors
    fuzz_counts[f"{dialect}.{role}.failures"] += len(run.failures)
    assert run.requests > 100, f"schemathesis sent only {run.requests} requests"
    assert run.server_errors == 0 and not run.failures, (
        f"{run.server_errors} server errors in {run.requests} requests; failures:\n"
        + "\n".join(run.failures + run.errors)
    )
