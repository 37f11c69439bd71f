"""Every way a REST command can fail ends in one line on stderr and a non-zero exit, never a traceback: no token,
a refused token (401) or role (403), an unreachable controller (refused connection, unknown name, no answer), a
refusal with problem+json fields (4xx), a controller error (5xx), a bad command line."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from controller.testing import free_port
from tests.support.cli_helpers import Cli, assert_one_line_error, isolated_cli, sqlite_url
from tests.support.controller import Controller


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    return isolated_cli(monkeypatch, tmp_path)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_no_token_anywhere(cli: Cli, controller: Controller) -> None:
    assert_one_line_error(cli("lease", "list", "--controller", controller.url), 2, "no API token", "GPUFABRIC_TOKEN")


def test_a_refused_token_and_a_refused_role(cli: Cli, controller: Controller) -> None:
    bad = cli("hosts", "list", "--controller", controller.url, "--token", "gft_nope_nope")
    assert_one_line_error(bad, 2, "HTTP 401", "check the token")
    tenant = cli("hosts", "list", "--controller", controller.url, "--token", controller.tenant_token)
    assert_one_line_error(tenant, 2, "HTTP 403", "role tenant may not do this (allowed: admin)")


def test_connection_refused_names_the_url(cli: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("lease", "list", "--controller", url, "--token", "gft_x_y")
    assert_one_line_error(result, 3, f"cannot reach the controller at {url}", "refused")


def test_an_unknown_host_name_names_the_url(cli: Cli) -> None:
    url = "http://gpufabric-controller.invalid:8080"  # .invalid never resolves (RFC 6761)
    assert_one_line_error(cli("hosts", "list", "--controller", url, "--token", "gft_x_y"), 3, url)


def test_no_answer_is_a_timeout_naming_the_url(cli: Cli, silent_server: str) -> None:
    result = cli(
        "lease", "list", "--controller", silent_server, "--token", "gft_x_y", env={"GPUFABRIC_REQUEST_TIMEOUT": "0.2"}
    )
    assert_one_line_error(result, 3, f"the controller at {silent_server} did not answer within 0.2 s")


def test_a_validation_error_names_the_fields(cli: Cli, controller: Controller) -> None:
    common = ("--controller", controller.url, "--token", controller.tenant_token)
    one = cli("lease", "create", "--slice", "kind=gpu,count=0", *common)
    line = assert_one_line_error(one, 2, "HTTP 422: Request is not valid: body.slices.0.count")
    assert "greater than or equal to 1" in line
    two = cli("lease", "create", "--slice", "kind=gpu,count=0", "--slice", "kind=banana", *common)
    assert_one_line_error(two, 2, "body.slices.0.count", "body.slices.1.kind")


def test_not_found_and_its_problem_as_json(cli: Cli, controller: Controller) -> None:
    common = ("--controller", controller.url, "--token", controller.tenant_token)
    assert_one_line_error(cli("lease", "show", "nope", *common), 2, "HTTP 404: Not found: lease nope not found")
    as_json = cli("lease", "show", "nope", "--json", *common)
    assert_one_line_error(as_json, 2, "HTTP 404")
    problem = json.loads(as_json.stdout)
    assert problem["type"] == "https://gpufabric.dev/problems/not-found" and problem["status"] == 404


def test_a_controller_error_is_one_line(cli: Cli, controller: Controller) -> None:
    """A real 500: the validations table is gone from under the running controller."""
    with controller.db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE validations RENAME TO validations_gone"))
    result = cli("validations", "list", "--controller", controller.url, "--token", controller.admin_token)
    assert_one_line_error(result, 3, "HTTP 500", "internal error; see the controller log")


def test_bad_command_lines(cli: Cli, controller: Controller) -> None:
    token = ("--token", controller.tenant_token)
    assert_one_line_error(cli("lease", "list", "--controller", "localhost:8080", *token), 2, "must be http://HOST")
    common = ("--controller", controller.url, *token)
    assert_one_line_error(cli("lease", "create", "--slice", "gpu", *common), 2, "expected key=value pairs")
    assert_one_line_error(cli("lease", "create", "--slice", "model=A100", *common), 2, "kind is missing")
    assert_one_line_error(cli("lease", "create", "--slice", "kind=gpu,count=two", *common), 2, "whole number")
    assert_one_line_error(cli("lease", "create", *common), 2, "nothing to place")
    assert_one_line_error(cli("lease", "create", "--file", "/nonexistent.json", *common), 2, "cannot read")
    timeout = cli("lease", "list", *common, env={"GPUFABRIC_REQUEST_TIMEOUT": "soon"})
    assert_one_line_error(timeout, 2, "GPUFABRIC_REQUEST_TIMEOUT must be a positive number")
