"""Running `gpufabric` REST commands in tests: typer's CliRunner with the CLI's config file, its environment
variables and the terminal size under the test's control."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from controller.cli import app

# Every variable a REST command reads; a developer's own login or token must not leak into a test.
CLI_ENV = (
    "GPUFABRIC_CLI_CONFIG",
    "GPUFABRIC_CONTROLLER_URL",
    "GPUFABRIC_TOKEN",
    "GPUFABRIC_REQUEST_TIMEOUT",
    "XDG_CONFIG_HOME",
)


@dataclass
class Cli:
    config: Path  # where `gpufabric login` writes (GPUFABRIC_CLI_CONFIG)

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(app, list(args), input=input, env=env)


def isolated_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    for name in CLI_ENV:
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "cli" / "config.yaml"
    monkeypatch.setenv("GPUFABRIC_CLI_CONFIG", str(config))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return Cli(config)


def assert_one_line_error(result: Result, code: int, *fragments: str) -> str:
    """The command failed with ``code`` and said why in one line on stderr, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def file_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def sqlite_url(tmp_path: Path) -> str:
    """The CLI is an HTTP client: its tests run the controller on SQLite only (the store's behaviour on
    PostgreSQL is the API tests' business)."""
    return f"sqlite:///{tmp_path / 'controller.db'}"
